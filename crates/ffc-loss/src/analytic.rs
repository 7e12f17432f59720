//! The margin loss and its gradient in closed form, for the training step.
//!
//! Autodiff records every elementwise operation on the `[batch, Q]` cosine matrix and replays it
//! backwards, which at Q = 10^5 costs several times the matrix product that produced the
//! matrix. The gradient of softmax cross-entropy is known in closed form, so this module
//! computes the loss and `dL/dC` directly with a handful of passes over the matrix.
//! [`MarginLoss::forward`] stays the reference: tests compare both on random inputs.

use burn::tensor::IndexingUpdateOp::Add;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, ElementConversion, Int, Tensor, TensorData};

use crate::margin::{ARC_SIN_EPS, LossKind, MarginLoss};

impl MarginLoss {
    /// Computes the loss of [`forward`](Self::forward) and its gradient with respect to
    /// `cos_theta`, without autodiff.
    ///
    /// # Shapes
    /// - `cos_theta`: `[batch_size, n_slots]`
    /// - `labels`: `[batch_size]`, a slot index or -1
    /// - output: the loss and `dL/d cos_theta`, `[batch_size, n_slots]`
    ///
    /// # Panics
    /// As [`forward`](Self::forward).
    pub fn value_and_grad<B: Backend>(
        &self,
        cos_theta: Tensor<B, 2>,
        labels: &[i64],
    ) -> (f32, Tensor<B, 2>) {
        let [batch_size, n_slots] = cos_theta.dims();
        self.check(batch_size, n_slots, labels);
        #[cfg(feature = "flex")]
        {
            let fused = crate::host::with_flex_values(&cos_theta, |values| {
                self.fused_terms(values, n_slots, labels, None)
            });
            if let Some(fused) = fused {
                let grad = TensorData::new(fused.grad, [batch_size, n_slots]);
                return (fused.loss, Tensor::from_data(grad, &cos_theta.device()));
            }
        }
        let terms = self.tensor_terms(cos_theta, labels, self.hard_negatives, &[]);
        (terms.loss, terms.grad)
    }

    /// Computes the loss and gradient of [`value_and_grad`](Self::value_and_grad) with tensor
    /// operations, keeping the per-row values that the second cosine matrix of a pass is scored
    /// from (see `crate::hits`). The CPU backend runs one loop per row instead (`crate::fused`).
    ///
    /// `top` (at least k) is how many of the largest cosines of every outlier row to return;
    /// the loss uses the first k of them. `hits` are the slots whose columns C2 changes.
    ///
    /// # Shapes
    /// As [`value_and_grad`](Self::value_and_grad).
    pub(crate) fn tensor_terms<B: Backend>(
        &self,
        cos_theta: Tensor<B, 2>,
        labels: &[i64],
        top: usize,
        hits: &[usize],
    ) -> LossTerms<B> {
        let [batch_size, n_slots] = cos_theta.dims();
        debug_assert!(top >= self.hard_negatives && top <= n_slots, "top {top} out of range");
        let device = cos_theta.device();
        let (pooled, targets, outliers) = split_rows(labels);

        let mut loss = 0.0;
        let mut grad = Tensor::<B, 2>::zeros([batch_size, n_slots], &device);
        let (mut pooled_terms, mut outlier_top) = (None, None);
        if !pooled.is_empty() {
            let rows = int_tensor::<B>(&pooled, &device);
            let cos = cos_theta.clone().select(0, rows.clone());
            let stats = self.classification_grad(cos, &targets, hits);
            loss += stats.loss;
            grad = grad.select_assign(0, rows, stats.grad, Add);
            pooled_terms = stats.terms;
        }
        if !outliers.is_empty() {
            let rows = int_tensor::<B>(&outliers, &device);
            let cos = cos_theta.select(0, rows.clone());
            let index = cos.clone().topk_with_indices(top, 1).1; // [outliers, top], descending
            let values = cos.clone().gather(1, index.clone());
            let (value, rows_grad) = self.outlier_grad(&cos, index.clone(), values.clone());
            loss += value;
            grad = grad.select_assign(0, rows, rows_grad, Add);
            let columns = index.into_data().convert::<i64>().into_vec().expect("i64 after convert");
            outlier_top = Some((columns, host_values(values)));
        }
        LossTerms { loss, grad, pooled: pooled_terms, outliers: outlier_top }
    }

