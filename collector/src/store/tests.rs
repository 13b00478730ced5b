use std::time::Duration;

use ktrail_proto::v1::{AgentStatus, Event, Hop, IngestAck};
use tokio::sync::mpsc;

use super::batch;
use super::writer::{self, AckTarget, EncodedEvents, EventsWrite, WriterConfig};
use super::Store;
use crate::error::StoreError;

/// Events `seqs` of node `node`.
fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<Event> {
    seqs.map(|seq| Event {
        seq,
        comm: "curl".into(),
        pid: seq as u32,
        ..Event::default()
    })
    .collect()
}

/// Events `seqs` of node `node`, as ingest encodes one received batch.
fn stored(node: &str, seqs: std::ops::RangeInclusive<u64>) -> Option<EncodedEvents> {
    let events = events(seqs);
    Some(EncodedEvents {
        first_seq: events[0].seq,
        last_seq: events[events.len() - 1].seq,
        count: events.len() as u32,
        body: batch::RowBody::Encoded(batch::encode(node, &events)),
    })
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
            events: stored("n1", seq..=seq),
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

/// Hops `h-0`, `h-1`, … starting at `starts`, in that order.
async fn write_numbered_hops(w: &writer::StoreWriter, starts: impl IntoIterator<Item = u64>) {
    for (i, start_unix_ns) in starts.into_iter().enumerate() {
        let hop = Hop {
            id: format!("h-{i}"),
            start_unix_ns,
            ..Hop::default()
        };
        w.write_hop(&hop).await.expect("queued");
    }
}

#[tokio::test]
async fn the_window_loads_the_latest_hops_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (w, _task) = writer::spawn(store.clone(), WriterConfig::default());
    write_numbered_hops(&w, (0..10).map(|i| 100 - i)).await;
    w.flush().await.expect("flushed");
    let loaded = store.load(3).expect("load");
    let ids: Vec<&str> = loaded.recent_hops.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["h-2", "h-1", "h-0"], "by start time, oldest first");
    assert_eq!(loaded.hops_total, 10);
}

/// A store written before the fixed-width hop index (its index keyed by the hop id
/// itself) opens with its index moved over: its hops load and are found by time.
#[tokio::test]
async fn a_store_with_the_id_keyed_hop_index_is_migrated_at_open() {
    use super::tables::{hop_id_key, HOP_INDEX, LEGACY_HOP_INDEX};
    use redb::{ReadableTable, ReadableTableMetadata};

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let (w, task) = writer::spawn(store.clone(), WriterConfig::default());
        write_numbered_hops(&w, (0..5).map(|i| 1_000 + i)).await;
        drop(w);
        task.await.expect("join").expect("ok");
        // Rewrite the index as the earlier version kept it.
        let txn = store.db().begin_write().expect("write");
        {
            let mut index = txn.open_table(HOP_INDEX).expect("index");
            let mut legacy = txn.open_table(LEGACY_HOP_INDEX).expect("legacy");
            for i in 0..5u64 {
                let id = format!("h-{i}");
                let place = index
                    .remove((1_000 + i, hop_id_key(&id)))
                    .expect("remove")
                    .expect("indexed")
                    .value();
                legacy
                    .insert((1_000 + i, id.as_str()), place)
                    .expect("insert");
            }
            assert_eq!(index.len().expect("len"), 0);
        }
        txn.commit().expect("commit");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let ids = |hops: Vec<Hop>| hops.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.hops_between(1_001, 1_003).expect("between")),
        ["h-1", "h-2", "h-3"]
    );
    let loaded = store.load(10).expect("load");
    assert_eq!(loaded.hops_total, 5);
    assert_eq!(ids(loaded.recent_hops), ["h-0", "h-1", "h-2", "h-3", "h-4"]);
    let txn = store.db().begin_read().expect("read");
    assert!(
        matches!(
            txn.open_table(LEGACY_HOP_INDEX),
            Err(redb::TableError::TableDoesNotExist(_))
        ),
        "the old index is dropped"
    );
    assert_eq!(
        txn.open_table(HOP_INDEX)
            .expect("index")
            .iter()
            .expect("iter")
            .count(),
        5
    );
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
            events: stored("n", seq..=seq),
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

/// Writes `batches` (inclusive seq ranges) of agent `a` and waits for the last ack.
async fn write_batches(w: &writer::StoreWriter, batches: &[std::ops::RangeInclusive<u64>]) -> u64 {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut contiguous = 0;
    for seqs in batches {
        contiguous = *seqs.end();
        w.write_events(acked_write(stored("n", seqs.clone()), contiguous, &tx))
            .await
            .expect("queued");
    }
    wait_acked(&mut rx, contiguous).await
}

