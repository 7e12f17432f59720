//! The loss of a pass's second cosine matrix, C2, derived from the first, C1, with work that
//! grows with the number of hit slots rather than with the queue size.
//!
//! C2 differs from C1 only in the columns of the slots hit in the pass, and the h hit slots are
//! at most the gallery batch. With G1 and G2 the gradients of the two losses:
//!
//! - **Pooled row** (AM or Arc). Every logit outside the hit columns is the same in both
//!   matrices, so C2's softmax sum is C1's sum outside the hit columns plus C2's hit terms.
//!   Outside the hit columns and the target column, G2 is G1 times `r = exp(lse1 - lse2)`.
//!   C1's pass takes the outside mass as one minus the hit mass, except in rows where the hits
//!   carry most of the mass: there the subtraction would cancel, so it sums the rest directly.
//! - **Outlier row.** The k largest cosines of C2 are among the `k + h` largest of C1 and the h
//!   hit columns of C2. G2 is zero outside the k columns picked, so r = 0.
//!
//! So G2 equals `r G1` outside a small set M of columns per row: the hit columns and the target
//! column of a pooled row, the picked columns of an outlier row. This module computes the loss
//! of C2, r, and G2 on M on the host, and [`crate::head`] turns them into the probe gradient.
//!
//! SV re-weights every cosine above `g - m`, where g is the row's target cosine. When a target
//! slot is hit, g differs between C1 and C2 and so can the re-weighting of every column; SV
//! passes therefore take the dense path.

use crate::margin::{ARC_SIN_EPS, LossKind, MarginLoss};

/// Values of C1's scoring, copied to the host, that C2 is scored from.
pub(crate) struct FirstMatrix<'a> {
    /// Slot label of every probe row, -1 for an outlier.
    pub labels: &'a [i64],
    /// The hit slots, sorted, in the column order of `c2_hits`.
    pub hits: &'a [usize],
    /// C2 in the hit columns, `[rows, h]` row-major.
    pub c2_hits: &'a [f32],
    /// Log-sum-exp of C1's scaled margin logits, one per pooled row, in row order.
    pub log_sum_exp: &'a [f32],
    /// C1's target cosine, one per pooled row, in row order.
    pub target_cos: &'a [f32],
    /// C1's softmax mass outside the hit columns, one per pooled row, in row order.
    pub outside_mass: &'a [f32],
    /// Columns of the `top` largest C1 cosines of every outlier row, descending, row-major.
    pub top_columns: &'a [i64],
    /// Values of the same cosines.
    pub top_values: &'a [f32],
    /// Entries per outlier row in `top_columns`, at least `k + h` or all slots.
    pub top: usize,
}

/// C2's loss and gradient, relative to C1's gradient G1.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SecondMatrix {
    /// loss(C2).
    pub loss: f32,
    /// r of every row: `exp(lse1 - lse2)` for a pooled row, 0 for an outlier row.
    pub rescale: Vec<f32>,
    /// G2 on each row's M, as `(row, column, value)`. No `(row, column)` appears twice.
    pub entries: Vec<(usize, usize, f32)>,
    /// G2 in the hit columns, `[rows, h]` row-major.
    pub hit_grad: Vec<f32>,
}

impl MarginLoss {
    /// Scores C2 from the values C1 left; see the module docs.
    ///
    /// # Panics
    /// For SV, whose re-weighting depends on the target cosine of each row.
    pub(crate) fn second_matrix(&self, first: &FirstMatrix<'_>) -> SecondMatrix {
        assert!(self.kind != LossKind::Sv, "SV scores C2 densely");
        debug_assert!(first.hits.windows(2).all(|w| w[0] < w[1]), "hit slots must be sorted");
        let rows = first.labels.len();
        let h = first.hits.len();
        let mut out = SecondBuilder {
            h,
            loss: 0.0,
            rescale: vec![0.0; rows],
            entries: Vec::with_capacity(rows * (h + 1)),
            hit_grad: vec![0.0; rows * h],
        };

        let pooled = first.labels.iter().filter(|&&label| label >= 0).count();
        let outliers = rows - pooled;
        let (mut pooled_index, mut outlier_index) = (0, 0);
        for (row, &label) in first.labels.iter().enumerate() {
            let c2 = &first.c2_hits[row * h..(row + 1) * h];
            if label >= 0 {
                let stats = PooledRow {
                    target: label as usize,
                    log_sum_exp: f64::from(first.log_sum_exp[pooled_index]),
                    target_cos: f64::from(first.target_cos[pooled_index]),
                    outside_mass: f64::from(first.outside_mass[pooled_index]),
                };
                pooled_index += 1;
                self.pooled_row(&mut out, first.hits, row, &stats, c2, pooled);
            } else {
                let start = outlier_index * first.top;
                let columns = &first.top_columns[start..start + first.top];
                let values = &first.top_values[start..start + first.top];
                outlier_index += 1;
                self.outlier_row(&mut out, first.hits, row, (columns, values), c2, outliers);
            }
        }
        out.finish()
    }

