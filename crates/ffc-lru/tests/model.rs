//! Property test: long random operation sequences on `SlotLru`, checked step by step against a
//! naive model that stores the map as a `Vec` and undoes lookups from whole-state snapshots.
//!
//! Small capacities (1..=8) and labels (0..16) make hits, fresh inserts, evictions and
//! rollbacks across all of them frequent. Besides checkpoint round trips, sequences import
//! random valid states, including states with fewer entries than `next_free`.

use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use ffc_lru::{Lookup, LruState, SlotLru};
use proptest::prelude::*;

/// Labels are drawn from `0..LABELS`.
const LABELS: u64 = 16;

/// Text of the panic that `SlotLru::get` raises while journaled lookups are pending.
const PENDING_PANIC: &str = "journaled lookups are pending";

#[derive(Debug, Clone)]
enum Op {
    Get(u64),
    TryGet(u64),
    Rollback(usize),
    Commit,
    Peek(u64),
    Contains(u64),
    /// Export, serialize to JSON, parse and import, replacing the LRU.
    ExportImport,
    /// Import this state, replacing the LRU.
    Import(LruState),
}

/// Naive reference: entries most recent first, plus a snapshot per pending `try_get`.
#[derive(Debug, Clone)]
struct Model {
    capacity: usize,
    next_free: usize,
    entries: Vec<(u64, usize)>,
    journal: Vec<(Vec<(u64, usize)>, usize)>,
}

impl Model {
    fn new(capacity: usize) -> Self {
        Model { capacity, next_free: 0, entries: Vec::new(), journal: Vec::new() }
    }

    fn from_state(state: &LruState) -> Self {
        Model {
            capacity: state.capacity,
            next_free: state.next_free,
            entries: state.entries.clone(),
            journal: Vec::new(),
        }
    }

    fn state(&self) -> LruState {
        LruState {
            capacity: self.capacity,
            next_free: self.next_free,
            entries: self.entries.clone(),
        }
    }

    fn lookup(&mut self, label: u64) -> Lookup {
        if let Some(index) = self.entries.iter().position(|&(other, _)| other == label) {
            let entry = self.entries.remove(index);
            self.entries.insert(0, entry);
            return Lookup::Hit { slot: entry.1 };
        }
        if self.next_free < self.capacity {
            let slot = self.next_free;
            self.next_free += 1;
            self.entries.insert(0, (label, slot));
            return Lookup::Inserted { slot };
        }
        let lowest_unowned =
            (0..self.capacity).find(|&slot| self.entries.iter().all(|&(_, other)| other != slot));
        if let Some(slot) = lowest_unowned {
            self.entries.insert(0, (label, slot));
            return Lookup::Inserted { slot };
        }
        let (evicted, slot) = self.entries.pop().expect("a full model has entries");
        self.entries.insert(0, (label, slot));
        Lookup::Replaced { slot, evicted }
    }

    fn try_get(&mut self, label: u64) -> Lookup {
        self.journal.push((self.entries.clone(), self.next_free));
        self.lookup(label)
    }

    fn rollback(&mut self, steps: usize) -> usize {
        let count = steps.min(self.journal.len());
        for _ in 0..count {
            let (entries, next_free) = self.journal.pop().expect("count is within the journal");
            self.entries = entries;
            self.next_free = next_free;
        }
        count
    }
}

/// Silences the expected `get` panic so that the test output stays readable. Every other panic
/// still reaches the previous hook.
fn silence_pending_panic() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.contains(PENDING_PANIC) {
                previous(info);
            }
        }));
    });
}

/// Checks that `get` panics, naming the count, while journal records are pending. The state
/// comparison after each operation then confirms that the panic changed nothing.
fn check_get_rejected(lru: &mut SlotLru, model: &Model, label: u64) -> Result<(), TestCaseError> {
    let result = panic::catch_unwind(AssertUnwindSafe(|| lru.get(label)));
    let payload = match result {
        Ok(lookup) => {
            return Err(TestCaseError::fail(format!(
                "get({label}) returned {lookup:?} with {} pending records",
                model.journal.len()
            )));
        }
        Err(payload) => payload,
    };
    let message = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    prop_assert!(message.contains(PENDING_PANIC), "unexpected panic message: {}", message);
    let expected_count = format!("while {} journaled", model.journal.len());
    prop_assert!(message.contains(&expected_count), "message lacks the count: {}", message);
    Ok(())
}

