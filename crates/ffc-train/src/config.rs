//! The experiment config: one TOML file per experiment, with arcface_torch's field names where
//! the concept is the same and FFC's own for the pool.
//!
//! `batch_size` counts identities per step on one device, as in the FFC reference: each step
//! draws `batch_size` identities from the identity loader (two images each) and `batch_size`
//! random images from the instance loader, so each of the two views holds `1.5 x batch_size`
//! images, and the gallery writes `1.5 x batch_size` features into the pool per step.

use std::path::{Path, PathBuf};

use ffc_data::{Augment, ChannelOrder, Normalization, ResizeMode};
use ffc_loss::LossKind;
use ffc_model::NetworkKind;
use serde::{Deserialize, Serialize};

/// Learning-rate schedule after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduler {
    /// `lr` times `lr_gamma` for every milestone epoch passed, as the FFC reference does.
    Multistep,
    /// Cosine decay from `lr` to 0 over the run, per step.
    Cosine,
    /// Linear decay from `lr` to 0 over the run, per step (arcface_torch's "polynomial", power 1).
    Linear,
    /// `lr` throughout.
    Constant,
}

/// Everything one training run needs. Unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    // ---- data ----
    /// Training data: an image folder (one sub-folder per identity) or a RecordIO folder
    /// (`train.rec`, `train.idx`, optional `property`).
    pub rec: PathBuf,
    /// Held-out image folder whose identities are paired for verification (all same-identity
    /// pairs and as many different-identity pairs); empty for none.
    #[serde(default)]
    pub val_folder: PathBuf,
    /// Validation packs `<rec>/<name>.bin` evaluated during training, e.g. `["lfw", "cfp_fp"]`.
    /// A missing pack is skipped with a warning, as arcface_torch does.
    #[serde(default)]
    pub val_targets: Vec<String>,
    /// Seed of the different-identity pairs drawn from `val_folder`.
    #[serde(default)]
    pub val_pairs_seed: u64,
    /// Network input `[height, width]` in pixels.
    #[serde(default = "default_input_size")]
    pub input_size: [usize; 2],
    /// Channel order of the network input: "rgb" (insightface) or "bgr" (the FFC reference).
    #[serde(default)]
    pub channel_order: ChannelOrder,
    /// Pixel normalisation: "insightface" ((x/255-0.5)/0.5) or "reference" ((x-127.5)/128).
    #[serde(default)]
    pub normalization: Normalization,
    /// Fitting of images of another size to `input_size`: "resize", "pad" or "crop".
    #[serde(default)]
    pub resize: ResizeMode,
    /// Random horizontal flips during training.
    #[serde(default = "default_true")]
    pub flip: bool,
    /// Random translation of every training image by up to this many pixels along each axis
    /// (edge pixels repeated); 0 turns it off, as in arcface_torch, which only flips.
    #[serde(default)]
    pub random_shift: usize,
    /// Random zoom of every training image by a factor in `[1 - x, 1 + x]`; 0 turns it off.
    #[serde(default)]
    pub random_scale: f32,
    /// Random rotation of every training image by up to this many degrees; 0 turns it off.
    #[serde(default)]
    pub random_rotation: f32,
    /// Random offset of up to this much added to every normalised pixel value (white and
    /// black are 2 apart); 0 turns it off.
    #[serde(default)]
    pub random_brightness: f32,
    /// Random contrast factor in `[1 - x, 1 + x]` on every normalised pixel value; 0 turns it
    /// off.
    #[serde(default)]
    pub random_contrast: f32,
    /// Skip unreadable images (counted in the log) instead of stopping the run.
    #[serde(default)]
    pub skip_bad_images: bool,
    /// Image decoding threads.
    #[serde(default = "default_num_workers")]
    pub num_workers: usize,

    // ---- network ----
    /// Backbone: "r18", "r34", "r50", "r100" or "mbf".
    pub network: NetworkKind,
    /// Embedding dimension.
    #[serde(default = "default_embedding_size")]
    pub embedding_size: usize,
    /// IResNet stage widths; absent for the standard `[64, 128, 256, 512]`.
    #[serde(default)]
    pub widths: Option<[usize; 4]>,
    /// Dropout before the IResNet head's linear layer.
    #[serde(default)]
    pub dropout: f64,

    // ---- FFC ----
    /// Pool slots Q.
    pub queue_size: usize,
    /// Margin loss: "AM" (CosFace), "Arc" (ArcFace) or "SV" (SV-AM-softmax).
    #[serde(default = "default_loss_type")]
    pub loss_type: LossKind,
    /// Margin m.
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// Logit scale s.
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Momentum of the gallery net's moving average of the probe net.
    #[serde(default = "default_ema_momentum")]
    pub ema_momentum: f64,
    /// Run the rolled-back pass A (probe x against gallery y) besides pass B.
    #[serde(default = "default_true")]
    pub rollback_pass: bool,

    // ---- optimisation ----
    /// Identities per step per device (see the module docs).
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Nesterov momentum.
    #[serde(default = "default_true")]
    pub nesterov: bool,
    /// L2 weight decay on every trainable parameter.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Epochs, one pass of the instance loader each.
    pub num_epoch: usize,
    /// Epochs of linear warm-up from 0 to `lr`, per step.
    #[serde(default)]
    pub warmup_epoch: usize,
    /// Schedule after the warm-up.
    #[serde(default = "default_scheduler")]
    pub lr_scheduler: LrScheduler,
    /// Epochs at which the multistep schedule multiplies the rate by `lr_gamma`.
    #[serde(default)]
    pub milestones: Vec<usize>,
    /// Factor of every multistep milestone.
    #[serde(default = "default_gamma")]
    pub lr_gamma: f64,
    /// Seed of the initial weights, the pool and the data order.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Stop after this many steps (for smoke tests); absent for the whole schedule.
    #[serde(default)]
    pub max_steps: Option<usize>,

    // ---- logging and checkpoints ----
    /// Log a line every this many steps.
    #[serde(default = "default_frequent")]
    pub frequent: usize,
    /// Evaluate every this many steps (and at the end); 0 for the end only.
    #[serde(default = "default_verbose")]
    pub verbose: usize,
    /// Write a checkpoint every this many steps (and at the end); 0 for the end only.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Checkpoints kept; older ones are deleted after a new one is complete.
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// Images per forward pass during evaluation.
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
}

