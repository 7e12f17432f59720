//! The insightface 1:1 verification protocol behind numbers like "LFW 99.8".
//!
//! Each pair is scored by the squared Euclidean distance of its two unit features (0 for equal
//! features, 4 for opposite ones), and a pair is predicted "same" when the distance is strictly
//! below a threshold. The pairs are cut into `folds` contiguous, unshuffled folds, as
//! scikit-learn's `KFold(shuffle=False)` cuts them. For each fold, the threshold from the grid
//! `0.00, 0.01, .., 3.99` with the highest accuracy on the other folds is applied to the held-out
//! fold. The result is the mean and population standard deviation of the held-out accuracies.

use std::ops::Range;

use serde::Serialize;

use crate::{EvalError, PairList};

/// Number of thresholds in the grid `0.00, 0.01, .., 3.99`.
const N_THRESHOLDS: usize = 400;

/// Spacing of the threshold grid.
const THRESHOLD_STEP: f64 = 0.01;

/// Outcome of one verification run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// Mean of the held-out fold accuracies, in `[0, 1]`.
    pub accuracy_mean: f64,
    /// Population standard deviation of the fold accuracies (numpy's default `ddof = 0`).
    pub accuracy_std: f64,
    /// Held-out accuracy of each fold, in fold order.
    pub fold_accuracies: Vec<f64>,
    /// Distance threshold picked on the other folds for each fold, in fold order.
    pub thresholds: Vec<f64>,
    /// Number of pairs scored.
    pub pairs: usize,
}

impl Verification {
    /// Returns the figures worth logging, with `xnorm` from [`crate::xnorm`] added.
    pub fn summary(&self, xnorm: f64) -> EvalSummary {
        EvalSummary {
            accuracy_mean: self.accuracy_mean,
            accuracy_std: self.accuracy_std,
            xnorm,
            pairs: self.pairs,
        }
    }
}

/// Headline numbers of one validation set, for logs and JSON reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalSummary {
    /// Mean held-out fold accuracy, in `[0, 1]`.
    pub accuracy_mean: f64,
    /// Population standard deviation of the fold accuracies.
    pub accuracy_std: f64,
    /// Mean L2 norm of the unnormalised embeddings.
    pub xnorm: f64,
    /// Number of pairs scored.
    pub pairs: usize,
}

/// Scores `pairs` on the unit `dim`-wide feature rows in `features` with `folds`-fold
/// cross-validation.
///
/// `features` should already be unit-length rows, for example the output of
/// [`crate::flip_sum`]. Distances are computed in f64; insightface computes them in f32, which
/// can move a pair lying within about 1e-7 of a grid threshold to the other side.
///
/// Ties between thresholds go to the lowest one, as `numpy.argmax` picks the first maximum.
///
/// # Errors
///
/// [`EvalError::ZeroDim`] or [`EvalError::FeatureLength`] for a buffer that does not split into
/// rows, [`EvalError::NonFiniteFeature`] for NaN or infinite values,
/// [`EvalError::LabelCountMismatch`] and [`EvalError::PairIndexOutOfRange`] for an inconsistent
/// pair list, and the errors of [`fold_ranges`].
pub fn verify(
    features: &[f32],
    dim: usize,
    pairs: &PairList,
    folds: usize,
) -> Result<Verification, EvalError> {
    let rows = check_features(features, dim)?;
    check_pairs(pairs, rows)?;
    let ranges = fold_ranges(pairs.len(), folds)?;

    let distances = pair_distances(features, dim, &pairs.pairs);
    let correct: Vec<_> = ranges
        .iter()
        .map(|r| correct_counts(&distances[r.clone()], &pairs.issame[r.clone()]))
        .collect();
    let total = sum_counts(&correct);

    let mut fold_accuracies = Vec::with_capacity(folds);
    let mut thresholds = Vec::with_capacity(folds);
    for (range, held_out) in ranges.iter().zip(&correct) {
        let best = best_threshold(&total, held_out);
        fold_accuracies.push(held_out[best] as f64 / range.len() as f64);
        thresholds.push(threshold(best));
    }

    let (accuracy_mean, accuracy_std) = mean_and_std(&fold_accuracies);
    Ok(Verification {
        accuracy_mean,
        accuracy_std,
        fold_accuracies,
        thresholds,
        pairs: pairs.len(),
    })
}

