//! Decoding an encoded face image into a normalised float CHW tensor.
//!
//! The pipeline is: decode (JPEG, PNG, BMP or PNM) → 8-bit RGB (grayscale replicated to three
//! channels, alpha dropped) → fit to `height × width` → optional horizontal flip → channel
//! order → normalisation, written in CHW order.

use std::io::Cursor;

use image::error::{ParameterError, ParameterErrorKind};
use image::imageops::{self, FilterType};
use image::{ImageError, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

/// Maximum width or height accepted from an encoded image, so that a corrupt header cannot
/// request a huge allocation. Face crops are far smaller.
pub const MAX_DECODED_SIDE: u32 = 16_384;

/// Order of the three colour planes in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue: the insightface convention.
    #[default]
    Rgb,
    /// Blue, green, red: what OpenCV decodes, used by the FFC reference code.
    Bgr,
}

/// Mapping from 8-bit pixel values to floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// `(x / 255 - 0.5) / 0.5`, giving [-1, 1]: the insightface convention.
    #[default]
    Insightface,
    /// `(x - 127.5) / 128`, giving [-0.996, 0.996]: the FFC reference code.
    Reference,
}

/// Fitting method for images whose size differs from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Stretch to the target size with bilinear filtering.
    #[default]
    Resize,
    /// Pad with replicated edge pixels (centred) up to the target size and aspect ratio, then
    /// shrink with bilinear filtering if the padded image is larger than the target.
    Pad,
    /// Cut the largest centred region of the target aspect ratio, then resize it with bilinear
    /// filtering. The border of the longer side is dropped, and nothing is stretched.
    Crop,
}

/// Target size, channel order and normalisation of decoded images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Output height in pixels.
    pub height: usize,
    /// Output width in pixels.
    pub width: usize,
    /// Order of the colour planes.
    pub channel_order: ChannelOrder,
    /// Pixel value mapping.
    pub normalization: Normalization,
    /// Fitting method for images of another size.
    pub resize: ResizeMode,
}

impl Default for Preprocess {
    /// 112×112 RGB with insightface normalisation, the aligned-crop convention of insightface.
    fn default() -> Self {
        Self {
            height: 112,
            width: 112,
            channel_order: ChannelOrder::Rgb,
            normalization: Normalization::Insightface,
            resize: ResizeMode::Resize,
        }
    }
}

impl Preprocess {
    /// Returns the number of floats in one decoded image, `3 * height * width`.
    pub fn image_len(&self) -> usize {
        3 * self.height * self.width
    }

    /// Decodes `bytes` into `out` in CHW order, mirroring left-right when `flip` is set.
    ///
    /// Panics if `out.len()` differs from [`Preprocess::image_len`]; decoding failures are
    /// returned as errors.
    pub fn decode_into(&self, bytes: &[u8], flip: bool, out: &mut [f32]) -> Result<(), ImageError> {
        assert_eq!(
            out.len(),
            self.image_len(),
            "output buffer holds {} floats but a {}x{} image needs {}",
            out.len(),
            self.height,
            self.width,
            self.image_len()
        );

        let image = decode_rgb(bytes)?;
        let image = self.fit(image);
        self.write_chw(&image, flip, out);
        Ok(())
    }

    /// Decodes `bytes` into a new vector; see [`Preprocess::decode_into`].
    pub fn decode(&self, bytes: &[u8], flip: bool) -> Result<Vec<f32>, ImageError> {
        let mut out = vec![0.0; self.image_len()];
        self.decode_into(bytes, flip, &mut out)?;
        Ok(out)
    }

    /// Brings `image` to the target size according to `self.resize`.
    fn fit(&self, image: RgbImage) -> RgbImage {
        let target = (self.width as u32, self.height as u32);
        if image.dimensions() == target {
            return image;
        }
        // Padding and cropping fix the aspect ratio first; every mode then resizes what is left.
        let shaped = match self.resize {
            ResizeMode::Resize => image,
            ResizeMode::Pad => pad_to_aspect(&image, target),
            ResizeMode::Crop => crop_to_aspect(&image, target),
        };
        if shaped.dimensions() == target {
            shaped
        } else {
            imageops::resize(&shaped, target.0, target.1, FilterType::Triangle)
        }
    }

