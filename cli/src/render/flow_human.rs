//! Flows for people: a header per flow and one line per hop, children
//! indented under the hop that caused them.
//!
//! ```text
//! ● f-92d2510fbb0ec12b kubectl POST pods default/mynginx-trace-test — settled: pod default/mynginx-trace-test Running · 105 hops · 1.22 s · k8s-control, k8s-worker
//!     +0.000 ms k8s-control kubectl[306] → kube-apiserver[32149] POST /api/v1/namespaces/default/pods → 201 12.6 ms
//!    +22.438 ms k8s-control   kube-apiserver[32149] → etcd[32117] etcd Txn put /registry/pods/default/x → succeeded rev 316 1.5 ms
//! ```

use std::collections::HashMap;

use ktrail_proto::v1::{Flow, FlowGap, Hop, HopEnd};

use super::hop_human::decoded_text;
use crate::escape::human_bytes;
use crate::style::{Color, Style};
use crate::time::local_time_ms;

/// Deeper hops are drawn at this depth, with their depth shown.
const MAX_INDENT: usize = 12;

fn state_color(state: &str) -> Color {
    match state {
        "settled" => Color::Green,
        "failed" => Color::Red,
        "idle" => Color::Yellow,
        _ => Color::Cyan,
    }
}

/// `● f-… title — state: reason · N hops · 1.22 s · nodes`, and a failure line.
pub fn flow_header(flow: &Flow, style: &Style) -> Vec<String> {
    let span = flow.end_unix_ns.saturating_sub(flow.start_unix_ns);
    let mut state = flow.state.clone();
    if !flow.state_reason.is_empty() {
        state.push_str(&format!(": {}", flow.state_reason));
    }
    let mut lines = vec![format!(
        "{} {} {} {} — {} · {} hops · {} · {}",
        style.paint(state_color(&flow.state), "●"),
        style.paint(Color::Dim, &local_time_ms(flow.start_unix_ns)),
        style.paint(Color::Dim, &flow.id),
        style.paint(Color::Bold, &flow.title),
        style.paint(state_color(&flow.state), &state),
        flow.hop_count,
        seconds(span),
        flow.nodes.join(", "),
    )];
    if let Some(f) = &flow.failure {
        lines.push(style.paint(
            Color::Red,
            &format!("  ✗ {} on {}: {}", f.component, f.node, f.message),
        ));
    }
    for g in &flow.gaps {
        lines.push(style.paint(Color::Yellow, &gap_line(flow.start_unix_ns, g)));
    }
    if flow.gaps.is_empty() && flow.events_lost > 0 {
        lines.push(style.paint(
            Color::Yellow,
            &format!(
                "  ! {} events were lost on its nodes while it ran: hops may be missing",
                flow.events_lost
            ),
        ));
    }
    lines
}

/// `  ! 1234 events lost here: k8s-worker, ring buffer full, +0.2 s … +1.7 s`,
/// or the node's agent gone.
fn gap_line(flow_start: u64, g: &FlowGap) -> String {
    let at = |t: u64| {
        let d = i128::from(t) - i128::from(flow_start);
        format!("{:+.3} s", d as f64 / 1e9)
    };
    if g.agent_gone {
        return format!(
            "  ! agent on {} gone at {} ({}): that node's hops after it are missing",
            g.node,
            at(g.start_unix_ns),
            g.reason.strip_prefix("agent gone: ").unwrap_or(&g.reason)
        );
    }
    let when = if g.start_unix_ns == g.end_unix_ns {
        format!("at {}", at(g.end_unix_ns))
    } else {
        format!("{} … {}", at(g.start_unix_ns), at(g.end_unix_ns))
    };
    format!(
        "  ! {} events lost here: {}, {}, {when}: hops may be missing",
        g.events_lost, g.node, g.reason
    )
}

fn seconds(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2} s", ns as f64 / 1e9)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn who(e: Option<&HopEnd>, node: &str) -> String {
    let Some(e) = e else { return "?".into() };
    if !e.observed {
        return if e.port == 0 {
            format!("{} (untraced)", e.addr)
        } else {
            format!("{}:{} (untraced)", e.addr, e.port)
        };
    }
    if e.node == node {
        format!("{}[{}]", e.comm, e.pid)
    } else {
        format!("{}/{}[{}]", e.node, e.comm, e.pid)
    }
}

