//! The collector's store: redb at `DATA_DIR/ktrail.redb`, written by one
//! batching task ([`writer`]), read at startup and by tests.

pub mod batch;
mod flows;
mod hop_keys;
mod retention;
mod tables;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ktrail_proto::v1::{AgentStatus, Hop, StoreCounters};
use prost::Message;
use redb::{Database, ReadableTable, ReadableTableMetadata};

use tables::{
    hop_id_key, AGENTS, BATCH_AGE, EVENT_BATCHES, HOP_GROUPS, HOP_INDEX, LEGACY_EVENTS,
    LEGACY_HOPS, LEGACY_HOP_INDEX, META, META_EVENT_BYTES, META_EVICTED_BATCHES,
    META_EVICTED_EVENTS, META_EVICTED_HOPS, META_HOP_BYTES,
};
pub use tables::{StoredBatch, StoredEvent};

use crate::error::StoreError;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "ktrail.redb";

/// How the store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// redb's page cache (its default, 1 GiB, is most of the collector's memory
    /// under sustained ingest; writes do not need it, reads are rare).
    pub cache_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 64 << 20,
        }
    }
}

/// What the collector needs from the store when it starts.
#[derive(Debug, Default)]
pub struct Loaded {
    pub agents: Vec<AgentStatus>,
    /// The most recent hops, oldest first.
    pub recent_hops: Vec<Hop>,
    pub hops_total: u64,
}

/// Event and hop rows held (bytes as stored), and what retention deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub event_bytes: u64,
    pub hop_bytes: u64,
    pub evicted_batches: u64,
    pub evicted_events: u64,
    pub evicted_hops: u64,
}