    /// Mean cross-entropy of the margin logits and its gradient, for pooled rows.
    ///
    /// With z the scaled logits and p = softmax(z), dL/dz = (p - onehot) / rows; each logit's
    /// derivative with respect to its cosine is s, s t for SV's re-weighted negatives, and s
    /// times the target function's slope for the target.
    ///
    /// With `hits` not empty, it also returns each row's softmax mass outside those columns.
    fn classification_grad<B: Backend>(
        &self,
        cos: Tensor<B, 2>,
        targets: &[i64],
        hits: &[usize],
    ) -> PooledStats<B> {
        let [rows, _] = cos.dims();
        let device = cos.device();
        let index = int_tensor::<B>(targets, &device).reshape([rows, 1]);
        let target_cos = cos.clone().gather(1, index.clone()); // [rows, 1]
        let (target_logit, target_slope) = self.target(target_cos.clone());
        let kept_target_cos = target_cos.clone();

        // SV re-weights the cosines above g - m, the target among them; the scatter below
        // replaces the target entry either way.
        let (base, hard) = match self.kind {
            LossKind::Sv => {
                let hard = cos.clone().greater((target_cos - self.margin).expand(cos.shape()));
                let reweighted = cos.clone() * self.sv_t + (self.sv_t - 1.0);
                (cos.mask_where(hard.clone(), reweighted), Some(hard))
            }
            LossKind::Am | LossKind::Arc => (cos, None),
        };
        let current = base.clone().gather(1, index.clone());
        let logits =
            base.scatter(1, index.clone(), target_logit.clone() - current, Add) * self.scale;

        let max = logits.clone().max_dim(1).detach(); // [rows, 1]
        let shifted_exp = (logits - max.clone()).exp(); // [rows, n_slots]
        let sum = shifted_exp.clone().sum_dim(1); // [rows, 1]
        let log_sum_exp = sum.clone().log() + max;
        let loss =
            (log_sum_exp.clone() - target_logit * self.scale).mean().into_scalar().elem::<f32>();

        let terms = (!hits.is_empty()).then(|| PooledTerms {
            log_sum_exp: host_values(log_sum_exp.clone()),
            target_cos: host_values(kept_target_cos),
            outside_mass: outside_mass(&shifted_exp, &sum, hits),
        });

        let scale = self.scale / rows as f32;
        let mut grad = shifted_exp / sum * scale; // (p / rows) s, for every entry
        if let Some(hard) = hard {
            grad = grad.clone().mask_where(hard, grad * self.sv_t);
        }
        // Target entry: (p_y - 1) / rows * s * slope.
        let p_target = grad.clone().gather(1, index.clone()); // still s p_y / rows, or s t p_y / rows
        let p_target = match self.kind {
            LossKind::Sv => self.unweight_target(p_target),
            LossKind::Am | LossKind::Arc => p_target,
        };
        let target_grad = (p_target - scale) * target_slope;
        let current = grad.clone().gather(1, index.clone());
        PooledStats { loss, grad: grad.scatter(1, index, target_grad - current, Add), terms }
    }

    /// Undoes the SV weight t that [`classification_grad`](Self::classification_grad) applied
    /// to the target entry, which is always among the re-weighted cosines when m > 0.
    fn unweight_target<B: Backend>(&self, value: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.margin > 0.0 { value / self.sv_t } else { value }
    }

    /// Target logit (before scaling) and its derivative with respect to the target cosine.
    fn target<B: Backend>(&self, g: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let m = self.margin;
        match self.kind {
            LossKind::Am => (g.clone() - m, g.ones_like()),
            LossKind::Sv => {
                let above = g.clone().greater_elem(m).float();
                (g.clone() - above * m, g.ones_like())
            }
            LossKind::Arc => {
                let one_minus_sq = g.clone().powf_scalar(2.0).neg() + 1.0;
                let clamped: Tensor<B, 2, Bool> =
                    one_minus_sq.clone().lower_equal_elem(ARC_SIN_EPS);
                let sin = one_minus_sq.clamp_min(ARC_SIN_EPS).sqrt();
                let logit = g.clone() * m.cos() - sin.clone() * m.sin();
                // d/dg of -sqrt(1 - g^2) sin m is g / sqrt(1 - g^2) sin m, and 0 where clamped.
                let slope = (g / sin * m.sin()).mask_fill(clamped, 0.0) + m.cos();
                (logit, slope)
            }
        }
    }

