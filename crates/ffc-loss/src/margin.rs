//! Margin softmax losses over the pool, with FFC's top-k penalty for probes whose identity is not
//! pooled.

use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp::Add, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Floor under `1 - c^2` before the square root of the Arc margin. A cosine of exactly +-1 (or
/// f32 rounding just past it) would otherwise give an infinite gradient, or NaN. It moves
/// `sin(theta)` only where `|c| > 0.9999995`, far outside what training produces.
pub const ARC_SIN_EPS: f32 = 1e-6;

/// SV-softmax re-weighting factor t of the FFC reference.
pub const SV_T: f32 = 1.2;

/// The margin applied to the target logit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LossKind {
    /// CosFace / AM-softmax: target logit `s (c - m)`.
    #[serde(rename = "AM", alias = "am", alias = "cosface")]
    Am,
    /// ArcFace: target logit `s cos(theta + m)`.
    #[serde(rename = "Arc", alias = "arc", alias = "arcface")]
    Arc,
    /// SV-AM-softmax: AM on the target, and hard negatives re-weighted to `t c + t - 1`.
    #[serde(rename = "SV", alias = "sv")]
    Sv,
}

/// The loss of one cosine matrix against pool slots.
///
/// ```text
/// L = mean_{i in Pos} CE(z_i, y_i) + mean_{i in Out, j in topk(C_i)} max(0, C_ij)
///
/// z_ij = s C_ij for j != y_i, and for the target, with g = C_{i y_i}:
///   AM:  s (g - m)
///   Arc: s (g cos m - sqrt(max(1 - g^2, eps)) sin m)
///   SV:  s (g - m) if g > m else s g; non-targets with C_ij > g - m become s (t C_ij + t - 1)
/// ```
///
/// `Pos` are the probes whose label is a slot, `Out` those labelled -1; each term is 0 when its
/// set is empty. This is the loss of the FFC reference code (CVPR 2022, "An Efficient Training
/// Approach for Very Large Scale Face Recognition"), with the Arc square root clamped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarginLoss {
    /// Which margin.
    pub kind: LossKind,
    /// Logit scale s.
    pub scale: f32,
    /// Margin m (cosine units for AM and SV, radians for Arc).
    pub margin: f32,
    /// SV re-weighting factor t.
    pub sv_t: f32,
    /// Number k of largest cosines penalised per outlier probe.
    pub hard_negatives: usize,
}

/// Returns FFC's number of penalised cosines per outlier, clamp(floor(0.0002 Q), 3, 10).
pub fn hard_negatives_for(queue_size: usize) -> usize {
    (queue_size / 5000).clamp(3, 10)
}

impl MarginLoss {
    /// Computes the loss of `cos_theta` against slot labels, differentiably in `cos_theta`.
    ///
    /// # Shapes
    /// - `cos_theta`: `[batch_size, n_slots]`
    /// - `labels`: `[batch_size]`, a slot index or -1
    /// - output: `[1]`
    ///
    /// # Panics
    /// If the label count is not the batch size, a label is out of range, or k exceeds the slot
    /// count.
    pub fn forward<B: Backend>(&self, cos_theta: Tensor<B, 2>, labels: &[i64]) -> Tensor<B, 1> {
        let [batch_size, n_slots] = cos_theta.dims();
        self.check(batch_size, n_slots, labels);
        let device = cos_theta.device();

        let (pooled, targets): (Vec<i64>, Vec<i64>) = labels
            .iter()
            .enumerate()
            .filter(|&(_, &label)| label >= 0)
            .map(|(row, &label)| (row as i64, label))
            .unzip();
        let outliers: Vec<i64> =
            (0..batch_size as i64).filter(|&row| labels[row as usize] < 0).collect();

        let mut loss = Tensor::<B, 1>::zeros([1], &device);
        if !pooled.is_empty() {
            let rows = cos_theta.clone().select(0, int_tensor::<B>(&pooled, &device));
            loss = loss + self.classification(rows, &targets);
        }
        if !outliers.is_empty() {
            let rows = cos_theta.select(0, int_tensor::<B>(&outliers, &device));
            loss = loss + self.outlier_penalty(rows);
        }
        loss
    }

