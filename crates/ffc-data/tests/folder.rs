//! Image folders, `open_source` and `inspect`.

mod common;

use std::path::Path;

use ffc_data::{
    DataError, FaceSource, ImageFolder, MAX_DECODED_SIDE, Preprocess, SourceKind, inspect,
    load_images, open_source,
};

fn small_preprocess() -> Preprocess {
    Preprocess { height: 8, width: 8, ..Preprocess::default() }
}

/// Copies `name` (`train.rec` or `train.idx`) of the plain fixture to `to`.
fn copy_fixture_file(name: &str, to: &Path) {
    std::fs::copy(common::data_dir().join("rec_plain").join(name), to).unwrap();
}

#[test]
fn folders_sort_by_name_and_skip_non_images() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2, 3]);
    std::fs::rename(dir.path().join("id000"), dir.path().join("b")).unwrap();
    std::fs::rename(dir.path().join("id001"), dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a").join("notes.txt"), b"ignored").unwrap();
    std::fs::write(dir.path().join("a").join("03.JPEG"), common::synthetic_png(1, 3)).unwrap();
    std::fs::write(dir.path().join("stray.png"), common::synthetic_png(0, 0)).unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();

    let folder = ImageFolder::open(dir.path()).unwrap();
    assert_eq!(folder.num_identities(), 2);
    assert_eq!(folder.identity_name(0), "a");
    assert_eq!(folder.identity_name(1), "b");
    assert_eq!(folder.len(), 6);
    assert_eq!(folder.identity_images(0), 0..4);
    assert!(folder.path(3).ends_with("a/03.JPEG"));
    assert_eq!(folder.label(4), 1);
    assert!(folder.describe(0).contains("00.png"));
}

#[test]
fn missing_folder_is_named() {
    let error = ImageFolder::open(std::path::Path::new("/no/such/faces")).unwrap_err();
    assert!(matches!(error, DataError::NotFound { .. }), "{error}");
    assert!(error.to_string().contains("/no/such/faces"), "{error}");
}

#[test]
fn folder_without_images_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("person")).unwrap();
    std::fs::write(dir.path().join("person").join("readme.txt"), b"x").unwrap();
    let error = ImageFolder::open(dir.path()).unwrap_err();
    assert!(matches!(error, DataError::EmptyFolder { .. }), "{error}");
    assert!(error.to_string().contains("one sub-folder per identity"), "{error}");
}

#[test]
fn open_source_picks_the_format() {
    let rec = open_source(&common::data_dir().join("rec_meta")).unwrap();
    assert!(rec.describe(0).contains("train.rec"));
    let rec_file = open_source(&common::data_dir().join("rec_plain").join("train.rec")).unwrap();
    assert_eq!(rec_file.len(), 60);

    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[1, 2]);
    let folder = open_source(dir.path()).unwrap();
    assert_eq!(folder.len(), 3);

    let error = open_source(&dir.path().join("absent")).err().unwrap();
    assert!(matches!(error, DataError::NotFound { .. }), "{error}");
}

#[test]
fn grayscale_pgm_is_replicated_to_three_channels() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("id");
    std::fs::create_dir(&folder).unwrap();
    image::GrayImage::from_pixel(8, 8, image::Luma([200])).save(folder.join("x.pgm")).unwrap();

    let source = ImageFolder::open(dir.path()).unwrap();
    let preprocess = Preprocess { height: 8, width: 8, ..Preprocess::default() };
    let pixels = load_images(&source, &[0], &preprocess, false).unwrap();
    let expected = (200.0 / 255.0 - 0.5) / 0.5;
    assert!(pixels.iter().all(|&v| (v - expected).abs() < 1e-6));
}

#[test]
fn load_images_matches_single_decodes() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[3, 4, 2]);
    let source = ImageFolder::open(dir.path()).unwrap();
    let preprocess = Preprocess { height: 8, width: 8, ..Preprocess::default() };
    let images = [8, 0, 5, 5, 2];
    let pixels = load_images(&source, &images, &preprocess, true).unwrap();
    for (row, &image) in images.iter().enumerate() {
        let expected = preprocess.decode(&source.read(image).unwrap(), true).unwrap();
        let len = preprocess.image_len();
        assert_eq!(&pixels[row * len..(row + 1) * len], expected.as_slice(), "row {row}");
    }
}

