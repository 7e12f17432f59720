//! Compares the pool against a naive host model on random sequences of kept and rolled-back
//! passes, including duplicates within a pass and pools smaller than a pass.

use std::num::NonZeroUsize;

use burn::tensor::{Tensor, TensorData};
use ffc_pool::{ClassPool, PoolConfig};
use proptest::prelude::*;

type B = burn::backend::Flex;

const DIM: usize = 2;

/// The pool as plain vectors: `lru` holds (label, slot) most recent first.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    queue: Vec<[f32; DIM]>,
    positions: Vec<u8>,
    lru: Vec<(u64, usize)>,
    next_free: usize,
}

impl Model {
    fn get(&mut self, label: u64) -> (bool, usize) {
        if let Some(at) = self.lru.iter().position(|&(l, _)| l == label) {
            let entry = self.lru.remove(at);
            self.lru.insert(0, entry);
            return (true, entry.1);
        }
        let slot = if self.next_free < self.positions.len() {
            self.next_free += 1;
            self.next_free - 1
        } else {
            self.lru.pop().expect("a full pool has a least recent label").1
        };
        self.lru.insert(0, (label, slot));
        (false, slot)
    }

    fn insert(
        &mut self,
        labels: &[u64],
        features: &[[f32; DIM]],
    ) -> (Vec<u8>, Vec<usize>, Vec<usize>) {
        let q = self.positions.len();
        let (mut rows, mut cols, mut hits) = (vec![], vec![], vec![]);
        for (&label, feature) in labels.iter().zip(features) {
            let (pooled, slot) = self.get(label);
            let row = if pooled { self.positions[slot] } else { 0 };
            self.positions[slot] = if pooled { 1 - row } else { 1 };
            if pooled {
                hits.push(slot);
            }
            self.queue[row as usize * q + slot] = *feature;
            rows.push(row);
            cols.push(slot);
        }
        hits.sort_unstable();
        hits.dedup();
        (rows, cols, hits)
    }
}

fn model_of(pool: &ClassPool<B>) -> Model {
    let state = pool.export_state();
    Model {
        queue: state.queue.chunks(DIM).map(|c| [c[0], c[1]]).collect(),
        positions: state.positions,
        lru: state.lru.entries,
        next_free: state.lru.next_free,
    }
}

fn features(count: usize, tag: f32) -> Vec<[f32; DIM]> {
    (0..count).map(|i| [tag + i as f32, -(tag + i as f32)]).collect()
}

fn tensor(rows: &[[f32; DIM]]) -> Tensor<B, 2> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), DIM]), &Default::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pool_matches_naive_model(
        queue_size in 1usize..6,
        passes in prop::collection::vec(
            (prop::collection::vec(0u64..8, 0..9), any::<bool>()), 1..12),
    ) {
        let config = PoolConfig::new(NonZeroUsize::new(queue_size).unwrap(), DIM);
        let mut pool = ClassPool::<B>::new(&config, &Default::default());
        let mut model = model_of(&pool);

        for (step, (labels, keep)) in passes.iter().enumerate() {
            let rows = features(labels.len(), 100.0 * (step + 1) as f32);
            let before = model.clone();
            let expected = model.insert(labels, &rows);
            if *keep {
                let insertion = pool.insert(labels, tensor(&rows));
                prop_assert_eq!((insertion.rows, insertion.cols, insertion.hit_slots), expected);
                prop_assert_eq!(model_of(&pool), model.clone());
            } else {
                let (insertion, journal) = pool.insert_journaled(labels, tensor(&rows));
                prop_assert_eq!((insertion.rows, insertion.cols, insertion.hit_slots), expected);
                prop_assert_eq!(model_of(&pool), model.clone());
                pool.rollback(journal);
                model = before;
                prop_assert_eq!(model_of(&pool), model.clone());
            }
        }
    }
}
