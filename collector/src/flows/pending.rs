//! Hops that matched no open flow yet, kept a while: a flow's root often
//! completes after the work it caused (the etcd write inside a POST ends
//! first), and an id (sandbox, uid) is often learned after the hops naming it.

use std::collections::{HashMap, VecDeque};

use ktrail_proto::v1::Hop;

use super::keys::{HopKeys, Key};

#[derive(Debug)]
struct Entry {
    hop: Hop,
    keys: HopKeys,
    arrived: u64,
}

#[derive(Debug)]
pub struct Pending {
    entries: HashMap<u64, Entry>,
    order: VecDeque<u64>,
    by_key: HashMap<Key, Vec<u64>>,
    next: u64,
    cap: usize,
    ttl_ns: u64,
    /// Hops that left unmatched after `ttl_ns`, or pushed out at the cap.
    pub expired: u64,
    pub evicted: u64,
}

impl Pending {
    pub fn new(cap: usize, ttl_ns: u64) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            by_key: HashMap::new(),
            next: 0,
            cap: cap.max(1),
            ttl_ns,
            expired: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn add(&mut self, hop: Hop, keys: HopKeys, now: u64) {
        while self.entries.len() >= self.cap {
            if !self.pop_oldest() {
                break;
            }
            self.evicted += 1;
        }
        let id = self.next;
        self.next += 1;
        for k in &keys.lookup {
            self.by_key.entry(k.clone()).or_default().push(id);
        }
        self.entries.insert(
            id,
            Entry {
                hop,
                keys,
                arrived: now,
            },
        );
        self.order.push_back(id);
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
            .filter(|id| self.entries.get(id).is_some_and(|e| keep(&e.hop, &e.keys)))
            .collect();
        chosen
            .into_iter()
            .filter_map(|id| self.remove(id))
            .collect()
    }

    /// Forgets hops older than the ttl.
    pub fn expire(&mut self, now: u64) {
        while let Some(&id) = self.order.front() {
            match self.entries.get(&id) {
                Some(e) if now.saturating_sub(e.arrived) < self.ttl_ns => break,
                Some(_) => {
                    self.remove(id);
                    self.expired += 1;
                }
                None => {}
            }
            self.order.pop_front();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        while let Some(id) = self.order.pop_front() {
            if self.remove(id).is_some() {
                return true;
            }
        }
        false
    }

    fn remove(&mut self, id: u64) -> Option<(Hop, HopKeys)> {
        let e = self.entries.remove(&id)?;
        for k in &e.keys.lookup {
            if let Some(v) = self.by_key.get_mut(k) {
                v.retain(|&x| x != id);
                if v.is_empty() {
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

    fn keyed(name: &str) -> (Hop, HopKeys) {
        let key = Key::Uid(name.into());
        (
            Hop {
                id: name.into(),
                ..Hop::default()
            },
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
}
