//! IResNet ("improved ResNet"), the ArcFace backbone family: r18, r34, r50 and r100.
//!
//! The layout follows insightface's `iresnet.py`, and the field names follow its PyTorch
//! attribute names, so tensor paths read `layer2.0.downsample.1.running_mean`:
//!
//! - stem: 3x3 convolution (stride 1) → batch norm → PReLU;
//! - four stages of [`IBasicBlock`]s whose first block has stride 2, so the spatial size halves
//!   four times (112 → 7);
//! - head: batch norm → flatten → dropout → linear → 1-D batch norm whose scale γ is frozen at 1
//!   (it never requires gradients) while its shift β trains.
//!
//! Convolution weights start from N(0, 0.1²) as in insightface; batch norms start at γ = 1,
//! β = 0; the linear layer uses burn's default, U(-1/√fan_in, 1/√fan_in), which matches
//! PyTorch's default for `nn.Linear`.

use burn::module::{Initializer, Module, Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, DropoutConfig, Linear, LinearConfig, PRelu};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::BackboneConfig;
use crate::layers::{ConvSpec, batch_norm, prelu};

/// Standard deviation of the normal distribution that convolution weights are drawn from.
const CONV_INIT_STD: f64 = 0.1;

/// An IResNet backbone. Build it through [`BackboneConfig::init`](crate::BackboneConfig::init).
#[derive(Module, Debug)]
pub struct IResNet<B: Backend> {
    conv1: Conv2d<B>,
    bn1: BatchNorm<B>,
    prelu: PRelu<B>,
    layer1: Vec<IBasicBlock<B>>,
    layer2: Vec<IBasicBlock<B>>,
    layer3: Vec<IBasicBlock<B>>,
    layer4: Vec<IBasicBlock<B>>,
    bn2: BatchNorm<B>,
    dropout: Dropout,
    fc: Linear<B>,
    /// Embedding batch norm, whose γ is a constant 1 that never requires gradients.
    features: BatchNorm<B>,
}

/// The pre-activation residual block of IResNet:
/// batch norm → 3x3 conv → batch norm → PReLU → 3x3 conv (stride) → batch norm, plus a shortcut.
///
/// The shortcut is the identity, or a strided 1x1 convolution and batch norm when the block
/// changes the stride or the width. Nothing follows the addition.
#[derive(Module, Debug)]
pub struct IBasicBlock<B: Backend> {
    bn1: BatchNorm<B>,
    conv1: Conv2d<B>,
    bn2: BatchNorm<B>,
    prelu: PRelu<B>,
    conv2: Conv2d<B>,
    bn3: BatchNorm<B>,
    /// The 1x1 convolution and batch norm of a projecting shortcut. A tuple makes the tensor
    /// paths read `downsample.0` and `downsample.1`, as in insightface.
    downsample: Option<(Conv2d<B>, BatchNorm<B>)>,
}

impl<B: Backend> IResNet<B> {
    /// Builds the network described by `config`, which must name an IResNet and be valid.
    pub(crate) fn new(config: &BackboneConfig, device: &B::Device) -> Self {
        let n_blocks = config
            .network
            .iresnet_blocks()
            .unwrap_or_else(|| panic!("network `{}` is not an IResNet", config.network));
        let widths = config.stage_widths();
        let initializer = conv_initializer();

        let in_channels = [widths[0], widths[0], widths[1], widths[2]];
        let [layer1, layer2, layer3, layer4] = [0, 1, 2, 3].map(|stage_idx| {
            let channels = [in_channels[stage_idx], widths[stage_idx]];
            stage(channels, n_blocks[stage_idx], &initializer, device)
        });

        let [height, width] = config.final_spatial_size();
        let fc_inputs = widths[3] * height * width;
        Self {
            conv1: ConvSpec::square([3, widths[0]], 3, 1).init(&initializer, device),
            bn1: batch_norm(widths[0], device),
            prelu: prelu(widths[0], device),
            layer1,
            layer2,
            layer3,
            layer4,
            bn2: batch_norm(widths[3], device),
            dropout: DropoutConfig::new(config.dropout).init(),
            fc: LinearConfig::new(fc_inputs, config.embedding_size).init(device),
            features: frozen_scale_batch_norm(config.embedding_size, device),
        }
    }

