//! Random access to a `.rec` file through its `.idx` file.
//!
//! The `.rec` file is memory-mapped, so opening a multi-gigabyte dataset costs only the parse
//! of the `.idx` text. Frames are checked when they are read, not at open time.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::frame::parse_frame;
use super::header::IrHeader;
use crate::DataError;

/// A `.rec` file with its `.idx` key → byte offset table.
pub struct RecordReader {
    rec_path: PathBuf,
    idx_path: PathBuf,
    bytes: RecBytes,
    index: KeyIndex,
}

/// An image record: its header and the encoded image after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// The record header.
    pub header: IrHeader,
    /// The bytes after the header and label array, normally an encoded image.
    pub data: Cow<'a, [u8]>,
}

/// The `.rec` content, mapped from disk or held in memory.
enum RecBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for RecBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Owned(bytes) => bytes,
        }
    }
}

/// Record keys and frame offsets, sorted by key.
enum KeyIndex {
    /// Keys `first..first + offsets.len()`, the common case, stored without the keys.
    Dense { first: u64, offsets: Vec<u64> },
    /// Any other key set, as sorted `(key, offset)` pairs.
    Sparse(Vec<(u64, u64)>),
}

impl RecordReader {
    /// Opens `rec` and its index `idx`.
    ///
    /// Fails when either file is missing or unreadable, when an index line does not read
    /// `<key>\t<offset>`, when a key repeats, or when an offset lies past the end of `rec`.
    pub fn open(rec: &Path, idx: &Path) -> Result<Self, DataError> {
        let idx_text = read_existing(idx, "a RecordIO index file (.idx)")?;
        let bytes = map_existing(rec)?;
        Self::build(rec.to_path_buf(), idx.to_path_buf(), bytes, &idx_text)
    }

    /// Builds a reader over in-memory `.rec` bytes and `.idx` text.
    ///
    /// `rec_path` and `idx_path` only name the data in error messages. This is the entry point
    /// for tests and fuzzing, which would otherwise have to write files.
    pub fn from_bytes(
        rec_path: impl Into<PathBuf>,
        idx_path: impl Into<PathBuf>,
        rec: Vec<u8>,
        idx_text: &[u8],
    ) -> Result<Self, DataError> {
        Self::build(rec_path.into(), idx_path.into(), RecBytes::Owned(rec), idx_text)
    }

    fn build(
        rec_path: PathBuf,
        idx_path: PathBuf,
        bytes: RecBytes,
        idx_text: &[u8],
    ) -> Result<Self, DataError> {
        let entries = parse_index(&idx_path, idx_text, bytes.len() as u64)?;
        let index = KeyIndex::new(entries).map_err(|key| DataError::IndexLine {
            path: idx_path.clone(),
            line: repeated_key_line(idx_text, key),
            reason: format!("key {key} appears more than once (keys must be unique)"),
        })?;
        Ok(Self { rec_path, idx_path, bytes, index })
    }

    /// Returns the number of records listed in the index.
    pub fn len(&self) -> usize {
        match &self.index {
            KeyIndex::Dense { offsets, .. } => offsets.len(),
            KeyIndex::Sparse(entries) => entries.len(),
        }
    }

    /// Returns whether the index lists no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the record keys in ascending order.
    pub fn keys(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        match &self.index {
            KeyIndex::Dense { first, offsets } => {
                Box::new((0..offsets.len() as u64).map(move |i| first + i))
            }
            KeyIndex::Sparse(entries) => Box::new(entries.iter().map(|&(key, _)| key)),
        }
    }

    /// Returns the byte offset of record `key`, if the index lists it.
    pub fn offset(&self, key: u64) -> Option<u64> {
        match &self.index {
            KeyIndex::Dense { first, offsets } => {
                let position = key.checked_sub(*first)?;
                offsets.get(usize::try_from(position).ok()?).copied()
            }
            KeyIndex::Sparse(entries) => {
                let position = entries.binary_search_by_key(&key, |&(k, _)| k).ok()?;
                Some(entries[position].1)
            }
        }
    }

