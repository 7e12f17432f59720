//! The pooled rows' margin cross-entropy and its gradient as one loop per row, for the CPU
//! backend.
//!
//! The tensor version in `crate::analytic` runs about fifteen elementwise operations over the
//! `[rows, Q]` cosine matrix, each allocating its result. On the host the same values take three
//! passes over each row: the logits and their maximum, the exponentials and their sums, and the
//! scaling into the gradient.

use rayon::prelude::*;

use crate::analytic::PooledTerms;
use crate::margin::{LossKind, MarginLoss};

/// Loss, gradient and per-row values of the pooled rows.
pub(crate) struct FusedPooled {
    /// Mean cross-entropy over the rows.
    pub loss: f32,
    /// `dL/d cos`, `[rows, n_slots]` row-major.
    pub grad: Vec<f32>,
    /// Per-row values for scoring C2, when hits were given.
    pub terms: Option<PooledTerms>,
}

impl MarginLoss {
    /// Computes what `classification_grad` computes, from the row-major `[rows, n_slots]`
    /// cosines of the pooled rows.
    pub(crate) fn fused_classification(
        &self,
        cos: &[f32],
        n_slots: usize,
        targets: &[i64],
        hits: &[usize],
    ) -> FusedPooled {
        let rows = targets.len();
        let mut outside = vec![true; n_slots];
        hits.iter().for_each(|&slot| outside[slot] = false);
        let mut grad = vec![0.0f32; rows * n_slots];
        // Rows run in parallel; the sums below add them in row order, so the result does not
        // depend on the thread count.
        let values: Vec<RowValues> = cos
            .par_chunks_exact(n_slots)
            .zip(grad.par_chunks_exact_mut(n_slots))
            .zip(targets.par_iter())
            .map(|((row, out), &target)| self.fused_row(row, out, target as usize, &outside, rows))
            .collect();
        let mut loss = 0.0f64;
        let mut terms = PooledTerms::default();
        for ((value, row), &target) in values.iter().zip(cos.chunks_exact(n_slots)).zip(targets) {
            loss += value.loss / rows as f64;
            terms.log_sum_exp.push(value.log_sum_exp as f32);
            terms.target_cos.push(row[target as usize]);
            terms.outside_mass.push(value.outside_mass as f32);
        }
        FusedPooled { loss: loss as f32, grad, terms: (!hits.is_empty()).then_some(terms) }
    }

    /// Writes the gradient of one row into `out` and returns its loss and softmax values.
    fn fused_row(
        &self,
        row: &[f32],
        out: &mut [f32],
        target: usize,
        outside: &[bool],
        rows: usize,
    ) -> RowValues {
        let scale = self.scale;
        let g = f64::from(row[target]);
        let target_logit = f64::from(scale) * self.target_logit(g);
        // SV re-weights the cosines above g - m; the target entry is replaced either way.
        let threshold = (g - f64::from(self.margin)) as f32;
        let hard = |c: f32| self.kind == LossKind::Sv && c > threshold;

        // Pass 1: logits and their maximum.
        let mut max = f32::NEG_INFINITY;
        for (z, &c) in out.iter_mut().zip(row) {
            let c = if hard(c) { c * self.sv_t + (self.sv_t - 1.0) } else { c };
            *z = scale * c;
            max = max.max(*z);
        }
        out[target] = target_logit as f32;
        max = max.max(out[target]);

        // Pass 2: exponentials, their sum and the part outside the hit columns.
        let (mut sum, mut outside_sum) = (0.0f64, 0.0f64);
        for (z, &keep) in out.iter_mut().zip(outside) {
            *z = (*z - max).exp();
            sum += f64::from(*z);
            if keep {
                outside_sum += f64::from(*z);
            }
        }
        let log_sum_exp = f64::from(max) + sum.ln();
        let p_target = f64::from(out[target]) / sum;

        // Pass 3: (p / rows) s for every entry, times t for SV's re-weighted ones.
        let factor = (f64::from(scale) / rows as f64 / sum) as f32;
        let weighted = factor * self.sv_t;
        for (z, &c) in out.iter_mut().zip(row) {
            *z *= if hard(c) { weighted } else { factor };
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
