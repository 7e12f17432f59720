//! The crate's error type.
//!
//! Every variant names the file, record key or byte offset involved. Printed with its cause
//! chain (`{:#}` through `anyhow`), a message shows the user what to fix.

use std::fmt;
use std::path::PathBuf;

use image::ImageError;
use image::error::LimitErrorKind;

use crate::MAX_DECODED_SIDE;
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

    /// A RecordIO dataset has only one of its two files: a `.rec` file without its `.idx`
    /// index, or an index without its `.rec` file.
    #[error(
        "`{missing}` not found beside `{present}`: a RecordIO dataset needs both files ({hint})"
    )]
    IncompleteRecordIo {
        /// The file that does not exist.
        missing: PathBuf,
        /// The file that exists.
        present: PathBuf,
        /// The step that restores the missing file.
        hint: &'static str,
    },

    /// A file is of a type that the operation does not read.
    #[error("unsupported file type `{path}` (expected {expected})")]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
        /// The supported kinds of path.
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
    #[error("failed to decode image {image} (re-encode or remove the image)")]
    Decode {
        /// The image's file path or record key, as [`crate::FaceSource::describe`] returns it.
        image: String,
        /// The decoder's error.
        #[source]
        source: ImageFailure,
    },

    /// An image could not be encoded while packing.
    #[error("failed to re-encode image {image} as JPEG")]
    Encode {
        /// The image's file path.
        image: String,
        /// The encoder's error.
        #[source]
        source: ImageFailure,
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

    /// The `property` file does not read `<num_classes>,<height>,<width>` with a positive
    /// height and width.
    #[error("invalid property file `{path}`: `{text}` ({reason})")]
    Property {
        /// The `property` file.
        path: PathBuf,
        /// Its first line.
        text: String,
        /// The defect and the expected content.
        reason: &'static str,
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

    /// A validation pack's pickle nests too deeply or expands too far to parse safely, or its
    /// content is not `(list of images, list of bools)` with at least one pair.
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

    /// Builds a [`DataError::Decode`] for `image`, a file path or record key as
    /// [`crate::FaceSource::describe`] returns it.
    pub fn decode(image: impl Into<String>, error: ImageError) -> Self {
        Self::Decode { image: image.into(), source: error.into() }
    }
}

/// An error of the `image` codec, the cause of [`DataError::Decode`] and [`DataError::Encode`].
///
/// An [`ImageError`] writes its underlying cause into its own message and also returns that
/// cause from `source()`, so a printed cause chain would show the cause twice. This wrapper
/// writes the message once, on one line, and ends the chain there. An image wider or taller
/// than [`MAX_DECODED_SIDE`] is reported with that limit.
#[derive(Debug)]
pub struct ImageFailure(ImageError);

impl ImageFailure {
    /// Returns the codec's error.
    pub fn image_error(&self) -> &ImageError {
        &self.0
    }

    /// Returns the codec's error, consuming the wrapper.
    pub fn into_image_error(self) -> ImageError {
        self.0
    }
}

impl From<ImageError> for ImageFailure {
    fn from(error: ImageError) -> Self {
        Self(error)
    }
}

impl fmt::Display for ImageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ImageError::Limits(limit) = &self.0
            && limit.kind() == LimitErrorKind::DimensionError
        {
            return write!(
                f,
                "the image is wider or taller than the limit of {MAX_DECODED_SIDE} pixels \
                 (crop or shrink it)"
            );
        }
        // Some `image` messages put their cause on further lines.
        let text = self.0.to_string();
        let lines: Vec<&str> =
            text.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
        write!(f, "{}", lines.join(": "))
    }
}

impl std::error::Error for ImageFailure {}
