//! The dual loader on synthetic faces whose pixels encode identity, image and flip.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use common::{Decoded, read_decoded};
use ffc_data::{
    Augment, Batch, DataError, DualLoader, FaceSource, ImageFolder, LoaderConfig, LoaderPosition,
    Preprocess,
};

/// 9 identities with 1 to 5 images each, 29 images in all.
const COUNTS: [usize; 9] = [3, 1, 4, 5, 2, 3, 4, 5, 2];

fn preprocess() -> Preprocess {
    Preprocess {
        height: common::SIDE as usize,
        width: common::SIDE as usize,
        ..Preprocess::default()
    }
}

fn config(batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        seed: 7,
        workers,
        prefetch: 2,
        augment: Augment { flip: true, ..Augment::default() },
        skip_bad_images: false,
    }
}

fn faces(root: &Path) -> Arc<dyn FaceSource> {
    common::write_face_folder(root, &COUNTS);
    Arc::new(ImageFolder::open(root).unwrap())
}

fn loader(source: &Arc<dyn FaceSource>, config: LoaderConfig, start: LoaderPosition) -> DualLoader {
    DualLoader::new(Arc::clone(source), preprocess(), config, start).unwrap()
}

fn batches(loader: &mut DualLoader, count: usize) -> Vec<Batch> {
    (0..count).map(|_| loader.next_batch().unwrap()).collect()
}

/// Returns what every row of a view shows.
fn rows(view: &[f32]) -> Vec<Decoded> {
    view.chunks_exact(preprocess().image_len()).map(read_decoded).collect()
}

fn at(epoch: usize, step: usize) -> LoaderPosition {
    LoaderPosition { epoch, step }
}

#[test]
fn batch_layout_follows_the_dual_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    let batch_size = 4;
    let mut loader = loader(&source, config(batch_size, 2), at(0, 0));
    assert_eq!(loader.steps_per_epoch(), 29 / 4);

    for batch in batches(&mut loader, 20) {
        assert_eq!(batch.images_per_view, 6);
        assert_eq!(batch.x.len(), 6 * preprocess().image_len());
        assert_eq!(batch.y.len(), batch.x.len());
        let (x, y) = (rows(&batch.x), rows(&batch.y));

        // Labels are those of the decoded images.
        for (row, decoded) in x.iter().enumerate() {
            assert_eq!(batch.x_labels[row], u64::from(decoded.identity), "x row {row}");
        }
        for (row, decoded) in y.iter().enumerate() {
            assert_eq!(batch.y_labels[row], u64::from(decoded.identity), "y row {row}");
        }

        // Identity part: same identity in x and y, distinct identities, distinct images unless
        // the identity has one image.
        let identities: HashSet<_> = x[..batch_size].iter().map(|d| d.identity).collect();
        assert_eq!(identities.len(), batch_size);
        for row in 0..batch_size {
            assert_eq!(x[row].identity, y[row].identity, "row {row}");
            let count = COUNTS[usize::from(x[row].identity)];
            assert_eq!(x[row].index == y[row].index, count == 1, "row {row}");
        }
        assert_eq!(batch.skipped_images, 0);
    }
}

#[test]
fn instance_loader_visits_each_image_at_most_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    let mut loader = loader(&source, config(4, 0), at(0, 0));
    let steps = loader.steps_per_epoch();
    for epoch in 0..3 {
        let mut seen = HashSet::new();
        for batch in batches(&mut loader, steps) {
            assert_eq!(batch.epoch, epoch);
            let (x, y) = (rows(&batch.x), rows(&batch.y));
            for decoded in x[4..].iter().chain(&y[4..]) {
                assert!(seen.insert((decoded.identity, decoded.index)), "{decoded:?} twice");
            }
        }
        assert_eq!(seen.len(), steps * 4);
    }
    assert_eq!(loader.position(), at(3, 0));
}

#[test]
fn identity_passes_do_not_repeat_identities() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    // 9 identities and batch 4: 2 identity batches per pass, so steps 0-1, 2-3 and 4-5 are
    // separate passes with 8 distinct identities each.
    let mut loader = loader(&source, config(4, 1), at(0, 0));
    let steps = loader.steps_per_epoch();
    let epoch = batches(&mut loader, steps);
    for pass in epoch.chunks(2).filter(|pass| pass.len() == 2) {
        let identities: HashSet<_> =
            pass.iter().flat_map(|batch| batch.x_labels[..4].to_vec()).collect();
        assert_eq!(identities.len(), 8);
    }
    let first_pass: Vec<_> = epoch[..2].iter().flat_map(|b| b.x_labels[..4].to_vec()).collect();
    let second_pass: Vec<_> = epoch[2..4].iter().flat_map(|b| b.x_labels[..4].to_vec()).collect();
    assert_ne!(first_pass, second_pass, "each pass reshuffles");
}

