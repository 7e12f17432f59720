//! Helpers shared by the integration tests: fixture paths and synthetic image folders.

#![allow(dead_code, unreachable_pub)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// Runs `f` with a log subscriber on the calling thread and returns its result and the log
/// text. Events from other threads are not captured.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buffer = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buffer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    // With a single registered dispatcher, tracing-core 0.1 caches a callsite's interest from
    // the default of whichever thread reaches the callsite first. A test running on another
    // thread would then disable the callsite for this one. A second registered dispatcher makes
    // the cached interest "sometimes", so every event goes to its own thread's subscriber.
    let _second_dispatcher = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (result, text)
}

/// A shared byte buffer that a log subscriber writes to.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Formats an error with its causes, `outer: cause: inner cause`, as `anyhow` prints `{:#}`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