    /// Computes the raw (not normalised) embeddings of a batch of images.
    ///
    /// # Shapes
    ///
    /// - `images`: `[batch_size, 3, height, width]`, with the config's input size
    /// - output: `[batch_size, embedding_size]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.conv1.forward(images);
        let x = self.bn1.forward(x);
        let x = self.prelu.forward(x);

        let stages = [&self.layer1, &self.layer2, &self.layer3, &self.layer4];
        let x = stages.into_iter().flatten().fold(x, |x, block| block.forward(x));
        // [batch_size, widths[3], height / 16, width / 16]

        let x = self.bn2.forward(x);
        let x: Tensor<B, 2> = x.flatten(1, 3);
        let x = self.dropout.forward(x);
        let x = self.fc.forward(x);
        self.features.forward(x)
        // [batch_size, embedding_size]
    }
}

impl<B: Backend> IBasicBlock<B> {
    fn new(
        channels: [usize; 2],
        stride: usize,
        initializer: &Initializer,
        device: &B::Device,
    ) -> Self {
        let [in_channels, out_channels] = channels;
        let downsample = (stride != 1 || in_channels != out_channels).then(|| {
            let conv = ConvSpec::square(channels, 1, stride).init(initializer, device);
            (conv, batch_norm(out_channels, device))
        });

        Self {
            bn1: batch_norm(in_channels, device),
            conv1: ConvSpec::square(channels, 3, 1).init(initializer, device),
            bn2: batch_norm(out_channels, device),
            prelu: prelu(out_channels, device),
            conv2: ConvSpec::square([out_channels; 2], 3, stride).init(initializer, device),
            bn3: batch_norm(out_channels, device),
            downsample,
        }
    }

    /// Applies the block.
    ///
    /// # Shapes
    ///
    /// - `x`: `[batch_size, in_channels, height, width]`
    /// - output: `[batch_size, out_channels, height / stride, width / stride]`, rounded up
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(conv.forward(x.clone())),
            None => x.clone(),
        };

        let x = self.bn1.forward(x);
        let x = self.conv1.forward(x);
        let x = self.bn2.forward(x);
        let x = self.prelu.forward(x);
        let x = self.conv2.forward(x);
        let x = self.bn3.forward(x);
        x + shortcut
    }
}

/// Builds one stage: `n_blocks` blocks, the first with stride 2 and the width change.
fn stage<B: Backend>(
    channels: [usize; 2],
    n_blocks: usize,
    initializer: &Initializer,
    device: &B::Device,
) -> Vec<IBasicBlock<B>> {
    let width = channels[1];
    (0..n_blocks)
        .map(|block_idx| match block_idx {
            0 => IBasicBlock::new(channels, 2, initializer, device),
            _ => IBasicBlock::new([width, width], 1, initializer, device),
        })
        .collect()
}

fn conv_initializer() -> Initializer {
    Initializer::Normal { mean: 0.0, std: CONV_INIT_STD }
}

