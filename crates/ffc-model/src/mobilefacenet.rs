//! MobileFaceNet, from "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face Verification"
//! (Chen et al., 2018), the small backbone of the official FFC code.
//!
//! Layout, for a 112x112 input:
//!
//! - stem: 3x3 convolution (3 → 64, stride 2) → batch norm → PReLU, then a depthwise 3x3
//!   convolution (stride 1) → batch norm → PReLU; 56x56;
//! - 15 inverted-residual [`Bottleneck`]s in five groups, listed as (expansion t, output channels
//!   c, repeats n, first stride s): (2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1),
//!   (4, 128, 1, 2), (2, 128, 2, 1); 7x7 at the end;
//! - tail:
//!   - 1x1 convolution 128 → 512 → batch norm → PReLU;
//!   - a global depthwise convolution ("GDConv") without padding, whose kernel covers the whole
//!     final feature map → batch norm;
//!   - 1x1 convolution 512 → embedding size → batch norm, then flatten.
//!
//! The GDConv kernel is sized from the config's input size (7x7 at 112x112, 2x2 at 32x32).
//! Every weight uses burn's default initialisation, U(-1/√fan_in, 1/√fan_in), which is also
//! PyTorch's default for convolutions; PReLU slopes start at 0.25.

use burn::module::{Initializer, Module};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PRelu};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::BackboneConfig;
use crate::layers::{ConvSpec, batch_norm, prelu};

/// Bottleneck groups as (expansion factor t, output channels c, repeats n, first stride s).
const BOTTLENECK_GROUPS: [(usize, usize, usize, usize); 5] =
    [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)];

/// Channels of the stem and of the input to the first bottleneck.
const STEM_CHANNELS: usize = 64;

/// Channels of the 1x1 convolution before the GDConv.
const TAIL_CHANNELS: usize = 512;

/// A MobileFaceNet backbone. Build it through
/// [`BackboneConfig::init`](crate::BackboneConfig::init).
#[derive(Module, Debug)]
pub struct MobileFaceNet<B: Backend> {
    conv1: ConvBlock<B>,
    conv2_dw: ConvBlock<B>,
    blocks: Vec<Bottleneck<B>>,
    conv_sep: ConvBlock<B>,
    gdc: LinearBlock<B>,
    embed: LinearBlock<B>,
}

/// Convolution → batch norm → PReLU.
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
    prelu: PRelu<B>,
}

/// Convolution → batch norm, with no activation.
#[derive(Module, Debug)]
pub struct LinearBlock<B: Backend> {
    conv: Conv2d<B>,
    bn: BatchNorm<B>,
}

/// Inverted residual block: 1x1 expansion → depthwise 3x3 (stride) → 1x1 linear projection,
/// with an identity shortcut when the stride is 1 and the width does not change.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    expand: ConvBlock<B>,
    depthwise: ConvBlock<B>,
    project: LinearBlock<B>,
    residual: bool,
}

impl<B: Backend> MobileFaceNet<B> {
    /// Builds the network described by `config`, which must be valid.
    pub(crate) fn new(config: &BackboneConfig, device: &B::Device) -> Self {
        let init = default_initializer();
        let blocks = bottlenecks(&init, device);
        let last_channels = BOTTLENECK_GROUPS[BOTTLENECK_GROUPS.len() - 1].1;
        let gdc = ConvSpec {
            channels: [TAIL_CHANNELS; 2],
            kernel: config.final_spatial_size(),
            stride: 1,
            padding: 0,
            groups: TAIL_CHANNELS,
        };
        let embed = ConvSpec::square([TAIL_CHANNELS, config.embedding_size], 1, 1);

        Self {
            conv1: ConvBlock::new(ConvSpec::square([3, STEM_CHANNELS], 3, 2), &init, device),
            conv2_dw: ConvBlock::new(ConvSpec::depthwise(STEM_CHANNELS, 3, 1), &init, device),
            blocks,
            conv_sep: ConvBlock::new(
                ConvSpec::square([last_channels, TAIL_CHANNELS], 1, 1),
                &init,
                device,
            ),
            gdc: LinearBlock::new(gdc, &init, device),
            embed: LinearBlock::new(embed, &init, device),
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
        let x = self.conv2_dw.forward(x);
        // [batch_size, 64, height / 2, width / 2]

        let x = self.blocks.iter().fold(x, |x, block| block.forward(x));
        // [batch_size, 128, height / 16, width / 16]

        let x = self.conv_sep.forward(x);
        let x = self.gdc.forward(x);
        let x = self.embed.forward(x);
        // [batch_size, embedding_size, 1, 1]

        x.flatten(1, 3)
    }
}

impl<B: Backend> ConvBlock<B> {
    fn new(spec: ConvSpec, init: &Initializer, device: &B::Device) -> Self {
        let channels = spec.channels[1];
        Self {
            conv: spec.init(init, device),
            bn: batch_norm(channels, device),
            prelu: prelu(channels, device),
        }
    }

