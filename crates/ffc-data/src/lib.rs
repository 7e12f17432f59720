//! Host-side face data for ffc: reading training sets and validation packs, decoding images,
//! and FFC's dual data loader.
//!
//! Training sets are [`FaceSource`]s: an [`ImageFolder`] (one sub-folder per identity) or a
//! [`RecordDataset`] (MXNet RecordIO `train.rec` + `train.idx`, in insightface's or the plain
//! `im2rec` layout). [`open_source`] picks the right one for a path. [`pack_folder`] writes a
//! RecordIO set, [`ValidationPack`] reads insightface `.bin` packs and [`inspect`] summarises
//! any of them.
//!
//! The [`DualLoader`] produces FFC's two views per step as plain `Vec<f32>` in NCHW order,
//! decoded by [`Preprocess`]; the trainer turns them into tensors. Batches are a pure function
//! of the seed and the position, so training resumes bit-exactly from a [`LoaderPosition`].
//!
//! ```no_run
//! use std::path::Path;
//! use ffc_data::{DualLoader, LoaderConfig, LoaderPosition, Preprocess, open_source};
//!
//! # fn main() -> Result<(), ffc_data::DataError> {
//! let source = open_source(Path::new("data/faces_emore"))?;
//! let config = LoaderConfig { batch_size: 64, ..LoaderConfig::default() };
//! let mut loader =
//!     DualLoader::new(source, Preprocess::default(), config, LoaderPosition::default())?;
//! let batch = loader.next_batch()?;
//! assert_eq!(batch.x.len(), batch.images_per_view * 3 * 112 * 112);
//! # Ok(())
//! # }
//! ```
//!
//! RecordIO files are memory-mapped: they must not be truncated or rewritten while a reader
//! has them open.

mod augment;
mod error;
mod folder;
mod inspect;
mod loader;
mod pack;
mod pickle_scan;
mod preprocess;
mod record_dataset;
pub mod recordio;
mod sampling;
mod source;
mod validation;

pub use augment::Augment;
pub use error::{DataError, ImageFailure};
pub use folder::{IMAGE_EXTENSIONS, ImageFolder};
pub use inspect::{InspectReport, SourceKind, inspect};
pub use loader::{Batch, DualLoader, LoaderConfig, LoaderPosition, load_images};
pub use pack::{DEFAULT_JPEG_QUALITY, PackOptions, PackSummary, pack_folder, pack_source};
pub use preprocess::{ChannelOrder, MAX_DECODED_SIDE, Normalization, Preprocess, ResizeMode};
pub use record_dataset::{MAX_EXACT_LABEL, Property, RecordDataset, RecordLayout, read_property};
pub use source::{FaceSource, open_source};
pub use validation::ValidationPack;