type AckSender = mpsc::UnboundedSender<Result<IngestAck, tonic::Status>>;

/// Agent `a`'s `events`, acked up to `contiguous` on `tx`.
fn acked_write(events: Option<EncodedEvents>, contiguous: u64, tx: &AckSender) -> EventsWrite {
    EventsWrite {
        agent_id: "a".into(),
        events,
        status: AgentStatus {
            agent_id: "a".into(),
            contiguous_seq: contiguous,
            ..AgentStatus::default()
        },
        ack: Some(AckTarget {
            conn_id: 1,
            acked_seq: contiguous,
            tx: tx.clone(),
        }),
    }
}

/// Waits for the ack of `seq`, and returns it.
async fn wait_acked(
    rx: &mut mpsc::UnboundedReceiver<Result<IngestAck, tonic::Status>>,
    seq: u64,
) -> u64 {
    let mut last = 0;
    while last < seq {
        last = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("acks in time")
            .expect("ack")
            .expect("ok")
            .acked_seq;
    }
    last
}

#[tokio::test]
async fn events_are_found_in_their_batch_rows_compressed_or_not() {
    for level in [0, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let cfg = WriterConfig {
            compression_level: level,
            ..WriterConfig::default()
        };
        let (w, task) = writer::spawn(store.clone(), cfg);
        // A gap between 10 and 15 (lost events), batches of different sizes.
        write_batches(&w, &[1..=3, 4..=10, 15..=15, 16..=40]).await;
        for seq in (1..=10).chain(15..=40) {
            let held = store.event("a", seq).expect("read").expect("held");
            assert_eq!(held.node, "n");
            assert_eq!(held.event.expect("event").seq, seq);
        }
        for seq in [0, 11, 14, 41] {
            assert!(store.event("a", seq).expect("read").is_none(), "{seq}");
        }
        assert!(store.event("b", 3).expect("read").is_none());
        assert_eq!(store.event_count("a").expect("count"), 36);
        drop(w);
        let stats = task.await.expect("join").expect("ok");
        assert_eq!(stats.events, 36);
        let retention = store.retention().expect("retention");
        assert!(retention.event_bytes > 0);
        assert_eq!(retention.evicted_batches, 0);
    }
}

#[tokio::test]
async fn retention_deletes_the_oldest_batches_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let cfg = WriterConfig {
        compression_level: 0,
        ..WriterConfig::default()
    };
    // One batch's row size, to set the limit at about three batches.
    let row = batch::frame(&batch::encode("n", &events(1..=10)), 10, 10, None).len() as u64;
    let cfg = WriterConfig {
        max_store_bytes: 3 * row + row / 2,
        ..cfg
    };
    let (w, task) = writer::spawn(store.clone(), cfg);
    let ranges: Vec<_> = (0..8u64).map(|i| i * 10 + 1..=i * 10 + 10).collect();
    write_batches(&w, &ranges).await;
    drop(w);
    let stats = task.await.expect("join").expect("ok");
    let retention = store.retention().expect("retention");
    assert_eq!(retention.evicted_batches, 5, "{retention:?}");
    assert_eq!(retention.evicted_events, 50);
    assert_eq!(stats.evicted_events, 50);
    assert!(retention.event_bytes <= cfg.max_store_bytes);
    assert!(store.event("a", 50).expect("read").is_none(), "evicted");
    assert!(store.event("a", 51).expect("read").is_some(), "kept");
    assert_eq!(store.event_count("a").expect("count"), 30);
    drop(store);
    // The counters survive a restart.
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.retention().expect("retention"), retention);
}

/// Events carrying `len` bytes each that do not compress (xorshift noise), like
/// ciphertext or already-compressed bodies: the worst case for a cap on disk.
fn incompressible(seqs: std::ops::RangeInclusive<u64>, len: usize) -> Vec<Event> {
    let mut x = seqs.start().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    seqs.map(|seq| {
        let data = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Event {
            seq,
            comm: "kube-apiserver".into(),
            body: Some(ktrail_proto::v1::event::Body::Syscall(
                ktrail_proto::v1::SyscallEvent {
                    name: "write".into(),
                    data,
                    ..Default::default()
                },
            )),
            ..Event::default()
        }
    })
    .collect()
}

