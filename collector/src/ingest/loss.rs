//! What an agent lost since its previous loss report, as a window for the
//! flows open then. Reports carry running totals; the difference between two
//! is what was lost in between.

use ktrail_proto::v1::LossReport;

use crate::flows::LossWindow;
use crate::node_clocks::NodeClocks;

/// Counters that each stand for events that never reached the collector,
/// with the words a flow shows for them. `read_failed` is not among them:
/// such an event is still sent, only without its payload.
fn lost_counts(r: &LossReport) -> [(&'static str, u64); 5] {
    [
        (
            "ring buffer full",
            // Saturating: a rogue agent's report must not overflow (a panic
            // in debug builds) or wrap.
            r.ringbuf_full_per_cpu
                .iter()
                .fold(0u64, |a, n| a.saturating_add(*n)),
        ),
        ("in-flight syscall table full", r.inflight_full),
        ("tracked-process table full", r.tracked_full),
        ("send buffer full", r.buffer_full),
        ("undecodable", r.undecodable),
    ]
}

/// Events lost between `previous` (None: the agent's first report) and
/// `report`, on the collector's clock; `None` when nothing was.
pub fn loss_since(
    node: &str,
    previous: Option<&LossReport>,
    report: &LossReport,
    clocks: &NodeClocks,
) -> Option<LossWindow> {
    let before = previous.map(lost_counts);
    let mut total = 0;
    let mut reasons = Vec::new();
    for (i, (reason, now)) in lost_counts(report).into_iter().enumerate() {
        let was = before.map_or(0, |b| b[i].1);
        let delta = now.saturating_sub(was);
        if delta > 0 {
            total = u64::saturating_add(total, delta);
            reasons.push(reason);
        }
    }
    if total == 0 {
        return None;
    }
    let end = clocks.correct(node, report.sent_unix_ns);
    let start = previous.map_or(end, |p| clocks.correct(node, p.sent_unix_ns));
    Some(LossWindow {
        node: node.to_string(),
        events_lost: total,
        reason: reasons.join(", "),
        start_unix_ns: start.min(end),
        end_unix_ns: end,
        agent_gone: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_difference_of_two_reports_is_lost_between_them() {
        let clocks = NodeClocks::default();
        let first = LossReport {
            ringbuf_full_per_cpu: vec![3, 4],
            buffer_full: 1,
            read_failed: 9,
            sent_unix_ns: 1_000,
            ..LossReport::default()
        };
        let w = loss_since("w", None, &first, &clocks).expect("lost since start");
        assert_eq!(w.events_lost, 8, "read_failed events still arrived");
        assert_eq!(w.reason, "ring buffer full, send buffer full");
        let second = LossReport {
            ringbuf_full_per_cpu: vec![13, 4],
            buffer_full: 1,
            read_failed: 20,
            sent_unix_ns: 2_000,
            ..LossReport::default()
        };
        let w = loss_since("w", Some(&first), &second, &clocks).expect("lost");
        assert_eq!((w.events_lost, w.reason.as_str()), (10, "ring buffer full"));
        assert_eq!((w.start_unix_ns, w.end_unix_ns), (1_000, 2_000));
        assert_eq!(loss_since("w", Some(&second), &second, &clocks), None);
    }

    #[test]
    fn a_rogue_report_saturates_instead_of_overflowing() {
        let rogue = LossReport {
            ringbuf_full_per_cpu: vec![u64::MAX, u64::MAX],
            buffer_full: u64::MAX,
            sent_unix_ns: 1,
            ..LossReport::default()
        };
        let w = loss_since("w", None, &rogue, &NodeClocks::default()).expect("lost");
        assert_eq!(w.events_lost, u64::MAX);
    }
}
