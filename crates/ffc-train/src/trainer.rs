//! The training run: data, steps, logs, evaluation, checkpoints and the final summary.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::tensor::backend::AutodiffBackend;
use ffc_data::{DualLoader, FaceSource, LoaderConfig, LoaderPosition};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tracing::{info, warn};

use crate::checkpoint::{self, TrainerState};
use crate::config::TrainConfig;
use crate::evaluate::{SetResult, ValidationSet};
use crate::metrics::{MetricRow, Metrics};
use crate::nets::{FfcState, StepStats};
use crate::schedule::learning_rate;

/// How to run, beyond the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Output folder for metrics, plots, checkpoints and `summary.json`.
    pub output: PathBuf,
    /// Continue from this checkpoint (or the newest one in this output folder).
    pub resume: Option<PathBuf>,
}

/// Report of a finished run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Steps completed in total, including those before a resume.
    pub steps: usize,
    /// Loss of every step run in this process, in order.
    pub losses: Vec<f32>,
    /// Final evaluation of every validation set.
    pub results: Vec<SetResult>,
    /// Raw-pixel verification of the held-out folder, when there is one.
    pub baseline: Option<SetResult>,
}

/// Trains FFC with `config`, writing everything into `options.output`.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    options: &RunOptions,
    device: &B::Device,
) -> anyhow::Result<RunSummary> {
    let config = &absolute_paths(config)?;
    check_output(options)?;
    std::fs::create_dir_all(&options.output)
        .with_context(|| format!("cannot create output folder `{}`", options.output.display()))?;
    let source = ffc_data::open_source(&config.rec)
        .with_context(|| format!("cannot open training data `rec = {}`", config.rec.display()))?;
    check_data(config, source.as_ref())?;
    let sets = validation_sets(config)?;

    let mut state = FfcState::<B>::new(config, device);
    let (mut step, position) = match &options.resume {
        Some(path) => resume(path, config, &options.output, &mut state)?,
        None => (0, LoaderPosition::default()),
    };
    let loader_config = LoaderConfig {
        batch_size: config.batch_size,
        seed: config.seed,
        workers: config.num_workers,
        prefetch: 2,
        augment: config.augment(),
        skip_bad_images: config.skip_bad_images,
    };
    let mut loader = DualLoader::new(source, config.preprocess(), loader_config, position)
        .context("cannot start the data loader")?;
    let steps_per_epoch = loader.steps_per_epoch();
    let total = config.max_steps.map_or(config.num_epoch * steps_per_epoch, |max| {
        max.min(config.num_epoch * steps_per_epoch)
    });
    info!(steps_per_epoch, total_steps = total, start_step = step, "training");

    let mut metrics = Metrics::open(&options.output, options.resume.as_ref().map(|_| step))
        .with_context(|| format!("cannot write metrics.csv in `{}`", options.output.display()))?;
    let baseline = baseline(config, &sets)?;
    let progress = progress_bar(step, total);

    let mut losses = Vec::new();
    let mut window = LogWindow::new();
    let mut last_eval = None;
    // A resumed run already has the checkpoint of its first step.
    let mut last_checkpoint = options.resume.as_ref().map(|_| step);
    while step < total {
        let batch = match loader.next_batch() {
            Ok(batch) => batch,
            Err(error) => {
                // The state is consistent between steps, so keep what was trained so far.
                if last_checkpoint != Some(step) && step > 0 {
                    save(config, &state, &options.output, step, loader.position())?;
                }
                let context = format!("data loader failed at step {}", step + 1);
                return Err(anyhow::Error::from(error).context(context));
            }
        };
        let lr = learning_rate(config, step, steps_per_epoch);
        let stats = state.train_step(config, &batch, lr, step + 1)?;
        step += 1;
        losses.push(stats.loss);
        window.add(&stats, batch.images_per_view * 2, batch.skipped_images);
        progress.inc(1);

        if step % config.frequent == 0 || step == total {
            let row = window.log(step, batch.epoch, lr, total);
            metrics.push(row).context("cannot append to metrics.csv")?;
        }
        if config.checkpoint_every > 0 && step % config.checkpoint_every == 0 {
            save(config, &state, &options.output, step, loader.position())?;
            last_checkpoint = Some(step);
        }
        if config.verbose > 0 && step % config.verbose == 0 {
            evaluate(config, &state, &sets, step, batch.epoch, &mut metrics)?;
            last_eval = Some(step);
        }
    }
    progress.finish_and_clear();

    if last_checkpoint != Some(step) {
        save(config, &state, &options.output, step, loader.position())?;
    }
    let epoch = loader.position().epoch;
    let results = if last_eval == Some(step) {
        final_results(&metrics, step, &sets)
    } else {
        evaluate(config, &state, &sets, step, epoch, &mut metrics)?
    };
    if let Err(error) = metrics.plot() {
        warn!("cannot draw the plots: {error}");
    }
    write_summary(&options.output, step, &losses, &results, baseline.as_ref())?;
    Ok(RunSummary { steps: step, losses, results, baseline })
}

