//! The two-pass FFC step over the class pool.
//!
//! Pass A inserts the gallery features of view y, scores the probe features of view x against
//! the pool and is rolled back; pass B inserts view x for good and scores view y. Each pass
//! scores two cosine matrices: C1 against queue row 0 of every slot, and C2, where slots hit in
//! the pass use row 1 instead. C2 differs from C1 only in the hit columns, so one full
//! `[batch, Q]` product and one dense loss pass run per pass: C2's loss and gradient come from
//! C1's per-row values and the hit columns (see `crate::hits`).

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use ffc_pool::{ClassPool, PassInsertion};

use crate::analytic::host_values;
use crate::hits::PairTerms;
use crate::{LossKind, MarginLoss};

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
    if hit_slots.is_empty() {
        // C2 equals C1, so the pass loss is twice loss(C1).
        let row0 = pool.row0(); // [Q, D]
        let c1 = probe.matmul(row0.clone().transpose()); // [n, Q]
        let (value, grad) = loss.value_and_grad(c1, probe_slots);
        return (2.0 * value, grad.matmul(row0) * 2.0);
    }
    match loss.kind {
        LossKind::Am | LossKind::Arc => score_from_c1(pool, loss, probe, hit_slots, probe_slots),
        LossKind::Sv => score_dense(pool, loss, probe, hit_slots, probe_slots),
    }
}

/// [`score`] for a pass with hits, scoring C2 from C1's per-row values and the hit columns
/// (see `crate::hits`): one `[n, Q]` product and one dense loss pass.
///
/// # Shapes
/// - `probe`: `[n, D]`; returned gradient: `[n, D]`
fn score_from_c1<B: Backend>(
    pool: &ClassPool<B>,
    loss: &MarginLoss,
    probe: Tensor<B, 2>,
    hit_slots: &[usize],
    probe_slots: &[i64],
) -> (f32, Tensor<B, 2>) {
    score_pair(pool, loss, probe, hit_slots, probe_slots, MarginLoss::pair_terms)
}

/// A function that scores both matrices of a pass, as [`MarginLoss::pair_terms`] does.
type PairFn<B> = fn(&MarginLoss, Tensor<B, 2>, &[i64], &[usize], &[f32]) -> PairTerms<B>;

/// Runs [`score_from_c1`] with the given scoring of both matrices.
fn score_pair<B: Backend>(
    pool: &ClassPool<B>,
    loss: &MarginLoss,
    probe: Tensor<B, 2>,
    hit_slots: &[usize],
    probe_slots: &[i64],
    pair_terms: PairFn<B>,
) -> (f32, Tensor<B, 2>) {
    let [n, _] = probe.dims();
    let device = probe.device();
    let row0 = pool.row0(); // [Q, D]
    let c1 = probe.clone().matmul(row0.clone().transpose()); // [n, Q]

    // Stage 1: C2's hit columns, which score queue row 1 of the hit slots.
    let row1_hits = pool.rows_of(1, hit_slots); // [h, D]
    let c2_hits = product_transposed(&probe, &row1_hits); // [n, h]

    // Stage 2: both losses, and their gradient as the parts that multiply row 0 and row 1.
    let terms = pair_terms(loss, c1, probe_slots, hit_slots, &c2_hits);

    // Stage 3: dL/dP = A W0 + H W1[hits].
    let hit_part = hit_product(terms.hit_grad, [n, hit_slots.len()], row1_hits, &device);
    (terms.loss, terms.grad.matmul(row0) + hit_part)
}

/// Returns `lhs rhs^T` on the host, row-major `[m, n]`.
///
/// # Shapes
/// - `lhs`: `[m, D]`, `rhs`: `[n, D]`
fn product_transposed<B: Backend>(lhs: &Tensor<B, 2>, rhs: &Tensor<B, 2>) -> Vec<f32> {
    #[cfg(feature = "flex")]
    {
        let ([m, k], [n, _]) = (lhs.dims(), rhs.dims());
        let product = crate::host::with_flex_values(lhs, |lhs| {
            crate::host::with_flex_values(rhs, |rhs| {
                crate::host::host_product(lhs, rhs, [m, k, n], true)
            })
        });
        if let Some(Some(values)) = product {
            return values;
        }
    }
    host_values(lhs.clone().matmul(rhs.clone().transpose()))
}