/// What the hop did, in one phrase.
pub fn hop_what(hop: &Hop) -> String {
    if hop.kind == "exec" {
        return hop.summary.clone();
    }
    if hop.kind == "connection" {
        return "connection (no data)".into();
    }
    if let Some(d) = decoded_text(hop) {
        return d;
    }
    if hop.summary.is_empty() {
        format!(
            "{} {} → {}",
            if hop.app_protocol.is_empty() {
                &hop.protocol
            } else {
                &hop.app_protocol
            },
            human_bytes(hop.request_bytes),
            human_bytes(hop.response_bytes)
        )
    } else {
        hop.summary.clone()
    }
}

fn failed(hop: &Hop) -> bool {
    hop.status_code >= 400 || (hop.has_grpc_status && hop.grpc_status != 0)
}

/// One hop of a flow: offset from the flow's start, the node it started on,
/// who → whom (a delivery, watch event or exec, is drawn from its sender),
/// what, and its latency.
pub fn flow_hop_line(flow_start: u64, depth: usize, hop: &Hop, style: &Style) -> String {
    let delivery = hop.kind == "watch-event";
    let (from, to) = if delivery {
        (hop.server.as_ref(), hop.client.as_ref())
    } else {
        (hop.client.as_ref(), hop.server.as_ref())
    };
    let node = from.map(|e| e.node.as_str()).unwrap_or("");
    let arrow = if delivery || hop.kind == "exec" {
        "⇒"
    } else {
        "→"
    };
    let offset = hop.start_unix_ns.saturating_sub(flow_start) as f64 / 1e6;
    let indent = if depth > MAX_INDENT {
        format!("{}{depth}›", "  ".repeat(MAX_INDENT))
    } else {
        "  ".repeat(depth)
    };
    let mut what = hop_what(hop);
    // The end's agent went away before the hop ended (the assembler says so).
    if hop.incomplete
        && hop.status_message.starts_with("agent on ")
        && !what.contains(&hop.status_message)
    {
        what.push_str(&format!(" (incomplete: {})", hop.status_message));
    }
    let what = if failed(hop) {
        style.paint(Color::Red, &what)
    } else {
        style.paint(Color::Bold, &what)
    };
    let latency = if hop.duration_ns == 0 {
        String::new()
    } else {
        format!(
            " {}",
            style.paint(
                Color::Dim,
                &format!("{:.3} ms", hop.duration_ns as f64 / 1e6)
            )
        )
    };
    format!(
        "{} {} {indent}{} {arrow} {} {what}{latency}",
        style.paint(Color::Dim, &format!("{offset:>+11.3} ms")),
        style.paint(Color::Blue, &format!("{node:<11}")),
        style.paint(Color::Cyan, &who(from, node)),
        style.paint(Color::Magenta, &who(to, node)),
    )
}

/// Depth of each hop under its parents (hops whose parent is not among
/// `hops` are at depth 0).
pub fn depths(hops: &[Hop]) -> HashMap<String, usize> {
    let parent: HashMap<&str, &str> = hops
        .iter()
        .map(|h| (h.id.as_str(), h.parent_id.as_str()))
        .collect();
    let mut out = HashMap::new();
    for h in hops {
        let mut d = 0;
        let mut cur = h.parent_id.as_str();
        while let Some(p) = parent.get(cur) {
            d += 1;
            cur = p;
            if d > hops.len() {
                break;
            }
        }
        out.insert(h.id.clone(), d);
    }
    out
}

