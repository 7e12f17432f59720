//! Seeding the backend right before `BackboneConfig::init` fixes every weight.
//!
//! This lives in its own test binary because burn-flex keeps one global random generator: tests
//! running in parallel threads of the same binary would draw from it between the seed and the
//! initialisation.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use ffc_model::{BackboneConfig, NetworkKind};

type Ad = Autodiff<Flex>;

struct Collect(Vec<TensorData>);

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().to_data());
    }
}

fn weights<B: Backend, M: Module<B>>(module: &M) -> Vec<TensorData> {
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// Seeds, builds, then draws `n_unrelated` random numbers, as a training program might before
/// the first forward pass. Weights initialised lazily, on first use, would depend on that draw.
fn seeded_weights<B: Backend>(
    config: &BackboneConfig,
    seed: u64,
    n_unrelated: usize,
) -> Vec<TensorData> {
    let device = Default::default();
    B::seed(&device, seed);
    let backbone = config.init::<B>(&device);
    if n_unrelated > 0 {
        Tensor::<B, 1>::random([n_unrelated], Distribution::Default, &device);
    }
    weights(&backbone)
}

fn assert_reproducible<B: Backend>(config: &BackboneConfig) {
    let first = seeded_weights::<B>(config, 7, 0);
    let second = seeded_weights::<B>(config, 7, 256);
    let other_seed = seeded_weights::<B>(config, 8, 0);

    assert_eq!(first.len(), second.len());
    for (tensor_idx, (a, b)) in first.iter().zip(&second).enumerate() {
        assert_eq!(a, b, "tensor {tensor_idx} differs between two runs with seed 7");
    }
    assert_ne!(first, other_seed, "seeds 7 and 8 gave the same weights");
}

#[test]
fn seeded_init_is_reproducible() {
    let r18 = BackboneConfig::new(NetworkKind::R18)
        .with_widths([4, 8, 8, 16])
        .with_input_size([32, 32])
        .with_embedding_size(8);
    let mbf = BackboneConfig::new(NetworkKind::MobileFaceNet).with_input_size([32, 32]);

    assert_reproducible::<Ad>(&r18);
    assert_reproducible::<Flex>(&r18);
    assert_reproducible::<Ad>(&mbf);
}
