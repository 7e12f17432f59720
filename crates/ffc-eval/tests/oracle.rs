//! Checks `verify` and `tar_at_far` against results computed with numpy and scikit-learn.
//!
//! `tests/data/make_oracle.py` wrote `tests/data/oracle.json`; its docstring describes the
//! reference computation and the library versions used.

use ffc_eval::{PairList, tar_at_far, verify};
use serde_json::Value;

fn oracle() -> Value {
    let text = include_str!("data/oracle.json");
    serde_json::from_str(text).expect("oracle.json is valid JSON")
}

fn f32_from_bits(values: &Value) -> Vec<f32> {
    let bits = values.as_array().expect("bit patterns form an array");
    bits.iter().map(|b| f32::from_bits(b.as_u64().expect("bit pattern") as u32)).collect()
}

fn f64s(values: &Value) -> Vec<f64> {
    values.as_array().expect("an array").iter().map(|v| v.as_f64().expect("a number")).collect()
}

fn bools(values: &Value) -> Vec<bool> {
    values.as_array().expect("an array").iter().map(|v| v.as_bool().expect("a bool")).collect()
}

fn assert_close(actual: &[f64], expected: &[f64], name: &str) {
    assert_eq!(actual.len(), expected.len(), "{name}: length");
    for (k, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() < 1e-12, "{name}[{k}]: got {a}, expected {e}");
    }
}

#[test]
fn verify_matches_numpy_protocol() {
    let oracle = oracle();
    let dim = oracle["dim"].as_u64().unwrap() as usize;
    let folds = oracle["folds"].as_u64().unwrap() as usize;
    let features = f32_from_bits(&oracle["feature_bits"]);
    let pairs = oracle["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_u64().unwrap() as usize))
        .collect();
    let list = PairList { pairs, issame: bools(&oracle["issame"]) };

    let result = verify(&features, dim, &list, folds).unwrap();

    let expected = &oracle["verification"];
    assert_close(&result.thresholds, &f64s(&expected["thresholds"]), "thresholds");
    assert_close(&result.fold_accuracies, &f64s(&expected["fold_accuracies"]), "fold accuracies");
    assert_close(&[result.accuracy_mean], &[expected["accuracy_mean"].as_f64().unwrap()], "mean");
    assert_close(&[result.accuracy_std], &[expected["accuracy_std"].as_f64().unwrap()], "std");
    assert_eq!(result.pairs, list.len());
}

#[test]
fn tar_at_far_matches_sklearn_roc() {
    let oracle = oracle();
    let roc = &oracle["roc"];
    let scores = f32_from_bits(&roc["score_bits"]);
    let issame = bools(&roc["issame"]);
    let fars = f64s(&roc["fars"]);

    let out = tar_at_far(&scores, &issame, &fars);

    let returned_fars: Vec<f64> = out.iter().map(|&(far, _)| far).collect();
    let tars: Vec<f64> = out.iter().map(|&(_, tar)| tar).collect();
    assert_eq!(returned_fars, fars);
    assert_close(&tars, &f64s(&roc["tars"]), "tars");
}
