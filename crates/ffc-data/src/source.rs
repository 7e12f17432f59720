//! The [`FaceSource`] trait over labelled image collections, and [`open_source`].
//!
//! Images are numbered `0..len()` and grouped by identity: the images of identity `i` are the
//! contiguous range [`FaceSource::identity_images`], and identities are numbered
//! `0..num_identities()` in ascending label order.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{DataError, ImageFolder, RecordDataset};

/// A labelled collection of encoded face images.
///
/// Methods taking an image or identity index panic if it is out of range; bad data is reported
/// through [`FaceSource::read`].
pub trait FaceSource: Send + Sync {
    /// Returns the number of images.
    fn len(&self) -> usize;

    /// Returns whether the source has no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the number of identities.
    fn num_identities(&self) -> usize;

    /// Returns the identity index (`0..num_identities()`) of `image`.
    fn identity_of(&self, image: usize) -> usize;

    /// Returns the identity label of `image`, the class id used by the loss.
    fn label(&self, image: usize) -> u64 {
        self.identity_label(self.identity_of(image))
    }

    /// Returns the images of `identity`, a non-empty range.
    fn identity_images(&self, identity: usize) -> Range<usize>;

    /// Returns the label of `identity`.
    fn identity_label(&self, identity: usize) -> u64;

    /// Reads the encoded bytes of `image`.
    fn read(&self, image: usize) -> Result<Cow<'_, [u8]>, DataError>;

    /// Describes `image` for messages: its file path, or e.g. "`data/train.rec` key 17".
    fn describe(&self, image: usize) -> String;
}

/// Opens a training source: a RecordIO dataset or an image folder.
///
/// A folder holding `train.rec` and `train.idx` opens as a [`RecordDataset`], as does a path to
/// a `.rec` file or a `.idx` file with its partner file beside it. Any other folder opens as an
/// [`ImageFolder`]. A folder or file that has only one of the two RecordIO files, and a file of
/// any other type (including a `.bin` validation pack), are rejected.
pub fn open_source(path: &Path) -> Result<Arc<dyn FaceSource>, DataError> {
    const EXPECTED: &str = "an image folder, a folder with train.rec and train.idx, or a .rec \
                            or .idx file";
    match classify_path(path, EXPECTED)? {
        DataPath::Record { rec, idx } => Ok(Arc::new(RecordDataset::open_files(&rec, &idx)?)),
        DataPath::ImageFolder(folder) => Ok(Arc::new(ImageFolder::open(&folder)?)),
        DataPath::Pack(pack) => Err(DataError::UnsupportedFile {
            path: pack,
            expected: "an image folder, a folder with train.rec and train.idx, or a .rec or \
                       .idx file, because a .bin validation pack holds image pairs for \
                       evaluation, not a training set",
        }),
    }
}

/// The kind of data a path names, from its file extension or folder content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataPath {
    /// A RecordIO data file and its index, both present.
    Record {
        /// The `.rec` file.
        rec: PathBuf,
        /// The `.idx` file.
        idx: PathBuf,
    },
    /// A `.bin` validation pack.
    Pack(PathBuf),
    /// A folder without RecordIO files, read as an image folder.
    ImageFolder(PathBuf),
}

/// Returns the kind of data at `path`. `expected` lists the accepted kinds for error messages.
///
/// A `.rec` file pairs with the `.idx` file of the same stem and vice versa, and the extension
/// of the given file may be in any case. A folder pairs `train.rec` with `train.idx`. A missing
/// partner file is an error, so that a RecordIO folder with a lost index is not read as an
/// image folder.
pub(crate) fn classify_path(path: &Path, expected: &'static str) -> Result<DataPath, DataError> {
    if path.is_dir() {
        return classify_folder(path);
    }
    if !path.exists() {
        return Err(DataError::NotFound { path: path.to_path_buf(), expected });
    }

    let extension = path.extension().map(|ext| ext.to_string_lossy().to_ascii_lowercase());
    match extension.as_deref() {
        Some("rec") if path.is_file() => {
            record_pair(path.to_path_buf(), path.with_extension("idx"))
        }
        Some("idx") if path.is_file() => {
            record_pair(path.with_extension("rec"), path.to_path_buf())
        }
        Some("bin") if path.is_file() => Ok(DataPath::Pack(path.to_path_buf())),
        _ => Err(DataError::UnsupportedFile { path: path.to_path_buf(), expected }),
    }
}

