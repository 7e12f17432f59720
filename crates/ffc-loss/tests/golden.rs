//! Conformance with the float64 reference cases of FFC: the LRU, the margin losses and the full
//! two-pass step of the pool.
//!
//! Every `*.json` case in `tests/data`, and in the directory named by `FFC_GOLDEN_DIR` when it is
//! set, runs on the CPU backend in f32 and must match within |actual - expected| <= 1e-5 +
//! 1e-4 |expected|. A case's `kind` selects the check: `margin_loss`, `lru_ops` or `ffc_step`.
//! The test fails if any case fails or if no case ran.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use ffc_loss::{LossKind, MarginLoss, StepInputs, ffc_step};
use ffc_lru::{LruState, SlotLru};
use ffc_pool::{ClassPool, PoolState};
use serde_json::Value;

type B = burn::backend::Autodiff<burn::backend::Flex>;
type Inner = burn::backend::Flex;

#[test]
fn golden_cases_match_reference() {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")];
    if let Some(extra) = std::env::var_os("FFC_GOLDEN_DIR") {
        dirs.push(PathBuf::from(extra));
    }

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for dir in &dirs {
        for path in case_files(dir) {
            let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
            let kind = case["kind"].as_str().unwrap_or("<missing>").to_string();
            let result = std::panic::catch_unwind(|| run_case(&kind, &case));
            match result {
                Ok(Ok(())) => *counts.entry(kind).or_default() += 1,
                Ok(Err(message)) => failures.push(format!("{}: {message}", path.display())),
                Err(_) => failures.push(format!("{}: panicked", path.display())),
            }
        }
    }

    for (kind, count) in &counts {
        println!("golden: {count} {kind} case(s) passed");
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(!counts.is_empty(), "no golden case ran; looked in {dirs:?}");
}

fn case_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read golden directory {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn run_case(kind: &str, case: &Value) -> Result<(), String> {
    match kind {
        "margin_loss" => margin_loss_case(case),
        "lru_ops" => lru_case(case),
        "ffc_step" => step_case(case),
        other => Err(format!("unknown case kind `{other}`")),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison helpers

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-5 + 1e-4 * expected.abs()
}

fn compare(what: &str, actual: &[f32], expected: &[f64]) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!("{what}: {} values, expected {}", actual.len(), expected.len()));
    }
    for (index, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        if !close(a as f64, e) {
            return Err(format!("{what}[{index}] = {a}, expected {e}"));
        }
    }
    Ok(())
}

fn equal<T: PartialEq + std::fmt::Debug>(what: &str, actual: T, expected: T) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!("{what} = {actual:?}, expected {expected:?}"))
    }
}

fn floats(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("expected numbers, found {other}"),
    }
}

fn ints(value: &Value) -> Vec<i64> {
    value.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

fn labels(value: &Value) -> Vec<u64> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

fn pairs(value: &Value) -> Vec<(u64, usize)> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap() as usize))
        .collect()
}

fn matrix<Bk: burn::tensor::backend::Backend>(value: &Value) -> Tensor<Bk, 2> {
    let rows = value.as_array().unwrap();
    let cols = rows.first().map_or(0, |row| row.as_array().unwrap().len());
    let data: Vec<f32> = floats(value).into_iter().map(|v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, [rows.len(), cols]), &Default::default())
}