    /// Mean cross-entropy of the margin logits of pooled probes.
    fn classification<B: Backend>(&self, cos: Tensor<B, 2>, targets: &[i64]) -> Tensor<B, 1> {
        let [rows, _] = cos.dims();
        let device = cos.device();
        let target_index = int_tensor::<B>(targets, &device).reshape([rows, 1]);
        let target_cos = cos.clone().gather(1, target_index.clone()); // [rows, 1]

        let (logits, target_logit) = match self.kind {
            LossKind::Am => (cos, target_cos - self.margin),
            LossKind::Arc => (cos, self.arc_target(target_cos)),
            LossKind::Sv => {
                let above = target_cos.clone().greater_elem(self.margin).float();
                let target_logit = target_cos.clone() - above * self.margin;
                (self.sv_negatives(cos, target_cos), target_logit)
            }
        };
        // Swap the target entry of every row for its margin logit. Adding the difference
        // through a scatter touches one entry per row instead of building a one-hot matrix.
        let current = logits.clone().gather(1, target_index.clone());
        let logits = logits.scatter(1, target_index.clone(), target_logit - current, Add);

        let log_probs = log_softmax(logits * self.scale, 1); // [rows, n_slots]
        -log_probs.gather(1, target_index).mean().reshape([1])
    }

    /// `cos(theta + m)` of target cosines, with `1 - c^2` floored at [`ARC_SIN_EPS`].
    fn arc_target<B: Backend>(&self, cos: Tensor<B, 2>) -> Tensor<B, 2> {
        let sin = (cos.clone().powf_scalar(2.0).neg() + 1.0).clamp_min(ARC_SIN_EPS).sqrt();
        cos * self.margin.cos() - sin * self.margin.sin()
    }

    /// Re-weights cosines above `g - m` to `t c + t - 1`. The target entry is re-weighted too,
    /// since `g > g - m`, and [`classification`](Self::classification) then replaces it.
    fn sv_negatives<B: Backend>(
        &self,
        cos: Tensor<B, 2>,
        target_cos: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let threshold = (target_cos - self.margin).detach();
        let hard = cos.clone().greater(threshold.expand(cos.shape()));
        let t = self.sv_t;
        let reweighted = cos.clone() * t + (t - 1.0);
        cos.mask_where(hard, reweighted)
    }

    /// Mean of `max(0, c)` over the k largest cosines of every outlier row.
    ///
    /// The k largest are found on detached values by k rounds of a row maximum (k is at most 10,
    /// and burn 0.21 has no autodiff `topk` and sorts whole rows in `topk_with_indices`), then
    /// gathered from the tracked tensor so the gradient reaches exactly those cells.
    fn outlier_penalty<B: Backend>(&self, cos: Tensor<B, 2>) -> Tensor<B, 1> {
        let [rows, _] = cos.dims();
        let k = self.hard_negatives;
        let mut remaining = cos.clone().detach();
        let mut picked = Vec::with_capacity(k);
        for _ in 0..k {
            let index = remaining.clone().argmax(1); // [rows, 1]
            remaining = remaining.scatter(
                1,
                index.clone(),
                Tensor::full([rows, 1], f32::NEG_INFINITY, &cos.device()),
                Add,
            );
            picked.push(index);
        }
        let index = Tensor::cat(picked, 1); // [rows, k]
        relu(cos.gather(1, index)).mean().reshape([1])
    }

