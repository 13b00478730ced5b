//! `ktrail status`: an agents table and totals.

use ktrail_proto::v1::{AgentStatus, PipelineCounters, StatusReply, StoreCounters};

use crate::escape::human_bytes;
use crate::style::{Color, Style};
use crate::time::local_time_s;

const HEADERS: [&str; 14] = [
    "NODE",
    "CONNECTED",
    "EVENTS",
    "CONTIG SEQ",
    "DUPLICATES",
    "RINGBUF FULL",
    "INFLIGHT FULL",
    "TRACKED FULL",
    "READ FAILED",
    "BUFFER FULL",
    "UNDECODABLE",
    "LAST SEEN",
    "CLOCK",
    "AGENT",
];

fn ago(now_ns: u64, then_ns: u64) -> String {
    if then_ns == 0 {
        return "never".to_owned();
    }
    let secs = now_ns.saturating_sub(then_ns) / 1_000_000_000;
    let ago = match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    };
    format!("{} ({ago})", local_time_s(then_ns))
}

/// The correction applied to the node's clock, e.g. `-250.2 ms`.
fn clock(correction_ns: i64) -> String {
    format!("{:+.1} ms", correction_ns as f64 / 1e6)
}

fn row(a: &AgentStatus, now_ns: u64) -> Vec<String> {
    let loss = a.loss.clone().unwrap_or_default();
    vec![
        a.node.clone(),
        if a.connected { "yes" } else { "no" }.to_owned(),
        a.events_received.to_string(),
        a.contiguous_seq.to_string(),
        a.duplicates_ignored.to_string(),
        super::status_json::ringbuf_full(&loss).to_string(),
        loss.inflight_full.to_string(),
        loss.tracked_full.to_string(),
        loss.read_failed.to_string(),
        loss.buffer_full.to_string(),
        loss.undecodable.to_string(),
        ago(now_ns, a.last_seen_unix_ns),
        clock(a.clock_correction_ns),
        a.agent_id.clone(),
    ]
}