fn check_data(config: &TrainConfig, source: &dyn FaceSource) -> anyhow::Result<()> {
    info!(
        images = source.len(),
        identities = source.num_identities(),
        rec = %config.rec.display(),
        "training data"
    );
    let gallery = config.images_per_view();
    if config.queue_size < gallery {
        warn!(
            "queue_size {} is smaller than the {gallery} gallery features written per step \
             (1.5 x batch_size): the pool turns over every step and most probes become outliers; \
             raise queue_size well above {gallery}",
            config.queue_size
        );
    }
    Ok(())
}

fn validation_sets(config: &TrainConfig) -> anyhow::Result<Vec<ValidationSet>> {
    let mut sets = Vec::new();
    if !config.val_folder.as_os_str().is_empty() {
        let set = ValidationSet::from_folder(&config.val_folder, config.val_pairs_seed)
            .with_context(|| {
                format!("cannot open `val_folder = {}`", config.val_folder.display())
            })?;
        info!(pairs = set.pairs(), folder = %config.val_folder.display(), "validation pairs");
        sets.push(set);
    }
    let data_dir = if config.rec.is_dir() { config.rec.clone() } else { PathBuf::from(".") };
    for target in &config.val_targets {
        let path = data_dir.join(format!("{target}.bin"));
        if !path.is_file() {
            warn!("validation pack `{}` not found; skipping target `{target}`", path.display());
            continue;
        }
        let set = ValidationSet::from_pack(&path)
            .and_then(|set| set.check_images(&config.preprocess()).map(|()| set))
            .with_context(|| format!("cannot use validation pack `{}`", path.display()))?;
        sets.push(set);
    }
    Ok(sets)
}

fn resume<B: AutodiffBackend>(
    path: &Path,
    config: &TrainConfig,
    output: &Path,
    state: &mut FfcState<B>,
) -> anyhow::Result<(usize, LoaderPosition)> {
    let dir = checkpoint::latest(path)?;
    let trainer = checkpoint::read_trainer(&dir)?;
    if let Some(key) = changed_setting(&trainer.config, config) {
        bail!(
            "checkpoint `{}` was trained with another `{key}`; resume with its own config \
             (`ffc train --resume DIR` without --config reuses it) or start a new --output",
            dir.display()
        );
    }
    if let Some(&newer) = checkpoint::steps(output).iter().rev().find(|&&s| s > trainer.step) {
        bail!(
            "output folder `{}` already holds a checkpoint of step {newer}, after the resumed \
             step {}; pass a new --output to branch from step {}",
            output.display(),
            trainer.step,
            trainer.step
        );
    }
    checkpoint::restore(&dir, state)
        .with_context(|| format!("cannot restore `{}`", dir.display()))?;
    info!(checkpoint = %dir.display(), step = trainer.step, "resumed");
    Ok((trainer.step, trainer.loader))
}

