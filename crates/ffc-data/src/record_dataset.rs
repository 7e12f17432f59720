//! RecordIO training sets in the insightface and plain `im2rec` layouts.
//!
//! **insightface layout** (`faces_emore`, `ms1m-retinaface`, `glint360k`): record 0 is a meta
//! record with `flag = 2`, labels `[a, b]` and no image. Keys `1..a` are images grouped by
//! identity in ascending label order, and each key `k` in `a..b` is an identity record whose two
//! labels are the image-key range `[start, end)` of identity `k - a`. Identity `i` has label
//! `i`. The identity ranges are read directly, without touching the image records.
//!
//! **plain layout** (`im2rec`): every record is an image with a scalar label (or a label array
//! whose first entry is the class). Identities are found by reading every record header, and
//! images are ordered by label, then by key.
//!
//! Labels are float32 on disk, so class labels at or above 2^24 are rejected (see
//! [`MAX_EXACT_LABEL`]).

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::recordio::{Record, RecordReader, read_existing};
use crate::source::IdentityTable;
use crate::{DataError, FaceSource};

/// Exclusive upper bound of class labels, 2^24. float32 represents every integer up to 2^24 but
/// not 2^24 + 1, so a label read as 2^24 may have been written as 2^24 + 1.
pub const MAX_EXACT_LABEL: u64 = 1 << 24;

/// Dataset layout of a `.rec` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordLayout {
    /// insightface: a meta record at key 0, images, then identity records.
    Meta,
    /// Plain `im2rec`: every record is an image.
    Plain,
}

/// The content of a `property` file, `<num_classes>,<height>,<width>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Property {
    /// Number of identities.
    pub num_classes: u64,
    /// Image height in pixels.
    pub height: u32,
    /// Image width in pixels.
    pub width: u32,
}

/// A RecordIO training set opened for reading.
pub struct RecordDataset {
    reader: RecordReader,
    layout: RecordLayout,
    image_keys: ImageKeys,
    identities: IdentityTable,
    property: Option<Property>,
}

/// Record key of each image index.
enum ImageKeys {
    /// Images `0..count` are keys `first..first + count`.
    Contiguous { first: u64, count: usize },
    /// Arbitrary keys, in image order.
    Listed(Vec<u64>),
}

impl ImageKeys {
    fn key(&self, image: usize) -> u64 {
        match self {
            Self::Contiguous { first, count } => {
                assert!(image < *count, "image {image} out of range ({count})");
                first + image as u64
            }
            Self::Listed(keys) => keys[image],
        }
    }
}

impl RecordDataset {
    /// Opens `dir/train.rec` with `dir/train.idx`, and `dir/property` when present.
    pub fn open(dir: &Path) -> Result<Self, DataError> {
        if !dir.is_dir() {
            return Err(DataError::NotFound {
                path: dir.to_path_buf(),
                expected: "a folder with train.rec and train.idx",
            });
        }
        Self::open_files(&dir.join("train.rec"), &dir.join("train.idx"))
    }

    /// Opens `rec` with its index `idx`, and the `property` file beside `rec` when present.
    pub fn open_files(rec: &Path, idx: &Path) -> Result<Self, DataError> {
        let reader = RecordReader::open(rec, idx)?;
        let property_path = rec.with_file_name("property");
        let property =
            if property_path.is_file() { Some(read_property(&property_path)?) } else { None };
        Self::from_reader(reader, property)
    }

    /// Detects the layout of `reader` and builds the identity table.
    pub fn from_reader(
        reader: RecordReader,
        property: Option<Property>,
    ) -> Result<Self, DataError> {
        if reader.is_empty() {
            return Err(DataError::IndexLine {
                path: reader.idx_path().to_path_buf(),
                line: 1,
                reason: "the index lists no records (expected `<key>\\t<offset>` lines)".into(),
            });
        }

        let meta = read_meta_record(&reader)?;
        let (layout, image_keys, identities) = match meta {
            Some((first_identity, end_identity)) => {
                open_meta(&reader, first_identity, end_identity)?
            }
            None => open_plain(&reader)?,
        };
        let dataset = Self { reader, layout, image_keys, identities, property };
        dataset.check_property();
        Ok(dataset)
    }

