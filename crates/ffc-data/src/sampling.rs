//! The dual loader's sampling plan: which images, in which order, with which random changes.
//!
//! Every random choice comes from a ChaCha8 generator whose 256-bit key is
//! `(seed, stream, a, b)`, so each choice is a pure function of the seed and the position:
//!
//! | stream | a | b | decides |
//! |---|---|---|---|
//! | instance order | epoch | 0 | the shuffle of all images for that epoch |
//! | identity order | epoch | pass | the shuffle of all identities for that pass |
//! | step | epoch | step | the two images of each identity and every image's flip and jitter |
//! | substitute | epoch | step | replacements for unreadable images |
//!
//! A loader created at any position therefore produces bitwise the same batches as one that ran
//! up to it. The shuffles use `rand` 0.9's `SliceRandom::shuffle`, so the exact order depends
//! on that pinned version.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::augment::{Augment, Jitter};
use crate::{FaceSource, LoaderPosition};

/// Generator streams; the values are part of the reproducibility contract.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Stream {
    InstanceOrder = 1,
    IdentityOrder = 2,
    Step = 3,
    Substitute = 4,
}

/// Returns the generator for `(seed, stream, a, b)`.
pub(crate) fn stream_rng(seed: u64, stream: Stream, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key.chunks_exact_mut(8).zip([seed, stream as u64, a, b]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// One image of a batch: the image to decode and the random changes to apply to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slot {
    pub(crate) image: usize,
    pub(crate) jitter: Jitter,
}

/// The images of one training step, before decoding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BatchPlan {
    pub(crate) epoch: usize,
    pub(crate) step: usize,
    /// `B` identity images followed by the first `B / 2` instance images.
    pub(crate) x: Vec<Slot>,
    /// The identities' second images followed by the second `B / 2` instance images.
    pub(crate) y: Vec<Slot>,
}

/// Computes batch plans in order, caching the current epoch's shuffles.
pub(crate) struct Planner {
    source: Arc<dyn FaceSource>,
    batch_size: usize,
    seed: u64,
    augment: Augment,
    next: LoaderPosition,
    instance_order: Option<(usize, Vec<u32>)>,
    identity_order: Option<((usize, usize), Vec<u32>)>,
}

impl Planner {
    /// Creates a planner whose first plan is for `start`. The caller has validated the sizes.
    pub(crate) fn new(
        source: Arc<dyn FaceSource>,
        batch_size: usize,
        seed: u64,
        augment: Augment,
        start: LoaderPosition,
    ) -> Self {
        Self {
            source,
            batch_size,
            seed,
            augment,
            next: start,
            instance_order: None,
            identity_order: None,
        }
    }

    /// Returns the number of steps in an epoch: whole instance batches of `batch_size` images.
    pub(crate) fn steps_per_epoch(&self) -> usize {
        self.source.len() / self.batch_size
    }

    /// Returns the number of identity batches in one pass over the identities.
    fn identity_batches_per_pass(&self) -> usize {
        self.source.num_identities() / self.batch_size
    }

    /// Returns the plan for the next position and advances.
    pub(crate) fn next_plan(&mut self) -> BatchPlan {
        let LoaderPosition { epoch, step } = self.next;
        let plan = self.plan(epoch, step);
        self.next = if step + 1 == self.steps_per_epoch() {
            LoaderPosition { epoch: epoch + 1, step: 0 }
        } else {
            LoaderPosition { epoch, step: step + 1 }
        };
        plan
    }

    /// Builds the plan for `(epoch, step)`.
    fn plan(&mut self, epoch: usize, step: usize) -> BatchPlan {
        let half = self.batch_size / 2;
        let instances = self.instance_batch(epoch, step);
        let identities = self.identity_batch(epoch, step);
        let mut rng = stream_rng(self.seed, Stream::Step, epoch as u64, step as u64);

        let mut x = Vec::with_capacity(self.batch_size + half);
        let mut y = Vec::with_capacity(self.batch_size + half);
        for &identity in &identities {
            let (first, second) = pick_two(&mut rng, self.source.identity_images(identity));
            x.push(first);
            y.push(second);
        }
        x.extend_from_slice(&instances[..half]);
        y.extend_from_slice(&instances[half..]);

        let augment = self.augment;
        let mut slot = |image: usize| Slot { image, jitter: augment.draw(&mut rng) };
        let x = x.into_iter().map(&mut slot).collect();
        let y = y.into_iter().map(&mut slot).collect();
        BatchPlan { epoch, step, x, y }
    }

