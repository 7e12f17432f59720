//! Saving and loading module weights as safetensors files through burn-store.
//!
//! Tensor names are the module paths without enum variants, so a backbone's tensors read like
//! insightface's PyTorch state dict: `conv1.weight`, `layer1.0.bn2.running_var`,
//! `layer2.0.downsample.0.weight`, `fc.bias`. The leaf names are burn's: batch norms store
//! `gamma`, `beta`, `running_mean` and `running_var` (PyTorch: `weight`, `bias`, ...), PReLU
//! stores `alpha` (PyTorch: `weight`), and a linear weight is stored as `[in, out]`, the
//! transpose of PyTorch's layout. Batch-norm running statistics are saved with the weights.
//!
//! Loading is strict: every tensor of the module must be in the file with the right shape, and
//! every tensor of the file must be used.

use std::path::Path;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{ApplyResult, ModuleSnapshot, SafetensorsStore};

use crate::Backbone;
use crate::error::ModelError;
use crate::params::sync_running_stats;

/// Writes every float tensor of `module`, running statistics included, to a safetensors file
/// at `path`, replacing any existing file.
pub fn save_safetensors<B: Backend, M: Module<B>>(
    module: &M,
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    sync_running_stats(module);

    let mut store = SafetensorsStore::from_file(path).skip_enum_variants(true).overwrite(true);
    module
        .save_into(&mut store)
        .map_err(|source| ModelError::WriteWeights { path: path.to_owned(), source })?;

    tracing::debug!(path = %path.display(), "model: saved safetensors weights");
    Ok(())
}

/// Reads the safetensors file at `path` into `module`, which must have exactly the file's
/// tensors with the same shapes (build it from the config the file was saved with).
///
/// Each tensor lands on the device of the parameter it replaces, and parameters keep their ids
/// and gradient requirements. Load on the backend you will use the module with: burn does not
/// restore gradient requirements when a module loaded on a plain backend is moved to an
/// autodiff backend.
pub fn load_safetensors<B: Backend, M: Module<B>>(
    mut module: M,
    path: impl AsRef<Path>,
) -> Result<M, ModelError> {
    let path = path.as_ref();

    // Partial loads and unvalidated shapes are allowed here only so that burn-store returns
    // its full report, which is then checked below.
    let mut store = SafetensorsStore::from_file(path)
        .skip_enum_variants(true)
        .allow_partial(true)
        .validate(false);
    let result = module
        .load_from(&mut store)
        .map_err(|source| ModelError::ReadWeights { path: path.to_owned(), source })?;
    check_complete(&result, path)?;

    tracing::debug!(
        path = %path.display(),
        n_tensors = result.applied.len(),
        "model: loaded safetensors weights"
    );
    Ok(module)
}

impl<B: Backend> Backbone<B> {
    /// Writes the backbone's weights and running statistics to a safetensors file, replacing
    /// any existing file. See [`save_safetensors`].
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        save_safetensors(self, path)
    }

    /// Reads a safetensors file written by [`Backbone::save_safetensors`] into this backbone
    /// and moves the result to `device`. See [`load_safetensors`].
    pub fn load_safetensors(
        self,
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let loaded = load_safetensors(self, path)?;
        let on_device = loaded.devices().iter().all(|loaded_device| loaded_device == device);
        Ok(if on_device { loaded } else { loaded.fork(device) })
    }
}