fn default_input_size() -> [usize; 2] {
    [112, 112]
}
fn default_true() -> bool {
    true
}
fn default_num_workers() -> usize {
    2
}
fn default_embedding_size() -> usize {
    512
}
fn default_loss_type() -> LossKind {
    LossKind::Am
}
fn default_margin() -> f32 {
    0.4
}
fn default_scale() -> f32 {
    32.0
}
fn default_ema_momentum() -> f64 {
    0.99
}
fn default_momentum() -> f64 {
    0.9
}
fn default_weight_decay() -> f64 {
    5e-4
}
fn default_scheduler() -> LrScheduler {
    LrScheduler::Multistep
}
fn default_gamma() -> f64 {
    0.1
}
fn default_seed() -> u64 {
    2048
}
fn default_frequent() -> usize {
    10
}
fn default_verbose() -> usize {
    2000
}
fn default_checkpoint_every() -> usize {
    2000
}
fn default_keep_checkpoints() -> usize {
    2
}
fn default_eval_batch_size() -> usize {
    64
}

/// A config that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("invalid config `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message, including the key.
        message: String,
    },
    /// A `--set` override is not of the form `key=value`.
    #[error("invalid override `{0}`: expected KEY=VALUE, e.g. `--set lr=0.05`")]
    Override(String),
    /// A field has a value the trainer cannot use.
    #[error("invalid config value `{field} = {value}`: {reason}")]
    Value {
        /// The key.
        field: &'static str,
        /// The value, as written.
        value: String,
        /// Problem with the value and what to use instead.
        reason: String,
    },
}

