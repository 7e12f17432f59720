//! The Dynamic Class Pool of FFC: a fixed number of slots holding gallery-net features of the
//! identities seen most recently, so that the classifier costs the same for ten thousand
//! identities as for ten million.
//!
//! A [`ClassPool`] owns three pieces of state that always change together:
//!
//! - the queue, a non-trainable `[2, queue_size, feat_dim]` tensor on any burn backend: two
//!   feature rows per slot, holding the slot's two most recent gallery features;
//! - the position bit of every slot, naming the row that the slot's next hit writes;
//! - a [`SlotLru`] mapping identity labels to slots.
//!
//! One *pass* inserts a batch of gallery labels and features in order ([`ClassPool::insert`]).
//! A label that is not pooled gets a slot from the LRU (possibly evicting the least recent
//! identity), writes row 0 and sets its position to 1. A pooled label writes the row its position
//! names, joins the pass's hit set and flips its position. Duplicates within one batch are applied
//! in order on the host, so the last write to a queue cell wins on every backend. A journaled pass
//! ([`ClassPool::insert_journaled`]) returns a [`PassJournal`] that [`ClassPool::rollback`] uses
//! to restore the queue cells, the positions and the LRU exactly.
//!
//! ```
//! # type B = burn::backend::Flex;
//! use std::num::NonZeroUsize;
//! use burn::tensor::Tensor;
//! use ffc_pool::{ClassPool, PoolConfig};
//!
//! let device = Default::default();
//! let config = PoolConfig::new(NonZeroUsize::new(4).unwrap(), 3);
//! let mut pool = ClassPool::<B>::new(&config, &device);
//!
//! let features = Tensor::<B, 2>::from_floats([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], &device);
//! let insertion = pool.insert(&[7, 7], features);
//! assert_eq!(insertion.cols, vec![0, 0]); // label 7 took slot 0 ...
//! assert_eq!(insertion.rows, vec![0, 1]); // ... first writing row 0, then row 1
//! assert_eq!(insertion.hit_slots, vec![0]);
//! assert_eq!(pool.probe_slots(&[7, 9]), vec![0, -1]);
//! ```

mod queue;
mod state;

use std::collections::HashMap;
use std::num::NonZeroUsize;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use ffc_lru::SlotLru;

pub use queue::{read_cells, write_cells};
pub use state::{PoolState, PoolStateError};

/// Settings of a [`ClassPool`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolConfig {
    /// Number of slots Q, the most identities pooled at once.
    pub queue_size: NonZeroUsize,
    /// Feature dimension D of the gallery features.
    pub feat_dim: usize,
}

impl PoolConfig {
    /// Creates a config for `queue_size` slots of `feat_dim`-dimensional features.
    pub fn new(queue_size: NonZeroUsize, feat_dim: usize) -> Self {
        Self { queue_size, feat_dim }
    }
}

/// Queue cells written by one pass, in the order the labels came, and the slots it hit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PassInsertion {
    /// Queue row (0 or 1) written for each gallery feature.
    pub rows: Vec<u8>,
    /// Slot written for each gallery feature.
    pub cols: Vec<usize>,
    /// Sorted slots whose label was already pooled when its feature came, including labels
    /// inserted earlier in the same pass.
    pub hit_slots: Vec<usize>,
}

/// Undo record of a journaled pass, which [`ClassPool::rollback`] uses to restore the pool.
#[derive(Debug, Clone)]
pub struct PassJournal<B: Backend> {
    lru_steps: usize,
    /// `(slot, position before the change)` in the order the changes happened.
    positions: Vec<(usize, u8)>,
    /// Distinct queue cells written, as `[row, slot]`.
    cells: Vec<[usize; 2]>,
    /// The cells' values before the pass, `[cells.len(), feat_dim]`; `None` when nothing was written.
    old_values: Option<Tensor<B, 2>>,
}

/// The Dynamic Class Pool: queue, position bits and LRU (see the crate docs).
#[derive(Debug)]
pub struct ClassPool<B: Backend> {
    /// `[2, queue_size, feat_dim]`; row 0 is read by every slot, row 1 only by slots hit in the
    /// current pass.
    queue: Tensor<B, 3>,
    /// Row (0 or 1) that the next hit on each slot writes.
    positions: Vec<u8>,
    lru: SlotLru,
    feat_dim: usize,
}

