//! Issue 8, bad input: an agent (past mutual TLS, so trusted to speak the
//! protocol, not to be sane) sends well-formed events with absurd values:
//! timestamps at 0 and near u64::MAX, durations of u64::MAX, return values
//! that disagree with the data, huge ports and pids. The collector's hop
//! assembly and stitching, shared by every agent, must survive them: a normal
//! exchange sent afterwards still becomes its hop, and a flow.

mod common;

use common::*;
use ktrail_proto::v1::event::Body as EventBody;
use ktrail_proto::v1::{watch_update, Event, Socket, WatchRequest};

/// A kubectl → kube-apiserver exchange on one node, every event at `ts` with
/// `duration`, the syscalls returning `ret`.
fn absurd(seq0: u64, ts: u64, duration: u64, ret: i64, port: u32) -> Vec<Event> {
    let c = Socket::inet(("10.9.9.9", port), ("10.9.9.9", 6443));
    let s = Socket::inet(("10.9.9.9", 6443), ("10.9.9.9", port));
    let (k, a) = ((u32::MAX, "kubectl"), (u32::MAX - 1, "kube-apiserver"));
    let mut events = vec![
        syscall(k, seq0, ts, "connect", 0, b"", &c),
        syscall(a, seq0 + 1, ts, "accept4", 3, b"", &s),
        syscall(k, seq0 + 2, ts, "write", ret, REQ, &c),
        syscall(a, seq0 + 3, ts, "read", ret, REQ, &s),
        syscall(a, seq0 + 4, ts, "write", ret, RESP, &s),
        syscall(k, seq0 + 5, ts, "read", ret, RESP, &c),
        syscall(k, seq0 + 6, ts, "close", 0, b"", &c),
    ];
    for e in &mut events {
        if let Some(EventBody::Syscall(sc)) = &mut e.body {
            sc.duration_ns = duration;
            sc.requested = u64::MAX;
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_events_do_not_harm_hop_assembly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = start_collector(dir.path()).await;
    let mut watch = query(&collector)
        .await
        .watch(WatchRequest { replay: 0 })
        .await
        .expect("watch")
        .into_inner();
    let mut rogue = FakeAgent::connect(&collector, "k8s-rogue", "rogue-1").await;
    let mut seq = 1;
    for (i, (ts, duration, ret)) in [
        (u64::MAX - 5, u64::MAX, REQ.len() as i64),
        (u64::MAX, 1_000_000_000, i64::MAX),
        (0, u64::MAX, REQ.len() as i64),
        (T0, u64::MAX, i64::MAX),
        (T0, 0, i64::MIN),
        (T0, 1, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let port = u32::MAX - i as u32;
        rogue.send_batch(absurd(seq, ts, duration, ret, port)).await;
        seq += 7;
    }
    rogue.wait_ack(seq - 1).await;
    // Their hops come out (quiet and pairing waits passed) before the sane
    // exchange is sent, so that anything they break shows below.
    let mut absurd_hops = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Ok(Some(update)) = watch.message().await {
            if let Some(watch_update::Body::Hop(h)) = update.body {
                absurd_hops += usize::from(h.client.as_ref().is_some_and(|c| c.comm == "kubectl"));
            }
        }
    })
    .await;
    assert!(absurd_hops > 0, "the absurd exchanges made no hop at all");
    eprintln!("{absurd_hops} hops from the absurd exchanges");

    // A sane pair of agents afterwards: their exchange still becomes a hop.
    let worker = FakeAgent::connect(&collector, "k8s-worker", "w-1").await;
    let control = FakeAgent::connect(&collector, "k8s-cp", "c-1").await;
    worker.send_batch(client_events()).await;
    control.send_batch(server_events()).await;
    let hop = tokio::time::timeout(WAIT * 2, async {
        loop {
            let update = watch
                .message()
                .await
                .expect("watch ok")
                .expect("watch open");
            if let Some(watch_update::Body::Hop(h)) = update.body {
                if h.client.as_ref().is_some_and(|c| c.pid == CLIENT_PID)
                    && h.kind == "request/response"
                {
                    return h;
                }
            }
        }
    })
    .await
    .expect("the sane exchange's hop after the absurd ones");
    assert_eq!(hop.summary, "GET /api/v1/namespaces/default/pods → 200");
    collector.shutdown().await.expect("clean shutdown");
}