/// Applies one operation to both and compares the return values.
fn apply(lru: &mut SlotLru, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Get(label) if !model.journal.is_empty() => check_get_rejected(lru, model, *label)?,
        Op::Get(label) => prop_assert_eq!(lru.get(*label), model.lookup(*label)),
        Op::TryGet(label) => prop_assert_eq!(lru.try_get(*label), model.try_get(*label)),
        Op::Rollback(steps) => prop_assert_eq!(lru.rollback(*steps), model.rollback(*steps)),
        Op::Commit => {
            lru.commit();
            model.journal.clear();
        }
        Op::Peek(label) => {
            let expected = model.entries.iter().find(|&&(other, _)| other == *label);
            prop_assert_eq!(lru.peek(*label), expected.map(|&(_, slot)| slot));
        }
        Op::Contains(label) => {
            let expected = model.entries.iter().any(|&(other, _)| other == *label);
            prop_assert_eq!(lru.contains(*label), expected);
        }
        Op::ExportImport => {
            let json = serde_json::to_string(&lru.export_state()).expect("state serializes");
            let state: LruState = serde_json::from_str(&json).expect("state parses back");
            *lru = SlotLru::from_state(&state).expect("an exported state imports");
            model.journal.clear();
        }
        Op::Import(state) => {
            *lru = SlotLru::from_state(state).expect("generated states are valid");
            *model = Model::from_state(state);
        }
    }
    Ok(())
}

/// Compares every observable part of the LRU with the model.
fn check_same_state(lru: &SlotLru, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(lru.export_state(), model.state());
    prop_assert_eq!(lru.iter().collect::<Vec<_>>(), model.entries.clone());
    prop_assert_eq!(lru.len(), model.entries.len());
    prop_assert_eq!(lru.is_empty(), model.entries.is_empty());
    prop_assert_eq!(lru.next_free(), model.next_free);
    prop_assert_eq!(lru.journal_len(), model.journal.len());
    prop_assert_eq!(lru.capacity().get(), model.capacity);
    Ok(())
}

/// Valid states of `capacity` slots: distinct labels on distinct slots below `next_free`, in
/// random recency order, with any number of entries up to `next_free`.
fn valid_state(capacity: usize) -> impl Strategy<Value = LruState> {
    (0..=capacity).prop_flat_map(move |next_free| {
        let slots = Just((0..next_free).collect::<Vec<_>>()).prop_shuffle();
        let labels = Just((0..LABELS).collect::<Vec<_>>()).prop_shuffle();
        (slots, labels, 0..=next_free).prop_map(move |(slots, labels, len)| LruState {
            capacity,
            next_free,
            entries: labels.into_iter().zip(slots).take(len).collect(),
        })
    })
}

fn op(capacity: usize) -> impl Strategy<Value = Op> {
    let label = 0..LABELS;
    prop_oneof![
        6 => label.clone().prop_map(Op::Get),
        10 => label.clone().prop_map(Op::TryGet),
        3 => (0..=6usize).prop_map(Op::Rollback),
        1 => Just(Op::Commit),
        2 => label.clone().prop_map(Op::Peek),
        2 => label.prop_map(Op::Contains),
        1 => Just(Op::ExportImport),
        1 => valid_state(capacity).prop_map(Op::Import),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (1..=8usize)
        .prop_flat_map(|capacity| (Just(capacity), proptest::collection::vec(op(capacity), 1..400)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn matches_naive_model((capacity, ops) in scenario()) {
        silence_pending_panic();
        let mut lru = SlotLru::new(NonZeroUsize::new(capacity).unwrap());
        let mut model = Model::new(capacity);
        for op in &ops {
            apply(&mut lru, &mut model, op)?;
            check_same_state(&lru, &model)?;
        }
    }
}
