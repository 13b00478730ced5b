//! Flows, for now: one client process's hops, split after a pause.
//!
//! Full stitching (following a request through the servers it calls) comes
//! later; this only groups hops by the client process (node + pid; an
//! unobserved client by its address) and starts a new flow after `gap_ns` of
//! event time without hops from it.

use std::collections::HashMap;

use ktrail_proto::v1::Hop;

use super::ids::IdGen;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FlowKey {
    Process { node: String, pid: u32 },
    Address(String),
}

#[derive(Clone, Debug)]
struct FlowState {
    id: String,
    /// Event time the latest hop of the flow ended.
    last_end: u64,
    /// Collector clock of the last hop, for forgetting idle flows.
    touched: u64,
}

#[derive(Clone, Debug)]
pub struct FlowTracker {
    flows: HashMap<FlowKey, FlowState>,
    gap_ns: u64,
    max_flows: usize,
}

impl FlowTracker {
    pub fn new(gap_ns: u64, max_flows: usize) -> Self {
        Self {
            flows: HashMap::new(),
            gap_ns,
            max_flows: max_flows.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// The flow id for `hop` (its client, start and duration must be set).
    pub fn assign(&mut self, hop: &Hop, ids: &mut IdGen, now: u64) -> String {
        let client = hop.client.clone().unwrap_or_default();
        let key = if client.observed {
            FlowKey::Process {
                node: client.node,
                pid: client.pid,
            }
        } else {
            FlowKey::Address(client.addr)
        };
        let end = hop.start_unix_ns.saturating_add(hop.duration_ns);
        if !self.flows.contains_key(&key) && self.flows.len() >= self.max_flows {
            self.forget_oldest();
        }
        let gap = self.gap_ns;
        let state = self.flows.entry(key).or_insert_with(|| FlowState {
            id: String::new(),
            last_end: 0,
            touched: now,
        });
        if state.id.is_empty() || hop.start_unix_ns > state.last_end.saturating_add(gap) {
            state.id = ids.next_id("f-");
        }
        state.last_end = state.last_end.max(end);
        state.touched = now;
        state.id.clone()
    }

    /// Forgets flows without a hop for `idle_ns` of collector time.
    pub fn sweep(&mut self, now: u64, idle_ns: u64) {
        self.flows
            .retain(|_, f| now.saturating_sub(f.touched) < idle_ns);
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .flows
            .iter()
            .min_by_key(|(_, f)| f.touched)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.flows.remove(&k);
        }
    }
}