#[test]
fn resumed_loader_matches_continuous_run() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    let mut continuous = loader(&source, config(4, 2), at(0, 0));
    let steps = continuous.steps_per_epoch();
    let reference = batches(&mut continuous, 3 * steps);

    for start in [1, steps - 1, steps, steps + 2, 2 * steps + 1] {
        let position = at(start / steps, start % steps);
        let mut resumed = loader(&source, config(4, 1), position);
        assert_eq!(resumed.position(), position);
        for (offset, expected) in reference[start..].iter().take(steps + 1).enumerate() {
            let batch = resumed.next_batch().unwrap();
            assert_eq!(&batch, expected, "resumed at {start}, batch {offset}");
        }
    }
}

#[test]
fn worker_count_does_not_change_batches() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    let inline = batches(&mut loader(&source, config(4, 0), at(0, 0)), 15);
    let single_worker = batches(&mut loader(&source, config(4, 1), at(0, 0)), 15);
    let three_workers = batches(&mut loader(&source, config(4, 3), at(0, 0)), 15);
    assert_eq!(inline, single_worker);
    assert_eq!(single_worker, three_workers);
}

#[test]
fn seeds_change_batches() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    let first = batches(&mut loader(&source, config(4, 0), at(0, 0)), 3);
    let other_seed = LoaderConfig { seed: 8, ..config(4, 0) };
    let second = batches(&mut loader(&source, other_seed, at(0, 0)), 3);
    assert_ne!(first, second);
}

#[test]
fn flips_are_independent_coin_tosses() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    let all = batches(&mut loader(&source, config(4, 0), at(0, 0)), 50);
    let flips: Vec<bool> = all
        .iter()
        .flat_map(|batch| rows(&batch.x).into_iter().chain(rows(&batch.y)))
        .map(|decoded| decoded.flipped)
        .collect();
    let flipped = flips.iter().filter(|&&f| f).count();
    assert_eq!(flips.len(), 600);
    assert!((240..=360).contains(&flipped), "{flipped} of 600 flipped");

    let no_flip = LoaderConfig { augment: Augment::default(), ..config(4, 0) };
    for batch in batches(&mut loader(&source, no_flip, at(0, 0)), 10) {
        assert!(rows(&batch.x).iter().chain(&rows(&batch.y)).all(|d| !d.flipped));
    }
}

#[test]
fn position_advances_across_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    let mut loader = loader(&source, config(8, 0), at(0, 0));
    assert_eq!(loader.steps_per_epoch(), 3);
    let positions: Vec<_> = (0..4)
        .map(|_| {
            let batch = loader.next_batch().unwrap();
            (batch.epoch, batch.step)
        })
        .collect();
    assert_eq!(positions, vec![(0, 0), (0, 1), (0, 2), (1, 0)]);
    assert_eq!(loader.position(), at(1, 1));
}

fn config_error(
    source: &Arc<dyn FaceSource>,
    config: LoaderConfig,
    start: LoaderPosition,
) -> String {
    match DualLoader::new(Arc::clone(source), preprocess(), config, start) {
        Err(error @ DataError::Config { .. }) => error.to_string(),
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("expected a configuration error"),
    }
}

#[test]
fn invalid_configurations_name_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());

    let message = config_error(&source, config(5, 0), at(0, 0));
    assert!(message.contains("batch_size 5 must be even"), "{message}");
    let message = config_error(&source, config(0, 0), at(0, 0));
    assert!(message.contains("batch_size 0"), "{message}");

    let message = config_error(&source, config(10, 0), at(0, 0));
    assert!(message.contains("29 images and 9 identities"), "{message}");
    assert!(message.contains("lower batch_size to 8"), "{message}");

    let message = config_error(&source, config(4, 0), at(0, 7));
    assert!(message.contains("start step 7"), "{message}");
}

#[test]
fn single_identity_needs_two_identities() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[10]);
    let source: Arc<dyn FaceSource> = Arc::new(ImageFolder::open(dir.path()).unwrap());

    for batch_size in [2, 4] {
        let message = config_error(&source, config(batch_size, 0), at(0, 0));
        assert!(message.contains("10 images of 1 identity"), "{message}");
        assert!(message.contains("even and at least 2"), "{message}");
        assert!(message.contains("at least 2 identities"), "{message}");
        assert!(!message.contains("batch_size to 0"), "{message}");
    }
}

