//! Writing a training set as `train.rec`, `train.idx` and `property` in insightface's layout.
//!
//! The output is what insightface's record builder produces: record 0 is the meta record
//! (`flag = 2`, labels `[N + 1, N + 1 + I]`, no image), keys `1..=N` are the images grouped by
//! identity (scalar label = identity index, `id` = key), and keys `N + 1..N + 1 + I` are the
//! identity records with labels `[start, end)`. `property` is `<I>,<height>,<width>`, with the
//! size of the first image.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::ImageReader;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::{self, FilterType};
use serde::{Deserialize, Serialize};

use crate::preprocess::decode_rgb;
use crate::record_dataset::MAX_EXACT_LABEL;
use crate::recordio::{IrHeader, RecordWriter};
use crate::{DataError, FaceSource, ImageFolder};

/// JPEG quality used when images are re-encoded only to shrink them.
pub const DEFAULT_JPEG_QUALITY: u8 = 95;

/// Re-encoding options of [`pack_folder`]. With neither set, image bytes are copied unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackOptions {
    /// Shrink images whose longer side exceeds this many pixels, keeping the aspect ratio, and
    /// store them as JPEG.
    pub max_side: Option<u32>,
    /// Re-encode every image as JPEG with this quality (1 to 100).
    pub quality: Option<u8>,
}

/// Counts and sizes of the dataset written by [`pack_folder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackSummary {
    /// Image records written.
    pub images: usize,
    /// Identity records written.
    pub identities: usize,
    /// Images that were decoded and re-encoded as JPEG.
    pub reencoded: usize,
    /// `[height, width]` of the first image, as written to `property`.
    pub image_size: [u32; 2],
    /// Images whose size differs from `image_size`.
    pub other_sizes: usize,
    /// Size of `train.rec` in bytes.
    pub rec_bytes: u64,
}