/// Returns `H W1[hits]`, the part of the probe gradient that row 1 of the hit slots carries.
///
/// # Shapes
/// - `hit_grad`: `[n, h]` row-major, `row1_hits`: `[h, D]`; returned: `[n, D]`
fn hit_product<B: Backend>(
    hit_grad: Vec<f32>,
    [n, h]: [usize; 2],
    row1_hits: Tensor<B, 2>,
    device: &B::Device,
) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    {
        let [_, d] = row1_hits.dims();
        let product = crate::host::with_flex_values(&row1_hits, |rows| {
            crate::host::host_product(&hit_grad, rows, [n, h, d], false)
        });
        if let Some(values) = product {
            return float_tensor::<B>(values, [n, d], device);
        }
    }
    float_tensor::<B>(hit_grad, [n, h], device).matmul(row1_hits)
}

/// [`score`] for a pass with hits, building C2 in full. SV takes this path: its re-weighting
/// depends on each row's target cosine, which a hit changes.
///
/// # Shapes
/// - `probe`: `[n, D]`; returned gradient: `[n, D]`
fn score_dense<B: Backend>(
    pool: &ClassPool<B>,
    loss: &MarginLoss,
    probe: Tensor<B, 2>,
    hit_slots: &[usize],
    probe_slots: &[i64],
) -> (f32, Tensor<B, 2>) {
    let device = probe.device();
    let row0 = pool.row0(); // [Q, D]
    let c1 = probe.clone().matmul(row0.clone().transpose()); // [n, Q]
    let hits = int_tensor::<B>(hit_slots.iter().map(|&s| s as i64).collect(), &device);
    let row_delta = pool.rows_of(1, hit_slots) - pool.rows_of(0, hit_slots); // [h, D]
    let column_delta = probe.matmul(row_delta.clone().transpose()); // [n, h]
    let c2 = c1.clone().select_assign(1, hits.clone(), column_delta, IndexingUpdateOp::Add);

    let (value1, grad1) = loss.value_and_grad(c1, probe_slots);
    let (value2, grad2) = loss.value_and_grad(c2, probe_slots);
    // dL/dP = dC1 W0 + dC2 W~, with W~ = W0 except the hit rows, which are W0 + row_delta.
    let grad_probe = (grad1 + grad2.clone()).matmul(row0) + grad2.select(1, hits).matmul(row_delta);
    (value1 + value2, grad_probe)
}

fn int_tensor<B: Backend>(values: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let len = values.len();
    Tensor::from_data(TensorData::new(values, [len]), device)
}

