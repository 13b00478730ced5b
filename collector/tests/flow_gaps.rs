//! Loss and departed agents shown on flows, through the real collector's gRPC
//! ingest path. The fake agents of common/ send what the real agent sends:
//! event batches, loss reports with running totals, then a stream that ends.
//! A fake agent stands in for the real one here because only it can make the
//! counts and the moment of departure exact; the real agent overflowing its
//! ring buffer and being SIGKILLed is tests/tests/agent_faults.rs.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ktrail_proto::v1::WatchUpdate;
use ktrail_proto::v1::{watch_update, Event, Flow, Hop, LossReport, Socket, WatchRequest};
use tonic::Streaming;

const WORKER: &str = "k8s-worker";
const CONTROL: &str = "k8s-control";
/// Grace for a departed agent (5 s) plus ticks and slack.
const GONE_WAIT: Duration = Duration::from_secs(20);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A `kubectl` (pid) on the worker asking the kube-apiserver on the control
/// node for pods over a fresh connection from `port`, answered or not:
/// (worker's events, control's events), numbered from `seq`.
fn kubectl_get(pid: u32, port: u32, seq: u64, answered: bool) -> (Vec<Event>, Vec<Event>) {
    let t = now_ns();
    let c = Socket::inet(("192.168.56.20", port), ("192.168.56.10", 6443));
    let s = Socket::inet(("192.168.56.10", 6443), ("192.168.56.20", port));
    let (kubectl, apiserver) = ((pid, "kubectl"), (SERVER_PID, "kube-apiserver"));
    let req = REQ.len() as i64;
    let mut worker = vec![
        syscall(kubectl, seq, t, "connect", 0, b"", &c),
        syscall(kubectl, seq + 1, t + MS, "write", req, REQ, &c),
    ];
    let mut control = vec![
        syscall(apiserver, seq, t, "accept4", 3, b"", &s),
        syscall(apiserver, seq + 1, t + MS, "read", req, REQ, &s),
    ];
    if answered {
        let resp = RESP.len() as i64;
        control.push(syscall(
            apiserver,
            seq + 2,
            t + 2 * MS,
            "write",
            resp,
            RESP,
            &s,
        ));
        worker.push(syscall(
            kubectl,
            seq + 2,
            t + 3 * MS,
            "read",
            resp,
            RESP,
            &c,
        ));
    }
    (worker, control)
}

/// The first hop or flow update of `watch` that `pick` accepts.
async fn wait_update<T>(
    watch: &mut Streaming<WatchUpdate>,
    what: &str,
    within: Duration,
    mut pick: impl FnMut(&watch_update::Body) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(within, async {
        loop {
            let update = watch
                .message()
                .await
                .expect("watch stream ok")
                .expect("watch stream open");
            let Some(body) = update.body else { continue };
            if let Some(t) = pick(&body) {
                return t;
            }
            seen.push(format!("{body:?}"));
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "no {what} within {within:?}; updates seen:\n{}",
            seen.join("\n")
        )
    })
}

fn flow_of(body: &watch_update::Body) -> Option<&Flow> {
    match body {
        watch_update::Body::Flow(f) => Some(f),
        _ => None,
    }
}

fn hop_of(body: &watch_update::Body) -> Option<&Hop> {
    match body {
        watch_update::Body::Hop(h) => Some(h),
        _ => None,
    }
}

/// A collector, a watch on it, and the agents of both nodes.
async fn setup() -> (
    tempfile::TempDir,
    ktrail_collector::Collector,
    Streaming<WatchUpdate>,
    FakeAgent,
    FakeAgent,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = start_collector(dir.path()).await;
    let watch = query(&collector)
        .await
        .watch(WatchRequest { replay: 0 })
        .await
        .expect("watch")
        .into_inner();
    let control = FakeAgent::connect(&collector, CONTROL, "control-1").await;
    let worker = FakeAgent::connect(&collector, WORKER, "worker-1").await;
    (dir, collector, watch, control, worker)
}

