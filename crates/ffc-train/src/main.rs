//! `ffc`: train FFC face-recognition models and work with insightface datasets.
//!
//! ```text
//! ffc train --config FILE [--set KEY=VALUE]... [--device cpu|wgpu[:N]|cuda[:N]] [--output DIR] [--resume DIR]
//! ffc eval --checkpoint PATH --bin FILE [--bin FILE]... [--no-flip] [--json] [--device D]
//! ffc pack --input IMAGE_FOLDER --output DIR [--max-side N] [--quality Q]
//! ffc inspect PATH [--json]
//! ```

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ffc_train::checkpoint;
use ffc_train::device::DeviceSpec;
use ffc_train::evaluate::{SetResult, ValidationSet};
use ffc_train::{RunOptions, TrainConfig};
use tracing::info;

#[derive(Parser)]
#[command(name = "ffc", version, about = "Train face recognition with FFC's Dynamic Class Pool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config.
    Train {
        /// Experiment config (TOML). Optional with --resume, which then reuses the config saved
        /// in the checkpoint.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override a config key, e.g. `--set lr=0.05` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Device to train on.
        #[arg(long, default_value = "cpu", value_name = "cpu|wgpu[:N]|cuda[:N]")]
        device: DeviceSpec,
        /// Output folder [default: work_dirs/<config file stem>].
        #[arg(long)]
        output: Option<PathBuf>,
        /// Continue from the newest checkpoint of this output folder (or this checkpoint).
        #[arg(long)]
        resume: Option<PathBuf>,
    },
    /// Evaluate a checkpoint on `.bin` validation packs or a held-out identity folder.
    #[command(group(clap::ArgGroup::new("sets").required(true).multiple(true).args(["bins", "folder"])))]
    Eval {
        /// A checkpoint folder, or a training output folder (its newest checkpoint is used).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Validation pack such as lfw.bin (repeatable).
        #[arg(long = "bin")]
        bins: Vec<PathBuf>,
        /// Held-out image folder: all same-identity pairs plus as many different-identity pairs.
        #[arg(long)]
        folder: Option<PathBuf>,
        /// Seed of the different-identity pairs drawn from --folder.
        #[arg(long, default_value_t = 0)]
        pairs_seed: u64,
        /// Evaluate the gallery network (the moving average of the probe) instead of the probe.
        #[arg(long)]
        gallery: bool,
        /// Score single images instead of the sum of each image's and its mirror's features.
        #[arg(long)]
        no_flip: bool,
        /// Print JSON instead of log lines.
        #[arg(long)]
        json: bool,
        /// Device to run on.
        #[arg(long, default_value = "cpu", value_name = "cpu|wgpu[:N]|cuda[:N]")]
        device: DeviceSpec,
    },
    /// Pack an image folder (or convert a RecordIO folder) into insightface's train.rec, train.idx
    /// and property.
    Pack {
        /// Image folder with one sub-folder per identity, or a RecordIO folder.
        #[arg(long)]
        input: PathBuf,
        /// Output folder.
        #[arg(long)]
        output: PathBuf,
        /// Shrink images whose longer side exceeds this many pixels (re-encodes as JPEG).
        #[arg(long)]
        max_side: Option<u32>,
        /// Re-encode every image as JPEG with this quality, 1 to 100.
        #[arg(long)]
        quality: Option<u8>,
    },
    /// Describe a RecordIO folder, a `.bin` pack or an image folder.
    Inspect {
        /// The dataset to describe.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    init_logging();
    if !ffc_train::memory::retain_freed_buffers() {
        tracing::debug!("allocator thresholds unchanged: each step maps its large buffers anew");
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `training.log` of the current training run, once its output folder is known.
static TRAINING_LOG: OnceLock<Mutex<File>> = OnceLock::new();

/// Writes log lines to [`TRAINING_LOG`] when it is open, and nowhere before.
struct TrainingLog;

impl Write for TrainingLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match TRAINING_LOG.get() {
            Some(file) => file.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match TRAINING_LOG.get() {
            Some(file) => file.lock().unwrap_or_else(|e| e.into_inner()).flush(),
            None => Ok(()),
        }
    }
}

/// Logs to stderr (coloured on a terminal) and, during `ffc train`, to `<output>/training.log`.
fn init_logging() {
    use tracing_subscriber::prelude::*;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let file = tracing_subscriber::fmt::layer()
        .with_writer(|| TrainingLog)
        .with_ansi(false)
        .with_target(false);
    tracing_subscriber::registry().with(filter).with(stderr).with(file).init();
}

/// Opens `<output>/training.log` for appending, so a resumed run continues the same log.
fn open_training_log(output: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create output folder `{}`", output.display()))?;
    let path = output.join("training.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open `{}`", path.display()))?;
    let _ = TRAINING_LOG.set(Mutex::new(file));
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train { config, sets, device, output, resume } => {
            train(config.as_deref(), &sets, device, output, resume)
        }
        Command::Eval { checkpoint, bins, folder, pairs_seed, gallery, no_flip, json, device } => {
            let sets = EvalSets { bins, folder, pairs_seed };
            eval(&checkpoint, &sets, gallery, !no_flip, json, device)
        }
        Command::Pack { input, output, max_side, quality } => {
            pack(&input, &output, max_side, quality)
        }
        Command::Inspect { path, json } => inspect(&path, json),
    }
}

