//! `ktrail watch --output json`: one object per hop (see docs/json.md).

use ktrail_proto::v1::{CriInfo, EtcdInfo, EventRef, Hop, HopEnd, ObjectRef};
use serde::Serialize;

use crate::time::rfc3339_utc;

#[derive(Serialize)]
struct EndJson<'a> {
    node: &'a str,
    pid: u32,
    comm: &'a str,
    addr: &'a str,
    port: u32,
    observed: bool,
    pod: &'a str,
    namespace: &'a str,
    owner: &'a str,
    k8s_node: &'a str,
}

#[derive(Serialize)]
struct RefJson<'a> {
    node: &'a str,
    agent_id: &'a str,
    seq: u64,
}

#[derive(Serialize)]
struct HopJson<'a> {
    r#type: &'static str,
    id: &'a str,
    flow_id: &'a str,
    parent_id: &'a str,
    joined_by: &'a str,
    clock_node: &'a str,
    protocol: &'a str,
    kind: &'a str,
    start_unix_ns: u64,
    start: String,
    duration_ns: u64,
    client: EndJson<'a>,
    server: EndJson<'a>,
    summary: &'a str,
    request: String,
    request_bytes: u64,
    response: String,
    response_bytes: u64,
    events: Vec<RefJson<'a>>,
    app_protocol: &'a str,
    method: &'a str,
    path: &'a str,
    grpc_service: &'a str,
    grpc_method: &'a str,
    status_code: Option<u32>,
    grpc_status: Option<u32>,
    status_message: &'a str,
    stream_id: Option<u32>,
    objects: Vec<ObjectJson<'a>>,
    etcd: Option<EtcdJson<'a>>,
    cri: Option<CriJson<'a>>,
    redacted: bool,
    redactions: &'a [String],
    incomplete: bool,
    inferred: &'a [String],
}

#[derive(Serialize)]
struct EtcdJson<'a> {
    op: &'a str,
    keys: &'a [String],
    revision: Option<i64>,
    txn_result: &'a str,
    events: &'a [String],
}

#[derive(Serialize)]
struct ObjectJson<'a> {
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    kind: &'a str,
    api_version: &'a str,
    resource_version: &'a str,
    node_name: &'a str,
    phase: &'a str,
    watch_event_type: &'a str,
}

fn object(o: &ObjectRef) -> ObjectJson<'_> {
    ObjectJson {
        resource: &o.resource,
        subresource: &o.subresource,
        namespace: &o.namespace,
        name: &o.name,
        uid: &o.uid,
        kind: &o.kind,
        api_version: &o.api_version,
        resource_version: &o.resource_version,
        node_name: &o.node_name,
        phase: &o.phase,
        watch_event_type: &o.watch_event_type,
    }
}

#[derive(Serialize)]
struct CriJson<'a> {
    method: &'a str,
    pod_name: &'a str,
    pod_namespace: &'a str,
    pod_uid: &'a str,
    container_name: &'a str,
    image: &'a str,
    image_ref: &'a str,
    pod_sandbox_id: &'a str,
    container_id: &'a str,
}

fn cri(c: &CriInfo) -> CriJson<'_> {
    CriJson {
        method: &c.method,
        pod_name: &c.pod_name,
        pod_namespace: &c.pod_namespace,
        pod_uid: &c.pod_uid,
        container_name: &c.container_name,
        image: &c.image,
        image_ref: &c.image_ref,
        pod_sandbox_id: &c.pod_sandbox_id,
        container_id: &c.container_id,
    }
}

fn etcd(e: &EtcdInfo) -> EtcdJson<'_> {
    EtcdJson {
        op: &e.op,
        keys: &e.keys,
        revision: (e.revision != 0).then_some(e.revision),
        txn_result: &e.txn_result,
        events: &e.events,
    }
}

fn end(e: Option<&HopEnd>) -> EndJson<'_> {
    match e {
        Some(e) => EndJson {
            node: &e.node,
            pid: e.pid,
            comm: &e.comm,
            addr: &e.addr,
            port: e.port,
            observed: e.observed,
            pod: &e.pod,
            namespace: &e.namespace,
            owner: &e.owner,
            k8s_node: &e.k8s_node,
        },
        None => EndJson {
            node: "",
            pid: 0,
            comm: "",
            addr: "",
            port: 0,
            observed: false,
            pod: "",
            namespace: "",
            owner: "",
            k8s_node: "",
        },
    }
}

fn event_ref(r: &EventRef) -> RefJson<'_> {
    RefJson {
        node: &r.node,
        agent_id: &r.agent_id,
        seq: r.seq,
    }
}