    /// Mean of `max(0, c)` over the k largest cosines of every outlier row, and its gradient:
    /// `1 / (rows k)` on each selected positive cosine, 0 elsewhere.
    ///
    /// # Shapes
    /// - `cos`: `[rows, n_slots]`
    /// - `index`, `values`: `[rows, top]`, the largest cosines of each row in descending order;
    ///   the first k are used
    fn outlier_grad<B: Backend>(
        &self,
        cos: &Tensor<B, 2>,
        index: Tensor<B, 2, Int>,
        values: Tensor<B, 2>,
    ) -> (f32, Tensor<B, 2>) {
        let [rows, n_slots] = cos.dims();
        let k = self.hard_negatives;
        let index = index.narrow(1, 0, k);
        let values = values.narrow(1, 0, k);
        let count = (rows * k) as f32;
        let loss = relu(values.clone()).sum().into_scalar().elem::<f32>() / count;
        let weight = values.greater_elem(0.0).float() / count;
        let grad =
            Tensor::<B, 2>::zeros([rows, n_slots], &cos.device()).scatter(1, index, weight, Add);
        (loss, grad)
    }
}

/// The loss of one cosine matrix, its gradient, and the per-row values behind them.
pub(crate) struct LossTerms<B: Backend> {
    /// The loss, as [`MarginLoss::value_and_grad`] returns it.
    pub loss: f32,
    /// `dL/d cos_theta`, `[batch_size, n_slots]`.
    pub grad: Tensor<B, 2>,
    /// Values of the pooled rows, when there are any and hits were given.
    pub pooled: Option<PooledTerms>,
    /// For the outlier rows in row order: the columns and values of the largest cosines, in
    /// descending order, both `[outliers, top]`.
    pub outliers: Option<(Vec<i64>, Vec<f32>)>,
}

/// Per-row values of the pooled rows, in row order, for scoring C2.
#[derive(Debug, Clone, Default)]
pub(crate) struct PooledTerms {
    /// Log-sum-exp of the scaled margin logits.
    pub log_sum_exp: Vec<f32>,
    /// Target cosine.
    pub target_cos: Vec<f32>,
    /// Softmax mass outside the hit columns.
    pub outside_mass: Vec<f32>,
}

/// Results of the pooled rows' cross-entropy.
struct PooledStats<B: Backend> {
    loss: f32,
    grad: Tensor<B, 2>,
    /// Present when hits were given.
    terms: Option<PooledTerms>,
}

/// Copies a float tensor to the host, row-major.
pub(crate) fn host_values<B: Backend>(tensor: Tensor<B, 2>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().into_vec::<f32>().expect("f32 data after convert")
}

/// Splits labels into pooled rows with their slots, and outlier rows.
fn split_rows(labels: &[i64]) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let mut pooled = Vec::new();
    let mut targets = Vec::new();
    let mut outliers = Vec::new();
    for (row, &label) in labels.iter().enumerate() {
        if label >= 0 {
            pooled.push(row as i64);
            targets.push(label);
        } else {
            outliers.push(row as i64);
        }
    }
    (pooled, targets, outliers)
}

/// Returns each row's softmax mass outside the `hits` columns, from the row's exponentials
/// `[rows, n_slots]` and their sums `[rows, 1]`.
///
/// One minus the hit mass is cheap but cancels when the hits carry most of a row's mass, so such
/// rows are summed again without the hit columns.
fn outside_mass<B: Backend>(
    shifted_exp: &Tensor<B, 2>,
    sum: &Tensor<B, 2>,
    hits: &[usize],
) -> Vec<f32> {
    let [_, n_slots] = shifted_exp.dims();
    let device = shifted_exp.device();
    let hit_index: Vec<i64> = hits.iter().map(|&slot| slot as i64).collect();
    let hit_mass = shifted_exp.clone().select(1, int_tensor::<B>(&hit_index, &device)).sum_dim(1);
    let hit_share = host_values(hit_mass / sum.clone());

    let mut outside: Vec<f32> = hit_share.iter().map(|share| 1.0 - share).collect();
    let dominated: Vec<i64> =
        (0..outside.len() as i64).filter(|&row| hit_share[row as usize] > 0.5).collect();
    if !dominated.is_empty() {
        let rows = int_tensor::<B>(&dominated, &device);
        let mask = outside_mask::<B>(n_slots, hits, &device);
        let exact =
            shifted_exp.clone().select(0, rows.clone()).matmul(mask) / sum.clone().select(0, rows);
        let exact = host_values(exact);
        for (&row, value) in dominated.iter().zip(exact) {
            outside[row as usize] = value;
        }
    }
    outside
}