#[test]
fn corrupt_image_fails_batch_naming_file() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2, 2, 2, 2]);
    let bad = dir.path().join("id002").join("01.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let source: Arc<dyn FaceSource> = Arc::new(ImageFolder::open(dir.path()).unwrap());

    // With 8 images and batch 4, every epoch's instance batches cover every image.
    let mut loader = loader(&source, config(4, 2), at(0, 0));
    let error = (0..2).find_map(|_| loader.next_batch().err()).expect("the bad image is sampled");
    assert!(matches!(error, DataError::Decode { .. }), "{error}");
    assert!(error.to_string().contains("01.png"), "{error}");

    let stopped = loader.next_batch().unwrap_err();
    assert!(matches!(stopped, DataError::LoaderStopped { .. }), "{stopped}");
}

#[test]
fn skip_bad_images_substitutes_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2, 2, 1, 2]);
    std::fs::write(dir.path().join("id001").join("01.png"), b"garbage").unwrap();
    std::fs::write(dir.path().join("id002").join("00.png"), b"").unwrap();
    let source: Arc<dyn FaceSource> = Arc::new(ImageFolder::open(dir.path()).unwrap());

    let skipping = LoaderConfig { skip_bad_images: true, ..config(4, 2) };
    let all = batches(&mut loader(&source, skipping.clone(), at(0, 0)), 12);
    let skipped: usize = all.iter().map(|batch| batch.skipped_images).sum();
    assert!(skipped >= 2, "{skipped} images skipped");
    for batch in &all {
        let decoded = rows(&batch.x).into_iter().chain(rows(&batch.y));
        let labels = batch.x_labels.iter().chain(&batch.y_labels);
        for (decoded, &label) in decoded.zip(labels) {
            assert_ne!((decoded.identity, decoded.index), (1, 1), "bad image decoded");
            assert_ne!((decoded.identity, decoded.index), (2, 0), "bad image decoded");
            assert_eq!(u64::from(decoded.identity), label);
        }
    }

    let again = batches(&mut loader(&source, skipping, at(0, 0)), 12);
    assert_eq!(all, again, "substitutions are reproducible");
}

#[test]
fn skip_warning_shows_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2, 2, 2, 2]);
    std::fs::write(dir.path().join("id001").join("01.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let source: Arc<dyn FaceSource> = Arc::new(ImageFolder::open(dir.path()).unwrap());

    // Inline decoding, so that the warnings come from this thread.
    let skipping = LoaderConfig { skip_bad_images: true, ..config(4, 0) };
    let (all, logs) = common::capture_logs(|| batches(&mut loader(&source, skipping, at(0, 0)), 4));
    assert!(all.iter().any(|batch| batch.skipped_images > 0), "the bad image is sampled");
    let warning = logs
        .lines()
        .find(|line| line.contains("skipping an unreadable image"))
        .unwrap_or_else(|| panic!("no skip warning in {logs}"));
    assert!(warning.contains("re-encode or remove the image"), "{warning}");
    assert!(!warning.contains("skip_bad_images"), "{warning}");
    let cause = "chunk appeared before IHDR chunk";
    assert_eq!(warning.matches(cause).count(), 1, "{warning}");
}

#[test]
fn dropping_a_running_loader_stops_its_threads() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    for _ in 0..20 {
        let mut loader = loader(&source, LoaderConfig { prefetch: 4, ..config(4, 3) }, at(0, 0));
        loader.next_batch().unwrap();
    }
}

#[test]
fn jitter_is_reproducible_and_keeps_labels() {
    let dir = tempfile::tempdir().unwrap();
    let source = faces(dir.path());
    let augment =
        Augment { max_shift: 2, max_rotation: 10.0, max_contrast: 0.2, ..config(4, 0).augment };
    let shifted = LoaderConfig { augment, ..config(4, 0) };
    let first = batches(&mut loader(&source, shifted.clone(), at(0, 0)), 3);
    let again = batches(&mut loader(&source, shifted.clone(), at(0, 0)), 3);
    let threaded =
        batches(&mut loader(&source, LoaderConfig { workers: 2, ..shifted }, at(0, 0)), 3);
    let plain = batches(&mut loader(&source, config(4, 0), at(0, 0)), 3);

    assert_eq!(first, again);
    assert_eq!(first, threaded);
    for (shifted, plain) in first.iter().zip(&plain) {
        assert_eq!(shifted.x_labels, plain.x_labels);
        assert_eq!(shifted.y_labels, plain.y_labels);
    }
    assert_ne!(
        first.iter().map(|b| &b.x).collect::<Vec<_>>(),
        plain.iter().map(|b| &b.x).collect::<Vec<_>>()
    );
}
