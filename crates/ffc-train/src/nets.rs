//! The probe and gallery networks, the class pool and one FFC training step.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use ffc_data::Batch;
use ffc_loss::{MarginLoss, StepInputs, StepOutcome, ffc_step};
use ffc_model::{Backbone, ema_update, gallery_from_probe, materialize};
use ffc_pool::{ClassPool, PoolConfig};

use crate::config::TrainConfig;

/// The SGD optimizer of the probe network.
pub type ProbeOptimizer<B> =
    OptimizerAdaptor<Sgd<<B as AutodiffBackend>::InnerBackend>, Backbone<B>, B>;

/// Everything a training step reads and changes.
pub struct FfcState<B: AutodiffBackend> {
    /// The trained network.
    pub probe: Backbone<B>,
    /// Moving average of the probe's trainable parameters; runs with batch statistics and
    /// records no autodiff graph.
    pub gallery: Backbone<B>,
    /// The Dynamic Class Pool.
    pub pool: ClassPool<B::InnerBackend>,
    /// SGD with momentum on the probe.
    pub optimizer: ProbeOptimizer<B>,
    loss: MarginLoss,
    device: B::Device,
}

/// Losses and pool statistics of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Pass A + pass B.
    pub loss: f32,
    /// Probes of pass B whose identity was pooled.
    pub pooled_probes: usize,
    /// Probes of pass B whose identity was not pooled.
    pub outlier_probes: usize,
    /// Slots hit in pass B.
    pub hit_slots: usize,
}

/// A step whose loss is not finite; the step was not applied.
#[derive(Debug, thiserror::Error)]
#[error(
    "loss is {loss} at step {step}; the weights were not updated. Lower `lr`, check the input \
     data, or resume from the last checkpoint"
)]
pub struct NonFiniteLoss {
    /// Global step (1-based) whose loss was not finite.
    pub step: usize,
    /// The loss.
    pub loss: f32,
}

impl<B: AutodiffBackend> FfcState<B> {
    /// Builds fresh networks, pool and optimizer, drawing every random value after seeding the
    /// backend with `config.seed`.
    pub fn new(config: &TrainConfig, device: &B::Device) -> Self {
        B::seed(device, config.seed);
        let backbone = config.backbone();
        let probe: Backbone<B> = backbone.init(device);
        materialize(&probe);
        let gallery = gallery_from_probe(backbone.init(device), &probe);
        let queue_size = std::num::NonZeroUsize::new(config.queue_size)
            .expect("config validation rejects queue_size 0");
        let pool_config = PoolConfig::new(queue_size, config.embedding_size);
        let pool = ClassPool::new(&pool_config, &device.clone());
        Self {
            probe,
            gallery,
            pool,
            optimizer: optimizer(config),
            loss: config.margin_loss(),
            device: device.clone(),
        }
    }

    /// Runs one FFC step on a batch and applies the SGD update with learning rate `lr`.
    ///
    /// In the reference's order: EMA of the gallery, probe(x) and gallery(y) for pass A (rolled
    /// back), probe(y) and gallery(x) for pass B (kept), then one backward pass through both
    /// probe graphs. `step` (1-based) only names the step in errors.
    pub fn train_step(
        &mut self,
        config: &TrainConfig,
        batch: &Batch,
        lr: f64,
        step: usize,
    ) -> Result<StepStats, NonFiniteLoss> {
        let x = self.images(&batch.x, batch.images_per_view, config);
        let y = self.images(&batch.y, batch.images_per_view, config);

        let gallery = std::mem::replace(&mut self.gallery, self.probe.clone());
        self.gallery = ema_update(gallery, &self.probe, config.ema_momentum);

        let (probe_x, gallery_y) = if config.rollback_pass {
            let probe_x = self.probe.forward(x.clone()).normalized; // [n, D]
            let gallery_y = self.gallery.forward(y.clone()).normalized.detach().inner();
            (Some(probe_x), Some(gallery_y))
        } else {
            (None, None)
        };
        let probe_y = self.probe.forward(y).normalized; // [n, D]
        let gallery_x = self.gallery.forward(x).normalized.detach().inner();

        let inputs = StepInputs {
            probe_x: probe_x
                .as_ref()
                .map_or_else(|| probe_y.clone().detach().inner(), |p| p.clone().detach().inner()),
            probe_y: probe_y.clone().detach().inner(),
            gallery_x: gallery_x.clone(),
            gallery_y: gallery_y.unwrap_or(gallery_x),
            x_labels: batch.x_labels.clone(),
            y_labels: batch.y_labels.clone(),
        };
        let outcome: StepOutcome<B::InnerBackend> =
            ffc_step(&mut self.pool, &self.loss, inputs, config.rollback_pass);
        if !outcome.loss.is_finite() {
            return Err(NonFiniteLoss { step, loss: outcome.loss });
        }

        let mut surrogate = (probe_y * Tensor::from_inner(outcome.grad_probe_y)).sum();
        if let (Some(probe_x), Some(grad)) = (probe_x, outcome.grad_probe_x) {
            surrogate = surrogate + (probe_x * Tensor::from_inner(grad)).sum();
        }
        let grads = GradientsParams::from_grads(surrogate.backward(), &self.probe);
        let probe = self.probe.clone();
        self.probe = self.optimizer.step(lr, probe, grads);

        let slots = &outcome.pass_b.probe_slots;
        let pooled = slots.iter().filter(|&&slot| slot >= 0).count();
        Ok(StepStats {
            loss: outcome.loss,
            pooled_probes: pooled,
            outlier_probes: slots.len() - pooled,
            hit_slots: outcome.pass_b.insertion.hit_slots.len(),
        })
    }

    /// Returns the probe network for evaluation: inner backend, running batch-norm statistics.
    pub fn eval_net(&self) -> Backbone<B::InnerBackend> {
        self.probe.valid()
    }

    /// Returns the device of the networks and the pool.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    fn images(&self, values: &[f32], count: usize, config: &TrainConfig) -> Tensor<B, 4> {
        let [height, width] = config.input_size;
        let data = TensorData::new(values.to_vec(), [count, 3, height, width]);
        Tensor::from_data(data, &self.device)
    }
}

/// Builds SGD with the config's momentum (dampening 0, as PyTorch), Nesterov and weight decay.
pub fn optimizer<B: AutodiffBackend>(config: &TrainConfig) -> ProbeOptimizer<B> {
    let momentum = MomentumConfig::new()
        .with_momentum(config.momentum)
        .with_dampening(0.0)
        .with_nesterov(config.nesterov);
    let momentum = (config.momentum > 0.0).then_some(momentum);
    let decay =
        (config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32));
    SgdConfig::new().with_momentum(momentum).with_weight_decay(decay).init::<B, Backbone<B>>()
}