/// Turns missing, unused or invalid tensors in a burn-store report into an error.
fn check_complete(result: &ApplyResult, path: &Path) -> Result<(), ModelError> {
    if result.missing.is_empty() && result.unused.is_empty() && result.errors.is_empty() {
        return Ok(());
    }
    Err(ModelError::WeightsMismatch {
        path: path.to_owned(),
        missing: result.missing.iter().map(|(name, _)| name.clone()).collect(),
        unused: result.unused.clone(),
        invalid: result.errors.iter().map(ToString::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::module::AutodiffModule;
    use burn::tensor::Tensor;
    use burn_store::ModuleStore;

    use super::*;
    use crate::BackboneConfig;
    use crate::test_util::{Ad, random_images, snapshot, tiny_mbf, tiny_r18};

    /// Builds a backbone and runs one training-mode forward pass, which moves its running
    /// statistics away from the initial zeros and ones.
    fn trained(config: &BackboneConfig) -> Backbone<Ad> {
        let device = Default::default();
        let backbone = config.init::<Ad>(&device);
        backbone.forward(random_images(config, 4, &device));
        backbone
    }

    fn eval_output(backbone: &Backbone<Ad>, config: &BackboneConfig) -> Vec<f32> {
        let [height, width] = config.input_size;
        let images = Tensor::<Flex, 4>::ones([2, 3, height, width], &Default::default());
        backbone.valid().forward(images).raw.into_data().to_vec().unwrap()
    }

    fn tensor_names(path: &Path) -> Vec<String> {
        SafetensorsStore::from_file(path).keys().unwrap()
    }

    fn assert_round_trip(config: &BackboneConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backbone.safetensors");
        let saved = trained(config);
        saved.save_safetensors(&path).unwrap();
        let fresh = config.init::<Ad>(&Default::default());
        assert_ne!(eval_output(&fresh, config), eval_output(&saved, config));

        let loaded = fresh.load_safetensors(&path, &Default::default()).unwrap();

        assert_eq!(eval_output(&loaded, config), eval_output(&saved, config));
        // Every weight and running statistic equals the saved one, and each parameter keeps
        // the gradient requirement it was built with (the frozen embedding scale included).
        let loaded = snapshot(&loaded);
        let saved = snapshot(&saved);
        assert_eq!(loaded.len(), saved.len());
        for (loaded, saved) in loaded.iter().zip(&saved) {
            assert_eq!(loaded.path, saved.path);
            assert_eq!(loaded.data, saved.data, "tensor `{}` differs", loaded.path);
            assert_eq!(loaded.require_grad, saved.require_grad, "at `{}`", loaded.path);
        }
    }

    #[test]
    fn r18_round_trips_through_safetensors() {
        assert_round_trip(&tiny_r18());
    }

    #[test]
    fn mbf_round_trips_through_safetensors() {
        assert_round_trip(&tiny_mbf());
    }

    #[test]
    fn tensor_names_follow_insightface_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backbone.safetensors");
        tiny_r18().init::<Flex>(&Default::default()).save_safetensors(&path).unwrap();

        let names = tensor_names(&path);

        for expected in [
            "conv1.weight",
            "bn1.gamma",
            "prelu.alpha",
            "layer1.0.bn1.running_mean",
            "layer1.0.conv2.weight",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var",
            "fc.weight",
            "fc.bias",
            "features.gamma",
            "features.beta",
        ] {
            assert!(names.iter().any(|name| name == expected), "no `{expected}` in {names:?}");
        }
    }

    #[test]
    fn save_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backbone.safetensors");
        std::fs::write(&path, b"stale").unwrap();
        let device = Default::default();

        tiny_r18().init::<Flex>(&device).save_safetensors(&path).unwrap();

        let loaded = tiny_r18().init::<Flex>(&device).load_safetensors(&path, &device);
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }

    #[test]
    fn load_other_widths_names_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r18.safetensors");
        let device = Default::default();
        tiny_r18().init::<Flex>(&device).save_safetensors(&path).unwrap();

        let wider = tiny_r18().with_widths([4, 8, 8, 32]).init::<Flex>(&device);
        let err = wider.load_safetensors(&path, &device).unwrap_err();

        let ModelError::WeightsMismatch { missing, unused, invalid, .. } = &err else {
            panic!("expected a mismatch, got {err}");
        };
        assert!(missing.is_empty(), "{missing:?}");
        assert!(unused.is_empty(), "{unused:?}");
        assert!(invalid.iter().any(|message| message.contains("'fc.weight'")), "{invalid:?}");
        let message = err.to_string();
        assert!(message.contains("r18.safetensors"), "{message}");
        assert!(message.contains("layer4.0.conv1.weight"), "{message}");
    }

    #[test]
    fn load_other_network_lists_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r18.safetensors");
        let device = Default::default();
        tiny_r18().init::<Flex>(&device).save_safetensors(&path).unwrap();

        let mbf = tiny_mbf().init::<Flex>(&device);
        let err = mbf.load_safetensors(&path, &device).unwrap_err();

        let ModelError::WeightsMismatch { missing, unused, .. } = &err else {
            panic!("expected a mismatch, got {err}");
        };
        assert!(missing.iter().any(|name| name == "conv_sep.conv.weight"), "{missing:?}");
        assert!(unused.iter().any(|name| name == "layer1.0.conv1.weight"), "{unused:?}");
    }

    #[test]
    fn load_missing_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.safetensors");
        let device = Default::default();

        let err = tiny_r18().init::<Flex>(&device).load_safetensors(&path, &device).unwrap_err();

        assert!(matches!(err, ModelError::ReadWeights { .. }), "{err:?}");
        assert!(err.to_string().contains("absent.safetensors"), "{err}");
    }

    #[test]
    fn load_corrupt_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrupt.safetensors");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let device = Default::default();

        let err = tiny_r18().init::<Flex>(&device).load_safetensors(&path, &device).unwrap_err();

        assert!(matches!(err, ModelError::ReadWeights { .. }), "{err:?}");
        assert!(err.to_string().contains("corrupt.safetensors"), "{err}");
    }
}
