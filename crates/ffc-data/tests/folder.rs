//! Image folders, `open_source` and `inspect`.

mod common;

use ffc_data::{
    DataError, FaceSource, ImageFolder, Preprocess, SourceKind, inspect, load_images, open_source,
};

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