/// Moves a store's [`LEGACY_HOP_INDEX`] (the hop id in the key) into [`HOP_INDEX`],
/// in one transaction, and drops it.
fn migrate_hop_index(db: &Database) -> Result<(), StoreError> {
    match db.begin_read()?.open_table(LEGACY_HOP_INDEX) {
        Ok(_) => {}
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let txn = db.begin_write()?;
    {
        let legacy = txn.open_table(LEGACY_HOP_INDEX)?;
        let mut index = txn.open_table(HOP_INDEX)?;
        for row in legacy.iter()? {
            let (key, value) = row?;
            let (start, id) = key.value();
            index.insert((start, hop_id_key(id)), value.value())?;
        }
    }
    txn.delete_table(LEGACY_HOP_INDEX)?;
    txn.commit()?;
    Ok(())
}

/// An open store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when missing) the store in `data_dir` with the default
    /// configuration.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, StoreConfig::default())
    }

    /// Opens (creating when missing) the store in `data_dir`, and its tables.
    pub fn open_with(data_dir: &Path, cfg: StoreConfig) -> Result<Self, StoreError> {
        if data_dir.exists() && !data_dir.is_dir() {
            return Err(StoreError::NotADirectory {
                path: data_dir.to_owned(),
            });
        }
        std::fs::create_dir_all(data_dir).map_err(|error| StoreError::CreateDir {
            path: data_dir.to_owned(),
            error,
        })?;
        let path = data_dir.join(DB_FILE);
        let db = Database::builder()
            .set_cache_size(cfg.cache_bytes)
            .create(&path)
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::InUse { path: path.clone() }
                }
                error => StoreError::Open {
                    path: path.clone(),
                    error: Box::new(error),
                },
            })?;
        let txn = db.begin_write()?;
        txn.open_table(EVENT_BATCHES)?;
        txn.open_table(BATCH_AGE)?;
        txn.open_table(META)?;
        txn.open_table(AGENTS)?;
        txn.open_table(HOP_INDEX)?;
        txn.open_table(HOP_GROUPS)?;
        txn.open_table(tables::FLOWS)?;
        txn.commit()?;
        migrate_hop_index(&db)?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A counter of [`tables::META`]; None when never written.
    fn meta(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(meta.get(key)?.map(|v| v.value()))
    }

    pub(crate) fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// Agents and the last `window` hops.
    pub fn load(&self, window: usize) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read()?;
        let agents_table = txn.open_table(AGENTS)?;
        let mut agents = Vec::new();
        for row in agents_table.iter()? {
            let (_, value) = row?;
            agents.push(AgentStatus::decode(value.value()).map_err(|error| {
                StoreError::Decode {
                    table: "agents",
                    error,
                }
            })?);
        }
        // The latest hops by start time: their groups decoded once each.
        let index = txn.open_table(HOP_INDEX)?;
        let groups = txn.open_table(HOP_GROUPS)?;
        let mut hops_total = index.len()?;
        let mut recent_hops = Vec::with_capacity(window.min(1 << 16));
        let mut decoded: HashMap<u64, Vec<Option<Hop>>> = HashMap::new();
        for row in index.iter()?.rev().take(window) {
            let (_, value) = row?;
            let (group_no, i) = value.value();
            if let std::collections::hash_map::Entry::Vacant(slot) = decoded.entry(group_no) {
                let hops = match groups.get(group_no)? {
                    Some(group) => batch::decode_hops(group.value())?,
                    None => Vec::new(),
                };
                slot.insert(hops.into_iter().map(Some).collect());
            }
            let hop = decoded
                .get_mut(&group_no)
                .and_then(|hops| hops.get_mut(i as usize))
                .and_then(Option::take);
            recent_hops.extend(hop);
        }
        // Stores written before the hop groups: their (older) hops after those.
        match txn.open_table(LEGACY_HOPS) {
            Ok(legacy) => {
                hops_total += legacy.len()?;
                let more = window.saturating_sub(recent_hops.len());
                for row in legacy.iter()?.rev().take(more) {
                    let (_, value) = row?;
                    recent_hops.push(Hop::decode(value.value()).map_err(|error| {
                        StoreError::Decode {
                            table: "hops",
                            error,
                        }
                    })?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        recent_hops.reverse();
        Ok(Loaded {
            agents,
            recent_hops,
            hops_total,
        })
    }

    /// One stored event, if held.
    pub fn event(&self, agent_id: &str, seq: u64) -> Result<Option<StoredEvent>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENT_BATCHES)?;
        // The batch starting at or before `seq`, if it reaches that far.
        if let Some(row) = table.range((agent_id, 0)..=(agent_id, seq))?.next_back() {
            let (_, value) = row?;
            let (_, last) = batch::header(value.value())?;
            if seq <= last {
                let batch = batch::decode(value.value())?;
                if let Some(event) = batch.events.into_iter().find(|e| e.seq == seq) {
                    return Ok(Some(StoredEvent {
                        node: batch.node,
                        event: Some(event),
                    }));
                }
            }
        }
        let legacy = match txn.open_table(LEGACY_EVENTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(value) = legacy.get((agent_id, seq))? else {
            return Ok(None);
        };
        StoredEvent::decode(value.value())
            .map(Some)
            .map_err(|error| StoreError::Decode {
                table: "events",
                error,
            })
    }

    /// Number of events stored for `agent_id`.
    pub fn event_count(&self, agent_id: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENT_BATCHES)?;
        let mut n = 0;
        for row in table.range((agent_id, 0)..=(agent_id, u64::MAX))? {
            let (_, value) = row?;
            n += u64::from(batch::header(value.value())?.0);
        }
        match txn.open_table(LEGACY_EVENTS) {
            Ok(legacy) => {
                for row in legacy.range((agent_id, 0)..=(agent_id, u64::MAX))? {
                    row?;
                    n += 1;
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(n)
    }

    /// The store as `ktrail status` shows it, under a cap of `max_bytes` (0: none).
    pub fn counters(&self, max_bytes: u64) -> Result<StoreCounters, StoreError> {
        let r = self.retention()?;
        Ok(StoreCounters {
            // Unreadable only if the file was removed under us: nothing on disk then.
            file_bytes: retention::bytes_on_disk(&self.path).unwrap_or(0),
            max_bytes,
            row_bytes: r.event_bytes + r.hop_bytes,
            evicted_batches: r.evicted_batches,
            evicted_events: r.evicted_events,
            evicted_hops: r.evicted_hops,
        })
    }

    /// Bytes of event and hop rows held, and what retention has deleted.
    pub fn retention(&self) -> Result<Retention, StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get =
            |key| -> Result<u64, StoreError> { Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0)) };
        Ok(Retention {
            event_bytes: get(META_EVENT_BYTES)?,
            hop_bytes: get(META_HOP_BYTES)?,
            evicted_batches: get(META_EVICTED_BATCHES)?,
            evicted_events: get(META_EVICTED_EVENTS)?,
            evicted_hops: get(META_EVICTED_HOPS)?,
        })
    }
}

#[cfg(test)]
mod tests;
