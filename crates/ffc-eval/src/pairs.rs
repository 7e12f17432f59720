//! Verification pair lists and generation of a balanced list from a labelled image set.
//!
//! A generated list follows the layout of LFW's `pairs.txt`: fold `f` is one contiguous block,
//! its same-identity pairs first and then as many different-identity pairs. Split into
//! contiguous folds (see [`crate::fold_ranges`]), each fold then scores a balanced task.

use std::collections::{BTreeMap, HashSet};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::EvalError;

/// Pairs of feature-row indices with a same-identity flag for each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairList {
    /// Row indices of the two images of each pair.
    pub pairs: Vec<(usize, usize)>,
    /// `issame[k]` is true if and only if pair `k` shows one identity twice.
    pub issame: Vec<bool>,
}

impl PairList {
    /// Returns the number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Returns true if and only if the list contains no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Builds a balanced verification list from per-image identity labels.
///
/// The same-identity pairs are every unordered pair of images within each identity. The
/// different-identity pairs are distinct unordered pairs drawn uniformly with `seed`, as many as
/// the same pairs. With `n` pairs per class, fold `f` is the contiguous block of `2 * n / folds`
/// pairs starting at `f * 2 * n / folds`, with its same pairs first. Pair indices are
/// `(lower, higher)` image indices into `labels`.
///
/// Each class is cut to a multiple of `folds` so that every fold contains exactly as many same as
/// different pairs. The cut drops fewer than `folds` same pairs, chosen with `seed`. A set with
/// fewer distinct different pairs than same pairs (one identity with most of the images) is cut
/// further to the number of different pairs.
///
/// Cost: memory and time grow with the number of same pairs, which is the sum of `m * (m - 1) /
/// 2` over identities with `m` images.
///
/// # Errors
///
/// [`EvalError::InvalidFoldCount`] for `folds < 2`, [`EvalError::TooFewIdentities`] for fewer
/// than 2 distinct labels, [`EvalError::NoRepeatedIdentity`] if no label occurs twice, and
/// [`EvalError::TooFewPairs`] if fewer than `folds` pairs per class remain.
pub fn folder_pairs(labels: &[u64], seed: u64, folds: usize) -> Result<PairList, EvalError> {
    if folds < 2 {
        return Err(EvalError::InvalidFoldCount { folds });
    }
    let identities = group_by_label(labels);
    check_identities(&identities)?;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut same = same_identity_pairs(&identities);
    same.shuffle(&mut rng);

    let n_different = count_pairs(labels.len()) - same.len();
    let per_class = same.len().min(n_different) / folds * folds;
    if per_class < folds {
        return Err(EvalError::TooFewPairs {
            pairs: 2 * same.len().min(n_different),
            required: 2 * folds,
            folds,
        });
    }
    same.truncate(per_class);
    let different = draw_different_pairs(labels, per_class, n_different, &mut rng);

    Ok(interleave_folds(&same, &different, folds))
}

/// Maps each label to its image indices, in ascending label order so that the pair order does
/// not depend on hashing.
fn group_by_label(labels: &[u64]) -> BTreeMap<u64, Vec<usize>> {
    let mut identities: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (idx, &label) in labels.iter().enumerate() {
        identities.entry(label).or_default().push(idx);
    }
    identities
}

fn check_identities(identities: &BTreeMap<u64, Vec<usize>>) -> Result<(), EvalError> {
    if identities.len() < 2 {
        return Err(EvalError::TooFewIdentities { identities: identities.len() });
    }
    if identities.values().all(|images| images.len() < 2) {
        return Err(EvalError::NoRepeatedIdentity { identities: identities.len() });
    }
    Ok(())
}

fn same_identity_pairs(identities: &BTreeMap<u64, Vec<usize>>) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for images in identities.values() {
        for (k, &a) in images.iter().enumerate() {
            pairs.extend(images[k + 1..].iter().map(|&b| (a, b)));
        }
    }
    pairs
}

fn count_pairs(n: usize) -> usize {
    n * n.saturating_sub(1) / 2
}

/// Draws `count` distinct different-identity pairs out of the `available` ones.
///
/// When at least twice as many pairs exist as are needed, we sample image pairs and reject
/// same-label and repeated ones. That branch only runs when different pairs outnumber same
/// pairs, so roughly half of the draws or more have different labels, and at most half of the
/// pairs a draw can hit are already taken. Otherwise there are fewer than twice as many different
/// pairs as the same pairs already held in memory, so we list them all and take a random subset.
fn draw_different_pairs(
    labels: &[u64],
    count: usize,
    available: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, usize)> {
    if available >= 2 * count {
        sample_different_pairs(labels, count, rng)
    } else {
        let mut all = all_different_pairs(labels);
        all.partial_shuffle(rng, count);
        all.truncate(count);
        all
    }
}

fn sample_different_pairs(
    labels: &[u64],
    count: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, usize)> {
    let mut seen = HashSet::with_capacity(count);
    let mut pairs = Vec::with_capacity(count);
    while pairs.len() < count {
        let a = rng.random_range(0..labels.len());
        let b = rng.random_range(0..labels.len());
        let pair = (a.min(b), a.max(b));
        if labels[a] != labels[b] && seen.insert(pair) {
            pairs.push(pair);
        }
    }
    pairs
}

