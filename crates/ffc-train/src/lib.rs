//! The ffc trainer: FFC (Faster Face Classification, CVPR 2022) end to end on burn.
//!
//! A probe network is trained against a Dynamic Class Pool of gallery-network features instead
//! of an N-way classifier, so memory and step time do not grow with the number of identities.
//! The `ffc` binary wraps this crate: `ffc train`, `ffc eval`, `ffc pack` and `ffc inspect`.
//!
//! - [`config`]: the TOML experiment config;
//! - [`nets`]: probe, gallery, pool, optimizer and one training step;
//! - [`trainer`]: the run loop with logs, evaluation and checkpoints;
//! - [`checkpoint`]: atomic checkpoints and exact resume;
//! - [`evaluate`]: verification on held-out folders and `.bin` packs;
//! - [`device`]: the `--device` flag;
//! - [`memory`]: allocator settings of the binaries.

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod evaluate;
pub mod memory;
pub mod metrics;
pub mod nets;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{RunOptions, RunSummary, train};
