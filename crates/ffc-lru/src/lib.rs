//! A least-recently-used map from identity labels to a fixed set of pool slots, with an undo
//! journal for lookups that may have to be taken back.
//!
//! [`SlotLru`] keeps the least recently used label at the front of its `hashlink::LinkedHashMap`
//! and the most recently used label at the back.
//!
//! A class pool of `capacity` columns assigns each identity a column (a *slot*) in
//! `0..capacity`. [`SlotLru::get`] returns the slot of a label and makes the label the most
//! recent. A label that is not in the map takes the next never-used slot (0, 1, 2, ... in
//! order) while one is left. Once every slot is taken, it evicts the least recent label and
//! takes over that label's slot. [`SlotLru::try_get`] does the same but records an undo entry,
//! so that [`SlotLru::rollback`] can put the map back exactly as it was, recency order included.
//! [`SlotLru::export_state`] and [`SlotLru::from_state`] save and restore the whole map for
//! checkpoints.
//!
//! # Example
//!
//! ```
//! use std::num::NonZeroUsize;
//!
//! use ffc_lru::{Lookup, SlotLru};
//!
//! let mut lru = SlotLru::new(NonZeroUsize::new(2).unwrap());
//! assert_eq!(lru.get(10), Lookup::Inserted { slot: 0 });
//! assert_eq!(lru.get(20), Lookup::Inserted { slot: 1 });
//! assert_eq!(lru.get(10), Lookup::Hit { slot: 0 });
//!
//! // The pool is full and 20 is now the least recent label, so 30 takes its slot.
//! assert_eq!(lru.get(30), Lookup::Replaced { slot: 1, evicted: 20 });
//!
//! // A journaled lookup can be undone exactly.
//! let lookup = lru.try_get(40);
//! assert_eq!(lookup.evicted(), Some(10));
//! assert_eq!(lru.rollback(1), 1);
//! assert_eq!(lru.iter().collect::<Vec<_>>(), vec![(30, 1), (10, 0)]);
//!
//! // Checkpoints store the map most recent first.
//! let state = lru.export_state();
//! let restored = SlotLru::from_state(&state)?;
//! assert_eq!(restored.export_state(), state);
//! # Ok::<(), ffc_lru::LruStateError>(())
//! ```

mod lru;
mod state;

pub use lru::{Lookup, SlotLru};
pub use state::{LruState, LruStateError};

/// Compiles and runs the README's example as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
