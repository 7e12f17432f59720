//! The loss of a pass's second cosine matrix, C2, derived from the first, C1, with work that
//! grows with the number of hit slots rather than with the queue size.
//!
//! C2 differs from C1 only in the columns of the slots hit in the pass, and the h hit slots are
//! at most the gallery batch. With G1 and G2 the gradients of the two losses:
//!
//! - **Pooled row** (AM or Arc). Every logit outside the hit columns is the same in both
//!   matrices, so C2's softmax sum is C1's sum outside the hit columns plus C2's hit terms.
//!   Outside the hit columns and the target column, G2 is G1 times `r = exp(lse1 - lse2)`.
//!   The CPU loop sums that outside mass directly. The tensor path takes it as one minus the hit
//!   mass, except in rows where the hits carry most of the mass: there the subtraction would
//!   cancel, so it sums the rest directly.
//! - **Outlier row.** The k largest cosines of C2 are among the `k + h` largest of C1 and the h
//!   hit columns of C2. G2 is zero outside the k columns picked, so r = 0.
//!
//! So G2 equals `r G1` outside a small set M of columns per row: the hit columns and the target
//! column of a pooled row, the picked columns of an outlier row. The probe gradient is
//! `G1 W0 + G2 W~`, where W~ is row 0 with row 1 in the hit slots. It equals
//! `A W0 + H W1[hits]`, where H is G2 in the hit columns and A is `(1 + r) G1` with the entries
//! of M set to `G1 + G2` (to G1 alone in the hit columns). [`MarginLoss::pair_terms`] returns
//! the loss, A and H. It takes r and G2 on M from per-row values of C1 and from the `[rows, h]`
//! hit columns of C2, on the host.
//!
//! On the CPU backend every row runs in one loop that scores both matrices (`crate::fused`). On
//! the others C1 is scored with tensor operations, C2 row by row on the host, and M's entries
//! are written into A with one scatter.
//!
//! SV re-weights every cosine above `g - m`, where g is the row's target cosine. When a target
//! slot is hit, g differs between C1 and C2 and so can the re-weighting of every column; SV
//! passes therefore take the dense path.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::analytic::host_values;
use crate::margin::{ARC_SIN_EPS, LossKind, MarginLoss};

/// The losses of both matrices of a pass with hits, and their gradient (see the module docs).
pub(crate) struct PairTerms<B: Backend> {
    /// `loss(C1) + loss(C2)`.
    pub loss: f32,
    /// A, the gradient that multiplies queue row 0, `[rows, n_slots]`.
    pub grad: Tensor<B, 2>,
    /// H, G2 in the hit columns, `[rows, h]` row-major. It multiplies row 1 of the hit slots.
    pub hit_grad: Vec<f32>,
}

/// Values of C1's scoring, copied to the host, that C2 is scored from.
struct FirstMatrix<'a> {
    /// Slot label of every probe row, -1 for an outlier.
    labels: &'a [i64],
    /// The hit slots, sorted, in the column order of `c2_hits`.
    hits: &'a [usize],
    /// C2 in the hit columns, `[rows, h]` row-major.
    c2_hits: &'a [f32],
    /// Log-sum-exp of C1's scaled margin logits, one per pooled row, in row order.
    log_sum_exp: &'a [f32],
    /// C1's target cosine, one per pooled row, in row order.
    target_cos: &'a [f32],
    /// C1's softmax mass outside the hit columns, one per pooled row, in row order.
    outside_mass: &'a [f32],
    /// Columns of the `top` largest C1 cosines of every outlier row, descending, row-major.
    top_columns: &'a [i64],
    /// Values of the same cosines.
    top_values: &'a [f32],
    /// Entries per outlier row in `top_columns`, at least `k + h` or all slots.
    top: usize,
}

/// C2's loss and gradient, relative to C1's gradient G1.
struct SecondMatrix {
    /// loss(C2).
    loss: f32,
    /// r of every row: `exp(lse1 - lse2)` for a pooled row, 0 for an outlier row.
    rescale: Vec<f32>,
    /// G2 on each row's M, as `(row, column, value)`. No `(row, column)` appears twice.
    entries: Vec<(usize, usize, f32)>,
    /// G2 in the hit columns, `[rows, h]` row-major.
    hit_grad: Vec<f32>,
}

