//! Constructors for the convolution, batch-norm and PReLU layers that both backbones stack, with
//! the settings the insightface models use (no convolution bias, batch-norm epsilon 1e-5,
//! one PReLU slope per channel).

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PRelu, PReluConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;

/// Batch-norm epsilon of every normalisation layer, as in PyTorch's and insightface's default.
pub(crate) const BN_EPSILON: f64 = 1e-5;

/// Shape and grouping of one bias-free 2-D convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvSpec {
    /// `[in, out]` channels.
    pub(crate) channels: [usize; 2],
    /// `[height, width]` of the kernel.
    pub(crate) kernel: [usize; 2],
    /// Stride in both dimensions.
    pub(crate) stride: usize,
    /// Zero padding on every side.
    pub(crate) padding: usize,
    /// Number of groups, equal to the channel count for a depthwise convolution.
    pub(crate) groups: usize,
}

impl ConvSpec {
    /// Describes a dense `size`x`size` convolution with "same"-style padding `size / 2`.
    pub(crate) fn square(channels: [usize; 2], size: usize, stride: usize) -> Self {
        Self { channels, kernel: [size, size], stride, padding: size / 2, groups: 1 }
    }

    /// Describes a depthwise `size`x`size` convolution over `channels` channels, padded by
    /// `size / 2`.
    pub(crate) fn depthwise(channels: usize, size: usize, stride: usize) -> Self {
        Self {
            channels: [channels, channels],
            kernel: [size, size],
            stride,
            padding: size / 2,
            groups: channels,
        }
    }

    /// Builds the convolution, drawing its weight from `initializer`.
    pub(crate) fn init<B: Backend>(
        self,
        initializer: &Initializer,
        device: &B::Device,
    ) -> Conv2d<B> {
        let pad = self.padding;
        Conv2dConfig::new(self.channels, self.kernel)
            .with_stride([self.stride, self.stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_groups(self.groups)
            .with_bias(false)
            .with_initializer(initializer.clone())
            .init(device)
    }
}

/// Builds a batch-norm layer over `n_features` channels with γ = 1, β = 0 and [`BN_EPSILON`].
pub(crate) fn batch_norm<B: Backend>(n_features: usize, device: &B::Device) -> BatchNorm<B> {
    BatchNormConfig::new(n_features).with_epsilon(BN_EPSILON).init(device)
}

/// Builds a PReLU layer with one slope per channel, each starting at 0.25 as in PyTorch.
pub(crate) fn prelu<B: Backend>(n_channels: usize, device: &B::Device) -> PRelu<B> {
    PReluConfig::new().with_num_parameters(n_channels).init(device)
}
