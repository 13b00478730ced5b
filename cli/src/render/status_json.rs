//! `ktrail status --output json` (see docs/json.md).

use ktrail_proto::v1::{AgentStatus, LossReport, PipelineCounters, StatusReply, StoreCounters};
use serde::Serialize;

use crate::time::rfc3339_utc;

#[derive(Serialize)]
struct LossJson<'a> {
    ringbuf_full_per_cpu: &'a [u64],
    ringbuf_full: u64,
    inflight_full: u64,
    tracked_full: u64,
    read_failed: u64,
    buffer_full: u64,
    undecodable: u64,
    last_seq: u64,
    sent_unix_ns: u64,
}

#[derive(Serialize)]
struct AgentJson<'a> {
    node: &'a str,
    agent_id: &'a str,
    connected: bool,
    events_received: u64,
    contiguous_seq: u64,
    duplicates_ignored: u64,
    loss: Option<LossJson<'a>>,
    last_seen_unix_ns: u64,
    last_seen: Option<String>,
    /// Added to the node's timestamps to put them on the collector's clock.
    clock_correction_ns: i64,
}

/// The collector's own bounds: what it dropped or cut short (docs/json.md).
#[derive(Serialize)]
struct PipelineJson {
    connections: u64,
    connections_evicted: u64,
    stream_items_dropped: u64,
    streams_evicted: u64,
    messages_dropped: u64,
    connections_agent_gone: u64,
    flows_started: u64,
    flows_closed: u64,
    flows_evicted: u64,
    hops_pending: u64,
    hops_unplaced: u64,
    hops_pending_evicted: u64,
}

/// The collector's store on disk and what retention deleted (docs/json.md).
#[derive(Serialize)]
struct StoreJson {
    file_bytes: u64,
    max_bytes: u64,
    row_bytes: u64,
    evicted_batches: u64,
    evicted_events: u64,
    evicted_hops: u64,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    r#type: &'static str,
    agents: Vec<AgentJson<'a>>,
    hops_total: u64,
    events_total: u64,
    pipeline: Option<PipelineJson>,
    store: Option<StoreJson>,
}

fn store(s: &StoreCounters) -> StoreJson {
    StoreJson {
        file_bytes: s.file_bytes,
        max_bytes: s.max_bytes,
        row_bytes: s.row_bytes,
        evicted_batches: s.evicted_batches,
        evicted_events: s.evicted_events,
        evicted_hops: s.evicted_hops,
    }
}

fn pipeline(p: &PipelineCounters) -> PipelineJson {
    PipelineJson {
        connections: p.connections,
        connections_evicted: p.connections_evicted,
        stream_items_dropped: p.stream_items_dropped,
        streams_evicted: p.streams_evicted,
        messages_dropped: p.messages_dropped,
        connections_agent_gone: p.connections_agent_gone,
        flows_started: p.flows_started,
        flows_closed: p.flows_closed,
        flows_evicted: p.flows_evicted,
        hops_pending: p.hops_pending,
        hops_unplaced: p.hops_unplaced,
        hops_pending_evicted: p.hops_pending_evicted,
    }
}

/// The per-CPU ring-buffer drops summed, saturating: the report comes from an
/// agent, and a rogue one's must not overflow (a panic in debug builds).
pub fn ringbuf_full(l: &LossReport) -> u64 {
    l.ringbuf_full_per_cpu
        .iter()
        .fold(0u64, |a, n| a.saturating_add(*n))
}

fn loss(l: &LossReport) -> LossJson<'_> {
    LossJson {
        ringbuf_full_per_cpu: &l.ringbuf_full_per_cpu,
        ringbuf_full: ringbuf_full(l),
        inflight_full: l.inflight_full,
        tracked_full: l.tracked_full,
        read_failed: l.read_failed,
        buffer_full: l.buffer_full,
        undecodable: l.undecodable,
        last_seq: l.last_seq,
        sent_unix_ns: l.sent_unix_ns,
    }
}

fn agent(a: &AgentStatus) -> AgentJson<'_> {
    AgentJson {
        node: &a.node,
        agent_id: &a.agent_id,
        connected: a.connected,
        events_received: a.events_received,
        contiguous_seq: a.contiguous_seq,
        duplicates_ignored: a.duplicates_ignored,
        loss: a.loss.as_ref().map(loss),
        last_seen_unix_ns: a.last_seen_unix_ns,
        last_seen: (a.last_seen_unix_ns > 0).then(|| rfc3339_utc(a.last_seen_unix_ns)),
        clock_correction_ns: a.clock_correction_ns,
    }
}

/// The whole status as one line of JSON.
pub fn status_json(reply: &StatusReply) -> Result<String, serde_json::Error> {
    serde_json::to_string(&StatusJson {
        r#type: "status",
        agents: reply.agents.iter().map(agent).collect(),
        hops_total: reply.hops_total,
        events_total: reply.events_total,
        pipeline: reply.pipeline.as_ref().map(pipeline),
        store: reply.store.as_ref().map(store),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn agents_with_their_loss_counters() {
        let reply = StatusReply {
            agents: vec![AgentStatus {
                node: "k8s-worker".into(),
                agent_id: "a1".into(),
                connected: true,
                events_received: 10,
                contiguous_seq: 10,
                duplicates_ignored: 2,
                loss: Some(LossReport {
                    ringbuf_full_per_cpu: vec![1, 2],
                    buffer_full: 3,
                    last_seq: 10,
                    ..LossReport::default()
                }),
                last_seen_unix_ns: 1_700_000_000_000_000_000,
                clock_correction_ns: -250_000_000,
            }],
            hops_total: 4,
            events_total: 10,
            pipeline: Some(PipelineCounters {
                stream_items_dropped: 5,
                hops_unplaced: 6,
                ..PipelineCounters::default()
            }),
            store: Some(StoreCounters {
                file_bytes: 2 << 30,
                max_bytes: 2 << 30,
                row_bytes: 700 << 20,
                evicted_events: 9,
                ..StoreCounters::default()
            }),
        };
        let v: Value = serde_json::from_str(&status_json(&reply).expect("json")).expect("parses");
        let a = &v["agents"][0];
        assert_eq!(a["connected"], true);
        assert_eq!(a["loss"]["ringbuf_full"], 3);
        assert_eq!(a["loss"]["buffer_full"], 3);
        assert_eq!(a["loss"]["last_seq"], 10);
        assert_eq!(a["last_seen"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(a["clock_correction_ns"], -250_000_000);
        assert_eq!(v["hops_total"], 4);
        assert_eq!(v["pipeline"]["stream_items_dropped"], 5);
        assert_eq!(v["pipeline"]["hops_unplaced"], 6);
        assert_eq!(v["pipeline"]["flows_evicted"], 0);
        assert_eq!(v["store"]["file_bytes"], 2u64 << 30);
        assert_eq!(v["store"]["row_bytes"], 700u64 << 20);
        assert_eq!(v["store"]["evicted_events"], 9);
        assert_eq!(v["store"]["evicted_hops"], 0);
    }
}
