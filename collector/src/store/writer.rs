//! The single store writer: batches everything written within ~50 ms into one
//! redb transaction (one fsync), then releases the agents' acks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ktrail_proto::v1::{AgentStatus, Hop, IngestAck};
use prost::Message;
use redb::Database;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::{debug, error, warn};

use super::tables::{AGENTS, EVENTS, HOPS};
use super::Store;
use crate::error::StoreError;

/// Where to send an agent's ack once its events are committed.
#[derive(Debug)]
pub struct AckTarget {
    /// Identifies the ingest stream; acks to one stream are coalesced.
    pub conn_id: u64,
    pub acked_seq: u64,
    pub tx: mpsc::UnboundedSender<Result<IngestAck, Status>>,
}

/// Accepted events of one agent, with its status after them (stored in the
/// same transaction, so a restart never believes in events it lost).
#[derive(Debug)]
pub struct EventsWrite {
    pub agent_id: String,
    /// `(seq, prost-encoded StoredEvent)`.
    pub events: Vec<(u64, Vec<u8>)>,
    pub status: AgentStatus,
    pub ack: Option<AckTarget>,
}

#[derive(Debug)]
enum WriteOp {
    Events(EventsWrite),
    Agent(AgentStatus),
    Hop {
        start: u64,
        id: String,
        bytes: Vec<u8>,
    },
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterClosed;

/// Queues writes for the writer task. Cheap to clone; the task ends (after a
/// last commit) when every clone is dropped.
#[derive(Clone, Debug)]
pub struct StoreWriter {
    tx: mpsc::Sender<WriteOp>,
}

impl StoreWriter {
    pub async fn write_events(&self, write: EventsWrite) -> Result<(), WriterClosed> {
        self.send(WriteOp::Events(write)).await
    }

    pub async fn write_agent(&self, status: AgentStatus) -> Result<(), WriterClosed> {
        self.send(WriteOp::Agent(status)).await
    }

    pub async fn write_hop(&self, hop: &Hop) -> Result<(), WriterClosed> {
        self.send(WriteOp::Hop {
            start: hop.start_unix_ns,
            id: hop.id.clone(),
            bytes: hop.encode_to_vec(),
        })
        .await
    }

    /// Returns once everything queued before it is committed.
    pub async fn flush(&self) -> Result<(), WriterClosed> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Flush(tx)).await?;
        rx.await.map_err(|_| WriterClosed)
    }

    async fn send(&self, op: WriteOp) -> Result<(), WriterClosed> {
        self.tx.send(op).await.map_err(|_| WriterClosed)
    }
}

/// Tuning of the writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// At most one commit per interval.
    pub commit_interval: Duration,
    /// Writes queued before senders wait (backpressure on ingest).
    pub queue: usize,
    /// A batch stops taking writes at this many bytes and waits for its
    /// commit time, so memory stays bounded under any load.
    pub max_batch_bytes: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_millis(50),
            queue: 256,
            max_batch_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What the writer did, returned when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub commits: u64,
    pub events: u64,
    pub hops: u64,
}

#[derive(Default)]
struct BatchData {
    events: Vec<(String, u64, Vec<u8>)>,
    agents: HashMap<String, Vec<u8>>,
    hops: Vec<(u64, String, Vec<u8>)>,
}

#[derive(Default)]
struct Batch {
    data: BatchData,
    acks: Vec<AckTarget>,
    flushes: Vec<oneshot::Sender<()>>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, op: WriteOp) {
        match op {
            WriteOp::Events(w) => {
                for (seq, bytes) in w.events {
                    self.bytes += bytes.len();
                    self.data.events.push((w.agent_id.clone(), seq, bytes));
                }
                self.data
                    .agents
                    .insert(w.agent_id, w.status.encode_to_vec());
                self.acks.extend(w.ack);
            }
            WriteOp::Agent(status) => {
                let bytes = status.encode_to_vec();
                self.data.agents.insert(status.agent_id, bytes);
            }
            WriteOp::Hop { start, id, bytes } => {
                self.bytes += bytes.len();
                self.data.hops.push((start, id, bytes));
            }
            WriteOp::Flush(tx) => self.flushes.push(tx),
        }
    }
}