#[test]
fn load_images_names_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2]);
    let bad = dir.path().join("id000").join("01.png");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let source = ImageFolder::open(dir.path()).unwrap();
    let preprocess = Preprocess { height: 8, width: 8, ..Preprocess::default() };
    let error = load_images(&source, &[0, 1], &preprocess, false).unwrap_err();
    assert!(matches!(error, DataError::Decode { .. }), "{error}");
    assert!(error.to_string().contains("01.png"), "{error}");
}

#[test]
fn inspect_reports_each_kind() {
    let meta = inspect(&common::data_dir().join("rec_meta")).unwrap();
    assert_eq!(
        serde_json::to_value(&meta).unwrap(),
        serde_json::json!({"kind": "rec", "layout": "meta", "images": 60, "identities": 6,
                           "image_size": [112, 112]})
    );

    let plain = inspect(&common::data_dir().join("rec_plain")).unwrap();
    assert_eq!(
        serde_json::to_value(&plain).unwrap(),
        serde_json::json!({"kind": "rec", "layout": "plain", "images": 60, "identities": 6,
                           "image_size": [112, 112]})
    );

    let pack = inspect(&common::data_dir().join("pairs_p4.bin")).unwrap();
    assert_eq!(
        serde_json::to_value(&pack).unwrap(),
        serde_json::json!({"kind": "bin", "images": 80, "image_size": [112, 112], "pairs": 40,
                           "same_pairs": 20})
    );

    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2, 1]);
    let folder = inspect(dir.path()).unwrap();
    assert_eq!(folder.kind, SourceKind::Folder);
    assert_eq!(
        serde_json::to_value(&folder).unwrap(),
        serde_json::json!({"kind": "folder", "images": 3, "identities": 2, "image_size": [8, 8]})
    );
    assert_eq!(folder.to_string(), "kind: folder\nimages: 3\nidentities: 2\nimage_size: 8x8\n");
}

#[test]
fn rec_without_idx_names_the_missing_index() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture_file("train.rec", &dir.path().join("train.rec"));

    for error in [open_source(dir.path()).err().unwrap(), inspect(dir.path()).unwrap_err()] {
        match &error {
            DataError::IncompleteRecordIo { missing, present, .. } => {
                assert_eq!(missing, &dir.path().join("train.idx"));
                assert_eq!(present, &dir.path().join("train.rec"));
            }
            other => panic!("expected an incomplete RecordIO error, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains("train.idx` not found"), "{message}");
        assert!(message.contains("rec2idx"), "{message}");
        assert!(!message.contains("identity sub-folders"), "{message}");
    }

    let single = dir.path().join("faces.rec");
    std::fs::rename(dir.path().join("train.rec"), &single).unwrap();
    let error = open_source(&single).err().unwrap();
    assert!(error.to_string().contains("faces.idx` not found"), "{error}");
}

#[test]
fn idx_without_rec_names_the_missing_data_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture_file("train.idx", &dir.path().join("train.idx"));

    let error = open_source(dir.path()).err().unwrap();
    assert!(matches!(error, DataError::IncompleteRecordIo { .. }), "{error:?}");
    assert!(error.to_string().contains("train.rec` not found"), "{error}");

    let error = inspect(&dir.path().join("train.idx")).unwrap_err();
    assert!(matches!(error, DataError::IncompleteRecordIo { .. }), "{error:?}");
    assert!(error.to_string().contains("train.rec` not found"), "{error}");
}

#[test]
fn idx_path_opens_its_rec_file() {
    let source = open_source(&common::data_dir().join("rec_plain").join("train.idx")).unwrap();
    assert_eq!(source.len(), 60);
    assert!(source.describe(0).contains("train.rec"), "{}", source.describe(0));

    let report = inspect(&common::data_dir().join("rec_meta").join("train.idx")).unwrap();
    assert_eq!(report.kind, SourceKind::Rec);
    assert_eq!(report.images, 60);
    assert_eq!(report.identities, Some(6));
}

#[test]
fn unsupported_file_type_is_rejected() {
    let json = common::data_dir().join("pairs.json");
    let error = inspect(&json).unwrap_err();
    assert!(matches!(error, DataError::UnsupportedFile { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("unsupported file type"), "{message}");
    assert!(message.contains("pairs.json"), "{message}");
    assert!(message.contains(".bin validation pack, a .rec or .idx file"), "{message}");
    assert!(!message.contains("pairs.idx"), "{message}");

    let error = open_source(&json).err().unwrap();
    assert!(matches!(error, DataError::UnsupportedFile { .. }), "{error:?}");

    let error = open_source(&common::data_dir().join("pairs_p4.bin")).err().unwrap();
    assert!(matches!(error, DataError::UnsupportedFile { .. }), "{error:?}");
    assert!(error.to_string().contains("for evaluation, not a training set"), "{error}");
}

#[test]
fn hidden_files_and_folders_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2, 1]);
    // A macOS resource fork beside an image, and a hidden folder holding a valid image.
    std::fs::write(dir.path().join("id000").join("._00.png"), b"\x00\x05\x16\x07").unwrap();
    std::fs::create_dir(dir.path().join(".Trashes")).unwrap();
    std::fs::write(dir.path().join(".Trashes").join("x.png"), common::synthetic_png(9, 9)).unwrap();

    let folder = ImageFolder::open(dir.path()).unwrap();
    assert_eq!(folder.num_identities(), 2);
    assert_eq!(folder.identity_name(0), "id000");
    assert_eq!(folder.len(), 3);
    let all: Vec<usize> = (0..folder.len()).collect();
    load_images(&folder, &all, &small_preprocess(), false).unwrap();
}

