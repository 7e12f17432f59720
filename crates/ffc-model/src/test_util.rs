//! Helpers shared by the unit tests: small configs, random inputs and a visitor that records
//! every float tensor of a module.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};

use crate::params::{ModulePath, sync_running_stats};
use crate::{BackboneConfig, NetworkKind};

/// The autodiff backend the tests train on.
pub(crate) type Ad = Autodiff<Flex>;

/// Returns an r18 config with widths `[4, 8, 8, 16]`, 32x32 inputs and 8-d embeddings.
pub(crate) fn tiny_r18() -> BackboneConfig {
    BackboneConfig::new(NetworkKind::R18)
        .with_widths([4, 8, 8, 16])
        .with_input_size([32, 32])
        .with_embedding_size(8)
}

/// Returns a MobileFaceNet config with 32x32 inputs and 8-d embeddings.
pub(crate) fn tiny_mbf() -> BackboneConfig {
    BackboneConfig::new(NetworkKind::MobileFaceNet).with_input_size([32, 32]).with_embedding_size(8)
}

/// Draws a batch of uniformly random images of the config's input size.
pub(crate) fn random_images<B: Backend>(
    config: &BackboneConfig,
    batch_size: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let [height, width] = config.input_size;
    Tensor::random([batch_size, 3, height, width], Distribution::Default, device)
}

/// One float tensor of a module, recorded by [`snapshot`].
pub(crate) struct Entry {
    pub(crate) path: String,
    pub(crate) running: bool,
    pub(crate) require_grad: bool,
    pub(crate) data: TensorData,
}

/// Records every float tensor of `module` in visiting order, after syncing running statistics.
pub(crate) fn snapshot<B: Backend, M: Module<B>>(module: &M) -> Vec<Entry> {
    sync_running_stats(module);
    let mut visitor = Snapshot { path: ModulePath::default(), entries: Vec::new() };
    module.visit(&mut visitor);
    visitor.entries
}

struct Snapshot {
    path: ModulePath,
    entries: Vec<Entry>,
}

impl<B: Backend> ModuleVisitor<B> for Snapshot {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.entries.push(Entry {
            path: self.path.to_dotted(),
            running: self.path.is_running_stat(),
            require_grad: param.is_require_grad(),
            data: param.val().to_data(),
        });
    }
}
