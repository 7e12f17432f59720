//! dmlc RecordIO frames: parsing one (possibly multi-part) record and encoding a payload.
//!
//! A frame is `magic: u32`, `lrecord: u32`, then `lrecord & (2^29 - 1)` payload bytes and zero
//! padding up to a multiple of 4 bytes, all little-endian. The upper 3 bits of `lrecord` are the
//! continuation flag, which is 0 for a record in one piece. A writer that finds the magic word at
//! a 4-byte-aligned position inside a payload splits the payload there and drops those 4 bytes.
//! The first part then has flag 1, middle parts flag 2 and the last part flag 3. Reading re-joins
//! the parts with the magic bytes put back between them.

use std::borrow::Cow;

/// The frame magic word, `0xCED7230A` (bytes `0A 23 D7 CE` on disk).
pub const MAGIC: u32 = 0xCED7_230A;

/// Maximum payload length of one frame part, `2^29 - 1` bytes.
pub const MAX_PART_LEN: usize = (1 << 29) - 1;

const FRAME_HEADER_LEN: usize = 8;
const LENGTH_MASK: u32 = (1 << 29) - 1;

/// Continuation flag values.
const FLAG_WHOLE: u32 = 0;
const FLAG_FIRST: u32 = 1;
const FLAG_MIDDLE: u32 = 2;
const FLAG_LAST: u32 = 3;

/// A malformed frame. Offsets are byte offsets into the `.rec` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame offset lies at or past the end of the file.
    #[error(
        "frame offset {offset} is past the end of the file ({file_len} bytes); the .idx file \
         does not belong to this .rec file"
    )]
    OffsetPastEnd {
        /// Offset of the frame.
        offset: u64,
        /// Length of the `.rec` file.
        file_len: u64,
    },

    /// Fewer than 8 bytes are left for the frame header.
    #[error(
        "truncated frame header at byte offset {offset}: {available} bytes left, 8 needed (the \
         .rec file is truncated)"
    )]
    TruncatedHeader {
        /// Offset of the frame part.
        offset: u64,
        /// Bytes left in the file.
        available: u64,
    },

    /// The frame does not start with the magic word.
    #[error(
        "bad magic 0x{found:08x} at byte offset {offset} (expected 0xced7230a); the offset does \
         not point at a RecordIO frame, so the .idx file or the .rec file is damaged"
    )]
    BadMagic {
        /// Offset of the frame part.
        offset: u64,
        /// The 32-bit word found there.
        found: u32,
    },

    /// The payload length runs past the end of the file.
    #[error(
        "frame at byte offset {offset} declares {length} payload bytes ({padded} with padding) \
         but only {available} bytes follow its header (the .rec file is truncated)"
    )]
    LengthPastEnd {
        /// Offset of the frame part.
        offset: u64,
        /// Declared payload length.
        length: u64,
        /// Payload length rounded up to a multiple of 4.
        padded: u64,
        /// Bytes left after the 8-byte frame header.
        available: u64,
    },

    /// A continuation flag appears where the record structure does not allow it.
    #[error(
        "frame at byte offset {offset} has continuation flag {flag}, expected {expected} (the \
         .rec file is damaged)"
    )]
    UnexpectedFlag {
        /// Offset of the frame part.
        offset: u64,
        /// The flag found.
        flag: u32,
        /// The flags allowed at that point.
        expected: &'static str,
    },

    /// A multi-part record reaches the end of the file before its last part.
    #[error(
        "multi-part record starting at byte offset {start} has no last part (flag 3) before the \
         end of the file at byte {file_len} (the .rec file is truncated)"
    )]
    UnterminatedRecord {
        /// Offset of the record's first part.
        start: u64,
        /// Length of the `.rec` file.
        file_len: u64,
    },
}

/// One record read from a `.rec` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The payload, borrowed when the record is one part and re-joined otherwise.
    pub payload: Cow<'a, [u8]>,
    /// Byte offset just past the record, padding included, where the next frame starts.
    pub end: usize,
    /// Number of frame parts the record was stored in (1 for a whole record).
    pub parts: usize,
}

/// One frame part as stored: flag, payload range and the offset of the next part.
struct Part {
    flag: u32,
    payload: std::ops::Range<usize>,
    end: usize,
}

/// Parses the record whose first frame starts at `offset` in `bytes`.
///
/// Multi-part records are re-joined with the magic bytes re-inserted between parts. Every
/// malformed input returns a [`FrameError`] naming the byte offset, without a panic. The parse
/// always terminates because each part advances by at least 8 bytes.
pub fn parse_frame(bytes: &[u8], offset: usize) -> Result<Frame<'_>, FrameError> {
    if offset >= bytes.len() {
        return Err(FrameError::OffsetPastEnd {
            offset: offset as u64,
            file_len: bytes.len() as u64,
        });
    }

    let first = parse_part(bytes, offset)?;
    match first.flag {
        FLAG_WHOLE => {
            Ok(Frame { payload: Cow::Borrowed(&bytes[first.payload]), end: first.end, parts: 1 })
        }
        FLAG_FIRST => join_parts(bytes, offset, first),
        flag => Err(FrameError::UnexpectedFlag {
            offset: offset as u64,
            flag,
            expected: "0 (whole record) or 1 (first part)",
        }),
    }
}