/// The hops in tree order: each hop followed by its children, siblings by
/// start time; hops without a known parent at the top, by start time.
pub fn tree_order(hops: &[Hop]) -> Vec<&Hop> {
    let ids: std::collections::HashSet<&str> = hops.iter().map(|h| h.id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&Hop>> = HashMap::new();
    let mut roots = Vec::new();
    for h in hops {
        if !h.parent_id.is_empty() && ids.contains(h.parent_id.as_str()) && h.parent_id != h.id {
            children.entry(h.parent_id.as_str()).or_default().push(h);
        } else {
            roots.push(h);
        }
    }
    let by_start = |v: &mut Vec<&Hop>| {
        v.sort_by(|a, b| a.start_unix_ns.cmp(&b.start_unix_ns).then(a.id.cmp(&b.id)))
    };
    by_start(&mut roots);
    for v in children.values_mut() {
        by_start(v);
    }
    // Roots first; then anything a parent cycle left out (never expected).
    let mut all: Vec<&Hop> = hops.iter().collect();
    by_start(&mut all);
    let mut out = Vec::with_capacity(hops.len());
    let mut seen = std::collections::HashSet::new();
    for start in roots.into_iter().chain(all) {
        let mut stack = vec![start];
        while let Some(h) = stack.pop() {
            if !seen.insert(h.id.as_str()) {
                continue;
            }
            out.push(h);
            if let Some(kids) = children.get(h.id.as_str()) {
                stack.extend(kids.iter().rev());
            }
        }
    }
    out
}

/// The whole flow: header, then the hop tree.
pub fn flow_tree(flow: &Flow, hops: &[Hop], style: &Style) -> Vec<String> {
    let mut lines = flow_header(flow, style);
    let depth = depths(hops);
    for h in tree_order(hops) {
        lines.push(flow_hop_line(
            flow.start_unix_ns,
            depth.get(&h.id).copied().unwrap_or(0),
            h,
            style,
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(id: &str, parent: &str, start: u64, summary: &str) -> Hop {
        Hop {
            id: id.into(),
            parent_id: parent.into(),
            start_unix_ns: start,
            summary: summary.into(),
            kind: "exec".into(),
            ..Hop::default()
        }
    }

    #[test]
    fn children_follow_their_parent_indented() {
        let hops = vec![
            hop("c", "a", 30, "exec c"),
            hop("a", "", 10, "exec a"),
            hop("b", "", 20, "exec b"),
            hop("d", "c", 40, "exec d"),
        ];
        let order: Vec<&str> = tree_order(&hops).iter().map(|h| h.id.as_str()).collect();
        assert_eq!(order, ["a", "c", "d", "b"]);
        let flow = Flow {
            id: "f-1".into(),
            title: "kubectl POST pods default/x".into(),
            state: "settled".into(),
            state_reason: "pod default/x Running".into(),
            start_unix_ns: 10,
            hop_count: 4,
            ..Flow::default()
        };
        let lines = flow_tree(&flow, &hops, &Style::plain());
        assert!(
            lines[0]
                .contains("kubectl POST pods default/x — settled: pod default/x Running · 4 hops"),
            "{}",
            lines[0]
        );
        assert!(lines[2].contains("    ? ⇒ ? exec c"), "{}", lines[2]);
        assert!(lines[3].contains("      ? ⇒ ? exec d"), "{}", lines[3]);
    }

    #[test]
    fn gaps_say_where_events_were_lost_and_which_agent_went() {
        use ktrail_proto::v1::FlowGap;
        let s = 1_000_000_000;
        let flow = Flow {
            id: "f-1".into(),
            start_unix_ns: 10 * s,
            events_lost: 58_932,
            gaps: vec![
                FlowGap {
                    node: "k8s-worker".into(),
                    events_lost: 58_932,
                    reason: "ring buffer full".into(),
                    start_unix_ns: 10 * s + s / 2,
                    end_unix_ns: 12 * s,
                    agent_gone: false,
                },
                FlowGap {
                    node: "k8s-worker".into(),
                    reason: "agent gone: its stream failed (reset)".into(),
                    start_unix_ns: 13 * s,
                    end_unix_ns: 13 * s,
                    agent_gone: true,
                    ..FlowGap::default()
                },
            ],
            ..Flow::default()
        };
        let lines = flow_header(&flow, &Style::plain());
        assert_eq!(
            lines[1],
            "  ! 58932 events lost here: k8s-worker, ring buffer full, +0.500 s … +2.000 s: \
             hops may be missing"
        );
        assert_eq!(
            lines[2],
            "  ! agent on k8s-worker gone at +3.000 s (its stream failed (reset)): that node's \
             hops after it are missing"
        );
        assert_eq!(lines.len(), 3, "the total is not repeated: {lines:?}");
    }

    #[test]
    fn a_parent_cycle_does_not_hang() {
        let hops = vec![hop("a", "b", 1, "exec a"), hop("b", "a", 2, "exec b")];
        let order: Vec<&str> = tree_order(&hops).iter().map(|h| h.id.as_str()).collect();
        assert_eq!(
            order,
            ["a", "b"],
            "every hop once, though the cycle has no root"
        );
        assert_eq!(depths(&hops).len(), 2);
    }
}
