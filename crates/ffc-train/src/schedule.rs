//! The learning rate as a pure function of the global step, so that a resumed run needs no
//! scheduler state.

use crate::config::{LrScheduler, TrainConfig};

/// Returns the learning rate of global step `step` (0-based).
///
/// A linear warm-up runs from `lr / warmup_steps` up to `lr` over `warmup_epoch` epochs; after it
/// the configured schedule applies. Multistep works on whole epochs, like the FFC reference;
/// cosine and linear decay per step over the steps after the warm-up.
pub fn learning_rate(config: &TrainConfig, step: usize, steps_per_epoch: usize) -> f64 {
    let total = config.num_epoch * steps_per_epoch;
    let warmup = config.warmup_epoch * steps_per_epoch;
    if step < warmup {
        return config.lr * (step + 1) as f64 / warmup as f64;
    }

    let progress = if total > warmup {
        ((step - warmup) as f64 / (total - warmup) as f64).min(1.0)
    } else {
        1.0
    };
    match config.lr_scheduler {
        LrScheduler::Constant => config.lr,
        LrScheduler::Linear => config.lr * (1.0 - progress),
        LrScheduler::Cosine => config.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        LrScheduler::Multistep => {
            let epoch = step / steps_per_epoch.max(1);
            let passed = config.milestones.iter().filter(|&&milestone| epoch >= milestone).count();
            config.lr * config.lr_gamma.powi(passed as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &[&str]) -> TrainConfig {
        let text = "rec = \"d\"\nnetwork = \"r18\"\nqueue_size = 10\nbatch_size = 2\nlr = 0.1\n\
                    num_epoch = 19\nmilestones = [8, 14, 17]";
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        TrainConfig::parse(text, Path::new("t.toml"), &extra).unwrap()
    }

    #[test]
    fn multistep_matches_reference_epochs() {
        let config = config(&[]);
        let lr = |epoch: usize| learning_rate(&config, epoch * 10, 10);
        assert_eq!(lr(0), 0.1);
        assert_eq!(lr(7), 0.1);
        assert!((lr(8) - 0.01).abs() < 1e-12);
        assert!((lr(14) - 0.001).abs() < 1e-12);
        assert!((lr(18) - 0.0001).abs() < 1e-12);
    }

    #[test]
    fn warmup_rises_linearly_to_base() {
        let config = config(&["warmup_epoch=1"]);
        assert!((learning_rate(&config, 0, 10) - 0.01).abs() < 1e-12);
        assert!((learning_rate(&config, 9, 10) - 0.1).abs() < 1e-12);
        assert_eq!(learning_rate(&config, 10, 10), 0.1);
    }

    #[test]
    fn cosine_ends_at_zero() {
        let config = config(&["lr_scheduler=\"cosine\""]);
        assert_eq!(learning_rate(&config, 0, 10), 0.1);
        // 19 epochs of 10 steps: halfway at step 95, nearly 0 at the last step.
        assert!((learning_rate(&config, 95, 10) - 0.05).abs() < 1e-12);
        assert!(learning_rate(&config, 189, 10) < 1e-4);
        assert!(learning_rate(&config, 150, 10) < learning_rate(&config, 149, 10));
    }
}