impl TrainConfig {
    /// Reads a TOML config and applies `key=value` overrides on top of it. An override value is
    /// parsed as TOML (`lr=0.05`, `widths=[8,16,32,64]`) and taken as a string when that fails
    /// (`rec=/data/ms1m`).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path, overrides)
    }

    /// Parses TOML text as [`load`](Self::load) does; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse { path: path.to_owned(), message };
        let mut table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        for entry in overrides {
            let (key, value) = entry
                .split_once('=')
                .filter(|(key, _)| !key.trim().is_empty())
                .ok_or_else(|| ConfigError::Override(entry.clone()))?;
            table.insert(key.trim().to_owned(), override_value(value.trim()));
        }
        let config: Self =
            table.try_into().map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, value: String, reason: &str| {
            Err(ConfigError::Value { field, value, reason: reason.to_owned() })
        };
        if self.batch_size < 2 || !self.batch_size.is_multiple_of(2) {
            let reason = "must be an even number of identities, at least 2, because the \
                          instance batch is split into two halves";
            return invalid("batch_size", self.batch_size.to_string(), reason);
        }
        if self.queue_size == 0 {
            return invalid("queue_size", "0".into(), "the pool needs at least one slot");
        }
        if self.queue_size < 3 {
            let reason = "the outlier term penalises at least 3 slots, so use 3 or more";
            return invalid("queue_size", self.queue_size.to_string(), reason);
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return invalid("lr", self.lr.to_string(), "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.ema_momentum) {
            return invalid("ema_momentum", self.ema_momentum.to_string(), "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return invalid("momentum", self.momentum.to_string(), "must be in [0, 1)");
        }
        if self.num_epoch == 0 {
            return invalid("num_epoch", "0".into(), "train for at least one epoch");
        }
        if self.frequent == 0 {
            return invalid("frequent", "0".into(), "log at least every N >= 1 steps");
        }
        if self.eval_batch_size == 0 {
            return invalid("eval_batch_size", "0".into(), "must be at least 1");
        }
        let augment = [
            ("random_scale", self.random_scale, 1.0),
            ("random_rotation", self.random_rotation, 180.0),
            ("random_brightness", self.random_brightness, f32::MAX),
            ("random_contrast", self.random_contrast, 1.0),
        ];
        for (field, value, end) in augment {
            if !(0.0..end).contains(&value) {
                return invalid(field, value.to_string(), &format!("must be in [0, {end})"));
            }
        }
        if self.keep_checkpoints == 0 {
            return invalid("keep_checkpoints", "0".into(), "keep at least the latest checkpoint");
        }
        match self.backbone().validate() {
            Ok(()) => {}
            Err(ffc_model::ModelError::InvalidConfig { field, value, reason }) => {
                return invalid(field, value, reason);
            }
            Err(other) => return invalid("network", self.network.to_string(), &other.to_string()),
        }
        if self.rec.as_os_str().is_empty() {
            return invalid(
                "rec",
                String::new(),
                "set the training data folder, e.g. --set rec=DIR",
            );
        }
        Ok(())
    }

    /// Returns the random changes applied to training images.
    pub fn augment(&self) -> Augment {
        Augment {
            flip: self.flip,
            max_shift: self.random_shift,
            max_scale: self.random_scale,
            max_rotation: self.random_rotation,
            max_brightness: self.random_brightness,
            max_contrast: self.random_contrast,
        }
    }

    /// Images per view per step, `1.5 x batch_size`.
    pub fn images_per_view(&self) -> usize {
        self.batch_size + self.batch_size / 2
    }

    /// Returns the backbone this config describes.
    pub fn backbone(&self) -> ffc_model::BackboneConfig {
        let mut backbone = ffc_model::BackboneConfig::new(self.network)
            .with_embedding_size(self.embedding_size)
            .with_input_size(self.input_size)
            .with_dropout(self.dropout);
        if let Some(widths) = self.widths {
            backbone = backbone.with_widths(widths);
        }
        backbone
    }

    /// Returns the image decoding settings of training and evaluation.
    pub fn preprocess(&self) -> ffc_data::Preprocess {
        ffc_data::Preprocess {
            height: self.input_size[0],
            width: self.input_size[1],
            channel_order: self.channel_order,
            normalization: self.normalization,
            resize: self.resize,
        }
    }

    /// Returns the margin loss over the pool.
    pub fn margin_loss(&self) -> ffc_loss::MarginLoss {
        ffc_loss::MarginLoss {
            kind: self.loss_type,
            scale: self.scale,
            margin: self.margin,
            sv_t: ffc_loss::SV_T,
            hard_negatives: ffc_loss::hard_negatives_for(self.queue_size),
        }
    }
}

