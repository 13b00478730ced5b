//! What a connection's streams have emitted, so that the other end's copy of an item
//! (arriving late, or from an end that becomes the preferred one) is not emitted again,
//! while a message only that end has is not dropped as if it were a copy.
//!
//! Each end numbers a stream's items as it sees them, and the two numberings drift
//! apart when one end misses a message, so the other end's leftover copies are
//! matched by content ([`ItemPrint`]), one copy per emitted item: a stream carries
//! identical messages too (lease keep-alives), and each is a hop.

use std::collections::VecDeque;

use super::stream::{ItemId, ItemPrint};
use crate::fast_hash::FastSet;

/// Item ids remembered; the oldest are forgotten first.
const MAX_IDS: usize = 4096;
/// Prints remembered per list. A late copy comes within twice the missing-side
/// wait, far fewer items than this on one connection.
const MAX_PRINTS: usize = 256;

#[derive(Debug, Default)]
pub struct Emitted {
    ids: FastSet<ItemId>,
    id_order: VecDeque<ItemId>,
    /// Items that went out without the other end's copy: a copy arriving later
    /// is theirs.
    unpaired: VecDeque<ItemPrint>,
    /// The other end's copies that went out as hops of their own: the preferred
    /// end's copy arriving later is not emitted again.
    orphans: VecDeque<ItemPrint>,
}

impl Emitted {
    /// Records an item of the preferred end as emitted; false if its id was.
    pub fn note_id(&mut self, id: ItemId) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.id_order.push_back(id);
        if self.id_order.len() > MAX_IDS {
            if let Some(old) = self.id_order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    pub fn went_out_unpaired(&mut self, print: ItemPrint) {
        push_bounded(&mut self.unpaired, print);
    }

    /// Whether a leftover copy with `print` belongs to an item that went out
    /// without it (and if so, that item has its copy now).
    pub fn take_unpaired(&mut self, print: &ItemPrint) -> bool {
        take_same(&mut self.unpaired, print)
    }

    pub fn went_out_as_orphan(&mut self, print: ItemPrint) {
        push_bounded(&mut self.orphans, print);
    }

    /// Whether the other end's copy of this message went out already.
    pub fn take_orphan(&mut self, print: &ItemPrint) -> bool {
        take_same(&mut self.orphans, print)
    }
}

fn push_bounded(list: &mut VecDeque<ItemPrint>, print: ItemPrint) {
    if list.len() >= MAX_PRINTS {
        list.pop_front();
    }
    list.push_back(print);
}

fn take_same(list: &mut VecDeque<ItemPrint>, print: &ItemPrint) -> bool {
    match list.iter().position(|p| p.same_message(print)) {
        Some(pos) => {
            list.remove(pos);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::ItemKind;
    use super::*;

    fn id(index: u32) -> ItemId {
        ItemId {
            stream_id: 7,
            kind: ItemKind::WatchEvent,
            index,
        }
    }

    fn print(body_len: u64, version: Option<u64>) -> ItemPrint {
        ItemPrint {
            stream_id: 7,
            kind: ItemKind::WatchEvent,
            body_len,
            version,
        }
    }

    #[test]
    fn each_item_that_went_out_alone_takes_one_late_copy() {
        let mut e = Emitted::default();
        // Two identical messages went out without their copies.
        e.went_out_unpaired(print(100, None));
        e.went_out_unpaired(print(100, None));
        assert!(
            e.take_unpaired(&print(100, Some(5))),
            "a version matches none"
        );
        assert!(e.take_unpaired(&print(100, None)));
        assert!(!e.take_unpaired(&print(100, None)), "two copies, two items");
        e.went_out_unpaired(print(100, Some(1)));
        assert!(!e.take_unpaired(&print(100, Some(2))), "another version");
        assert!(!e.take_unpaired(&print(101, Some(1))), "another length");
    }

    #[test]
    fn ids_are_remembered_up_to_a_bound_and_prints_too() {
        let mut e = Emitted::default();
        assert!(e.note_id(id(0)));
        assert!(!e.note_id(id(0)));
        for i in 1..=MAX_IDS as u32 {
            assert!(e.note_id(id(i)));
        }
        assert!(e.note_id(id(0)), "forgotten after {MAX_IDS} more");
        for len in 0..=MAX_PRINTS as u64 {
            e.went_out_as_orphan(print(len, None));
        }
        assert!(!e.take_orphan(&print(0, None)), "the oldest is forgotten");
        assert!(e.take_orphan(&print(1, None)));
    }
}