impl<B: Backend> ClassPool<B> {
    /// Creates an empty pool whose two queue rows hold random unit vectors (uniform in [0, 1)
    /// per element, then L2-normalised), as the FFC reference code does. Until every slot
    /// has been taken, these vectors act as negatives in the losses.
    ///
    /// Draws from the backend's RNG, so seed it with `B::seed` for a reproducible pool.
    ///
    /// # Panics
    /// If `feat_dim` is 0.
    pub fn new(config: &PoolConfig, device: &B::Device) -> Self {
        assert!(config.feat_dim > 0, "pool feature dimension must be positive, got 0");
        let q = config.queue_size.get();
        let d = config.feat_dim;

        let queue = Tensor::<B, 3>::random([2, q, d], Distribution::Default, device);
        let norm = queue.clone().powf_scalar(2.0).sum_dim(2).sqrt().clamp_min(1e-12);
        Self {
            queue: queue / norm,
            positions: vec![0; q],
            lru: SlotLru::new(config.queue_size),
            feat_dim: d,
        }
    }

    /// Number of slots Q.
    pub fn queue_size(&self) -> usize {
        self.positions.len()
    }

    /// Feature dimension D.
    pub fn feat_dim(&self) -> usize {
        self.feat_dim
    }

    /// Returns the label -> slot map.
    pub fn lru(&self) -> &SlotLru {
        &self.lru
    }

    /// Position bit of every slot: the row its next hit writes.
    pub fn positions(&self) -> &[u8] {
        &self.positions
    }

    /// Returns the queue, `[2, queue_size, feat_dim]`.
    ///
    /// The returned handle shares storage with the pool: drop it before the next insertion, or
    /// the write has to copy the whole queue.
    pub fn queue(&self) -> Tensor<B, 3> {
        self.queue.clone()
    }

    /// Returns the device of the queue.
    pub fn device(&self) -> B::Device {
        self.queue.device()
    }

    /// Inserts one pass of gallery features for good (plain LRU `get`s).
    ///
    /// # Shapes
    /// - `labels`: `[n]`
    /// - `features`: `[n, feat_dim]`, unit-norm rows
    ///
    /// # Panics
    /// If the number of labels and of feature rows differ, or the feature width is not
    /// `feat_dim`.
    pub fn insert(&mut self, labels: &[u64], features: Tensor<B, 2>) -> PassInsertion {
        let (insertion, cells) = self.assign_cells(labels, &features, None);
        self.write(cells, features);
        insertion
    }

    /// Inserts one pass like [`insert`](Self::insert), but journaled, so that
    /// [`rollback`](Self::rollback) can restore the pool exactly as it was.
    ///
    /// # Shapes
    /// As for [`insert`](Self::insert).
    ///
    /// # Panics
    /// As for [`insert`](Self::insert), and if an earlier journaled pass is still pending.
    pub fn insert_journaled(
        &mut self,
        labels: &[u64],
        features: Tensor<B, 2>,
    ) -> (PassInsertion, PassJournal<B>) {
        assert_eq!(
            self.lru.journal_len(),
            0,
            "a journaled pass is still pending: roll it back before starting another"
        );
        let mut positions = Vec::new();
        let (insertion, cells) = self.assign_cells(labels, &features, Some(&mut positions));

        let targets: Vec<[usize; 2]> = cells.iter().map(|&(cell, _)| cell).collect();
        let old_values =
            if targets.is_empty() { None } else { Some(read_cells(&self.queue, &targets)) };
        self.write(cells, features);

        let journal = PassJournal {
            lru_steps: self.lru.journal_len(),
            positions,
            cells: targets,
            old_values,
        };
        (insertion, journal)
    }

    /// Undoes a journaled pass: the queue cells it wrote, the positions it flipped and its LRU
    /// operations, newest first.
    pub fn rollback(&mut self, journal: PassJournal<B>) {
        if let Some(old_values) = journal.old_values {
            let device = old_values.device();
            let queue = std::mem::replace(&mut self.queue, Tensor::empty([0, 0, 0], &device));
            self.queue = write_cells(queue, &journal.cells, old_values);
        }
        for &(slot, old) in journal.positions.iter().rev() {
            self.positions[slot] = old;
        }
        let undone = self.lru.rollback(journal.lru_steps);
        debug_assert_eq!(undone, journal.lru_steps, "LRU journal shorter than the pass");
    }