#[tokio::test]
async fn the_file_on_disk_stays_within_the_cap() {
    const CAP: u64 = 12 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    // A transaction is to the cap as 32 MiB is to a few GiB in production.
    let cfg = WriterConfig {
        max_store_bytes: CAP,
        max_batch_bytes: 256 << 10,
        commit_interval: Duration::from_millis(1),
        ..WriterConfig::default()
    };
    let (w, task) = writer::spawn(store.clone(), cfg);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Six times the cap in events, 32 KiB per batch, with a hop per event.
    let (per_batch, len) = (32u64, 1024);
    let batches = 6 * CAP / (per_batch * len as u64);
    for b in 0..batches {
        let seqs = b * per_batch + 1..=(b + 1) * per_batch;
        let events = incompressible(seqs.clone(), len);
        for event in &events {
            w.write_hop(&Hop {
                id: format!("h-{}", event.seq),
                start_unix_ns: crate::clock::unix_now_ns(),
                ..Hop::default()
            })
            .await
            .expect("queued");
        }
        let encoded = EncodedEvents {
            first_seq: *seqs.start(),
            last_seq: *seqs.end(),
            count: per_batch as u32,
            body: batch::RowBody::Encoded(batch::encode("n", &events)),
        };
        w.write_events(acked_write(Some(encoded), *seqs.end(), &tx))
            .await
            .expect("queued");
    }
    let last = batches * per_batch;
    wait_acked(&mut rx, last).await;
    drop(w);
    let stats = task.await.expect("join").expect("ok");
    let on_disk = super::retention::bytes_on_disk(store.path()).expect("stat");
    let retention = store.retention().expect("retention");
    assert!(
        on_disk <= CAP,
        "file {on_disk} bytes on disk under a cap of {CAP}; {retention:?}"
    );
    // Room was made by deleting the oldest, and the budget did not collapse. These
    // rows are the worst case for redb's allocator: each ~33 KiB row takes a 64 KiB
    // block, so the file holds about 2.3 bytes per byte of row, and its last
    // quarter is the margin for the commits that grow it before freed pages are
    // reused: a fifth of the cap in rows is what fits, less a quarter each time
    // the file crept on after that (it settles after a few; at 40 times the cap in
    // events, two lowerings).
    assert!(stats.evicted_events > 0, "{stats:?}");
    let kept = retention.event_bytes + retention.hop_bytes;
    assert!(kept >= CAP / 8, "kept {kept} of {CAP}: {retention:?}");
    assert!(
        store.event("a", 1).expect("read").is_none(),
        "the oldest deleted"
    );
    assert!(
        store.event("a", last).expect("read").is_some(),
        "the newest kept"
    );
}

/// While a commit cannot finish (here: another write transaction holds the store,
/// as a long retention catch-up does), the writer takes no more than
/// `max_batch_bytes` into its next transaction and `max_queued_bytes` into its queue;
/// then senders wait, however many op slots are free, and go on once it commits.
#[tokio::test]
async fn a_stalled_commit_stops_ingest_at_the_queued_bytes_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let row = stored("n", 1..=10).expect("row").body.encoded_len();
    let cfg = WriterConfig {
        commit_interval: Duration::ZERO,
        queue: 1024,
        max_batch_bytes: 4 * row,
        max_queued_bytes: 4 * row,
        ..WriterConfig::default()
    };
    let blocker = store.db().begin_write().expect("a write transaction");
    let (w, task) = writer::spawn(store.clone(), cfg);
    let (tx, _acks) = mpsc::unbounded_channel();
    let write = |i: u64| EventsWrite {
        agent_id: "a".into(),
        events: stored("n", i * 10 + 1..=i * 10 + 10),
        status: AgentStatus::default(),
        ack: Some(AckTarget {
            conn_id: 1,
            acked_seq: i * 10 + 10,
            tx: tx.clone(),
        }),
    };
    // The first commit (1 to 4 rows, as many as were queued when it started) stalls
    // on the held transaction; 4 rows fill the next transaction, 4 more the queue.
    let mut taken = 0;
    for i in 0..64 {
        let queued = tokio::time::timeout(Duration::from_millis(200), w.write_events(write(i)));
        match queued.await {
            Ok(result) => {
                result.expect("queued");
                taken += 1;
            }
            Err(_) => break,
        }
    }
    assert!(
        (9..=12).contains(&taken),
        "{taken} rows taken in while the commit stalled; expected 1-4 committing + 4 + 4"
    );
    drop(blocker);
    w.write_events(write(taken))
        .await
        .expect("queued once the commit went through");
    w.flush().await.expect("flushed");
    assert_eq!(store.event_count("a").expect("count"), (taken + 1) * 10);
    drop(w);
    task.await.expect("join").expect("ok");
}