/// Runs `$body` with `$backend` bound to the autodiff backend of `$spec` and `$device` to its
/// device, or fails when the backend is not compiled in.
macro_rules! with_backend {
    ($spec:expr, |$backend:ident, $device:ident| $body:expr) => {{
        let spec: DeviceSpec = $spec;
        if !spec.is_compiled() {
            bail!(spec.not_compiled());
        }
        match spec {
            #[cfg(feature = "flex")]
            DeviceSpec::Cpu => {
                type $backend = burn::backend::Autodiff<burn::backend::Flex>;
                let $device = burn::backend::flex::FlexDevice;
                $body
            }
            #[cfg(feature = "wgpu")]
            DeviceSpec::Wgpu(index) => {
                type $backend = burn::backend::Autodiff<burn::backend::Wgpu>;
                let $device = burn::backend::wgpu::WgpuDevice::DiscreteGpu(index);
                $body
            }
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(index) => {
                type $backend = burn::backend::Autodiff<burn::backend::Cuda>;
                let $device = burn::backend::cuda::CudaDevice::new(index);
                $body
            }
            #[allow(unreachable_patterns)]
            other => bail!(other.not_compiled()),
        }
    }};
}

fn train(
    config_path: Option<&Path>,
    sets: &[String],
    device: DeviceSpec,
    output: Option<PathBuf>,
    resume: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = match (config_path, &resume) {
        (Some(path), _) => TrainConfig::load(path, sets)?,
        (None, Some(resume)) => {
            let dir = checkpoint::latest(resume)?;
            let saved = checkpoint::read_trainer(&dir)?.config;
            let text = toml::to_string(&saved).context("cannot re-serialise the saved config")?;
            TrainConfig::parse(&text, &dir.join("trainer.json"), sets)?
        }
        (None, None) => bail!("pass --config FILE (or --resume DIR to continue a run)"),
    };
    let output = output
        .or_else(|| resume.as_deref().map(checkpoint::output_of))
        .or_else(|| {
            config_path
                .and_then(|p| p.file_stem())
                .map(|stem| PathBuf::from("work_dirs").join(stem))
        })
        .context("pass --output DIR")?;
    let options = RunOptions { output: output.clone(), resume };
    if !device.is_compiled() {
        bail!(device.not_compiled());
    }
    open_training_log(&output)?;
    info!(device = %device, output = %output.display(), "ffc train");

    let summary = with_backend!(device, |B, dev| ffc_train::train::<B>(&config, &options, &dev)?);
    for result in &summary.results {
        info!(
            "[{}] final Accuracy-Flip: {:.5}+-{:.5}  XNorm: {:.4}  ({} pairs)",
            result.name,
            result.summary.accuracy_mean,
            result.summary.accuracy_std,
            result.summary.xnorm,
            result.summary.pairs
        );
    }
    info!(steps = summary.steps, summary = %output.join("summary.json").display(), "done");
    Ok(())
}

/// The validation sets named on the `ffc eval` command line.
struct EvalSets {
    bins: Vec<PathBuf>,
    folder: Option<PathBuf>,
    pairs_seed: u64,
}

impl EvalSets {
    fn open(&self) -> anyhow::Result<Vec<ValidationSet>> {
        let mut sets = Vec::new();
        if let Some(folder) = &self.folder {
            let set = ValidationSet::from_folder(folder, self.pairs_seed)
                .with_context(|| format!("cannot open image folder `{}`", folder.display()))?;
            sets.push(set);
        }
        for bin in &self.bins {
            let set = ValidationSet::from_pack(bin)
                .with_context(|| format!("cannot read validation pack `{}`", bin.display()))?;
            sets.push(set);
        }
        Ok(sets)
    }
}

fn eval(
    path: &Path,
    sets: &EvalSets,
    gallery: bool,
    flip: bool,
    json: bool,
    device: DeviceSpec,
) -> anyhow::Result<()> {
    let dir = checkpoint::latest(path)?;
    let config = checkpoint::read_trainer(&dir)?.config;
    let sets = sets.open()?;
    let network = if gallery { "gallery" } else { "probe" };
    let results: Vec<SetResult> = with_backend!(device, |B, dev| {
        type Inner = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
        let net = checkpoint::load_network::<Inner>(&dir, network, &config, &dev)?;
        let mut results = Vec::new();
        for set in &sets {
            let preprocess = config.preprocess();
            results.push(set.evaluate(&net, &preprocess, config.eval_batch_size, flip, &dev)?);
        }
        results
    });

    if json {
        let mut map = serde_json::Map::new();
        for result in &results {
            map.insert(result.name.clone(), serde_json::to_value(&result.summary)?);
        }
        println!("{}", serde_json::to_string_pretty(&map)?);
    } else {
        let label = if flip { "Accuracy-Flip" } else { "Accuracy" };
        for result in &results {
            let s = &result.summary;
            println!("[{}] XNorm: {:.6}", result.name, s.xnorm);
            println!("[{}] {label}: {:.5}+-{:.5}", result.name, s.accuracy_mean, s.accuracy_std);
        }
    }
    Ok(())
}

fn pack(
    input: &Path,
    output: &Path,
    max_side: Option<u32>,
    quality: Option<u8>,
) -> anyhow::Result<()> {
    let options = ffc_data::PackOptions { max_side, quality };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images  {elapsed_precise}")
            .expect("the template is valid"),
    );
    let mut progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let summary = ffc_data::open_source(input)
        .and_then(|source| ffc_data::pack_source(source.as_ref(), output, &options, &mut progress))
        .with_context(|| format!("cannot pack `{}`", input.display()))?;
    bar.finish_and_clear();
    println!(
        "wrote {} images of {} identities to `{}` ({} re-encoded, {} bytes)",
        summary.images,
        summary.identities,
        output.display(),
        summary.reencoded,
        summary.rec_bytes
    );
    Ok(())
}

fn inspect(path: &Path, json: bool) -> anyhow::Result<()> {
    let report =
        ffc_data::inspect(path).with_context(|| format!("cannot inspect `{}`", path.display()))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
