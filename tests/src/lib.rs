//! Shared harness for ktrail's integration tests and `cargo xtask demo`.
//!
//! Everything that changes kernel or process state is an RAII guard, so a failing
//! (panicking) test still removes its network namespaces and kills its processes:
//! - [`NetnsPair`]: network namespaces for the nodes `k8s-control` and `k8s-worker`,
//!   joined by a veth pair;
//! - [`ChildGuard`]: a child process, killed and reaped on drop, output captured to files;
//! - [`WorkDir`]: a temporary directory, kept (and its path printed) when a test fails;
//! - [`TwoNodes`]: collector + one agent per namespace, the stand-in for a two-node cluster.
//!
//! The tests need root and a kernel with BTF; they do not skip themselves when those are
//! missing, they fail (see [`skip_unless_root`]).

mod bins;
mod child;
mod cluster;
mod cluster_lock;
pub mod jaeger;
pub mod json;
pub mod kubectl;
mod netns;
pub mod reference_flow;
pub mod traced;
mod wait;
mod workdir;

pub use bins::{
    build_workspace_bins, cargo, target_dir, workspace_bin, workspace_root, AGENT_BIN, CLI_BIN,
    COLLECTOR_BIN, PEER_BIN,
};
pub use child::{run_with_timeout, ChildGuard};
pub use cluster::{
    ClusterOptions, TwoNodes, AGENT_METRICS, COLLECTOR_PORT, SERVER_PORT, SUBSCRIBE_GRACE,
};
pub use cluster_lock::ClusterLock;
pub use netns::{netns_command, netns_exists, netns_of, run_in_netns, NetnsPair};
pub use wait::{wait_for, Check};
pub use workdir::WorkDir;

/// The control-plane "node", as its agent names it (`--node-name`).
pub const CONTROL: &str = "k8s-control";
/// The worker "node".
pub const WORKER: &str = "k8s-worker";
/// The network namespaces standing in for the two nodes. They are not named after the
/// nodes so that the tests never touch the local Kubernetes cluster's `k8s-control` /
/// `k8s-worker` namespaces (`cargo xtask cluster`), and both can run at once.
pub const CONTROL_NETNS: &str = "ktrail-test-control";
pub const WORKER_NETNS: &str = "ktrail-test-worker";
/// Address of the control namespace's end of the veth pair.
pub const CONTROL_IP: &str = "192.168.56.10";
/// Address of the worker namespace's end of the veth pair.
pub const WORKER_IP: &str = "192.168.56.20";

/// True when the current process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the calling test unless it runs as root.
///
/// Despite the name this never skips: ktrail's tests load eBPF programs and create network
/// namespaces for real, and a test that silently passes without doing so would hide exactly
/// the failures it exists to catch. Run them with `cargo xtask test` as root.
pub fn skip_unless_root() {
    assert!(
        is_root(),
        "this test needs root (it loads eBPF programs and creates network namespaces); \
         run `cargo xtask test` as root — it is not skipped, so a non-root run cannot pass"
    );
}