    pub(crate) fn check(&self, batch_size: usize, n_slots: usize, labels: &[i64]) {
        assert_eq!(
            labels.len(),
            batch_size,
            "{} labels for a cosine matrix of {batch_size} rows",
            labels.len()
        );
        if let Some(&bad) = labels.iter().find(|&&l| l < -1 || l >= n_slots as i64) {
            panic!("label {bad} is neither -1 nor a slot in 0..{n_slots}");
        }
        assert!(
            (1..=n_slots).contains(&self.hard_negatives),
            "hard_negatives = {} must be in 1..={n_slots} (the slot count)",
            self.hard_negatives
        );
    }
}

fn int_tensor<B: Backend>(values: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

#[cfg(test)]
mod tests {
    use burn::tensor::Tensor;

    use super::*;

    type B = burn::backend::Autodiff<burn::backend::Flex>;

    fn loss(kind: LossKind, hard_negatives: usize) -> MarginLoss {
        MarginLoss { kind, scale: 32.0, margin: 0.5, sv_t: SV_T, hard_negatives }
    }

    fn value_and_grad(loss: &MarginLoss, cos: [[f32; 3]; 2], labels: &[i64]) -> (f32, Vec<f32>) {
        let cos = Tensor::<B, 2>::from_floats(cos, &Default::default()).require_grad();
        let value = loss.forward(cos.clone(), labels);
        let grad = cos.grad(&value.backward()).unwrap();
        (value.into_scalar(), grad.into_data().into_vec::<f32>().unwrap())
    }

    #[test]
    fn hard_negatives_follow_queue_size() {
        assert_eq!(hard_negatives_for(1), 3);
        assert_eq!(hard_negatives_for(19_999), 3);
        assert_eq!(hard_negatives_for(20_000), 4);
        assert_eq!(hard_negatives_for(49_999), 9);
        assert_eq!(hard_negatives_for(10_000_000), 10);
    }

    #[test]
    fn arc_at_cosine_one_is_finite() {
        let arc = loss(LossKind::Arc, 1);
        for target in [1.0, -1.0, 1.000_000_1, -1.000_000_1] {
            let (value, grad) =
                value_and_grad(&arc, [[target, 0.2, 0.1], [0.3, target, 0.0]], &[0, 1]);
            assert!(value.is_finite(), "loss {value} at cosine {target}");
            assert!(grad.iter().all(|g| g.is_finite()), "gradient {grad:?} at cosine {target}");
        }
    }

    #[test]
    fn all_outliers_use_top_k_only() {
        let (value, grad) =
            value_and_grad(&loss(LossKind::Am, 2), [[0.5, -0.2, 0.3], [0.1, 0.4, 0.2]], &[-1, -1]);
        // Row 0: top 2 are 0.5 and 0.3; row 1: 0.4 and 0.2. Mean over 4 = 0.35.
        assert!((value - 0.35).abs() < 1e-6, "{value}");
        assert_eq!(grad, vec![0.25, 0.0, 0.25, 0.0, 0.25, 0.25]);
    }

    #[test]
    fn negative_top_cosines_give_no_penalty() {
        let (value, grad) = value_and_grad(
            &loss(LossKind::Sv, 1),
            [[-0.5, -0.2, -0.3], [-0.1, -0.4, -0.2]],
            &[-1, -1],
        );
        assert_eq!(value, 0.0);
        assert!(grad.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn all_pooled_has_no_outlier_term() {
        let am = loss(LossKind::Am, 3);
        let (value, grad) = value_and_grad(&am, [[0.9, 0.1, 0.0], [0.0, 0.8, 0.1]], &[0, 1]);
        assert!(value > 0.0, "{value}");
        assert!(value.is_finite(), "{value}");
        // Softmax gradients sum to zero along every row.
        assert!(grad[..3].iter().sum::<f32>().abs() < 1e-5);
        assert!(grad[3..].iter().sum::<f32>().abs() < 1e-5);
    }

    #[test]
    #[should_panic(expected = "label 3 is neither -1 nor a slot in 0..3")]
    fn label_out_of_range_panics() {
        value_and_grad(&loss(LossKind::Am, 1), [[0.0; 3]; 2], &[0, 3]);
    }
}
