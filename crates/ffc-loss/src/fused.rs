//! The loss of a cosine matrix and its gradient as one loop per row, for the CPU backend.
//!
//! The tensor version in `crate::analytic` runs about fifteen elementwise operations over the
//! `[rows, Q]` cosine matrix, each allocating its result, and gathers the pooled and the outlier
//! rows into matrices of their own. On the host a pooled row takes four passes, all of which the
//! compiler vectorises: the largest logit, the exponentials, their sums, and the scaling into
//! the gradient. An outlier row takes one pass that keeps its largest cosines. In a pass with
//! hit slots the same loop also scores the row of C2 (`crate::hits`) between the sums and the
//! scaling, so the row is read and written while it is in cache.
//!
//! The exponential is a polynomial (see [`exp`]) rather than the C library's scalar `expf`,
//! which cannot be vectorised. Sums run in [`LANES`] independent f32 lanes over blocks of
//! [`BLOCK`] entries, and the block sums are added in f64. The order of every sum is fixed by
//! those constants, not by the instruction set, so results are the same on every x86 CPU.

use rayon::prelude::*;

use crate::hits::PooledRow;
use crate::margin::{LossKind, MarginLoss};

/// Independent accumulators of the row sums, a multiple of every SIMD width in use.
const LANES: usize = 16;

/// Entries summed in f32 before the block sum joins the f64 total.
const BLOCK: usize = 512;

/// The second cosine matrix of a pass where it differs from the first.
pub(crate) struct HitColumns<'a> {
    /// The hit slots, sorted.
    pub hits: &'a [usize],
    /// C2 in the hit columns, `[rows, h]` row-major.
    pub c2: &'a [f32],
}

/// The loss and gradient of one cosine matrix, or of both matrices of a pass with hits, on the
/// host.
pub(crate) struct FusedTerms {
    /// loss(C1): the pooled rows' mean cross-entropy plus the outlier rows' penalty.
    pub loss: f32,
    /// loss(C2), 0 without hit columns.
    pub second_loss: f32,
    /// `dL/d cos` of C1 alone, or A of `crate::hits` with hit columns, `[rows, n_slots]`
    /// row-major.
    pub grad: Vec<f32>,
    /// H of `crate::hits`, G2 in the hit columns, `[rows, h]` row-major. Empty without hit
    /// columns.
    pub hit_grad: Vec<f32>,
}

/// One row's share of the losses, before the division by the number of rows.
struct RowLoss {
    /// Cross-entropy for a pooled row, the sum of its penalised cosines for an outlier row.
    first: f64,
    pooled: bool,
    /// The row's share of loss(C2), already divided.
    second: f64,
}

/// Inputs that every row of a pass shares.
struct PassRows<'a> {
    /// 1 outside the hit columns, 0 in them.
    outside: Vec<f32>,
    pooled: usize,
    outliers: usize,
    /// Largest cosines kept per outlier row: k, plus h with hit columns.
    top: usize,
    second: Option<&'a HitColumns<'a>>,
}