    /// Returns how many keys in `keys` the index lists.
    pub fn count_keys_in(&self, keys: std::ops::Range<u64>) -> u64 {
        match &self.index {
            KeyIndex::Dense { first, offsets } => {
                let end = first + offsets.len() as u64;
                keys.end.min(end).saturating_sub(keys.start.max(*first))
            }
            KeyIndex::Sparse(entries) => {
                let start = entries.partition_point(|&(k, _)| k < keys.start);
                let end = entries.partition_point(|&(k, _)| k < keys.end);
                end.saturating_sub(start) as u64
            }
        }
    }

    /// Returns whether the index lists record `key`.
    pub fn contains(&self, key: u64) -> bool {
        self.offset(key).is_some()
    }

    /// Returns the `.rec` path.
    pub fn rec_path(&self) -> &Path {
        &self.rec_path
    }

    /// Returns the `.idx` path.
    pub fn idx_path(&self) -> &Path {
        &self.idx_path
    }

    /// Returns the size of the `.rec` data in bytes.
    pub fn rec_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Reads the full payload of record `key`, re-joining multi-part records.
    pub fn read_payload(&self, key: u64) -> Result<Cow<'_, [u8]>, DataError> {
        let offset = self.offset(key).ok_or_else(|| self.invalid(key, "key not in the index"))?;
        // Offsets were checked against the file length when the index was parsed.
        let frame = parse_frame(&self.bytes, offset as usize)
            .map_err(|source| DataError::Frame { path: self.rec_path.clone(), key, source })?;
        Ok(frame.payload)
    }

    /// Reads record `key` and splits it into header and data.
    pub fn read(&self, key: u64) -> Result<Record<'_>, DataError> {
        let payload = self.read_payload(key)?;
        let (header, data_len) = {
            let (header, data) =
                IrHeader::parse(&payload).map_err(|e| self.invalid(key, &e.to_string()))?;
            (header, data.len())
        };
        let data_start = payload.len() - data_len;
        let data = match payload {
            Cow::Borrowed(bytes) => Cow::Borrowed(&bytes[data_start..]),
            Cow::Owned(mut bytes) => {
                bytes.drain(..data_start);
                Cow::Owned(bytes)
            }
        };
        Ok(Record { header, data })
    }

    /// Builds an [`DataError::InvalidRecord`] for record `key` of this file.
    pub(crate) fn invalid(&self, key: u64, reason: &str) -> DataError {
        DataError::InvalidRecord { path: self.rec_path.clone(), key, reason: reason.to_string() }
    }
}

impl KeyIndex {
    /// Sorts the entries and picks the compact form when keys are contiguous. A repeated key
    /// is returned as the error.
    fn new(mut entries: Vec<(u64, u64)>) -> Result<Self, u64> {
        let already_sorted = entries.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if !already_sorted {
            entries.sort_unstable_by_key(|&(key, _)| key);
        }
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(pair[0].0);
        }

        let first = entries.first().map_or(0, |&(key, _)| key);
        let contiguous = entries
            .last()
            .is_none_or(|&(last, _)| last.checked_sub(first) == Some(entries.len() as u64 - 1));
        if contiguous {
            Ok(Self::Dense { first, offsets: entries.into_iter().map(|(_, o)| o).collect() })
        } else {
            Ok(Self::Sparse(entries))
        }
    }
}

/// Parses `.idx` text: one `<key><whitespace><offset>` per line, blank lines ignored.
fn parse_index(idx_path: &Path, text: &[u8], rec_len: u64) -> Result<Vec<(u64, u64)>, DataError> {
    let mut entries = Vec::with_capacity(text.len() / 12);
    for (number, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let bad_line = |reason: String| DataError::IndexLine {
            path: idx_path.to_path_buf(),
            line: number + 1,
            reason,
        };

        let (key, offset) = parse_index_line(line).ok_or_else(|| {
            bad_line(format!(
                "`{}` does not read `<key>\\t<byte offset>` with two unsigned integers",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            ))
        })?;
        if offset >= rec_len {
            return Err(bad_line(format!(
                "offset {offset} of key {key} is past the end of the .rec file ({rec_len} bytes); \
                 the .idx file does not belong to this .rec file"
            )));
        }
        entries.push((key, offset));
    }
    Ok(entries)
}