    /// Writes the normalised planes of `image` (already at the target size) into `out`.
    fn write_chw(&self, image: &RgbImage, flip: bool, out: &mut [f32]) {
        let table = self.normalization.table();
        let plane = self.height * self.width;
        let source_channel = match self.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };

        for (y, row) in image.rows().enumerate() {
            for (x, pixel) in row.enumerate() {
                let column = if flip { self.width - 1 - x } else { x };
                let position = y * self.width + column;
                for (plane_index, &channel) in source_channel.iter().enumerate() {
                    out[plane_index * plane + position] = table[usize::from(pixel.0[channel])];
                }
            }
        }
    }
}

impl Normalization {
    /// Returns the float value of every 8-bit pixel value.
    fn table(self) -> [f32; 256] {
        let mut table = [0.0; 256];
        for (value, slot) in table.iter_mut().enumerate() {
            let x = value as f32;
            *slot = match self {
                Self::Insightface => (x / 255.0 - 0.5) / 0.5,
                Self::Reference => (x - 127.5) / 128.0,
            };
        }
        table
    }
}

/// Decodes an encoded image of any enabled format into 8-bit RGB.
pub(crate) fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    reader.limits(limits);

    let image = reader.decode()?.into_rgb8();
    if image.width() == 0 || image.height() == 0 {
        return Err(ImageError::Parameter(ParameterError::from_kind(
            ParameterErrorKind::DimensionMismatch,
        )));
    }
    Ok(image)
}

/// Pads `image` with replicated edges, centred, to at least `target` and to its aspect ratio.
fn pad_to_aspect(image: &RgbImage, target: (u32, u32)) -> RgbImage {
    let (width, height) = image.dimensions();
    let (target_width, target_height) = (u64::from(target.0), u64::from(target.1));
    let width_for_height = (u64::from(height) * target_width).div_ceil(target_height);
    let height_for_width = (u64::from(width) * target_height).div_ceil(target_width);
    let canvas_width = u64::from(width).max(target_width).max(width_for_height) as u32;
    let canvas_height = u64::from(height).max(target_height).max(height_for_width) as u32;

    let left = (canvas_width - width) / 2;
    let top = (canvas_height - height) / 2;
    RgbImage::from_fn(canvas_width, canvas_height, |x, y| {
        let source_x = x.saturating_sub(left).min(width - 1);
        let source_y = y.saturating_sub(top).min(height - 1);
        *image.get_pixel(source_x, source_y)
    })
}

