//! Checkpoints: everything needed to continue a run bit for bit, written atomically.
//!
//! A checkpoint is a folder `checkpoints/step-NNNNNNNN` under the output folder:
//!
//! | file | content |
//! |---|---|
//! | `probe.mpk`, `gallery.mpk` | both networks with batch-norm statistics and parameter ids |
//! | `optimizer.mpk` | SGD momentum, keyed by the probe's parameter ids |
//! | `queue.f32` | the pool queue, `[2, Q, D]` little-endian f32 |
//! | `pool.json` | position bits and the LRU (most recent first) |
//! | `trainer.json` | step, loader position and the config |
//! | `probe.safetensors` | the probe's weights, for use outside ffc |
//!
//! The folder is written under a temporary name and renamed when complete, so a crash leaves
//! either the whole checkpoint or none. burn keys optimizer state by parameter id and silently
//! drops state whose id it does not find, so the networks are saved with a burn recorder, which
//! keeps the ids, rather than only as safetensors, which does not.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use ffc_data::LoaderPosition;
use ffc_lru::LruState;
use ffc_pool::{ClassPool, PoolState};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::nets::FfcState;

/// Sub-folder of the output folder holding the checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// Trainer counters stored beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps completed.
    pub step: usize,
    /// Position of the next batch.
    pub loader: LoaderPosition,
    /// The config of the run.
    pub config: TrainConfig,
}

#[derive(Serialize, Deserialize)]
struct PoolMeta {
    queue_size: usize,
    feat_dim: usize,
    positions: Vec<u8>,
    lru: LruState,
}

/// A checkpoint that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("failed to {action} `{path}`")]
    Io {
        /// Attempted action.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A burn recorder failed.
    #[error("failed to {action} `{path}`: {message}")]
    Record {
        /// Attempted action.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The recorder's message.
        message: String,
    },
    /// A JSON file is malformed.
    #[error("invalid checkpoint file `{path}`")]
    Json {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The pool state is inconsistent.
    #[error("invalid pool state in `{path}`")]
    Pool {
        /// The folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ffc_pool::PoolStateError,
    },
    /// No checkpoint exists where one was expected.
    #[error(
        "no checkpoint in `{0}` (expected a `checkpoints/step-*` folder or a checkpoint folder)"
    )]
    Missing(PathBuf),
    /// Writing the safetensors copy failed.
    #[error("failed to write `{path}`")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: ffc_model::ModelError,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_owned();
    move |source| CheckpointError::Io { action, path, source }
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

/// Writes a checkpoint of `state` after `trainer.step` steps and returns its folder.
pub fn save<B: AutodiffBackend>(
    output: &Path,
    state: &FfcState<B>,
    trainer: &TrainerState,
) -> Result<PathBuf, CheckpointError> {
    let root = output.join(CHECKPOINT_DIR);
    fs::create_dir_all(&root).map_err(io("create", &root))?;
    let name = format!("step-{:08}", trainer.step);
    let final_dir = root.join(&name);
    let temp = root.join(format!(".{name}.tmp"));
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(io("remove", &temp))?;
    }
    fs::create_dir_all(&temp).map_err(io("create", &temp))?;

    write_nets(&temp, state)?;
    write_pool(&temp, &state.pool)?;
    write_json(&temp.join("trainer.json"), trainer)?;

    // An existing folder of the same step is moved aside first, so that at every moment one
    // complete `step-*` folder exists; names starting with '.' are never read as checkpoints.
    let old = root.join(format!(".{name}.old"));
    if final_dir.exists() {
        remove_hidden(&old)?;
        fs::rename(&final_dir, &old).map_err(io("move aside", &final_dir))?;
    }
    fs::rename(&temp, &final_dir).map_err(io("rename into place", &final_dir))?;
    sync_dir(&root);
    remove_hidden(&old)?;
    Ok(final_dir)
}

fn write_nets<B: AutodiffBackend>(dir: &Path, state: &FfcState<B>) -> Result<(), CheckpointError> {
    let record = |action, path: PathBuf, result: Result<(), burn::record::RecorderError>| {
        result.map_err(|e| CheckpointError::Record { action, path, message: e.to_string() })
    };
    let probe = dir.join("probe");
    record("write", probe.clone(), state.probe.clone().save_file(&probe, &recorder()))?;
    let gallery = dir.join("gallery");
    record("write", gallery.clone(), state.gallery.clone().save_file(&gallery, &recorder()))?;
    let optimizer = dir.join("optimizer");
    record(
        "write",
        optimizer.clone(),
        recorder().record(state.optimizer.to_record(), optimizer.clone()),
    )?;

    let weights = dir.join("probe.safetensors");
    ffc_model::save_safetensors(&state.probe, &weights)
        .map_err(|source| CheckpointError::Safetensors { path: weights, source })
}

