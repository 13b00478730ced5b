//! Node clock offsets, estimated from the agents' loss reports.
//!
//! Every agent sends a report every 500 ms stamped with its node's clock;
//! the collector notes its own clock on arrival. Arrival − stamp is the
//! network and queueing delay minus the node's offset, so the minimum over a
//! window is (shortest delay − offset): the collector adds it to that node's
//! timestamps to put every node on one clock. The shortest delay (well under
//! a millisecond on a LAN) remains as a bias shared by all nodes, so hops of
//! different nodes keep their order; durations come from one clock and are
//! never changed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use ktrail_proto::v1::{Event, Hop};

/// Samples kept per node: a minute of reports.
const WINDOW: usize = 120;

#[derive(Debug, Default)]
pub struct NodeClocks {
    nodes: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl NodeClocks {
    /// A report stamped `sent_ns` on `node` arrived at `received_ns`.
    pub fn sample(&self, node: &str, sent_ns: u64, received_ns: u64) {
        if sent_ns == 0 || received_ns == 0 {
            return;
        }
        let delta = i128::from(received_ns) - i128::from(sent_ns);
        let delta = delta.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let w = nodes.entry(node.to_string()).or_default();
        if w.len() >= WINDOW {
            w.pop_front();
        }
        w.push_back(delta);
    }

    /// What to add to `node`'s timestamps (0 until it has reported).
    pub fn correction_ns(&self, node: &str) -> i64 {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes
            .get(node)
            .and_then(|w| w.iter().min().copied())
            .unwrap_or(0)
    }

    /// `t` of `node` on the collector's clock.
    pub fn correct(&self, node: &str, t: u64) -> u64 {
        apply(t, self.correction_ns(node))
    }
}

impl NodeClocks {
    /// Puts a hop on the collector's clock: its times were taken on
    /// `clock_node` (the end whose events gave them).
    pub fn correct_hop(&self, hop: &mut Hop) {
        let node = if hop.clock_node.is_empty() {
            // Not recorded (exec hops are corrected through their events).
            return;
        } else {
            hop.clock_node.clone()
        };
        hop.start_unix_ns = self.correct(&node, hop.start_unix_ns);
    }

    /// A copy of `event` with its time on the collector's clock.
    pub fn corrected_event(&self, node: &str, event: &Event) -> Event {
        let mut e = event.clone();
        e.timestamp_unix_ns = self.correct(node, e.timestamp_unix_ns);
        e
    }
}

pub fn apply(t: u64, correction: i64) -> u64 {
    if t == 0 {
        return 0;
    }
    (i128::from(t) + i128::from(correction)).clamp(0, i128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_shortest_delay_gives_the_offset() {
        let c = NodeClocks::default();
        let base = 1_700_000_000_000 * MS;
        // The node's clock is 250 ms ahead; delays of 3, 0.2 and 40 ms.
        for delay in [3 * MS, MS / 5, 40 * MS] {
            let sent = base + 250 * MS;
            c.sample("worker", sent, base + delay);
        }
        assert_eq!(
            c.correction_ns("worker"),
            -(250 * MS as i64) + (MS / 5) as i64
        );
        assert_eq!(c.correct("worker", base + 250 * MS), base + MS / 5);
        assert_eq!(c.correction_ns("control"), 0, "no report yet");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let c = NodeClocks::default();
        c.sample("n", 1_000, 1_000 - 500);
        for _ in 0..WINDOW {
            c.sample("n", 1_000, 1_010);
        }
        assert_eq!(c.correction_ns("n"), 10);
    }
}