fn float_tensor<B: Backend>(
    values: Vec<f32>,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use ffc_pool::PoolConfig;

    use super::*;

    type B = burn::backend::Flex;

    /// Deterministic unit-norm features: a 64-bit LCG, centred, then L2-normalised per row.
    fn features(rows: usize, dim: usize, seed: u64) -> Tensor<B, 2> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut values = Vec::with_capacity(rows * dim);
        for _ in 0..rows * dim {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            values.push((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5);
        }
        for row in values.chunks_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            row.iter_mut().for_each(|v| *v /= norm);
        }
        Tensor::from_data(TensorData::new(values, [rows, dim]), &Default::default())
    }

    /// Builds a pool of `queue` slots after one kept pass over labels `0..filled`.
    fn pool(queue: usize, dim: usize, filled: u64) -> ClassPool<B> {
        let config = PoolConfig::new(NonZeroUsize::new(queue).unwrap(), dim);
        let device = Default::default();
        // The random vectors of untaken slots come from the backend generator.
        B::seed(&device, 17);
        let mut pool = ClassPool::<B>::new(&config, &device);
        let labels: Vec<u64> = (0..filled).collect();
        pool.insert(&labels, features(filled as usize, dim, 7));
        pool
    }

    type ScoreFn =
        fn(&ClassPool<B>, &MarginLoss, Tensor<B, 2>, &[usize], &[i64]) -> (f32, Tensor<B, 2>);

    /// Runs one journaled pass and scores it three ways: from C1 on the host, from C1 with the
    /// tensor path of the other backends, and densely.
    fn three_ways(
        pool: &mut ClassPool<B>,
        loss: &MarginLoss,
        gallery_labels: &[u64],
        probe_labels: &[u64],
        probe: Tensor<B, 2>,
    ) -> [(f32, Vec<f32>); 3] {
        let dim = pool.feat_dim();
        let gallery = features(gallery_labels.len(), dim, 11);
        let (insertion, journal) = pool.insert_journaled(gallery_labels, gallery);
        assert!(!insertion.hit_slots.is_empty(), "the pass must hit");
        let slots = pool.probe_slots(probe_labels);
        let run = |f: ScoreFn| {
            let (value, grad): (f32, Tensor<B, 2>) =
                f(pool, loss, probe.clone(), &insertion.hit_slots, &slots);
            (value, grad.into_data().into_vec::<f32>().unwrap())
        };
        let result = [run(score_from_c1), run(score_from_c1_tensor), run(score_dense)];
        pool.rollback(journal);
        result
    }

    /// Runs [`score_from_c1`] the way backends other than the CPU's run it.
    fn score_from_c1_tensor(
        pool: &ClassPool<B>,
        loss: &MarginLoss,
        probe: Tensor<B, 2>,
        hit_slots: &[usize],
        probe_slots: &[i64],
    ) -> (f32, Tensor<B, 2>) {
        score_pair(pool, loss, probe, hit_slots, probe_slots, MarginLoss::tensor_pair_terms)
    }

    fn assert_close(
        label: &str,
        (value, grad): &(f32, Vec<f32>),
        (dense, dense_grad): &(f32, Vec<f32>),
    ) {
        assert!(
            (value - dense).abs() <= 1e-4 * dense.abs().max(1.0),
            "{label}: loss {value} vs dense {dense}"
        );
        let largest = dense_grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        for (i, (g, d)) in grad.iter().zip(dense_grad).enumerate() {
            assert!((g - d).abs() <= 1e-4 * largest + 1e-7, "{label}: grad[{i}] {g} vs dense {d}");
        }
    }

    fn losses() -> Vec<MarginLoss> {
        let mut all = Vec::new();
        for (kind, scale, margin) in
            [(LossKind::Am, 32.0, 0.35), (LossKind::Am, 64.0, 0.0), (LossKind::Arc, 64.0, 0.5)]
        {
            all.push(MarginLoss { kind, scale, margin, sv_t: 1.2, hard_negatives: 3 });
        }
        all
    }

    /// A pool and a pass to score: the pool is filled with labels `0..filled`, then the pass
    /// inserts `gallery` and scores `probes` whose features are `features(probes.len(), dim,
    /// probe_seed)`.
    struct Case<'a> {
        name: &'a str,
        queue: usize,
        dim: usize,
        filled: u64,
        gallery: &'a [u64],
        probes: &'a [u64],
        probe_seed: u64,
    }

    fn check(case: &Case<'_>) {
        for loss in losses() {
            let mut pool = pool(case.queue, case.dim, case.filled);
            let probe = features(case.probes.len(), case.dim, case.probe_seed);
            let [host, tensor, dense] =
                three_ways(&mut pool, &loss, case.gallery, case.probes, probe);
            assert_close(&format!("{} {loss:?}", case.name), &host, &dense);
            assert_close(&format!("{} {loss:?}, tensor path", case.name), &tensor, &dense);
        }
    }

    #[test]
    fn c2_matches_dense_mixed_rows() {
        // Labels 0..40 pooled. The gallery hits 0..12 (twice for 3) and adds 50..54; probes:
        // targets hit (2, 5), pooled but not hit (20, 33), newly pooled (51), outliers (90, 91).
        let gallery: Vec<u64> = (0..12).chain([3, 50, 51, 52, 53]).collect();
        let probes = [2, 5, 20, 33, 51, 90, 91, 5];
        check(&Case {
            name: "mixed",
            queue: 64,
            dim: 16,
            filled: 40,
            gallery: &gallery,
            probes: &probes,
            probe_seed: 3,
        });
    }

    #[test]
    fn c2_matches_dense_peaked_rows() {
        // Probes equal to their row-0 features: in C1 the target has almost all of each row's
        // softmax mass, so the mass left after removing the hit terms cancels to nearly 0.
        let labels: Vec<u64> = (0..8).collect();
        check(&Case {
            name: "peaked",
            queue: 24,
            dim: 8,
            filled: 8,
            gallery: &labels,
            probes: &labels,
            probe_seed: 7,
        });
    }

    #[test]
    fn c2_matches_dense_dominant_negative() {
        // Each probe equals the row-0 feature of another hit slot: in C1 a negative has almost
        // all of the mass, C2's sum is far smaller, and r is large.
        let labels: Vec<u64> = (0..8).collect();
        let shifted: Vec<u64> = (0..8).map(|label| (label + 1) % 8).collect();
        check(&Case {
            name: "negative",
            queue: 24,
            dim: 8,
            filled: 8,
            gallery: &labels,
            probes: &shifted,
            probe_seed: 7,
        });
    }

    #[test]
    fn c2_matches_dense_full_queue() {
        // Every slot is hit, so an outlier's top k + h reaches the whole queue.
        let labels: Vec<u64> = (0..6).collect();
        check(&Case {
            name: "full",
            queue: 6,
            dim: 8,
            filled: 6,
            gallery: &labels,
            probes: &[1, 70, 71, 4],
            probe_seed: 5,
        });
    }
}
