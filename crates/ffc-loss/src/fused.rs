//! The loss of a cosine matrix and its gradient as one loop per row, for the CPU backend.
//!
//! The tensor version in `crate::analytic` runs about fifteen elementwise operations over the
//! `[rows, Q]` cosine matrix, each allocating its result, and gathers the pooled and the outlier
//! rows into matrices of their own. On the host a pooled row takes four passes, all of which the
//! compiler vectorises: the largest logit, the exponentials, their sums, and the scaling into
//! the gradient. An outlier row takes one pass that keeps its largest cosines.
//!
//! The exponential is a polynomial (see [`exp`]) rather than the C library's scalar `expf`,
//! which cannot be vectorised. Sums run in [`LANES`] independent f32 lanes over blocks of
//! [`BLOCK`] entries, and the block sums are added in f64. The order of every sum is fixed by
//! those constants, not by the instruction set, so results are the same on every x86 CPU.

use rayon::prelude::*;

use crate::analytic::PooledTerms;
use crate::margin::{LossKind, MarginLoss};

/// Independent accumulators of the row sums, a multiple of every SIMD width in use.
const LANES: usize = 16;

/// Entries summed in f32 before the block sum joins the f64 total.
const BLOCK: usize = 512;

/// [`crate::analytic::LossTerms`] on the host.
pub(crate) struct FusedTerms {
    /// The loss: the pooled rows' mean cross-entropy plus the outlier rows' penalty.
    pub loss: f32,
    /// `dL/d cos`, `[rows, n_slots]` row-major.
    pub grad: Vec<f32>,
    /// Per-row values of the pooled rows, when there are any and hits were given.
    pub pooled: Option<PooledTerms>,
    /// Columns and values of the `top` largest cosines of every outlier row, descending,
    /// `[outliers, top]` row-major; `None` without outlier rows.
    pub outliers: Option<(Vec<i64>, Vec<f32>)>,
}

/// Per-row result besides the gradient.
enum RowResult {
    Pooled(RowValues),
    /// The positions of the row's `top` largest cosines, descending.
    Outlier(Vec<usize>),
}

impl MarginLoss {
    /// Computes what `tensor_terms` computes, from the row-major `[rows, n_slots]` cosines.
    /// `labels` contains each row's slot, or -1 for an outlier row.
    pub(crate) fn fused_terms(
        &self,
        cos: &[f32],
        n_slots: usize,
        labels: &[i64],
        top: usize,
        hits: &[usize],
    ) -> FusedTerms {
        let pooled = labels.iter().filter(|&&label| label >= 0).count();
        let outliers = labels.len() - pooled;
        let mut outside = vec![1.0f32; n_slots];
        hits.iter().for_each(|&slot| outside[slot] = 0.0);
        let mut grad = vec![0.0f32; labels.len() * n_slots];
        // Rows run in parallel; the sums below add them in row order, so the result does not
        // depend on the thread count.
        let results: Vec<RowResult> = cos
            .par_chunks_exact(n_slots)
            .zip(grad.par_chunks_exact_mut(n_slots))
            .zip(labels.par_iter())
            .map(|((row, out), &label)| match usize::try_from(label) {
                Ok(target) => RowResult::Pooled(self.fused_row(row, out, target, &outside, pooled)),
                Err(_) => RowResult::Outlier(self.penalty_row(row, out, top, outliers)),
            })
            .collect();
        self.collect_rows(cos, n_slots, labels, results, !hits.is_empty(), grad)
    }