/// Starts the writer task.
pub fn spawn(
    store: Store,
    cfg: WriterConfig,
) -> (StoreWriter, JoinHandle<Result<WriterStats, StoreError>>) {
    let (tx, rx) = mpsc::channel(cfg.queue.max(1));
    let task = tokio::spawn(run(store.db().clone(), rx, cfg));
    (StoreWriter { tx }, task)
}

async fn run(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<WriteOp>,
    cfg: WriterConfig,
) -> Result<WriterStats, StoreError> {
    let mut stats = WriterStats::default();
    let mut last_commit: Option<Instant> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::default();
        batch.push(first);
        let now = Instant::now();
        let deadline = last_commit.map_or(now, |t| (t + cfg.commit_interval).max(now));
        let deadline = tokio::time::Instant::from_std(deadline);
        // Take what arrives until the deadline, unless the batch is full:
        // then the senders wait (the queue is bounded) until this commit.
        while batch.bytes < cfg.max_batch_bytes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(op)) => batch.push(op),
                Ok(None) | Err(_) => break,
            }
        }
        tokio::time::sleep_until(deadline).await;
        let Batch {
            data,
            acks,
            flushes,
            ..
        } = batch;
        let (n_events, n_hops) = (data.events.len() as u64, data.hops.len() as u64);
        let started = Instant::now();
        commit_with_retry(&db, data).await?;
        last_commit = Some(Instant::now());
        stats.commits += 1;
        stats.events += n_events;
        stats.hops += n_hops;
        debug!(
            events = n_events,
            hops = n_hops,
            elapsed_us = started.elapsed().as_micros() as u64,
            "store commit"
        );
        release(acks, flushes);
    }
    Ok(stats)
}

/// Sends each stream its highest ack of the batch.
fn release(acks: Vec<AckTarget>, flushes: Vec<oneshot::Sender<()>>) {
    let mut per_conn: HashMap<u64, AckTarget> = HashMap::new();
    for ack in acks {
        match per_conn.get_mut(&ack.conn_id) {
            Some(best) if best.acked_seq >= ack.acked_seq => {}
            _ => {
                per_conn.insert(ack.conn_id, ack);
            }
        }
    }
    for ack in per_conn.into_values() {
        // The stream may be gone; the agent resends on its next connection.
        let _ = ack.tx.send(Ok(IngestAck {
            acked_seq: ack.acked_seq,
        }));
    }
    for flush in flushes {
        let _ = flush.send(());
    }
}

const RETRIES: u32 = 3;

async fn commit_with_retry(db: &Arc<Database>, data: BatchData) -> Result<(), StoreError> {
    let data = Arc::new(data);
    let mut attempt = 0;
    loop {
        let (db, batch) = (db.clone(), data.clone());
        let result = tokio::task::spawn_blocking(move || commit(&db, &batch))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
            .and_then(|r| r);
        match result {
            Ok(()) => return Ok(()),
            Err(e) if attempt < RETRIES => {
                attempt += 1;
                warn!(error = %e, attempt, "store commit failed, retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            Err(e) => {
                error!(error = %e, "store commit failed for good; stopping the writer");
                return Err(e);
            }
        }
    }
}

fn commit(db: &Database, data: &BatchData) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut events = txn.open_table(EVENTS)?;
        for (agent_id, seq, bytes) in &data.events {
            events.insert((agent_id.as_str(), *seq), bytes.as_slice())?;
        }
        let mut agents = txn.open_table(AGENTS)?;
        for (agent_id, bytes) in &data.agents {
            agents.insert(agent_id.as_str(), bytes.as_slice())?;
        }
        let mut hops = txn.open_table(HOPS)?;
        for (start, id, bytes) in &data.hops {
            hops.insert((*start, id.as_str()), bytes.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}
