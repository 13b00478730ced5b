//! The single store writer: group commit. Everything queued while one redb
//! transaction commits goes into the next one (at most one commit per
//! `commit_interval`), and the agents' acks of a transaction are released only
//! once its commit has returned, i.e. is on disk.
//!
//! Events are stored one row per received batch ([`super::batch`]), zstd-compressed
//! in the commit's blocking thread, and so are hops. With `max_store_bytes` set, the
//! oldest batches and hops are deleted in the same transaction once the rows exceed
//! their budget, which keeps the file within it on disk ([`super::retention`];
//! counted, logged).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ktrail_proto::v1::{AgentStatus, Hop, IngestAck};
use prost::Message;
use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::{debug, error, warn};

use super::batch::{self, Compressor, RowBody};
use super::retention::{evict_oldest, eviction_target, BudgetLowered, DiskCap, Held};
use super::tables::{
    hop_id_key, AGENTS, BATCH_AGE, EVENT_BATCHES, FLOWS, HOP_GROUPS, HOP_INDEX, META,
    META_EVENT_BYTES, META_EVICTED_BATCHES, META_EVICTED_EVENTS, META_EVICTED_HOPS, META_HOP_BYTES,
    META_NEXT_BATCH, META_NEXT_HOP_GROUP, META_ROW_BUDGET,
};
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

/// Accepted events of one received batch, as the body of their row.
#[derive(Debug)]
pub struct EncodedEvents {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u32,
    pub body: RowBody,
}

/// Accepted events of one agent, with its status after them (stored in the
/// same transaction, so a restart never believes in events it lost).
#[derive(Debug)]
pub struct EventsWrite {
    pub agent_id: Arc<str>,
    /// None when nothing was accepted (the status and ack still are written).
    pub events: Option<EncodedEvents>,
    pub status: AgentStatus,
    pub ack: Option<AckTarget>,
}

/// Hops encoded for the store, as many as one write takes: their index keys and
/// their encodings, back to back as in a stored hop group ([`batch::push_hop`]).
#[derive(Debug, Default)]
pub struct EncodedHops {
    keys: Vec<(u64, u64)>,
    group: Vec<u8>,
}

impl EncodedHops {
    pub fn push(&mut self, hop: &Hop) {
        self.keys.push((hop.start_unix_ns, hop_id_key(&hop.id)));
        batch::push_hop(&mut self.group, hop);
    }

    /// Room for hops of about `bytes` encoded (a buffer grown hop by hop is
    /// reallocated, and its new pages faulted in, several times per write).
    pub fn with_capacity(hops: usize, bytes: usize) -> Self {
        Self {
            keys: Vec::with_capacity(hops),
            group: Vec::with_capacity(bytes),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Debug)]
enum WriteOp {
    Events(EventsWrite),
    Agent(AgentStatus),
    Hops(EncodedHops),
    Flow { id: String, bytes: Vec<u8> },
    Flush(oneshot::Sender<()>),
}

impl WriteOp {
    /// What the op adds to a transaction: its rows' bytes as held in memory.
    fn bytes(&self) -> usize {
        match self {
            Self::Events(w) => w.events.as_ref().map_or(0, |e| e.body.encoded_len()),
            Self::Hops(hops) => hops.group.len(),
            Self::Flow { bytes, .. } => bytes.len(),
            Self::Agent(_) | Self::Flush(_) => 0,
        }
    }
}

/// An op in the writer's queue, holding its share of `max_queued_bytes` until the
/// writer takes it into a transaction.
#[derive(Debug)]
struct Queued {
    op: WriteOp,
    _bytes: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, thiserror::Error)]
#[error("the store writer has stopped")]
pub struct WriterClosed;

/// Queues writes for the writer task. Cheap to clone; the task ends (after a
/// last commit) when every clone is dropped.
#[derive(Clone, Debug)]
pub struct StoreWriter {
    tx: mpsc::Sender<Queued>,
    /// Bytes the queue may still take (`max_queued_bytes`).
    room: Arc<Semaphore>,
    max_queued_bytes: u32,
}

