//! Parameter utilities that work on any burn module: eager initialisation, parameter counts,
//! the exponential moving average (EMA) that FFC uses for its gallery network, and turning off
//! gradient tracking for that network.
//!
//! burn visits batch-norm running statistics (`RunningState` fields) as float parameters, just
//! like trainable weights. The functions here tell the two apart by the module path: a running
//! statistic is a field named `running_mean` or `running_var` of a `BatchNorm`.
//!
//! NOTE: In burn 0.21 `BatchNorm` is the only module with running statistics. A custom module
//! that keeps its own `RunningState` under another name would be treated as trainable here.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

/// Container type that burn's `Module` derive reports for a `BatchNorm` field.
const BATCH_NORM_CONTAINER: &str = "Struct:BatchNorm";

/// Field names of the running statistics inside burn's `BatchNorm`.
const RUNNING_STAT_FIELDS: [&str; 2] = ["running_mean", "running_var"];

/// Number of scalars in a module, split as PyTorch would count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCounts {
    /// Scalars in learnable parameters, frozen ones included (PyTorch's `parameters()`).
    pub parameters: usize,
    /// Scalars in batch-norm running means and variances (PyTorch buffers).
    pub running_stats: usize,
}

impl ParamCounts {
    /// Returns the number of all scalars, which equals burn's `Module::num_params` because
    /// that counts running statistics too.
    pub fn total(&self) -> usize {
        self.parameters + self.running_stats
    }
}

/// Draws the value of every lazily initialised parameter of `module` now.
///
/// burn defers a parameter's random initialisation until its first use, so without this call
/// the weights depend on whatever random operations run in between. After
/// `B::seed(&device, seed)` followed by building a module and calling this, the weights depend
/// only on the seed.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    module.visit(&mut Materializer);
}

/// Counts the scalars of `module`, telling learnable parameters from running statistics.
///
/// It reads shapes only and does not initialise lazy parameters.
pub fn count_params<B: Backend, M: Module<B>>(module: &M) -> ParamCounts {
    let mut counter = ParamCounter {
        path: ModulePath::default(),
        counts: ParamCounts { parameters: 0, running_stats: 0 },
    };
    module.visit(&mut counter);
    counter.counts
}

/// Moves the parameters of `gallery` towards those of `probe`:
/// `g ← momentum · g + (1 − momentum) · p` for every float parameter except batch-norm running
/// statistics, which the gallery keeps as they are.
///
/// This is FFC's gallery-network update, with momentum 0.99 in the official FFC code. Frozen
/// parameters, such as the IResNet embedding batch norm's γ, are averaged too because they are
/// equal in both networks. The result is detached from any autodiff graph and keeps each
/// gallery parameter's gradient requirement and id.
///
/// # Panics
///
/// Panics if `momentum` is outside `[0, 1]`, or if the two modules do not have the same
/// parameter paths and shapes (they must be built from the same config).
pub fn ema_update<B: Backend, M: Module<B>>(gallery: M, probe: &M, momentum: f64) -> M {
    assert!((0.0..=1.0).contains(&momentum), "EMA momentum must lie in [0, 1], got {momentum}");

    let mut collector = ProbeCollector { path: ModulePath::default(), params: Vec::new() };
    probe.visit(&mut collector);

    let mut updater = EmaUpdater {
        path: ModulePath::default(),
        probe_params: collector.params.into_iter(),
        momentum,
    };
    let gallery = gallery.map(&mut updater);
    if let Some(extra) = updater.probe_params.next() {
        panic!("EMA probe module has parameter `{}` that the gallery module lacks", extra.path);
    }
    gallery
}

/// Stops every parameter of `module` from requiring gradients, on an autodiff backend.
///
/// This is how FFC runs its gallery network. The module stays on the autodiff backend, so its
/// batch norms still normalise with batch statistics and update their own running statistics.
/// No autodiff graph is recorded for its parameters, so they never receive gradients. Use
/// `AutodiffModule::valid` instead for evaluation with running statistics.
pub fn no_grad<B: AutodiffBackend, M: AutodiffModule<B>>(module: M) -> M {
    module.no_grad()
}

/// Builds FFC's gallery network from the probe network.
///
/// `fresh` must be a newly built module with the probe's config (for example
/// `config.init(&device)`). It takes the probe's learnable parameters, keeps its own fresh
/// batch-norm running statistics and its own parameter ids, and stops requiring gradients.
///
/// Cloning the probe instead would not work: a clone shares the batch-norm running statistics
/// with the original, so every gallery forward pass would update the probe's statistics.
pub fn gallery_from_probe<B: AutodiffBackend, M: AutodiffModule<B>>(fresh: M, probe: &M) -> M {
    no_grad(ema_update(fresh, probe, 0.0))
}

