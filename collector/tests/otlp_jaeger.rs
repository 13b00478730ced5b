//! OTLP export against a real Jaeger (v2, built from its Go module by `cargo
//! xtask test`, cached in /var/cache/ktrail/jaeger-<version>/): the recorded
//! cluster capture is replayed into a live hub as the hop task publishes it,
//! the collector's closed-flow listener exports every flow as it closes, and
//! Jaeger's query API must return them as traces with a span per hop, the
//! parent links, the attributes and the failure.

mod common;
use common::http_get;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

use ktrail_collector::export::otlp::trace_id_hex;
use ktrail_collector::export::{on_close, OtlpConfig, OtlpExporter};
use ktrail_collector::flows::{StitchConfig, Update};
use ktrail_collector::live::LiveHub;
use ktrail_collector::replay::{self, KUBECTL_RUN, KUBECTL_RUN_BAD};
use ktrail_collector::{Collector, CollectorConfig};
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::event::Body as EventBody;
use ktrail_proto::v1::ingest_client::IngestClient;
use ktrail_proto::v1::query_client::QueryClient;
use ktrail_proto::v1::{
    AgentMessage, Event, EventBatch, Flow, Hello, Hop, ListFlowsRequest, SyscallEvent,
};
use ktrail_proto::Socket;
use serde_json::Value;

/// Where `cargo xtask test` puts the Jaeger it builds (xtask/src/jaeger.rs).
const JAEGER_VERSION: &str = "v1.76.0";

fn jaeger_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KTRAIL_JAEGER") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("KTRAIL_CACHE").unwrap_or_else(|| "/var/cache/ktrail".into());
    PathBuf::from(cache).join(format!("jaeger-{JAEGER_VERSION}/jaeger"))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A Jaeger process, killed when dropped; its log is kept for failures.
