//! Face-recognition backbones for ffc on burn: IResNet (r18, r34, r50, r100) and
//! MobileFaceNet (mbf), generic over the burn backend.
//!
//! A [`BackboneConfig`] names the network as insightface does and builds a [`Backbone`] on a
//! device. [`Backbone::forward`] maps images `[batch_size, 3, height, width]` to an
//! [`Embedding`] holding the raw `[batch_size, embedding_size]` output and its L2-normalised
//! rows. The crate also provides what FFC's gallery network needs: [`ema_update`] over
//! trainable parameters only and [`gallery_from_probe`] / [`no_grad`] for a train-mode module
//! without gradients. Weights are saved and loaded as safetensors files
//! ([`Backbone::save_safetensors`], [`Backbone::load_safetensors`]).
//!
//! Batch norm follows burn's convention. On an autodiff backend it normalises with batch
//! statistics and updates its running statistics. On a plain backend, for example after
//! `AutodiffModule::valid`, it normalises with the running statistics.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Distribution, Tensor};
//! use ffc_model::{BackboneConfig, NetworkKind};
//!
//! let device = Default::default();
//! let config = BackboneConfig::new(NetworkKind::R18)
//!     .with_widths([8, 8, 16, 16])
//!     .with_input_size([32, 32])
//!     .with_embedding_size(64);
//! let backbone = config.init::<Flex>(&device);
//!
//! let images = Tensor::<Flex, 4>::random([2, 3, 32, 32], Distribution::Default, &device);
//! let embedding = backbone.forward(images);
//!
//! assert_eq!(embedding.raw.dims(), [2, 64]);
//! assert_eq!(embedding.normalized.dims(), [2, 64]);
//! ```

mod backbone;
mod config;
mod error;
pub mod iresnet;
mod layers;
pub mod mobilefacenet;
mod params;
#[cfg(test)]
mod test_util;
mod weights;

pub use backbone::{Backbone, Embedding, NORM_EPSILON};
pub use config::{BackboneConfig, NetworkKind};
pub use error::ModelError;
pub use iresnet::IResNet;
pub use mobilefacenet::MobileFaceNet;
pub use params::{
    ParamCounts, count_params, ema_update, gallery_from_probe, materialize, no_grad,
    sync_running_stats,
};
pub use weights::{load_safetensors, save_safetensors};
