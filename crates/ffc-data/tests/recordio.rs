//! RecordIO reading against the MXNet-written fixtures, synthetic multi-part frames, and every
//! kind of malformed input.

mod common;

use ffc_data::recordio::{
    FrameError, IrHeader, MAGIC, RecordReader, RecordWriter, encode_frames, parse_frame,
};
use ffc_data::{DataError, FaceSource, RecordDataset, RecordLayout, inspect};
use proptest::prelude::*;

fn fixture(layout: &str) -> RecordDataset {
    RecordDataset::open(&common::data_dir().join(layout)).unwrap()
}

#[test]
fn both_layouts_give_same_images_and_labels() {
    let meta = fixture("rec_meta");
    let plain = fixture("rec_plain");
    assert_eq!(meta.layout(), RecordLayout::Meta);
    assert_eq!(plain.layout(), RecordLayout::Plain);
    assert_eq!(meta.len(), 60);
    assert_eq!(plain.len(), 60);
    assert_eq!(meta.num_identities(), 6);
    assert_eq!(plain.num_identities(), 6);

    for image in 0..60 {
        assert_eq!(meta.read(image).unwrap(), plain.read(image).unwrap(), "image {image}");
        assert_eq!(meta.label(image), plain.label(image), "image {image}");
        assert_eq!(meta.label(image), image as u64 / 10, "image {image}");
    }
    for identity in 0..6 {
        assert_eq!(meta.identity_images(identity), identity * 10..identity * 10 + 10);
        assert_eq!(plain.identity_images(identity), meta.identity_images(identity));
        assert_eq!(meta.identity_label(identity), identity as u64);
        assert_eq!(plain.identity_label(identity), identity as u64);
    }
}

#[test]
fn meta_labels_match_image_records() {
    let meta = fixture("rec_meta");
    for image in 0..meta.len() {
        let key = meta.key(image);
        let record = meta.reader().read(key).unwrap();
        assert_eq!(record.header.class_label() as u64, meta.label(image), "key {key}");
        assert_eq!(record.header.id, key);
    }
}

#[test]
fn images_are_jpeg_and_decode() {
    let meta = fixture("rec_meta");
    let bytes = meta.read(0).unwrap();
    assert_eq!(&bytes[..3], &[0xff, 0xd8, 0xff]);
    let decoded = ffc_data::Preprocess::default().decode(&bytes, false).unwrap();
    assert_eq!(decoded.len(), 3 * 112 * 112);
}

#[test]
fn property_file_is_read() {
    let property = fixture("rec_meta").property().unwrap();
    assert_eq!(property.num_classes, 6);
    assert_eq!((property.height, property.width), (112, 112));
    assert_eq!(fixture("rec_plain").property(), None);
}

#[test]
fn describe_names_file_and_key() {
    let meta = fixture("rec_meta");
    let description = meta.describe(16);
    assert!(description.contains("train.rec"), "{description}");
    assert!(description.ends_with("key 17"), "{description}");
}

// --- synthetic records -----------------------------------------------------------------------

