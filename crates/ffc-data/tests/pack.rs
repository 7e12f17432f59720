//! Packing image folders into RecordIO, checked byte for byte against the MXNet-written fixture.

mod common;

use std::path::Path;

use ffc_data::{
    DataError, FaceSource, ImageFolder, PackOptions, RecordDataset, RecordLayout, open_source,
    pack_folder, pack_source,
};

/// Writes the fixture's 60 images into an image folder, `id0/00.jpg` … `id5/09.jpg`.
fn unpack_fixture(root: &Path) {
    let dataset = RecordDataset::open(&common::data_dir().join("rec_meta")).unwrap();
    for image in 0..dataset.len() {
        let folder = root.join(format!("id{}", dataset.label(image)));
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join(format!("{:02}.jpg", image % 10));
        std::fs::write(file, dataset.read(image).unwrap()).unwrap();
    }
}

fn assert_same_files(written: &Path, expected: &Path) {
    for name in ["train.rec", "train.idx", "property"] {
        let written = std::fs::read(written.join(name)).unwrap();
        let expected = std::fs::read(expected.join(name)).unwrap();
        assert_eq!(written.len(), expected.len(), "{name} length");
        if let Some(offset) = written.iter().zip(&expected).position(|(a, b)| a != b) {
            panic!("{name} differs from the MXNet-written file at byte {offset}");
        }
    }
}

#[test]
fn repacked_fixture_matches_mxnet_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (images, output) = (dir.path().join("images"), dir.path().join("packed"));
    unpack_fixture(&images);

    let mut calls = Vec::new();
    let summary = pack_folder(&images, &output, &PackOptions::default(), &mut |done, total| {
        calls.push((done, total))
    })
    .unwrap();
    assert_eq!(summary.images, 60);
    assert_eq!(summary.identities, 6);
    assert_eq!(summary.reencoded, 0);
    assert_eq!(summary.image_size, [112, 112]);
    assert_eq!(calls.len(), 60);
    assert_eq!(calls.last(), Some(&(60, 60)));

    assert_same_files(&output, &common::data_dir().join("rec_meta"));
}

#[test]
fn plain_fixture_converts_to_meta_layout() {
    let dir = tempfile::tempdir().unwrap();
    let plain = RecordDataset::open(&common::data_dir().join("rec_plain")).unwrap();
    pack_source(&plain, dir.path(), &PackOptions::default(), &mut |_, _| {}).unwrap();
    assert_same_files(dir.path(), &common::data_dir().join("rec_meta"));
}

#[test]
fn plain_folder_converts_in_place() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["train.rec", "train.idx"] {
        std::fs::copy(common::data_dir().join("rec_plain").join(name), dir.path().join(name))
            .unwrap();
    }
    // The source keeps its `.rec` file memory-mapped while the packer writes the same folder.
    let source = open_source(dir.path()).unwrap();
    pack_source(source.as_ref(), dir.path(), &PackOptions::default(), &mut |_, _| {}).unwrap();
    drop(source);

    assert_same_files(dir.path(), &common::data_dir().join("rec_meta"));
    assert!(!dir.path().join("train.rec.partial").exists());
    assert!(!dir.path().join("train.idx.partial").exists());
}

