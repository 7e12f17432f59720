//! insightface validation packs (`lfw.bin`, `cfp_fp.bin`, `agedb_30.bin`, …).
//!
//! A pack is a pickled 2-tuple `(images, issame)`. `images` contains `2 * P` encoded images, and
//! images `2i` and `2i + 1` form pair `i`. `issame` contains `P` flags, one per pair, that are
//! true when the pair shows one identity. The images may be stored as
//!
//! - Python 2 `str` (protocol 2, `BINSTRING`), as the widely distributed packs are;
//! - `_codecs.encode(str, 'latin1')` reductions, which Python 3 writes for `bytes` at protocol 2;
//! - `bytes` (protocols 3 to 5);
//! - numpy `uint8` arrays (the output of `cv2.imencode`), whose raw data is taken as the image.
//!
//! The pickle parser (serde-pickle 1.2) converts nested values recursively and copies every
//! memo reference. A pre-scan in the `pickle_scan` module therefore rejects pickles that nest
//! too deeply or expand too far before they reach the parser.

use std::path::Path;

use serde_pickle::{DeOptions, Value};

use crate::loader::decode_parallel;
use crate::pickle_scan::check_pickle;
use crate::recordio::read_existing;
use crate::{DataError, Preprocess};

/// A decoded validation pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationPack {
    /// Pack name: the file name without extension, e.g. `lfw`.
    pub name: String,
    /// Encoded images; images `2i` and `2i + 1` form pair `i`.
    pub images: Vec<Vec<u8>>,
    /// Whether pair `i` shows the same identity.
    pub issame: Vec<bool>,
}