/// Packs the image folder `input` into `output/train.rec`, `train.idx` and `property`.
///
/// `progress(done, total)` is called after each image. See [`crate::ImageFolder`] for how
/// identities and labels are assigned.
pub fn pack_folder(
    input: &Path,
    output: &Path,
    options: &PackOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PackSummary, DataError> {
    let folder = ImageFolder::open(input)?;
    pack_source(&folder, output, options, progress)
}

/// Packs any [`FaceSource`], e.g. a plain `im2rec` dataset, in insightface's layout.
///
/// Identity `i` of the source gets label `i` in the output, whatever its source label was.
/// The records go to `train.rec.partial` and `train.idx.partial` first, which replace
/// `train.rec` and `train.idx` only when every record is written. A failed pack therefore
/// leaves existing files unchanged, and a RecordIO source can be packed into its own folder:
/// its memory-mapped `.rec` file is replaced, never truncated while it is read.
pub fn pack_source(
    source: &dyn FaceSource,
    output: &Path,
    options: &PackOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PackSummary, DataError> {
    check_options(output, options)?;
    check_sizes(output, source)?;
    std::fs::create_dir_all(output).map_err(|e| DataError::io("create", output, e))?;

    let files = OutputFiles::new(output);
    let written = write_records(source, &files, options, progress);
    let (stats, rec_bytes) = match written {
        Ok(written) => written,
        Err(error) => {
            files.remove_partial();
            return Err(error);
        }
    };
    files.commit()?;

    let summary = stats.summary(source.len(), source.num_identities(), rec_bytes);
    write_property(output, &summary)?;
    Ok(summary)
}

/// Writes the meta record, the images and the identity records to the partial files.
/// Returns the image statistics and the size of the `.rec` file.
fn write_records(
    source: &dyn FaceSource,
    files: &OutputFiles,
    options: &PackOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(ImageStats, u64), DataError> {
    let mut writer = RecordWriter::create(&files.partial_rec, &files.partial_idx)?;
    let images = source.len();
    let first_identity = images as u64 + 1;
    let end_identity = first_identity + source.num_identities() as u64;
    writer.write_record(0, &meta_header(first_identity, end_identity, 0), &[])?;

    let mut stats = ImageStats::default();
    for image in 0..images {
        let key = image as u64 + 1;
        let bytes = source.read(image)?;
        let prepared = prepare_image(bytes, options, || source.describe(image))?;
        stats.record(&prepared);
        let label = source.identity_of(image) as f32;
        writer.write_record(key, &IrHeader::scalar(label, key), &prepared.bytes)?;
        progress(image + 1, images);
    }

    for identity in 0..source.num_identities() {
        let key = first_identity + identity as u64;
        let range = source.identity_images(identity);
        let header = meta_header(range.start as u64 + 1, range.end as u64 + 1, key);
        writer.write_record(key, &header, &[])?;
    }
    let rec_bytes = writer.finish()?;
    Ok((stats, rec_bytes))
}

/// The RecordIO files of an output folder and the partial files written before them.
struct OutputFiles {
    rec: PathBuf,
    idx: PathBuf,
    partial_rec: PathBuf,
    partial_idx: PathBuf,
}

impl OutputFiles {
    fn new(output: &Path) -> Self {
        Self {
            rec: output.join("train.rec"),
            idx: output.join("train.idx"),
            partial_rec: output.join("train.rec.partial"),
            partial_idx: output.join("train.idx.partial"),
        }
    }

    /// Renames the partial files to their final names.
    fn commit(&self) -> Result<(), DataError> {
        for (partial, target) in [(&self.partial_rec, &self.rec), (&self.partial_idx, &self.idx)] {
            std::fs::rename(partial, target).map_err(|e| DataError::io("rename", partial, e))?;
        }
        Ok(())
    }

    /// Deletes the partial files after a failure, logging a file that cannot be deleted.
    fn remove_partial(&self) {
        for partial in [&self.partial_rec, &self.partial_idx] {
            match std::fs::remove_file(partial) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(
                    path = %partial.display(),
                    %error,
                    "failed to delete a partial file after packing failed; delete it by hand"
                ),
            }
        }
    }
}

/// Builds a record header with the label array `[start, end]`.
fn meta_header(start: u64, end: u64, key: u64) -> IrHeader {
    IrHeader::array(vec![start as f32, end as f32], key)
}

fn check_options(output: &Path, options: &PackOptions) -> Result<(), DataError> {
    let error = |reason: String| Err(DataError::Pack { path: output.to_path_buf(), reason });
    if let Some(quality) = options.quality
        && !(1..=100).contains(&quality)
    {
        return error(format!("JPEG quality {quality} must be between 1 and 100"));
    }
    if options.max_side == Some(0) {
        return error("max_side 0 must be at least 1 pixel".into());
    }
    Ok(())
}

/// Rejects label counts that float32 cannot hold and warns about key ranges it rounds.
fn check_sizes(output: &Path, source: &dyn FaceSource) -> Result<(), DataError> {
    if source.num_identities() as u64 >= MAX_EXACT_LABEL {
        return Err(DataError::Pack {
            path: output.to_path_buf(),
            reason: format!(
                "{} identities need labels at or above 2^24, which float32 RecordIO labels \
                 cannot represent exactly (split the identities into several datasets)",
                source.num_identities()
            ),
        });
    }
    if source.is_empty() {
        return Err(DataError::Pack {
            path: output.to_path_buf(),
            reason: "the source has no images".into(),
        });
    }
    let last_key = (source.len() + source.num_identities()) as u64;
    if last_key >= MAX_EXACT_LABEL {
        tracing::warn!(
            last_key,
            "record keys reach 2^24, so the float32 key ranges in the meta and identity records \
             are rounded; ffc reads such files by scanning labels, other readers may misplace \
             identity boundaries"
        );
    }
    Ok(())
}

/// An image ready to be written.
struct PreparedImage<'a> {
    bytes: Cow<'a, [u8]>,
    /// Width and height.
    size: (u32, u32),
    reencoded: bool,
}

/// Reads the image size and re-encodes the image when the options ask for it.
fn prepare_image<'a>(
    bytes: Cow<'a, [u8]>,
    options: &PackOptions,
    describe: impl Fn() -> String,
) -> Result<PreparedImage<'a>, DataError> {
    let decode_error = |error| DataError::decode(describe(), error);
    let size = image_size(&bytes).map_err(decode_error)?;
    let too_large = options.max_side.is_some_and(|max_side| size.0.max(size.1) > max_side);
    if !too_large && options.quality.is_none() {
        return Ok(PreparedImage { bytes, size, reencoded: false });
    }

    let mut image = decode_rgb(&bytes).map_err(decode_error)?;
    if let Some(max_side) = options.max_side.filter(|_| too_large) {
        let (width, height) = shrunk_size(size, max_side);
        image = imageops::resize(&image, width, height, FilterType::Triangle);
    }
    let quality = options.quality.unwrap_or(DEFAULT_JPEG_QUALITY);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, quality)
        .encode_image(&image)
        .map_err(|error| DataError::Encode { image: describe(), source: error.into() })?;
    Ok(PreparedImage { bytes: Cow::Owned(jpeg), size: image.dimensions(), reencoded: true })
}