/// Folds the pending batch-norm running-statistic updates of `module` into the values that
/// visitors, mappers and burn-store see.
///
/// `RunningState` keeps the update of the latest forward pass per thread and merges it only at
/// the next update or on `into_record` / `valid`, so without this call a visitor reads values
/// one forward pass old. Clones share the running-state storage, so recording a clone syncs
/// `module` itself.
pub fn sync_running_stats<B: Backend, M: Module<B>>(module: &M) {
    drop(module.clone().into_record());
}

/// The dotted module path of the parameter being visited, with each level's container type.
#[derive(Default)]
pub(crate) struct ModulePath {
    levels: Vec<(String, String)>,
}

impl ModulePath {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.levels.push((name.to_owned(), container_type.to_owned()));
    }

    pub(crate) fn exit(&mut self) {
        self.levels.pop();
    }

    pub(crate) fn to_dotted(&self) -> String {
        let names: Vec<&str> = self.levels.iter().map(|(name, _)| name.as_str()).collect();
        names.join(".")
    }

    /// Returns true if the current parameter is a batch-norm running mean or variance.
    pub(crate) fn is_running_stat(&self) -> bool {
        self.levels.last().is_some_and(|(name, container_type)| {
            container_type == BATCH_NORM_CONTAINER && RUNNING_STAT_FIELDS.contains(&name.as_str())
        })
    }
}

struct Materializer;

impl<B: Backend> ModuleVisitor<B> for Materializer {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        param.val();
    }
}

struct ParamCounter {
    path: ModulePath,
    counts: ParamCounts,
}

impl<B: Backend> ModuleVisitor<B> for ParamCounter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n_scalars = param.lazy_shape().num_elements();
        if self.path.is_running_stat() {
            self.counts.running_stats += n_scalars;
        } else {
            self.counts.parameters += n_scalars;
        }
    }
}

/// One float parameter of the probe module, in visiting order.
struct ProbeParam<B: Backend> {
    path: String,
    dims: Vec<usize>,
    /// Detached and flattened value; `None` for a running statistic, which the EMA skips.
    value: Option<Tensor<B, 1>>,
}

struct ProbeCollector<B: Backend> {
    path: ModulePath,
    params: Vec<ProbeParam<B>>,
}

impl<B: Backend> ModuleVisitor<B> for ProbeCollector<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let dims = tensor.dims().to_vec();
        let value = (!self.path.is_running_stat()).then(|| tensor.detach().flatten(0, D - 1));
        self.params.push(ProbeParam { path: self.path.to_dotted(), dims, value });
    }
}

struct EmaUpdater<B: Backend> {
    path: ModulePath,
    probe_params: std::vec::IntoIter<ProbeParam<B>>,
    momentum: f64,
}

