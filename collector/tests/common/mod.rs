//! A fake agent and a collector on a temporary data dir, for the integration
//! tests. The real agent is tested end to end in the workspace's tests/ crate;
//! here a tonic client speaks the Ingest protocol the way the agent does.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ktrail_collector::{Collector, CollectorConfig};
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::event::Body as EventBody;
use ktrail_proto::v1::ingest_client::IngestClient;
use ktrail_proto::v1::query_client::QueryClient;
use ktrail_proto::v1::{
    AgentMessage, Event, EventBatch, Hello, IngestAck, LossReport, ProcessExec, ProcessInfo,
    Socket, SyscallEvent,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

pub const WAIT: Duration = Duration::from_secs(10);
pub const T0: u64 = 1_700_000_000_000_000_000;
pub const MS: u64 = 1_000_000;
pub const REQ: &[u8] = b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: cp\r\n\r\n";
pub const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";

/// The `ktrail-collector` binary on 127.0.0.1:`port`, killed when dropped (also when a
/// test panics).
pub struct CollectorProcess(pub Child);

impl CollectorProcess {
    /// Starts it plaintext on `dir`, with `extra` flags.
    pub fn spawn(dir: &Path, port: u16, extra: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_ktrail-collector"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--insecure"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("collector starts");
        Self(child)
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub async fn start_collector(dir: &Path) -> Collector {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    Collector::start(CollectorConfig::new(listen, dir))
        .await
        .expect("collector starts")
}

pub fn url(collector: &Collector) -> String {
    format!("http://{}", collector.local_addr())
}

pub async fn query(collector: &Collector) -> QueryClient<Channel> {
    QueryClient::connect(url(collector))
        .await
        .expect("query client")
}

/// One agent's ingest stream.
pub struct FakeAgent {
    pub node: String,
    pub agent_id: String,
    tx: mpsc::Sender<AgentMessage>,
    pub acks: Streaming<IngestAck>,
}

impl FakeAgent {
    pub async fn connect(collector: &Collector, node: &str, agent_id: &str) -> Self {
        let mut client = IngestClient::connect(url(collector))
            .await
            .expect("ingest client");
        let (tx, rx) = mpsc::channel(16);
        // The collector answers only after the Hello, so it must be queued first.
        tx.send(AgentMessage {
            body: Some(Body::Hello(Hello {
                node: node.into(),
                agent_id: agent_id.into(),
                agent_version: "test".into(),
                kernel: "6.1".into(),
                scope_netns: 0,
            })),
        })
        .await
        .expect("queue hello");
        let acks = client
            .stream(ReceiverStream::new(rx))
            .await
            .expect("stream accepted")
            .into_inner();
        Self {
            node: node.into(),
            agent_id: agent_id.into(),
            tx,
            acks,
        }
    }

    pub async fn send_batch(&self, events: Vec<Event>) {
        let batch = EventBatch {
            events,
            processes: vec![ProcessInfo::default()],
        };
        self.tx
            .send(AgentMessage {
                body: Some(Body::Batch(batch)),
            })
            .await
            .expect("send batch");
    }

    pub async fn send_loss(&self, loss: LossReport) {
        self.tx
            .send(AgentMessage {
                body: Some(Body::Loss(loss)),
            })
            .await
            .expect("send loss");
    }

    /// Waits for an ack of at least `seq`.
    pub async fn wait_ack(&mut self, seq: u64) -> u64 {
        tokio::time::timeout(WAIT, async {
            loop {
                let ack = self
                    .acks
                    .message()
                    .await
                    .expect("ack stream ok")
                    .expect("ack stream open");
                if ack.acked_seq >= seq {
                    return ack.acked_seq;
                }
            }
        })
        .await
        .expect("ack in time")
    }
}

pub fn syscall(
    (pid, comm): (u32, &str),
    seq: u64,
    ts: u64,
    name: &str,
    ret: i64,
    data: &[u8],
    socket: &Socket,
) -> Event {
    Event {
        seq,
        timestamp_unix_ns: ts,
        pid,
        tid: pid,
        comm: comm.into(),
        cpu: 0,
        body: Some(EventBody::Syscall(SyscallEvent {
            name: name.into(),
            fd: 3,
            ret,
            errno: String::new(),
            duration_ns: 20_000,
            requested: data.len() as u64,
            socket: Some(socket.clone()),
            data: data.to_vec().into(),
            truncated: false,
        })),
    }
}

pub const CLIENT_PID: u32 = 4242;
pub const SERVER_PID: u32 = 777;

/// kubelet on the worker: exec, connect, GET, response, close (seq 1..=5).
pub fn client_events() -> Vec<Event> {
    let s = Socket::inet(("192.168.56.20", 54321), ("192.168.56.10", 8080));
    let exec = Event {
        seq: 1,
        timestamp_unix_ns: T0,
        pid: CLIENT_PID,
        tid: CLIENT_PID,
        comm: "kubelet".into(),
        cpu: 0,
        body: Some(EventBody::Exec(ProcessExec {
            filename: "/usr/bin/kubelet".into(),
            old_pid: CLIENT_PID,
            process: None,
        })),
    };
    vec![
        exec,
        syscall((CLIENT_PID, "kubelet"), 2, T0 + MS, "connect", 0, b"", &s),
        syscall(
            (CLIENT_PID, "kubelet"),
            3,
            T0 + 2 * MS,
            "write",
            REQ.len() as i64,
            REQ,
            &s,
        ),
        syscall(
            (CLIENT_PID, "kubelet"),
            4,
            T0 + 3 * MS,
            "read",
            RESP.len() as i64,
            RESP,
            &s,
        ),
        syscall((CLIENT_PID, "kubelet"), 5, T0 + 5 * MS, "close", 0, b"", &s),
    ]
}

/// kube-apiserver on the control plane: accept, read, write, close (seq 1..=4).
pub fn server_events() -> Vec<Event> {
    let s = Socket::inet(("192.168.56.10", 8080), ("192.168.56.20", 54321));
    let comm = "kube-apiserver";
    vec![
        syscall((SERVER_PID, comm), 1, T0 + MS, "accept4", 3, b"", &s),
        syscall(
            (SERVER_PID, comm),
            2,
            T0 + 2 * MS,
            "read",
            REQ.len() as i64,
            REQ,
            &s,
        ),
        syscall(
            (SERVER_PID, comm),
            3,
            T0 + 2 * MS + 500_000,
            "write",
            RESP.len() as i64,
            RESP,
            &s,
        ),
        syscall((SERVER_PID, comm), 4, T0 + 6 * MS, "close", 0, b"", &s),
    ]
}

/// `GET path` over HTTP/1.0 (the web page, Jaeger's query API): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    use std::io::{Read, Write};
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}
