//! A summary of a dataset or validation pack, for `ffc inspect`.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::pack::image_size;
use crate::record_dataset::RecordLayout;
use crate::source::{DataPath, classify_path};
use crate::{DataError, FaceSource, ImageFolder, RecordDataset, ValidationPack};

/// Kind of data found by [`inspect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A RecordIO training set.
    Rec,
    /// A validation pack.
    Bin,
    /// An image folder.
    Folder,
}

/// Counts and sizes of a dataset; fields that do not apply to its kind are `None` and are left
/// out of the JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectReport {
    /// The kind of data.
    pub kind: SourceKind,
    /// RecordIO layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<RecordLayout>,
    /// Number of images.
    pub images: usize,
    /// Number of identities (training sets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identities: Option<usize>,
    /// `[height, width]` from the `property` file, or else from the first image's header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[u32; 2]>,
    /// Number of pairs (validation packs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs: Option<usize>,
    /// Number of same-identity pairs (validation packs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_pairs: Option<usize>,
}

/// Opens the data at `path` and summarises it.
///
/// A `.bin` file is read as a validation pack, and an empty pack is reported, not rejected. A
/// `.rec` or `.idx` file is read as a RecordIO set with its partner file beside it, and so is a
/// folder holding `train.rec` and `train.idx`. Any other folder is read as an image folder, and
/// other files are rejected. Only the first image is decoded (its header, for the size).
pub fn inspect(path: &Path) -> Result<InspectReport, DataError> {
    const EXPECTED: &str = "a .bin validation pack, a .rec or .idx file, a folder with \
                            train.rec and train.idx, or an image folder";
    match classify_path(path, EXPECTED)? {
        DataPath::Pack(pack) => inspect_pack(&ValidationPack::open_allow_empty(&pack)?),
        DataPath::Record { rec, idx } => inspect_rec(&RecordDataset::open_files(&rec, &idx)?),
        DataPath::ImageFolder(folder) => inspect_folder(&ImageFolder::open(&folder)?),
    }
}

fn inspect_pack(pack: &ValidationPack) -> Result<InspectReport, DataError> {
    let first_size = match pack.images.first() {
        Some(bytes) => Some(
            image_size(bytes)
                .map_err(|error| DataError::decode(format!("0 of pack `{}`", pack.name), error))?,
        ),
        None => None,
    };
    Ok(InspectReport {
        kind: SourceKind::Bin,
        layout: None,
        images: pack.images.len(),
        identities: None,
        image_size: first_size.map(|(width, height)| [height, width]),
        pairs: Some(pack.pairs()),
        same_pairs: Some(pack.issame.iter().filter(|&&same| same).count()),
    })
}

fn inspect_rec(dataset: &RecordDataset) -> Result<InspectReport, DataError> {
    let size = match dataset.property() {
        Some(property) => [property.height, property.width],
        None => first_image_size(dataset)?,
    };
    Ok(InspectReport {
        layout: Some(dataset.layout()),
        image_size: Some(size),
        ..training_set(dataset, SourceKind::Rec)
    })
}

fn inspect_folder(folder: &ImageFolder) -> Result<InspectReport, DataError> {
    let image_size = Some(first_image_size(folder)?);
    Ok(InspectReport { image_size, ..training_set(folder, SourceKind::Folder) })
}

/// Builds the report fields shared by every training set.
fn training_set(source: &dyn FaceSource, kind: SourceKind) -> InspectReport {
    InspectReport {
        kind,
        layout: None,
        images: source.len(),
        identities: Some(source.num_identities()),
        image_size: None,
        pairs: None,
        same_pairs: None,
    }
}

/// Returns `[height, width]` of image 0.
fn first_image_size(source: &dyn FaceSource) -> Result<[u32; 2], DataError> {
    let bytes = source.read(0)?;
    let (width, height) =
        image_size(&bytes).map_err(|error| DataError::decode(source.describe(0), error))?;
    Ok([height, width])
}

impl fmt::Display for InspectReport {
    /// Writes one `name: value` line per field that applies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            SourceKind::Rec => "rec",
            SourceKind::Bin => "bin",
            SourceKind::Folder => "folder",
        };
        writeln!(f, "kind: {kind}")?;
        if let Some(layout) = self.layout {
            let layout = match layout {
                RecordLayout::Meta => "meta",
                RecordLayout::Plain => "plain",
            };
            writeln!(f, "layout: {layout}")?;
        }
        writeln!(f, "images: {}", self.images)?;
        if let Some(identities) = self.identities {
            writeln!(f, "identities: {identities}")?;
        }
        if let Some([height, width]) = self.image_size {
            writeln!(f, "image_size: {height}x{width}")?;
        }
        if let Some(pairs) = self.pairs {
            writeln!(f, "pairs: {pairs}")?;
        }
        if let Some(same_pairs) = self.same_pairs {
            writeln!(f, "same_pairs: {same_pairs}")?;
        }
        Ok(())
    }
}
