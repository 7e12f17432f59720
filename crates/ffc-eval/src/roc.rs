//! TAR@FAR read-out from a ROC curve, as insightface's IJB-B/IJB-C 1:1 scripts report it.
//!
//! The ROC is built like scikit-learn's `roc_curve(issame, scores)` with its default
//! `drop_intermediate=True`: one point per distinct score, collinear middle points removed, and
//! `(0, 0)` prepended. For each requested FAR the TAR of the ROC point whose FPR is nearest is
//! read off. On equal distance the point with the higher FPR wins, because the scripts reverse
//! the ROC arrays before taking `numpy.argmin`.

/// Reads the true accept rate at each false accept rate in `fars`.
///
/// `scores` are similarities (higher means more likely the same identity, e.g. cosine) and
/// `issame[k]` is the ground truth of pair `k`. Returns `(far, tar)` for each entry of `fars`, in
/// the same order. The TAR belongs to the ROC point whose FPR is nearest `far`, so it can belong
/// to an FPR somewhat above or below the one requested when the negatives are few.
///
/// Every TAR is NaN when there are no same pairs, no different pairs, or a NaN score, because
/// the ROC is undefined then.
///
/// # Panics
///
/// Panics if `scores` and `issame` differ in length.
pub fn tar_at_far(scores: &[f32], issame: &[bool], fars: &[f64]) -> Vec<(f64, f64)> {
    assert_eq!(
        scores.len(),
        issame.len(),
        "tar_at_far: got {} scores but {} issame labels",
        scores.len(),
        issame.len()
    );
    let positives = issame.iter().filter(|&&same| same).count();
    let negatives = issame.len() - positives;
    if positives == 0 || negatives == 0 || scores.iter().any(|s| s.is_nan()) {
        return fars.iter().map(|&far| (far, f64::NAN)).collect();
    }

    let points = drop_collinear(roc_counts(scores, issame));
    let rates: Vec<(f64, f64)> = std::iter::once((0, 0))
        .chain(points)
        .map(|(fp, tp)| (fp as f64 / negatives as f64, tp as f64 / positives as f64))
        .collect();
    fars.iter().map(|&far| (far, nearest_tpr(&rates, far))).collect()
}

/// Returns the cumulative `(false positives, true positives)` accepted at each distinct score,
/// from the highest score down.
fn roc_counts(scores: &[f32], issame: &[bool]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    let mut points = Vec::new();
    let (mut fp, mut tp) = (0, 0);
    for (rank, &idx) in order.iter().enumerate() {
        if issame[idx] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order.get(rank + 1).is_none_or(|&next| scores[next] != scores[idx]);
        if last_of_tie {
            points.push((fp, tp));
        }
    }
    points
}

/// Removes every point that is the midpoint of its two neighbours, keeping both ends, as
/// scikit-learn does with zero second differences.
fn drop_collinear(points: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    if points.len() <= 2 {
        return points;
    }
    let is_midpoint = |k: usize| {
        let (prev, here, next) = (points[k - 1], points[k], points[k + 1]);
        prev.0 + next.0 == 2 * here.0 && prev.1 + next.1 == 2 * here.1
    };
    let last = points.len() - 1;
    (0..points.len())
        .filter(|&k| k == 0 || k == last || !is_midpoint(k))
        .map(|k| points[k])
        .collect()
}

/// Returns the TPR of the last point (in ascending FPR order) among those nearest `far`.
fn nearest_tpr(rates: &[(f64, f64)], far: f64) -> f64 {
    let mut best = (f64::INFINITY, f64::NAN);
    for &(fpr, tpr) in rates {
        let gap = (fpr - far).abs();
        if gap <= best.0 {
            best = (gap, tpr);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five positives and five negatives with distinct scores:
    ///
    /// ```text
    /// score  0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.2 0.1 0.0
    /// same    T   T   F   T   T   F   F   T   F   F
    /// ```
    ///
    /// Cumulative (FP, TP) per score: (0,1) (0,2) (1,2) (1,3) (1,4) (2,4) (3,4) (3,5) (4,5) (5,5).
    /// (1,3), (2,4) and (4,5) are midpoints of their neighbours and are dropped. With (0,0)
    /// prepended and divided by 5, the ROC as (FPR, TPR) is
    /// (0,0) (0,.2) (0,.4) (.2,.4) (.2,.8) (.6,.8) (.6,1) (1,1).
    ///
    /// FAR 0 and 1e-3: nearest FPR 0, last such point (0,.4), so TAR 0.4.
    /// FAR 0.2: last point with FPR .2 is (.2,.8), so TAR 0.8.
    /// FAR 0.45: FPR .6 (gap .15) beats .2 (gap .25), last such point (.6,1), so TAR 1.0.
    /// FAR 0.4: FPR .4 was dropped, and .6 wins the tie with .2, so TAR 1.0 (the full ROC
    /// would give 0.8).
    #[test]
    fn known_roc() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0];
        let issame = [true, true, false, true, true, false, false, true, false, false];
        let out = tar_at_far(&scores, &issame, &[0.0, 1e-3, 0.2, 0.45, 0.4]);
        assert_eq!(out, vec![(0.0, 0.4), (1e-3, 0.4), (0.2, 0.8), (0.45, 1.0), (0.4, 1.0)]);
    }

    #[test]
    fn collinear_points_are_dropped() {
        let points = vec![(0, 1), (0, 2), (0, 3), (1, 3), (2, 3), (2, 4)];
        assert_eq!(drop_collinear(points), vec![(0, 1), (0, 3), (2, 3), (2, 4)]);
    }

    #[test]
    fn tied_scores_form_one_point() {
        // Scores 0.5 are a tie of one positive and one negative: one step to (1, 2).
        let scores = [0.9, 0.5, 0.5, 0.1];
        let issame = [true, true, false, false];
        assert_eq!(roc_counts(&scores, &issame), vec![(0, 1), (1, 2), (2, 2)]);
    }

    #[test]
    fn equal_gap_prefers_higher_fpr() {
        // FPR points 0, 0.5, 1 with TPR 0.5, 1, 1; FAR 0.25 is equally far from 0 and 0.5.
        let scores = [0.9, 0.8, 0.7, 0.6];
        let issame = [true, false, true, false];
        let out = tar_at_far(&scores, &issame, &[0.25]);
        assert_eq!(out, vec![(0.25, 1.0)]);
    }

    #[test]
    fn single_class_gives_nan() {
        let out = tar_at_far(&[0.1, 0.2], &[true, true], &[1e-3]);
        assert_eq!(out[0].0, 1e-3);
        assert!(out[0].1.is_nan());
    }

    #[test]
    fn nan_score_gives_nan() {
        let out = tar_at_far(&[0.1, f32::NAN], &[true, false], &[1e-3]);
        assert!(out[0].1.is_nan());
    }

    #[test]
    #[should_panic(expected = "got 2 scores but 1 issame labels")]
    fn rejects_length_mismatch() {
        tar_at_far(&[0.1, 0.2], &[true], &[1e-3]);
    }
}