fn write_pool<B: burn::tensor::backend::Backend>(
    dir: &Path,
    pool: &ClassPool<B>,
) -> Result<(), CheckpointError> {
    let state = pool.export_state();
    let queue_path = dir.join("queue.f32");
    let mut bytes = Vec::with_capacity(state.queue.len() * 4);
    for value in &state.queue {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    write_file(&queue_path, &bytes)?;
    let meta = PoolMeta {
        queue_size: state.queue_size,
        feat_dim: state.feat_dim,
        positions: state.positions,
        lru: state.lru,
    };
    write_json(&dir.join("pool.json"), &meta)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CheckpointError> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|source| CheckpointError::Json { path: path.to_owned(), source })?;
    write_file(path, &text)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut file = fs::File::create(path).map_err(io("create", path))?;
    file.write_all(bytes).map_err(io("write", path))?;
    file.sync_all().map_err(io("sync", path))
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable where the platform allows opening folders; best effort.
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Returns the newest complete checkpoint folder: `path` itself when it is a checkpoint, else
/// the highest `checkpoints/step-*` folder under it.
pub fn latest(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.join("trainer.json").is_file() {
        return Ok(path.to_owned());
    }
    let root = path.join(CHECKPOINT_DIR);
    let Ok(entries) = fs::read_dir(&root) else {
        return Err(CheckpointError::Missing(path.to_owned()));
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("step-"))
        .collect();
    names.sort();
    names.pop().map(|name| root.join(name)).ok_or_else(|| CheckpointError::Missing(path.to_owned()))
}

/// Deletes all but the newest `keep` checkpoints.
pub fn prune(output: &Path, keep: usize) -> Result<(), CheckpointError> {
    let root = output.join(CHECKPOINT_DIR);
    let mut names: Vec<String> = fs::read_dir(&root)
        .map_err(io("list", &root))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("step-"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in &names[..excess] {
        // Hidden under a dot name before deletion, so an interrupted delete leaves no partial
        // `step-*` folder behind.
        let dir = root.join(name);
        let doomed = root.join(format!(".{name}.deleting"));
        remove_hidden(&doomed)?;
        fs::rename(&dir, &doomed).map_err(io("move aside", &dir))?;
        remove_hidden(&doomed)?;
    }
    Ok(())
}

/// Returns the steps of the complete checkpoints under `output`, in increasing order.
pub fn steps(output: &Path) -> Vec<usize> {
    let Ok(entries) = fs::read_dir(output.join(CHECKPOINT_DIR)) else {
        return Vec::new();
    };
    let mut steps: Vec<usize> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort_unstable();
    steps
}

/// Returns the training output folder a checkpoint folder belongs to: `<output>/checkpoints/step-N`
/// gives `<output>`; any other path is returned as it is.
pub fn output_of(path: &Path) -> PathBuf {
    let is_checkpoint = path.join("trainer.json").is_file();
    match path.parent() {
        Some(parent)
            if is_checkpoint && parent.file_name().is_some_and(|n| n == CHECKPOINT_DIR) =>
        {
            parent.parent().map_or_else(|| PathBuf::from("."), Path::to_owned)
        }
        _ => path.to_owned(),
    }
}

fn remove_hidden(dir: &Path) -> Result<(), CheckpointError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io("remove", dir))?;
    }
    Ok(())
}

/// Reads the trainer counters of a checkpoint folder.
pub fn read_trainer(dir: &Path) -> Result<TrainerState, CheckpointError> {
    let path = dir.join("trainer.json");
    let text = fs::read(&path).map_err(io("read", &path))?;
    serde_json::from_slice(&text).map_err(|source| CheckpointError::Json { path, source })
}

/// Loads the `probe` or `gallery` network of a checkpoint onto `device`, for evaluation.
pub fn load_network<B: burn::tensor::backend::Backend>(
    dir: &Path,
    network: &str,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<ffc_model::Backbone<B>, CheckpointError> {
    let path = dir.join(network);
    config
        .backbone()
        .init::<B>(device)
        .load_file(&path, &recorder(), device)
        .map_err(|e| CheckpointError::Record { action: "read", path, message: e.to_string() })
}

/// Restores networks, optimizer and pool of a checkpoint into `state`, which must have been
/// built from the same config.
pub fn restore<B: AutodiffBackend>(
    dir: &Path,
    state: &mut FfcState<B>,
) -> Result<(), CheckpointError> {
    let device = state.device().clone();
    let load_err = |path: PathBuf| {
        move |e: burn::record::RecorderError| CheckpointError::Record {
            action: "read",
            path,
            message: e.to_string(),
        }
    };
    let probe = dir.join("probe");
    state.probe =
        state.probe.clone().load_file(&probe, &recorder(), &device).map_err(load_err(probe))?;
    let gallery = dir.join("gallery");
    state.gallery = state
        .gallery
        .clone()
        .load_file(&gallery, &recorder(), &device)
        .map_err(load_err(gallery))?;
    let optimizer = dir.join("optimizer");
    let record = recorder().load(optimizer.clone(), &device).map_err(load_err(optimizer))?;
    state.optimizer = state.optimizer.clone().load_record(record);
    state.pool = read_pool(dir, &device)?;
    Ok(())
}

fn read_pool<B: burn::tensor::backend::Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<ClassPool<B>, CheckpointError> {
    let meta_path = dir.join("pool.json");
    let text = fs::read(&meta_path).map_err(io("read", &meta_path))?;
    let meta: PoolMeta = serde_json::from_slice(&text)
        .map_err(|source| CheckpointError::Json { path: meta_path, source })?;
    let queue_path = dir.join("queue.f32");
    let bytes = fs::read(&queue_path).map_err(io("read", &queue_path))?;
    let queue =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let state = PoolState {
        queue_size: meta.queue_size,
        feat_dim: meta.feat_dim,
        queue,
        positions: meta.positions,
        lru: meta.lru,
    };
    ClassPool::from_state(&state, device)
        .map_err(|source| CheckpointError::Pool { path: dir.to_owned(), source })
}
