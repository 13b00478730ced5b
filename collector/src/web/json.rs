//! Flows and hops as the web page's JSON. Ids, node and process names and
//! the decoded fields; the captured bytes only as a short lossy preview.
//! Nanosecond times are strings (JavaScript numbers hold 53 bits).

use ktrail_proto::v1::{CriInfo, EtcdInfo, Flow, Hop, HopEnd, ObjectRef};
use serde_json::{json, Value};

/// Bytes of a request or response shown in the hop's details.
const PREVIEW: usize = 512;

fn end(e: Option<&HopEnd>) -> Value {
    let e = e.cloned().unwrap_or_default();
    json!({
        "node": e.node, "pid": e.pid, "comm": e.comm, "addr": e.addr, "port": e.port,
        "observed": e.observed, "pod": e.pod, "namespace": e.namespace, "owner": e.owner,
        "k8s_node": e.k8s_node,
    })
}

fn object(o: &ObjectRef) -> Value {
    json!({
        "resource": o.resource, "subresource": o.subresource, "namespace": o.namespace,
        "name": o.name, "uid": o.uid, "kind": o.kind, "node_name": o.node_name,
        "phase": o.phase, "watch_event_type": o.watch_event_type, "reason": o.reason,
        "message": o.message,
    })
}

fn etcd(e: &EtcdInfo) -> Value {
    json!({"op": e.op, "keys": e.keys, "revision": e.revision, "txn_result": e.txn_result,
           "events": e.events})
}

fn cri(c: &CriInfo) -> Value {
    json!({
        "method": c.method, "pod_name": c.pod_name, "pod_namespace": c.pod_namespace,
        "pod_uid": c.pod_uid, "container_name": c.container_name, "image": c.image,
        "pod_sandbox_id": c.pod_sandbox_id, "container_id": c.container_id,
    })
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(PREVIEW)]).into_owned()
}

pub fn hop(h: &Hop) -> Value {
    json!({
        "id": h.id,
        "flow_id": h.flow_id,
        "parent_id": h.parent_id,
        "joined_by": h.joined_by,
        "kind": h.kind,
        "protocol": h.protocol,
        "app_protocol": h.app_protocol,
        "start_unix_ns": h.start_unix_ns.to_string(),
        "duration_ns": h.duration_ns,
        "client": end(h.client.as_ref()),
        "server": end(h.server.as_ref()),
        "summary": h.summary,
        "method": h.method,
        "path": h.path,
        "grpc_service": h.grpc_service,
        "grpc_method": h.grpc_method,
        "status_code": h.status_code,
        "grpc_status": h.has_grpc_status.then_some(h.grpc_status),
        "status_message": h.status_message,
        "objects": h.objects.iter().map(object).collect::<Vec<_>>(),
        "etcd": h.etcd.as_ref().map(etcd),
        "cri": h.cri.as_ref().map(cri),
        "request_bytes": h.request_bytes,
        "response_bytes": h.response_bytes,
        "request": preview(&h.request),
        "response": preview(&h.response),
        "redacted": h.redacted,
        "incomplete": h.incomplete,
    })
}

pub fn flow(f: &Flow) -> Value {
    json!({
        "id": f.id,
        "title": f.title,
        "state": f.state,
        "state_reason": f.state_reason,
        "closed": f.closed,
        "start_unix_ns": f.start_unix_ns.to_string(),
        "end_unix_ns": f.end_unix_ns.to_string(),
        "hop_count": f.hop_count,
        "nodes": f.nodes,
        "objects": f.objects.iter().map(object).collect::<Vec<_>>(),
        "root_hop_id": f.root_hop_id,
        "failure": f.failure.as_ref().map(|x| json!({
            "hop_id": x.hop_id, "node": x.node, "component": x.component, "message": x.message,
        })),
        "events_lost": f.events_lost,
        "gaps": f.gaps.iter().map(|g| json!({
            "node": g.node, "events_lost": g.events_lost, "reason": g.reason,
            "start_unix_ns": g.start_unix_ns.to_string(), "end_unix_ns": g.end_unix_ns.to_string(),
            "agent_gone": g.agent_gone,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_are_strings_and_bytes_a_short_preview() {
        let h = Hop {
            id: "h-1".into(),
            start_unix_ns: 1_763_000_000_123_456_789,
            request: vec![b'x'; 2000],
            has_grpc_status: true,
            grpc_status: 5,
            ..Hop::default()
        };
        let v = hop(&h);
        assert_eq!(v["start_unix_ns"], "1763000000123456789");
        assert_eq!(v["request"].as_str().map(str::len), Some(PREVIEW));
        assert_eq!(v["grpc_status"], 5);
        assert_eq!(v["etcd"], Value::Null);
        let f = flow(&Flow::default());
        assert_eq!(f["failure"], Value::Null);
        assert_eq!(f["closed"], false);
        assert_eq!(f["gaps"], serde_json::json!([]));
    }

    #[test]
    fn a_flows_gaps_are_in_its_json() {
        let f = flow(&Flow {
            events_lost: 7,
            gaps: vec![ktrail_proto::v1::FlowGap {
                node: "k8s-worker".into(),
                events_lost: 7,
                reason: "send buffer full".into(),
                start_unix_ns: 1_763_000_000_000_000_001,
                end_unix_ns: 1_763_000_000_500_000_001,
                agent_gone: false,
            }],
            ..Flow::default()
        });
        assert_eq!(f["events_lost"], 7);
        let g = &f["gaps"][0];
        assert_eq!(
            (
                &g["node"],
                &g["events_lost"],
                &g["reason"],
                &g["agent_gone"]
            ),
            (
                &Value::from("k8s-worker"),
                &Value::from(7),
                &Value::from("send buffer full"),
                &Value::from(false)
            )
        );
        assert_eq!(g["end_unix_ns"], "1763000000500000001");
    }
}
