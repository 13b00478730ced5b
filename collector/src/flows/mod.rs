//! Flows: every hop a user operation caused, stitched while hops arrive.
//!
//! A flow starts at a user client's request to the API server (`kubectl`,
//! curl, a script). Hops join it by what they name — the objects the user's
//! request created and those they own (a Deployment's ReplicaSet and Pods,
//! through ownerReferences), uids, CRI pod sandboxes and containers, the
//! programs started for them (runc, the pod's processes) — or, when they
//! name nothing (registry requests, containerd↔shim, CNI plugins), by
//! happening inside a call of the flow that their process was serving.
//! Hops that match nothing yet wait in [`pending`] for a while, as causes
//! often complete after their effects. Each hop gets the hop that caused it
//! ([`parent`]). A flow settles when its pods run (or its object is gone),
//! fails at a terminal error, or goes idle, and takes late hops for a while.

mod gaps;
mod keys;
mod open_flow;
mod parent;
mod pending;
mod processes;
mod stitcher;

#[cfg(test)]
mod tests;

pub use gaps::LossWindow;
pub use keys::{is_shared_component, Key, ProcessRef};
pub use open_flow::{FAILED, IDLE, RUNNING, SETTLED};
pub use stitcher::{is_root, FlowStitcher, StitchStats, Update};

const SECOND: u64 = 1_000_000_000;

/// Timing and bounds of stitching (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StitchConfig {
    /// A flow without pods or workloads settles this long after its last hop.
    pub quiet_ns: u64,
    /// A running flow without a new hop for this long is idle and closes.
    pub idle_ns: u64,
    /// A settled or failed flow still takes hops for this long.
    pub linger_ns: u64,
    /// A hop no flow claims is kept this long for a flow to claim it.
    pub pending_ttl_ns: u64,
    pub max_pending: usize,
    pub max_open_flows: usize,
    pub max_hops_per_flow: usize,
    pub max_processes: usize,
}

impl Default for StitchConfig {
    fn default() -> Self {
        Self {
            quiet_ns: 2 * SECOND,
            idle_ns: 30 * SECOND,
            linger_ns: 5 * SECOND,
            pending_ttl_ns: 15 * SECOND,
            max_pending: 50_000,
            max_open_flows: 1_000,
            max_hops_per_flow: 5_000,
            max_processes: 100_000,
        }
    }
}