#[cfg(unix)]
#[test]
fn broken_links_are_skipped_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2, 2]);
    let missing = dir.path().join("missing.png");
    std::os::unix::fs::symlink(&missing, dir.path().join("id000").join("02.png")).unwrap();
    std::os::unix::fs::symlink(&missing, dir.path().join("id001").join("02.png")).unwrap();
    let present = dir.path().join("id001").join("00.png");
    std::os::unix::fs::symlink(&present, dir.path().join("id001").join("03.png")).unwrap();

    let (folder, logs) = common::capture_logs(|| ImageFolder::open(dir.path()).unwrap());
    assert_eq!(folder.len(), 5, "the working link is an image, the broken ones are not");
    assert_eq!(logs.matches("symbolic links whose target does not exist").count(), 1, "{logs}");
    assert!(logs.contains("count=2"), "{logs}");
    assert!(logs.contains("WARN"), "{logs}");
}

#[test]
fn decode_error_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(dir.path(), &[2]);
    let bad = dir.path().join("id000").join("01.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let folder = ImageFolder::open(dir.path()).unwrap();

    let error = load_images(&folder, &[1], &small_preprocess(), false).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("re-encode or remove the image"), "{message}");
    assert!(!message.contains("skip_bad_images"), "{message}");

    let chain = common::error_chain(&error);
    let cause = chain.strip_prefix(&format!("{message}: ")).expect("the error has a cause");
    assert!(!cause.is_empty(), "{chain}");
    assert!(!cause.contains('\n'), "{chain}");
    assert_eq!(chain.matches(cause).count(), 1, "the cause repeats: {chain}");
    let segments: Vec<&str> = cause.split(": ").collect();
    for pair in segments.windows(2) {
        assert_ne!(pair[0].trim(), pair[1].trim(), "a cause repeats: {chain}");
    }
}

#[test]
fn oversized_image_error_states_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("id");
    std::fs::create_dir(&folder).unwrap();
    image::GrayImage::new(MAX_DECODED_SIDE + 1, 1).save(folder.join("wide.png")).unwrap();

    let source = ImageFolder::open(dir.path()).unwrap();
    let error = load_images(&source, &[0], &small_preprocess(), false).unwrap_err();
    assert!(matches!(error, DataError::Decode { .. }), "{error:?}");
    let chain = common::error_chain(&error);
    assert!(chain.contains("wide.png"), "{chain}");
    assert!(chain.contains("limit of 16384 pixels"), "{chain}");
}
