//! Random changes applied to decoded training images: translation, scale and rotation, and
//! brightness and contrast.
//!
//! All of them work on the normalised CHW planes at the input size, after decoding. The loader's
//! planner draws each image's [`Jitter`] from the step's generator, so a resumed run applies the
//! same changes. A setting of 0 draws nothing, which keeps the random sequence of runs that do
//! not use it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Strength of each random change to training images. A field at 0 turns its change off.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Mirror each image left-right with probability 0.5.
    pub flip: bool,
    /// Translation by a whole number of pixels in `[-max_shift, max_shift]` along each axis,
    /// repeating the edge pixels.
    pub max_shift: usize,
    /// Zoom by a factor drawn uniformly from `[1 - max_scale, 1 + max_scale]`, about the centre.
    pub max_scale: f32,
    /// Rotation by an angle drawn uniformly from `[-max_rotation, max_rotation]` degrees, about
    /// the centre.
    pub max_rotation: f32,
    /// Offset drawn uniformly from `[-max_brightness, max_brightness]`, added to every
    /// normalised value (insightface normalisation spans 2 units from black to white).
    pub max_brightness: f32,
    /// Contrast factor drawn uniformly from `[1 - max_contrast, 1 + max_contrast]`, multiplying
    /// every normalised value about 0.
    pub max_contrast: f32,
}

impl Augment {
    /// Checks that every range is usable, naming the first bad setting.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            ("max_scale", self.max_scale, 0.0..1.0),
            ("max_rotation", self.max_rotation, 0.0..180.0),
            ("max_brightness", self.max_brightness, 0.0..f32::MAX),
            ("max_contrast", self.max_contrast, 0.0..1.0),
        ];
        for (name, value, range) in checks {
            if !range.contains(&value) {
                return Err(format!(
                    "{name} is {value}, outside [{}, {}): use a finite value in that range",
                    range.start, range.end
                ));
            }
        }
        Ok(())
    }

    /// Draws the changes of one image. Settings at 0 draw nothing.
    pub(crate) fn draw(&self, rng: &mut ChaCha8Rng) -> Jitter {
        let flip = self.flip && rng.random_bool(0.5);
        let shift = if self.max_shift > 0 {
            let max = self.max_shift as i32;
            (rng.random_range(-max..=max), rng.random_range(-max..=max))
        } else {
            (0, 0)
        };
        let mut symmetric = |max: f32| if max > 0.0 { rng.random_range(-max..=max) } else { 0.0 };
        Jitter {
            flip,
            shift,
            scale: 1.0 + symmetric(self.max_scale),
            angle: symmetric(self.max_rotation).to_radians(),
            brightness: symmetric(self.max_brightness),
            contrast: 1.0 + symmetric(self.max_contrast),
        }
    }
}

/// The changes drawn for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Jitter {
    /// Mirror left-right while decoding.
    pub(crate) flip: bool,
    /// Translation `(dx, dy)` in whole pixels.
    pub(crate) shift: (i32, i32),
    /// Zoom factor; above 1 enlarges the face.
    pub(crate) scale: f32,
    /// Rotation in radians; a positive angle turns the image clockwise on screen.
    pub(crate) angle: f32,
    /// Offset added to every normalised value.
    pub(crate) brightness: f32,
    /// Factor applied to every normalised value.
    pub(crate) contrast: f32,
}

impl Jitter {
    /// No change at all.
    #[cfg(test)]
    pub(crate) const NONE: Self =
        Self { flip: false, shift: (0, 0), scale: 1.0, angle: 0.0, brightness: 0.0, contrast: 1.0 };

    /// Applies everything but the flip (done while decoding) to the CHW planes of one image.
    pub(crate) fn apply(&self, pixels: &mut [f32], height: usize, width: usize) {
        shift_planes(pixels, height, width, self.shift);
        if self.scale != 1.0 || self.angle != 0.0 {
            warp_planes(pixels, height, width, self.scale, self.angle);
        }
        if self.brightness != 0.0 || self.contrast != 1.0 {
            pixels.iter_mut().for_each(|v| *v = *v * self.contrast + self.brightness);
        }
    }
}

/// Translates every `height x width` plane of `pixels` by `(dx, dy)`, repeating edge pixels into
/// the uncovered border.
pub(crate) fn shift_planes(pixels: &mut [f32], height: usize, width: usize, (dx, dy): (i32, i32)) {
    if (dx, dy) == (0, 0) {
        return;
    }
    let source_index = |at: usize, by: i32, len: usize| -> usize {
        (at as i64 - by as i64).clamp(0, len as i64 - 1) as usize
    };
    let mut plane_copy = vec![0.0; height * width];
    for plane in pixels.chunks_exact_mut(height * width) {
        plane_copy.copy_from_slice(plane);
        for y in 0..height {
            let from_y = source_index(y, dy, height);
            for x in 0..width {
                plane[y * width + x] = plane_copy[from_y * width + source_index(x, dx, width)];
            }
        }
    }
}

