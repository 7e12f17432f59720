//! Checkpoint form of a [`SlotLru`](crate::SlotLru) and its validation.

use std::num::NonZeroUsize;

use serde::{Deserialize, Serialize};

/// Plain-data copy of a [`SlotLru`](crate::SlotLru) for checkpoints, without the undo journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LruState {
    /// Number of slots.
    pub capacity: usize,
    /// Number of slots handed out so far. Slots `next_free..capacity` were never used.
    pub next_free: usize,
    /// `(label, slot)` pairs, most recent first.
    pub entries: Vec<(u64, usize)>,
}

/// Reason why [`SlotLru::from_state`](crate::SlotLru::from_state) rejected an [`LruState`].
///
/// Entry indices count from 0 in `entries`, which is most recent first. A valid state only
/// comes from [`SlotLru::export_state`](crate::SlotLru::export_state), so any of these errors
/// means that the checkpoint is damaged or was written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LruStateError {
    /// The state has no slots.
    #[error("invalid LRU state: capacity is 0, but an LRU needs at least one slot")]
    ZeroCapacity,

    /// More slots were handed out than exist.
    #[error(
        "invalid LRU state: next_free `{next_free}` is above capacity `{capacity}`, \
         but at most `capacity` slots can be handed out"
    )]
    NextFreeAboveCapacity {
        /// Value of `next_free`.
        next_free: usize,
        /// Value of `capacity`.
        capacity: usize,
    },

    /// More labels own a slot than slots were handed out.
    #[error(
        "invalid LRU state: {entries} entries but next_free is `{next_free}`, \
         and each entry must own a distinct slot below next_free"
    )]
    TooManyEntries {
        /// Number of entries.
        entries: usize,
        /// Value of `next_free`.
        next_free: usize,
    },

    /// An entry's slot is not below the capacity.
    #[error(
        "invalid LRU state: entries[{index}] (label `{label}`) has slot `{slot}`, \
         out of range for capacity `{capacity}`"
    )]
    SlotOutOfRange {
        /// Index of the entry.
        index: usize,
        /// Label of the entry.
        label: u64,
        /// Slot of the entry.
        slot: usize,
        /// Value of `capacity`.
        capacity: usize,
    },

    /// An entry's slot is below the capacity but was never handed out.
    #[error(
        "invalid LRU state: entries[{index}] (label `{label}`) has slot `{slot}`, \
         which was never handed out because next_free is `{next_free}`"
    )]
    SlotNotHandedOut {
        /// Index of the entry.
        index: usize,
        /// Label of the entry.
        label: u64,
        /// Slot of the entry.
        slot: usize,
        /// Value of `next_free`.
        next_free: usize,
    },

    /// Two entries have the same label.
    #[error(
        "invalid LRU state: label `{label}` appears at both entries[{first}] and entries[{second}]"
    )]
    DuplicateLabel {
        /// The repeated label.
        label: u64,
        /// Index of its first (more recent) entry.
        first: usize,
        /// Index of its second entry.
        second: usize,
    },

    /// Two entries own the same slot.
    #[error(
        "invalid LRU state: slot `{slot}` is owned by both entries[{first}] and entries[{second}]"
    )]
    DuplicateSlot {
        /// The repeated slot.
        slot: usize,
        /// Index of its first (more recent) owner.
        first: usize,
        /// Index of its second owner.
        second: usize,
    },
}

/// Checks the capacity, `next_free` and the number of entries, and returns the capacity.
pub(crate) fn check_counts(state: &LruState) -> Result<NonZeroUsize, LruStateError> {
    let capacity = NonZeroUsize::new(state.capacity).ok_or(LruStateError::ZeroCapacity)?;
    if state.next_free > state.capacity {
        return Err(LruStateError::NextFreeAboveCapacity {
            next_free: state.next_free,
            capacity: state.capacity,
        });
    }
    if state.entries.len() > state.next_free {
        return Err(LruStateError::TooManyEntries {
            entries: state.entries.len(),
            next_free: state.next_free,
        });
    }
    Ok(capacity)
}

/// Checks every entry's slot and returns the slots below `next_free` that no entry owns,
/// highest first.
///
/// Expects [`check_counts`] to have passed.
///
/// NOTE: this allocates `next_free` flags, so a damaged state with a huge `capacity` and
/// `next_free` can exhaust memory before any other check fails.
pub(crate) fn vacant_slots(state: &LruState) -> Result<Vec<usize>, LruStateError> {
    let mut owned = vec![false; state.next_free];
    for (index, &(label, slot)) in state.entries.iter().enumerate() {
        check_slot(state, index, label, slot)?;
        if owned[slot] {
            return Err(duplicate_slot(state, index));
        }
        owned[slot] = true;
    }
    Ok((0..state.next_free).rev().filter(|&slot| !owned[slot]).collect())
}

fn check_slot(
    state: &LruState,
    index: usize,
    label: u64,
    slot: usize,
) -> Result<(), LruStateError> {
    if slot >= state.capacity {
        return Err(LruStateError::SlotOutOfRange { index, label, slot, capacity: state.capacity });
    }
    if slot >= state.next_free {
        return Err(LruStateError::SlotNotHandedOut {
            index,
            label,
            slot,
            next_free: state.next_free,
        });
    }
    Ok(())
}

/// Builds the error for `entries[second]`, whose slot an earlier entry already owns.
fn duplicate_slot(state: &LruState, second: usize) -> LruStateError {
    let slot = state.entries[second].1;
    let first = state.entries.iter().position(|&(_, other)| other == slot).unwrap_or(second);
    LruStateError::DuplicateSlot { slot, first, second }
}

/// Builds the error for `entries[index]`, whose label appears in another entry too.
pub(crate) fn duplicate_label(state: &LruState, index: usize) -> LruStateError {
    let label = state.entries[index].0;
    let first = state.entries.iter().position(|&(other, _)| other == label).unwrap_or(index);
    let second = state.entries[first + 1..]
        .iter()
        .position(|&(other, _)| other == label)
        .map_or(index, |offset| first + 1 + offset);
    LruStateError::DuplicateLabel { label, first, second }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_serializes_as_pairs() {
        let state = LruState { capacity: 3, next_free: 2, entries: vec![(7, 1), (4, 0)] };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, r#"{"capacity":3,"next_free":2,"entries":[[7,1],[4,0]]}"#);
        let back: LruState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn vacant_slots_are_highest_first() {
        let state = LruState { capacity: 8, next_free: 6, entries: vec![(1, 4), (2, 0), (3, 2)] };
        assert_eq!(vacant_slots(&state), Ok(vec![5, 3, 1]));
    }

    #[test]
    fn duplicate_label_reports_first_two_entries() {
        let state =
            LruState { capacity: 4, next_free: 4, entries: vec![(1, 0), (9, 1), (2, 2), (9, 3)] };
        let err = duplicate_label(&state, 3);
        assert_eq!(err, LruStateError::DuplicateLabel { label: 9, first: 1, second: 3 });
    }
}
