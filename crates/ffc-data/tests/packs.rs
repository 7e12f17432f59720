//! Validation packs: the four pickle variants of the fixture pack, and malformed packs.

mod common;

use std::path::Path;

use ffc_data::{DataError, Preprocess, ValidationPack, inspect};
use serde_pickle::{SerOptions, Value};

const PACKS: [&str; 4] =
    ["pairs_py2.bin", "pairs_p2_codecs.bin", "pairs_p4.bin", "pairs_numpy.bin"];

fn open(name: &str) -> ValidationPack {
    ValidationPack::open(&common::data_dir().join(name)).unwrap()
}

/// Returns the `issame` flags recorded in `pairs.json`.
fn expected_flags() -> Vec<bool> {
    let text = std::fs::read_to_string(common::data_dir().join("pairs.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pairs = json["pairs"].as_array().unwrap();
    pairs.iter().map(|pair| pair[2].as_bool().unwrap()).collect()
}

#[test]
fn four_variants_hold_identical_packs() {
    let reference = open(PACKS[0]);
    assert_eq!(reference.pairs(), 40);
    assert_eq!(reference.images.len(), 80);
    for name in &PACKS[1..] {
        let pack = open(name);
        assert_eq!(pack.images, reference.images, "{name}");
        assert_eq!(pack.issame, reference.issame, "{name}");
    }
}

#[test]
fn flags_match_pairs_json() {
    let flags = expected_flags();
    assert_eq!(flags.len(), 40);
    for name in PACKS {
        assert_eq!(open(name).issame, flags, "{name}");
    }
    assert_eq!(flags.iter().filter(|&&same| same).count(), 20);
}

#[test]
fn pack_name_is_file_stem() {
    assert_eq!(open("pairs_p4.bin").name, "pairs_p4");
}

#[test]
fn pack_images_decode() {
    let pack = open("pairs_numpy.bin");
    let (first, second, _) = pack.pair(3);
    assert_eq!(&first[..2], &[0xff, 0xd8]);
    assert_eq!(&second[..2], &[0xff, 0xd8]);

    let preprocess = Preprocess::default();
    let all = pack.load(&preprocess, false).unwrap();
    assert_eq!(all.len(), 80 * preprocess.image_len());
    let image_7 = preprocess.decode(&pack.images[7], false).unwrap();
    assert_eq!(&all[7 * preprocess.image_len()..8 * preprocess.image_len()], image_7.as_slice());
}

fn pack_bytes(value: &Value) -> Vec<u8> {
    serde_pickle::value_to_vec(value, SerOptions::new()).unwrap()
}

fn parse(value: &Value) -> Result<ValidationPack, DataError> {
    ValidationPack::from_bytes(Path::new("bad.bin"), &pack_bytes(value))
}

fn image(byte: u8) -> Value {
    Value::Bytes(vec![0xff, 0xd8, byte])
}

fn invalid_reason(result: Result<ValidationPack, DataError>) -> String {
    match result {
        Err(error @ DataError::InvalidPack { .. }) => {
            let message = error.to_string();
            assert!(message.contains("bad.bin"), "{message}");
            message
        }
        other => panic!("expected an invalid pack error, got {other:?}"),
    }
}

#[test]
fn written_pack_round_trips() {
    let value = Value::Tuple(vec![
        Value::List(vec![image(1), image(2), image(3), image(4)]),
        Value::List(vec![Value::Bool(true), Value::Bool(false)]),
    ]);
    let pack = parse(&value).unwrap();
    assert_eq!(pack.images[2], vec![0xff, 0xd8, 3]);
    assert_eq!(pack.issame, vec![true, false]);
}

#[test]
fn non_tuple_is_rejected() {
    let reason = invalid_reason(parse(&Value::List(vec![image(1)])));
    assert!(reason.contains("2-tuple"), "{reason}");
    let reason = invalid_reason(parse(&Value::Tuple(vec![image(1), Value::List(vec![])])));
    assert!(reason.contains("a byte string"), "{reason}");
}

#[test]
fn odd_image_count_is_rejected() {
    let value = Value::Tuple(vec![
        Value::List(vec![image(1), image(2), image(3)]),
        Value::List(vec![Value::Bool(true)]),
    ]);
    let reason = invalid_reason(parse(&value));
    assert!(reason.contains("3 images is odd"), "{reason}");
}

#[test]
fn flag_count_mismatch_is_rejected() {
    let value = Value::Tuple(vec![
        Value::List(vec![image(1), image(2)]),
        Value::List(vec![Value::Bool(true), Value::Bool(false)]),
    ]);
    let reason = invalid_reason(parse(&value));
    assert!(reason.contains("1 pairs but the issame list has 2 entries"), "{reason}");
}

#[test]
fn wrong_entry_types_are_rejected() {
    let value = Value::Tuple(vec![
        Value::List(vec![image(1), Value::I64(5)]),
        Value::List(vec![Value::Bool(true)]),
    ]);
    let reason = invalid_reason(parse(&value));
    assert!(reason.contains("image 1 is an int"), "{reason}");

    let value = Value::Tuple(vec![
        Value::List(vec![image(1), image(2)]),
        Value::List(vec![Value::String("yes".into())]),
    ]);
    let reason = invalid_reason(parse(&value));
    assert!(reason.contains("issame entry 0 is a string"), "{reason}");

    let value = Value::Tuple(vec![
        Value::List(vec![image(1), Value::Bytes(vec![])]),
        Value::List(vec![Value::Bool(true)]),
    ]);
    let reason = invalid_reason(parse(&value));
    assert!(reason.contains("image 1 is an empty byte string"), "{reason}");
}

#[test]
fn integer_flags_are_accepted() {
    let value = Value::Tuple(vec![
        Value::List(vec![image(1), image(2), image(3), image(4)]),
        Value::List(vec![Value::I64(1), Value::I64(0)]),
    ]);
    assert_eq!(parse(&value).unwrap().issame, vec![true, false]);
}

#[test]
fn garbage_is_a_pickle_error() {
    let error = ValidationPack::from_bytes(Path::new("bad.bin"), b"not a pickle").unwrap_err();
    assert!(matches!(error, DataError::Pickle { .. }), "{error}");
    let error = ValidationPack::from_bytes(Path::new("bad.bin"), &[]).unwrap_err();
    assert!(matches!(error, DataError::Pickle { .. }), "{error}");
}

#[test]
fn truncated_pack_is_a_pickle_error() {
    let bytes = std::fs::read(common::data_dir().join("pairs_py2.bin")).unwrap();
    let error = ValidationPack::from_bytes(Path::new("bad.bin"), &bytes[..bytes.len() / 2]);
    assert!(matches!(error, Err(DataError::Pickle { .. })), "{error:?}");
}

#[test]
fn missing_pack_is_named() {
    let error = ValidationPack::open(Path::new("no/such/lfw.bin")).unwrap_err();
    assert!(matches!(error, DataError::NotFound { .. }), "{error}");
    assert!(error.to_string().contains("no/such/lfw.bin"), "{error}");
}

#[test]
fn empty_pack_is_rejected_but_inspected() {
    let empty = pack_bytes(&Value::Tuple(vec![Value::List(vec![]), Value::List(vec![])]));
    let reason = invalid_reason(ValidationPack::from_bytes(Path::new("bad.bin"), &empty));
    assert!(reason.contains("contains no pairs"), "{reason}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.bin");
    std::fs::write(&path, &empty).unwrap();
    let error = ValidationPack::open(&path).unwrap_err();
    assert!(matches!(error, DataError::InvalidPack { .. }), "{error}");
    assert!(error.to_string().contains("empty.bin"), "{error}");

    let report = inspect(&path).unwrap();
    assert_eq!(report.images, 0);
    assert_eq!(report.pairs, Some(0));
    assert_eq!(report.image_size, None);
}

/// Returns a protocol 4 pickle of `depth` nested lists, as Python writes `[[[...]]]`: each list
/// is created and memoized, and its child is appended after it is complete.
fn nested_lists(depth: usize) -> Vec<u8> {
    let mut bytes = vec![0x80, 4];
    for _ in 0..depth {
        bytes.extend([b']', 0x94]);
    }
    bytes.extend(std::iter::repeat_n(b'a', depth - 1));
    bytes.push(b'.');
    bytes
}

#[test]
fn deeply_nested_pickle_is_rejected() {
    let bytes = nested_lists(20_000);
    assert!(bytes.len() < 64 * 1024);
    let reason = invalid_reason(ValidationPack::from_bytes(Path::new("bad.bin"), &bytes));
    assert!(reason.contains("more than 256 levels deep"), "{reason}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.bin");
    std::fs::write(&path, &bytes).unwrap();
    let error = inspect(&path).unwrap_err();
    assert!(error.to_string().contains("deep.bin"), "{error}");
    assert!(error.to_string().contains("levels deep"), "{error}");
}

#[test]
fn nesting_at_the_limit_reaches_the_parser() {
    // 100 lists and 99 memo references between them are 199 levels.
    let reason =
        invalid_reason(ValidationPack::from_bytes(Path::new("bad.bin"), &nested_lists(100)));
    assert!(reason.contains("expected a pickled 2-tuple"), "{reason}");
}

#[test]
fn doubling_memo_references_are_rejected() {
    // x0 = b"ab"; x_i = (x_(i-1), x_(i-1)) for 60 levels: 2^60 values after expansion.
    let mut bytes = vec![0x80, 4, b'C', 2, b'a', b'b', 0x94];
    for id in 0..60u32 {
        bytes.extend([b'0', b'j']);
        bytes.extend(id.to_le_bytes());
        bytes.push(b'j');
        bytes.extend(id.to_le_bytes());
        bytes.extend([0x86, 0x94]);
    }
    bytes.push(b'.');
    let reason = invalid_reason(ValidationPack::from_bytes(Path::new("bad.bin"), &bytes));
    assert!(reason.contains("expands to more than"), "{reason}");
}