impl MarginLoss {
    /// Scores the row-major `[rows, n_slots]` cosines C1, and with `second` the pass's C2 as
    /// well. `labels` contains each row's slot, or -1 for an outlier row.
    pub(crate) fn fused_terms(
        &self,
        cos: &[f32],
        n_slots: usize,
        labels: &[i64],
        second: Option<&HitColumns<'_>>,
    ) -> FusedTerms {
        let rows = labels.len();
        let pooled = labels.iter().filter(|&&label| label >= 0).count();
        let h = second.map_or(0, |columns| columns.hits.len());
        let mut outside = vec![1.0f32; n_slots];
        second.iter().flat_map(|columns| columns.hits).for_each(|&slot| outside[slot] = 0.0);
        let pass = PassRows {
            outside,
            pooled,
            outliers: rows - pooled,
            top: (self.hard_negatives + h).min(n_slots),
            second,
        };

        let mut grad = vec![0.0f32; rows * n_slots];
        // Every row needs a chunk of its own to zip with, even when h is 0.
        let width = h.max(1);
        let mut hit_grad = vec![0.0f32; rows * width];
        // Rows run in parallel; the sums below add them in row order, so the result does not
        // depend on the thread count.
        let losses: Vec<RowLoss> = cos
            .par_chunks_exact(n_slots)
            .zip(grad.par_chunks_exact_mut(n_slots))
            .zip(hit_grad.par_chunks_exact_mut(width))
            .zip(labels.par_iter().enumerate())
            .map(|(((row, out), hit_grad), (index, &label))| {
                let c2 = second.map_or(&[][..], |columns| &columns.c2[index * h..(index + 1) * h]);
                match usize::try_from(label) {
                    Ok(target) => self.pooled_row(&pass, (row, out), target, (c2, hit_grad)),
                    Err(_) => self.outlier_row(&pass, (row, out), (c2, hit_grad)),
                }
            })
            .collect();
        hit_grad.truncate(rows * h);
        let (loss, second_loss) = self.add_rows(&losses);
        FusedTerms { loss, second_loss, grad, hit_grad }
    }

    /// Adds up the rows' losses in row order: `(loss(C1), loss(C2))`.
    fn add_rows(&self, losses: &[RowLoss]) -> (f32, f32) {
        let pooled_rows = losses.iter().filter(|row| row.pooled).count();
        let outlier_rows = losses.len() - pooled_rows;
        let (mut pooled_loss, mut outlier_loss, mut second) = (0.0f64, 0.0f64, 0.0f64);
        for row in losses {
            if row.pooled {
                pooled_loss += row.first;
            } else {
                outlier_loss += row.first;
            }
            second += row.second;
        }
        let mut loss = 0.0;
        if pooled_rows > 0 {
            loss += pooled_loss / pooled_rows as f64;
        }
        if outlier_rows > 0 {
            loss += outlier_loss / (outlier_rows * self.hard_negatives) as f64;
        }
        (loss as f32, second as f32)
    }

    /// Scores one pooled row into `out`: G1, or A with hit columns (see `crate::hits`).
    fn pooled_row(
        &self,
        pass: &PassRows<'_>,
        (row, out): (&[f32], &mut [f32]),
        target: usize,
        (c2, hit_grad): (&[f32], &mut [f32]),
    ) -> RowLoss {
        let mut second = None;
        let values = self.fused_row((row, out), target, &pass.outside, pass.pooled, |values| {
            let columns = pass.second?;
            let stats = PooledRow {
                target,
                log_sum_exp: values.log_sum_exp,
                target_cos: f64::from(row[target]),
                outside_mass: values.outside_mass,
            };
            let row_second = self.pooled_second(columns.hits, &stats, c2, pass.pooled, hit_grad);
            let rescale = row_second.rescale;
            second = Some(row_second);
            Some(rescale)
        });
        let Some(second) = second else {
            return RowLoss { first: values.loss, pooled: true, second: 0.0 };
        };
        // Set M's entries to G1 + G2, or to G1 in the hit columns. G1 is computed again as
        // pass 4 of `fused_row` would have written it, because `out` now contains (1 + r) G1.
        let hits = pass.second.map_or(&[][..], |columns| columns.hits);
        for &(column, grad2) in &second.entries {
            let grad1 = if column == target {
                values.target_grad
            } else {
                f64::from(exp(self.scale * row[column] - values.max) * values.factor)
            };
            let grad2 = if hits.binary_search(&column).is_ok() { 0.0 } else { grad2 };
            out[column] = (grad1 + grad2) as f32;
        }
        RowLoss { first: values.loss, pooled: true, second: second.loss }
    }