    /// Adds up the rows' losses in row order and gathers their per-row values.
    fn collect_rows(
        &self,
        cos: &[f32],
        n_slots: usize,
        labels: &[i64],
        results: Vec<RowResult>,
        keep_pooled: bool,
        grad: Vec<f32>,
    ) -> FusedTerms {
        let k = self.hard_negatives;
        let pooled_rows = labels.iter().filter(|&&label| label >= 0).count();
        let outlier_rows = labels.len() - pooled_rows;

        let (mut pooled_loss, mut outlier_loss) = (0.0f64, 0.0f64);
        let mut pooled = PooledTerms::default();
        let (mut top_columns, mut top_values) = (Vec::new(), Vec::new());
        for ((result, row), &label) in
            results.into_iter().zip(cos.chunks_exact(n_slots)).zip(labels)
        {
            match result {
                RowResult::Pooled(value) => {
                    pooled_loss += value.loss;
                    pooled.log_sum_exp.push(value.log_sum_exp as f32);
                    pooled.target_cos.push(row[label as usize]);
                    pooled.outside_mass.push(value.outside_mass as f32);
                }
                RowResult::Outlier(columns) => {
                    outlier_loss +=
                        columns[..k].iter().map(|&c| f64::from(row[c].max(0.0))).sum::<f64>();
                    top_values.extend(columns.iter().map(|&c| row[c]));
                    top_columns.extend(columns.into_iter().map(|c| c as i64));
                }
            }
        }

        let mut loss = 0.0;
        if pooled_rows > 0 {
            loss += pooled_loss / pooled_rows as f64;
        }
        if outlier_rows > 0 {
            loss += outlier_loss / (outlier_rows * k) as f64;
        }
        FusedTerms {
            loss: loss as f32,
            grad,
            pooled: (keep_pooled && pooled_rows > 0).then_some(pooled),
            outliers: (outlier_rows > 0).then_some((top_columns, top_values)),
        }
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
    /// On x86-64 CPUs with AVX-512 or AVX2, the same code runs compiled for their sixteen- or
    /// eight-wide registers. The results are identical, because every operation runs in the
    /// same order.
    fn fused_row(
        &self,
        row: &[f32],
        out: &mut [f32],
        target: usize,
        outside: &[f32],
        rows: usize,
    ) -> RowValues {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked on the line above.
                #[allow(unsafe_code)]
                return unsafe { self.fused_row_avx512(row, out, target, outside, rows) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked on the line above.
                #[allow(unsafe_code)]
                return unsafe { self.fused_row_avx2(row, out, target, outside, rows) };
            }
        }
        self.fused_row_body(row, out, target, outside, rows)
    }

    /// [`fused_row`](Self::fused_row) compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn fused_row_avx512(
        &self,
        row: &[f32],
        out: &mut [f32],
        target: usize,
        outside: &[f32],
        rows: usize,
    ) -> RowValues {
        self.fused_row_body(row, out, target, outside, rows)
    }

    /// [`fused_row`](Self::fused_row) compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fused_row_avx2(
        &self,
        row: &[f32],
        out: &mut [f32],
        target: usize,
        outside: &[f32],
        rows: usize,
    ) -> RowValues {
        self.fused_row_body(row, out, target, outside, rows)
    }

    /// The body of [`fused_row`](Self::fused_row), inlined into each compiled version.
    #[inline(always)]
    fn fused_row_body(
        &self,
        row: &[f32],
        out: &mut [f32],
        target: usize,
        outside: &[f32],
        rows: usize,
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

        // Pass 4: (p / rows) s for every entry, times t for SV's re-weighted ones.
        let factor = (f64::from(scale) / rows as f64 / sum) as f32;
        if sv {
            let weighted = factor * t;
            for (z, &c) in out.iter_mut().zip(row) {
                *z *= if c > threshold { weighted } else { factor };
            }
        } else {
            out.iter_mut().for_each(|z| *z *= factor);
        }
        let target_grad = f64::from(scale) / rows as f64 * (p_target - 1.0) * self.target_slope(g);
        out[target] = target_grad as f32;

        RowValues { loss: log_sum_exp - target_logit, log_sum_exp, outside_mass: outside_sum / sum }
    }
}

/// Loss and softmax values of one row.
struct RowValues {
    loss: f64,
    log_sum_exp: f64,
    outside_mass: f64,
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
