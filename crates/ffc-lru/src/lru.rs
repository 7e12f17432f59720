//! The slot LRU: lookups, the undo journal, read-only queries and checkpoint export/import.

use std::num::NonZeroUsize;

use hashlink::LinkedHashMap;
use hashlink::linked_hash_map::RawEntryMut;

use crate::state::{self, LruState, LruStateError};

/// Outcome of [`SlotLru::get`] or [`SlotLru::try_get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// The label was in the map and keeps its slot.
    Hit {
        /// Slot owned by the label.
        slot: usize,
    },
    /// The label was not in the map and took a slot that no label owned.
    Inserted {
        /// Slot now owned by the label.
        slot: usize,
    },
    /// The label was not in the map, every slot was owned, so the least recent label lost its
    /// slot to it.
    Replaced {
        /// Slot now owned by the label, previously owned by `evicted`.
        slot: usize,
        /// Label removed from the map.
        evicted: u64,
    },
}

impl Lookup {
    /// Returns the slot that the looked-up label owns after the lookup.
    ///
    /// ```
    /// # use ffc_lru::Lookup;
    /// assert_eq!(Lookup::Replaced { slot: 3, evicted: 9 }.slot(), 3);
    /// ```
    pub fn slot(&self) -> usize {
        match *self {
            Lookup::Hit { slot } | Lookup::Inserted { slot } | Lookup::Replaced { slot, .. } => {
                slot
            }
        }
    }

    /// Returns true if and only if the label was already in the map.
    pub fn is_hit(&self) -> bool {
        matches!(self, Lookup::Hit { .. })
    }

    /// Returns the label that the lookup evicted, if any.
    pub fn evicted(&self) -> Option<u64> {
        match *self {
            Lookup::Replaced { evicted, .. } => Some(evicted),
            Lookup::Hit { .. } | Lookup::Inserted { .. } => None,
        }
    }
}

/// Undo record of one [`SlotLru::try_get`].
///
/// Records are undone newest first. So when a record is undone, the map is exactly as that
/// `try_get` left it, with the looked-up label at the back (the most recent end).
#[derive(Debug, Clone, Copy)]
enum Undo {
    /// A hit moved `label` to the back. `newer` was its neighbour on the back side, or `None`
    /// when `label` already was the most recent and nothing moved.
    Hit { label: u64, slot: usize, newer: Option<u64> },
    /// A miss took the never-used slot `next_free - 1`.
    Fresh { label: u64 },
    /// A miss took `slot` from the `vacant` list.
    Vacant { label: u64, slot: usize },
    /// A miss evicted `evicted`, which was at the front, and took its `slot`.
    Replaced { label: u64, evicted: u64, slot: usize },
}

/// A least-recently-used map from labels to slots `0..capacity`, with an undo journal.
///
/// Plain lookups ([`get`](Self::get)) and journaled lookups ([`try_get`](Self::try_get)) do
/// not mix, so `get` panics while journaled lookups are pending. Call
/// [`commit`](Self::commit) to keep them or [`rollback`](Self::rollback) to undo them first.
/// The rule exists because an undo record stores the neighbour of the label it moved, and an
/// unjournaled change in between would make it restore the wrong order.
///
/// `new` sizes the hash table for `capacity` labels, and the next insert reuses the map node
/// that an eviction freed. Lookups on a full map therefore allocate only when hashbrown grows
/// the table to clear deleted-entry markers, which happens rarely. The journal is a `Vec` that
/// keeps its allocation across `commit` and `rollback`.
#[derive(Debug, Clone)]
pub struct SlotLru {
    /// Label to slot, with the least recent label at the front and the most recent at the back.
    map: LinkedHashMap<u64, usize>,
    capacity: NonZeroUsize,
    /// Number of slots handed out so far. Slots `next_free..capacity` were never used.
    next_free: usize,
    /// Slots below `next_free` that no label owns, highest first so that `pop` returns the
    /// lowest. Only [`SlotLru::from_state`] creates them, from a state with fewer entries than
    /// `next_free`, and a miss takes one only after the never-used slots run out.
    vacant: Vec<usize>,
    /// Undo records of the pending `try_get`s, oldest first.
    journal: Vec<Undo>,
}