/// Splits `n` items into `folds` contiguous ranges like scikit-learn's
/// `KFold(n_splits=folds, shuffle=False)`: the first `n % folds` ranges hold one extra item.
///
/// # Errors
///
/// [`EvalError::InvalidFoldCount`] for `folds < 2` and [`EvalError::TooFewPairs`] for
/// `n < folds`.
pub fn fold_ranges(n: usize, folds: usize) -> Result<Vec<Range<usize>>, EvalError> {
    if folds < 2 {
        return Err(EvalError::InvalidFoldCount { folds });
    }
    if n < folds {
        return Err(EvalError::TooFewPairs { pairs: n, required: folds, folds });
    }
    let mut start = 0;
    let ranges = (0..folds)
        .map(|fold| {
            let len = n / folds + usize::from(fold < n % folds);
            start += len;
            start - len..start
        })
        .collect();
    Ok(ranges)
}

/// Returns grid threshold `idx`, computed as numpy's `arange(0, 4, 0.01)` computes it.
fn threshold(idx: usize) -> f64 {
    idx as f64 * THRESHOLD_STEP
}

/// Checks the row layout and finiteness of `features` and returns the number of rows.
fn check_features(features: &[f32], dim: usize) -> Result<usize, EvalError> {
    if dim == 0 {
        return Err(EvalError::ZeroDim);
    }
    if !features.len().is_multiple_of(dim) {
        return Err(EvalError::FeatureLength { len: features.len(), dim });
    }
    for (row, values) in features.chunks_exact(dim).enumerate() {
        if let Some(value) = values.iter().find(|v| !v.is_finite()) {
            return Err(EvalError::NonFiniteFeature { row, value: value.to_string() });
        }
    }
    Ok(features.len() / dim)
}

fn check_pairs(pairs: &PairList, rows: usize) -> Result<(), EvalError> {
    if pairs.pairs.len() != pairs.issame.len() {
        return Err(EvalError::LabelCountMismatch {
            pairs: pairs.pairs.len(),
            labels: pairs.issame.len(),
        });
    }
    for (pair, &(a, b)) in pairs.pairs.iter().enumerate() {
        if let Some(row) = [a, b].into_iter().find(|&row| row >= rows) {
            return Err(EvalError::PairIndexOutOfRange { pair, row, rows });
        }
    }
    Ok(())
}

fn pair_distances(features: &[f32], dim: usize, pairs: &[(usize, usize)]) -> Vec<f64> {
    let row = |idx: usize| &features[idx * dim..(idx + 1) * dim];
    pairs
        .iter()
        .map(|&(a, b)| {
            row(a).iter().zip(row(b)).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum()
        })
        .collect()
}

/// Counts, for every grid threshold, the pairs it classifies correctly.
///
/// A pair at distance `d` is predicted "same" by exactly the thresholds above `d`, which form a
/// suffix of the ascending grid. So each pair adds one to a prefix (different pair) or a suffix
/// (same pair) of the counts, and a difference array does that in constant time per pair.
fn correct_counts(distances: &[f64], issame: &[bool]) -> Vec<u32> {
    let grid: Vec<f64> = (0..N_THRESHOLDS).map(threshold).collect();
    let mut delta = vec![0i64; N_THRESHOLDS + 1];
    for (&distance, &same) in distances.iter().zip(issame) {
        let first_same = grid.partition_point(|&t| t <= distance);
        if same {
            delta[first_same] += 1;
        } else {
            delta[0] += 1;
            delta[first_same] -= 1;
        }
    }

    let mut running = 0i64;
    delta[..N_THRESHOLDS]
        .iter()
        .map(|d| {
            running += d;
            running as u32
        })
        .collect()
}

fn sum_counts(per_fold: &[Vec<u32>]) -> Vec<u32> {
    let mut total = vec![0; N_THRESHOLDS];
    for counts in per_fold {
        for (sum, count) in total.iter_mut().zip(counts) {
            *sum += count;
        }
    }
    total
}

/// Returns the grid index with the most correct pairs outside the held-out fold, the lowest index
/// on ties.
///
/// Every fold's training set has a fixed size, so comparing counts ranks thresholds exactly as
/// comparing accuracies does, without float ties.
fn best_threshold(total: &[u32], held_out: &[u32]) -> usize {
    let mut best = 0;
    let mut best_count = 0;
    for (idx, (all, fold)) in total.iter().zip(held_out).enumerate() {
        let train = all - fold;
        if idx == 0 || train > best_count {
            best = idx;
            best_count = train;
        }
    }
    best
}