struct Jaeger {
    child: Child,
    log: PathBuf,
    otlp: SocketAddr,
    query: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Jaeger {
    fn start() -> Self {
        let bin = jaeger_binary();
        assert!(
            bin.is_file(),
            "{} is missing: `cargo xtask jaeger` builds it (`cargo xtask test` does too), or set KTRAIL_JAEGER",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let otlp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let query: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let query_grpc = free_port();
        let config = format!(
            "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: {query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
"
        );
        let config_path = dir.path().join("jaeger.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::env::temp_dir().join(format!("ktrail-jaeger-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(&bin)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut j = Jaeger {
            child,
            log,
            otlp,
            query,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = j.child.try_wait() {
                panic!("jaeger exited ({status}):\n{}", j.log_text());
            }
            if let Ok((200, _)) = http_get(j.query, "/api/services") {
                // The OTLP receiver starts with the pipeline, before the query.
                if TcpStream::connect(j.otlp).is_ok() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "jaeger did not answer in 60 s:\n{}",
                j.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        j
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The trace of a flow, once Jaeger has all `spans` of it.
    fn wait_for_trace(&self, flow_id: &str, spans: usize) -> Value {
        let path = format!("/api/traces/{}", trace_id_hex(flow_id));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            if let Ok((200, body)) = http_get(self.query, &path) {
                let v: Value = serde_json::from_str(&body).expect("JSON from jaeger");
                let n = v["data"][0]["spans"].as_array().map_or(0, Vec::len);
                if n >= spans {
                    return v["data"][0].clone();
                }
                last = format!("{n} of {spans} spans");
            }
            assert!(
                Instant::now() < deadline,
                "trace of {flow_id} not complete in jaeger after 30 s ({last}):\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A plain HTTP/1.0 GET: (status, body).
fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

fn span_hex(hop_id: &str) -> String {
    hop_id.trim_start_matches("h-").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_arrive_in_jaeger_as_traces_with_parent_links_and_attributes() {
    let jaeger = Jaeger::start();
    let r = replay::replay(&replay::cluster_capture(), StitchConfig::default()).expect("replay");
    let flows: Vec<(Flow, Vec<Hop>)> = [KUBECTL_RUN, KUBECTL_RUN_BAD]
        .iter()
        .map(|t| r.flow_titled(t).expect("flow"))
        .collect();

    let closed = r.flows.values().filter(|f| f.closed).count() as u64;
    assert!(closed >= 2, "{closed} closed flows");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (exporter, _sender) = OtlpExporter::spawn(
        OtlpConfig::new(format!("http://{}", jaeger.otlp)),
        stop_rx.clone(),
    )
    .expect("exporter");
    let stats = exporter.stats().clone();
    let hub = Arc::new(LiveHub::new(1_000_000, Vec::new(), 0));
    let listener = on_close::spawn(exporter, hub.clone(), None, stop_rx);
    for (_, u) in &r.updates {
        match u {
            Update::Hop(h) => hub.publish_hop((**h).clone()),
            Update::Flow(f) => hub.publish_flow((**f).clone()),
        }
        // The hop task does not outrun its listeners by a whole capture.
        tokio::task::yield_now().await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.exported() + stats.dropped() < closed {
        assert!(
            Instant::now() < deadline,
            "{} of {closed} closed flows exported after 60 s; log:\n{}",
            stats.exported(),
            jaeger.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.exported(), closed, "log:\n{}", jaeger.log_text());
    assert_eq!(stats.dropped(), 0);
    let _ = stop_tx.send(true);
    listener.await.expect("listener");

    let (flow, hops) = &flows[0];
    let trace = tokio::task::block_in_place(|| jaeger.wait_for_trace(&flow.id, hops.len()));
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), hops.len());
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanID"].as_str().expect("spanID"), s))
        .collect();
    let in_flow: HashSet<&str> = hops.iter().map(|h| h.id.as_str()).collect();
    let mut linked = 0;
    for hop in hops {
        let span = by_id
            .get(span_hex(&hop.id).as_str())
            .unwrap_or_else(|| panic!("no span for hop {}", hop.id));
        let parent = span["references"]
            .as_array()
            .and_then(|refs| refs.iter().find(|r| r["refType"] == "CHILD_OF"))
            .and_then(|r| r["spanID"].as_str());
        if in_flow.contains(hop.parent_id.as_str()) {
            assert_eq!(
                parent,
                Some(span_hex(&hop.parent_id).as_str()),
                "{}",
                hop.id
            );
            linked += 1;
        } else {
            assert_eq!(parent, None, "{}", hop.id);
        }
        assert_eq!(
            span["startTime"].as_u64(),
            Some(hop.start_unix_ns / 1000),
            "µs start of {}",
            hop.id
        );
    }
    assert!(linked > 0, "no parent links");

    // Services per component, both nodes.
    let services: HashSet<&str> = trace["processes"]
        .as_object()
        .expect("processes")
        .values()
        .filter_map(|p| p["serviceName"].as_str())
        .collect();
    for s in ["kube-apiserver", "containerd"] {
        assert!(services.contains(s), "{services:?}");
    }
    assert!(
        services.iter().any(|s| s.starts_with("etcd")),
        "{services:?}"
    );
    let nodes: HashSet<&str> = spans
        .iter()
        .filter_map(|s| tag(s, "ktrail.node").and_then(Value::as_str))
        .collect();
    assert!(
        nodes.contains("k8s-control") && nodes.contains("k8s-worker"),
        "{nodes:?}"
    );

    // The root: kubectl's POST, served by kube-apiserver.
    let root = by_id[span_hex(&flow.root_hop_id).as_str()];
    assert_eq!(tag(root, "http.request.method"), Some(&Value::from("POST")));
    assert_eq!(
        tag(root, "http.response.status_code"),
        Some(&Value::from(201))
    );
    assert_eq!(tag(root, "span.kind"), Some(&Value::from("server")));
    assert!(tag(root, "ktrail.client.comm")
        .and_then(Value::as_str)
        .is_some_and(|c| c.starts_with("kubectl")));
    assert!(spans.iter().any(
        |s| tag(s, "rpc.method") == Some(&Value::from("RunPodSandbox"))
            && tag(s, "k8s.pod.name") == Some(&Value::from("mynginx-trace-test"))
    ));

    // The failed pull: an error span with containerd's message.
    let (bad, bad_hops) = &flows[1];
    let failure = bad.failure.as_ref().expect("failure");
    let trace = tokio::task::block_in_place(|| jaeger.wait_for_trace(&bad.id, bad_hops.len()));
    let spans = trace["spans"].as_array().expect("spans");
    let failed = spans
        .iter()
        .find(|s| s["spanID"] == span_hex(&failure.hop_id).as_str())
        .expect("span of the failed hop");
    assert_eq!(tag(failed, "error"), Some(&Value::from(true)), "{failed:#}");
    assert_eq!(
        tag(failed, "otel.status_description"),
        Some(&Value::from(failure.message.as_str())),
        "{failed:#}"
    );
}

fn syscall(seq: u64, pid: u32, comm: &str, name: &str, data: &[u8], s: &Socket) -> Event {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    Event {
        seq,
        timestamp_unix_ns: now,
        pid,
        tid: pid,
        comm: comm.into(),
        cpu: 0,
        body: Some(EventBody::Syscall(SyscallEvent {
            name: name.into(),
            fd: 3,
            ret: data.len() as i64,
            duration_ns: 10_000,
            requested: data.len() as u64,
            socket: Some(s.clone()),
            data: data.to_vec().into(),
            ..SyscallEvent::default()
        })),
    }
}

/// The whole collector with `--otlp-endpoint`: a fake agent sends a kubectl
/// POST to kube-apiserver, the collector stitches it into a flow, and when
/// the flow closes (it settles and lingers: some seconds) its trace is in
/// Jaeger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_collector_exports_a_flow_when_it_closes() {
    let jaeger = Jaeger::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = CollectorConfig {
        otlp: Some(OtlpConfig::new(format!("http://{}", jaeger.otlp))),
        ..CollectorConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path())
    };
    let collector = Collector::start(cfg).await.expect("collector");
    let url = format!("http://{}", collector.local_addr());
    let mut ingest = IngestClient::connect(url.clone()).await.expect("ingest");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let hello = Hello {
        node: "k8s-cp".into(),
        agent_id: "agent-cp".into(),
        ..Hello::default()
    };
    tx.send(AgentMessage {
        body: Some(Body::Hello(hello)),
    })
    .await
    .expect("hello");
    let _acks = ingest
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream");
    let post: &[u8] =
        b"POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: cp\r\nContent-Length: 2\r\n\r\n{}";
    let created: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
    let c = Socket::inet(("192.168.56.10", 41000), ("192.168.56.10", 6443));
    let s = Socket::inet(("192.168.56.10", 6443), ("192.168.56.10", 41000));
    let events = vec![
        syscall(1, 50, "kubectl", "connect", b"", &c),
        syscall(2, 7, "kube-apiserver", "accept4", b"", &s),
        syscall(3, 50, "kubectl", "write", post, &c),
        syscall(4, 7, "kube-apiserver", "read", post, &s),
        syscall(5, 7, "kube-apiserver", "write", created, &s),
        syscall(6, 50, "kubectl", "read", created, &c),
        syscall(7, 50, "kubectl", "close", b"", &c),
        syscall(8, 7, "kube-apiserver", "close", b"", &s),
    ];
    tx.send(AgentMessage {
        body: Some(Body::Batch(EventBatch {
            events,
            processes: Vec::new(),
        })),
    })
    .await
    .expect("batch");

    let stats = collector.export_stats().expect("export stats").clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.exported() == 0 {
        assert!(
            Instant::now() < deadline,
            "no flow exported in 60 s (dropped {}); jaeger log:\n{}",
            stats.dropped(),
            jaeger.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut query = QueryClient::connect(url).await.expect("query");
    let flow = query
        .list_flows(ListFlowsRequest { limit: 10 })
        .await
        .expect("flows")
        .into_inner()
        .flows
        .into_iter()
        .find(|f| f.closed)
        .expect("a closed flow");
    let trace = tokio::task::block_in_place(|| jaeger.wait_for_trace(&flow.id, 1));
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["spanID"], span_hex(&flow.root_hop_id).as_str());
    assert_eq!(
        tag(&spans[0], "http.request.method"),
        Some(&Value::from("POST"))
    );
    assert_eq!(
        tag(&spans[0], "ktrail.client.comm"),
        Some(&Value::from("kubectl"))
    );
    let services: Vec<&str> = trace["processes"]
        .as_object()
        .expect("processes")
        .values()
        .filter_map(|p| p["serviceName"].as_str())
        .collect();
    assert_eq!(services, ["kube-apiserver"]);
    drop(tx);
    collector.shutdown().await.expect("shutdown");
}