/// Returns the first setting that must not change on resume and did.
fn changed_setting(saved: &TrainConfig, config: &TrainConfig) -> Option<&'static str> {
    let (a, b) = (saved, config);
    [
        ("network", a.network != b.network),
        ("embedding_size", a.embedding_size != b.embedding_size),
        ("input_size", a.input_size != b.input_size),
        ("widths", a.widths != b.widths),
        ("dropout", a.dropout != b.dropout),
        ("queue_size", a.queue_size != b.queue_size),
        ("batch_size", a.batch_size != b.batch_size),
        ("rec", a.rec != b.rec),
        ("seed", a.seed != b.seed),
    ]
    .into_iter()
    .find_map(|(key, differs)| differs.then_some(key))
}

/// Rejects a new run in an output folder that contains another run's checkpoints.
fn check_output(options: &RunOptions) -> anyhow::Result<()> {
    let existing = checkpoint::steps(&options.output);
    if let (None, Some(last)) = (&options.resume, existing.last()) {
        bail!(
            "output folder `{}` already holds checkpoints (up to step {last}); pass --resume {} \
             to continue that run, or choose another --output",
            options.output.display(),
            options.output.display()
        );
    }
    Ok(())
}

/// Makes the data paths absolute, so the config saved in checkpoints works from any folder.
fn absolute_paths(config: &TrainConfig) -> anyhow::Result<TrainConfig> {
    let mut config = config.clone();
    config.rec = std::path::absolute(&config.rec)
        .with_context(|| format!("invalid path `rec = {}`", config.rec.display()))?;
    if !config.val_folder.as_os_str().is_empty() {
        let folder = &config.val_folder;
        config.val_folder = std::path::absolute(folder)
            .with_context(|| format!("invalid path `val_folder = {}`", folder.display()))?;
    }
    Ok(config)
}

