//! Sequential writing of a `.rec` file and its `.idx` file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::frame::{MAX_PART_LEN, encode_frames};
use super::header::IrHeader;
use crate::DataError;

/// Writes records to a `.rec` file and one `<key>\t<offset>` line per record to its `.idx`.
///
/// Frames are encoded exactly as the dmlc-core writer encodes them, including the split into
/// parts where the magic word occurs inside a payload. Call [`RecordWriter::finish`] to flush;
/// dropping the writer without it may lose buffered records.
pub struct RecordWriter {
    rec: BufWriter<File>,
    idx: BufWriter<File>,
    rec_path: PathBuf,
    idx_path: PathBuf,
    position: u64,
    frame: Vec<u8>,
    payload: Vec<u8>,
}

impl RecordWriter {
    /// Creates (or truncates) `rec` and `idx`.
    pub fn create(rec: &Path, idx: &Path) -> Result<Self, DataError> {
        let rec_file = File::create(rec).map_err(|e| DataError::io("create", rec, e))?;
        let idx_file = File::create(idx).map_err(|e| DataError::io("create", idx, e))?;
        Ok(Self {
            rec: BufWriter::new(rec_file),
            idx: BufWriter::new(idx_file),
            rec_path: rec.to_path_buf(),
            idx_path: idx.to_path_buf(),
            position: 0,
            frame: Vec::new(),
            payload: Vec::new(),
        })
    }

    /// Appends a record with the raw `payload` under `key`.
    ///
    /// Fails if the payload exceeds the RecordIO maximum of `2^29 - 1` bytes.
    pub fn write(&mut self, key: u64, payload: &[u8]) -> Result<(), DataError> {
        if payload.len() > MAX_PART_LEN {
            return Err(DataError::InvalidRecord {
                path: self.rec_path.clone(),
                key,
                reason: format!(
                    "payload of {} bytes exceeds the RecordIO maximum of {MAX_PART_LEN} bytes \
                     (re-encode the image smaller)",
                    payload.len()
                ),
            });
        }

        self.frame.clear();
        encode_frames(payload, &mut self.frame);
        self.rec.write_all(&self.frame).map_err(|e| DataError::io("write", &self.rec_path, e))?;
        writeln!(self.idx, "{key}\t{}", self.position)
            .map_err(|e| DataError::io("write", &self.idx_path, e))?;
        self.position += self.frame.len() as u64;
        Ok(())
    }

    /// Appends an image record: `header` followed by the encoded image `data`.
    pub fn write_record(
        &mut self,
        key: u64,
        header: &IrHeader,
        data: &[u8],
    ) -> Result<(), DataError> {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        header.write_to(&mut payload);
        payload.extend_from_slice(data);
        let result = self.write(key, &payload);
        self.payload = payload;
        result
    }

    /// Returns the number of `.rec` bytes written so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Flushes both files and returns the size of the `.rec` file in bytes.
    pub fn finish(mut self) -> Result<u64, DataError> {
        self.rec.flush().map_err(|e| DataError::io("write", &self.rec_path, e))?;
        self.idx.flush().map_err(|e| DataError::io("write", &self.idx_path, e))?;
        Ok(self.position)
    }
}
