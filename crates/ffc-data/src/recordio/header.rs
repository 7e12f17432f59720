//! MXNet's image record header (`IRHeader`), which starts every image record's payload.
//!
//! Layout (24 bytes, little-endian, no padding): `flag: u32`, `label: f32`, `id: u64`,
//! `id2: u64`. With `flag = 0` the label is the scalar field; with `flag = n > 0` the scalar
//! field is ignored (writers store 0) and `n` float32 labels follow the header. The encoded
//! image comes after that.

/// Length of the fixed part of the header in bytes.
pub const IR_HEADER_LEN: usize = 24;

/// A decoded image record header.
#[derive(Debug, Clone, PartialEq)]
pub struct IrHeader {
    /// 0 for a scalar label, otherwise the number of labels in the label array.
    pub flag: u32,
    /// The labels: one value when `flag` is 0, `flag` values otherwise.
    pub label: Vec<f32>,
    /// Record id; MXNet writers store the record key here.
    pub id: u64,
    /// Second id, usually 0.
    pub id2: u64,
}

/// A payload too short for the header it declares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The payload is shorter than the 24-byte header.
    #[error("payload of {len} bytes is shorter than the 24-byte image record header")]
    TooShort {
        /// Payload length.
        len: usize,
    },
    /// The label array declared by `flag` runs past the payload.
    #[error("header declares {flag} float32 labels but the payload has only {len} bytes")]
    LabelsPastEnd {
        /// The header's flag.
        flag: u32,
        /// Payload length.
        len: usize,
    },
}

impl IrHeader {
    /// Builds a header with one scalar label (`flag = 0`).
    pub fn scalar(label: f32, id: u64) -> Self {
        Self { flag: 0, label: vec![label], id, id2: 0 }
    }

    /// Builds a header with a label array (`flag = labels.len()`).
    ///
    /// An empty array gives a scalar header with label 0, because `flag = 0` cannot carry an
    /// empty array.
    pub fn array(labels: Vec<f32>, id: u64) -> Self {
        if labels.is_empty() {
            return Self::scalar(0.0, id);
        }
        Self { flag: labels.len() as u32, label: labels, id, id2: 0 }
    }

    /// Returns the class label: the scalar label, or the first array entry (as `im2rec
    /// --pack-label` stores it).
    pub fn class_label(&self) -> f32 {
        self.label.first().copied().unwrap_or(0.0)
    }

    /// Splits `payload` into its header and the bytes after it (the encoded image).
    pub fn parse(payload: &[u8]) -> Result<(Self, &[u8]), HeaderError> {
        if payload.len() < IR_HEADER_LEN {
            return Err(HeaderError::TooShort { len: payload.len() });
        }

        let flag = u32::from_le_bytes(payload[0..4].try_into().expect("4-byte slice"));
        let scalar = f32::from_le_bytes(payload[4..8].try_into().expect("4-byte slice"));
        let id = u64::from_le_bytes(payload[8..16].try_into().expect("8-byte slice"));
        let id2 = u64::from_le_bytes(payload[16..24].try_into().expect("8-byte slice"));
        if flag == 0 {
            return Ok((Self { flag, label: vec![scalar], id, id2 }, &payload[IR_HEADER_LEN..]));
        }

        // u64 arithmetic so that a huge flag cannot overflow on 32-bit targets.
        let labels_end = IR_HEADER_LEN as u64 + 4 * u64::from(flag);
        if labels_end > payload.len() as u64 {
            return Err(HeaderError::LabelsPastEnd { flag, len: payload.len() });
        }
        let labels_end = labels_end as usize;
        let label = payload[IR_HEADER_LEN..labels_end]
            .chunks_exact(4)
            .map(|word| f32::from_le_bytes(word.try_into().expect("4-byte chunk")))
            .collect();
        Ok((Self { flag, label, id, id2 }, &payload[labels_end..]))
    }

    /// Appends the encoded header (and label array when `flag > 0`) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.flag.to_le_bytes());
        let scalar = if self.flag == 0 { self.class_label() } else { 0.0 };
        out.extend_from_slice(&scalar.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.id2.to_le_bytes());
        if self.flag > 0 {
            for label in &self.label {
                out.extend_from_slice(&label.to_le_bytes());
            }
        }
    }

    /// Returns the number of bytes [`IrHeader::write_to`] appends.
    pub fn encoded_len(&self) -> usize {
        if self.flag == 0 { IR_HEADER_LEN } else { IR_HEADER_LEN + 4 * self.label.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_header_round_trips() {
        let header = IrHeader { flag: 0, label: vec![5.0], id: 59, id2: 0 };
        let mut bytes = Vec::new();
        header.write_to(&mut bytes);
        bytes.extend_from_slice(b"jpeg");
        let (parsed, rest) = IrHeader::parse(&bytes).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(rest, b"jpeg");
    }

    #[test]
    fn array_header_round_trips() {
        let header = IrHeader::array(vec![61.0, 67.0], 0);
        let mut bytes = Vec::new();
        header.write_to(&mut bytes);
        assert_eq!(bytes.len(), header.encoded_len());
        assert_eq!(bytes.len(), 32);
        let (parsed, rest) = IrHeader::parse(&bytes).unwrap();
        assert_eq!(parsed, header);
        assert!(rest.is_empty());
    }

    #[test]
    fn short_payload_is_rejected() {
        assert_eq!(IrHeader::parse(&[0; 23]), Err(HeaderError::TooShort { len: 23 }));
    }

    #[test]
    fn huge_flag_is_rejected() {
        let mut bytes = vec![0; 32];
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            IrHeader::parse(&bytes),
            Err(HeaderError::LabelsPastEnd { flag: u32::MAX, len: 32 })
        );
    }
}
