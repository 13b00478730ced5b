//! `ktrail show --format perfetto|jsonl` and the collector's web API, end to
//! end: a fake agent pair sends a kubectl → kube-apiserver POST, the real
//! collector stitches it into a flow, and the real `ktrail` binary exports it.

mod fake;

use std::io::{Read, Write};
use std::time::Duration;

use fake::*;
use ktrail_collector::web::WebConfig;
use ktrail_collector::{Collector, CollectorConfig};
use ktrail_proto::Socket;
use serde_json::Value;

const POST: &[u8] =
    b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: cp\r\nContent-Length: 2\r\n\r\n{}";
const CREATED: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_exports_as_perfetto_and_json_lines_and_serves_on_the_web_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = "127.0.0.1:0".parse().expect("addr");
    let cfg = CollectorConfig {
        web: Some(WebConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: None,
        }),
        ..CollectorConfig::new(listen, dir.path())
    };
    let collector = Collector::start(cfg).await.expect("collector");
    let url = format!("http://{}", collector.local_addr());

    let cp = Agent::connect(&url, "k8s-cp").await;
    let c = Socket::inet(("192.168.56.10", 41000), ("192.168.56.10", 6443));
    let s = Socket::inet(("192.168.56.10", 6443), ("192.168.56.10", 41000));
    cp.send(vec![
        syscall(1, 50, "kubectl", "connect", b"", &c),
        syscall(2, 7, "kube-apiserver", "accept4", b"", &s),
        syscall(3, 50, "kubectl", "write", POST, &c),
        syscall(4, 7, "kube-apiserver", "read", POST, &s),
        syscall(5, 7, "kube-apiserver", "write", CREATED, &s),
        syscall(6, 50, "kubectl", "read", CREATED, &c),
        syscall(7, 50, "kubectl", "close", b"", &c),
        syscall(8, 7, "kube-apiserver", "close", b"", &s),
    ])
    .await;

    let flow = wait_flow(&url, WAIT, |f| f.hop_count >= 1).await;
    assert!(!flow.root_hop_id.is_empty());

    // Perfetto: one JSON document, one slice for the POST, named processes.
    let text = show(&url, &flow.id, "perfetto").await;
    let v: Value = serde_json::from_str(text.trim()).expect("perfetto JSON");
    let events = v["traceEvents"].as_array().expect("traceEvents");
    let slices: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(slices.len(), 1, "{text}");
    assert_eq!(slices[0]["args"]["method"], "POST");
    assert_eq!(slices[0]["args"]["status"], 201);
    assert_eq!(slices[0]["args"]["hop_id"], flow.root_hop_id.as_str());
    assert!(events
        .iter()
        .any(|e| e["name"] == "process_name" && e["args"]["name"] == "k8s-cp"));
    assert_eq!(v["otherData"]["flow_id"], flow.id.as_str());

    // JSON lines: the flow, then its hop.
    let text = show(&url, &flow.id, "jsonl").await;
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[1]["type"], "hop");
    assert_eq!(lines[1]["method"], "POST");

    // The web API serves the same flow.
    let web = collector.web_addr().expect("web address");
    let (status, body) = tokio::task::spawn_blocking(move || http_get(web, "/api/flows"))
        .await
        .expect("get");
    assert_eq!(status, 200);
    assert!(body.contains(&flow.id), "{body}");
    let path = format!("/api/flows/{}", &flow.id[..8]);
    let (status, body) = tokio::task::spawn_blocking(move || http_get(web, &path))
        .await
        .expect("get");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["flow"]["id"], flow.id.as_str());
    assert_eq!(v["hops"][0]["method"], "POST");
    assert_eq!(v["hops"][0]["status_code"], 201);
    collector.shutdown().await.expect("shutdown");
}
