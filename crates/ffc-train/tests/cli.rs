//! The `ffc` binary as a user runs it: inspect, pack, eval, and the errors of bad invocations.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ffc-data/tests/data")
}

fn ffc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ffc")).args(args).output().expect("the ffc binary runs")
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn inspect_reports_fixture_counts() {
    let meta =
        stdout_json(&ffc(&["inspect", fixtures().join("rec_meta").to_str().unwrap(), "--json"]));
    assert_eq!(meta["kind"], "rec");
    assert_eq!(meta["layout"], "meta");
    assert_eq!(meta["images"], 60);
    assert_eq!(meta["identities"], 6);
    assert_eq!(meta["image_size"], serde_json::json!([112, 112]));

    let plain =
        stdout_json(&ffc(&["inspect", fixtures().join("rec_plain").to_str().unwrap(), "--json"]));
    assert_eq!(plain["layout"], "plain");
    assert_eq!(plain["images"], 60);
    assert_eq!(plain["identities"], 6);

    for pack in ["pairs_py2.bin", "pairs_p2_codecs.bin", "pairs_p4.bin", "pairs_numpy.bin"] {
        let report =
            stdout_json(&ffc(&["inspect", fixtures().join(pack).to_str().unwrap(), "--json"]));
        assert_eq!(report["kind"], "bin", "{pack}");
        assert_eq!(report["pairs"], 40, "{pack}");
        assert_eq!(report["same_pairs"], 20, "{pack}");
        assert!(report.get("layout").is_none(), "{pack}");
    }
}

#[test]
fn train_then_eval_a_pack() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.toml");
    let rec = fixtures().join("rec_meta");
    std::fs::write(
        &config,
        format!(
            "rec = \"{}\"\ninput_size = [32, 32]\nnetwork = \"r18\"\nwidths = [4, 8, 8, 16]\n\
             embedding_size = 16\nqueue_size = 16\nbatch_size = 4\nlr = 0.05\nnum_epoch = 1\n\
             max_steps = 2\nverbose = 0\n",
            rec.display()
        ),
    )
    .unwrap();
    let output = dir.path().join("run");
    let trained =
        ffc(&["train", "--config", config.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    assert!(trained.status.success(), "{}", stderr(&trained));

    let log = std::fs::read_to_string(output.join("training.log")).unwrap();
    assert!(log.contains("Global Step: 2"), "{log}");
    assert!(!log.contains('\u{1b}'), "training.log holds terminal colour codes");

    let pack = fixtures().join("pairs_p4.bin");
    let text =
        ffc(&["eval", "--checkpoint", output.to_str().unwrap(), "--bin", pack.to_str().unwrap()]);
    assert!(text.status.success(), "{}", stderr(&text));
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("[pairs_p4] Accuracy-Flip: "), "{stdout}");
    assert!(stdout.contains("[pairs_p4] XNorm: "), "{stdout}");

    let json = stdout_json(&ffc(&[
        "eval",
        "--checkpoint",
        output.to_str().unwrap(),
        "--bin",
        pack.to_str().unwrap(),
        "--no-flip",
        "--json",
    ]));
    assert_eq!(json["pairs_p4"]["pairs"], 40);

    // The gallery network scores the same pairs.
    let gallery = stdout_json(&ffc(&[
        "eval",
        "--checkpoint",
        output.to_str().unwrap(),
        "--bin",
        pack.to_str().unwrap(),
        "--gallery",
        "--json",
    ]));
    assert_eq!(gallery["pairs_p4"]["pairs"], 40);
    let accuracy = json["pairs_p4"]["accuracy_mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
}

#[test]
fn unknown_config_key_fails_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "rec = \"x\"\nnetwork = \"r18\"\nqueue_size = 8\nbatch_size = 2\nlr = 0.1\nnum_epoch = 1\nlearning_rate = 1\n").unwrap();
    let output = ffc(&["train", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("learning_rate"), "{message}");
    assert!(message.contains("bad.toml"), "{message}");
}

#[test]
fn missing_device_backend_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "rec = \"x\"\nnetwork = \"r18\"\nqueue_size = 8\nbatch_size = 2\nlr = 0.1\nnum_epoch = 1\n",
    )
    .unwrap();
    for (device, feature) in [("cuda", "cuda"), ("wgpu:1", "wgpu")] {
        if cfg!(feature = "cuda") && feature == "cuda"
            || cfg!(feature = "wgpu") && feature == "wgpu"
        {
            continue;
        }
        let output = ffc(&["train", "--config", config.to_str().unwrap(), "--device", device]);
        assert!(!output.status.success());
        let message = stderr(&output);
        assert!(message.contains("not compiled"), "{message}");
        assert!(message.contains(&format!("--features {feature}")), "{message}");
    }
}

#[test]
fn pack_round_trips_through_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("faces");
    for (identity, images) in [("alice", 2), ("bob", 3)] {
        std::fs::create_dir_all(folder.join(identity)).unwrap();
        for index in 0..images {
            let pixels: Vec<u8> = (0..16 * 16).map(|p| (p * 7 + index * 31) as u8).collect();
            let mut pgm = b"P5\n16 16\n255\n".to_vec();
            pgm.extend(pixels);
            std::fs::write(folder.join(identity).join(format!("{index}.pgm")), pgm).unwrap();
        }
    }
    let out = dir.path().join("rec");
    let packed =
        ffc(&["pack", "--input", folder.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(packed.status.success(), "{}", stderr(&packed));
    let report = stdout_json(&ffc(&["inspect", out.to_str().unwrap(), "--json"]));
    assert_eq!(report["layout"], "meta");
    assert_eq!(report["images"], 5);
    assert_eq!(report["identities"], 2);
    assert_eq!(report["image_size"], serde_json::json!([16, 16]));
}