impl MarginLoss {
    /// Scores both cosine matrices of a pass with hits: the loss `loss(C1) + loss(C2)` and its
    /// gradient, split between C1's columns and row 1 of the hit slots.
    ///
    /// # Shapes
    /// - `c1`: `[rows, n_slots]`; `labels`: `[rows]`, a slot or -1
    /// - `hits`: `[h]`, sorted; `c2_hits`: `[rows, h]` row-major
    ///
    /// # Panics
    /// For SV, whose re-weighting depends on the target cosine of each row.
    pub(crate) fn pair_terms<B: Backend>(
        &self,
        c1: Tensor<B, 2>,
        labels: &[i64],
        hits: &[usize],
        c2_hits: &[f32],
    ) -> PairTerms<B> {
        assert!(self.kind != LossKind::Sv, "SV scores C2 densely");
        debug_assert!(hits.windows(2).all(|w| w[0] < w[1]), "hit slots must be sorted");
        let [rows, n_slots] = c1.dims();
        self.check(rows, n_slots, labels);
        #[cfg(feature = "flex")]
        {
            let columns = crate::fused::HitColumns { hits, c2: c2_hits };
            let fused = crate::host::with_flex_values(&c1, |values| {
                self.fused_terms(values, n_slots, labels, Some(&columns))
            });
            if let Some(fused) = fused {
                let grad = TensorData::new(fused.grad, [rows, n_slots]);
                return PairTerms {
                    loss: fused.loss + fused.second_loss,
                    grad: Tensor::from_data(grad, &c1.device()),
                    hit_grad: fused.hit_grad,
                };
            }
        }
        self.tensor_pair_terms(c1, labels, hits, c2_hits)
    }

    /// Computes [`pair_terms`](Self::pair_terms) with tensor operations for C1 and a host pass over the
    /// hit columns for C2, for every backend but the CPU's.
    pub(crate) fn tensor_pair_terms<B: Backend>(
        &self,
        c1: Tensor<B, 2>,
        labels: &[i64],
        hits: &[usize],
        c2_hits: &[f32],
    ) -> PairTerms<B> {
        if hits.is_empty() {
            // C2 equals C1. `tensor_terms` keeps C1's per-row values only for hit columns.
            let terms = self.tensor_terms(c1, labels, self.hard_negatives, hits);
            return PairTerms {
                loss: 2.0 * terms.loss,
                grad: terms.grad * 2.0,
                hit_grad: Vec::new(),
            };
        }
        let [rows, n_slots] = c1.dims();
        let device = c1.device();
        let top = (self.hard_negatives + hits.len()).min(n_slots);
        let terms = self.tensor_terms(c1, labels, top, hits);
        let pooled = terms.pooled.unwrap_or_default();
        let (top_columns, top_values) = terms.outliers.unwrap_or_default();
        let second = self.second_matrix(&FirstMatrix {
            labels,
            hits,
            c2_hits,
            log_sum_exp: &pooled.log_sum_exp,
            target_cos: &pooled.target_cos,
            outside_mass: &pooled.outside_mass,
            top_columns: &top_columns,
            top_values: &top_values,
            top,
        });

        // A is (1 + r) G1 outside each row's M. On M its entries are G1 + G2, or G1 in the hit
        // columns, whose G2 multiplies row 1 instead. They are set rather than corrected, so
        // that a large r does not amplify rounding in G1.
        let pairs: Vec<(usize, usize)> =
            second.entries.iter().map(|&(row, column, _)| (row, column)).collect();
        let grad1 = tensor_entries(&terms.grad, &pairs);
        let new_values = second
            .entries
            .iter()
            .zip(grad1)
            .map(
                |(&(_, column, grad2), grad1)| {
                    if hits.binary_search(&column).is_ok() { grad1 } else { grad1 + grad2 }
                },
            )
            .collect();
        let factor: Vec<f32> = second.rescale.iter().map(|r| 1.0 + r).collect();
        let factor = Tensor::<B, 2>::from_data(TensorData::new(factor, [rows, 1]), &device);
        PairTerms {
            loss: terms.loss + second.loss,
            grad: assign_entries(terms.grad * factor, &pairs, new_values),
            hit_grad: second.hit_grad,
        }
    }

