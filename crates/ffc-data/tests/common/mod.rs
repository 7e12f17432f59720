//! Helpers shared by the integration tests: fixture paths and synthetic image folders.

#![allow(dead_code, unreachable_pub)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, Rgb, RgbImage};

/// Side of the synthetic test images in pixels.
pub const SIDE: u32 = 8;

/// Returns the folder of checked-in test data.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("data")
}

/// Encodes a synthetic face as PNG: red = `identity`, green = `index`, and blue = 0 in the
/// left half and 255 in the right half, so that decoded pixels reveal identity, image and flip.
pub fn synthetic_png(identity: u8, index: u8) -> Vec<u8> {
    let image = RgbImage::from_fn(SIDE, SIDE, |x, _| {
        Rgb([identity, index, if x < SIDE / 2 { 0 } else { 255 }])
    });
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
    bytes
}

/// Writes an image folder with one sub-folder `id000`, `id001`, … per entry of `counts`,
/// holding that many synthetic PNG faces `00.png`, `01.png`, ….
pub fn write_face_folder(root: &Path, counts: &[usize]) {
    for (identity, &count) in counts.iter().enumerate() {
        let folder = root.join(format!("id{identity:03}"));
        std::fs::create_dir_all(&folder).unwrap();
        for index in 0..count {
            let bytes = synthetic_png(identity as u8, index as u8);
            std::fs::write(folder.join(format!("{index:02}.png")), bytes).unwrap();
        }
    }
}

/// What a decoded synthetic face shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub identity: u8,
    pub index: u8,
    pub flipped: bool,
}

/// Reads back a synthetic face decoded at `SIDE × SIDE` with insightface normalisation.
pub fn read_decoded(pixels: &[f32]) -> Decoded {
    let plane = (SIDE * SIDE) as usize;
    assert_eq!(pixels.len(), 3 * plane);
    let value = |v: f32| ((v + 1.0) * 127.5).round() as u8;
    Decoded {
        identity: value(pixels[0]),
        index: value(pixels[plane]),
        flipped: value(pixels[2 * plane]) == 255,
    }
}
