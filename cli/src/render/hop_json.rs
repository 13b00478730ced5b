//! `ktrail watch --output json`: one object per hop (see docs/json.md).

use ktrail_proto::v1::{EventRef, Hop, HopEnd};
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
        },
        None => EndJson {
            node: "",
            pid: 0,
            comm: "",
            addr: "",
            port: 0,
            observed: false,
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
        assert_eq!(v["request"], "GET / HTTP/1.1\r\n\r\n");
        assert_eq!(v["response"], "\u{fffd}ok", "UTF-8-lossy");
        assert_eq!(v["events"][0]["seq"], 7);
    }
}