    /// Returns the `batch_size` images of the instance loader at `(epoch, step)`.
    fn instance_batch(&mut self, epoch: usize, step: usize) -> Vec<usize> {
        if self.instance_order.as_ref().is_none_or(|(cached, _)| *cached != epoch) {
            let order = shuffled(self.source.len(), self.seed, Stream::InstanceOrder, epoch, 0);
            self.instance_order = Some((epoch, order));
        }
        let (_, order) = self.instance_order.as_ref().expect("set above");
        let start = step * self.batch_size;
        order[start..start + self.batch_size].iter().map(|&i| i as usize).collect()
    }

    /// Returns the `batch_size` identities of the identity loader at `(epoch, step)`.
    ///
    /// The identity loader restarts at every epoch and starts a new pass, with a new shuffle,
    /// whenever a pass runs out of whole batches.
    fn identity_batch(&mut self, epoch: usize, step: usize) -> Vec<usize> {
        let per_pass = self.identity_batches_per_pass();
        let pass = step / per_pass;
        let offset = step % per_pass;
        if self.identity_order.as_ref().is_none_or(|(cached, _)| *cached != (epoch, pass)) {
            let count = self.source.num_identities();
            let order = shuffled(count, self.seed, Stream::IdentityOrder, epoch, pass);
            self.identity_order = Some(((epoch, pass), order));
        }
        let (_, order) = self.identity_order.as_ref().expect("set above");
        let start = offset * self.batch_size;
        order[start..start + self.batch_size].iter().map(|&i| i as usize).collect()
    }
}

/// Returns `0..count` shuffled by the generator of `(seed, stream, a, b)`.
fn shuffled(count: usize, seed: u64, stream: Stream, a: usize, b: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..count as u32).collect();
    order.shuffle(&mut stream_rng(seed, stream, a as u64, b as u64));
    order
}

/// Picks two distinct images of `images`, or its only image twice.
fn pick_two(rng: &mut ChaCha8Rng, images: std::ops::Range<usize>) -> (usize, usize) {
    let count = images.len();
    if count < 2 {
        return (images.start, images.start);
    }
    let first = rng.random_range(0..count);
    let mut second = rng.random_range(0..count - 1);
    if second >= first {
        second += 1;
    }
    (images.start + first, images.start + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_every_key_part() {
        let base = stream_rng(1, Stream::Step, 2, 3).random::<u64>();
        assert_ne!(base, stream_rng(0, Stream::Step, 2, 3).random::<u64>());
        assert_ne!(base, stream_rng(1, Stream::Substitute, 2, 3).random::<u64>());
        assert_ne!(base, stream_rng(1, Stream::Step, 3, 3).random::<u64>());
        assert_ne!(base, stream_rng(1, Stream::Step, 2, 4).random::<u64>());
        assert_eq!(base, stream_rng(1, Stream::Step, 2, 3).random::<u64>());
    }

    #[test]
    fn pick_two_is_distinct_and_in_range() {
        let mut rng = stream_rng(0, Stream::Step, 0, 0);
        for _ in 0..1000 {
            let (a, b) = pick_two(&mut rng, 10..13);
            assert_ne!(a, b);
            assert!((10..13).contains(&a));
            assert!((10..13).contains(&b));
        }
        assert_eq!(pick_two(&mut rng, 7..8), (7, 7));
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut order = shuffled(100, 5, Stream::InstanceOrder, 0, 0);
        assert_ne!(order, (0..100).collect::<Vec<_>>());
        order.sort_unstable();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
    }
}