    /// Applies convolution, batch norm and PReLU.
    ///
    /// # Shapes
    ///
    /// - `x`: `[batch_size, in_channels, height, width]`
    /// - output: `[batch_size, out_channels, height_out, width_out]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.prelu.forward(self.bn.forward(self.conv.forward(x)))
    }
}

impl<B: Backend> LinearBlock<B> {
    fn new(spec: ConvSpec, init: &Initializer, device: &B::Device) -> Self {
        Self { conv: spec.init(init, device), bn: batch_norm(spec.channels[1], device) }
    }

    /// Applies convolution and batch norm.
    ///
    /// # Shapes
    ///
    /// - `x`: `[batch_size, in_channels, height, width]`
    /// - output: `[batch_size, out_channels, height_out, width_out]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.bn.forward(self.conv.forward(x))
    }
}

impl<B: Backend> Bottleneck<B> {
    fn new(
        channels: [usize; 2],
        expansion: usize,
        stride: usize,
        init: &Initializer,
        device: &B::Device,
    ) -> Self {
        let [in_channels, out_channels] = channels;
        let hidden = in_channels * expansion;

        Self {
            expand: ConvBlock::new(ConvSpec::square([in_channels, hidden], 1, 1), init, device),
            depthwise: ConvBlock::new(ConvSpec::depthwise(hidden, 3, stride), init, device),
            project: LinearBlock::new(ConvSpec::square([hidden, out_channels], 1, 1), init, device),
            residual: stride == 1 && in_channels == out_channels,
        }
    }

    /// Applies the block.
    ///
    /// # Shapes
    ///
    /// - `x`: `[batch_size, in_channels, height, width]`
    /// - output: `[batch_size, out_channels, height / stride, width / stride]`, rounded up
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let out = self.expand.forward(x.clone());
        let out = self.depthwise.forward(out);
        let out = self.project.forward(out);
        if self.residual { out + x } else { out }
    }
}

/// Builds the 15 bottlenecks of [`BOTTLENECK_GROUPS`] in order.
fn bottlenecks<B: Backend>(init: &Initializer, device: &B::Device) -> Vec<Bottleneck<B>> {
    let mut in_channels = STEM_CHANNELS;
    let mut blocks = Vec::new();
    for (expansion, out_channels, n_repeats, first_stride) in BOTTLENECK_GROUPS {
        for repeat_idx in 0..n_repeats {
            let stride = if repeat_idx == 0 { first_stride } else { 1 };
            let channels = [in_channels, out_channels];
            blocks.push(Bottleneck::new(channels, expansion, stride, init, device));
            in_channels = out_channels;
        }
    }
    blocks
}

/// burn's default convolution initializer (and PyTorch's): U(-1/√fan_in, 1/√fan_in).
fn default_initializer() -> Initializer {
    Initializer::KaimingUniform { gain: 1.0 / 3.0_f64.sqrt(), fan_out_only: false }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;
    use crate::test_util::{random_images, tiny_mbf};
    use crate::{Backbone, NetworkKind};

    fn mobilefacenet(config: &BackboneConfig) -> MobileFaceNet<Flex> {
        match config.init::<Flex>(&Default::default()) {
            Backbone::MobileFaceNet(net) => net,
            Backbone::IResNet(_) => panic!("expected a MobileFaceNet"),
        }
    }

    #[test]
    fn bottleneck_residuals_follow_shapes() {
        let net = mobilefacenet(&BackboneConfig::new(NetworkKind::MobileFaceNet));
        let residual: Vec<bool> = net.blocks.iter().map(|block| block.residual).collect();

        let expected = [
            false, true, true, true, true,  // (2, 64, 5, 2)
            false, // (4, 128, 1, 2)
            true, true, true, true, true, true,  // (2, 128, 6, 1)
            false, // (4, 128, 1, 2)
            true, true, // (2, 128, 2, 1)
        ];
        assert_eq!(residual, expected);
    }

    #[test]
    fn gdconv_kernel_covers_feature_map() {
        let config = BackboneConfig::new(NetworkKind::MobileFaceNet);
        assert_eq!(mobilefacenet(&config).gdc.conv.weight.dims(), [512, 1, 7, 7]);

        let config = config.with_input_size([32, 48]);
        assert_eq!(mobilefacenet(&config).gdc.conv.weight.dims(), [512, 1, 2, 3]);
    }

    #[test]
    fn forward_maps_small_images_to_embeddings() {
        let device = Default::default();
        let config = tiny_mbf().with_embedding_size(16);
        let net = mobilefacenet(&config);

        assert_eq!(net.forward(random_images(&config, 2, &device)).dims(), [2, 16]);
    }
}