fn baseline(config: &TrainConfig, sets: &[ValidationSet]) -> anyhow::Result<Option<SetResult>> {
    let Some(set) = sets.first().filter(|_| !config.val_folder.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let result = set.raw_pixel_baseline(&config.preprocess())?;
    info!(
        "[{}] raw-pixel baseline Accuracy: {:.5}+-{:.5} ({} pairs)",
        set.name, result.summary.accuracy_mean, result.summary.accuracy_std, result.summary.pairs
    );
    Ok(Some(result))
}

fn evaluate<B: AutodiffBackend>(
    config: &TrainConfig,
    state: &FfcState<B>,
    sets: &[ValidationSet],
    step: usize,
    epoch: usize,
    metrics: &mut Metrics,
) -> anyhow::Result<Vec<SetResult>> {
    let net = state.eval_net();
    let preprocess = config.preprocess();
    let mut results = Vec::new();
    for set in sets {
        let evaluated =
            set.evaluate(&net, &preprocess, config.eval_batch_size, true, state.device());
        let result = match evaluated {
            Ok(result) => result,
            Err(error) => {
                let error = anyhow::Error::from(error);
                warn!("[{}][{step}] evaluation failed: {error:#}", set.name);
                continue;
            }
        };
        let summary = &result.summary;
        info!(
            "[{}][{step}]XNorm: {:.6}  Accuracy-Flip: {:.5}+-{:.5}",
            set.name, summary.xnorm, summary.accuracy_mean, summary.accuracy_std
        );
        metrics.push(MetricRow::Eval {
            step,
            epoch,
            target: set.name.clone(),
            accuracy_mean: summary.accuracy_mean,
            accuracy_std: summary.accuracy_std,
            xnorm: summary.xnorm,
        })?;
        results.push(result);
    }
    if let Err(error) = metrics.plot() {
        warn!("cannot draw the plots: {error}");
    }
    Ok(results)
}

/// Returns the evaluation rows logged at `step`, when the last step was just evaluated.
fn final_results(metrics: &Metrics, step: usize, sets: &[ValidationSet]) -> Vec<SetResult> {
    metrics
        .rows()
        .iter()
        .filter_map(|row| match row {
            MetricRow::Eval { step: at, target, accuracy_mean, accuracy_std, xnorm, .. }
                if *at == step =>
            {
                let pairs = sets.iter().find(|s| &s.name == target).map_or(0, |s| s.pairs());
                Some(SetResult {
                    name: target.clone(),
                    summary: ffc_eval::EvalSummary {
                        accuracy_mean: *accuracy_mean,
                        accuracy_std: *accuracy_std,
                        xnorm: *xnorm,
                        pairs,
                    },
                })
            }
            _ => None,
        })
        .collect()
}

fn save<B: AutodiffBackend>(
    config: &TrainConfig,
    state: &FfcState<B>,
    output: &Path,
    step: usize,
    loader: LoaderPosition,
) -> anyhow::Result<()> {
    let trainer = TrainerState { step, loader, config: config.clone() };
    let dir = checkpoint::save(output, state, &trainer)?;
    checkpoint::prune(output, config.keep_checkpoints)?;
    info!(checkpoint = %dir.display(), "saved");
    Ok(())
}

fn write_summary(
    output: &Path,
    steps: usize,
    losses: &[f32],
    results: &[SetResult],
    baseline: Option<&SetResult>,
) -> anyhow::Result<()> {
    let mut targets = serde_json::Map::new();
    for result in results {
        targets.insert(result.name.clone(), serde_json::to_value(&result.summary)?);
    }
    let summary = json!({
        "steps": steps,
        "final_loss": losses.last(),
        "verification": results.first().map(|r| &r.summary),
        "targets": targets,
        "baseline": { "raw_pixel": baseline.map(|b| &b.summary) },
    });
    let path = output.join("summary.json");
    let temp = output.join(".summary.json.tmp");
    std::fs::write(&temp, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("cannot write `{}`", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

fn progress_bar(done: usize, total: usize) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  {elapsed_precise} < {eta_precise}",
        )
        .expect("the template is valid"),
    );
    bar.set_position(done as u64);
    bar
}

/// Averages between two log lines.
struct LogWindow {
    started: Instant,
    run_started: Instant,
    steps_run: usize,
    loss_sum: f64,
    steps: usize,
    images: usize,
    pooled: usize,
    probes: usize,
    skipped: usize,
}

impl LogWindow {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            run_started: now,
            steps_run: 0,
            loss_sum: 0.0,
            steps: 0,
            images: 0,
            pooled: 0,
            probes: 0,
            skipped: 0,
        }
    }

    fn add(&mut self, stats: &StepStats, images: usize, skipped: usize) {
        self.loss_sum += stats.loss as f64;
        self.steps += 1;
        self.steps_run += 1;
        self.images += images;
        self.pooled += stats.pooled_probes;
        self.probes += stats.pooled_probes + stats.outlier_probes;
        self.skipped += skipped;
    }

    /// Logs the arcface_torch-style line and returns the metrics row; starts a new window.
    fn log(&mut self, step: usize, epoch: usize, lr: f64, total: usize) -> MetricRow {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let speed = self.images as f64 / seconds;
        let loss = self.loss_sum / self.steps.max(1) as f64;
        let per_step = self.run_started.elapsed().as_secs_f64() / self.steps_run.max(1) as f64;
        let hours_left = per_step * (total - step) as f64 / 3600.0;
        let pooled_fraction = self.pooled as f64 / self.probes.max(1) as f64;
        info!(
            "Speed {speed:.2} samples/sec   Loss {loss:.4}   LearningRate {lr:.6}   Epoch: {epoch}   \
             Global Step: {step}   Pooled: {:.1}%   Required: {hours_left:.3} hours",
            100.0 * pooled_fraction
        );
        if self.skipped > 0 {
            warn!(
                skipped = self.skipped,
                "images unreadable since the last log line were replaced"
            );
        }
        let row =
            MetricRow::Train { step, epoch, lr, loss, samples_per_sec: speed, pooled_fraction };
        let (run_started, steps_run) = (self.run_started, self.steps_run);
        *self = Self::new();
        self.run_started = run_started;
        self.steps_run = steps_run;
        row
    }
}
