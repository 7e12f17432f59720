//! Time of the pool update of one pass: LRU lookups, position flips and the queue writes of 768
//! gallery features (the reference's 8 x 96 per step), without the logits.
//!
//! The pool is full before timing starts, filled by state import rather than by warm-up passes.
//! Labels are drawn uniformly from twice the queue size, so about half are hits and half evict.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use burn::tensor::{Distribution, Tensor};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ffc_lru::LruState;
use ffc_pool::{ClassPool, PoolState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type B = burn::backend::Flex;

const FEAT_DIM: usize = 512;
const GALLERY: usize = 768;

/// Builds a full pool: every slot owns a label, and queue values are arbitrary but finite.
fn full_pool(queue_size: usize) -> ClassPool<B> {
    let state = PoolState {
        queue_size,
        feat_dim: FEAT_DIM,
        queue: (0..2 * queue_size * FEAT_DIM).map(|i| (i % 97) as f32 * 1e-3).collect(),
        positions: (0..queue_size).map(|slot| (slot % 2) as u8).collect(),
        lru: LruState {
            capacity: queue_size,
            next_free: queue_size,
            entries: (0..queue_size).map(|slot| (slot as u64 * 2, slot)).collect(),
        },
    };
    ClassPool::from_state(&state, &Default::default()).expect("the bench state is valid")
}

fn bench_pass(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("pool_pass");
    group.sample_size(20);
    group.throughput(Throughput::Elements(GALLERY as u64));

    for queue_size in [10_000usize, 100_000, 1_000_000] {
        let mut pool = full_pool(queue_size);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let features = Tensor::<B, 2>::random([GALLERY, FEAT_DIM], Distribution::Default, &device);
        let mut labels = move || -> Vec<u64> {
            (0..GALLERY).map(|_| rng.random_range(0..2 * queue_size as u64)).collect()
        };

        group.bench_function(BenchmarkId::new("insert", queue_size), |b| {
            b.iter_batched(
                &mut labels,
                |labels| black_box(pool.insert(&labels, features.clone())),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("insert_journaled_and_rollback", queue_size), |b| {
            b.iter_batched(
                &mut labels,
                |labels| {
                    let (insertion, journal) = pool.insert_journaled(&labels, features.clone());
                    pool.rollback(journal);
                    black_box(insertion)
                },
                BatchSize::SmallInput,
            )
        });
        assert_eq!(pool.lru().len(), queue_size, "the pool stays full");
    }
    group.finish();
}

criterion_group!(benches, bench_pass);
criterion_main!(benches);