impl StoreWriter {
    pub async fn write_events(&self, write: EventsWrite) -> Result<(), WriterClosed> {
        self.send(WriteOp::Events(write)).await
    }

    pub async fn write_agent(&self, status: AgentStatus) -> Result<(), WriterClosed> {
        self.send(WriteOp::Agent(status)).await
    }

    /// One hop (the collector writes a round of them with [`Self::write_hops`]).
    #[cfg(test)]
    pub async fn write_hop(&self, hop: &Hop) -> Result<(), WriterClosed> {
        let mut hops = EncodedHops::default();
        hops.push(hop);
        self.write_hops(hops).await
    }

    /// Several hops in one write (one queue slot, one copy into the commit's group).
    pub async fn write_hops(&self, hops: EncodedHops) -> Result<(), WriterClosed> {
        if hops.is_empty() {
            return Ok(());
        }
        self.send(WriteOp::Hops(hops)).await
    }

    /// Stores a flow's latest version (replacing the one before).
    pub async fn write_flow(&self, flow: &ktrail_proto::v1::Flow) -> Result<(), WriterClosed> {
        self.send(WriteOp::Flow {
            id: flow.id.clone(),
            bytes: flow.encode_to_vec(),
        })
        .await
    }

    /// Returns once everything queued before it is committed.
    pub async fn flush(&self) -> Result<(), WriterClosed> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Flush(tx)).await?;
        rx.await.map_err(|_| WriterClosed)
    }

    /// Waits for room in the queue, in ops and in bytes: ingest then stops reading
    /// the agents' streams, and they buffer (or drop, counted) on their side.
    async fn send(&self, op: WriteOp) -> Result<(), WriterClosed> {
        // An op larger than the whole bound waits for all of it.
        let bytes = u32::try_from(op.bytes())
            .unwrap_or(u32::MAX)
            .min(self.max_queued_bytes);
        let permit = match bytes {
            0 => None,
            n => Some(
                self.room
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .map_err(|_| WriterClosed)?,
            ),
        };
        let queued = Queued { op, _bytes: permit };
        self.tx.send(queued).await.map_err(|_| WriterClosed)
    }
}

/// Tuning of the writer.
#[derive(Clone, Copy, Debug)]
pub struct WriterConfig {
    /// At most one commit per interval.
    pub commit_interval: Duration,
    /// Writes queued before senders wait (backpressure on ingest).
    pub queue: usize,
    /// Bytes of rows queued before senders wait. While a slow commit (retention
    /// catching up) holds the writer, this, not `queue`, bounds what ingest has
    /// taken in but not yet put in a transaction: 256 received batches of ~0.6 MB
    /// would be 150 MB.
    pub max_queued_bytes: usize,
    /// A transaction being filled stops taking writes at this many bytes (senders
    /// wait, the queue being bounded), so memory stays bounded under any load.
    pub max_batch_bytes: usize,
    /// zstd level of event rows; 0 stores them uncompressed.
    pub compression_level: i32,
    /// The store's file on disk is kept within this many bytes: the oldest event
    /// batches and hops are deleted to make room. 0: no limit.
    pub max_store_bytes: u64,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_millis(50),
            queue: 256,
            max_queued_bytes: 16 * 1024 * 1024,
            max_batch_bytes: 32 * 1024 * 1024,
            compression_level: 1,
            max_store_bytes: 0,
        }
    }
}

/// What the writer did, returned when it ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub commits: u64,
    pub events: u64,
    pub hops: u64,
    /// Batches, events and hops deleted by retention during this run.
    pub evicted_batches: u64,
    pub evicted_events: u64,
    pub evicted_hops: u64,
}