/// Encodes one frame part by hand, independently of the crate's encoder.
fn raw_part(flag: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_le_bytes().to_vec();
    out.extend_from_slice(&((flag << 29) | payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}

fn image_payload(label: f32, key: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    IrHeader::scalar(label, key).write_to(&mut payload);
    payload.extend_from_slice(data);
    payload
}

fn reader(rec: Vec<u8>, idx: &str) -> Result<RecordReader, DataError> {
    RecordReader::from_bytes("test.rec", "test.idx", rec, idx.as_bytes())
}

#[test]
fn multipart_frames_are_rejoined() {
    // Payload: header, "abcd", magic, "efghijkl", magic, "xyz" — the magic words sit at aligned
    // offsets 28 and 40, where a writer must split.
    let magic = MAGIC.to_le_bytes();
    let mut payload = image_payload(3.0, 0, b"abcd");
    payload.extend_from_slice(&magic);
    payload.extend_from_slice(b"efghijkl");
    payload.extend_from_slice(&magic);
    payload.extend_from_slice(b"xyz");
    let rec = [
        raw_part(1, &payload[..28]),
        raw_part(2, &payload[32..40]),
        raw_part(3, &payload[44..]),
        raw_part(0, &image_payload(4.0, 1, b"next")),
    ]
    .concat();
    let second = rec.len() - raw_part(0, &image_payload(4.0, 1, b"next")).len();

    let frame = parse_frame(&rec, 0).unwrap();
    assert_eq!(frame.payload.as_ref(), payload.as_slice());
    assert_eq!(frame.parts, 3);
    assert_eq!(frame.end, second);

    let reader = reader(rec, &format!("0\t0\n1\t{second}\n")).unwrap();
    let record = reader.read(0).unwrap();
    assert_eq!(record.header.class_label(), 3.0);
    assert_eq!(record.data.as_ref(), &payload[24..]);
    assert_eq!(reader.read(1).unwrap().data.as_ref(), b"next");
}

#[test]
fn writer_splits_like_dmlc() {
    let magic = MAGIC.to_le_bytes();
    let mut data = b"abcd".to_vec();
    data.extend_from_slice(&magic);
    data.extend_from_slice(b"tail");
    let header = IrHeader::scalar(1.0, 7);
    let mut payload = Vec::new();
    header.write_to(&mut payload);
    payload.extend_from_slice(&data);

    let dir = tempfile::tempdir().unwrap();
    let (rec, idx) = (dir.path().join("t.rec"), dir.path().join("t.idx"));
    let mut writer = RecordWriter::create(&rec, &idx).unwrap();
    writer.write_record(7, &header, &data).unwrap();
    writer.finish().unwrap();

    let expected = [raw_part(1, &payload[..28]), raw_part(3, &payload[32..])].concat();
    assert_eq!(std::fs::read(&rec).unwrap(), expected);
    assert_eq!(std::fs::read_to_string(&idx).unwrap(), "7\t0\n");
    let reader = RecordReader::open(&rec, &idx).unwrap();
    assert_eq!(reader.read(7).unwrap().data.as_ref(), data.as_slice());
}

/// Returns `bytes` with the magic word written at each of the aligned `positions` that fits.
fn with_magic_words(mut bytes: Vec<u8>, positions: &[usize]) -> Vec<u8> {
    for &position in positions {
        let aligned = position / 4 * 4;
        if aligned + 4 <= bytes.len() {
            bytes[aligned..aligned + 4].copy_from_slice(&MAGIC.to_le_bytes());
        }
    }
    bytes
}

proptest! {
    #[test]
    fn frames_round_trip(
        first in proptest::collection::vec(any::<u8>(), 0..200),
        second in proptest::collection::vec(any::<u8>(), 0..50),
        positions in proptest::collection::vec(0usize..200, 0..6),
    ) {
        let first = with_magic_words(first, &positions);
        let mut encoded = Vec::new();
        encode_frames(&first, &mut encoded);
        let boundary = encoded.len();
        encode_frames(&second, &mut encoded);
        prop_assert_eq!(boundary % 4, 0);

        let parsed = parse_frame(&encoded, 0).unwrap();
        prop_assert_eq!(parsed.payload.as_ref(), first.as_slice());
        prop_assert_eq!(parsed.end, boundary);
        let next = parse_frame(&encoded, boundary).unwrap();
        prop_assert_eq!(next.payload.as_ref(), second.as_slice());
        prop_assert_eq!(next.end, encoded.len());
    }
}

// --- malformed input -------------------------------------------------------------------------

fn frame_error(result: Result<impl std::fmt::Debug, DataError>) -> (u64, FrameError) {
    match result {
        Err(DataError::Frame { key, source, .. }) => (key, source),
        other => panic!("expected a frame error, got {other:?}"),
    }
}

#[test]
fn bad_magic_names_offset() {
    let mut rec = raw_part(0, &image_payload(0.0, 0, b"a"));
    rec.extend(raw_part(0, &image_payload(0.0, 1, b"b")));
    let second = raw_part(0, &image_payload(0.0, 0, b"a")).len();
    rec[second] ^= 0xff;
    let reader = reader(rec, &format!("0\t0\n1\t{second}\n")).unwrap();
    let (key, error) = frame_error(reader.read(1));
    assert_eq!(key, 1);
    assert!(matches!(error, FrameError::BadMagic { offset, .. } if offset == second as u64));
    assert!(error.to_string().contains(&format!("byte offset {second}")));
}

#[test]
fn truncated_header_is_reported() {
    let mut rec = raw_part(0, &image_payload(0.0, 0, b"abcd"));
    let end = rec.len();
    rec.extend_from_slice(&MAGIC.to_le_bytes());
    let reader = reader(rec, &format!("0\t0\n1\t{end}\n")).unwrap();
    let (_, error) = frame_error(reader.read(1));
    assert_eq!(error, FrameError::TruncatedHeader { offset: end as u64, available: 4 });
}

#[test]
fn length_past_end_is_reported() {
    let mut rec = raw_part(0, &image_payload(0.0, 0, b"abcdefgh"));
    rec.truncate(rec.len() - 4);
    let reader = reader(rec, "0\t0\n").unwrap();
    let (_, error) = frame_error(reader.read(0));
    assert!(matches!(error, FrameError::LengthPastEnd { offset: 0, length: 32, .. }), "{error}");
}

#[test]
fn idx_offset_past_end_is_rejected_at_open() {
    let rec = raw_part(0, &image_payload(0.0, 0, b"a"));
    let len = rec.len();
    let error = reader(rec, &format!("0\t0\n1\t{len}\n")).err().unwrap();
    assert!(matches!(error, DataError::IndexLine { line: 2, .. }), "{error}");
    assert!(error.to_string().contains("past the end"), "{error}");
}

#[test]
fn unterminated_multipart_is_reported() {
    let rec = [raw_part(1, b"abcd"), raw_part(2, b"efgh"), raw_part(2, b"ijkl")].concat();
    let file_len = rec.len() as u64;
    let reader = reader(rec, "0\t0\n").unwrap();
    let (_, error) = frame_error(reader.read(0));
    assert_eq!(error, FrameError::UnterminatedRecord { start: 0, file_len });
}

#[test]
fn misplaced_continuation_flags_are_reported() {
    for (rec, offset, flag) in [
        (raw_part(2, b"abcd"), 0, 2),
        (raw_part(3, b"abcd"), 0, 3),
        (raw_part(5, b"abcd"), 0, 5),
        ([raw_part(1, b"abcd"), raw_part(0, b"efgh")].concat(), 12, 0),
        ([raw_part(1, b"abcd"), raw_part(1, b"efgh")].concat(), 12, 1),
    ] {
        let reader = reader(rec, "0\t0\n").unwrap();
        match frame_error(reader.read(0)) {
            (_, FrameError::UnexpectedFlag { offset: found_offset, flag: found_flag, .. }) => {
                assert_eq!(found_offset, offset);
                assert_eq!(found_flag, flag);
            }
            (_, other) => panic!("expected an unexpected-flag error, got {other}"),
        }
    }
}

#[test]
fn empty_image_record_is_an_error() {
    let rec = [raw_part(0, &image_payload(0.0, 0, b"")), raw_part(0, &image_payload(0.0, 1, b"x"))]
        .concat();
    let second = raw_part(0, &image_payload(0.0, 0, b"")).len();
    let reader = reader(rec, &format!("0\t0\n1\t{second}\n")).unwrap();
    let dataset = RecordDataset::from_reader(reader, None).unwrap();
    assert_eq!(dataset.layout(), RecordLayout::Plain);
    let error = dataset.read(0).unwrap_err();
    assert!(matches!(error, DataError::InvalidRecord { key: 0, .. }), "{error}");
    assert!(error.to_string().contains("no image bytes"), "{error}");
}

#[test]
fn short_payload_is_an_error() {
    let reader = reader(raw_part(0, b"tiny"), "0\t0\n").unwrap();
    let error = reader.read(0).unwrap_err();
    assert!(matches!(error, DataError::InvalidRecord { key: 0, .. }), "{error}");
    assert!(error.to_string().contains("shorter than the 24-byte"), "{error}");
}

#[test]
fn unparsable_idx_lines_are_rejected() {
    let rec = raw_part(0, &image_payload(0.0, 0, b"a"));
    for (idx, line) in [
        ("0\t0\nabc\n", 2),
        ("0\t0\n1\n", 2),
        ("0 0 0\n", 1),
        ("-1\t0\n", 1),
        ("0\t0x10\n", 1),
        ("\u{feff}0\t0\n", 1),
    ] {
        let error = reader(rec.clone(), idx).err().unwrap();
        match &error {
            DataError::IndexLine { line: found, .. } => assert_eq!(*found, line, "{idx:?}"),
            other => panic!("expected an index line error for {idx:?}, got {other:?}"),
        }
    }
}

#[test]
fn empty_index_is_rejected() {
    let reader = reader(raw_part(0, &image_payload(0.0, 0, b"a")), "\n").unwrap();
    let error = RecordDataset::from_reader(reader, None).err().unwrap();
    assert!(error.to_string().contains("no records"), "{error}");
}

#[test]
fn label_at_two_to_the_24_is_rejected() {
    let rec = raw_part(0, &image_payload(16_777_216.0, 0, b"a"));
    let reader = reader(rec, "0\t0\n").unwrap();
    let error = RecordDataset::from_reader(reader, None).err().unwrap();
    assert!(matches!(error, DataError::LabelTooLarge { key: 0, .. }), "{error}");
    assert!(error.to_string().contains("2^24"), "{error}");
}

#[test]
fn label_below_two_to_the_24_is_accepted() {
    let rec = raw_part(0, &image_payload(16_777_215.0, 0, b"a"));
    let reader = reader(rec, "0\t0\n").unwrap();
    let dataset = RecordDataset::from_reader(reader, None).unwrap();
    assert_eq!(dataset.identity_label(0), 16_777_215);
}

#[test]
fn non_integer_labels_are_rejected() {
    for label in [-1.0, 0.5, f32::NAN, f32::INFINITY] {
        let rec = raw_part(0, &image_payload(label, 0, b"a"));
        let reader = reader(rec, "0\t0\n").unwrap();
        let error = RecordDataset::from_reader(reader, None).err().unwrap();
        assert!(error.to_string().contains("not a non-negative integer"), "{label}: {error}");
    }
}

/// Builds an insightface-layout file with the given meta labels and identity ranges, and one
/// 3-byte image record per entry of `labels`, carrying that label.
fn meta_file(meta: [f32; 2], ranges: &[[f32; 2]], labels: &[f32]) -> (Vec<u8>, String) {
    let mut rec = Vec::new();
    let mut idx = String::new();
    let mut push = |key: u64, payload: Vec<u8>| {
        idx.push_str(&format!("{key}\t{}\n", rec.len()));
        rec.extend(raw_part(0, &payload));
    };
    let array = |labels: &[f32], key: u64| {
        let mut payload = Vec::new();
        IrHeader::array(labels.to_vec(), key).write_to(&mut payload);
        payload
    };
    push(0, array(&meta, 0));
    for (i, &label) in labels.iter().enumerate() {
        push(i as u64 + 1, image_payload(label, i as u64 + 1, b"img"));
    }
    for (i, range) in ranges.iter().enumerate() {
        let key = labels.len() as u64 + 1 + i as u64;
        push(key, array(range, key));
    }
    (rec, idx)
}

#[test]
fn consistent_meta_file_opens() {
    let (rec, idx) = meta_file([4.0, 6.0], &[[1.0, 3.0], [3.0, 4.0]], &[0.0, 0.0, 1.0]);
    let dataset = RecordDataset::from_reader(reader(rec, &idx).unwrap(), None).unwrap();
    assert_eq!(dataset.layout(), RecordLayout::Meta);
    assert_eq!(dataset.identity_images(0), 0..2);
    assert_eq!(dataset.identity_images(1), 2..3);
}

/// A broken insightface file and the error it must produce.
struct MetaCase {
    meta: [f32; 2],
    ranges: Vec<[f32; 2]>,
    labels: Vec<f32>,
    key: u64,
    message: &'static str,
}

#[test]
fn inconsistent_meta_files_are_rejected() {
    let case = |meta, ranges, labels, key, message| MetaCase { meta, ranges, labels, key, message };
    let cases = [
        case(
            [4.0, 6.0],
            vec![[1.0, 2.0], [3.0, 4.0]],
            vec![0.0, 0.0, 1.0],
            5,
            "must start at key 2",
        ),
        case([4.0, 6.0], vec![[1.0, 3.0], [3.0, 3.0]], vec![0.0, 0.0, 1.0], 5, "non-empty"),
        case([4.0, 6.0], vec![[1.0, 3.0], [3.0, 9.0]], vec![0.0, 0.0, 1.0], 5, "end at or before"),
        case([4.0, 5.0], vec![[1.0, 3.0]], vec![0.0, 0.0, 1.0], 0, "cover image keys 1..3"),
        case([4.0, 6.0], vec![[1.0, 3.0], [3.0, 4.0]], vec![0.0, 0.0, 7.0], 3, "differs from"),
        case([1.0, 6.0], vec![], vec![], 0, "2 <= a < b"),
    ];
    for case in cases {
        let (rec, idx) = meta_file(case.meta, &case.ranges, &case.labels);
        let error = RecordDataset::from_reader(reader(rec, &idx).unwrap(), None).err().unwrap();
        match &error {
            DataError::InvalidRecord { key, .. } => assert_eq!(*key, case.key, "{error}"),
            other => panic!("expected an invalid record error, got {other:?}"),
        }
        assert!(error.to_string().contains(case.message), "{error}");
    }
}

#[test]
fn missing_identity_record_is_reported() {
    let (rec, idx) = meta_file([4.0, 6.0], &[[1.0, 3.0]], &[0.0, 0.0, 1.0]);
    let error = RecordDataset::from_reader(reader(rec, &idx).unwrap(), None).err().unwrap();
    assert!(matches!(error, DataError::InvalidRecord { key: 5, .. }), "{error}");
    assert!(error.to_string().contains("not in the index"), "{error}");
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = RecordDataset::open(&dir.path().join("absent")).err().unwrap();
    assert!(matches!(error, DataError::NotFound { .. }), "{error}");

    std::fs::write(dir.path().join("train.rec"), b"").unwrap();
    let error = RecordDataset::open(dir.path()).err().unwrap();
    match &error {
        DataError::NotFound { path, .. } => assert!(path.ends_with("train.idx")),
        other => panic!("expected not found, got {other:?}"),
    }
}

#[test]
fn bad_property_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["train.rec", "train.idx"] {
        let source = common::data_dir().join("rec_plain").join(name);
        std::fs::copy(source, dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("property"), "six,112,112\n").unwrap();
    let error = RecordDataset::open(dir.path()).err().unwrap();
    assert!(matches!(error, DataError::Property { .. }), "{error}");
    assert!(error.to_string().contains("six,112,112"), "{error}");
}

#[test]
fn zero_property_size_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["train.rec", "train.idx"] {
        let source = common::data_dir().join("rec_plain").join(name);
        std::fs::copy(source, dir.path().join(name)).unwrap();
    }
    let property = dir.path().join("property");
    for text in ["6,0,0\n", "6,112,0\n", "6,0,112\n"] {
        std::fs::write(&property, text).unwrap();
        for error in
            [RecordDataset::open(dir.path()).err().unwrap(), inspect(dir.path()).unwrap_err()]
        {
            assert!(matches!(error, DataError::Property { .. }), "{error}");
            let message = error.to_string();
            assert!(message.contains(&property.display().to_string()), "{message}");
            assert!(message.contains(text.trim()), "{message}");
            assert!(message.contains("at least 1 pixel"), "{message}");
        }
    }
}

#[test]
fn sparse_plain_labels_sort_by_label_then_key() {
    let payloads = [(5.0, b"a"), (2.0, b"b"), (5.0, b"c"), (9.0, b"d")];
    let mut rec = Vec::new();
    let mut idx = String::new();
    for (key, (label, data)) in payloads.iter().enumerate() {
        idx.push_str(&format!("{}\t{}\n", key * 10, rec.len()));
        rec.extend(raw_part(0, &image_payload(*label, key as u64, *data)));
    }
    let dataset = RecordDataset::from_reader(reader(rec, &idx).unwrap(), None).unwrap();
    let order: Vec<_> = (0..4).map(|i| dataset.read(i).unwrap().into_owned()).collect();
    assert_eq!(order, vec![b"b".to_vec(), b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    let labels: Vec<_> = (0..3).map(|i| dataset.identity_label(i)).collect();
    assert_eq!(labels, vec![2, 5, 9]);
    assert_eq!(dataset.key(3), 30);
}
