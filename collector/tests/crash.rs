//! Crash safety of the store: a collector killed with SIGKILL in the middle of
//! ingest keeps, after a restart, every event it had acknowledged, and the
//! agent's resend of everything is deduplicated across batch rows; and a
//! flow it had stored is the same flow, with the same hops, after a SIGKILL.

mod common;

use common::{free_port, CollectorProcess};

use std::path::Path;
use std::time::{Duration, Instant};

use ktrail_collector::Store;
use ktrail_proto::v1::agent_message::Body;
use ktrail_proto::v1::event::Body as EventBody;
use ktrail_proto::v1::ingest_client::IngestClient;
use ktrail_proto::v1::{AgentMessage, Event, EventBatch, Hello, IngestAck, SyscallEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const EVENTS: u64 = 20_000;
const PER_BATCH: u64 = 100;

fn start(dir: &Path, port: u16) -> CollectorProcess {
    CollectorProcess::spawn(dir, port, &[])
}

fn event(seq: u64) -> Event {
    Event {
        seq,
        timestamp_unix_ns: 1_700_000_000_000_000_000 + seq,
        pid: 7,
        tid: 7,
        comm: "kubelet".into(),
        body: Some(EventBody::Syscall(SyscallEvent {
            name: "write".into(),
            fd: 3,
            ret: 64,
            data: vec![(seq % 251) as u8; 64].into(),
            ..SyscallEvent::default()
        })),
        ..Event::default()
    }
}

fn batch(first: u64) -> AgentMessage {
    AgentMessage {
        body: Some(Body::Batch(EventBatch {
            events: (first..first + PER_BATCH).map(event).collect(),
            processes: Vec::new(),
        })),
    }
}

/// A channel to the collector on `port`, once it listens (a restarted one
/// takes a moment).
async fn channel(port: u16) -> tonic::transport::Channel {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).expect("url");
        match endpoint.connect().await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("collector not listening: {e}"),
        }
    }
}