#[derive(Default)]
struct BatchData {
    events: Vec<(Arc<str>, EncodedEvents)>,
    agents: HashMap<Arc<str>, AgentStatus>,
    /// Joined into one group at commit.
    hops: Vec<EncodedHops>,
    /// Latest version of each flow written in the batch.
    flows: HashMap<String, Vec<u8>>,
}

#[derive(Default)]
struct Batch {
    data: BatchData,
    acks: Vec<AckTarget>,
    flushes: Vec<oneshot::Sender<()>>,
    bytes: usize,
    ops: usize,
}

impl Batch {
    fn push(&mut self, op: WriteOp) {
        self.ops += 1;
        self.bytes += op.bytes();
        match op {
            WriteOp::Events(w) => {
                if let Some(events) = w.events {
                    self.data.events.push((w.agent_id.clone(), events));
                }
                self.data.agents.insert(w.agent_id, w.status);
                self.acks.extend(w.ack);
            }
            WriteOp::Agent(status) => {
                self.data
                    .agents
                    .insert(Arc::from(status.agent_id.as_str()), status);
            }
            WriteOp::Hops(hops) => self.data.hops.push(hops),
            WriteOp::Flow { id, bytes } => {
                self.data.flows.insert(id, bytes);
            }
            WriteOp::Flush(tx) => self.flushes.push(tx),
        }
    }

    fn is_empty(&self) -> bool {
        self.ops == 0
    }
}

/// What the blocking commit needs besides the batch.
struct CommitCtx {
    db: Arc<Database>,
    scratch: Mutex<Scratch>,
    /// None: no limit.
    disk_cap: Option<Mutex<DiskCap>>,
}

/// Kept from one commit to the next (commits run one at a time): a zstd context is
/// costly to set up, and buffers of megabytes allocated afresh each time cost their
/// page faults again.
struct Scratch {
    compressor: Option<Compressor>,
    /// The commit's hops, joined.
    group: Vec<u8>,
    /// A received batch's leading fields ([`RowBody::frame_into`]).
    head: Vec<u8>,
    /// The row being inserted (redb copies it).
    row: Vec<u8>,
}

/// What one commit did.
#[derive(Clone, Copy, Debug, Default)]
struct Committed {
    events: u64,
    hops: u64,
    evicted_batches: u64,
    evicted_events: u64,
    evicted_hops: u64,
    held_bytes: u64,
    budget_lowered: Option<BudgetLowered>,
}

/// Starts the writer task.
pub fn spawn(
    store: Store,
    cfg: WriterConfig,
) -> (StoreWriter, JoinHandle<Result<WriterStats, StoreError>>) {
    let (tx, rx) = mpsc::channel(cfg.queue.max(1));
    let max_queued_bytes = u32::try_from(cfg.max_queued_bytes)
        .unwrap_or(u32::MAX)
        .max(1);
    let writer = StoreWriter {
        tx,
        room: Arc::new(Semaphore::new(max_queued_bytes as usize)),
        max_queued_bytes,
    };
    let disk_cap = (cfg.max_store_bytes > 0).then(|| {
        // Unreadable means a fresh store: the budget starts at the cap.
        let stored = store.meta(META_ROW_BUDGET).ok().flatten();
        // The file grows on for a few commits after rows are deleted, each up to
        // one full transaction in pages rounded up to powers of two.
        let margin = 8 * cfg.max_batch_bytes as u64;
        Mutex::new(DiskCap::new(
            store.path().to_owned(),
            cfg.max_store_bytes,
            margin,
            stored,
        ))
    });
    let ctx = Arc::new(CommitCtx {
        db: store.db().clone(),
        scratch: Mutex::new(Scratch {
            compressor: batch::compressor(cfg.compression_level),
            group: Vec::new(),
            head: Vec::new(),
            row: Vec::new(),
        }),
        disk_cap,
    });
    let task = tokio::spawn(run(ctx, rx, cfg));
    (writer, task)
}

type InFlight = (
    JoinHandle<Result<Committed, StoreError>>,
    Vec<AckTarget>,
    Vec<oneshot::Sender<()>>,
);