fn classify_folder(folder: &Path) -> Result<DataPath, DataError> {
    let (rec, idx) = (folder.join("train.rec"), folder.join("train.idx"));
    if !rec.exists() && !idx.exists() {
        return Ok(DataPath::ImageFolder(folder.to_path_buf()));
    }
    record_pair(rec, idx)
}

/// Pairs a `.rec` file with its index, failing when either is missing.
fn record_pair(rec: PathBuf, idx: PathBuf) -> Result<DataPath, DataError> {
    if !idx.exists() {
        return Err(DataError::IncompleteRecordIo {
            missing: idx,
            present: rec,
            hint: "copy the index file that was written with the .rec file beside it, or \
                   rebuild it from the .rec file with MXNet's tools/rec2idx.py",
        });
    }
    if !rec.exists() {
        return Err(DataError::IncompleteRecordIo {
            missing: rec,
            present: idx,
            hint: "copy the .rec file that the index belongs to beside it",
        });
    }
    Ok(DataPath::Record { rec, idx })
}

/// Identity ranges over images sorted by identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityTable {
    /// `starts[i]..starts[i + 1]` are the images of identity `i`; the last entry is the image
    /// count. Strictly increasing, so no identity is empty.
    starts: Vec<usize>,
    /// Label of each identity, strictly increasing.
    labels: Vec<u64>,
}

impl IdentityTable {
    /// Builds the table from per-image labels that are already sorted (non-decreasing).
    pub(crate) fn from_sorted_labels(image_labels: impl IntoIterator<Item = u64>) -> Self {
        let mut starts = Vec::new();
        let mut labels = Vec::new();
        let mut count = 0;
        for label in image_labels {
            debug_assert!(labels.last().is_none_or(|&last| last <= label), "labels not sorted");
            if labels.last() != Some(&label) {
                starts.push(count);
                labels.push(label);
            }
            count += 1;
        }
        starts.push(count);
        Self { starts, labels }
    }

    /// Builds the table from the image count of each identity and its label.
    ///
    /// Panics if a count is zero or labels are not strictly increasing; callers validate first.
    pub(crate) fn from_counts(counts_and_labels: impl IntoIterator<Item = (usize, u64)>) -> Self {
        let mut starts = vec![0];
        let mut labels = Vec::new();
        for (count, label) in counts_and_labels {
            assert!(count > 0, "identity {label} has no images");
            assert!(labels.last().is_none_or(|&last| last < label), "labels not increasing");
            starts.push(starts.last().expect("starts is never empty") + count);
            labels.push(label);
        }
        Self { starts, labels }
    }

    pub(crate) fn num_images(&self) -> usize {
        *self.starts.last().expect("starts is never empty")
    }

    pub(crate) fn num_identities(&self) -> usize {
        self.labels.len()
    }

    pub(crate) fn images(&self, identity: usize) -> Range<usize> {
        self.starts[identity]..self.starts[identity + 1]
    }

    pub(crate) fn label(&self, identity: usize) -> u64 {
        self.labels[identity]
    }

    /// Returns the identity containing `image`; panics if `image` is out of range.
    pub(crate) fn identity_of(&self, image: usize) -> usize {
        assert!(image < self.num_images(), "image {image} out of range ({})", self.num_images());
        self.starts.partition_point(|&start| start <= image) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_groups_sorted_labels() {
        let table = IdentityTable::from_sorted_labels([3, 3, 5, 9, 9, 9]);
        assert_eq!(table.num_identities(), 3);
        assert_eq!(table.num_images(), 6);
        assert_eq!(table.images(0), 0..2);
        assert_eq!(table.images(2), 3..6);
        assert_eq!(table.label(1), 5);
        assert_eq!(table.identity_of(0), 0);
        assert_eq!(table.identity_of(2), 1);
        assert_eq!(table.identity_of(5), 2);
    }

    #[test]
    fn table_from_counts_matches_sorted_labels() {
        let counts = IdentityTable::from_counts([(2, 0), (1, 1), (3, 2)]);
        assert_eq!(counts, IdentityTable::from_sorted_labels([0, 0, 1, 2, 2, 2]));
    }

    #[test]
    fn empty_table_has_no_identities() {
        let table = IdentityTable::from_sorted_labels([]);
        assert_eq!(table.num_identities(), 0);
        assert_eq!(table.num_images(), 0);
    }
}
