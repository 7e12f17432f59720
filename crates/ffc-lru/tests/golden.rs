//! Golden test: replays recorded `lru_ops` cases and checks every result against the recorded
//! output of a reference LRU.
//!
//! Cases come from `tests/data/*.json` and, when the `FFC_GOLDEN_DIR` environment variable is
//! set, from the `*.json` files of that directory as well. Files of another `kind` are skipped.
//! A case lists `ops` with their `expected` results: the slot for `get`/`try_get`, the slot or
//! -1 for `peek`, a bool for `contains`, and for `rollback` the whole map as `[label, slot]`
//! pairs, most recent first. `expected_final` contains the final map and `next_free`.

use std::fs;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use ffc_lru::SlotLru;
use serde::Deserialize;
use serde_json::Value;

/// Environment variable naming an extra directory of case files.
const EXTRA_DIR_VAR: &str = "FFC_GOLDEN_DIR";

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    capacity: usize,
    ops: Vec<Step>,
    expected_final: Final,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Step {
    Get { label: u64, expected: usize },
    TryGet { label: u64, expected: usize },
    Peek { label: u64, expected: i64 },
    Contains { label: u64, expected: bool },
    Rollback { steps: usize, expected: Vec<(u64, usize)> },
}

#[derive(Debug, Deserialize)]
struct Final {
    mru_to_lru: Vec<(u64, usize)>,
    next_free: usize,
}

/// Lists the `*.json` files of `dir`, sorted by name.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot read case directory {}: {err}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// Parses `path` and returns its case if its `kind` is `lru_ops`.
fn load_case(path: &Path) -> Option<Case> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read case file {}: {err}", path.display()));
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("invalid JSON in case file {}: {err}", path.display()));
    if value.get("kind").and_then(Value::as_str) != Some("lru_ops") {
        return None;
    }
    let case = serde_json::from_value(value)
        .unwrap_or_else(|err| panic!("invalid lru_ops case in {}: {err}", path.display()));
    Some(case)
}

/// Replays one case and panics at the first result that differs from the recorded one.
fn run_case(case: &Case, path: &Path) {
    let capacity = NonZeroUsize::new(case.capacity)
        .unwrap_or_else(|| panic!("case {} in {} has capacity 0", case.name, path.display()));
    let mut lru = SlotLru::new(capacity);
    for (index, step) in case.ops.iter().enumerate() {
        let at = format!("case {} ({}), ops[{index}] = {step:?}", case.name, path.display());
        run_step(&mut lru, step, &at);
    }

    let final_order: Vec<_> = lru.iter().collect();
    assert_eq!(final_order, case.expected_final.mru_to_lru, "case {}: final map", case.name);
    assert_eq!(lru.next_free(), case.expected_final.next_free, "case {}: next_free", case.name);
}

fn run_step(lru: &mut SlotLru, step: &Step, at: &str) {
    match *step {
        Step::Get { label, expected } => assert_eq!(lru.get(label).slot(), expected, "{at}"),
        Step::TryGet { label, expected } => {
            assert_eq!(lru.try_get(label).slot(), expected, "{at}");
        }
        Step::Peek { label, expected } => {
            let slot = lru.peek(label).map_or(-1, |slot| i64::try_from(slot).unwrap());
            assert_eq!(slot, expected, "{at}");
        }
        Step::Contains { label, expected } => assert_eq!(lru.contains(label), expected, "{at}"),
        Step::Rollback { steps, ref expected } => {
            let pending = lru.journal_len();
            assert_eq!(lru.rollback(steps), steps.min(pending), "{at}: undone count");
            assert_eq!(&lru.iter().collect::<Vec<_>>(), expected, "{at}: map after rollback");
        }
    }
}

#[test]
fn golden_lru_cases() {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")];
    if let Some(extra) = std::env::var_os(EXTRA_DIR_VAR) {
        dirs.push(PathBuf::from(extra));
    }

    let mut ran = 0;
    for dir in &dirs {
        for path in json_files(dir) {
            if let Some(case) = load_case(&path) {
                run_case(&case, &path);
                ran += 1;
            }
        }
    }

    println!("ran {ran} lru_ops cases from {dirs:?}");
    assert!(ran > 0, "no lru_ops case found in {dirs:?}");
}