/// Cuts the largest centred region of `image` with the aspect ratio of `target`.
fn crop_to_aspect(image: &RgbImage, target: (u32, u32)) -> RgbImage {
    let (width, height) = image.dimensions();
    let (target_width, target_height) = (u64::from(target.0), u64::from(target.1));
    // The crop keeps the full width or the full height, whichever limits the aspect ratio.
    let height_for_width = u64::from(width) * target_height / target_width;
    let (crop_width, crop_height) = if height_for_width <= u64::from(height) {
        (width, height_for_width.max(1) as u32)
    } else {
        let width_for_height = u64::from(height) * target_width / target_height;
        (width_for_height.max(1) as u32, height)
    };
    let left = (width - crop_width) / 2;
    let top = (height - crop_height) / 2;
    imageops::crop_imm(image, left, top, crop_width, crop_height).to_image()
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Luma, Rgb};

    use super::*;

    fn png(image: &image::DynamicImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    fn preprocess(height: usize, width: usize) -> Preprocess {
        Preprocess { height, width, ..Preprocess::default() }
    }

    #[test]
    fn normalisations_match_their_formulas() {
        let insightface = Normalization::Insightface.table();
        assert_eq!(insightface[0], -1.0);
        assert_eq!(insightface[255], 1.0);
        let reference = Normalization::Reference.table();
        assert_eq!(reference[0], -127.5 / 128.0);
        assert_eq!(reference[255], 127.5 / 128.0);
    }

    #[test]
    fn planes_follow_channel_order_and_flip() {
        // 2x1 image: left pixel (255, 0, 0), right pixel (0, 0, 255).
        let mut image = RgbImage::new(2, 1);
        image.put_pixel(0, 0, Rgb([255, 0, 0]));
        image.put_pixel(1, 0, Rgb([0, 0, 255]));
        let bytes = png(&image.into());

        let rgb = preprocess(1, 2).decode(&bytes, false).unwrap();
        assert_eq!(rgb, vec![1.0, -1.0, -1.0, -1.0, -1.0, 1.0]);

        let flipped = preprocess(1, 2).decode(&bytes, true).unwrap();
        assert_eq!(flipped, vec![-1.0, 1.0, -1.0, -1.0, 1.0, -1.0]);

        let bgr = Preprocess { channel_order: ChannelOrder::Bgr, ..preprocess(1, 2) };
        assert_eq!(bgr.decode(&bytes, false).unwrap(), vec![-1.0, 1.0, -1.0, -1.0, 1.0, -1.0]);
    }

    #[test]
    fn grayscale_is_replicated() {
        let image = GrayImage::from_pixel(3, 3, Luma([255]));
        let out = preprocess(3, 3).decode(&png(&image.into()), false).unwrap();
        assert!(out.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn pad_replicates_edges_centred() {
        // 1 pixel wide column, padded to 3 wide: every column repeats the source.
        let mut image = GrayImage::new(1, 3);
        for y in 0..3 {
            image.put_pixel(0, y, Luma([y as u8 * 100]));
        }
        let pad = Preprocess { resize: ResizeMode::Pad, ..preprocess(3, 3) };
        let out = pad.decode(&png(&image.into()), false).unwrap();
        let expected_row = |y: usize| (y as f32 * 100.0 / 255.0 - 0.5) / 0.5;
        for y in 0..3 {
            for x in 0..3 {
                assert_eq!(out[y * 3 + x], expected_row(y), "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn pad_keeps_aspect_before_shrinking() {
        let image = RgbImage::new(40, 20);
        let padded = pad_to_aspect(&image, (10, 10));
        assert_eq!(padded.dimensions(), (40, 40));
        let orl = pad_to_aspect(&RgbImage::new(92, 112), (112, 112));
        assert_eq!(orl.dimensions(), (112, 112));
    }

    #[test]
    fn crop_keeps_centred_region() {
        let orl = crop_to_aspect(&RgbImage::new(92, 112), (32, 32));
        assert_eq!(orl.dimensions(), (92, 92));
        let wide = crop_to_aspect(&RgbImage::new(40, 20), (10, 10));
        assert_eq!(wide.dimensions(), (20, 20));
        let same = crop_to_aspect(&RgbImage::new(30, 20), (6, 4));
        assert_eq!(same.dimensions(), (30, 20));
    }

    #[test]
    fn crop_drops_the_border_rows() {
        // A 2x4 image whose rows are 0, 100, 200, 250: the square crop keeps rows 1 and 2.
        let mut image = GrayImage::new(2, 4);
        for (y, value) in [0u8, 100, 200, 250].into_iter().enumerate() {
            for x in 0..2 {
                image.put_pixel(x, y as u32, Luma([value]));
            }
        }
        let crop = Preprocess { resize: ResizeMode::Crop, ..preprocess(2, 2) };
        let out = crop.decode(&png(&image.into()), false).unwrap();
        let normalised = |value: f32| (value / 255.0 - 0.5) / 0.5;
        assert_eq!(out[0], normalised(100.0), "top row");
        assert_eq!(out[2], normalised(200.0), "bottom row");
    }

    #[test]
    fn resize_stretches_to_target() {
        let image = RgbImage::from_pixel(7, 5, Rgb([10, 20, 30]));
        let out = preprocess(4, 4).decode(&png(&image.into()), false).unwrap();
        assert_eq!(out.len(), 48);
        assert!((out[0] - (10.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    }

    #[test]
    fn oversized_image_is_rejected() {
        let image = RgbImage::new(MAX_DECODED_SIDE + 1, 1);
        let error = preprocess(2, 2).decode(&png(&image.into()), false).unwrap_err();
        assert!(matches!(error, ImageError::Limits(_)), "{error}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(preprocess(2, 2).decode(b"not an image", false).is_err());
        assert!(preprocess(2, 2).decode(&[], false).is_err());
    }
}