    /// Maps probe labels to slots after the insertions of the current pass: the slot, or -1 for
    /// a label that is not pooled (an "outlier"). Recency is not changed.
    pub fn probe_slots(&self, labels: &[u64]) -> Vec<i64> {
        labels.iter().map(|&label| self.lru.peek(label).map_or(-1, |slot| slot as i64)).collect()
    }

    /// Returns row 0 of the queue, `[queue_size, feat_dim]`, the class centres of the first
    /// logit matrix C1.
    ///
    /// The handle shares storage with the pool (see [`queue`](Self::queue)).
    pub fn row0(&self) -> Tensor<B, 2> {
        let [_, q, d] = self.queue.dims();
        self.queue.clone().slice([0..1, 0..q, 0..d]).reshape([q, d])
    }

    /// Returns the rows of the given slots from queue row `row`, `[slots.len(), feat_dim]`.
    pub fn rows_of(&self, row: usize, slots: &[usize]) -> Tensor<B, 2> {
        let cells: Vec<[usize; 2]> = slots.iter().map(|&slot| [row, slot]).collect();
        read_cells(&self.queue, &cells)
    }

    /// Decides the queue cell of every gallery feature, updating the LRU and the positions.
    /// Returns the insertion report and, for every distinct cell, the index of the last
    /// feature written there (the write that wins).
    fn assign_cells(
        &mut self,
        labels: &[u64],
        features: &Tensor<B, 2>,
        mut journal: Option<&mut Vec<(usize, u8)>>,
    ) -> (PassInsertion, Vec<([usize; 2], usize)>) {
        self.check_batch(labels, features);
        let mut insertion = PassInsertion::default();
        let mut last_write: HashMap<[usize; 2], usize> = HashMap::with_capacity(labels.len());
        let mut order: Vec<[usize; 2]> = Vec::with_capacity(labels.len());

        for (index, &label) in labels.iter().enumerate() {
            let pooled = self.lru.contains(label);
            let slot =
                if journal.is_some() { self.lru.try_get(label) } else { self.lru.get(label) }
                    .slot();
            let row = if pooled { self.positions[slot] } else { 0 };
            let next = if pooled { 1 - row } else { 1 };
            if let Some(changes) = journal.as_deref_mut() {
                changes.push((slot, self.positions[slot]));
            }
            self.positions[slot] = next;
            if pooled {
                insertion.hit_slots.push(slot);
            }
            insertion.rows.push(row);
            insertion.cols.push(slot);
            if last_write.insert([row as usize, slot], index).is_none() {
                order.push([row as usize, slot]);
            }
        }

        insertion.hit_slots.sort_unstable();
        insertion.hit_slots.dedup();
        let cells = order.into_iter().map(|cell| (cell, last_write[&cell])).collect();
        (insertion, cells)
    }

    fn check_batch(&self, labels: &[u64], features: &Tensor<B, 2>) {
        let [rows, dim] = features.dims();
        assert_eq!(
            labels.len(),
            rows,
            "gallery batch has {} labels but {rows} feature rows; pass one label per feature",
            labels.len()
        );
        assert_eq!(
            dim, self.feat_dim,
            "gallery features have dimension {dim}, but the pool holds {}-dimensional features",
            self.feat_dim
        );
    }

    /// Writes the winning feature of every distinct cell into the queue.
    fn write(&mut self, cells: Vec<([usize; 2], usize)>, features: Tensor<B, 2>) {
        if cells.is_empty() {
            return;
        }
        let device = features.device();
        let (targets, sources): (Vec<[usize; 2]>, Vec<usize>) = cells.into_iter().unzip();
        let sources: Vec<i64> = sources.into_iter().map(|index| index as i64).collect();
        let count = sources.len();
        let sources = Tensor::<B, 1, Int>::from_data(TensorData::new(sources, [count]), &device);
        let values = features.select(0, sources);

        let queue = std::mem::replace(&mut self.queue, Tensor::empty([0, 0, 0], &device));
        self.queue = write_cells(queue, &targets, values);
    }
}

#[cfg(test)]
mod tests;