    /// Scores one outlier row into `out`: G1, or A with hit columns (see `crate::hits`).
    fn outlier_row(
        &self,
        pass: &PassRows<'_>,
        (row, out): (&[f32], &mut [f32]),
        (c2, hit_grad): (&[f32], &mut [f32]),
    ) -> RowLoss {
        let k = self.hard_negatives;
        let columns = self.penalty_row(row, out, pass.top, pass.outliers);
        let first = columns[..k].iter().map(|&c| f64::from(row[c].max(0.0))).sum::<f64>();
        let Some(hit_columns) = pass.second else {
            return RowLoss { first, pooled: false, second: 0.0 };
        };
        let hits = hit_columns.hits;
        let top = columns.iter().map(|&column| (column, row[column]));
        let second = self.outlier_second(hits, top, c2, pass.outliers, hit_grad);
        // r is 0, so A is G1 with M's entries set to G1 + G2, or to G1 in the hit columns.
        for &(column, grad2) in &second.entries {
            if hits.binary_search(&column).is_err() {
                out[column] += grad2 as f32;
            }
        }
        RowLoss { first, pooled: false, second: second.loss }
    }

    /// Writes the top-k penalty's gradient of one outlier row into `out`, which contains zeros:
    /// `1 / (outliers k)` on each of the k largest cosines that is positive. Returns the
    /// positions of the `top` largest cosines, descending.
    fn penalty_row(&self, row: &[f32], out: &mut [f32], top: usize, outliers: usize) -> Vec<usize> {
        let columns = host_top_k(row, top);
        let weight = 1.0 / (outliers * self.hard_negatives) as f32;
        for &column in &columns[..self.hard_negatives] {
            if row[column] > 0.0 {
                out[column] = weight;
            }
        }
        columns
    }

    /// Writes the gradient of one row into `out` and returns its loss and softmax values.
    /// `outside` is 1 in the columns outside the hit slots and 0 in the hit slots.
    ///
    /// `rescale` runs once the row's softmax sum is known and may return an r: every entry is
    /// then written as `(1 + r)` times its gradient, the target's included.
    ///
    /// On x86-64 CPUs with AVX-512 or AVX2, the same code runs compiled for their sixteen- or
    /// eight-wide registers. The results are identical, because every operation runs in the
    /// same order.
    fn fused_row(
        &self,
        (row, out): (&[f32], &mut [f32]),
        target: usize,
        outside: &[f32],
        rows: usize,
        rescale: impl FnOnce(&RowValues) -> Option<f64>,
    ) -> RowValues {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked on the line above.
                #[allow(unsafe_code)]
                return unsafe {
                    self.fused_row_avx512((row, out), target, outside, rows, rescale)
                };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked on the line above.
                #[allow(unsafe_code)]
                return unsafe { self.fused_row_avx2((row, out), target, outside, rows, rescale) };
            }
        }
        self.fused_row_body((row, out), target, outside, rows, rescale)
    }

    /// [`fused_row`](Self::fused_row) compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn fused_row_avx512(
        &self,
        row_out: (&[f32], &mut [f32]),
        target: usize,
        outside: &[f32],
        rows: usize,
        rescale: impl FnOnce(&RowValues) -> Option<f64>,
    ) -> RowValues {
        self.fused_row_body(row_out, target, outside, rows, rescale)
    }

    /// [`fused_row`](Self::fused_row) compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fused_row_avx2(
        &self,
        row_out: (&[f32], &mut [f32]),
        target: usize,
        outside: &[f32],
        rows: usize,
        rescale: impl FnOnce(&RowValues) -> Option<f64>,
    ) -> RowValues {
        self.fused_row_body(row_out, target, outside, rows, rescale)
    }

    /// The body of [`fused_row`](Self::fused_row), inlined into each compiled version.
    #[inline(always)]
    fn fused_row_body(
        &self,
        (row, out): (&[f32], &mut [f32]),
        target: usize,
        outside: &[f32],
        rows: usize,
        rescale: impl FnOnce(&RowValues) -> Option<f64>,
    ) -> RowValues {
        let scale = self.scale;
        let g = f64::from(row[target]);
        let target_logit = f64::from(scale) * self.target_logit(g);
        // SV re-weights the cosines above g - m; the target entry is replaced either way.
        let sv = self.kind == LossKind::Sv;
        let threshold = (g - f64::from(self.margin)) as f32;
        let (t, t_offset) = (self.sv_t, self.sv_t - 1.0);
        let logit = |c: f32| scale * if sv && c > threshold { c * t + t_offset } else { c };

        // Pass 1: the largest logit.
        let max = lane_max(row, logit).max(target_logit as f32);

        // Pass 2: exponentials, with the target's margin logit in its place.
        for (z, &c) in out.iter_mut().zip(row) {
            *z = exp(logit(c) - max);
        }
        out[target] = exp(target_logit as f32 - max);

        // Pass 3: their sum and the part outside the hit columns.
        let (sum, outside_sum) = lane_sums(out, outside);
        let log_sum_exp = f64::from(max) + sum.ln();
        let p_target = f64::from(out[target]) / sum;
        let weight = f64::from(scale) / rows as f64;
        let values = RowValues {
            loss: log_sum_exp - target_logit,
            log_sum_exp,
            outside_mass: outside_sum / sum,
            max,
            factor: (weight / sum) as f32,
            target_grad: weight * (p_target - 1.0) * self.target_slope(g),
        };
        let amplify = 1.0 + rescale(&values).unwrap_or(0.0);

        // Pass 4: (1 + r) (p / rows) s for every entry, times t for SV's re-weighted ones.
        let factor = (weight / sum * amplify) as f32;
        if sv {
            let weighted = factor * t;
            for (z, &c) in out.iter_mut().zip(row) {
                *z *= if c > threshold { weighted } else { factor };
            }
        } else {
            out.iter_mut().for_each(|z| *z *= factor);
        }
        out[target] = (values.target_grad * amplify) as f32;
        values
    }
}