fn mean_and_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit features on a circle: row `k` is `(cos a_k, sin a_k)`.
    fn circle(angles: &[f64]) -> Vec<f32> {
        angles.iter().flat_map(|a| [a.cos() as f32, a.sin() as f32]).collect()
    }

    fn list(pairs: &[(usize, usize)], issame: &[bool]) -> PairList {
        PairList { pairs: pairs.to_vec(), issame: issame.to_vec() }
    }

    #[test]
    fn kfold_gives_extra_items_to_first_folds() {
        let ranges = fold_ranges(23, 10).unwrap();
        let lens: Vec<_> = ranges.iter().map(|r| r.len()).collect();
        assert_eq!(lens, [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(ranges[0], 0..3);
        assert_eq!(ranges[3], 9..11);
        assert_eq!(ranges[9], 21..23);
    }

    #[test]
    fn kfold_rejects_fewer_items_than_folds() {
        let err = fold_ranges(9, 10).unwrap_err();
        assert_eq!(err, EvalError::TooFewPairs { pairs: 9, required: 10, folds: 10 });
    }

    #[test]
    fn perfect_separation_scores_one() {
        // Same pairs are identical rows (distance 0), different pairs are orthogonal
        // (distance 2), so any threshold in (0, 2] separates them in every fold.
        let features = circle(&[0.0, std::f64::consts::FRAC_PI_2]);
        let pairs: Vec<_> = (0..20).map(|k| if k % 2 == 0 { (0, 0) } else { (0, 1) }).collect();
        let issame: Vec<_> = (0..20).map(|k| k % 2 == 0).collect();
        let result = verify(&features, 2, &list(&pairs, &issame), 10).unwrap();

        assert_eq!(result.accuracy_mean, 1.0);
        assert_eq!(result.accuracy_std, 0.0);
        assert_eq!(result.fold_accuracies, vec![1.0; 10]);
        assert_eq!(result.pairs, 20);
        // The first threshold above distance 0 separates the pairs; ties go to the lowest.
        assert_eq!(result.thresholds, vec![0.01; 10]);
    }

    /// Unit rows whose squared distance to row 0 = `(1, 0)` is each of `distances`, using
    /// `|a - b|^2 = 2 - 2 cos t` for unit vectors `t` radians apart.
    fn rows_at_distances(distances: &[f64]) -> Vec<f32> {
        let mut angles = vec![0.0];
        angles.extend(distances.iter().map(|d| (1.0 - d / 2.0).acos()));
        circle(&angles)
    }

    /// Hand calculation. Distances sit halfway between grid points, so f32 rounding of the
    /// features cannot move a pair across a threshold.
    ///
    /// ```text
    /// pair  distance  issame  fold
    ///  0    1.005     true    0
    ///  1    2.005     false   0
    ///  2    0.255     true    1
    ///  3    3.005     false   1
    ///  4    2.005     true    2
    ///  5    1.005     false   2
    /// ```
    ///
    /// Correct pairs per fold in each threshold band (a pair is "same" if distance < t):
    ///
    /// ```text
    /// band                 fold0  fold1  fold2
    /// A  t <= 0.255          1      1      1
    /// B  0.255 < t <= 1.005  1      2      1
    /// C  1.005 < t <= 2.005  2      2      0
    /// D  2.005 < t <= 3.005  1      2      1
    /// E  3.005 < t           1      1      1
    /// ```
    ///
    /// Fold 0 held out: folds 1+2 score A2 B3 C2 D3 E2. The first maximum is B, whose lowest grid
    /// point is 0.26. At 0.26, pair 0 is predicted different (wrong) and pair 1 too (right): 1/2.
    /// Fold 1 held out: folds 0+2 score 2 in every band, so the tie goes to t = 0.00, where every
    /// pair is predicted different: pair 2 wrong, pair 3 right, 1/2.
    /// Fold 2 held out: folds 0+1 score A2 B3 C4 D3 E2. C starts at grid point 1.01. There pair 4
    /// (2.005) is predicted different and pair 5 (1.005) same, both wrong: 0/2.
    /// Mean = (0.5 + 0.5 + 0) / 3 = 1/3.
    /// Population std = sqrt(((1/6)^2 + (1/6)^2 + (1/3)^2) / 3) = sqrt(1/18) = 0.2357...
    #[test]
    fn hand_computed_three_folds() {
        let features = rows_at_distances(&[1.005, 2.005, 0.255, 3.005]);
        let pairs = list(
            &[(0, 1), (0, 2), (0, 3), (0, 4), (0, 2), (0, 1)],
            &[true, false, true, false, true, false],
        );
        let result = verify(&features, 2, &pairs, 3).unwrap();

        assert_eq!(result.fold_accuracies, vec![0.5, 0.5, 0.0]);
        assert_eq!(result.thresholds, vec![threshold(26), threshold(0), threshold(101)]);
        assert!((result.accuracy_mean - 1.0 / 3.0).abs() < 1e-12);
        assert!((result.accuracy_std - (1.0f64 / 18.0).sqrt()).abs() < 1e-12);
        assert_eq!(result.pairs, 6);
    }

    /// Folds of 2 same + 2 different pairs. Fold 0 has same pairs at 0.505 and different pairs
    /// at 1.505; folds 1 and 2 have same pairs at 1.505 and different pairs at 2.505.
    ///
    /// Fold 0 held out: folds 1+2 are all correct for 1.505 < t <= 2.505, so t = 1.51. Fold 0's
    /// different pairs at 1.505 then count as same: 2/4.
    /// Fold 1 held out: folds 0+2 score 6 of 8 both for 0.505 < t <= 1.505 (fold 2's same pairs
    /// wrong) and for 1.505 < t <= 2.505 (fold 0's different pairs wrong). The first maximum is
    /// t = 0.51, which rejects fold 1's same pairs: 2/4. Fold 2 mirrors fold 1.
    #[test]
    fn best_threshold_differs_per_fold() {
        let features = rows_at_distances(&[0.505, 1.505, 2.505]);
        let mut pairs = Vec::new();
        let mut issame = Vec::new();
        for (same_row, different_row) in [(1, 2), (2, 3), (2, 3)] {
            pairs.extend([(0, same_row), (0, same_row), (0, different_row), (0, different_row)]);
            issame.extend([true, true, false, false]);
        }
        let result = verify(&features, 2, &list(&pairs, &issame), 3).unwrap();

        assert_eq!(result.thresholds, vec![threshold(151), threshold(51), threshold(51)]);
        assert_eq!(result.fold_accuracies, vec![0.5, 0.5, 0.5]);
        assert_eq!(result.accuracy_std, 0.0);
    }

    #[test]
    fn summary_copies_verification_figures() {
        let result = Verification {
            accuracy_mean: 0.9,
            accuracy_std: 0.1,
            fold_accuracies: vec![0.8, 1.0],
            thresholds: vec![1.0, 1.1],
            pairs: 40,
        };
        let summary = result.summary(21.5);
        let json = serde_json::to_value(&summary).unwrap();
        let expected = serde_json::json!({
            "accuracy_mean": 0.9,
            "accuracy_std": 0.1,
            "xnorm": 21.5,
            "pairs": 40,
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn rejects_ragged_features() {
        let err = verify(&[0.0; 5], 2, &list(&[(0, 1)], &[true]), 2).unwrap_err();
        assert_eq!(err, EvalError::FeatureLength { len: 5, dim: 2 });
    }

    #[test]
    fn rejects_zero_dim() {
        let err = verify(&[], 0, &list(&[], &[]), 2).unwrap_err();
        assert_eq!(err, EvalError::ZeroDim);
    }

    #[test]
    fn rejects_nan_feature() {
        let features = [1.0, 0.0, f32::NAN, 0.0];
        let err = verify(&features, 2, &list(&[(0, 1), (0, 1)], &[true, false]), 2).unwrap_err();
        assert_eq!(err, EvalError::NonFiniteFeature { row: 1, value: "NaN".into() });
    }

    #[test]
    fn rejects_out_of_range_pair() {
        let features = [1.0, 0.0, 0.0, 1.0];
        let pairs = list(&[(0, 1), (1, 2)], &[true, false]);
        let err = verify(&features, 2, &pairs, 2).unwrap_err();
        assert_eq!(err, EvalError::PairIndexOutOfRange { pair: 1, row: 2, rows: 2 });
    }

    #[test]
    fn rejects_label_count_mismatch() {
        let features = [1.0, 0.0, 0.0, 1.0];
        let err = verify(&features, 2, &list(&[(0, 1), (0, 1)], &[true]), 2).unwrap_err();
        assert_eq!(err, EvalError::LabelCountMismatch { pairs: 2, labels: 1 });
    }

    #[test]
    fn rejects_too_few_pairs() {
        let features = [1.0, 0.0, 0.0, 1.0];
        let err = verify(&features, 2, &list(&[(0, 1)], &[true]), 2).unwrap_err();
        assert_eq!(err, EvalError::TooFewPairs { pairs: 1, required: 2, folds: 2 });
    }
}