    /// Returns the detected layout.
    pub fn layout(&self) -> RecordLayout {
        self.layout
    }

    /// Returns the `property` file's content, if one was read.
    pub fn property(&self) -> Option<Property> {
        self.property
    }

    /// Returns the underlying record reader.
    pub fn reader(&self) -> &RecordReader {
        &self.reader
    }

    /// Returns the record key of `image`.
    pub fn key(&self, image: usize) -> u64 {
        self.image_keys.key(image)
    }

    /// Warns when the `property` file disagrees with the records.
    fn check_property(&self) {
        let Some(property) = self.property else { return };
        let identities = self.identities.num_identities() as u64;
        if property.num_classes != identities {
            tracing::warn!(
                rec = %self.reader.rec_path().display(),
                property_classes = property.num_classes,
                identities,
                "the property file's class count differs from the identities in the records; \
                 using the records"
            );
        }
    }
}

impl FaceSource for RecordDataset {
    fn len(&self) -> usize {
        self.identities.num_images()
    }

    fn num_identities(&self) -> usize {
        self.identities.num_identities()
    }

    fn identity_of(&self, image: usize) -> usize {
        self.identities.identity_of(image)
    }

    fn identity_images(&self, identity: usize) -> Range<usize> {
        self.identities.images(identity)
    }

    fn identity_label(&self, identity: usize) -> u64 {
        self.identities.label(identity)
    }

    fn read(&self, image: usize) -> Result<Cow<'_, [u8]>, DataError> {
        let key = self.image_keys.key(image);
        let Record { data, .. } = self.reader.read(key)?;
        if data.is_empty() {
            return Err(self.reader.invalid(
                key,
                "image record holds no image bytes after its header (rebuild the .rec file)",
            ));
        }
        Ok(data)
    }

    fn describe(&self, image: usize) -> String {
        format!("`{}` key {}", self.reader.rec_path().display(), self.image_keys.key(image))
    }
}

/// Returns the meta record's `[a, b)` when record 0 is an insightface meta record.
///
/// A meta record has a label array of at least two entries and no image bytes. The missing
/// image distinguishes it from an `im2rec --pack-label` image record, which also has a label
/// array.
fn read_meta_record(reader: &RecordReader) -> Result<Option<(u64, u64)>, DataError> {
    if !reader.contains(0) {
        return Ok(None);
    }
    let record = reader.read(0)?;
    if record.header.flag < 2 || !record.data.is_empty() {
        return Ok(None);
    }

    let first_identity = key_label(reader, 0, record.header.label[0])?;
    let end_identity = key_label(reader, 0, record.header.label[1])?;
    if first_identity < 2 || end_identity <= first_identity {
        let reason = format!(
            "meta record labels [{first_identity}, {end_identity}) must satisfy 2 <= a < b \
             (images at keys 1..a, identity records at keys a..b)"
        );
        return Err(reader.invalid(0, &reason));
    }
    Ok(Some((first_identity, end_identity)))
}