/// Loss and softmax values of one row.
struct RowValues {
    loss: f64,
    log_sum_exp: f64,
    /// Softmax mass outside the hit columns.
    outside_mass: f64,
    /// The largest logit, which every exponential is taken relative to.
    max: f32,
    /// `(s / rows) / sum`: an entry's exponential times this is its gradient.
    factor: f32,
    /// The target entry's gradient.
    target_grad: f64,
}

/// Returns the largest `logit(c)` over `row`, ignoring NaN.
#[inline(always)]
fn lane_max(row: &[f32], logit: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &c) in lanes.iter_mut().zip(chunk) {
            let z = logit(c);
            *lane = if z > *lane { z } else { *lane };
        }
    }
    let tail_max = tail.iter().fold(f32::NEG_INFINITY, |m, &c| m.max(logit(c)));
    lanes.iter().fold(tail_max, |m, &lane| m.max(lane))
}

/// Returns `(sum of values, sum of values * mask)` in f64, from f32 lane sums over fixed
/// blocks.
#[inline(always)]
fn lane_sums(values: &[f32], mask: &[f32]) -> (f64, f64) {
    let (mut sum, mut masked) = (0.0f64, 0.0f64);
    for (block, mask_block) in values.chunks(BLOCK).zip(mask.chunks(BLOCK)) {
        let mut lanes = [0.0f32; LANES];
        let mut masked_lanes = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES).zip(mask_block.chunks_exact(LANES));
        for (chunk, mask_chunk) in chunks {
            let chunk: &[f32; LANES] = chunk.try_into().expect("chunks_exact gives LANES");
            let mask_chunk: &[f32; LANES] =
                mask_chunk.try_into().expect("chunks_exact gives LANES");
            for i in 0..LANES {
                lanes[i] += chunk[i];
                masked_lanes[i] += chunk[i] * mask_chunk[i];
            }
        }
        let tail = block.len() - block.len() % LANES;
        for (&value, &keep) in block[tail..].iter().zip(&mask_block[tail..]) {
            sum += f64::from(value);
            masked += f64::from(value * keep);
        }
        sum += lanes.iter().map(|&v| f64::from(v)).sum::<f64>();
        masked += masked_lanes.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    (sum, masked)
}

