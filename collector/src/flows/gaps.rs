//! Gaps: events a node's agent lost, or the agent gone, while flows were
//! open. A lost event carries no process or connection, so it cannot be
//! placed in one flow: every flow open at the time may be missing it, and
//! each of them says so (`Flow.gaps`, "N events lost here").

use std::collections::{HashMap, VecDeque};

use ktrail_proto::v1::{Flow, FlowGap};

/// Loss windows kept for flows whose root hop is stitched after the loss
/// report arrived (pairing waits), on the collector's clock.
const RECENT_NS: u64 = 60 * super::SECOND;
const MAX_RECENT: usize = 4_096;
/// Gaps one flow keeps: one per node and kind, merged.
const MAX_GAPS_PER_FLOW: usize = 64;

/// Events lost on `node` between two of its agent's reports, or its agent
/// gone at `start_unix_ns`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LossWindow {
    pub node: String,
    pub events_lost: u64,
    pub reason: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub agent_gone: bool,
}

impl LossWindow {
    /// Whether a flow starting at `flow_start` was open during it (a flow
    /// only learns its start when its root hop arrives, so any flow started
    /// before the window's end may have lost events in it).
    fn concerns(&self, flow_start: u64) -> bool {
        flow_start <= self.end_unix_ns
    }
}

/// Adds `w` to the flow's gaps, merging with the same node's gap of the
/// same kind; keeps `events_lost` the sum.
pub fn add_gap(flow: &mut Flow, w: &LossWindow) {
    let have = flow
        .gaps
        .iter()
        .position(|g| g.node == w.node && g.agent_gone == w.agent_gone);
    let room = flow.gaps.len() < MAX_GAPS_PER_FLOW;
    match have {
        Some(i) => {
            let g = &mut flow.gaps[i];
            // Saturating: counts come from agents, and a rogue one may send anything.
            g.events_lost = g.events_lost.saturating_add(w.events_lost);
            g.start_unix_ns = g.start_unix_ns.min(w.start_unix_ns);
            g.end_unix_ns = g.end_unix_ns.max(w.end_unix_ns);
            for reason in w.reason.split(", ") {
                if !g.reason.split(", ").any(|r| r == reason) {
                    g.reason.push_str(", ");
                    g.reason.push_str(reason);
                }
            }
        }
        None if room => flow.gaps.push(FlowGap {
            node: w.node.clone(),
            events_lost: w.events_lost,
            reason: w.reason.clone(),
            start_unix_ns: w.start_unix_ns,
            end_unix_ns: w.end_unix_ns,
            agent_gone: w.agent_gone,
        }),
        // Still counted in the total below: the count is never dropped.
        None => {}
    }
    flow.events_lost = flow.events_lost.saturating_add(w.events_lost);
}

/// Recent loss windows and nodes whose agent is gone, for flows that start
/// after the loss was reported.
#[derive(Debug, Default)]
pub struct RecentLoss {
    windows: VecDeque<LossWindow>,
    /// Nodes without an agent since its departure: every flow starting
    /// meanwhile may miss their hops.
    absent: HashMap<String, LossWindow>,
}

impl RecentLoss {
    pub fn record(&mut self, w: LossWindow, now: u64) {
        while self.windows.len() >= MAX_RECENT
            || self
                .windows
                .front()
                .is_some_and(|old| now.saturating_sub(old.end_unix_ns) > RECENT_NS)
        {
            self.windows.pop_front();
        }
        if w.agent_gone {
            self.absent.insert(w.node.clone(), w);
        } else {
            self.windows.push_back(w);
        }
    }

    /// An agent of `node` is back: later flows see that node again.
    pub fn node_back(&mut self, node: &str) {
        self.absent.remove(node);
    }

    /// Gaps of a flow that starts at `flow_start` now.
    pub fn for_new_flow(&self, flow_start: u64) -> impl Iterator<Item = &LossWindow> {
        self.windows
            .iter()
            .filter(move |w| w.concerns(flow_start))
            .chain(self.absent.values())
    }
}

/// Applies `w` to `flow` if it was open then; true when it did.
pub fn apply(flow: &mut Flow, w: &LossWindow) -> bool {
    if !w.concerns(flow.start_unix_ns) {
        return false;
    }
    add_gap(flow, w);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(node: &str, n: u64, reason: &str, start: u64, end: u64) -> LossWindow {
        LossWindow {
            node: node.into(),
            events_lost: n,
            reason: reason.into(),
            start_unix_ns: start,
            end_unix_ns: end,
            agent_gone: false,
        }
    }

    #[test]
    fn gaps_merge_per_node_and_the_total_is_their_sum() {
        let mut f = Flow {
            start_unix_ns: 100,
            ..Flow::default()
        };
        assert!(apply(&mut f, &lost("w", 5, "ring buffer full", 50, 150)));
        assert!(apply(
            &mut f,
            &lost("w", 7, "ring buffer full, send buffer full", 150, 250)
        ));
        assert!(apply(&mut f, &lost("c", 1, "sequence gap", 200, 300)));
        assert!(
            !apply(&mut f, &lost("c", 9, "ring buffer full", 10, 90)),
            "over before the flow started"
        );
        assert_eq!(f.events_lost, 13);
        assert_eq!(f.gaps.len(), 2);
        let w = &f.gaps[0];
        assert_eq!(
            (w.events_lost, w.start_unix_ns, w.end_unix_ns),
            (12, 50, 250)
        );
        assert_eq!(w.reason, "ring buffer full, send buffer full");
    }

    #[test]
    fn a_new_flow_gets_recent_windows_and_absent_nodes() {
        let mut r = RecentLoss::default();
        r.record(lost("w", 5, "ring buffer full", 50, 150), 150);
        r.record(
            LossWindow {
                agent_gone: true,
                ..lost("c", 0, "agent gone", 160, 160)
            },
            160,
        );
        let got: Vec<&str> = r.for_new_flow(100).map(|w| w.node.as_str()).collect();
        assert_eq!(got, ["w", "c"]);
        let got: Vec<&str> = r.for_new_flow(200).map(|w| w.node.as_str()).collect();
        assert_eq!(
            got,
            ["c"],
            "the window ended before; the node is still absent"
        );
        r.node_back("c");
        assert_eq!(r.for_new_flow(200).count(), 0);
        // A minute later the window is forgotten.
        r.record(
            lost("x", 1, "ring buffer full", 200, 200 + RECENT_NS),
            200 + RECENT_NS,
        );
        let got: Vec<&str> = r.for_new_flow(0).map(|w| w.node.as_str()).collect();
        assert_eq!(got, ["x"]);
    }
}
