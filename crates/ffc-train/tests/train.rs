//! End-to-end training on the RecordIO fixture (six ORL identities, 60 images): outputs,
//! exact resume, and errors for bad runs.

use std::path::{Path, PathBuf};

use ffc_train::{RunOptions, TrainConfig, checkpoint, train};

type B = burn::backend::Autodiff<burn::backend::Flex>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ffc-data/tests/data")
}

/// A RecordIO folder with the fixture images and the fixture pack as `lfw.bin`.
fn dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for file in ["train.rec", "train.idx", "property"] {
        std::fs::copy(fixtures().join("rec_meta").join(file), data.join(file)).unwrap();
    }
    std::fs::copy(fixtures().join("pairs_p4.bin"), data.join("lfw.bin")).unwrap();
    data
}

fn config(data: &Path, extra: &[&str]) -> TrainConfig {
    let text = format!(
        r#"
        rec = "{}"
        val_targets = ["lfw"]
        input_size = [32, 32]
        network = "r18"
        widths = [4, 8, 8, 16]
        embedding_size = 16
        queue_size = 16
        batch_size = 4
        lr = 0.05
        num_epoch = 1
        num_workers = 1
        frequent = 1
        verbose = 0
        checkpoint_every = 2
        keep_checkpoints = 5
        eval_batch_size = 40
        "#,
        data.display()
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    TrainConfig::parse(&text, Path::new("test.toml"), &extra).unwrap()
}

fn run(config: &TrainConfig, output: &Path, resume: bool) -> anyhow::Result<ffc_train::RunSummary> {
    let options =
        RunOptions { output: output.to_owned(), resume: resume.then(|| output.to_owned()) };
    train::<B>(config, &options, &Default::default())
}

#[test]
fn rec_training_writes_all_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let output = dir.path().join("run");
    let summary = run(&config(&data, &["max_steps=3"]), &output, false).unwrap();

    assert_eq!(summary.steps, 3);
    assert_eq!(summary.losses.len(), 3);
    assert!(summary.losses.iter().all(|loss| loss.is_finite() && *loss > 0.0));
    for file in ["metrics.csv", "summary.json", "loss.png", "accuracy.png"] {
        assert!(output.join(file).is_file(), "{file} missing");
    }
    for step in ["step-00000002", "step-00000003"] {
        let checkpoint = output.join("checkpoints").join(step);
        for file in [
            "probe.mpk",
            "gallery.mpk",
            "optimizer.mpk",
            "queue.f32",
            "pool.json",
            "trainer.json",
            "probe.safetensors",
        ] {
            assert!(checkpoint.join(file).is_file(), "{step}/{file} missing");
        }
    }

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(output.join("summary.json")).unwrap())
            .unwrap();
    let accuracy = summary["verification"]["accuracy_mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{accuracy}");
    assert_eq!(summary["verification"]["pairs"], 40);
    assert!(summary["verification"]["xnorm"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["targets"]["lfw"]["pairs"], 40);

    let metrics = std::fs::read_to_string(output.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().filter(|line| line.contains(",lfw,")).count(), 1);
    assert_eq!(metrics.lines().count(), 1 + 3 + 1, "{metrics}");
}

#[test]
fn resume_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let full = run(&config(&data, &["max_steps=5"]), &dir.path().join("full"), false).unwrap();

    let split = dir.path().join("split");
    let first = run(&config(&data, &["max_steps=2"]), &split, false).unwrap();
    let second = run(&config(&data, &["max_steps=5"]), &split, true).unwrap();

    assert_eq!(first.losses[..], full.losses[..2]);
    assert_eq!(second.steps, 5);
    // Bitwise equality: the resumed steps 3 to 5 repeat the uninterrupted run exactly.
    let resumed: Vec<u32> = second.losses.iter().map(|l| l.to_bits()).collect();
    let expected: Vec<u32> = full.losses[2..].iter().map(|l| l.to_bits()).collect();
    assert_eq!(resumed, expected);
}

