//! Retention under `--store-max-gib`: the oldest event batches and hops are deleted
//! in the commit that would take the store past its row budget, and the budget is
//! lowered whenever the file itself nears the cap on disk.
//!
//! Rows alone do not bound the file. redb writes copy-on-write: a commit's pages are
//! new pages, those it replaced are freed and reused by later commits but never given
//! back, so the file's blocks on disk are the high-water mark of live rows, their
//! B-tree pages, the hop index and the pages one commit frees for the next. On a
//! 10-agent replay that is 2.6x the compressed rows under a 50 MiB cap. A fixed
//! ratio would be wrong for other caps and event mixes, so the file is measured after
//! each commit instead: when it has grown into the last `margin` before the cap, the
//! live rows are cut to 3/4 of what they were, which leaves the freed pages room for
//! the next commits' copies, and the file stops growing. Pages freed by a commit are
//! reused only a commit or two later, so the file grows on for that long whatever the
//! budget: the margin covers it, and the budget is lowered again only if the file
//! still grows after that.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use redb::{ReadableTable, WriteTransaction};
use tracing::debug;

use super::tables::{hop_id_key, BATCH_AGE, EVENT_BATCHES, HOP_GROUPS, HOP_INDEX};
use super::{batch, hop_keys};
use crate::error::StoreError;

/// Bytes of the event and hop rows held.
pub(super) struct Held {
    pub event_bytes: u64,
    pub hop_bytes: u64,
}

impl Held {
    pub fn total(&self) -> u64 {
        self.event_bytes + self.hop_bytes
    }
}

#[derive(Default)]
pub(super) struct Evicted {
    pub batches: u64,
    pub events: u64,
    pub hops: u64,
}

/// The cap on the store's file and the row budget that keeps it there.
#[derive(Debug)]
pub(super) struct DiskCap {
    file: PathBuf,
    max_bytes: u64,
    /// The file growing past `max_bytes - margin` lowers the budget (at most a
    /// quarter of the cap).
    margin: u64,
    row_budget: u64,
    last_file_bytes: u64,
    /// Commits since the budget was last lowered (the file's growth lags behind).
    commits_since_lowered: u32,
}

/// Commits after which pages freed by deleting rows are being reused.
const REUSE_LAG_COMMITS: u32 = 4;

/// What [`DiskCap::after_commit`] changed, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BudgetLowered {
    pub file_bytes: u64,
    pub row_budget: u64,
}

impl DiskCap {
    /// `row_budget` is the one stored by an earlier run, if any (a file near its cap
    /// stays near it across restarts).
    pub fn new(file: PathBuf, max_bytes: u64, margin: u64, row_budget: Option<u64>) -> Self {
        Self {
            file,
            max_bytes,
            margin: margin.min(max_bytes / 4),
            row_budget: row_budget.unwrap_or(max_bytes).min(max_bytes),
            last_file_bytes: 0,
            commits_since_lowered: REUSE_LAG_COMMITS,
        }
    }

    /// Rows may hold this many bytes.
    pub fn row_budget(&self) -> u64 {
        self.row_budget
    }

    /// Measures the file after a commit that left `held` bytes of rows.
    pub fn after_commit(&mut self, held: u64) -> Option<BudgetLowered> {
        let file_bytes = match bytes_on_disk(&self.file) {
            Ok(bytes) => bytes,
            Err(error) => {
                debug!(file = %self.file.display(), %error, "cannot measure the store's file");
                return None;
            }
        };
        let grew = file_bytes > self.last_file_bytes;
        self.last_file_bytes = file_bytes;
        self.commits_since_lowered = self.commits_since_lowered.saturating_add(1);
        // While the rows are still above the budget, commits are deleting their way
        // down to it in steps (EVICT_STEP_BYTES): wait for them.
        if !grew
            || file_bytes <= self.max_bytes - self.margin
            || self.commits_since_lowered <= REUSE_LAG_COMMITS
            || held > self.row_budget
        {
            return None;
        }
        self.commits_since_lowered = 0;
        self.row_budget = held.min(self.row_budget) / 4 * 3;
        Some(BudgetLowered {
            file_bytes,
            row_budget: self.row_budget,
        })
    }
}

/// What a file takes on disk: its blocks, not its length (redb grows the file's
/// length ahead of use, sparse).
pub(super) fn bytes_on_disk(path: &Path) -> std::io::Result<u64> {
    std::fs::metadata(path).map(|m| m.blocks() * 512)
}

/// Rows one commit deletes beyond those it added. Deleting is a B-tree removal per
/// batch and per hop (its index entry), all in the commit's transaction, whose pages
/// stay in memory until it commits: a lowered budget cut in one commit held a
/// 10-agent replay's collector for 30 s at 580 MiB (BENCHMARKS.md, item 6b). In
/// steps, the rows reach a lowered budget over a few commits instead.
pub(super) const EVICT_STEP_BYTES: u64 = 8 << 20;

/// What a commit that holds `held` bytes of rows, `added` of them its own, deletes
/// down to under a row budget of `budget`: at most `added + EVICT_STEP_BYTES` bytes.
pub(super) fn eviction_target(held: u64, added: u64, budget: u64) -> u64 {
    budget.max(held.saturating_sub(added.saturating_add(EVICT_STEP_BYTES)))
}

