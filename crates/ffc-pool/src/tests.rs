use std::num::NonZeroUsize;

use burn::tensor::{Tensor, TensorData};

use super::*;

type B = burn::backend::Flex;

fn pool(queue_size: usize, feat_dim: usize) -> ClassPool<B> {
    let config = PoolConfig::new(NonZeroUsize::new(queue_size).unwrap(), feat_dim);
    ClassPool::new(&config, &Default::default())
}

/// Feature rows whose first component identifies them: row `i` is `[i + 1, 0, ...]`.
fn tagged_features(count: usize, feat_dim: usize) -> Tensor<B, 2> {
    let mut values = vec![0.0f32; count * feat_dim];
    for i in 0..count {
        values[i * feat_dim] = (i + 1) as f32;
    }
    Tensor::from_data(TensorData::new(values, [count, feat_dim]), &Default::default())
}

fn cell(pool: &ClassPool<B>, row: usize, slot: usize) -> Vec<f32> {
    pool.rows_of(row, &[slot]).into_data().into_vec::<f32>().unwrap()
}

#[test]
fn new_pool_rows_are_unit_norm() {
    let state = pool(5, 4).export_state();
    for row in state.queue.chunks(4) {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row norm {norm}");
    }
    assert_eq!(state.positions, vec![0; 5]);
    assert!(state.lru.entries.is_empty());
}

#[test]
fn new_label_writes_row0_and_sets_position() {
    let mut pool = pool(4, 3);
    let insertion = pool.insert(&[10, 11], tagged_features(2, 3));
    assert_eq!(insertion.cols, vec![0, 1]);
    assert_eq!(insertion.rows, vec![0, 0]);
    assert!(insertion.hit_slots.is_empty());
    assert_eq!(pool.positions(), &[1, 1, 0, 0]);
    assert_eq!(cell(&pool, 0, 1), vec![2.0, 0.0, 0.0]);
}

#[test]
fn hits_alternate_rows_and_last_write_wins() {
    let mut pool = pool(4, 2);
    let insertion = pool.insert(&[5, 5, 5], tagged_features(3, 2));
    assert_eq!(insertion.rows, vec![0, 1, 0]);
    assert_eq!(insertion.cols, vec![0, 0, 0]);
    assert_eq!(insertion.hit_slots, vec![0]);
    assert_eq!(pool.positions()[0], 1);
    // The third feature overwrote the first in row 0.
    assert_eq!(cell(&pool, 0, 0), vec![3.0, 0.0]);
    assert_eq!(cell(&pool, 1, 0), vec![2.0, 0.0]);
}

#[test]
fn probe_slots_mark_outliers() {
    let mut pool = pool(3, 2);
    pool.insert(&[1, 2], tagged_features(2, 2));
    assert_eq!(pool.probe_slots(&[2, 9, 1]), vec![1, -1, 0]);
}

#[test]
fn eviction_inside_a_pass_reuses_slots() {
    let mut pool = pool(2, 2);
    let insertion = pool.insert(&[1, 2, 3, 1], tagged_features(4, 2));
    // 3 evicts 1 (slot 0); 1 comes back and evicts 2 (slot 1).
    assert_eq!(insertion.cols, vec![0, 1, 0, 1]);
    assert_eq!(insertion.rows, vec![0, 0, 0, 0]);
    assert!(insertion.hit_slots.is_empty());
    assert_eq!(pool.probe_slots(&[1, 2, 3]), vec![1, -1, 0]);
    assert_eq!(cell(&pool, 0, 1), vec![4.0, 0.0]);
}

#[test]
fn rollback_restores_everything() {
    let mut pool = pool(3, 2);
    pool.insert(&[1, 2], tagged_features(2, 2));
    let before = pool.export_state();

    let (insertion, journal) = pool.insert_journaled(&[2, 3, 4, 2, 2], tagged_features(5, 2));
    assert_eq!(insertion.hit_slots, vec![1]);
    assert_ne!(pool.export_state(), before);
    pool.rollback(journal);
    assert_eq!(pool.export_state(), before);
}

#[test]
fn rollback_of_empty_pass_changes_nothing() {
    let mut pool = pool(3, 2);
    let before = pool.export_state();
    let (_, journal) = pool.insert_journaled(&[], tagged_features(0, 2));
    pool.rollback(journal);
    assert_eq!(pool.export_state(), before);
}

#[test]
fn state_round_trip() {
    let mut pool = pool(4, 3);
    pool.insert(&[8, 9, 8], tagged_features(3, 3));
    let state = pool.export_state();
    let restored = ClassPool::<B>::from_state(&state, &Default::default()).unwrap();
    assert_eq!(restored.export_state(), state);
}

#[test]
#[should_panic(expected = "gallery batch has 2 labels but 3 feature rows")]
fn label_count_mismatch_panics() {
    pool(4, 2).insert(&[1, 2], tagged_features(3, 2));
}

#[test]
#[should_panic(expected = "gallery features have dimension 3, but the pool holds 2-dimensional")]
fn feature_dim_mismatch_panics() {
    pool(4, 2).insert(&[1, 2], tagged_features(2, 3));
}

#[test]
#[should_panic(expected = "a journaled pass is still pending")]
fn second_journaled_pass_panics() {
    let mut pool = pool(4, 2);
    let _pending = pool.insert_journaled(&[1], tagged_features(1, 2));
    pool.insert_journaled(&[2], tagged_features(1, 2));
}

fn valid_state() -> PoolState {
    pool(3, 2).export_state()
}

#[test]
fn import_rejects_bad_queue_length() {
    let mut state = valid_state();
    state.queue.pop();
    let error = ClassPool::<B>::from_state(&state, &Default::default()).unwrap_err();
    assert!(matches!(error, PoolStateError::QueueLength { actual: 11, expected: 12, .. }));
}

#[test]
fn import_rejects_bad_position() {
    let mut state = valid_state();
    state.positions[2] = 2;
    let error = ClassPool::<B>::from_state(&state, &Default::default()).unwrap_err();
    assert_eq!(error.to_string(), "position of slot 2 is 2; positions are 0 or 1");
}

#[test]
fn import_rejects_slot_out_of_range() {
    let mut state = valid_state();
    state.lru.entries = vec![(7, 5)];
    state.lru.next_free = 1;
    let error = ClassPool::<B>::from_state(&state, &Default::default()).unwrap_err();
    assert!(matches!(error, PoolStateError::Lru(_)), "{error}");
}

#[test]
fn import_rejects_capacity_mismatch() {
    let mut state = valid_state();
    state.lru.capacity = 4;
    let error = ClassPool::<B>::from_state(&state, &Default::default()).unwrap_err();
    assert!(matches!(error, PoolStateError::Capacity { capacity: 4, queue_size: 3 }));
}

#[test]
fn import_rejects_nan() {
    let mut state = valid_state();
    state.queue[3] = f32::NAN;
    let error = ClassPool::<B>::from_state(&state, &Default::default()).unwrap_err();
    assert!(matches!(error, PoolStateError::NonFinite { index: 3, .. }));
}

#[test]
fn write_cells_falls_back_when_queue_is_shared() {
    let mut pool = pool(3, 2);
    let shared = pool.queue();
    let before = shared.clone().into_data().into_vec::<f32>().unwrap();
    pool.insert(&[1], tagged_features(1, 2));
    // The handle taken before the write still sees the old values.
    assert_eq!(shared.into_data().into_vec::<f32>().unwrap(), before);
    assert_eq!(cell(&pool, 0, 0), vec![1.0, 0.0]);
}
