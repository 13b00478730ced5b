//! The real collector server with two fake agents (see common/): acks after
//! commit, a hop paired across nodes in Watch, Status, and a restart on the
//! same data directory that keeps every agent's contiguous_seq.

mod common;

use std::time::Duration;

use common::*;
use ktrail_proto::v1::{
    watch_update, AgentStatus, Hop, ListHopsRequest, LossReport, StatusReply, StatusRequest,
    WatchRequest,
};
use tonic::Streaming;

/// The next request/response hop (the kubelet's exec is a hop too, and
/// flows come as updates of their own).
async fn next_hop(watch: &mut Streaming<ktrail_proto::v1::WatchUpdate>) -> Hop {
    loop {
        let update = tokio::time::timeout(WAIT, watch.message())
            .await
            .expect("a hop in time")
            .expect("watch stream ok")
            .expect("watch stream open");
        match update.body {
            Some(watch_update::Body::Hop(hop)) if hop.kind == "exec" => {}
            Some(watch_update::Body::Hop(hop)) => return hop,
            Some(watch_update::Body::Flow(_)) => {}
            other => panic!("expected a hop, got {other:?}"),
        }
    }
}

async fn status(collector: &ktrail_collector::Collector) -> StatusReply {
    query(collector)
        .await
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

fn agent<'a>(reply: &'a StatusReply, agent_id: &str) -> &'a AgentStatus {
    reply
        .agents
        .iter()
        .find(|a| a.agent_id == agent_id)
        .unwrap_or_else(|| panic!("{agent_id} in {reply:?}"))
}

/// Polls Status until `check` holds.
async fn wait_status(
    collector: &ktrail_collector::Collector,
    check: impl Fn(&StatusReply) -> bool,
) -> StatusReply {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = status(collector).await;
        if check(&reply) {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status never matched: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn check_hop(hop: &Hop) {
    let (client, server) = (
        hop.client.clone().unwrap_or_default(),
        hop.server.clone().unwrap_or_default(),
    );
    assert_eq!(
        (client.node.as_str(), client.pid, client.comm.as_str()),
        ("k8s-worker", CLIENT_PID, "kubelet")
    );
    assert_eq!(
        (server.node.as_str(), server.pid, server.comm.as_str()),
        ("k8s-cp", SERVER_PID, "kube-apiserver")
    );
    assert!(client.observed && server.observed);
    assert_eq!(hop.summary, "GET /api/v1/namespaces/default/pods → 200");
    assert_eq!(hop.app_protocol, "http1");
    assert_eq!(hop.status_code, 200);
    assert_eq!(hop.kind, "request/response");
    assert_eq!(hop.response, RESP);
    // connect, write, read, close + accept, read, write, close; not the exec.
    assert_eq!(hop.events.len(), 8, "{:?}", hop.events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_pair_into_a_hop_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = start_collector(dir.path()).await;
    let mut watch = query(&collector)
        .await
        .watch(WatchRequest { replay: 10 })
        .await
        .expect("watch")
        .into_inner();

    let mut worker = FakeAgent::connect(&collector, "k8s-worker", "agent-worker-1").await;
    let mut cp = FakeAgent::connect(&collector, "k8s-cp", "agent-cp-1").await;
    worker.send_batch(client_events()).await;
    cp.send_batch(server_events()).await;
    assert_eq!(worker.wait_ack(5).await, 5);
    assert_eq!(cp.wait_ack(4).await, 4);
    assert!(
        collector
            .store()
            .event("agent-worker-1", 3)
            .expect("read")
            .is_some(),
        "acked means stored"
    );

    let hop = next_hop(&mut watch).await;
    check_hop(&hop);

    worker
        .send_loss(LossReport {
            buffer_full: 7,
            last_seq: 5,
            ..LossReport::default()
        })
        .await;
    let reply = wait_status(&collector, |r| {
        r.agents.len() == 2
            && agent(r, "agent-worker-1")
                .loss
                .as_ref()
                .is_some_and(|l| l.buffer_full == 7)
    })
    .await;
    let w = agent(&reply, "agent-worker-1");
    assert!(w.connected);
    assert_eq!(
        (w.node.as_str(), w.events_received, w.contiguous_seq),
        ("k8s-worker", 5, 5)
    );
    assert_eq!(agent(&reply, "agent-cp-1").contiguous_seq, 4);
    // The request and the kubelet's exec.
    assert_eq!((reply.events_total, reply.hops_total), (9, 2));

    drop(worker);
    drop(cp);
    wait_status(&collector, |r| r.agents.iter().all(|a| !a.connected)).await;
    drop(watch);
    collector.shutdown().await.expect("clean shutdown");

    // Same data directory, new process (and port).
    let collector = start_collector(dir.path()).await;
    let reply = status(&collector).await;
    let w = agent(&reply, "agent-worker-1");
    assert!(!w.connected);
    assert_eq!(w.contiguous_seq, 5, "contiguous_seq survives the restart");
    assert_eq!(w.loss.as_ref().map(|l| l.last_seq), Some(5));
    assert_eq!(reply.hops_total, 2);
    let listed = query(&collector)
        .await
        .list_hops(ListHopsRequest { limit: 10 })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.hops.len(), 2);
    assert!(
        listed.hops.iter().any(|h| h.id == hop.id),
        "the window is reloaded from the store"
    );

    // The agent reconnects, is told what is held, and resends all it has.
    let mut worker = FakeAgent::connect(&collector, "k8s-worker", "agent-worker-1").await;
    assert_eq!(
        worker.wait_ack(5).await,
        5,
        "first ack: what the collector holds"
    );
    let mut resent = client_events();
    let mut sixth = resent[4].clone();
    sixth.seq = 6;
    resent.push(sixth);
    worker.send_batch(resent).await;
    assert_eq!(worker.wait_ack(6).await, 6);
    let reply = wait_status(&collector, |r| {
        agent(r, "agent-worker-1").contiguous_seq == 6
    })
    .await;
    let w = agent(&reply, "agent-worker-1");
    assert!(w.connected);
    assert_eq!(w.duplicates_ignored, 5);
    assert_eq!(w.events_received, 6);
    drop(worker);
    collector.shutdown().await.expect("clean shutdown");
}