/// Deletes the oldest event batches and hops, whichever is older first (batches by
/// commit time, hops by start time), until the rows held fit in `max_bytes`.
pub(super) fn evict_oldest(
    txn: &WriteTransaction,
    held: &mut Held,
    max_bytes: u64,
) -> Result<Evicted, StoreError> {
    let mut age = txn.open_table(BATCH_AGE)?;
    let mut events = txn.open_table(EVENT_BATCHES)?;
    let mut groups = txn.open_table(HOP_GROUPS)?;
    let mut index = txn.open_table(HOP_INDEX)?;
    let mut evicted = Evicted::default();
    while held.total() > max_bytes {
        // Both in commit order: compare the oldest batch's commit with the oldest
        // hop group's (its number against the groups committed before that batch
        // is not known, so by the hops' start time).
        let batch_time = age.first()?.map(|(_, v)| v.value().4);
        let hop_time = index.first()?.map(|(k, _)| k.value().0);
        let take_batch = match (batch_time, hop_time) {
            (Some(b), Some(h)) => b <= h,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_batch {
            let Some((_, value)) = age.pop_first()? else {
                break;
            };
            let (agent_id, first_seq, size, count, _) = value.value();
            events.remove((agent_id, first_seq))?;
            held.event_bytes = held.event_bytes.saturating_sub(size);
            evicted.batches += 1;
            evicted.events += count;
        } else {
            let Some((_, value)) = groups.pop_first()? else {
                break;
            };
            let row = value.value();
            let (count, _) = batch::header(row)?;
            held.hop_bytes = held.hop_bytes.saturating_sub(row.len() as u64);
            evicted.hops += u64::from(count);
            // Their index entries: the group's hops, read for their keys only.
            hop_keys::for_each(row, |hop| {
                index.remove((hop.start_unix_ns, hop_id_key(&hop.id)))?;
                Ok(())
            })?;
        }
    }
    if evicted.batches + evicted.hops > 0 {
        debug!(
            batches = evicted.batches,
            events = evicted.events,
            hops = evicted.hops,
            "store retention"
        );
    }
    Ok(evicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_deletes_at_most_what_it_added_and_a_step_more() {
        const MIB: u64 = 1 << 20;
        // Rows within a step of the budget: down to the budget.
        assert_eq!(eviction_target(105 * MIB, MIB, 100 * MIB), 100 * MIB);
        // Far above a lowered budget: what the commit added and one step, no more.
        let target = eviction_target(440 * MIB, 2 * MIB, 330 * MIB);
        assert_eq!(target, 440 * MIB - 2 * MIB - EVICT_STEP_BYTES);
        // Each commit gets a step closer, so the budget is reached.
        let (mut held, mut commits) = (440 * MIB, 0);
        while held > 330 * MIB {
            held = eviction_target(held + 2 * MIB, 2 * MIB, 330 * MIB);
            commits += 1;
        }
        assert_eq!(held, 330 * MIB);
        assert_eq!(commits, 110 / 8 + 1);
    }

    #[test]
    fn the_budget_falls_only_when_the_file_grows_into_the_margin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        let write = |len: usize| std::fs::write(&file, vec![1u8; len]).expect("write");
        let mut cap = DiskCap::new(file.clone(), 1 << 20, 1 << 20, None);
        assert_eq!(cap.margin, 256 << 10, "at most a quarter of the cap");
        assert_eq!(cap.row_budget(), 1 << 20);
        write(512 << 10);
        assert_eq!(cap.after_commit(400 << 10), None, "below the margin");
        write(960 << 10);
        let lowered = cap.after_commit(600 << 10).expect("grew into the margin");
        assert_eq!(lowered.row_budget, (600 << 10) / 4 * 3);
        assert_eq!(lowered.file_bytes, 960 << 10);
        assert_eq!(cap.after_commit(500 << 10), None, "did not grow again");
        for grown in 1..=REUSE_LAG_COMMITS - 1 {
            write((960 << 10) + grown as usize * 4096);
            assert_eq!(cap.after_commit(500 << 10), None, "lag {grown}");
        }
        write(1000 << 10);
        assert_eq!(
            cap.after_commit(700 << 10),
            None,
            "rows still above the budget: commits are deleting down to it"
        );
        write(1010 << 10);
        let again = cap.after_commit(400 << 10).expect("grew again");
        assert_eq!(again.row_budget, (400 << 10) / 4 * 3);
    }

    #[test]
    fn a_stored_budget_carries_over_but_never_above_the_cap() {
        let path = PathBuf::from("/nonexistent");
        assert_eq!(
            DiskCap::new(path.clone(), 100, 0, Some(60)).row_budget(),
            60
        );
        assert_eq!(
            DiskCap::new(path.clone(), 100, 0, Some(600)).row_budget(),
            100
        );
        let mut missing = DiskCap::new(path, 100, 0, None);
        assert_eq!(
            missing.after_commit(90),
            None,
            "an unmeasurable file lowers nothing"
        );
    }
}