fn values<Bk: burn::tensor::backend::Backend, const D: usize>(tensor: Tensor<Bk, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn margin_loss(case: &Value) -> MarginLoss {
    let kind = match case["loss_type"].as_str().unwrap() {
        "AM" => LossKind::Am,
        "Arc" => LossKind::Arc,
        "SV" => LossKind::Sv,
        other => panic!("unknown loss_type {other}"),
    };
    MarginLoss {
        kind,
        scale: case["scale"].as_f64().unwrap() as f32,
        margin: case["margin"].as_f64().unwrap() as f32,
        sv_t: case["sv_t"].as_f64().unwrap() as f32,
        hard_negatives: case["hard_negatives"].as_u64().unwrap() as usize,
    }
}

// ---------------------------------------------------------------------------------------------
// margin_loss

fn margin_loss_case(case: &Value) -> Result<(), String> {
    let loss = margin_loss(case);
    let cos = matrix::<B>(&case["cos_theta"]).require_grad();
    let value = loss.forward(cos.clone(), &ints(&case["labels"]));
    let grads = value.backward();
    let grad = cos.grad(&grads).ok_or("no gradient for cos_theta")?;

    compare("loss", &values(value.inner()), &[case["expected"]["loss"].as_f64().unwrap()])?;
    compare("grad_cos_theta", &values(grad), &floats(&case["expected"]["grad_cos_theta"]))
}

// ---------------------------------------------------------------------------------------------
// lru_ops

fn lru_case(case: &Value) -> Result<(), String> {
    let capacity = case["capacity"].as_u64().unwrap() as usize;
    let mut lru = SlotLru::new(NonZeroUsize::new(capacity).ok_or("capacity 0")?);

    for (step, op) in case["ops"].as_array().unwrap().iter().enumerate() {
        let name = op["op"].as_str().unwrap();
        let label = op["label"].as_u64();
        let expected = &op["expected"];
        let at = |what: &str| format!("op {step} ({name} {label:?}): {what}");
        match name {
            "get" => equal(
                &at("slot"),
                lru.get(label.unwrap()).slot() as i64,
                expected.as_i64().unwrap(),
            )?,
            "try_get" => equal(
                &at("slot"),
                lru.try_get(label.unwrap()).slot() as i64,
                expected.as_i64().unwrap(),
            )?,
            "peek" => equal(
                &at("slot"),
                lru.peek(label.unwrap()).map_or(-1, |slot| slot as i64),
                expected.as_i64().unwrap(),
            )?,
            "contains" => {
                equal(&at("membership"), lru.contains(label.unwrap()), expected.as_bool().unwrap())?
            }
            "rollback" => {
                let steps = op["steps"].as_u64().unwrap() as usize;
                lru.rollback(steps);
                equal(&at("map"), lru.iter().collect::<Vec<_>>(), pairs(expected))?;
            }
            other => return Err(format!("unknown LRU op `{other}`")),
        }
    }

    let expected = &case["expected_final"];
    equal("final map", lru.iter().collect::<Vec<_>>(), pairs(&expected["mru_to_lru"]))?;
    equal("final next_free", lru.next_free(), expected["next_free"].as_u64().unwrap() as usize)
}

// ---------------------------------------------------------------------------------------------
// ffc_step

fn pool_state(case: &Value, state: &Value) -> PoolState {
    let queue_size = case["queue_size"].as_u64().unwrap() as usize;
    PoolState {
        queue_size,
        feat_dim: case["feat_dim"].as_u64().unwrap() as usize,
        queue: floats(&state["queue"]).into_iter().map(|v| v as f32).collect(),
        positions: ints(&state["position"]).into_iter().map(|p| p as u8).collect(),
        lru: LruState {
            capacity: queue_size,
            next_free: state["next_free"].as_u64().unwrap() as usize,
            entries: pairs(&state["lru"]),
        },
    }
}

fn step_case(case: &Value) -> Result<(), String> {
    let initial = pool_state(case, &case["initial"]);
    let mut pool = ClassPool::<Inner>::from_state(&initial, &Default::default())
        .map_err(|e| format!("initial state: {e}"))?;
    let inputs = StepInputs {
        probe_x: matrix::<Inner>(&case["probe_x"]),
        probe_y: matrix::<Inner>(&case["probe_y"]),
        gallery_x: matrix::<Inner>(&case["gallery_x"]),
        gallery_y: matrix::<Inner>(&case["gallery_y"]),
        x_labels: labels(&case["x_labels"]),
        y_labels: labels(&case["y_labels"]),
    };
    let outcome = ffc_step(&mut pool, &margin_loss(case), inputs, true);
    let expected = &case["expected"];

    let pass_a = outcome.pass_a.as_ref().ok_or("pass A did not run")?;
    for (name, report) in [("pass_a", pass_a), ("pass_b", &outcome.pass_b)] {
        let want = &expected[name];
        compare(&format!("{name}.loss"), &[report.loss], &[want["loss"].as_f64().unwrap()])?;
        let rows: Vec<i64> = report.insertion.rows.iter().map(|&r| r as i64).collect();
        equal(&format!("{name}.rows"), rows, ints(&want["rows"]))?;
        let cols: Vec<i64> = report.insertion.cols.iter().map(|&c| c as i64).collect();
        equal(&format!("{name}.cols"), cols, ints(&want["cols"]))?;
        let hits: Vec<i64> = report.insertion.hit_slots.iter().map(|&s| s as i64).collect();
        equal(&format!("{name}.hit_slots"), hits, ints(&want["hit_slots"]))?;
        equal(
            &format!("{name}.probe_slots"),
            report.probe_slots.clone(),
            ints(&want["probe_slots"]),
        )?;
    }

    compare("loss", &[outcome.loss], &[expected["loss"].as_f64().unwrap()])?;
    let grad_x = outcome.grad_probe_x.ok_or("no gradient for probe_x")?;
    compare("grad_probe_x", &values(grad_x), &floats(&expected["grad_probe_x"]))?;
    compare("grad_probe_y", &values(outcome.grad_probe_y), &floats(&expected["grad_probe_y"]))?;

    let want = pool_state(case, &expected["final"]);
    let got = pool.export_state();
    compare("final queue", &got.queue, &want.queue.iter().map(|&v| v as f64).collect::<Vec<_>>())?;
    equal("final positions", got.positions, want.positions)?;
    equal("final lru", got.lru.entries, want.lru.entries)?;
    equal("final next_free", got.lru.next_free, want.lru.next_free)
}