/// Builds the image keys and identity table of an insightface layout from its identity
/// records, falling back to a scan of the image labels when the keys are too large for exact
/// float32 storage.
fn open_meta(
    reader: &RecordReader,
    first_identity: u64,
    end_identity: u64,
) -> Result<(RecordLayout, ImageKeys, IdentityTable), DataError> {
    if end_identity >= MAX_EXACT_LABEL {
        tracing::warn!(
            rec = %reader.rec_path().display(),
            end_identity,
            "meta record keys reach 2^24, where float32 key ranges may be rounded; reading \
             every image label instead"
        );
        let keys = (1..).take_while(|&key| reader.contains(key));
        let (image_keys, identities) = scan_labels(reader, keys, true)?;
        if identities.num_identities() == 0 {
            return Err(reader.invalid(0, "the meta record is followed by no image records"));
        }
        return Ok((RecordLayout::Meta, image_keys, identities));
    }

    let counts = read_identity_ranges(reader, first_identity, end_identity)?;
    if !contains_all(reader, 1..first_identity) {
        let reason = format!(
            "the index does not list every image key 1..{first_identity} that the meta record \
             declares (the .idx file is incomplete)"
        );
        return Err(reader.invalid(0, &reason));
    }

    let identities =
        IdentityTable::from_counts(counts.into_iter().enumerate().map(|(i, n)| (n, i as u64)));
    let image_keys = ImageKeys::Contiguous { first: 1, count: identities.num_images() };
    check_first_and_last_labels(reader, &identities)?;
    Ok((RecordLayout::Meta, image_keys, identities))
}

/// Reads identity records `first_identity..end_identity` and returns each identity's image
/// count, checking that the ranges tile the image keys `1..first_identity` in order.
fn read_identity_ranges(
    reader: &RecordReader,
    first_identity: u64,
    end_identity: u64,
) -> Result<Vec<usize>, DataError> {
    // The index length bounds the allocation when the meta record is corrupt.
    let declared = (end_identity - first_identity) as usize;
    let mut counts = Vec::with_capacity(declared.min(reader.len()));
    let mut expected_start = 1;
    for key in first_identity..end_identity {
        let record = reader.read(key)?;
        if record.header.flag < 2 {
            let reason = format!(
                "identity record has flag {} but must carry a label array [start, end) (flag 2)",
                record.header.flag
            );
            return Err(reader.invalid(key, &reason));
        }
        let start = key_label(reader, key, record.header.label[0])?;
        let end = key_label(reader, key, record.header.label[1])?;
        if start != expected_start || end <= start || end > first_identity {
            let reason = format!(
                "identity record range [{start}, {end}) must start at key {expected_start}, be \
                 non-empty and end at or before key {first_identity} (the first identity record)"
            );
            return Err(reader.invalid(key, &reason));
        }
        counts.push((end - start) as usize);
        expected_start = end;
    }

    if expected_start != first_identity {
        let reason = format!(
            "identity records cover image keys 1..{expected_start} but the meta record declares \
             images at keys 1..{first_identity}"
        );
        return Err(reader.invalid(0, &reason));
    }
    Ok(counts)
}

/// Checks that the first image of the first and last identity carries that identity's label,
/// which catches a meta record that does not match its images without reading them all.
fn check_first_and_last_labels(
    reader: &RecordReader,
    identities: &IdentityTable,
) -> Result<(), DataError> {
    let last = identities.num_identities() - 1;
    for identity in [0, last] {
        let key = 1 + identities.images(identity).start as u64;
        let record = reader.read(key)?;
        let label = class_label(reader, key, record.header.class_label())?;
        if label != identity as u64 {
            let reason = format!(
                "image label {label} differs from identity {identity}, whose range the identity \
                 records give; the meta record does not match the images"
            );
            return Err(reader.invalid(key, &reason));
        }
    }
    Ok(())
}

/// Builds a plain layout by reading the label of every record.
fn open_plain(
    reader: &RecordReader,
) -> Result<(RecordLayout, ImageKeys, IdentityTable), DataError> {
    let keys: Vec<u64> = reader.keys().collect();
    let (image_keys, identities) = scan_labels(reader, keys.into_iter(), false)?;
    Ok((RecordLayout::Plain, image_keys, identities))
}