/// The hop as one line of JSON (no trailing newline).
pub fn hop_json(hop: &Hop) -> Result<String, serde_json::Error> {
    serde_json::to_string(&HopJson {
        r#type: "hop",
        id: &hop.id,
        flow_id: &hop.flow_id,
        parent_id: &hop.parent_id,
        joined_by: &hop.joined_by,
        clock_node: &hop.clock_node,
        protocol: &hop.protocol,
        kind: &hop.kind,
        start_unix_ns: hop.start_unix_ns,
        start: rfc3339_utc(hop.start_unix_ns),
        duration_ns: hop.duration_ns,
        client: end(hop.client.as_ref()),
        server: end(hop.server.as_ref()),
        summary: &hop.summary,
        request: String::from_utf8_lossy(&hop.request).into_owned(),
        request_bytes: hop.request_bytes,
        response: String::from_utf8_lossy(&hop.response).into_owned(),
        response_bytes: hop.response_bytes,
        events: hop.events.iter().map(event_ref).collect(),
        app_protocol: &hop.app_protocol,
        method: &hop.method,
        path: &hop.path,
        grpc_service: &hop.grpc_service,
        grpc_method: &hop.grpc_method,
        status_code: (hop.status_code != 0).then_some(hop.status_code),
        grpc_status: hop.has_grpc_status.then_some(hop.grpc_status),
        status_message: &hop.status_message,
        stream_id: (hop.stream_id != 0).then_some(hop.stream_id),
        objects: hop.objects.iter().map(object).collect(),
        etcd: hop.etcd.as_ref().map(etcd),
        cri: hop.cri.as_ref().map(cri),
        redacted: hop.redacted,
        redactions: &hop.redactions,
        incomplete: hop.incomplete,
        inferred: &hop.inferred,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    pub fn sample() -> Hop {
        Hop {
            id: "h-00000000000000aa".into(),
            flow_id: "f-00000000000000bb".into(),
            protocol: "tcp".into(),
            client: Some(HopEnd {
                node: "k8s-worker".into(),
                pid: 4242,
                comm: "kubelet".into(),
                addr: "192.168.56.20".into(),
                port: 54321,
                observed: true,
                ..HopEnd::default()
            }),
            server: Some(HopEnd {
                addr: "192.168.56.10".into(),
                port: 8080,
                ..HopEnd::default()
            }),
            start_unix_ns: 1_700_000_000_123_456_789,
            duration_ns: 2_500_000,
            request: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            response: vec![0xff, b'o', b'k'],
            request_bytes: 18,
            response_bytes: 3,
            kind: "request/response".into(),
            events: vec![EventRef {
                node: "k8s-worker".into(),
                agent_id: "a1".into(),
                seq: 7,
            }],
            summary: "GET / HTTP/1.1".into(),
            ..Hop::default()
        }
    }

    #[test]
    fn one_line_with_every_documented_field_in_order() {
        let line = hop_json(&sample()).expect("json");
        assert!(!line.contains('\n'));
        let keys: Vec<&str> = [
            "type",
            "id",
            "flow_id",
            "protocol",
            "kind",
            "start_unix_ns",
            "start",
            "duration_ns",
            "client",
            "server",
            "summary",
            "request",
            "request_bytes",
            "response",
            "response_bytes",
            "events",
            "app_protocol",
            "method",
            "path",
            "grpc_service",
            "grpc_method",
            "status_code",
            "grpc_status",
            "status_message",
            "stream_id",
            "objects",
            "etcd",
            "cri",
            "redacted",
            "redactions",
            "incomplete",
            "inferred",
        ]
        .to_vec();
        let mut last = 0;
        for key in keys {
            let at = line
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} in {line}"));
            assert!(at >= last, "{key} out of order");
            last = at;
        }
        let v: Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(v["type"], "hop");
        assert_eq!(v["start"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["start_unix_ns"].as_u64(), Some(1_700_000_000_123_456_789));
        assert_eq!(v["client"]["pid"], 4242);
        assert_eq!(v["server"]["observed"], false);
        assert_eq!(v["server"]["pod"], "");
        assert_eq!(v["request"], "GET / HTTP/1.1\r\n\r\n");
        assert_eq!(v["response"], "\u{fffd}ok", "UTF-8-lossy");
        assert_eq!(v["events"][0]["seq"], 7);
    }

    #[test]
    fn decoded_fields_of_an_etcd_hop() {
        let mut hop = sample();
        hop.app_protocol = "grpc".into();
        hop.method = "POST".into();
        hop.path = "/etcdserverpb.KV/Txn".into();
        hop.grpc_service = "etcdserverpb.KV".into();
        hop.grpc_method = "Txn".into();
        hop.status_code = 200;
        hop.has_grpc_status = true;
        hop.stream_id = 5;
        hop.etcd = Some(EtcdInfo {
            op: "Txn put /registry/pods/default/x".into(),
            keys: vec!["/registry/pods/default/x".into()],
            revision: 42,
            txn_result: "succeeded".into(),
            events: Vec::new(),
        });
        hop.objects = vec![ObjectRef {
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "x".into(),
            ..ObjectRef::default()
        }];
        let v: Value = serde_json::from_str(&hop_json(&hop).expect("json")).expect("parses");
        assert_eq!(v["grpc_status"], 0, "OK is 0, not absent");
        assert_eq!(v["stream_id"], 5);
        assert_eq!(v["etcd"]["op"], "Txn put /registry/pods/default/x");
        assert_eq!(v["etcd"]["revision"], 42);
        assert_eq!(v["objects"][0]["kind"], "Pod");
        assert_eq!(v["cri"], Value::Null);
        let plain: Value =
            serde_json::from_str(&hop_json(&sample()).expect("json")).expect("parses");
        assert_eq!(plain["grpc_status"], Value::Null);
        assert_eq!(plain["status_code"], Value::Null);
        assert_eq!(plain["stream_id"], Value::Null);
        assert_eq!(plain["app_protocol"], "");
    }
}