/// An agent's stream: the sender of its messages and its acks.
async fn connect(port: u16) -> (mpsc::Sender<AgentMessage>, Streaming<IngestAck>) {
    let mut client = IngestClient::new(channel(port).await);
    let (tx, rx) = mpsc::channel(64);
    tx.send(AgentMessage {
        body: Some(Body::Hello(Hello {
            node: "n1".into(),
            agent_id: "crash-agent".into(),
            agent_version: "test".into(),
            kernel: String::new(),
            scope_netns: 0,
        })),
    })
    .await
    .expect("hello queued");
    let acks = client
        .stream(ReceiverStream::new(rx))
        .await
        .expect("stream accepted")
        .into_inner();
    (tx, acks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_ingest_keeps_everything_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let collector = start(dir.path(), port);
    let (tx, mut acks) = connect(port).await;
    // Send everything in the background; kill the collector once some of it is
    // acknowledged and more is in flight.
    let sender = tokio::spawn(async move {
        for first in (1..=EVENTS).step_by(PER_BATCH as usize) {
            if tx.send(batch(first)).await.is_err() {
                break;
            }
        }
        tx
    });
    let mut acked = 0;
    while acked < EVENTS / 4 {
        let ack = tokio::time::timeout(Duration::from_secs(20), acks.message())
            .await
            .expect("acks in time")
            .expect("ack stream ok")
            .expect("ack stream open");
        acked = acked.max(ack.acked_seq);
    }
    let pid = collector.0.id();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    drop(collector);
    drop(acks);
    let _ = sender.await;

    // Restarted on the same store: its first ack says what it holds.
    let collector = start(dir.path(), port);
    let (tx, mut acks) = connect(port).await;
    let held = tokio::time::timeout(Duration::from_secs(20), acks.message())
        .await
        .expect("first ack in time")
        .expect("ok")
        .expect("open")
        .acked_seq;
    assert!(
        held >= acked,
        "acknowledged {acked} before the kill, holds {held} after"
    );
    // The agent resends everything; what is held is ignored as duplicate,
    // including inside the batch that straddles `held`.
    for first in (1..=EVENTS).step_by(PER_BATCH as usize) {
        tx.send(batch(first)).await.expect("resend");
    }
    let mut last = held;
    while last < EVENTS {
        last = tokio::time::timeout(Duration::from_secs(20), acks.message())
            .await
            .expect("acks in time")
            .expect("ok")
            .expect("open")
            .acked_seq;
    }
    drop(tx);
    drop(acks);
    // SAFETY: as above; SIGTERM stops it cleanly so the store can be opened here.
    assert_eq!(
        unsafe { libc::kill(collector.0.id() as i32, libc::SIGTERM) },
        0
    );
    let mut collector = collector;
    let status = collector.0.wait().expect("collector exits");
    assert!(status.success(), "{status:?}");

    let store = Store::open(dir.path()).expect("store opens");
    assert_eq!(store.event_count("crash-agent").expect("count"), EVENTS);
    for seq in 1..=EVENTS {
        let held = store.event("crash-agent", seq).expect("read");
        assert_eq!(
            held.and_then(|e| e.event).map(|e| e.seq),
            Some(seq),
            "event {seq}"
        );
    }
    let agents = store.load(0).expect("load").agents;
    let agent = agents
        .iter()
        .find(|a| a.agent_id == "crash-agent")
        .expect("agent stored");
    assert_eq!(agent.contiguous_seq, EVENTS);
    assert_eq!(agent.events_received, EVENTS);
}

/// A kubectl → kube-apiserver GET on node n1 (both ends traced there), seqs 1..=6.
fn kubectl_get_batch() -> AgentMessage {
    use common::{syscall, MS, REQ, RESP, T0};
    let c = ktrail_proto::Socket::inet(("10.0.0.1", 40_000), ("10.0.0.1", 6443));
    let s = ktrail_proto::Socket::inet(("10.0.0.1", 6443), ("10.0.0.1", 40_000));
    let (kubectl, apiserver) = ((500, "kubectl"), (600, "kube-apiserver"));
    let (req, resp) = (REQ.len() as i64, RESP.len() as i64);
    let events = vec![
        syscall(kubectl, 1, T0, "connect", 0, b"", &c),
        syscall(apiserver, 2, T0, "accept4", 3, b"", &s),
        syscall(kubectl, 3, T0 + MS, "write", req, REQ, &c),
        syscall(apiserver, 4, T0 + MS, "read", req, REQ, &s),
        syscall(apiserver, 5, T0 + 2 * MS, "write", resp, RESP, &s),
        syscall(kubectl, 6, T0 + 3 * MS, "read", resp, RESP, &c),
    ];
    AgentMessage {
        body: Some(Body::Batch(EventBatch {
            events,
            processes: Vec::new(),
        })),
    }
}

/// The first flow the collector on `port` lists, with its hops, once `ready`.
async fn stored_flow(
    port: u16,
    ready: impl Fn(&ktrail_proto::v1::Flow) -> bool,
) -> ktrail_proto::v1::GetFlowReply {
    use ktrail_proto::v1::query_client::QueryClient;
    use ktrail_proto::v1::{GetFlowRequest, ListFlowsRequest};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut query = QueryClient::new(channel(port).await);
    loop {
        let flows = query
            .list_flows(ListFlowsRequest { limit: 10 })
            .await
            .expect("list flows")
            .into_inner()
            .flows;
        if let Some(f) = flows.iter().find(|f| ready(f)) {
            return query
                .get_flow(GetFlowRequest {
                    id: f.id.clone(),
                    with_events: false,
                })
                .await
                .expect("get flow")
                .into_inner();
        }
        assert!(Instant::now() < deadline, "no such flow: {flows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 8: the collector SIGKILLed after a flow closed (settled, lingered)
/// and restarted on its data: the stored flow and its hops are all there,
/// unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_stored_flows_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let collector = start(dir.path(), port);
    let (tx, mut acks) = connect(port).await;
    tx.send(kubectl_get_batch()).await.expect("send");
    let acked = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ack = acks.message().await.expect("ok").expect("open");
            if ack.acked_seq >= 6 {
                return ack.acked_seq;
            }
        }
    })
    .await
    .expect("acked");
    assert_eq!(acked, 6);
    let before = stored_flow(port, |f| f.closed).await;
    let flow = before.flow.clone().expect("flow");
    assert_eq!(flow.title, "kubectl GET /api/v1/namespaces/default/pods");
    assert_eq!(flow.state, "settled");
    assert!(!before.hops.is_empty(), "{before:?}");

    let pid = collector.0.id();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    drop(collector);
    drop((tx, acks));

    let collector = start(dir.path(), port);
    let after = stored_flow(port, |f| f.id == flow.id).await;
    assert_eq!(after.flow, before.flow, "the flow after the restart");
    assert_eq!(after.hops, before.hops, "its hops after the restart");
    drop(collector);
}
