//! Reading flows and the hops of a time span back from the store.

use std::collections::HashMap;

use ktrail_proto::v1::{Flow, Hop};
use prost::Message;
use redb::ReadableTable;

use super::tables::{FLOWS, HOP_GROUPS, HOP_INDEX};
use super::{batch, Store};
use crate::error::StoreError;

impl Store {
    /// Every stored flow, most recent start first, at most `limit`.
    pub fn flows(&self, limit: usize) -> Result<Vec<Flow>, StoreError> {
        let txn = self.db().begin_read()?;
        let table = txn.open_table(FLOWS)?;
        let mut flows = Vec::new();
        for row in table.iter()? {
            let (_, value) = row?;
            flows.push(
                Flow::decode(value.value()).map_err(|error| StoreError::Decode {
                    table: "flows",
                    error,
                })?,
            );
        }
        flows.sort_by(|a, b| b.start_unix_ns.cmp(&a.start_unix_ns).then(a.id.cmp(&b.id)));
        flows.truncate(limit);
        Ok(flows)
    }

    /// Hops that started in `from..=to`, in start order (the latest version
    /// of each).
    pub fn hops_between(&self, from: u64, to: u64) -> Result<Vec<Hop>, StoreError> {
        let txn = self.db().begin_read()?;
        let index = txn.open_table(HOP_INDEX)?;
        let groups = txn.open_table(HOP_GROUPS)?;
        let mut decoded: HashMap<u64, Vec<Hop>> = HashMap::new();
        let mut hops = Vec::new();
        for row in index.range((from, 0)..=(to, u64::MAX))? {
            let (_, value) = row?;
            let (group_no, i) = value.value();
            if let std::collections::hash_map::Entry::Vacant(slot) = decoded.entry(group_no) {
                slot.insert(match groups.get(group_no)? {
                    Some(g) => batch::decode_hops(g.value())?,
                    None => Vec::new(),
                });
            }
            if let Some(hop) = decoded.get(&group_no).and_then(|g| g.get(i as usize)) {
                hops.push(hop.clone());
            }
        }
        Ok(hops)
    }
}