/// Collects the middle and last parts of a record whose first part is `first`.
fn join_parts(bytes: &[u8], start: usize, first: Part) -> Result<Frame<'_>, FrameError> {
    let mut payload = bytes[first.payload].to_vec();
    let mut position = first.end;
    let mut parts = 1;

    loop {
        if position >= bytes.len() {
            return Err(FrameError::UnterminatedRecord {
                start: start as u64,
                file_len: bytes.len() as u64,
            });
        }
        let part = parse_part(bytes, position)?;
        if part.flag != FLAG_MIDDLE && part.flag != FLAG_LAST {
            return Err(FrameError::UnexpectedFlag {
                offset: position as u64,
                flag: part.flag,
                expected: "2 (middle part) or 3 (last part) inside a multi-part record",
            });
        }

        payload.extend_from_slice(&MAGIC.to_le_bytes());
        payload.extend_from_slice(&bytes[part.payload]);
        parts += 1;
        position = part.end;

        if part.flag == FLAG_LAST {
            return Ok(Frame { payload: Cow::Owned(payload), end: position, parts });
        }
    }
}

/// Parses the 8-byte header of the part at `offset` and bounds-checks its payload.
fn parse_part(bytes: &[u8], offset: usize) -> Result<Part, FrameError> {
    let available = bytes.len() - offset;
    if available < FRAME_HEADER_LEN {
        return Err(FrameError::TruncatedHeader {
            offset: offset as u64,
            available: available as u64,
        });
    }

    let magic = read_u32(bytes, offset);
    if magic != MAGIC {
        return Err(FrameError::BadMagic { offset: offset as u64, found: magic });
    }

    let lrecord = read_u32(bytes, offset + 4);
    let flag = lrecord >> 29;
    let length = (lrecord & LENGTH_MASK) as usize;
    let padded = padded_len(length);
    let body_start = offset + FRAME_HEADER_LEN;
    let body_available = bytes.len() - body_start;
    if padded > body_available {
        return Err(FrameError::LengthPastEnd {
            offset: offset as u64,
            length: length as u64,
            padded: padded as u64,
            available: body_available as u64,
        });
    }

    Ok(Part { flag, payload: body_start..body_start + length, end: body_start + padded })
}

/// Appends `payload` to `out` as one record, split into parts wherever the magic word sits at
/// a 4-byte-aligned position, exactly as the dmlc-core writer does.
///
/// Panics if `payload` is longer than [`MAX_PART_LEN`]; the record writer checks this first.
pub fn encode_frames(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= MAX_PART_LEN,
        "payload of {} bytes exceeds the RecordIO maximum of {MAX_PART_LEN} bytes",
        payload.len()
    );

    let magic = MAGIC.to_le_bytes();
    let mut part_start = 0;
    for aligned in (0..payload.len() / 4 * 4).step_by(4) {
        if payload[aligned..aligned + 4] == magic {
            let flag = if part_start == 0 { FLAG_FIRST } else { FLAG_MIDDLE };
            push_part(out, flag, &payload[part_start..aligned]);
            part_start = aligned + 4;
        }
    }

    let flag = if part_start == 0 { FLAG_WHOLE } else { FLAG_LAST };
    push_part(out, flag, &payload[part_start..]);
}

/// Appends one frame part with its header and zero padding.
fn push_part(out: &mut Vec<u8>, flag: u32, part: &[u8]) {
    let lrecord = (flag << 29) | part.len() as u32;
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&lrecord.to_le_bytes());
    out.extend_from_slice(part);
    out.resize(out.len() + padded_len(part.len()) - part.len(), 0);
}

/// Rounds `length` up to a multiple of 4.
fn padded_len(length: usize) -> usize {
    length.div_ceil(4) * 4
}

/// Reads a little-endian `u32` at `offset`; the caller has checked the bounds.
fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_part(&mut out, flag, payload);
        out
    }

    #[test]
    fn whole_record_is_borrowed() {
        let bytes = frame(0, b"hello");
        let parsed = parse_frame(&bytes, 0).unwrap();
        assert_eq!(&*parsed.payload, b"hello");
        assert!(matches!(parsed.payload, Cow::Borrowed(_)));
        assert_eq!(parsed.end, 16);
        assert_eq!(parsed.parts, 1);
    }

    #[test]
    fn padding_is_zero_and_aligned() {
        let bytes = frame(0, b"abcdef");
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[14..], &[0, 0]);
    }

    #[test]
    fn magic_inside_payload_splits_into_parts() {
        let magic = MAGIC.to_le_bytes();
        let mut payload = b"abcd".to_vec();
        payload.extend_from_slice(&magic);
        payload.extend_from_slice(b"efgh");
        payload.extend_from_slice(&magic);
        payload.extend_from_slice(b"ij");

        let mut encoded = Vec::new();
        encode_frames(&payload, &mut encoded);
        let expected: Vec<u8> =
            [frame(1, b"abcd"), frame(2, b"efgh"), frame(3, b"ij")].into_iter().flatten().collect();
        assert_eq!(encoded, expected);

        let parsed = parse_frame(&encoded, 0).unwrap();
        assert_eq!(parsed.payload.as_ref(), payload.as_slice());
        assert_eq!(parsed.parts, 3);
        assert_eq!(parsed.end, encoded.len());
    }

    #[test]
    fn unaligned_magic_does_not_split() {
        let mut payload = b"ab".to_vec();
        payload.extend_from_slice(&MAGIC.to_le_bytes());
        let mut encoded = Vec::new();
        encode_frames(&payload, &mut encoded);
        assert_eq!(encoded, frame(0, &payload));
    }

    #[test]
    fn payload_that_is_only_magic_gives_two_empty_parts() {
        let payload = MAGIC.to_le_bytes();
        let mut encoded = Vec::new();
        encode_frames(&payload, &mut encoded);
        let expected: Vec<u8> = [frame(1, b""), frame(3, b"")].concat();
        assert_eq!(encoded, expected);
        assert_eq!(parse_frame(&encoded, 0).unwrap().payload.as_ref(), &payload);
    }
}
