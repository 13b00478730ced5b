//! `{"type":"flow",…}`: a flow's state as one JSON line (docs/json.md).

use ktrail_proto::v1::Flow;
use serde::Serialize;

use crate::time::rfc3339_utc;

#[derive(Serialize)]
struct FailureJson<'a> {
    hop_id: &'a str,
    node: &'a str,
    component: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct GapJson<'a> {
    node: &'a str,
    events_lost: u64,
    reason: &'a str,
    start_unix_ns: u64,
    end_unix_ns: u64,
    agent_gone: bool,
}

#[derive(Serialize)]
struct ObjectJson<'a> {
    resource: &'a str,
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    kind: &'a str,
    node_name: &'a str,
    phase: &'a str,
}

#[derive(Serialize)]
struct FlowJson<'a> {
    r#type: &'static str,
    id: &'a str,
    title: &'a str,
    state: &'a str,
    state_reason: &'a str,
    closed: bool,
    start_unix_ns: u64,
    start: String,
    end_unix_ns: u64,
    duration_ns: u64,
    hop_count: u32,
    nodes: &'a [String],
    root_hop_id: &'a str,
    objects: Vec<ObjectJson<'a>>,
    failure: Option<FailureJson<'a>>,
    events_lost: u64,
    gaps: Vec<GapJson<'a>>,
}

pub fn flow_json(flow: &Flow) -> Result<String, serde_json::Error> {
    serde_json::to_string(&FlowJson {
        r#type: "flow",
        id: &flow.id,
        title: &flow.title,
        state: &flow.state,
        state_reason: &flow.state_reason,
        closed: flow.closed,
        start_unix_ns: flow.start_unix_ns,
        start: rfc3339_utc(flow.start_unix_ns),
        end_unix_ns: flow.end_unix_ns,
        duration_ns: flow.end_unix_ns.saturating_sub(flow.start_unix_ns),
        hop_count: flow.hop_count,
        nodes: &flow.nodes,
        root_hop_id: &flow.root_hop_id,
        objects: flow
            .objects
            .iter()
            .map(|o| ObjectJson {
                resource: &o.resource,
                namespace: &o.namespace,
                name: &o.name,
                uid: &o.uid,
                kind: &o.kind,
                node_name: &o.node_name,
                phase: &o.phase,
            })
            .collect(),
        failure: flow.failure.as_ref().map(|f| FailureJson {
            hop_id: &f.hop_id,
            node: &f.node,
            component: &f.component,
            message: &f.message,
        }),
        events_lost: flow.events_lost,
        gaps: flow
            .gaps
            .iter()
            .map(|g| GapJson {
                node: &g.node,
                events_lost: g.events_lost,
                reason: &g.reason,
                start_unix_ns: g.start_unix_ns,
                end_unix_ns: g.end_unix_ns,
                agent_gone: g.agent_gone,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::FlowFailure;

    #[test]
    fn a_flow_is_one_line_with_its_failure() {
        let flow = Flow {
            id: "f-1".into(),
            title: "kubectl POST pods default/bad".into(),
            state: "failed".into(),
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_001_000_000_000,
            failure: Some(FlowFailure {
                component: "containerd".into(),
                message: "PullImage: not found".into(),
                ..FlowFailure::default()
            }),
            ..Flow::default()
        };
        let line = flow_json(&flow).expect("json");
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(v["type"], "flow");
        assert_eq!(v["duration_ns"], 1_000_000_000u64);
        assert_eq!(v["failure"]["component"], "containerd");
    }
}
