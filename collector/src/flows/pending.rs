//! Hops that matched no open flow yet, kept a while: a flow's root often
//! completes after the work it caused (the etcd write inside a POST ends
//! first), and an id (sandbox, uid) is often learned after the hops naming it.

use std::collections::VecDeque;
use std::sync::Arc;

use ktrail_proto::v1::Hop;

use super::keys::{HopKeys, Key};
use crate::fast_hash::FastMap;

/// Slots (held hops and holes) kept per hop of the cap.
const MAX_SLOTS_PER_HOP: usize = 8;

#[derive(Debug)]
struct Entry {
    /// Shared with the update that published it unclaimed.
    hop: Arc<Hop>,
    keys: HopKeys,
    arrived: u64,
}

/// Hops are numbered in arrival order and held in that order, so the table is a
/// deque indexed by number (a taken hop leaves a hole until the holes before it
/// are gone): adding, expiring and evicting the oldest touch its ends only. A hash
/// map of them, at the cap, spent its time probing past deleted slots and
/// rehashing ~10 MB of hops (12 % of a saturated collector's CPU).
#[derive(Debug)]
pub struct Pending {
    /// `slots[i]` is hop number `first + i`; `None` once taken (boxed: a hole costs
    /// a pointer).
    slots: VecDeque<Option<Box<Entry>>>,
    first: u64,
    held: usize,
    /// Hop numbers by lookup key, oldest first.
    by_key: FastMap<Key, VecDeque<u64>>,
    cap: usize,
    ttl_ns: u64,
    /// Hops that left unmatched after `ttl_ns`, or pushed out at the cap.
    pub expired: u64,
    pub evicted: u64,
}

impl Pending {
    pub fn new(cap: usize, ttl_ns: u64) -> Self {
        Self {
            slots: VecDeque::new(),
            first: 0,
            held: 0,
            by_key: FastMap::default(),
            cap: cap.max(1),
            ttl_ns,
            expired: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.held
    }

    pub fn add(&mut self, hop: Arc<Hop>, keys: HopKeys, now: u64) {
        // Holes behind a long-waiting hop are bounded too: past them the oldest
        // hops go (counted) before their time.
        while self.held >= self.cap || self.slots.len() >= MAX_SLOTS_PER_HOP * self.cap {
            if !self.pop_oldest() {
                break;
            }
            self.evicted += 1;
        }
        let id = self.first + self.slots.len() as u64;
        for k in &keys.lookup {
            match self.by_key.get_mut(k) {
                Some(ids) => ids.push_back(id),
                None => {
                    self.by_key.insert(k.clone(), VecDeque::from([id]));
                }
            }
        }
        self.slots.push_back(Some(Box::new(Entry {
            hop,
            keys,
            arrived: now,
        })));
        self.held += 1;
    }

    /// Removes and returns the hops looked up by `key` that `keep` accepts.
    pub fn take(
        &mut self,
        key: &Key,
        mut keep: impl FnMut(&Hop, &HopKeys) -> bool,
    ) -> Vec<(Hop, HopKeys)> {
        let Some(ids) = self.by_key.get(key) else {
            return Vec::new();
        };
        let chosen: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| self.entry(id).is_some_and(|e| keep(&e.hop, &e.keys)))
            .collect();
        chosen
            .into_iter()
            .filter_map(|id| self.remove(id))
            // Copied only if the published one is still held (the live window).
            .map(|(hop, keys)| (Arc::unwrap_or_clone(hop), keys))
            .collect()
    }

    /// Where hop number `id` is (or was) in `slots`.
    fn slot(&self, id: u64) -> Option<usize> {
        usize::try_from(id.checked_sub(self.first)?).ok()
    }

    fn entry(&self, id: u64) -> Option<&Entry> {
        self.slots.get(self.slot(id)?)?.as_deref()
    }

    /// Forgets hops older than the ttl.
    pub fn expire(&mut self, now: u64) {
        self.drop_holes();
        while let Some(Some(e)) = self.slots.front() {
            if now.saturating_sub(e.arrived) < self.ttl_ns {
                break;
            }
            self.remove(self.first);
            self.expired += 1;
            self.drop_holes();
        }
    }

    /// Slots of taken hops at the front.
    fn drop_holes(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.first += 1;
        }
    }

    fn pop_oldest(&mut self) -> bool {
        self.drop_holes();
        let popped = self.remove(self.first).is_some();
        self.drop_holes();
        popped
    }

    /// The hop stays shared: expiry and eviction only drop it (copying it out of an
    /// `Arc` the live window still holds was 9 % of a saturated collector's CPU).
    fn remove(&mut self, id: u64) -> Option<(Arc<Hop>, HopKeys)> {
        let i = self.slot(id)?;
        let e = *self.slots.get_mut(i)?.take()?;
        self.held -= 1;
        for k in &e.keys.lookup {
            if let Some(ids) = self.by_key.get_mut(k) {
                // Usually the key's oldest (expiry, eviction, or a take of all).
                if ids.front() == Some(&id) {
                    ids.pop_front();
                } else {
                    ids.retain(|&x| x != id);
                }
                if ids.is_empty() {
                    self.by_key.remove(k);
                }
            }
        }
        Some((e.hop, e.keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(name: &str) -> (Arc<Hop>, HopKeys) {
        let key = Key::Uid(name.into());
        (
            Arc::new(Hop {
                id: name.into(),
                ..Hop::default()
            }),
            HopKeys {
                lookup: vec![key],
                ..HopKeys::default()
            },
        )
    }

    #[test]
    fn hops_are_taken_by_key_once_and_expire() {
        let mut p = Pending::new(10, 100);
        let (h, k) = keyed("a");
        p.add(h, k, 0);
        let (h, k) = keyed("b");
        p.add(h, k, 50);
        let got = p.take(&Key::Uid("a".into()), |_, _| true);
        assert_eq!(got.len(), 1);
        assert!(p.take(&Key::Uid("a".into()), |_, _| true).is_empty());
        p.expire(149);
        assert_eq!(p.len(), 1);
        p.expire(150);
        assert_eq!((p.len(), p.expired), (0, 1));
    }

    #[test]
    fn the_cap_evicts_the_oldest() {
        let mut p = Pending::new(2, 100);
        for n in ["a", "b", "c"] {
            let (h, k) = keyed(n);
            p.add(h, k, 0);
        }
        assert_eq!((p.len(), p.evicted), (2, 1));
        assert!(p.take(&Key::Uid("a".into()), |_, _| true).is_empty());
    }

    #[test]
    fn taken_hops_leave_no_trace_and_holes_are_bounded() {
        let mut p = Pending::new(2, 100);
        let (h, k) = keyed("old");
        p.add(h, k, 0);
        // Hops taken as soon as they come leave holes behind the old one.
        for i in 0..40 {
            let name = format!("n{i}");
            let (h, k) = keyed(&name);
            p.add(h, k, 10);
            assert_eq!(p.take(&Key::Uid(name), |_, _| true).len(), 1);
        }
        // The holes pushed the old hop out before its time, counted.
        assert_eq!((p.len(), p.evicted), (0, 1));
        assert!(p.slots.len() <= MAX_SLOTS_PER_HOP * 2);
        let (h, k) = keyed("late");
        p.add(h, k, 50);
        p.expire(149);
        assert_eq!(p.len(), 1);
        p.expire(150);
        assert_eq!((p.len(), p.expired), (0, 1));
        assert!(p.by_key.is_empty());
    }
}