/// Zooms every plane by `scale` and rotates it by `angle` about its centre, sampling the source
/// bilinearly with edge pixels repeated outside it.
fn warp_planes(pixels: &mut [f32], height: usize, width: usize, scale: f32, angle: f32) {
    let (centre_x, centre_y) = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
    // Inverse map: output offset -> source offset, rotated by -angle and divided by scale.
    let (sin, cos) = angle.sin_cos();
    let (cos, sin) = (cos / scale, sin / scale);
    let mut plane_copy = vec![0.0; height * width];
    for plane in pixels.chunks_exact_mut(height * width) {
        plane_copy.copy_from_slice(plane);
        for y in 0..height {
            let oy = y as f32 - centre_y;
            for x in 0..width {
                let ox = x as f32 - centre_x;
                let source_x = cos * ox + sin * oy + centre_x;
                let source_y = -sin * ox + cos * oy + centre_y;
                plane[y * width + x] = bilinear(&plane_copy, height, width, source_x, source_y);
            }
        }
    }
}

/// Samples `plane` at `(x, y)`, clamping the position into the plane first.
fn bilinear(plane: &[f32], height: usize, width: usize, x: f32, y: f32) -> f32 {
    let x = x.clamp(0.0, (width - 1) as f32);
    let y = y.clamp(0.0, (height - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize| plane[yy * width + xx];
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn shift_moves_pixels_and_repeats_edges() {
        let mut plane: Vec<f32> = (0..6).map(|v| v as f32).collect();
        shift_planes(&mut plane, 2, 3, (1, 0));
        assert_eq!(plane, vec![0.0, 0.0, 1.0, 3.0, 3.0, 4.0]);
        let mut plane: Vec<f32> = (0..6).map(|v| v as f32).collect();
        shift_planes(&mut plane, 2, 3, (-1, 1));
        assert_eq!(plane, vec![1.0, 2.0, 2.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn quarter_turn_rotates_the_plane() {
        // 3x3 plane, turned clockwise by 90 degrees about its centre: the top row becomes the
        // right column.
        let mut plane: Vec<f32> = (0..9).map(|v| v as f32).collect();
        warp_planes(&mut plane, 3, 3, 1.0, std::f32::consts::FRAC_PI_2);
        let expected = [6.0, 3.0, 0.0, 7.0, 4.0, 1.0, 8.0, 5.0, 2.0];
        for (got, want) in plane.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{plane:?}");
        }
    }

    #[test]
    fn zoom_samples_between_pixels() {
        // A horizontal ramp zoomed by 2 about the centre halves its slope.
        let mut plane: Vec<f32> = (0..5).map(|v| v as f32).collect();
        warp_planes(&mut plane, 1, 5, 2.0, 0.0);
        assert_eq!(plane, vec![1.0, 1.5, 2.0, 2.5, 3.0]);
    }

    #[test]
    fn no_jitter_keeps_pixels() {
        let mut plane: Vec<f32> = (0..12).map(|v| v as f32 / 7.0).collect();
        let before = plane.clone();
        Jitter::NONE.apply(&mut plane, 2, 2);
        assert_eq!(plane, before);
    }

    #[test]
    fn tone_scales_then_offsets() {
        let mut plane = vec![-1.0, 0.0, 0.5];
        let jitter = Jitter { brightness: 0.1, contrast: 0.5, ..Jitter::NONE };
        jitter.apply(&mut plane, 1, 3);
        for (got, want) in plane.iter().zip([-0.4, 0.1, 0.35]) {
            assert!((got - want).abs() < 1e-6, "{plane:?}");
        }
    }

    #[test]
    fn draws_stay_in_range() {
        let augment = Augment {
            flip: true,
            max_shift: 2,
            max_scale: 0.1,
            max_rotation: 10.0,
            max_brightness: 0.2,
            max_contrast: 0.3,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let j = augment.draw(&mut rng);
            assert!((0.9..=1.1).contains(&j.scale), "{j:?}");
            assert!(j.angle.abs() <= 10f32.to_radians(), "{j:?}");
            assert!(j.brightness.abs() <= 0.2, "{j:?}");
            assert!((0.7..=1.3).contains(&j.contrast), "{j:?}");
            assert!(j.shift.0.abs() <= 2, "{j:?}");
            assert!(j.shift.1.abs() <= 2, "{j:?}");
        }
    }

    #[test]
    fn unused_settings_draw_nothing() {
        // With only the flip on, the generator advances by the flip draws alone.
        let flip_only = Augment { flip: true, ..Augment::default() };
        let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(9), ChaCha8Rng::seed_from_u64(9));
        let flips: Vec<bool> = (0..50).map(|_| flip_only.draw(&mut a).flip).collect();
        let direct: Vec<bool> = (0..50).map(|_| b.random_bool(0.5)).collect();
        assert_eq!(flips, direct);
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let bad = Augment { max_scale: 1.5, ..Augment::default() };
        assert!(bad.validate().unwrap_err().starts_with("max_scale is 1.5"));
        let nan = Augment { max_rotation: f32::NAN, ..Augment::default() };
        assert!(nan.validate().unwrap_err().starts_with("max_rotation is NaN"));
        assert!(Augment::default().validate().is_ok());
    }
}