#[test]
fn failed_pack_keeps_existing_output() {
    let dir = tempfile::tempdir().unwrap();
    let (images, output) = (dir.path().join("images"), dir.path().join("packed"));
    common::write_face_folder(&images, &[2, 2]);
    pack_folder(&images, &output, &PackOptions::default(), &mut |_, _| {}).unwrap();
    let before = std::fs::read(output.join("train.rec")).unwrap();

    std::fs::write(images.join("id001").join("01.png"), b"\x89PNG broken").unwrap();
    let error = pack_folder(&images, &output, &PackOptions::default(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(error, DataError::Decode { .. }), "{error}");
    assert_eq!(std::fs::read(output.join("train.rec")).unwrap(), before);
    assert!(!output.join("train.rec.partial").exists());
    assert!(!output.join("train.idx.partial").exists());
    assert_eq!(RecordDataset::open(&output).unwrap().len(), 4);
}

#[test]
fn folder_round_trips_bytes_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (images, output) = (dir.path().join("images"), dir.path().join("packed"));
    common::write_face_folder(&images, &[3, 1, 4, 2]);
    // Mix formats: one identity stored as BMP and PGM as well.
    let decoded = image::load_from_memory(&common::synthetic_png(9, 9)).unwrap();
    decoded.save(images.join("id001").join("extra.bmp")).unwrap();
    decoded.to_luma8().save(images.join("id001").join("gray.pgm")).unwrap();

    pack_folder(&images, &output, &PackOptions::default(), &mut |_, _| {}).unwrap();
    let folder = ImageFolder::open(&images).unwrap();
    let packed = RecordDataset::open(&output).unwrap();
    assert_eq!(packed.layout(), RecordLayout::Meta);
    assert_eq!(packed.len(), folder.len());
    assert_eq!(packed.len(), 12);
    assert_eq!(packed.num_identities(), 4);
    for image in 0..folder.len() {
        assert_eq!(packed.read(image).unwrap(), folder.read(image).unwrap(), "image {image}");
        assert_eq!(packed.label(image), folder.label(image), "image {image}");
    }
    for identity in 0..4 {
        assert_eq!(packed.identity_images(identity), folder.identity_images(identity));
    }
    let property = std::fs::read_to_string(output.join("property")).unwrap();
    assert_eq!(property, "4,8,8\n");
}

#[test]
fn quality_reencodes_as_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let (images, output) = (dir.path().join("images"), dir.path().join("packed"));
    common::write_face_folder(&images, &[2, 2]);
    let options = PackOptions { max_side: None, quality: Some(90) };
    let summary = pack_folder(&images, &output, &options, &mut |_, _| {}).unwrap();
    assert_eq!(summary.reencoded, 4);

    let packed = RecordDataset::open(&output).unwrap();
    let bytes = packed.read(0).unwrap();
    assert_eq!(&bytes[..2], &[0xff, 0xd8]);
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), common::SIDE);
}

#[test]
fn max_side_shrinks_only_large_images() {
    let dir = tempfile::tempdir().unwrap();
    let (images, output) = (dir.path().join("images"), dir.path().join("packed"));
    common::write_face_folder(&images, &[1, 1]);
    image::RgbImage::new(40, 20).save(images.join("id001").join("big.png")).unwrap();

    let options = PackOptions { max_side: Some(10), quality: None };
    let summary = pack_folder(&images, &output, &options, &mut |_, _| {}).unwrap();
    assert_eq!(summary.reencoded, 1);
    assert_eq!(summary.other_sizes, 1);

    let packed = RecordDataset::open(&output).unwrap();
    // Image 2 is `id001/big.png`, after `id001/00.png`.
    let big = image::load_from_memory(&packed.read(2).unwrap()).unwrap();
    assert_eq!((big.width(), big.height()), (10, 5));
    let small = packed.read(0).unwrap();
    assert_eq!(small.as_ref(), common::synthetic_png(0, 0).as_slice());
}

#[test]
fn corrupt_image_fails_pack_naming_file() {
    let dir = tempfile::tempdir().unwrap();
    let (images, output) = (dir.path().join("images"), dir.path().join("packed"));
    common::write_face_folder(&images, &[2]);
    std::fs::write(images.join("id000").join("01.png"), b"\x89PNG broken").unwrap();
    let error = pack_folder(&images, &output, &PackOptions::default(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(error, DataError::Decode { .. }), "{error}");
    assert!(error.to_string().contains("01.png"), "{error}");
}

#[test]
fn invalid_quality_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    common::write_face_folder(&dir.path().join("images"), &[1]);
    let options = PackOptions { max_side: None, quality: Some(101) };
    let error =
        pack_folder(&dir.path().join("images"), &dir.path().join("out"), &options, &mut |_, _| {})
            .unwrap_err();
    assert!(error.to_string().contains("quality 101"), "{error}");
}