/// Returns `e^x` within 2 ulp for x in [-87, 88], 0 below that range and `e^88` above it.
/// NaN stays NaN.
///
/// It writes x as `n ln 2 + r` with n an integer and |r| <= ln(2) / 2, subtracting `n ln 2` in
/// two parts so that r keeps its precision, evaluates `e^r` with its Taylor series to degree 7
/// (truncation error below 1e-8) and adds n to the exponent bits. Every step is a plain
/// arithmetic operation, so loops over it vectorise.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 split so that n * LN_2_HIGH is exact for every n used here.
    const LN_2_HIGH: f32 = 0.693_145_75;
    const LN_2_LOW: f32 = 1.428_606_8e-6;
    // 1 / k! for k = 2..=7.
    const C: [f32; 6] = [0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];
    let below = x < -87.0;
    let clamped = if below {
        -87.0
    } else if x > 88.0 {
        88.0
    } else {
        x
    };
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let whole = shifted - ROUND;
    let r = (clamped - whole * LN_2_HIGH) - whole * LN_2_LOW;
    let tail = C.iter().rev().fold(0.0f32, |acc, &c| acc * r + c);
    let e_r = 1.0 + r + r * r * tail;
    let value = f32::from_bits((e_r.to_bits() as i32 + (n << 23)) as u32);
    if below {
        0.0
    } else if x.is_nan() {
        x
    } else {
        value
    }
}

/// Positions of the k largest values of `row` (the first of equal values wins), in one pass.
pub(crate) fn host_top_k(row: &[f32], k: usize) -> Vec<usize> {
    // `best` contains (value, position) sorted by descending value. k is small: at most the
    // penalised count (10) plus the pass's hit slots.
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for (position, &value) in row.iter().enumerate() {
        if best.len() == k && value <= best[k - 1].0 {
            continue;
        }
        let at = best.iter().position(|&(v, _)| value > v).unwrap_or(best.len());
        best.insert(at, (value, position));
        best.truncate(k);
    }
    best.into_iter().map(|(_, position)| position).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_library_within_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (fast, exact) = (exp(x), f64::from(x).exp());
            let ulp = f64::from(f32::EPSILON) * exact;
            worst = worst.max((f64::from(fast) - exact).abs() / ulp);
            x += 0.001_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn exp_handles_the_ends() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn lane_sums_match_a_plain_sum() {
        let values: Vec<f32> = (0..1_037).map(|i| ((i * 7919) % 1000) as f32 / 999.0).collect();
        let mask: Vec<f32> = (0..1_037).map(|i| f32::from(u8::from(i % 3 != 0))).collect();
        let (sum, masked) = lane_sums(&values, &mask);
        let plain: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let plain_masked: f64 = values.iter().zip(&mask).map(|(&v, &m)| f64::from(v * m)).sum();
        assert!((sum - plain).abs() <= 1e-6 * plain, "{sum} vs {plain}");
        assert!((masked - plain_masked).abs() <= 1e-6 * plain_masked);
        let plain_max = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(2.0 * v));
        assert_eq!(lane_max(&values, |c| 2.0 * c), plain_max);
    }

    #[test]
    fn host_top_k_keeps_largest() {
        assert_eq!(host_top_k(&[0.1, 0.9, 0.3, 0.9, -1.0, 0.5], 3), vec![1, 3, 5]);
        assert_eq!(host_top_k(&[0.2, 0.1], 2), vec![0, 1]);
        assert_eq!(host_top_k(&[f32::NEG_INFINITY, 0.0, 0.0], 1), vec![1]);
    }
}