#[test]
fn diverging_run_stops_and_keeps_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let output = dir.path().join("run");
    let config = config(&data, &["max_steps=8", "lr=1e30", "checkpoint_every=1", "warmup_epoch=0"]);
    let error = run(&config, &output, false).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("at step"), "{message}");
    assert!(message.contains("not updated"), "{message}");

    let last = checkpoint::latest(&output).unwrap();
    let trainer = checkpoint::read_trainer(&last).unwrap();
    assert!(trainer.step >= 1, "{trainer:?}");
    assert!(!output.join("summary.json").exists());
}

#[test]
fn missing_data_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-data");
    let error = run(&config(&missing, &[]), &dir.path().join("run"), false).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("no-such-data"), "{message}");
}

#[test]
fn new_run_rejects_folder_with_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let output = dir.path().join("run");
    run(&config(&data, &["max_steps=2"]), &output, false).unwrap();

    let error = run(&config(&data, &["max_steps=2", "lr=0.01"]), &output, false).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("already holds checkpoints (up to step 2)"), "{message}");
    assert!(message.contains("--resume"), "{message}");
}

#[test]
fn resume_from_older_checkpoint_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let output = dir.path().join("run");
    run(&config(&data, &["max_steps=4"]), &output, false).unwrap();

    let older = output.join("checkpoints/step-00000002");
    let options = RunOptions { output: output.clone(), resume: Some(older) };
    let error =
        train::<B>(&config(&data, &["max_steps=5"]), &options, &Default::default()).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("checkpoint of step 4, after the resumed step 2"), "{message}");
}

#[test]
fn resume_past_the_end_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let output = dir.path().join("run");
    run(&config(&data, &["max_steps=3"]), &output, false).unwrap();
    let before = std::fs::metadata(output.join("checkpoints/step-00000003/queue.f32"))
        .unwrap()
        .modified()
        .unwrap();

    let summary = run(&config(&data, &["max_steps=2"]), &output, true).unwrap();
    assert_eq!(summary.steps, 3);
    assert!(summary.losses.is_empty());
    let after = std::fs::metadata(output.join("checkpoints/step-00000003/queue.f32"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "the checkpoint was rewritten");
    let hidden: Vec<_> = std::fs::read_dir(output.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn tiny_validation_pack_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    // Keep only the first 4 pairs of the fixture pack, too few for 10 folds.
    let pack = ffc_data::ValidationPack::open(&fixtures().join("pairs_p4.bin")).unwrap();
    assert!(pack.pairs() > 4);
    let small = dir.path().join("small.toml");
    std::fs::write(&small, "").unwrap();
    let truncated = truncated_pack(&pack, 4);
    std::fs::write(data.join("tiny.bin"), truncated).unwrap();

    let output = dir.path().join("run");
    let error = run(&config(&data, &["val_targets=[\"tiny\"]"]), &output, false).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("tiny.bin"), "{message}");
    assert!(message.contains("too few"), "{message}");
    assert!(!output.join("checkpoints").exists());
}

/// Writes a protocol-2 pickle `(images, issame)` holding the first `pairs` pairs of `pack`.
fn truncated_pack(pack: &ffc_data::ValidationPack, pairs: usize) -> Vec<u8> {
    let mut bytes = vec![0x80, 2, b'('];
    bytes.push(b']');
    bytes.push(b'(');
    for image in &pack.images[..2 * pairs] {
        bytes.push(b'B'); // BINBYTES (protocol 3 opcode, read by every protocol-3+ reader)
        bytes.extend_from_slice(&(image.len() as u32).to_le_bytes());
        bytes.extend_from_slice(image);
    }
    bytes.push(b'e');
    bytes.push(b']');
    bytes.push(b'(');
    for &same in &pack.issame[..pairs] {
        bytes.push(if same { 0x88 } else { 0x89 });
    }
    bytes.push(b'e');
    bytes.push(b't');
    bytes.push(b'.');
    bytes
}