/// Returns `size` scaled so that its longer side is `max_side`, each side at least 1.
fn shrunk_size((width, height): (u32, u32), max_side: u32) -> (u32, u32) {
    let longer = u64::from(width.max(height));
    let scale = |side: u32| {
        let scaled = (u64::from(side) * u64::from(max_side) + longer / 2) / longer;
        scaled.max(1) as u32
    };
    (scale(width), scale(height))
}

/// Reads the width and height from an encoded image's header.
pub(crate) fn image_size(bytes: &[u8]) -> Result<(u32, u32), image::ImageError> {
    ImageReader::new(Cursor::new(bytes)).with_guessed_format()?.into_dimensions()
}

/// Counts re-encoded images and sizes while packing.
#[derive(Default)]
struct ImageStats {
    first_size: Option<(u32, u32)>,
    other_sizes: usize,
    reencoded: usize,
}

impl ImageStats {
    fn record(&mut self, image: &PreparedImage<'_>) {
        let first = *self.first_size.get_or_insert(image.size);
        self.other_sizes += usize::from(image.size != first);
        self.reencoded += usize::from(image.reencoded);
    }

    fn summary(&self, images: usize, identities: usize, rec_bytes: u64) -> PackSummary {
        let (width, height) = self.first_size.unwrap_or((0, 0));
        if self.other_sizes > 0 {
            tracing::warn!(
                other_sizes = self.other_sizes,
                height,
                width,
                "images differ in size; property records the first image's size"
            );
        }
        PackSummary {
            images,
            identities,
            reencoded: self.reencoded,
            image_size: [height, width],
            other_sizes: self.other_sizes,
            rec_bytes,
        }
    }
}

fn write_property(output: &Path, summary: &PackSummary) -> Result<(), DataError> {
    let path: PathBuf = output.join("property");
    let [height, width] = summary.image_size;
    let text = format!("{},{height},{width}\n", summary.identities);
    std::fs::write(&path, text).map_err(|e| DataError::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_keeps_aspect_ratio() {
        assert_eq!(shrunk_size((400, 200), 100), (100, 50));
        assert_eq!(shrunk_size((92, 112), 56), (46, 56));
        assert_eq!(shrunk_size((1000, 1), 10), (10, 1));
    }

    #[test]
    fn invalid_options_are_rejected() {
        let output = Path::new("out");
        let quality = PackOptions { quality: Some(0), ..PackOptions::default() };
        assert!(check_options(output, &quality).is_err());
        let side = PackOptions { max_side: Some(0), ..PackOptions::default() };
        assert!(check_options(output, &side).is_err());
        assert!(check_options(output, &PackOptions::default()).is_ok());
    }
}
