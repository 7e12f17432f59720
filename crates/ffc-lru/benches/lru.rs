//! Criterion benchmarks of `SlotLru` lookups on full maps of 1e3, 1e5 and 1e7 slots.
//!
//! Run with `cargo bench -p ffc-lru`. Every iteration runs `BATCH` operations and the groups
//! declare `Throughput::Elements(BATCH)`, so the time per operation is criterion's time divided
//! by `BATCH`, or 1e9 / the reported elements per second in nanoseconds. Labels come from an
//! inline SplitMix64 generator, whose cost (an estimated 1-2 ns) is part of every measurement.
//!
//! Each benchmark starts from a full map built by `SlotLru::from_state`, holding labels
//! `0..capacity` in slots equal to the labels, and keeps mutating that map across iterations,
//! so the numbers describe the steady state rather than the first pass.

use std::hint::black_box;
use std::time::Duration;

use criterion::criterion_main;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ffc_lru::{LruState, SlotLru};

/// Slot counts measured.
const CAPACITIES: [usize; 3] = [1_000, 100_000, 10_000_000];

/// Operations per timed iteration.
const BATCH: usize = 4096;

/// SplitMix64 generator, small enough to keep the label source out of the measurement.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a value in `0..bound`, by Lemire's multiply-shift reduction.
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Builds a full LRU holding labels `0..capacity` in the slots of the same number, with the
/// highest label the most recent.
fn full_lru(capacity: usize) -> SlotLru {
    let entries = (0..capacity).rev().map(|slot| (slot as u64, slot)).collect();
    let state = LruState { capacity, next_free: capacity, entries };
    SlotLru::from_state(&state).expect("a state of distinct labels and slots is valid")
}

/// Sets the per-capacity options: fewer samples for the largest map keep the run short.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, capacity: usize) {
    group.throughput(Throughput::Elements(BATCH as u64));
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(if capacity >= 10_000_000 { 10 } else { 20 });
}

/// `get` of labels that are all in the map.
fn get_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_hit");
    for capacity in CAPACITIES {
        configure(&mut group, capacity);
        let mut lru = full_lru(capacity);
        let mut rng = SplitMix64(1);
        group.bench_function(BenchmarkId::from_parameter(capacity), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(lru.get(rng.below(capacity as u64)));
                }
            })
        });
    }
    group.finish();
}

/// `get` of labels never seen before, so every lookup evicts the least recent label.
fn get_miss_evict(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_miss_evict");
    for capacity in CAPACITIES {
        configure(&mut group, capacity);
        let mut lru = full_lru(capacity);
        let mut next_label = capacity as u64;
        group.bench_function(BenchmarkId::from_parameter(capacity), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(lru.get(next_label));
                    next_label += 1;
                }
            })
        });
    }
    group.finish();
}

/// `peek` of labels that are all in the map.
fn peek(c: &mut Criterion) {
    let mut group = c.benchmark_group("peek");
    for capacity in CAPACITIES {
        configure(&mut group, capacity);
        let lru = full_lru(capacity);
        let mut rng = SplitMix64(2);
        group.bench_function(BenchmarkId::from_parameter(capacity), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(lru.peek(rng.below(capacity as u64)));
                }
            })
        });
    }
    group.finish();
}

/// `BATCH` journaled `try_get`s uniform over twice the capacity, then one rollback of all.
fn try_get_rollback(c: &mut Criterion) {
    let mut group = c.benchmark_group("try_get_rollback");
    for capacity in CAPACITIES {
        configure(&mut group, capacity);
        let mut lru = full_lru(capacity);
        let mut rng = SplitMix64(3);
        group.bench_function(BenchmarkId::from_parameter(capacity), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(lru.try_get(rng.below(2 * capacity as u64)));
                }
                black_box(lru.rollback(BATCH))
            })
        });
    }
    group.finish();
}

/// `get` uniform over twice the capacity: about half hits and half evictions.
fn get_uniform_2x(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_uniform_2x");
    for capacity in CAPACITIES {
        configure(&mut group, capacity);
        let mut lru = full_lru(capacity);
        let mut rng = SplitMix64(4);
        group.bench_function(BenchmarkId::from_parameter(capacity), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(lru.get(rng.below(2 * capacity as u64)));
                }
            })
        });
    }
    group.finish();
}

/// Runs every benchmark of this file. It is written out by hand because `criterion_group!`
/// generates an undocumented public function, which the workspace lints reject.
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    get_hit(&mut criterion);
    get_miss_evict(&mut criterion);
    peek(&mut criterion);
    try_get_rollback(&mut criterion);
    get_uniform_2x(&mut criterion);
}

criterion_main!(benches);