impl SlotLru {
    /// Creates an empty LRU with `capacity` slots.
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ffc_lru::SlotLru;
    /// let lru = SlotLru::new(NonZeroUsize::new(8).unwrap());
    /// assert!(lru.is_empty());
    /// assert_eq!(lru.capacity().get(), 8);
    /// ```
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self::with_map(capacity, LinkedHashMap::with_capacity(capacity.get()))
    }

    fn with_map(capacity: NonZeroUsize, map: LinkedHashMap<u64, usize>) -> Self {
        Self { map, capacity, next_free: 0, vacant: Vec::new(), journal: Vec::new() }
    }

    /// Returns the number of slots.
    pub fn capacity(&self) -> NonZeroUsize {
        self.capacity
    }

    /// Returns the number of labels in the map.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Returns true if and only if no label is in the map.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Returns the number of slots handed out so far, which is also the next never-used slot.
    ///
    /// A rolled-back lookup that took a never-used slot gives it back, so this count can
    /// decrease.
    pub fn next_free(&self) -> usize {
        self.next_free
    }

    /// Looks up `label`, makes it the most recent label and returns its slot.
    ///
    /// A label that is not in the map takes the next never-used slot while one is left, then
    /// the lowest vacant slot of an imported state, and otherwise evicts the least recent label
    /// and takes over its slot.
    ///
    /// # Panics
    ///
    /// Panics if journaled lookups are pending (see [`try_get`](Self::try_get)), because an
    /// unjournaled change would make their rollback restore the wrong order.
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ffc_lru::{Lookup, SlotLru};
    /// let mut lru = SlotLru::new(NonZeroUsize::new(1).unwrap());
    /// assert_eq!(lru.get(7), Lookup::Inserted { slot: 0 });
    /// assert_eq!(lru.get(7), Lookup::Hit { slot: 0 });
    /// assert_eq!(lru.get(8), Lookup::Replaced { slot: 0, evicted: 7 });
    /// ```
    pub fn get(&mut self, label: u64) -> Lookup {
        assert!(
            self.journal.is_empty(),
            "SlotLru::get called while {} journaled lookups are pending. \
             Call commit() to keep them or rollback() to undo them first",
            self.journal.len()
        );
        match self.map.to_back(&label) {
            Some(&mut slot) => Lookup::Hit { slot },
            None => self.insert_missing(label).0,
        }
    }

    /// Looks up `label` like [`get`](Self::get) and records how to undo the lookup.
    ///
    /// Plain `get` panics until the pending records are dropped by [`commit`](Self::commit) or
    /// undone by [`rollback`](Self::rollback).
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ffc_lru::{Lookup, SlotLru};
    /// let mut lru = SlotLru::new(NonZeroUsize::new(4).unwrap());
    /// assert_eq!(lru.try_get(5), Lookup::Inserted { slot: 0 });
    /// assert_eq!(lru.journal_len(), 1);
    /// lru.commit();
    /// assert_eq!(lru.get(5), Lookup::Hit { slot: 0 });
    /// ```
    pub fn try_get(&mut self, label: u64) -> Lookup {
        if let Some(lookup) = self.promote_journaled(label) {
            return lookup;
        }
        let (lookup, undo) = self.insert_missing(label);
        self.journal.push(undo);
        lookup
    }

    /// Moves `label` to the back if it is in the map, recording its old back-side neighbour.
    fn promote_journaled(&mut self, label: u64) -> Option<Lookup> {
        let RawEntryMut::Occupied(entry) = self.map.raw_entry_mut().from_key(&label) else {
            return None;
        };
        let slot = *entry.get();
        let newer = entry.cursor_mut().peek_next().map(|(&key, _)| key);
        if newer.is_some() {
            self.map.to_back(&label);
        }
        self.journal.push(Undo::Hit { label, slot, newer });
        Some(Lookup::Hit { slot })
    }

    /// Inserts a label that is not in the map at the back and returns the undo record.
    fn insert_missing(&mut self, label: u64) -> (Lookup, Undo) {
        if self.next_free < self.capacity.get() {
            let slot = self.next_free;
            self.next_free += 1;
            self.map.insert(label, slot);
            return (Lookup::Inserted { slot }, Undo::Fresh { label });
        }
        if let Some(slot) = self.vacant.pop() {
            self.map.insert(label, slot);
            return (Lookup::Inserted { slot }, Undo::Vacant { label, slot });
        }
        // Every slot below `capacity` is handed out and none is vacant, so every slot has an
        // owner and the map contains `capacity >= 1` labels.
        let (evicted, slot) = self.map.pop_front().expect("a full LRU has a least recent label");
        self.map.insert(label, slot);
        (Lookup::Replaced { slot, evicted }, Undo::Replaced { label, evicted, slot })
    }

    /// Returns the number of journaled lookups that [`rollback`](Self::rollback) can undo.
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }

    /// Undoes the last `min(steps, journal_len())` journaled lookups, newest first, and
    /// returns how many it undid.
    ///
    /// After undoing every lookup since a point, the map, its recency order, `next_free` and
    /// the vacant slots are exactly as they were at that point.
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ffc_lru::SlotLru;
    /// let mut lru = SlotLru::new(NonZeroUsize::new(2).unwrap());
    /// lru.get(1);
    /// lru.get(2);
    /// let before = lru.export_state();
    ///
    /// lru.try_get(1); // hit: 1 becomes the most recent
    /// lru.try_get(3); // miss: evicts 2
    /// assert_eq!(lru.rollback(10), 2);
    /// assert_eq!(lru.export_state(), before);
    /// ```
    pub fn rollback(&mut self, steps: usize) -> usize {
        let count = steps.min(self.journal.len());
        for _ in 0..count {
            let undo = self.journal.pop().expect("count is at most the journal length");
            self.undo(undo);
        }
        count
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Hit { newer: None, .. } => {}
            Undo::Hit { label, slot, newer: Some(newer) } => self.move_before(label, slot, newer),
            Undo::Fresh { label } => {
                self.pop_most_recent(label);
                self.next_free -= 1;
            }
            Undo::Vacant { label, slot } => {
                self.pop_most_recent(label);
                self.vacant.push(slot);
            }
            Undo::Replaced { label, evicted, slot } => {
                self.pop_most_recent(label);
                // The evicted label was the least recent, so it goes back to the front.
                self.map.cursor_front_mut().insert_before(evicted, slot);
            }
        }
    }

    /// Moves `label` (already in the map) to just before `newer`, on its front side.
    fn move_before(&mut self, label: u64, slot: usize, newer: u64) {
        let RawEntryMut::Occupied(entry) = self.map.raw_entry_mut().from_key(&newer) else {
            panic!("undo record names label {newer}, which is no longer in the map");
        };
        let replaced = entry.cursor_mut().insert_before(label, slot);
        debug_assert_eq!(replaced, Some(slot), "undo moved a label that was not in the map");
    }

    /// Removes the most recent label, which must be `label`.
    fn pop_most_recent(&mut self, label: u64) {
        let popped = self.map.pop_back();
        debug_assert_eq!(popped.map(|(key, _)| key), Some(label), "undo found another label");
    }

    /// Drops the journal and keeps the effects of the journaled lookups.
    pub fn commit(&mut self) {
        self.journal.clear();
    }

    /// Returns the slot of `label` without changing the recency order.
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ffc_lru::SlotLru;
    /// let mut lru = SlotLru::new(NonZeroUsize::new(2).unwrap());
    /// lru.get(4);
    /// lru.get(6);
    /// assert_eq!(lru.peek(4), Some(0));
    /// assert_eq!(lru.peek(5), None);
    /// // 4 is still the least recent label, so it is the one evicted.
    /// assert_eq!(lru.get(8).evicted(), Some(4));
    /// ```
    pub fn peek(&self, label: u64) -> Option<usize> {
        self.map.get(&label).copied()
    }

    /// Returns true if and only if `label` is in the map. The recency order does not change.
    pub fn contains(&self, label: u64) -> bool {
        self.map.contains_key(&label)
    }

    /// Iterates over `(label, slot)` pairs, most recent first.
    ///
    /// ```
    /// # use std::num::NonZeroUsize;
    /// # use ffc_lru::SlotLru;
    /// let mut lru = SlotLru::new(NonZeroUsize::new(3).unwrap());
    /// for label in [10, 20, 30, 10] {
    ///     lru.get(label);
    /// }
    /// assert_eq!(lru.iter().collect::<Vec<_>>(), vec![(10, 0), (30, 2), (20, 1)]);
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u64, usize)> + DoubleEndedIterator + '_ {
        self.map.iter().rev().map(|(&label, &slot)| (label, slot))
    }

    /// Exports the map for a checkpoint. Pending journal records are not part of the state.
    pub fn export_state(&self) -> LruState {
        LruState {
            capacity: self.capacity.get(),
            next_free: self.next_free,
            entries: self.iter().collect(),
        }
    }

    /// Rebuilds an LRU from a checkpoint state, keeping its recency order, with an empty
    /// journal.
    ///
    /// `state.entries` may be shorter than `state.next_free`. The slots below `next_free` that
    /// no entry owns become vacant, and misses take them, lowest first, once the never-used
    /// slots run out.
    ///
    /// # Errors
    ///
    /// Returns an [`LruStateError`] naming the first invalid value: a capacity of 0,
    /// `next_free` above the capacity, more entries than `next_free`, a slot that is out of
    /// range or was never handed out, or a label or slot that appears twice.
    ///
    /// ```
    /// # use ffc_lru::{LruState, SlotLru};
    /// let state = LruState { capacity: 4, next_free: 2, entries: vec![(9, 1), (3, 0)] };
    /// let lru = SlotLru::from_state(&state)?;
    /// assert_eq!(lru.peek(3), Some(0));
    ///
    /// let bad = LruState { capacity: 4, next_free: 2, entries: vec![(9, 1), (3, 1)] };
    /// assert!(SlotLru::from_state(&bad).is_err());
    /// # Ok::<(), ffc_lru::LruStateError>(())
    /// ```
    pub fn from_state(state: &LruState) -> Result<Self, LruStateError> {
        let capacity = state::check_counts(state)?;
        let vacant = state::vacant_slots(state)?;

        let mut map = LinkedHashMap::with_capacity(state.entries.len());
        // Entries are most recent first and the map's back is the most recent end, so insert
        // from the least recent entry onwards.
        for (index, &(label, slot)) in state.entries.iter().enumerate().rev() {
            if map.insert(label, slot).is_some() {
                return Err(state::duplicate_label(state, index));
            }
        }

        let mut lru = Self::with_map(capacity, map);
        lru.next_free = state.next_free;
        lru.vacant = vacant;
        Ok(lru)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lru(capacity: usize) -> SlotLru {
        SlotLru::new(NonZeroUsize::new(capacity).unwrap())
    }

    fn order(lru: &SlotLru) -> Vec<(u64, usize)> {
        lru.iter().collect()
    }

    /// Full LRU of capacity 4 holding 0..4 in slots 0..4, with 3 the most recent.
    fn full_of_four() -> SlotLru {
        let mut lru = lru(4);
        for label in 0..4 {
            lru.get(label);
        }
        lru
    }

    #[test]
    fn misses_take_slots_in_order() {
        let mut lru = lru(3);
        assert_eq!(lru.get(40), Lookup::Inserted { slot: 0 });
        assert_eq!(lru.get(10), Lookup::Inserted { slot: 1 });
        assert_eq!(lru.get(30), Lookup::Inserted { slot: 2 });
        assert_eq!(lru.next_free(), 3);
        assert_eq!(lru.len(), 3);
    }

    #[test]
    fn hit_keeps_slot_and_promotes() {
        let mut lru = full_of_four();
        assert_eq!(lru.get(1), Lookup::Hit { slot: 1 });
        assert_eq!(order(&lru), vec![(1, 1), (3, 3), (2, 2), (0, 0)]);
        assert_eq!(lru.next_free(), 4);
    }

    #[test]
    fn evicts_least_recent_when_full() {
        let mut lru = full_of_four();
        lru.get(0);
        assert_eq!(lru.get(9), Lookup::Replaced { slot: 1, evicted: 1 });
        assert_eq!(order(&lru), vec![(9, 1), (0, 0), (3, 3), (2, 2)]);
        assert!(!lru.contains(1));
        assert_eq!(lru.len(), 4);
    }

    #[test]
    fn capacity_one_replaces_every_miss() {
        let mut lru = lru(1);
        assert_eq!(lru.get(5), Lookup::Inserted { slot: 0 });
        assert_eq!(lru.get(6), Lookup::Replaced { slot: 0, evicted: 5 });
        assert_eq!(lru.get(6), Lookup::Hit { slot: 0 });
        assert_eq!(order(&lru), vec![(6, 0)]);
    }

    #[test]
    fn lookup_accessors() {
        let hit = Lookup::Hit { slot: 2 };
        let inserted = Lookup::Inserted { slot: 3 };
        let replaced = Lookup::Replaced { slot: 4, evicted: 11 };
        assert_eq!((hit.slot(), inserted.slot(), replaced.slot()), (2, 3, 4));
        assert!(hit.is_hit());
        assert!(!inserted.is_hit());
        assert!(!replaced.is_hit());
        assert_eq!(hit.evicted(), None);
        assert_eq!(inserted.evicted(), None);
        assert_eq!(replaced.evicted(), Some(11));
    }

    #[test]
    fn peek_and_contains_do_not_promote() {
        let mut lru = full_of_four();
        assert_eq!(lru.peek(0), Some(0));
        assert!(lru.contains(0));
        assert_eq!(lru.peek(7), None);
        assert!(!lru.contains(7));
        assert_eq!(order(&lru), vec![(3, 3), (2, 2), (1, 1), (0, 0)]);
        assert_eq!(lru.get(7).evicted(), Some(0));
    }

    #[test]
    fn iter_is_most_recent_first() {
        let mut lru = lru(5);
        for label in [1, 2, 3, 2, 4, 1] {
            lru.get(label);
        }
        assert_eq!(order(&lru), vec![(1, 0), (4, 3), (2, 1), (3, 2)]);
        assert_eq!(lru.iter().len(), 4);
        let least_recent_first: Vec<_> = lru.iter().rev().collect();
        assert_eq!(least_recent_first, vec![(3, 2), (2, 1), (4, 3), (1, 0)]);
    }

    #[test]
    fn rollback_of_fresh_insert_returns_slot() {
        let mut lru = lru(4);
        lru.get(8);
        assert_eq!(lru.try_get(9), Lookup::Inserted { slot: 1 });
        assert_eq!(lru.next_free(), 2);
        assert_eq!(lru.rollback(1), 1);
        assert_eq!(lru.next_free(), 1);
        assert_eq!(order(&lru), vec![(8, 0)]);
        assert_eq!(lru.get(10), Lookup::Inserted { slot: 1 });
    }

    #[test]
    fn rollback_of_hit_restores_position() {
        let mut lru = full_of_four();
        let before = order(&lru);
        assert_eq!(lru.try_get(1), Lookup::Hit { slot: 1 });
        assert_eq!(order(&lru), vec![(1, 1), (3, 3), (2, 2), (0, 0)]);
        lru.rollback(1);
        assert_eq!(order(&lru), before);
    }

    #[test]
    fn rollback_of_hits_at_both_ends() {
        let mut lru = full_of_four();
        let before = order(&lru);
        lru.try_get(3); // already the most recent
        lru.try_get(0); // the least recent
        lru.try_get(0); // again, now the most recent
        assert_eq!(lru.rollback(3), 3);
        assert_eq!(order(&lru), before);
    }

    #[test]
    fn rollback_of_eviction_restores_evicted() {
        let mut lru = full_of_four();
        let before = order(&lru);
        assert_eq!(lru.try_get(20), Lookup::Replaced { slot: 0, evicted: 0 });
        assert_eq!(lru.try_get(21), Lookup::Replaced { slot: 1, evicted: 1 });
        assert_eq!(lru.rollback(2), 2);
        assert_eq!(order(&lru), before);
        assert_eq!(lru.next_free(), 4);
    }

    #[test]
    fn rollback_of_mixed_lookups() {
        let mut lru = lru(3);
        lru.get(1);
        lru.get(2);
        let before = lru.export_state();

        let lookups: Vec<_> = [3, 1, 4, 4, 2, 5, 1].iter().map(|&l| lru.try_get(l)).collect();
        assert_eq!(
            lookups,
            vec![
                Lookup::Inserted { slot: 2 },
                Lookup::Hit { slot: 0 },
                Lookup::Replaced { slot: 1, evicted: 2 },
                Lookup::Hit { slot: 1 },
                Lookup::Replaced { slot: 2, evicted: 3 },
                Lookup::Replaced { slot: 0, evicted: 1 },
                Lookup::Replaced { slot: 1, evicted: 4 },
            ]
        );
        assert_eq!(lru.rollback(usize::MAX), 7);
        assert_eq!(lru.export_state(), before);
        assert_eq!(lru.journal_len(), 0);
    }

    #[test]
    fn partial_rollback_keeps_older_records() {
        let mut lru = lru(2);
        lru.try_get(1);
        let after_first = lru.export_state();
        lru.try_get(2);
        lru.try_get(3);
        assert_eq!(lru.rollback(2), 2);
        assert_eq!(lru.export_state(), after_first);
        assert_eq!(lru.journal_len(), 1);
        assert_eq!(lru.rollback(5), 1);
        assert!(lru.is_empty());
        assert_eq!(lru.next_free(), 0);
    }

    #[test]
    fn rollback_on_empty_journal_is_noop() {
        let mut lru = full_of_four();
        let before = lru.export_state();
        assert_eq!(lru.rollback(3), 0);
        assert_eq!(lru.export_state(), before);
    }

    #[test]
    fn commit_keeps_effects() {
        let mut lru = full_of_four();
        lru.try_get(9);
        lru.try_get(1);
        let after = lru.export_state();
        lru.commit();
        assert_eq!(lru.journal_len(), 0);
        assert_eq!(lru.rollback(2), 0);
        assert_eq!(lru.export_state(), after);
        assert_eq!(lru.get(1), Lookup::Hit { slot: 1 });
    }

    #[test]
    #[should_panic(expected = "SlotLru::get called while 2 journaled lookups are pending")]
    fn get_panics_with_pending_journal() {
        let mut lru = lru(4);
        lru.try_get(1);
        lru.try_get(2);
        lru.get(3);
    }

    #[test]
    fn vacant_slots_fill_after_never_used() {
        let state = LruState { capacity: 5, next_free: 4, entries: vec![(7, 2), (8, 0)] };
        let mut lru = SlotLru::from_state(&state).unwrap();
        assert_eq!(lru.get(1), Lookup::Inserted { slot: 4 });
        assert_eq!(lru.get(2), Lookup::Inserted { slot: 1 });
        assert_eq!(lru.get(3), Lookup::Inserted { slot: 3 });
        assert_eq!(lru.get(4), Lookup::Replaced { slot: 0, evicted: 8 });
    }

    #[test]
    fn rollback_of_vacant_slot_returns_it() {
        let state = LruState { capacity: 3, next_free: 3, entries: vec![(7, 1)] };
        let mut lru = SlotLru::from_state(&state).unwrap();
        assert_eq!(lru.try_get(1), Lookup::Inserted { slot: 0 });
        assert_eq!(lru.try_get(2), Lookup::Inserted { slot: 2 });
        assert_eq!(lru.try_get(3), Lookup::Replaced { slot: 1, evicted: 7 });
        lru.rollback(3);
        assert_eq!(lru.export_state(), state);
        assert_eq!(lru.get(4), Lookup::Inserted { slot: 0 });
    }

    #[test]
    fn export_import_round_trip() {
        let mut lru = lru(4);
        for label in [5, 6, 7, 5, 8, 9, 6] {
            lru.get(label);
        }
        let state = lru.export_state();
        assert_eq!(state.capacity, 4);
        assert_eq!(state.next_free, 4);
        assert_eq!(state.entries, vec![(6, 2), (9, 1), (8, 3), (5, 0)]);

        let mut restored = SlotLru::from_state(&state).unwrap();
        assert_eq!(restored.export_state(), state);
        assert_eq!(restored.journal_len(), 0);
        // The restored order decides evictions exactly as the original's does.
        for label in [10, 11, 5, 12] {
            assert_eq!(restored.get(label), lru.get(label));
        }
    }

    #[test]
    fn import_keeps_slot_order_independent_of_recency() {
        let state = LruState { capacity: 6, next_free: 4, entries: vec![(1, 3), (2, 0), (3, 2)] };
        let mut lru = SlotLru::from_state(&state).unwrap();
        assert_eq!(order(&lru), state.entries);
        assert_eq!(lru.get(4), Lookup::Inserted { slot: 4 });
        assert_eq!(lru.export_state().entries, vec![(4, 4), (1, 3), (2, 0), (3, 2)]);
    }

    #[test]
    fn import_empty_state() {
        let state = LruState { capacity: 2, next_free: 0, entries: Vec::new() };
        let mut lru = SlotLru::from_state(&state).unwrap();
        assert!(lru.is_empty());
        assert_eq!(lru.get(1), Lookup::Inserted { slot: 0 });
    }

    #[test]
    fn import_rejects_zero_capacity() {
        let state = LruState { capacity: 0, next_free: 0, entries: Vec::new() };
        let err = SlotLru::from_state(&state).unwrap_err();
        assert_eq!(err, LruStateError::ZeroCapacity);
        assert!(err.to_string().contains("capacity is 0"), "{err}");
    }

    #[test]
    fn import_rejects_next_free_above_capacity() {
        let state = LruState { capacity: 2, next_free: 3, entries: Vec::new() };
        let err = SlotLru::from_state(&state).unwrap_err();
        assert_eq!(err, LruStateError::NextFreeAboveCapacity { next_free: 3, capacity: 2 });
        assert!(err.to_string().contains("next_free `3`"), "{err}");
    }

    #[test]
    fn import_rejects_too_many_entries() {
        let state = LruState { capacity: 4, next_free: 1, entries: vec![(1, 0), (2, 1)] };
        let err = SlotLru::from_state(&state).unwrap_err();
        assert_eq!(err, LruStateError::TooManyEntries { entries: 2, next_free: 1 });
        assert!(err.to_string().contains("2 entries"), "{err}");
    }

    #[test]
    fn import_rejects_slot_out_of_range() {
        let state = LruState { capacity: 4, next_free: 4, entries: vec![(1, 0), (2, 4)] };
        let err = SlotLru::from_state(&state).unwrap_err();
        let expected = LruStateError::SlotOutOfRange { index: 1, label: 2, slot: 4, capacity: 4 };
        assert_eq!(err, expected);
        assert!(err.to_string().contains("slot `4`"), "{err}");
    }

    #[test]
    fn import_rejects_slot_not_handed_out() {
        let state = LruState { capacity: 4, next_free: 2, entries: vec![(1, 0), (2, 2)] };
        let err = SlotLru::from_state(&state).unwrap_err();
        let expected =
            LruStateError::SlotNotHandedOut { index: 1, label: 2, slot: 2, next_free: 2 };
        assert_eq!(err, expected);
        assert!(err.to_string().contains("never handed out"), "{err}");
    }

    #[test]
    fn import_rejects_duplicate_label() {
        let state = LruState { capacity: 4, next_free: 3, entries: vec![(5, 0), (6, 1), (5, 2)] };
        let err = SlotLru::from_state(&state).unwrap_err();
        assert_eq!(err, LruStateError::DuplicateLabel { label: 5, first: 0, second: 2 });
        assert!(err.to_string().contains("label `5`"), "{err}");
    }

    #[test]
    fn import_rejects_duplicate_slot() {
        let state = LruState { capacity: 4, next_free: 3, entries: vec![(5, 1), (6, 0), (7, 1)] };
        let err = SlotLru::from_state(&state).unwrap_err();
        assert_eq!(err, LruStateError::DuplicateSlot { slot: 1, first: 0, second: 2 });
        assert!(err.to_string().contains("slot `1`"), "{err}");
    }
}