    /// Scores C2 row by row from the values that C1 left (see the module docs).
    fn second_matrix(&self, first: &FirstMatrix<'_>) -> SecondMatrix {
        let rows = first.labels.len();
        let h = first.hits.len();
        let mut out = SecondMatrix {
            loss: 0.0,
            rescale: vec![0.0; rows],
            entries: Vec::with_capacity(rows * (h + 1)),
            hit_grad: vec![0.0; rows * h],
        };
        let pooled = first.labels.iter().filter(|&&label| label >= 0).count();
        let outliers = rows - pooled;
        let (mut pooled_index, mut outlier_index) = (0, 0);
        let mut loss = 0.0f64;
        for (row, &label) in first.labels.iter().enumerate() {
            let c2 = &first.c2_hits[row * h..(row + 1) * h];
            let hit_grad = &mut out.hit_grad[row * h..(row + 1) * h];
            let second = if label >= 0 {
                let stats = PooledRow {
                    target: label as usize,
                    log_sum_exp: f64::from(first.log_sum_exp[pooled_index]),
                    target_cos: f64::from(first.target_cos[pooled_index]),
                    outside_mass: f64::from(first.outside_mass[pooled_index]),
                };
                pooled_index += 1;
                self.pooled_second(first.hits, &stats, c2, pooled, hit_grad)
            } else {
                let start = outlier_index * first.top;
                let top = first.top_columns[start..start + first.top]
                    .iter()
                    .zip(&first.top_values[start..start + first.top])
                    .map(|(&column, &value)| (column as usize, value));
                outlier_index += 1;
                self.outlier_second(first.hits, top, c2, outliers, hit_grad)
            };
            loss += second.loss;
            out.rescale[row] = second.rescale as f32;
            out.entries.extend(second.entries.iter().map(|&(c, g)| (row, c, g as f32)));
        }
        out.loss = loss as f32;
        out
    }

    /// Scores C2's cross-entropy of one pooled row and returns its share of the loss, r, and G2
    /// on the row's M. Writes G2 of the hit columns into `hit_grad`, `[h]`.
    ///
    /// `c2` contains the row's C2 cosines in the hit columns, and `pooled` is the number of
    /// pooled rows.
    pub(crate) fn pooled_second(
        &self,
        hits: &[usize],
        stats: &PooledRow,
        c2: &[f32],
        pooled: usize,
        hit_grad: &mut [f32],
    ) -> RowSecond {
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
        let loss = (lse2 - logit(stats.target, target_cos2)) / pooled as f64;

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
        let mut entries = Vec::with_capacity(hits.len() + 1);
        for (j, (&column, term)) in hits.iter().zip(hit_terms).enumerate() {
            let g2 = grad(column, f64::from(c2[j]), term * r);
            hit_grad[j] = g2 as f32;
            entries.push((column, g2));
        }
        if target_hit.is_none() {
            let p = (logit(stats.target, stats.target_cos) - lse2).exp();
            entries.push((stats.target, grad(stats.target, stats.target_cos, p)));
        }
        RowSecond { loss, rescale: r, entries }
    }