    /// Adds C2's cross-entropy of one pooled row to the loss, and its r and G2 entries.
    fn pooled_row(
        &self,
        out: &mut SecondBuilder,
        hits: &[usize],
        row: usize,
        stats: &PooledRow,
        c2: &[f32],
        pooled: usize,
    ) {
        let scale = f64::from(self.scale);
        let lse1 = stats.log_sum_exp;
        let logit = |column: usize, cos: f64| {
            if column == stats.target { scale * self.target_logit(cos) } else { scale * cos }
        };

        // C2's softmax sum relative to C1's: C1's mass outside the hits plus C2's hit terms.
        let hit_terms: Vec<f64> = hits
            .iter()
            .zip(c2)
            .map(|(&column, &cos)| (logit(column, f64::from(cos)) - lse1).exp())
            .collect();
        let ratio = stats.outside_mass + hit_terms.iter().sum::<f64>();
        let lse2 = lse1 + ratio.ln();
        let r = 1.0 / ratio;

        let target_hit = hits.binary_search(&stats.target).ok();
        let target_cos2 = target_hit.map_or(stats.target_cos, |j| f64::from(c2[j]));
        out.loss += (lse2 - logit(stats.target, target_cos2)) / pooled as f64;
        out.rescale[row] = r as f32;

        // Gradient of the mean cross-entropy: (p - onehot) s / rows, times the target slope.
        // C2's softmax p of a column is its term relative to C1's sum, times r.
        let weight = scale / pooled as f64;
        let grad = |column: usize, cos: f64, p: f64| {
            if column == stats.target {
                weight * (p - 1.0) * self.target_slope(cos)
            } else {
                weight * p
            }
        };
        for (j, (&column, term)) in hits.iter().zip(hit_terms).enumerate() {
            let g2 = grad(column, f64::from(c2[j]), term * r);
            out.set_hit_grad(row, j, g2);
            out.add(row, column, g2);
        }
        if target_hit.is_none() {
            let p = (logit(stats.target, stats.target_cos) - lse2).exp();
            out.add(row, stats.target, grad(stats.target, stats.target_cos, p));
        }
    }

    /// Adds C2's top-k penalty of one outlier row to the loss, and its G2 entries.
    fn outlier_row(
        &self,
        out: &mut SecondBuilder,
        hits: &[usize],
        row: usize,
        (top_columns, top_values): (&[i64], &[f32]),
        c2: &[f32],
        outliers: usize,
    ) {
        let k = self.hard_negatives;
        // The k largest C1 cosines outside the hit columns, then every hit column of C2.
        let mut candidates: Vec<(f32, usize)> = top_columns
            .iter()
            .zip(top_values)
            .map(|(&column, &value)| (value, column as usize))
            .filter(|(_, column)| hits.binary_search(column).is_err())
            .take(k)
            .collect();
        candidates.extend(c2.iter().copied().zip(hits.iter().copied()));
        // Larger value first; among equal values the lower column, as the dense top-k picks.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

        let count = (outliers * k) as f64;
        for &(value, column) in candidates.iter().take(k) {
            if value > 0.0 {
                out.loss += f64::from(value) / count;
                out.add(row, column, 1.0 / count);
                if let Ok(j) = hits.binary_search(&column) {
                    out.set_hit_grad(row, j, 1.0 / count);
                }
            }
        }
    }

    /// Returns the target logit before scaling, as [`MarginLoss::forward`] defines it.
    pub(crate) fn target_logit(&self, g: f64) -> f64 {
        let m = f64::from(self.margin);
        match self.kind {
            LossKind::Am => g - m,
            LossKind::Arc => {
                let sin = (1.0 - g * g).max(f64::from(ARC_SIN_EPS)).sqrt();
                g * m.cos() - sin * m.sin()
            }
            LossKind::Sv if g > m => g - m,
            LossKind::Sv => g,
        }
    }

    /// Returns the derivative of [`target_logit`](Self::target_logit) with respect to g.
    pub(crate) fn target_slope(&self, g: f64) -> f64 {
        let m = f64::from(self.margin);
        match self.kind {
            LossKind::Am | LossKind::Sv => 1.0,
            LossKind::Arc => {
                let one_minus_sq = 1.0 - g * g;
                if one_minus_sq <= f64::from(ARC_SIN_EPS) {
                    m.cos()
                } else {
                    m.cos() + g / one_minus_sq.sqrt() * m.sin()
                }
            }
        }
    }
}

/// C1's values of one pooled row.
struct PooledRow {
    target: usize,
    log_sum_exp: f64,
    target_cos: f64,
    outside_mass: f64,
}

/// Accumulator of a [`SecondMatrix`].
struct SecondBuilder {
    /// Number of hit slots, the width of `hit_grad`.
    h: usize,
    loss: f64,
    rescale: Vec<f32>,
    entries: Vec<(usize, usize, f32)>,
    hit_grad: Vec<f32>,
}

impl SecondBuilder {
    fn set_hit_grad(&mut self, row: usize, j: usize, value: f64) {
        self.hit_grad[row * self.h + j] = value as f32;
    }

    fn add(&mut self, row: usize, column: usize, value: f64) {
        self.entries.push((row, column, value as f32));
    }

    fn finish(self) -> SecondMatrix {
        SecondMatrix {
            loss: self.loss as f32,
            rescale: self.rescale,
            entries: self.entries,
            hit_grad: self.hit_grad,
        }
    }
}