impl ValidationPack {
    /// Reads and parses the pack at `path`; a pack without pairs is an error.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let bytes = read_existing(path, "a validation pack (.bin)")?;
        Self::from_bytes(path, &bytes)
    }

    /// Parses pack `bytes`; `path` names the pack and appears in error messages. A pack without
    /// pairs is an error, because no verification can run on it.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, DataError> {
        let pack = Self::parse(path, bytes)?;
        if pack.pairs() == 0 {
            return Err(DataError::InvalidPack {
                path: path.to_path_buf(),
                reason: "the pack contains no pairs (expected at least one image pair)".into(),
            });
        }
        Ok(pack)
    }

    /// Reads the pack at `path` like [`ValidationPack::open`], but accepts a pack without pairs.
    pub(crate) fn open_allow_empty(path: &Path) -> Result<Self, DataError> {
        let bytes = read_existing(path, "a validation pack (.bin)")?;
        Self::parse(path, &bytes)
    }

    /// Parses pack `bytes`, which may hold no pairs.
    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, DataError> {
        let invalid = |reason: String| DataError::InvalidPack { path: path.to_path_buf(), reason };
        check_pickle(bytes).map_err(invalid)?;
        let options = DeOptions::new().keep_restore_state().replace_unresolved_globals();
        let value = serde_pickle::value_from_slice(bytes, options)
            .map_err(|source| DataError::Pickle { path: path.to_path_buf(), source })?;

        let (images, flags) = split_pair(value).map_err(invalid)?;
        let images = images
            .into_iter()
            .enumerate()
            .map(|(index, item)| image_bytes(item).map_err(|kind| image_error(index, &kind)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let issame = flags
            .into_iter()
            .enumerate()
            .map(|(index, item)| flag_value(&item).ok_or_else(|| flag_error(index, &item)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        check_counts(images.len(), issame.len()).map_err(invalid)?;

        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { name, images, issame })
    }

    /// Returns the number of pairs.
    pub fn pairs(&self) -> usize {
        self.issame.len()
    }

    /// Returns the two encoded images of pair `index` and its flag.
    pub fn pair(&self, index: usize) -> (&[u8], &[u8], bool) {
        (&self.images[2 * index], &self.images[2 * index + 1], self.issame[index])
    }

    /// Decodes every image in parallel into one `[2 * pairs, 3, height, width]` array.
    pub fn load(&self, preprocess: &Preprocess, flip: bool) -> Result<Vec<f32>, DataError> {
        decode_parallel(self.images.len(), preprocess, |index, out| {
            preprocess.decode_into(&self.images[index], flip, out).map_err(|error| {
                DataError::decode(format!("{} of pack `{}`", index, self.name), error)
            })
        })
    }
}

/// Splits the top-level `(images, issame)` tuple into its two sequences.
fn split_pair(value: Value) -> Result<(Vec<Value>, Vec<Value>), String> {
    let expected = "expected a pickled 2-tuple (list of images, list of bools)";
    let items = match value {
        Value::Tuple(items) | Value::List(items) if items.len() == 2 => items,
        other => return Err(format!("{expected}, found {}", describe(&other))),
    };
    let mut items = items.into_iter();
    let images = items.next().expect("two items");
    let flags = items.next().expect("two items");
    match (images, flags) {
        (Value::List(images) | Value::Tuple(images), Value::List(flags) | Value::Tuple(flags)) => {
            Ok((images, flags))
        }
        (images, flags) => Err(format!(
            "{expected}, found a 2-tuple of ({}, {})",
            describe(&images),
            describe(&flags)
        )),
    }
}

/// Extracts encoded image bytes from one list entry; the error describes what was found.
fn image_bytes(value: Value) -> Result<Vec<u8>, String> {
    let bytes = match value {
        Value::Bytes(bytes) => bytes,
        Value::String(text) => latin1_bytes(&text).ok_or("a string with non-latin-1 characters")?,
        Value::Tuple(state) => numpy_data(state).ok_or("an object without a byte buffer")?,
        other => return Err(describe(&other)),
    };
    if bytes.is_empty() {
        return Err("an empty byte string".into());
    }
    Ok(bytes)
}

/// Returns the raw data of a pickled numpy array: the only byte string among its restore
/// arguments, e.g. the last entry of the `(version, shape, dtype, fortran, data)` state.
fn numpy_data(state: Vec<Value>) -> Option<Vec<u8>> {
    let mut buffers = state.into_iter().filter_map(|item| match item {
        Value::Bytes(bytes) => Some(bytes),
        _ => None,
    });
    let data = buffers.next()?;
    buffers.next().is_none().then_some(data)
}

/// Encodes a string whose characters are all below U+0100 as latin-1 bytes.
fn latin1_bytes(text: &str) -> Option<Vec<u8>> {
    text.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// Reads one `issame` entry: a bool, the integer 0 or 1, or a pickled numpy bool.
fn flag_value(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        Value::I64(0) => Some(false),
        Value::I64(1) => Some(true),
        Value::Tuple(items) => match items.last()? {
            Value::Bytes(bytes) if bytes.len() == 1 && bytes[0] <= 1 => Some(bytes[0] == 1),
            _ => None,
        },
        _ => None,
    }
}

fn check_counts(images: usize, flags: usize) -> Result<(), String> {
    if images % 2 == 1 {
        return Err(format!("{images} images is odd; images 2i and 2i+1 must form pair i"));
    }
    if flags != images / 2 {
        return Err(format!(
            "{images} images form {} pairs but the issame list has {flags} entries (it must \
             have one per pair)",
            images / 2
        ));
    }
    Ok(())
}

fn image_error(index: usize, found: &str) -> String {
    format!("image {index} is {found}, expected encoded image bytes")
}

fn flag_error(index: usize, found: &Value) -> String {
    format!("issame entry {index} is {}, expected a bool", describe(found))
}

/// Names the Python type of `value` for messages.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::I64(_) | Value::Int(_) => "an int",
        Value::F64(_) => "a float",
        Value::Bytes(_) => "a byte string",
        Value::String(_) => "a string",
        Value::List(items) => return format!("a list of {} items", items.len()),
        Value::Tuple(items) => return format!("a tuple of {} items", items.len()),
        Value::Set(_) | Value::FrozenSet(_) => "a set",
        Value::Dict(_) => "a dict",
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_round_trips_high_bytes() {
        let text: String = [0xffu8, 0xd8, 0x00, 0x41].iter().map(|&b| char::from(b)).collect();
        assert_eq!(latin1_bytes(&text), Some(vec![0xff, 0xd8, 0x00, 0x41]));
        assert_eq!(latin1_bytes("\u{100}"), None);
    }

    #[test]
    fn numpy_state_yields_its_buffer() {
        let state = vec![
            Value::I64(1),
            Value::Tuple(vec![Value::I64(3)]),
            Value::Tuple(vec![Value::I64(3), Value::Bytes(b"|".to_vec())]),
            Value::Bool(false),
            Value::Bytes(vec![1, 2, 3]),
        ];
        assert_eq!(numpy_data(state), Some(vec![1, 2, 3]));
        assert_eq!(numpy_data(vec![Value::Bytes(vec![1]), Value::Bytes(vec![2])]), None);
    }

    #[test]
    fn counts_must_pair_up() {
        assert!(check_counts(4, 2).is_ok());
        assert!(check_counts(3, 1).unwrap_err().contains("odd"));
        assert!(check_counts(4, 3).unwrap_err().contains("3 entries"));
    }
}