/// Events a worker's agent reports lost while a flow is open are on that
/// flow, per node and reason, to the event: 1,234 lost in the ring buffer
/// and 10 in the send buffer between two reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_events_are_counted_on_the_open_flow() {
    let (_dir, collector, mut watch, control, worker) = setup().await;
    let (w, c) = kubectl_get(500, 40_001, 1, true);
    control.send_batch(c).await;
    worker.send_batch(w).await;
    let flow = wait_update(&mut watch, "kubectl's flow", WAIT, |b| {
        flow_of(b)
            .filter(|f| f.title.starts_with("kubectl GET"))
            .cloned()
    })
    .await;
    assert_eq!(flow.events_lost, 0, "{flow:?}");

    let report = |ring: Vec<u64>, buffer_full: u64| LossReport {
        ringbuf_full_per_cpu: ring,
        buffer_full,
        // Not lost: such events arrive without their payload.
        read_failed: buffer_full * 3,
        last_seq: 3,
        sent_unix_ns: now_ns(),
        ..LossReport::default()
    };
    worker.send_loss(report(vec![0, 0], 0)).await;
    worker.send_loss(report(vec![700, 534], 10)).await;
    let lost = wait_update(&mut watch, "the flow with its loss", WAIT, |b| {
        flow_of(b)
            .filter(|f| f.id == flow.id && f.events_lost > 0)
            .cloned()
    })
    .await;
    assert_eq!(lost.events_lost, 1_244, "{lost:?}");
    assert_eq!(lost.gaps.len(), 1, "{lost:?}");
    let gap = &lost.gaps[0];
    assert_eq!(
        (
            gap.node.as_str(),
            gap.events_lost,
            gap.reason.as_str(),
            gap.agent_gone
        ),
        (WORKER, 1_244, "ring buffer full, send buffer full", false)
    );
    assert!(gap.start_unix_ns <= gap.end_unix_ns, "{gap:?}");

    // Another report without new loss adds nothing.
    worker.send_loss(report(vec![700, 534], 10)).await;
    worker.send_loss(report(vec![701, 534], 10)).await;
    let again = wait_update(&mut watch, "one more lost event", WAIT, |b| {
        flow_of(b)
            .filter(|f| f.id == flow.id && f.events_lost != 1_244)
            .cloned()
    })
    .await;
    assert_eq!(again.events_lost, 1_245, "{again:?}");
    collector.shutdown().await.expect("shutdown");
}

/// An agent whose stream ends and does not come back: the request its node
/// was in the middle of is emitted at once, marked incomplete with the
/// reason, not left for timeouts; and the flow says the node's agent is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departed_agent_closes_its_hops_and_marks_the_flow() {
    let (_dir, collector, mut watch, mut control, mut worker) = setup().await;
    // A request sent and read, its answer not yet seen by anyone.
    let (w, c) = kubectl_get(501, 40_002, 1, false);
    control.send_batch(c).await;
    worker.send_batch(w).await;
    control.wait_ack(2).await;
    worker.wait_ack(2).await;
    drop(worker);

    let hop = wait_update(&mut watch, "the pending request's hop", GONE_WAIT, |b| {
        hop_of(b)
            .filter(|h| h.client.as_ref().is_some_and(|c| c.pid == 501))
            .cloned()
    })
    .await;
    assert!(hop.incomplete, "{hop:?}");
    assert_eq!(
        hop.status_message,
        "agent on k8s-worker gone before the hop ended: it closed its stream"
    );
    assert_eq!(hop.method, "GET");
    assert_eq!(hop.status_code, 0, "no answer was seen: {hop:?}");
    let flow = wait_update(&mut watch, "its flow, marked", WAIT, |b| {
        flow_of(b)
            .filter(|f| f.gaps.iter().any(|g| g.agent_gone))
            .cloned()
    })
    .await;
    assert_eq!(flow.root_hop_id, hop.id, "{flow:?}");
    let gap = &flow.gaps[0];
    assert_eq!(
        (gap.node.as_str(), gap.reason.as_str(), gap.events_lost),
        (WORKER, "agent gone: it closed its stream", 0)
    );
    assert_eq!(flow.events_lost, 0);
    collector.shutdown().await.expect("shutdown");
}