    /// Scores C2's top-k penalty of one outlier row and returns its share of the loss and G2 on
    /// the row's M (r is 0). Writes G2 of the hit columns into `hit_grad`, `[h]`.
    ///
    /// `top` yields `(column, cosine)` of at least `k + h` of the row's largest C1 cosines (or
    /// all of them), descending. `outliers` is the number of outlier rows.
    pub(crate) fn outlier_second(
        &self,
        hits: &[usize],
        top: impl Iterator<Item = (usize, f32)>,
        c2: &[f32],
        outliers: usize,
        hit_grad: &mut [f32],
    ) -> RowSecond {
        let k = self.hard_negatives;
        // The k largest C1 cosines outside the hit columns, then every hit column of C2.
        let mut candidates: Vec<(f32, usize)> = top
            .filter(|(column, _)| hits.binary_search(column).is_err())
            .take(k)
            .map(|(column, value)| (value, column))
            .collect();
        candidates.extend(c2.iter().copied().zip(hits.iter().copied()));
        // Larger value first; among equal values the lower column, as the dense top-k picks.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

        let count = (outliers * k) as f64;
        let mut second = RowSecond { loss: 0.0, rescale: 0.0, entries: Vec::with_capacity(k) };
        for &(value, column) in candidates.iter().take(k) {
            if value > 0.0 {
                second.loss += f64::from(value) / count;
                second.entries.push((column, 1.0 / count));
                if let Ok(j) = hits.binary_search(&column) {
                    hit_grad[j] = (1.0 / count) as f32;
                }
            }
        }
        second
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
pub(crate) struct PooledRow {
    pub target: usize,
    pub log_sum_exp: f64,
    pub target_cos: f64,
    pub outside_mass: f64,
}

/// C2's part of one row.
pub(crate) struct RowSecond {
    /// The row's share of loss(C2).
    pub loss: f64,
    /// r: `exp(lse1 - lse2)` for a pooled row, 0 for an outlier row.
    pub rescale: f64,
    /// G2 on the row's M, as `(column, value)`, no column twice.
    pub entries: Vec<(usize, f64)>,
}

/// Returns the entries of `grad` at `(row, column)`, in order, reading only the columns named.
fn tensor_entries<B: Backend>(grad: &Tensor<B, 2>, pairs: &[(usize, usize)]) -> Vec<f32> {
    let mut columns: Vec<usize> = pairs.iter().map(|&(_, column)| column).collect();
    columns.sort_unstable();
    columns.dedup();
    let index: Vec<i64> = columns.iter().map(|&column| column as i64).collect();
    let index =
        Tensor::<B, 1, Int>::from_data(TensorData::new(index, [columns.len()]), &grad.device());
    let picked = host_values(grad.clone().select(1, index)); // [rows, columns.len()]
    let width = columns.len();
    let at = |column| columns.binary_search(&column).expect("column was collected");
    pairs.iter().map(|&(row, column)| picked[row * width + at(column)]).collect()
}

/// Overwrites the entries of `grad` at the distinct `(row, column)` pairs with `values`.
fn assign_entries<B: Backend>(
    grad: Tensor<B, 2>,
    pairs: &[(usize, usize)],
    values: Vec<f32>,
) -> Tensor<B, 2> {
    if pairs.is_empty() {
        return grad;
    }
    let device = grad.device();
    let flat: Vec<i64> =
        pairs.iter().flat_map(|&(row, column)| [row as i64, column as i64]).collect();
    let count = pairs.len();
    let index = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [count, 2]), &device);
    let values = Tensor::<B, 1>::from_data(TensorData::new(values, [count]), &device);
    grad.scatter_nd(index, values, IndexingUpdateOp::Assign)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    type B = burn::backend::Flex;

    /// Without hit columns C2 equals C1, so both paths must return twice C1's loss and gradient.
    #[test]
    fn no_hits_doubles_the_first_matrix() {
        let device = Default::default();
        let labels = [3, -1, 0, 7, 7, -1];
        for kind in [LossKind::Am, LossKind::Arc] {
            let loss = MarginLoss { kind, scale: 32.0, margin: 0.3, sv_t: 1.2, hard_negatives: 2 };
            let cos = Tensor::<B, 2>::random([6, 10], Distribution::Uniform(-0.9, 0.9), &device);
            let (value, grad) = loss.value_and_grad(cos.clone(), &labels);
            let grad = grad.into_data().into_vec::<f32>().unwrap();
            let host = loss.pair_terms(cos.clone(), &labels, &[], &[]);
            let tensor = loss.tensor_pair_terms(cos, &labels, &[], &[]);
            for (path, terms) in [("host", host), ("tensor", tensor)] {
                assert!((terms.loss - 2.0 * value).abs() <= 1e-5, "{kind:?} {path}: loss");
                assert!(terms.hit_grad.is_empty(), "{kind:?} {path}: hit_grad");
                let doubled = terms.grad.into_data().into_vec::<f32>().unwrap();
                for (i, (&d, &g)) in doubled.iter().zip(&grad).enumerate() {
                    assert!(
                        (d - 2.0 * g).abs() <= 1e-5 * (1.0 + g.abs()),
                        "{kind:?} {path} grad[{i}]: {d} vs {g}"
                    );
                }
            }
        }
    }

    #[test]
    fn entries_read_and_set_at_pairs() {
        let device = Default::default();
        let values: Vec<f32> = (0..15).map(|i| i as f32 * 0.5).collect();
        let grad = Tensor::<B, 2>::from_data(TensorData::new(values, [3, 5]), &device);
        let pairs = [(2, 4), (0, 1), (1, 1), (2, 0)];
        assert_eq!(tensor_entries(&grad, &pairs), vec![7.0, 0.5, 3.0, 5.0]);
        let grad = assign_entries(grad, &pairs, vec![-1.0, -2.0, -3.0, -4.0]);
        let grad = grad.into_data().into_vec::<f32>().unwrap();
        assert_eq!(&grad[..6], &[0.0, -2.0, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!((grad[6], grad[10], grad[14]), (-3.0, -4.0, -1.0));
        let untouched = assign_entries(Tensor::<B, 2>::ones([2, 2], &device), &[], Vec::new());
        assert_eq!(untouched.into_data().into_vec::<f32>().unwrap(), vec![1.0; 4]);
    }
}