/// Builds a 1-D batch norm whose γ is a constant 1 that does not require gradients.
///
/// A tensor made by `Tensor::ones` does not require gradients, so the optimizer never updates
/// it. β stays a trainable parameter.
fn frozen_scale_batch_norm<B: Backend>(n_features: usize, device: &B::Device) -> BatchNorm<B> {
    let mut bn = batch_norm(n_features, device);
    bn.gamma = Param::initialized(ParamId::new(), Tensor::ones([n_features], device));
    bn
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::module::AutodiffModule;

    use super::*;
    use crate::test_util::{Ad, random_images, tiny_r18};
    use crate::{Backbone, NetworkKind};

    fn iresnet<B: Backend>(config: &BackboneConfig, device: &B::Device) -> IResNet<B> {
        match config.init::<B>(device) {
            Backbone::IResNet(net) => net,
            Backbone::MobileFaceNet(_) => panic!("expected an IResNet"),
        }
    }

    #[test]
    fn stages_match_configured_blocks() {
        let config = BackboneConfig::new(NetworkKind::R34).with_widths([2, 4, 4, 8]);
        let net = iresnet::<Flex>(&config, &Default::default());
        let stages = [&net.layer1, &net.layer2, &net.layer3, &net.layer4];

        let lengths = stages.map(|stage| stage.len());
        assert_eq!(lengths, [3, 4, 6, 3]);
        for stage in stages {
            // Every stage starts with stride 2, so its first block needs a shortcut projection.
            assert!(stage[0].downsample.is_some());
            assert!(stage[1..].iter().all(|block| block.downsample.is_none()));
        }
    }

    #[test]
    fn linear_head_follows_input_size() {
        let config = tiny_r18().with_input_size([64, 48]);
        let net = iresnet::<Flex>(&config, &Default::default());

        // 64x48 → 4x3 after four stride-2 stages, times 16 channels.
        assert_eq!(net.fc.weight.dims(), [16 * 4 * 3, 8]);
    }

    #[test]
    fn forward_maps_images_to_embeddings() {
        let device = Default::default();
        let config = tiny_r18().with_input_size([32, 40]);
        let net = iresnet::<Flex>(&config, &device);
        let images = random_images(&config, 3, &device);

        assert_eq!(net.forward(images).dims(), [3, 8]);
    }

    #[test]
    fn embedding_scale_is_frozen() {
        let device = Default::default();
        let net = iresnet::<Ad>(&tiny_r18(), &device);
        let images = random_images::<Ad>(&tiny_r18(), 4, &device);

        let grads = net.forward(images).sum().backward();

        assert!(!net.features.gamma.is_require_grad());
        assert!(net.features.gamma.grad(&grads).is_none());
        assert!(net.features.beta.grad(&grads).is_some());
        assert!(net.fc.weight.grad(&grads).is_some());
        assert!(net.conv1.weight.grad(&grads).is_some());
    }

    #[test]
    fn narrow_r18_at_64px_backpropagates() {
        let device = Default::default();
        let config = BackboneConfig::new(NetworkKind::R18)
            .with_widths([16, 32, 64, 128])
            .with_input_size([64, 64]);
        let net = iresnet::<Ad>(&config, &device);

        let output = net.forward(random_images::<Ad>(&config, 2, &device));
        let grads = output.clone().sum().backward();

        assert_eq!(output.dims(), [2, 512]);
        assert_eq!(net.fc.weight.dims(), [128 * 4 * 4, 512]);
        assert!(net.layer4[1].conv2.weight.grad(&grads).is_some());
    }

    #[test]
    fn frozen_scale_survives_valid_and_back() {
        let net = iresnet::<Ad>(&tiny_r18(), &Default::default());

        let round_trip = IResNet::<Ad>::from_inner(net.valid());

        assert!(!round_trip.features.gamma.is_require_grad());
        assert!(round_trip.features.beta.is_require_grad());
    }

    #[test]
    fn conv_weights_follow_insightface_init() {
        let config = BackboneConfig::new(NetworkKind::R18).with_widths([64, 8, 8, 8]);
        let net = iresnet::<Flex>(&config, &Default::default());
        // layer1.0.conv1 has 64 * 64 * 9 = 36 864 weights drawn from N(0, 0.1²).
        let weights: Tensor<Flex, 1> = net.layer1[0].conv1.weight.val().flatten(0, 3);

        let mean: f32 = weights.clone().mean().into_scalar();
        let std: f32 = weights.var(0).sqrt().into_scalar();
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((std - 0.1).abs() < 0.005, "std {std}");
    }
}