/// The table, one agent per line, then a totals line.
pub fn status_lines(reply: &StatusReply, now_ns: u64, style: &Style) -> Vec<String> {
    let rows: Vec<Vec<String>> = reply.agents.iter().map(|a| row(a, now_ns)).collect();
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([HEADERS[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let format_row = |cells: Vec<String>, paint: &dyn Fn(usize, &str) -> String| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                format!("{}{}", paint(i, c), " ".repeat(pad))
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut lines = vec![format_row(
        HEADERS.iter().map(|h| (*h).to_owned()).collect(),
        &|_, c| style.paint(Color::Bold, c),
    )];
    for (r, agent) in rows.into_iter().zip(&reply.agents) {
        lines.push(format_row(r, &|i, c| match i {
            1 if agent.connected => style.paint(Color::Green, c),
            1 => style.paint(Color::Red, c),
            5..=10 if c != "0" => style.paint(Color::Yellow, c),
            _ => c.to_owned(),
        }));
    }
    let connected = reply.agents.iter().filter(|a| a.connected).count();
    lines.push(String::new());
    lines.push(format!(
        "agents: {} ({connected} connected)   events: {}   hops: {}",
        reply.agents.len(),
        reply.events_total,
        reply.hops_total
    ));
    if let Some(p) = &reply.pipeline {
        lines.extend(pipeline_lines(p, style));
    }
    if let Some(s) = &reply.store {
        lines.push(store_line(s, style));
    }
    lines
}

/// The store on disk against its cap, and what retention deleted to stay there
/// (deleted on purpose, so not painted as a drop).
fn store_line(s: &StoreCounters, style: &Style) -> String {
    let cap = match s.max_bytes {
        0 => "no cap".to_owned(),
        cap => format!("cap {}", human_bytes(cap)),
    };
    let file = if s.max_bytes > 0 && s.file_bytes > s.max_bytes {
        style.paint(Color::Yellow, &human_bytes(s.file_bytes))
    } else {
        human_bytes(s.file_bytes)
    };
    format!(
        "store: {file} on disk ({cap}), {} of events and hops   deleted by retention: {} events \
         in {} batches, {} hops",
        human_bytes(s.row_bytes),
        s.evicted_events,
        s.evicted_batches,
        s.evicted_hops,
    )
}

/// The collector's own work and what it dropped at its bounds; a non-zero
/// drop is painted like the agents' loss columns.
fn pipeline_lines(p: &PipelineCounters, style: &Style) -> Vec<String> {
    let n = |v: u64| {
        if v == 0 {
            "0".to_owned()
        } else {
            style.paint(Color::Yellow, &v.to_string())
        }
    };
    vec![
        format!(
            "collector: {} connections   flows: {} started, {} closed, {} open   hops waiting for a flow: {}",
            p.connections,
            p.flows_started,
            p.flows_closed,
            p.flows_started.saturating_sub(p.flows_closed),
            p.hops_pending,
        ),
        format!(
            "collector drops: connections evicted {}   stream items {}   streams cut {}   messages {}   \
             flows closed early {}   hops unplaced {} (+{} evicted)   connections of gone agents {}",
            n(p.connections_evicted),
            n(p.stream_items_dropped),
            n(p.streams_evicted),
            n(p.messages_dropped),
            n(p.flows_evicted),
            n(p.hops_unplaced),
            n(p.hops_pending_evicted),
            n(p.connections_agent_gone),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::LossReport;

    #[test]
    fn a_table_with_aligned_columns_and_totals() {
        let reply = StatusReply {
            agents: vec![
                AgentStatus {
                    node: "k8s-worker".into(),
                    agent_id: "agent-1".into(),
                    connected: true,
                    events_received: 12345,
                    contiguous_seq: 12345,
                    loss: Some(LossReport {
                        buffer_full: 7,
                        ..LossReport::default()
                    }),
                    last_seen_unix_ns: 1_000_000_000_000,
                    ..AgentStatus::default()
                },
                AgentStatus {
                    node: "cp".into(),
                    agent_id: "agent-2".into(),
                    ..AgentStatus::default()
                },
            ],
            hops_total: 3,
            events_total: 12345,
            pipeline: None,
            store: None,
        };
        let lines = status_lines(&reply, 1_005_000_000_000, &Style::plain());
        assert!(
            lines[0].starts_with("NODE        CONNECTED  EVENTS"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("k8s-worker  yes        12345"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("(5s ago)"), "{}", lines[1]);
        assert!(
            lines[2].starts_with("cp          no         0"),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("never"));
        let col = |line: &str, field: &str| line.find(field).unwrap_or(0);
        assert_eq!(col(&lines[0], "AGENT"), col(&lines[1], "agent-1"));
        assert_eq!(
            lines.last().map(String::as_str),
            Some("agents: 2 (1 connected)   events: 12345   hops: 3")
        );
    }

    #[test]
    fn the_collectors_drops_follow_the_totals() {
        let reply = StatusReply {
            pipeline: Some(PipelineCounters {
                connections: 12,
                flows_started: 5,
                flows_closed: 3,
                stream_items_dropped: 7,
                hops_unplaced: 40,
                ..PipelineCounters::default()
            }),
            ..StatusReply::default()
        };
        let lines = status_lines(&reply, 0, &Style::plain());
        let n = lines.len();
        assert_eq!(
            lines[n - 2],
            "collector: 12 connections   flows: 5 started, 3 closed, 2 open   hops waiting for a flow: 0"
        );
        assert!(lines[n - 1].contains("stream items 7"), "{}", lines[n - 1]);
        assert!(
            lines[n - 1].contains("hops unplaced 40 (+0 evicted)"),
            "{}",
            lines[n - 1]
        );
        assert!(
            lines[n - 1].contains("flows closed early 0"),
            "{}",
            lines[n - 1]
        );
    }

    #[test]
    fn the_store_against_its_cap_comes_last() {
        let reply = StatusReply {
            store: Some(StoreCounters {
                file_bytes: 1_932_735_283,
                max_bytes: 2 << 30,
                row_bytes: 700 << 20,
                evicted_batches: 46_316,
                evicted_events: 8_950_079,
                evicted_hops: 2_370_346,
            }),
            ..StatusReply::default()
        };
        let lines = status_lines(&reply, 0, &Style::plain());
        assert_eq!(
            lines.last().map(String::as_str),
            Some(
                "store: 1.8 GiB on disk (cap 2.0 GiB), 700.0 MiB of events and hops   deleted by \
                 retention: 8950079 events in 46316 batches, 2370346 hops"
            )
        );
        let uncapped = StatusReply {
            store: Some(StoreCounters {
                file_bytes: 900,
                ..StoreCounters::default()
            }),
            ..StatusReply::default()
        };
        let line = status_lines(&uncapped, 0, &Style::plain()).pop();
        assert!(
            line.as_deref()
                .is_some_and(|l| l.starts_with("store: 900 B on disk (no cap)")),
            "{line:?}"
        );
    }
}
