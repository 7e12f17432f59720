//! The two-pass FFC step over the class pool.
//!
//! Pass A inserts the gallery features of view y, scores the probe features of view x against
//! the pool and is rolled back; pass B inserts view x for good and scores view y. Each pass
//! scores two cosine matrices: C1 against queue row 0 of every slot, and C2, where slots hit in
//! the pass use row 1 instead. C2 differs from C1 only in the hit columns, so it is built from
//! C1 plus a product over those columns, and only one full `[batch, Q]` product runs per pass.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use ffc_pool::{ClassPool, PassInsertion};

use crate::MarginLoss;

/// Record of one pass, for logs and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct PassReport {
    /// Loss of the pass, `loss(C1) + loss(C2)`.
    pub loss: f32,
    /// Queue cells written and slots hit.
    pub insertion: PassInsertion,
    /// Slot of every probe label after the insertion, -1 for an outlier.
    pub probe_slots: Vec<i64>,
}

/// The features and labels of one training step, as plain tensors.
#[derive(Debug, Clone)]
pub struct StepInputs<B: Backend> {
    /// Unit-norm probe-net features of view x, `[n_x, D]`.
    pub probe_x: Tensor<B, 2>,
    /// Unit-norm probe-net features of view y, `[n_y, D]`.
    pub probe_y: Tensor<B, 2>,
    /// Unit-norm gallery-net features of view x, `[n_x, D]`.
    pub gallery_x: Tensor<B, 2>,
    /// Unit-norm gallery-net features of view y, `[n_y, D]`.
    pub gallery_y: Tensor<B, 2>,
    /// Identity labels of view x, `[n_x]`.
    pub x_labels: Vec<u64>,
    /// Identity labels of view y, `[n_y]`.
    pub y_labels: Vec<u64>,
}

/// Result of [`ffc_step`].
#[derive(Debug, Clone)]
pub struct StepOutcome<B: Backend> {
    /// Total loss: pass A + pass B.
    pub loss: f32,
    /// dL/d probe_x, `[n_x, D]`; `None` when pass A was skipped.
    pub grad_probe_x: Option<Tensor<B, 2>>,
    /// dL/d probe_y, `[n_y, D]`.
    pub grad_probe_y: Tensor<B, 2>,
    /// Pass A (probe x against gallery y, rolled back), unless skipped.
    pub pass_a: Option<PassReport>,
    /// Pass B (probe y against gallery x, kept).
    pub pass_b: PassReport,
}

/// Runs FFC's two-pass step on the pool and returns the loss with its gradient with respect to
/// both probe feature sets.
///
/// With `rollback_pass` false, pass A is skipped and view x contributes only its gallery
/// features. The pool ends up exactly as pass B leaves it either way.
///
/// Everything runs on plain tensors: the loss gradient is computed in closed form
/// ([`MarginLoss::value_and_grad`]). To train a network, multiply each probe feature tensor of
/// the autodiff graph by its detached gradient, sum, and backpropagate:
/// `(probe_x * grad_x).sum() + (probe_y * grad_y).sum()` has exactly these gradients.
///
/// # Shapes
/// See [`StepInputs`].
pub fn ffc_step<B: Backend>(
    pool: &mut ClassPool<B>,
    loss: &MarginLoss,
    inputs: StepInputs<B>,
    rollback_pass: bool,
) -> StepOutcome<B> {
    let StepInputs { probe_x, probe_y, gallery_x, gallery_y, x_labels, y_labels } = inputs;

    let pass_a = rollback_pass
        .then(|| ffc_pass(pool, loss, probe_x, &x_labels, gallery_y, &y_labels, false));
    let (report_b, grad_probe_y) =
        ffc_pass(pool, loss, probe_y, &y_labels, gallery_x, &x_labels, true);

    let loss_a = pass_a.as_ref().map_or(0.0, |(report, _)| report.loss);
    let (pass_a, grad_probe_x) = pass_a.unzip();
    StepOutcome {
        loss: loss_a + report_b.loss,
        grad_probe_x,
        grad_probe_y,
        pass_a,
        pass_b: report_b,
    }
}

/// Runs one pass: inserts the gallery, scores the probes against the pool and returns the report
/// with dL/d probe. With `keep` false the insertion is journaled and rolled back afterwards.
///
/// # Shapes
/// - `probe`: `[n_probe, D]`, `probe_labels`: `[n_probe]`
/// - `gallery`: `[n_gallery, D]`, `gallery_labels`: `[n_gallery]`
/// - returned gradient: `[n_probe, D]`
pub fn ffc_pass<B: Backend>(
    pool: &mut ClassPool<B>,
    loss: &MarginLoss,
    probe: Tensor<B, 2>,
    probe_labels: &[u64],
    gallery: Tensor<B, 2>,
    gallery_labels: &[u64],
    keep: bool,
) -> (PassReport, Tensor<B, 2>) {
    let (insertion, journal) = if keep {
        (pool.insert(gallery_labels, gallery), None)
    } else {
        let (insertion, journal) = pool.insert_journaled(gallery_labels, gallery);
        (insertion, Some(journal))
    };
    let probe_slots = pool.probe_slots(probe_labels);

    let (value, grad_probe) = score(pool, loss, probe, &insertion.hit_slots, &probe_slots);

    if let Some(journal) = journal {
        pool.rollback(journal);
    }
    (PassReport { loss: value, insertion, probe_slots }, grad_probe)
}

/// Computes `loss(C1) + loss(C2)` and its gradient with respect to the probe features.
fn score<B: Backend>(
    pool: &ClassPool<B>,
    loss: &MarginLoss,
    probe: Tensor<B, 2>,
    hit_slots: &[usize],
    probe_slots: &[i64],
) -> (f32, Tensor<B, 2>) {
    let row0 = pool.row0(); // [Q, D]
    let c1 = probe.clone().matmul(row0.clone().transpose()); // [n, Q]

    if hit_slots.is_empty() {
        // C2 equals C1, so the pass loss is twice loss(C1).
        let (value, grad) = loss.value_and_grad(c1, probe_slots);
        return (2.0 * value, grad.matmul(row0) * 2.0);
    }

    let device = probe.device();
    let hits = Tensor::<B, 1, Int>::from_data(
        TensorData::new(hit_slots.iter().map(|&s| s as i64).collect(), [hit_slots.len()]),
        &device,
    );
    let row_delta = pool.rows_of(1, hit_slots) - pool.rows_of(0, hit_slots); // [h, D]
    let column_delta = probe.matmul(row_delta.clone().transpose()); // [n, h]
    let c2 = c1.clone().select_assign(1, hits.clone(), column_delta, IndexingUpdateOp::Add);

    let (value1, grad1) = loss.value_and_grad(c1, probe_slots);
    let (value2, grad2) = loss.value_and_grad(c2, probe_slots);
    // dL/dP = dC1 W0 + dC2 W~, with W~ = W0 except the hit rows, which are W0 + row_delta.
    let grad_probe = (grad1 + grad2.clone()).matmul(row0) + grad2.select(1, hits).matmul(row_delta);
    (value1 + value2, grad_probe)
}