/// Returns the 1-based number of the second line that lists `key`, for the error message.
fn repeated_key_line(text: &[u8], key: u64) -> usize {
    let mut seen = false;
    for (number, line) in text.split(|&b| b == b'\n').enumerate() {
        if parse_index_line(line.trim_ascii()).is_some_and(|(k, _)| k == key) {
            if seen {
                return number + 1;
            }
            seen = true;
        }
    }
    0
}

/// Splits one trimmed line into key and offset.
fn parse_index_line(line: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let key = fields.next()?.parse().ok()?;
    let offset = fields.next()?.parse().ok()?;
    if fields.next().is_some() {
        return None;
    }
    Some((key, offset))
}

/// Reads a whole file, reporting a missing file as [`DataError::NotFound`].
pub(crate) fn read_existing(path: &Path, expected: &'static str) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| not_found_or_io(path, expected, "read", source))
}

/// Memory-maps the `.rec` file.
fn map_existing(path: &Path) -> Result<RecBytes, DataError> {
    let file = File::open(path)
        .map_err(|source| not_found_or_io(path, "a RecordIO data file (.rec)", "open", source))?;
    // SAFETY: the map is read-only and lives as long as the reader. The file must not be
    // truncated or rewritten while it is open. Like any mmap-based reader, this one cannot
    // prevent another process from doing that, so the crate documents the requirement.
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(|source| DataError::io("map", path, source))?;
    Ok(RecBytes::Mapped(map))
}

fn not_found_or_io(
    path: &Path,
    expected: &'static str,
    action: &'static str,
    source: std::io::Error,
) -> DataError {
    if source.kind() == std::io::ErrorKind::NotFound {
        DataError::NotFound { path: path.to_path_buf(), expected }
    } else {
        DataError::io(action, path, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recordio::encode_frames;

    fn record(label: f32, id: u64, data: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        IrHeader::scalar(label, id).write_to(&mut payload);
        payload.extend_from_slice(data);
        let mut out = Vec::new();
        encode_frames(&payload, &mut out);
        out
    }

    #[test]
    fn sparse_keys_are_found() {
        let mut rec = record(1.0, 5, b"first");
        let second = rec.len();
        rec.extend(record(2.0, 9, b"second"));
        let idx = format!("9\t{second}\n5\t0\n");
        let reader = RecordReader::from_bytes("t.rec", "t.idx", rec, idx.as_bytes()).unwrap();
        assert_eq!(reader.keys().collect::<Vec<_>>(), vec![5, 9]);
        assert_eq!(reader.read(9).unwrap().data.as_ref(), b"second");
        assert_eq!(reader.read(5).unwrap().header.class_label(), 1.0);
        assert_eq!(reader.count_keys_in(0..9), 1);
        assert_eq!(reader.count_keys_in(5..10), 2);
        assert!(!reader.contains(7));
    }

    #[test]
    fn dense_keys_use_offsets_only() {
        let mut rec = record(0.0, 3, b"a");
        let second = rec.len();
        rec.extend(record(0.0, 4, b"b"));
        let idx = format!("3\t0\r\n4\t{second}\r\n\r\n");
        let reader = RecordReader::from_bytes("t.rec", "t.idx", rec, idx.as_bytes()).unwrap();
        assert!(matches!(reader.index, KeyIndex::Dense { first: 3, .. }));
        assert_eq!(reader.offset(4), Some(second as u64));
        assert_eq!(reader.offset(2), None);
        assert_eq!(reader.offset(5), None);
        assert_eq!(reader.count_keys_in(0..4), 1);
        assert_eq!(reader.count_keys_in(4..100), 1);
        assert_eq!(reader.count_keys_in(7..9), 0);
    }

    #[test]
    fn repeated_key_is_rejected() {
        let rec = record(0.0, 0, b"a");
        let result = RecordReader::from_bytes("t.rec", "t.idx", rec, b"0\t0\n\n0\t0\n");
        let message = result.err().unwrap().to_string();
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("key 0 appears more than once"), "{message}");
    }
}
