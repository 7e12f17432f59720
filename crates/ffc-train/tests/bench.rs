//! The `ffc-bench` binary's head measurements on pools small enough for a debug build.

use std::process::{Command, Output};

fn ffc_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ffc-bench"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the ffc-bench binary runs")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn head_pair_times_both_pools() {
    let args = ["head-pair", "--ids", "5000,50", "--queue-size", "100", "--steps", "3"];
    let line = stdout_json(&ffc_bench(&[&args[..], &["--warmup", "1"]].concat()));
    assert_eq!(line["side"], "ffc-pair");
    assert_eq!(line["ids"], serde_json::json!([5000, 50]), "the order given is kept");
    assert_eq!(line["queue_size"], 100);
    assert_eq!(line["steps"], 3);
    let medians = line["median_ms"].as_array().expect("two medians");
    assert_eq!(medians.len(), 2);
    assert!(medians.iter().all(|ms| ms.as_f64().is_some_and(|ms| ms > 0.0)), "{medians:?}");
}

#[test]
fn head_pair_needs_two_counts() {
    let output = ffc_bench(&["head-pair", "--ids", "5000"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--ids takes two numbers of identities"), "{stderr}");
}

#[test]
fn zero_sizes_are_rejected() {
    let cases: [&[&str]; 3] = [
        &["head", "--side", "ffc", "--ids", "0"],
        &["head", "--side", "ffc", "--ids", "10", "--queue-size", "0"],
        &["head-pair", "--ids", "10,0"],
    ];
    for args in cases {
        let output = ffc_bench(args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(" 0: there is nothing to time; pass at least 1"),
            "{args:?}: {stderr}"
        );
    }
}
