//! The error type of this crate: invalid backbone configs and safetensors weight files that
//! cannot be written, read or matched to a backbone.

use std::path::PathBuf;

use burn_store::SafetensorsStoreError;

/// Errors raised while validating a [`BackboneConfig`](crate::BackboneConfig) or while saving and
/// loading weights.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A config field has a value that no backbone can be built from.
    #[error("invalid backbone config: `{field}` = `{value}` {reason}")]
    InvalidConfig {
        /// Name of the field, as spelled in config files.
        field: &'static str,
        /// The rejected value, formatted for the message.
        value: String,
        /// The condition that the value must satisfy instead.
        reason: &'static str,
    },

    /// Writing a safetensors file failed.
    #[error("failed to write weights to `{path}`")]
    WriteWeights {
        /// The file that was being written.
        path: PathBuf,
        /// The error reported by burn-store.
        #[source]
        source: SafetensorsStoreError,
    },

    /// Reading or parsing a safetensors file failed.
    #[error("failed to read weights from `{path}`")]
    ReadWeights {
        /// The file that was being read.
        path: PathBuf,
        /// The error reported by burn-store.
        #[source]
        source: SafetensorsStoreError,
    },

    /// The tensors in a safetensors file do not match the module they were loaded into.
    #[error(
        "weights in `{path}` do not match the model: missing tensors [{}], unused tensors [{}], \
         invalid tensors [{}] (build the model from the config the file was saved with)",
        .missing.join(", "),
        .unused.join(", "),
        .invalid.join("; ")
    )]
    WeightsMismatch {
        /// The file that was read.
        path: PathBuf,
        /// Tensors the model expects that the file lacks.
        missing: Vec<String>,
        /// Tensors in the file that the model has no place for.
        unused: Vec<String>,
        /// Tensors found under the right name but with a wrong shape or data type.
        invalid: Vec<String>,
    },
}
