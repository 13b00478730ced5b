//! The collector's store: redb at `DATA_DIR/ktrail.redb`, written by one
//! batching task ([`writer`]), read at startup and by tests.

mod tables;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ktrail_proto::v1::{AgentStatus, Hop};
use prost::Message;
use redb::{Database, ReadableTable, ReadableTableMetadata};

pub use tables::StoredEvent;
use tables::{AGENTS, EVENTS, HOPS};

use crate::error::StoreError;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "ktrail.redb";

/// What the collector needs from the store when it starts.
#[derive(Debug, Default)]
pub struct Loaded {
    pub agents: Vec<AgentStatus>,
    /// The most recent hops, oldest first.
    pub recent_hops: Vec<Hop>,
    pub hops_total: u64,
}

/// An open store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating when missing) the store in `data_dir`, and its tables.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
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
        let db = Database::create(&path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
            error => StoreError::Open {
                path: path.clone(),
                error: Box::new(error),
            },
        })?;
        let txn = db.begin_write()?;
        txn.open_table(EVENTS)?;
        txn.open_table(AGENTS)?;
        txn.open_table(HOPS)?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        let hops_table = txn.open_table(HOPS)?;
        let hops_total = hops_table.len()?;
        let mut recent_hops = Vec::with_capacity(window.min(1 << 16));
        for row in hops_table.iter()?.rev().take(window) {
            let (_, value) = row?;
            recent_hops.push(
                Hop::decode(value.value()).map_err(|error| StoreError::Decode {
                    table: "hops",
                    error,
                })?,
            );
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
        let table = txn.open_table(EVENTS)?;
        let Some(value) = table.get((agent_id, seq))? else {
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
        let table = txn.open_table(EVENTS)?;
        let mut n = 0;
        for row in table.range((agent_id, 0)..=(agent_id, u64::MAX))? {
            row?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
