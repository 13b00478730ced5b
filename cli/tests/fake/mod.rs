//! An in-process collector fed by a fake agent, for running the real `ktrail`
//! binary against. The real agent is tested end to end in the workspace's
//! tests/ crate; here a tonic client speaks the Ingest protocol.

#![allow(dead_code)]

use std::time::Duration;

use ktrail_collector::{Collector, CollectorConfig};
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::event::Body as EventBody;
use ktrail_proto::v1::ingest_client::IngestClient;
use ktrail_proto::v1::query_client::QueryClient;
use ktrail_proto::v1::{
    AgentMessage, Event, EventBatch, Flow, Hello, ListFlowsRequest, ListHopsRequest, Socket,
    SyscallEvent,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub const WAIT: Duration = Duration::from_secs(15);
pub const T0: u64 = 1_700_000_000_000_000_000;

pub struct Fixture {
    pub collector: Collector,
    pub url: String,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = "127.0.0.1:0".parse().expect("addr");
    let collector = Collector::start(CollectorConfig::new(listen, dir.path()))
        .await
        .expect("collector");
    let url = format!("http://{}", collector.local_addr());
    Fixture {
        collector,
        url,
        _dir: dir,
    }
}

pub struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    _acks: tonic::Streaming<ktrail_proto::v1::IngestAck>,
}

impl Agent {
    pub async fn connect(url: &str, node: &str) -> Self {
        let mut client = IngestClient::connect(url.to_owned()).await.expect("ingest");
        let (tx, rx) = mpsc::channel(16);
        let hello = Hello {
            node: node.into(),
            agent_id: format!("agent-{node}"),
            ..Hello::default()
        };
        tx.send(AgentMessage {
            body: Some(Body::Hello(hello)),
        })
        .await
        .expect("hello");
        let acks = client
            .stream(ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        Self { tx, _acks: acks }
    }

    pub async fn send(&self, events: Vec<Event>) {
        let batch = EventBatch {
            events,
            processes: Vec::new(),
        };
        self.tx
            .send(AgentMessage {
                body: Some(Body::Batch(batch)),
            })
            .await
            .expect("batch");
    }
}

pub fn syscall(seq: u64, pid: u32, comm: &str, name: &str, data: &[u8], s: &Socket) -> Event {
    Event {
        seq,
        timestamp_unix_ns: T0 + seq * 1_000_000,
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

pub const REQ: &[u8] = b"GET /healthz HTTP/1.1\r\n\r\n";
pub const RESP: &[u8] = b"HTTP/1.1 200 OK\r\n\r\n";

/// kubelet (worker, pid 42) asks kube-apiserver (cp, pid 7); both close.
pub async fn one_exchange(url: &str) -> (Agent, Agent) {
    let worker = Agent::connect(url, "k8s-worker").await;
    let cp = Agent::connect(url, "k8s-cp").await;
    let c = Socket::inet(("192.168.56.20", 40000), ("192.168.56.10", 8080));
    let s = Socket::inet(("192.168.56.10", 8080), ("192.168.56.20", 40000));
    worker
        .send(vec![
            syscall(1, 42, "kubelet", "connect", b"", &c),
            syscall(2, 42, "kubelet", "write", REQ, &c),
            syscall(3, 42, "kubelet", "read", RESP, &c),
            syscall(4, 42, "kubelet", "close", b"", &c),
        ])
        .await;
    cp.send(vec![
        syscall(1, 7, "kube-apiserver", "accept4", b"", &s),
        syscall(2, 7, "kube-apiserver", "read", REQ, &s),
        syscall(3, 7, "kube-apiserver", "write", RESP, &s),
        syscall(4, 7, "kube-apiserver", "close", b"", &s),
    ])
    .await;
    (worker, cp)
}

/// Waits until the collector holds `n` hops.
pub async fn wait_hops(url: &str, n: usize) {
    let mut client = QueryClient::connect(url.to_owned()).await.expect("query");
    tokio::time::timeout(WAIT, async {
        loop {
            let hops = client
                .list_hops(ListHopsRequest { limit: 100 })
                .await
                .expect("list")
                .into_inner()
                .hops;
            if hops.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hops in time");
}

/// Waits (at most `timeout`) for a flow among the 10 most recent for which
/// `ready` holds.
pub async fn wait_flow(url: &str, timeout: Duration, ready: impl Fn(&Flow) -> bool) -> Flow {
    let mut query = QueryClient::connect(url.to_owned()).await.expect("query");
    tokio::time::timeout(timeout, async {
        loop {
            let flows = query
                .list_flows(ListFlowsRequest { limit: 10 })
                .await
                .expect("list flows")
                .into_inner()
                .flows;
            if let Some(f) = flows.into_iter().find(|f| ready(f)) {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the flow in time")
}

/// `ktrail --collector URL --insecure show ID --format FORMAT`: its stdout;
/// fails the test if it fails.
pub async fn show(url: &str, id: &str, format: &str) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ktrail"))
        .args([
            "--collector",
            url,
            "--insecure",
            "show",
            id,
            "--format",
            format,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run ktrail");
    assert!(
        out.status.success(),
        "ktrail show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}