async fn run(
    ctx: Arc<CommitCtx>,
    mut rx: mpsc::Receiver<Queued>,
    cfg: WriterConfig,
) -> Result<WriterStats, StoreError> {
    let mut stats = WriterStats::default();
    let mut next = Batch::default();
    let mut in_flight: Option<InFlight> = None;
    let mut last_start: Option<tokio::time::Instant> = None;
    let mut closed = false;
    let mut last_eviction_log: Option<Instant> = None;
    loop {
        let due = last_start.map_or_else(tokio::time::Instant::now, |t| t + cfg.commit_interval);
        let full = next.bytes >= cfg.max_batch_bytes;
        if in_flight.is_none() && !next.is_empty() {
            if closed || tokio::time::Instant::now() >= due {
                // Whatever is already queued joins this commit.
                while !closed && next.bytes < cfg.max_batch_bytes {
                    match rx.try_recv() {
                        Ok(queued) => next.push(queued.op),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
                    }
                }
                let batch = std::mem::take(&mut next);
                last_start = Some(tokio::time::Instant::now());
                let ctx = ctx.clone();
                let handle = tokio::spawn(commit_with_retry(ctx, batch.data));
                in_flight = Some((handle, batch.acks, batch.flushes));
                continue;
            }
        } else if in_flight.is_none() && closed {
            break;
        }
        tokio::select! {
            op = rx.recv(), if !closed && !full => match op {
                Some(queued) => next.push(queued.op),
                None => closed = true,
            },
            done = async { (&mut in_flight.as_mut().expect("guarded").0).await },
                if in_flight.is_some() => {
                let (_, acks, flushes) = in_flight.take().expect("in flight");
                let committed = done.map_err(|e| StoreError::Task(e.to_string()))??;
                stats.commits += 1;
                stats.events += committed.events;
                stats.hops += committed.hops;
                stats.evicted_batches += committed.evicted_batches;
                stats.evicted_events += committed.evicted_events;
                stats.evicted_hops += committed.evicted_hops;
                if committed.evicted_batches + committed.evicted_hops > 0
                    && last_eviction_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                {
                    last_eviction_log = Some(Instant::now());
                    warn!(
                        evicted_batches_total = stats.evicted_batches,
                        evicted_events_total = stats.evicted_events,
                        evicted_hops_total = stats.evicted_hops,
                        held_bytes = committed.held_bytes,
                        max_store_bytes = cfg.max_store_bytes,
                        "store retention: the oldest events and hops were deleted"
                    );
                }
                if let Some(lowered) = committed.budget_lowered {
                    warn!(
                        file_bytes = lowered.file_bytes,
                        row_budget_bytes = lowered.row_budget,
                        max_store_bytes = cfg.max_store_bytes,
                        "store retention: the store's file nears its cap on disk; \
                         keeping fewer events and hops from now on"
                    );
                }
                release(acks, flushes);
            },
            () = tokio::time::sleep_until(due), if in_flight.is_none() && !next.is_empty() => {}
        }
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

async fn commit_with_retry(ctx: Arc<CommitCtx>, data: BatchData) -> Result<Committed, StoreError> {
    let data = Arc::new(data);
    let mut attempt = 0;
    loop {
        let (ctx, batch) = (ctx.clone(), data.clone());
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || commit(&ctx, &batch))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))
            .and_then(|r| r);
        match result {
            Ok(done) => {
                debug!(
                    events = done.events,
                    hops = done.hops,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "store commit"
                );
                return Ok(done);
            }
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

fn commit(ctx: &CommitCtx, data: &BatchData) -> Result<Committed, StoreError> {
    let txn = ctx.db.begin_write()?;
    let mut done = Committed::default();
    let now_ns = crate::clock::unix_now_ns();
    {
        let mut meta = txn.open_table(META)?;
        let get = |meta: &redb::Table<&str, u64>, key| -> Result<u64, StoreError> {
            Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
        };
        let mut held = Held {
            event_bytes: get(&meta, META_EVENT_BYTES)?,
            hop_bytes: get(&meta, META_HOP_BYTES)?,
        };
        let mut next_batch = get(&meta, META_NEXT_BATCH)?;
        let held_before = held.total();
        {
            let mut scratch = lock(&ctx.scratch);
            let Scratch {
                compressor,
                group,
                head,
                row,
            } = &mut *scratch;
            let mut events = txn.open_table(EVENT_BATCHES)?;
            let mut age = txn.open_table(BATCH_AGE)?;
            for (agent_id, encoded) in &data.events {
                encoded.body.frame_into(
                    encoded.count,
                    encoded.last_seq,
                    compressor.as_mut(),
                    head,
                    row,
                );
                let key = (agent_id.as_ref(), encoded.first_seq);
                events.insert(key, row.as_slice())?;
                let size = row.len() as u64;
                let count = u64::from(encoded.count);
                age.insert(next_batch, (key.0, key.1, size, count, now_ns))?;
                next_batch += 1;
                held.event_bytes += size;
                done.events += count;
            }
            let hops = data.hops.iter().map(|h| h.keys.len()).sum::<usize>();
            if hops > 0 {
                // One compressed row for the commit's hops, and an index entry each.
                let group_no = get(&meta, META_NEXT_HOP_GROUP)?;
                let mut index = txn.open_table(HOP_INDEX)?;
                let keys = data.hops.iter().flat_map(|h| &h.keys);
                for (i, key) in keys.enumerate() {
                    index.insert(*key, (group_no, i as u32))?;
                }
                group.clear();
                for chunk in &data.hops {
                    group.extend_from_slice(&chunk.group);
                }
                let count = u32::try_from(hops).unwrap_or(u32::MAX);
                batch::frame_into(group, count, 0, compressor.as_mut(), row);
                txn.open_table(HOP_GROUPS)?
                    .insert(group_no, row.as_slice())?;
                held.hop_bytes += row.len() as u64;
                meta.insert(META_NEXT_HOP_GROUP, group_no + 1)?;
            }
            done.hops = hops as u64;
            let mut flows = txn.open_table(FLOWS)?;
            for (id, bytes) in &data.flows {
                flows.insert(id.as_str(), bytes.as_slice())?;
            }
        }
        let budget = ctx.disk_cap.as_ref().map(|cap| lock(cap).row_budget());
        if let Some(budget) = budget.filter(|b| held.total() > *b) {
            meta.insert(META_ROW_BUDGET, budget)?;
            let target = eviction_target(held.total(), held.total() - held_before, budget);
            let evicted = evict_oldest(&txn, &mut held, target)?;
            done.evicted_batches = evicted.batches;
            done.evicted_events = evicted.events;
            done.evicted_hops = evicted.hops;
            for (key, n) in [
                (META_EVICTED_BATCHES, evicted.batches),
                (META_EVICTED_EVENTS, evicted.events),
                (META_EVICTED_HOPS, evicted.hops),
            ] {
                let total = get(&meta, key)? + n;
                meta.insert(key, total)?;
            }
        }
        meta.insert(META_EVENT_BYTES, held.event_bytes)?;
        meta.insert(META_HOP_BYTES, held.hop_bytes)?;
        meta.insert(META_NEXT_BATCH, next_batch)?;
        done.held_bytes = held.total();

        let mut agents = txn.open_table(AGENTS)?;
        for (agent_id, status) in &data.agents {
            agents.insert(agent_id.as_ref(), status.encode_to_vec().as_slice())?;
        }
    }
    txn.commit()?;
    if let Some(cap) = &ctx.disk_cap {
        done.budget_lowered = lock(cap).after_commit(done.held_bytes);
    }
    Ok(done)
}

/// Commits run one at a time, so these locks are never contended; a commit that
/// panicked left nothing half-done in them.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