/// Returns a `[n_slots, 1]` column of ones with zeros at `hits`.
fn outside_mask<B: Backend>(n_slots: usize, hits: &[usize], device: &B::Device) -> Tensor<B, 2> {
    let mut mask = vec![1.0f32; n_slots];
    for &slot in hits {
        mask[slot] = 0.0;
    }
    Tensor::from_data(TensorData::new(mask, [n_slots, 1]), device)
}

fn int_tensor<B: Backend>(values: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor};

    use super::*;

    type B = burn::backend::Autodiff<burn::backend::Flex>;
    type Inner = burn::backend::Flex;

    fn autodiff(loss: &MarginLoss, cos: &Tensor<Inner, 2>, labels: &[i64]) -> (f32, Vec<f32>) {
        let tracked = Tensor::<B, 2>::from_inner(cos.clone()).require_grad();
        let value = loss.forward(tracked.clone(), labels);
        let grad = tracked.grad(&value.backward()).unwrap();
        (value.into_scalar(), grad.into_data().into_vec::<f32>().unwrap())
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-5 + 1e-4 * b.abs()
    }

    #[test]
    fn matches_autodiff_for_every_kind() {
        let device = Default::default();
        let labels = [3, -1, 0, 7, -1, 7, 1, -1];
        for kind in [LossKind::Am, LossKind::Arc, LossKind::Sv] {
            for margin in [0.5f32, 0.2, 0.0] {
                let loss = MarginLoss { kind, scale: 32.0, margin, sv_t: 1.2, hard_negatives: 3 };
                let cos =
                    Tensor::<Inner, 2>::random([8, 12], Distribution::Uniform(-0.9, 0.9), &device);
                let (expected, expected_grad) = autodiff(&loss, &cos, &labels);
                let (value, grad) = loss.value_and_grad(cos, &labels);
                let grad = grad.into_data().into_vec::<f32>().unwrap();
                assert!(close(value, expected), "{kind:?} m={margin}: {value} vs {expected}");
                for (i, (&g, &e)) in grad.iter().zip(&expected_grad).enumerate() {
                    assert!(close(g, e), "{kind:?} m={margin} grad[{i}]: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn fused_rows_match_tensor_rows() {
        let device = Default::default();
        let label_sets = [vec![3, -1, 0, 7, 7, -1, 11, 1], vec![-1, -1, -1], vec![2, 0, 2]];
        for labels in &label_sets {
            for kind in [LossKind::Am, LossKind::Arc, LossKind::Sv] {
                for margin in [0.5f32, 0.0] {
                    let loss =
                        MarginLoss { kind, scale: 64.0, margin, sv_t: 1.2, hard_negatives: 3 };
                    let shape = [labels.len(), 12];
                    let cos = Tensor::<Inner, 2>::random(
                        shape,
                        Distribution::Uniform(-0.9, 0.9),
                        &device,
                    );
                    let values = cos.clone().into_data().into_vec::<f32>().unwrap();
                    let fused = loss.fused_terms(&values, 12, labels, None);
                    let tensor = loss.tensor_terms(cos, labels, 3, &[]);
                    let label = format!("{labels:?} {kind:?} m={margin}");
                    assert!(
                        close(fused.loss, tensor.loss),
                        "{label}: {} vs {}",
                        fused.loss,
                        tensor.loss
                    );
                    let grad = tensor.grad.into_data().into_vec::<f32>().unwrap();
                    for (i, (&f, &t)) in fused.grad.iter().zip(&grad).enumerate() {
                        assert!(close(f, t), "{label} grad[{i}]: {f} vs {t}");
                    }
                    assert_eq!(fused.second_loss, 0.0, "{label}");
                    assert!(fused.hit_grad.is_empty(), "{label}");
                }
            }
        }
    }

    #[test]
    fn arc_gradient_is_finite_at_one() {
        let loss = MarginLoss {
            kind: LossKind::Arc,
            scale: 64.0,
            margin: 0.5,
            sv_t: 1.2,
            hard_negatives: 1,
        };
        let cos =
            Tensor::<Inner, 2>::from_floats([[1.0, 0.2], [-1.0000001, 0.3]], &Default::default());
        let (value, grad) = loss.value_and_grad(cos, &[0, 0]);
        assert!(value.is_finite());
        assert!(grad.into_data().into_vec::<f32>().unwrap().iter().all(|g| g.is_finite()));
    }
}
