//! The crate's error type.
//!
//! Every variant names the file, record key or byte offset involved. Printed with its cause
//! chain (`{:#}` through `anyhow`), a message shows the user what to fix.

use std::path::PathBuf;

use crate::recordio::FrameError;

/// Errors raised while opening, reading, writing or sampling face data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// An I/O operation on `path` failed.
    #[error("failed to {action} `{path}`")]
    Io {
        /// The failed operation, e.g. "read" or "create".
        action: &'static str,
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A required file or folder does not exist.
    #[error("`{path}` not found (expected {expected})")]
    NotFound {
        /// The missing path.
        path: PathBuf,
        /// Description of the expected file or folder.
        expected: &'static str,
    },

    /// An image folder contains no identity sub-folder with a readable image file.
    #[error(
        "image folder `{path}` contains no identity sub-folders with images (expected one \
         sub-folder per identity holding .jpg, .jpeg, .png, .bmp, .pgm, .ppm or .pnm files)"
    )]
    EmptyFolder {
        /// The folder that was opened.
        path: PathBuf,
    },

    /// An encoded image could not be decoded.
    #[error(
        "failed to decode image {image} (re-encode or remove the file, or set \
         skip_bad_images to skip it during training)"
    )]
    Decode {
        /// The image's file path or record key, as [`crate::FaceSource::describe`] returns it.
        image: String,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },

    /// An image could not be encoded while packing.
    #[error("failed to re-encode image {image} as JPEG")]
    Encode {
        /// The image's file path.
        image: String,
        /// The encoder's error.
        #[source]
        source: image::ImageError,
    },

    /// A RecordIO frame is malformed.
    #[error("malformed record {key} in `{path}`")]
    Frame {
        /// The `.rec` file.
        path: PathBuf,
        /// The record key from the `.idx` file.
        key: u64,
        /// The frame defect, with its byte offset.
        #[source]
        source: FrameError,
    },

    /// A line of a `.idx` file does not parse or points outside the `.rec` file.
    #[error("invalid line {line} in index file `{path}`: {reason}")]
    IndexLine {
        /// The `.idx` file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The defect and the expected line format.
        reason: String,
    },

    /// A record's header or payload is inconsistent with the dataset layout.
    #[error("invalid record {key} in `{path}`: {reason}")]
    InvalidRecord {
        /// The `.rec` file.
        path: PathBuf,
        /// The record key.
        key: u64,
        /// The defect and the fix.
        reason: String,
    },

    /// A record's identity label cannot be represented exactly as a float32 label.
    #[error(
        "label {label} of record {key} in `{path}` is at or above 2^24 = 16777216, where float32 \
         labels can no longer represent every integer identity exactly (use fewer than 2^24 \
         identities per RecordIO file, or an image folder)"
    )]
    LabelTooLarge {
        /// The `.rec` file.
        path: PathBuf,
        /// The record key.
        key: u64,
        /// The label as stored.
        label: f32,
    },

    /// The `property` file does not read `<num_classes>,<height>,<width>`.
    #[error("invalid property file `{path}`: `{text}` (expected `<num_classes>,<height>,<width>`)")]
    Property {
        /// The `property` file.
        path: PathBuf,
        /// Its first line.
        text: String,
    },

    /// A validation pack could not be parsed as a pickle.
    #[error("failed to parse validation pack `{path}` as a Python pickle")]
    Pickle {
        /// The `.bin` file.
        path: PathBuf,
        /// The pickle parser's error.
        #[source]
        source: serde_pickle::Error,
    },

    /// A validation pack parsed, but its content is not `(list of images, list of bools)`.
    #[error("invalid validation pack `{path}`: {reason}")]
    InvalidPack {
        /// The `.bin` file.
        path: PathBuf,
        /// The defect.
        reason: String,
    },

    /// The loader configuration does not fit the dataset.
    #[error("invalid loader configuration: {reason}")]
    Config {
        /// The defect and the setting to change.
        reason: String,
    },

    /// The packer cannot write the requested dataset.
    #[error("cannot write dataset `{path}`: {reason}")]
    Pack {
        /// The output folder.
        path: PathBuf,
        /// The defect and the setting to change.
        reason: String,
    },

    /// The data loader stopped because a worker failed or an earlier batch failed.
    #[error("data loader stopped: {reason}")]
    LoaderStopped {
        /// Why, and what to do.
        reason: String,
    },
}

impl DataError {
    /// Builds an [`DataError::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io { action, path: path.into(), source }
    }
}