impl<B: Backend> ModuleMapper<B> for EmaUpdater<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = self.path.to_dotted();
        let probe = self.probe_params.next().unwrap_or_else(|| {
            panic!("EMA gallery module has parameter `{path}` that the probe module lacks")
        });
        assert_eq!(probe.path, path, "EMA gallery and probe modules differ in parameter order");

        let Some(probe_value) = probe.value else {
            return param;
        };
        let (id, gallery_value, mapper) = param.consume();
        assert_eq!(
            probe.dims,
            gallery_value.dims(),
            "EMA gallery and probe shapes differ at parameter `{path}`"
        );

        let require_grad = gallery_value.is_require_grad();
        let probe_value =
            probe_value.to_device(&gallery_value.device()).reshape(gallery_value.shape());
        let averaged = gallery_value.detach().mul_scalar(self.momentum)
            + probe_value.mul_scalar(1.0 - self.momentum);
        // `detach` makes the result a leaf again, which autodiff needs before it can be tracked.
        let averaged = averaged.detach().set_require_grad(require_grad);
        Param::from_mapped_value(id, averaged, mapper)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{TensorData, Tolerance};

    use super::*;
    use crate::test_util::{Ad, Entry, random_images, snapshot, tiny_r18};
    use crate::{Backbone, BackboneConfig, NetworkKind};

    /// Builds a probe and runs one forward pass, so its running statistics differ from a fresh
    /// module's as they would after training.
    fn trained_probe(config: &BackboneConfig) -> Backbone<Ad> {
        let device = Default::default();
        let probe = config.init::<Ad>(&device);
        probe.forward(random_images(config, 4, &device));
        probe
    }

    #[test]
    fn counts_match_hand_computed_r50() {
        // IResNet-50 at 112x112 with widths [64, 128, 256, 512] and a 512-d embedding.
        // A block with `i` input and `w` output channels has bn1 2i, conv1 9iw, bn2 2w,
        // prelu w, conv2 9w² and bn3 2w. The first block of a stage adds a shortcut
        // projection: a 1x1 conv iw and a bn 2w. Learnable parameters:
        //   stem: conv 3*64*9 = 1 728, bn 2*64, prelu 64                    =      1 920
        //   layer1: 3 blocks, 64 → 64                                       =    223 104
        //   layer2: 4 blocks, 64 → 128                                      =  1 119 872
        //   layer3: 14 blocks, 128 → 256                                    = 15 838 976
        //   layer4: 3 blocks, 256 → 512                                     = 13 126 656
        //   head: bn2 2*512, fc 512*7*7*512 + 512, features 2*512           = 13 280 320
        //   total                                                           = 43 590 848
        // which is insightface's 43.6 M for r50. The running statistics are a mean and a
        // variance for each of the 19 072 batch-norm channels: 38 144.
        let backbone = BackboneConfig::new(NetworkKind::R50).init::<Flex>(&Default::default());

        let counts = count_params(&backbone);

        assert_eq!(counts, ParamCounts { parameters: 43_590_848, running_stats: 38_144 });
        assert_eq!(backbone.num_params(), counts.total());
    }

    #[test]
    fn counts_match_hand_computed_r100() {
        // The r50 formula with [3, 13, 30, 3] blocks. Layer2 grows to 13 blocks (3 849 984)
        // and layer3 to 30 blocks (33 549 312), while the rest is unchanged. That gives
        // 65 156 160 learnable parameters (insightface: 65.2 M) and 2 * 34 816 = 69 632
        // running statistics.
        let backbone = BackboneConfig::new(NetworkKind::R100).init::<Flex>(&Default::default());

        let counts = count_params(&backbone);

        assert_eq!(counts, ParamCounts { parameters: 65_156_160, running_stats: 69_632 });
        assert_eq!(backbone.num_params(), counts.total());
    }

    #[test]
    fn counts_match_hand_computed_mbf() {
        // MobileFaceNet at 112x112 with a 128-d embedding has 1 003 136 learnable parameters,
        // the "0.99 M" of the MobileFaceNet paper. A 512-d embedding grows the last 1x1
        // convolution and its batch norm by 384 * (512 + 2), giving 1 200 512. The running
        // statistics cover 9 792 and 10 176 batch-norm channels.
        let device = Default::default();
        let config = BackboneConfig::new(NetworkKind::MobileFaceNet);
        let mbf128 = config.clone().with_embedding_size(128).init::<Flex>(&device);
        let mbf512 = config.init::<Flex>(&device);

        let counts128 = count_params(&mbf128);
        let counts512 = count_params(&mbf512);

        assert_eq!(counts128, ParamCounts { parameters: 1_003_136, running_stats: 19_584 });
        assert_eq!(counts512, ParamCounts { parameters: 1_200_512, running_stats: 20_352 });
        assert_eq!(mbf512.num_params(), counts512.total());
    }

    #[test]
    fn running_stats_are_recognised_by_path() {
        let entries = snapshot(&tiny_r18().init::<Flex>(&Default::default()));

        let running: Vec<&str> =
            entries.iter().filter(|entry| entry.running).map(|entry| entry.path.as_str()).collect();
        assert!(running.contains(&"IResNet.bn1.running_mean"), "{running:?}");
        assert!(running.contains(&"IResNet.layer2.0.downsample.1.running_var"), "{running:?}");
        let is_stat =
            |path: &&str| path.ends_with(".running_mean") || path.ends_with(".running_var");
        assert!(running.iter().all(is_stat), "{running:?}");
        let n_batch_norms = entries.iter().filter(|entry| entry.path.ends_with(".beta")).count();
        assert_eq!(running.len(), 2 * n_batch_norms);
    }

    #[test]
    fn only_embedding_scale_is_frozen() {
        let entries = snapshot(&tiny_r18().init::<Ad>(&Default::default()));

        let no_grad: Vec<&str> = entries
            .iter()
            .filter(|entry| !entry.running && !entry.require_grad)
            .map(|entry| entry.path.as_str())
            .collect();
        assert_eq!(no_grad, ["IResNet.features.gamma"]);
        assert!(entries.iter().filter(|entry| entry.running).all(|entry| !entry.require_grad));
    }

    #[test]
    fn ema_zero_momentum_copies_parameters() {
        let config = tiny_r18();
        let probe = trained_probe(&config);
        let gallery = config.init::<Ad>(&Default::default());
        let gallery_before = snapshot(&gallery);

        let gallery = ema_update(gallery, &probe, 0.0);

        let entries = snapshot(&gallery).into_iter().zip(gallery_before).zip(snapshot(&probe));
        for ((after, before), probe) in entries {
            let path = &after.path;
            if after.running {
                assert_eq!(after.data, before.data, "running statistic `{path}` changed");
                assert_ne!(after.data, probe.data, "running statistic `{path}` was copied");
            } else {
                assert_eq!(after.data, probe.data, "parameter `{path}` was not copied");
            }
        }
    }

    #[test]
    fn ema_half_momentum_gives_midpoint() {
        let config = tiny_r18();
        let probe = trained_probe(&config);
        let gallery = config.init::<Ad>(&Default::default());
        let gallery_before = snapshot(&gallery);

        let gallery = ema_update(gallery, &probe, 0.5);

        let entries = snapshot(&gallery).into_iter().zip(gallery_before).zip(snapshot(&probe));
        for ((after, before), probe) in entries {
            if after.running {
                assert_eq!(after.data, before.data, "running statistic `{}` changed", after.path);
                continue;
            }
            let before: Vec<f32> = before.data.to_vec().unwrap();
            let probe: Vec<f32> = probe.data.to_vec().unwrap();
            let midpoint: Vec<f32> =
                before.iter().zip(&probe).map(|(g, p)| 0.5 * (g + p)).collect();
            let midpoint = TensorData::new(midpoint, after.data.shape.clone());
            after.data.assert_approx_eq::<f32>(&midpoint, Tolerance::default());
        }
    }

    #[test]
    fn ema_keeps_ids_and_require_grad() {
        let config = tiny_r18();
        let probe = trained_probe(&config);
        let trainable_gallery = config.init::<Ad>(&Default::default());
        let frozen_gallery = no_grad(config.init::<Ad>(&Default::default()));
        let ids_before = burn::module::list_param_ids(&trainable_gallery);
        let require_grad_before: Vec<bool> =
            snapshot(&trainable_gallery).iter().map(|entry| entry.require_grad).collect();

        let trainable_gallery = ema_update(trainable_gallery, &probe, 0.9);
        let frozen_gallery = ema_update(frozen_gallery, &probe, 0.9);

        assert_eq!(burn::module::list_param_ids(&trainable_gallery), ids_before);
        let require_grad: Vec<bool> =
            snapshot(&trainable_gallery).iter().map(|entry| entry.require_grad).collect();
        assert_eq!(require_grad, require_grad_before);
        assert!(snapshot(&frozen_gallery).iter().all(|entry| !entry.require_grad));
    }

    #[test]
    #[should_panic = "EMA momentum must lie in [0, 1], got 1.5"]
    fn ema_rejects_momentum_above_one() {
        let backbone = tiny_r18().init::<Flex>(&Default::default());
        ema_update(backbone.clone(), &backbone, 1.5);
    }

    #[test]
    #[should_panic = "EMA gallery and probe shapes differ at parameter `IResNet.conv1.weight`"]
    fn ema_rejects_other_widths() {
        let device = Default::default();
        let gallery = tiny_r18().init::<Flex>(&device);
        let probe = tiny_r18().with_widths([8, 8, 8, 16]).init::<Flex>(&device);
        ema_update(gallery, &probe, 0.5);
    }

    #[test]
    fn gallery_uses_batch_stats_without_grads() {
        let device = Default::default();
        let config = tiny_r18();
        let probe = config.init::<Ad>(&device);
        let gallery = gallery_from_probe(config.init::<Ad>(&device), &probe);
        let probe_before = snapshot(&probe);
        let gallery_before = snapshot(&gallery);
        let images = random_images::<Ad>(&config, 4, &device);

        let embedding = gallery.forward(images.clone());

        assert!(!embedding.raw.is_require_grad());
        assert!(snapshot(&gallery).iter().all(|entry| !entry.require_grad));
        let n_changed_stats = |before: &[Entry], after: Vec<Entry>| {
            let pairs = before.iter().zip(after);
            pairs.filter(|(before, after)| before.running && before.data != after.data).count()
        };
        // Train mode: the gallery's own running statistics moved and the probe's did not.
        assert!(n_changed_stats(&gallery_before, snapshot(&gallery)) > 0);
        assert_eq!(n_changed_stats(&probe_before, snapshot(&probe)), 0);
        // Batch statistics differ from the running statistics that `valid` normalises with.
        let eval = gallery.valid().forward(images.inner());
        let train: Vec<f32> = embedding.raw.into_data().to_vec().unwrap();
        let eval: Vec<f32> = eval.raw.into_data().to_vec().unwrap();
        assert_ne!(train, eval);
    }

    #[test]
    fn gallery_copies_probe_parameters() {
        let device = Default::default();
        let config = tiny_r18();
        let probe = trained_probe(&config);

        let gallery = gallery_from_probe(config.init::<Ad>(&device), &probe);

        for (gallery, probe) in snapshot(&gallery).into_iter().zip(snapshot(&probe)) {
            if !gallery.running {
                assert_eq!(gallery.data, probe.data, "parameter `{}` differs", gallery.path);
            }
        }
    }
}