fn override_value(text: &str) -> toml::Value {
    let document = format!("value = {text}");
    match document.parse::<toml::Table>() {
        Ok(mut table) => table.remove("value").expect("the document defines `value`"),
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        rec = "data/train"
        network = "r18"
        queue_size = 100
        batch_size = 8
        lr = 0.1
        num_epoch = 2
    "#;

    fn parse(text: &str, overrides: &[&str]) -> Result<TrainConfig, ConfigError> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        TrainConfig::parse(text, Path::new("test.toml"), &overrides)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL, &[]).unwrap();
        assert_eq!(config.embedding_size, 512);
        assert_eq!(config.loss_type, LossKind::Am);
        assert_eq!(config.images_per_view(), 12);
        assert!(config.rollback_pass);
    }

    #[test]
    fn overrides_replace_values() {
        let config = parse(
            MINIMAL,
            &["lr=0.05", "widths=[8, 16, 32, 64]", "rec=/data/ms1m", "loss_type=Arc"],
        )
        .unwrap();
        assert_eq!(config.lr, 0.05);
        assert_eq!(config.widths, Some([8, 16, 32, 64]));
        assert_eq!(config.rec, PathBuf::from("/data/ms1m"));
        assert_eq!(config.loss_type, LossKind::Arc);
    }

    #[test]
    fn unknown_key_names_the_key() {
        let error = parse(&format!("{MINIMAL}\nlearning_rate = 0.1"), &[]).unwrap_err();
        assert!(error.to_string().contains("learning_rate"), "{error}");
    }

    #[test]
    fn unknown_network_lists_known_names() {
        let error = parse(MINIMAL, &["network=r101"]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("r101"), "{message}");
        assert!(message.contains("r50"), "{message}");
    }

    #[test]
    fn odd_batch_size_is_rejected() {
        let error = parse(MINIMAL, &["batch_size=7"]).unwrap_err();
        assert!(error.to_string().starts_with("invalid config value `batch_size = 7`"), "{error}");
    }

    #[test]
    fn augment_settings_reach_the_loader() {
        let config = parse(MINIMAL, &["random_scale=0.1", "random_brightness=0.2"]).unwrap();
        let augment = config.augment();
        assert_eq!(augment.max_scale, 0.1);
        assert_eq!(augment.max_brightness, 0.2);
        assert_eq!(augment.max_rotation, 0.0);
        assert!(augment.flip);
    }

    #[test]
    fn out_of_range_augment_is_rejected() {
        let error = parse(MINIMAL, &["random_scale=1.5"]).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("invalid config value `random_scale = 1.5`"), "{message}");
        let error = parse(MINIMAL, &["random_rotation=-5"]).unwrap_err();
        assert!(error.to_string().contains("random_rotation"), "{error}");
    }

    #[test]
    fn override_without_equals_is_rejected() {
        let error = parse(MINIMAL, &["lr"]).unwrap_err();
        assert!(matches!(error, ConfigError::Override(_)));
    }
}