fn all_different_pairs(labels: &[u64]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (a, &label_a) in labels.iter().enumerate() {
        for (b, &label_b) in labels.iter().enumerate().skip(a + 1) {
            if label_a != label_b {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

/// Lays out equal-length, fold-divisible `same` and `different` lists fold by fold.
fn interleave_folds(
    same: &[(usize, usize)],
    different: &[(usize, usize)],
    folds: usize,
) -> PairList {
    let per_fold = same.len() / folds;
    let mut list = PairList::default();
    for (same_block, different_block) in
        same.chunks_exact(per_fold).zip(different.chunks_exact(per_fold))
    {
        list.pairs.extend_from_slice(same_block);
        list.issame.extend(std::iter::repeat_n(true, per_fold));
        list.pairs.extend_from_slice(different_block);
        list.issame.extend(std::iter::repeat_n(false, per_fold));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold_ranges;

    fn grid_labels(identities: u64, images: u64) -> Vec<u64> {
        (0..identities).flat_map(|id| std::iter::repeat_n(id, images as usize)).collect()
    }

    fn count_same(list: &PairList, range: std::ops::Range<usize>) -> usize {
        list.issame[range].iter().filter(|&&same| same).count()
    }

    #[test]
    fn ten_by_ten_set_balances_folds() {
        let labels = grid_labels(10, 10);
        let list = folder_pairs(&labels, 7, 10).unwrap();

        assert_eq!(list.len(), 900);
        assert_eq!(list.issame.iter().filter(|&&s| s).count(), 450);
        let ranges = fold_ranges(list.len(), 10).unwrap();
        for range in ranges {
            assert_eq!(range.len(), 90);
            assert_eq!(count_same(&list, range.start..range.start + 45), 45);
            assert_eq!(count_same(&list, range.start + 45..range.end), 0);
        }
    }

    #[test]
    fn labels_match_issame_flags() {
        let labels = grid_labels(10, 10);
        let list = folder_pairs(&labels, 3, 10).unwrap();
        for (&(a, b), &same) in list.pairs.iter().zip(&list.issame) {
            assert!(a < b, "pair ({a}, {b}) is not ordered");
            assert_eq!(labels[a] == labels[b], same, "pair ({a}, {b})");
        }
    }

    #[test]
    fn keeps_every_same_pair_when_divisible() {
        let labels = grid_labels(10, 10);
        let list = folder_pairs(&labels, 3, 10).unwrap();
        let mut same: Vec<_> =
            list.pairs.iter().zip(&list.issame).filter(|(_, s)| **s).map(|(p, _)| *p).collect();
        same.sort_unstable();
        let mut expected = same_identity_pairs(&group_by_label(&labels));
        expected.sort_unstable();
        assert_eq!(same, expected);
    }

    #[test]
    fn different_pairs_are_distinct() {
        let labels = grid_labels(10, 10);
        let list = folder_pairs(&labels, 11, 10).unwrap();
        let unique: HashSet<_> = list.pairs.iter().collect();
        assert_eq!(unique.len(), list.len());
    }

    #[test]
    fn same_seed_gives_same_list() {
        let labels = grid_labels(8, 6);
        let first = folder_pairs(&labels, 42, 10).unwrap();
        let second = folder_pairs(&labels, 42, 10).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn different_seed_gives_different_list() {
        let labels = grid_labels(8, 6);
        let first = folder_pairs(&labels, 42, 10).unwrap();
        let second = folder_pairs(&labels, 43, 10).unwrap();
        assert_ne!(first.pairs, second.pairs);
    }

    #[test]
    fn cuts_same_pairs_to_a_fold_multiple() {
        // 3 identities x 4 images: 3 * 6 = 18 same pairs, 48 different pairs available.
        // With 4 folds each class is cut to 16, so every fold contains 4 + 4 pairs.
        let labels = grid_labels(3, 4);
        let list = folder_pairs(&labels, 5, 4).unwrap();
        assert_eq!(list.len(), 32);
        for range in fold_ranges(list.len(), 4).unwrap() {
            assert_eq!(count_same(&list, range.clone()), 4, "fold {range:?}");
        }
    }

    #[test]
    fn dominant_identity_is_cut_to_available_different_pairs() {
        // Identity 0 has 10 images and identity 1 has 2: 45 + 1 same pairs but only 20
        // different pairs, so each class gets 20 pairs, 4 per fold with 5 folds.
        let mut labels = vec![0; 10];
        labels.extend([1, 1]);
        let list = folder_pairs(&labels, 9, 5).unwrap();
        assert_eq!(list.len(), 40);
        assert_eq!(list.issame.iter().filter(|&&s| s).count(), 20);
        let unique: HashSet<_> = list.pairs.iter().collect();
        assert_eq!(unique.len(), 40);
    }

    #[test]
    fn rejects_single_identity() {
        let err = folder_pairs(&[4, 4, 4], 0, 2).unwrap_err();
        assert_eq!(err, EvalError::TooFewIdentities { identities: 1 });
    }

    #[test]
    fn rejects_set_without_repeated_identity() {
        let err = folder_pairs(&[1, 2, 3], 0, 2).unwrap_err();
        assert_eq!(err, EvalError::NoRepeatedIdentity { identities: 3 });
    }

    #[test]
    fn rejects_too_few_pairs_for_folds() {
        // 2 identities x 2 images: 2 same pairs, 4 different pairs; 10 folds need 10 per class.
        let err = folder_pairs(&[0, 0, 1, 1], 0, 10).unwrap_err();
        assert_eq!(err, EvalError::TooFewPairs { pairs: 4, required: 20, folds: 10 });
    }

    #[test]
    fn rejects_single_fold() {
        let err = folder_pairs(&[0, 0, 1, 1], 0, 1).unwrap_err();
        assert_eq!(err, EvalError::InvalidFoldCount { folds: 1 });
    }
}
