use std::time::Duration;

use ktrail_proto::v1::{AgentStatus, Event, Hop};
use prost::Message;
use tokio::sync::mpsc;

use super::writer::{self, AckTarget, EventsWrite, WriterConfig};
use super::{Store, StoredEvent};
use crate::error::StoreError;

fn stored(node: &str, seq: u64) -> Vec<u8> {
    StoredEvent {
        node: node.into(),
        event: Some(Event {
            seq,
            comm: "curl".into(),
            ..Event::default()
        }),
    }
    .encode_to_vec()
}

#[tokio::test]
async fn writes_commit_then_ack_and_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (w, task) = writer::spawn(store.clone(), WriterConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let status = AgentStatus {
        node: "n1".into(),
        agent_id: "a1".into(),
        contiguous_seq: 2,
        ..AgentStatus::default()
    };
    for seq in 1..=2 {
        w.write_events(EventsWrite {
            agent_id: "a1".into(),
            events: vec![(seq, stored("n1", seq))],
            status: status.clone(),
            ack: Some(AckTarget {
                conn_id: 1,
                acked_seq: seq,
                tx: tx.clone(),
            }),
        })
        .await
        .expect("queued");
    }
    w.write_hop(&Hop {
        id: "h-1".into(),
        start_unix_ns: 5,
        ..Hop::default()
    })
    .await
    .expect("queued");
    let ack = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("ack in time")
        .expect("ack")
        .expect("ok");
    assert_eq!(ack.acked_seq, 2, "acks of one commit are coalesced");
    assert_eq!(
        store.event("a1", 2).expect("read").expect("held").node,
        "n1"
    );
    drop(w);
    let stats = task.await.expect("join").expect("writer ok");
    assert_eq!(stats.events, 2);
    drop(store);

    let store = Store::open(dir.path()).expect("reopen");
    let loaded = store.load(10).expect("load");
    assert_eq!(loaded.agents, vec![status]);
    assert_eq!(loaded.hops_total, 1);
    assert_eq!(loaded.recent_hops[0].id, "h-1");
    assert_eq!(store.event_count("a1").expect("count"), 2);
}

#[tokio::test]
async fn the_window_loads_the_latest_hops_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (w, _task) = writer::spawn(store.clone(), WriterConfig::default());
    for i in 0..10u64 {
        let hop = Hop {
            id: format!("h-{i}"),
            start_unix_ns: 100 - i,
            ..Hop::default()
        };
        w.write_hop(&hop).await.expect("queued");
    }
    w.flush().await.expect("flushed");
    let loaded = store.load(3).expect("load");
    let ids: Vec<&str> = loaded.recent_hops.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["h-2", "h-1", "h-0"], "by start time, oldest first");
    assert_eq!(loaded.hops_total, 10);
}

#[test]
fn a_file_as_data_dir_is_a_clear_error() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let err = Store::open(file.path()).expect_err("not a directory");
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err}");
    assert!(err.to_string().contains("not a directory"));
}

#[test]
fn a_second_open_of_the_same_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Store::open(dir.path()).expect("open");
    let err = Store::open(dir.path()).expect_err("in use");
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
}

#[tokio::test]
async fn many_writes_share_few_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (w, task) = writer::spawn(store.clone(), WriterConfig::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = std::time::Instant::now();
    for seq in 1..=2_000u64 {
        w.write_events(EventsWrite {
            agent_id: "a".into(),
            events: vec![(seq, stored("n", seq))],
            status: AgentStatus::default(),
            ack: Some(AckTarget {
                conn_id: 1,
                acked_seq: seq,
                tx: tx.clone(),
            }),
        })
        .await
        .expect("queued");
    }
    let mut last = 0;
    while last < 2_000 {
        last = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("acks in time")
            .expect("ack")
            .expect("ok")
            .acked_seq;
    }
    let elapsed = started.elapsed();
    drop(w);
    let stats = task.await.expect("join").expect("ok");
    assert_eq!(stats.events, 2_000);
    // One fsync per ~50 ms, not per write.
    let bound = elapsed.as_millis() as u64 / 50 + 2;
    assert!(
        stats.commits <= bound,
        "{} commits in {elapsed:?}",
        stats.commits
    );
}