/// Reads the class label of every key and orders the images by (label, key).
///
/// With `stop_at_identity_record`, the scan ends at the first record shaped like an identity
/// record (a label array and no image), which is where an insightface file's images end.
fn scan_labels(
    reader: &RecordReader,
    keys: impl Iterator<Item = u64>,
    stop_at_identity_record: bool,
) -> Result<(ImageKeys, IdentityTable), DataError> {
    let mut labelled = Vec::new();
    for key in keys {
        let record = reader.read(key)?;
        if stop_at_identity_record && record.header.flag >= 2 && record.data.is_empty() {
            break;
        }
        let label = class_label(reader, key, record.header.class_label())?;
        labelled.push((label, key));
    }
    // Keys ascend already, so a stable sort by label keeps key order within an identity.
    labelled.sort_by_key(|&(label, _)| label);

    let identities = IdentityTable::from_sorted_labels(labelled.iter().map(|&(label, _)| label));
    let image_keys = ImageKeys::Listed(labelled.into_iter().map(|(_, key)| key).collect());
    Ok((image_keys, identities))
}

/// Converts a float32 class label to an integer, rejecting fractions, negatives and values at
/// or above 2^24.
fn class_label(reader: &RecordReader, key: u64, value: f32) -> Result<u64, DataError> {
    let label = key_label(reader, key, value)?;
    if label >= MAX_EXACT_LABEL {
        return Err(DataError::LabelTooLarge {
            path: reader.rec_path().to_path_buf(),
            key,
            label: value,
        });
    }
    Ok(label)
}

/// Converts a float32 label holding a key or count to an integer.
fn key_label(reader: &RecordReader, key: u64, value: f32) -> Result<u64, DataError> {
    if !(value.is_finite() && value >= 0.0 && value.fract() == 0.0) {
        let reason = format!("label {value} is not a non-negative integer");
        return Err(reader.invalid(key, &reason));
    }
    Ok(value as u64)
}

/// Returns whether the index lists every key in `keys`.
fn contains_all(reader: &RecordReader, keys: Range<u64>) -> bool {
    reader.count_keys_in(keys.clone()) == keys.end.saturating_sub(keys.start)
}

/// Parses a `property` file, rejecting a zero height or width.
pub fn read_property(path: &Path) -> Result<Property, DataError> {
    let bytes = read_existing(path, "a property file `<num_classes>,<height>,<width>`")?;
    let text = String::from_utf8_lossy(&bytes);
    let first_line = text.lines().next().unwrap_or("").trim().to_string();
    parse_property(&first_line).map_err(|reason| DataError::Property {
        path: PathBuf::from(path),
        text: first_line,
        reason,
    })
}

/// Parses `<num_classes>,<height>,<width>`; the error is the reason for the message.
fn parse_property(line: &str) -> Result<Property, &'static str> {
    const FORMAT: &str = "expected `<num_classes>,<height>,<width>`";
    let mut fields = line.split(',').map(str::trim);
    let mut next_number = || fields.next().and_then(|field| field.parse().ok()).ok_or(FORMAT);
    let num_classes = next_number()?;
    let height = u32::try_from(next_number()?).map_err(|_| FORMAT)?;
    let width = u32::try_from(next_number()?).map_err(|_| FORMAT)?;
    if fields.next().is_some() {
        return Err(FORMAT);
    }
    if height == 0 || width == 0 {
        return Err("the image height and width must be at least 1 pixel");
    }
    Ok(Property { num_classes, height, width })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_parses_three_fields() {
        let property = parse_property("93431,112,112").unwrap();
        assert_eq!(property, Property { num_classes: 93431, height: 112, width: 112 });
        assert!(parse_property("1,2").unwrap_err().contains("expected"));
        assert!(parse_property("1,2,3,4").unwrap_err().contains("expected"));
        assert!(parse_property("a,2,3").unwrap_err().contains("expected"));
        assert!(parse_property("1,2,4294967296").unwrap_err().contains("expected"));
    }

    #[test]
    fn property_rejects_zero_sizes() {
        for line in ["6,0,0", "6,112,0", "6,0,112"] {
            let reason = parse_property(line).unwrap_err();
            assert!(reason.contains("at least 1 pixel"), "{line}: {reason}");
        }
    }
}
