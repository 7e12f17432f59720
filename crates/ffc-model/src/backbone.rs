//! The [`Backbone`] module that wraps either network family, and the [`Embedding`] it returns.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::iresnet::IResNet;
use crate::mobilefacenet::MobileFaceNet;

/// Lower bound on an embedding's L2 norm when normalising, so a zero row stays zero instead of
/// turning into NaN (the same bound as PyTorch's `F.normalize`).
pub const NORM_EPSILON: f64 = 1e-12;

/// A face-recognition backbone: images in, embeddings out.
///
/// Built by [`BackboneConfig::init`](crate::BackboneConfig::init). Like every burn module, it
/// normalises with batch statistics (and updates the batch-norm running statistics) on an
/// autodiff backend, and with the running statistics on a plain backend, e.g. after
/// `AutodiffModule::valid`.
#[derive(Module, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a program holds a few backbones of about 3.5 KB each, and burn 0.21 implements \
              `Module` for no `Box`, so the variants cannot be boxed"
)]
pub enum Backbone<B: Backend> {
    /// An IResNet (r18, r34, r50, r100).
    IResNet(IResNet<B>),
    /// A MobileFaceNet (mbf).
    MobileFaceNet(MobileFaceNet<B>),
}

/// The output of [`Backbone::forward`]: raw embeddings and their L2-normalised rows.
#[derive(Clone, Debug)]
pub struct Embedding<B: Backend> {
    /// The backbone's output before normalisation, `[batch_size, embedding_size]`.
    pub raw: Tensor<B, 2>,
    /// `raw` with every row scaled to unit L2 norm, `[batch_size, embedding_size]`.
    pub normalized: Tensor<B, 2>,
}

impl<B: Backend> Backbone<B> {
    /// Computes the embeddings of a batch of images.
    ///
    /// # Shapes
    ///
    /// - `images`: `[batch_size, 3, height, width]`, where `[height, width]` is the config's
    ///   `input_size`
    /// - output: [`Embedding`] with `raw` and `normalized` both `[batch_size, embedding_size]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Embedding<B> {
        let raw = match self {
            Backbone::IResNet(net) => net.forward(images),
            Backbone::MobileFaceNet(net) => net.forward(images),
        };
        Embedding::from_raw(raw)
    }
}

impl<B: Backend> Embedding<B> {
    /// Wraps raw embeddings and computes their normalised rows.
    ///
    /// # Shapes
    ///
    /// - `raw`: `[batch_size, embedding_size]`
    pub fn from_raw(raw: Tensor<B, 2>) -> Self {
        let normalized = raw.clone() / row_norms(raw.clone());
        Self { raw, normalized }
    }

    /// L2 norm of every raw embedding, `[batch_size]`. Their mean is the "XNorm" that
    /// insightface's verification logs report.
    pub fn norms(&self) -> Tensor<B, 1> {
        row_norms(self.raw.clone()).squeeze_dim(1)
    }
}

/// Per-row L2 norm, at least [`NORM_EPSILON`], as `[n_rows, 1]`.
///
/// The sum of squares is clamped before the square root, so the gradient of a zero row is zero
/// instead of the NaN that the square root's infinite slope at 0 would produce.
fn row_norms<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    x.square().sum_dim(1).clamp_min(NORM_EPSILON * NORM_EPSILON).sqrt()
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Tolerance;

    use super::*;
    use crate::BackboneConfig;
    use crate::test_util::{Ad, random_images, tiny_mbf, tiny_r18};

    fn assert_forward_shapes<B: Backend>(config: &BackboneConfig, batch_size: usize) {
        let device = Default::default();
        let backbone = config.init::<B>(&device);

        let embedding = backbone.forward(random_images(config, batch_size, &device));

        let expected = [batch_size, config.embedding_size];
        assert_eq!(embedding.raw.dims(), expected);
        assert_eq!(embedding.normalized.dims(), expected);
        assert_eq!(embedding.norms().dims(), [batch_size]);
    }

    #[test]
    fn r18_forward_shapes_on_both_backends() {
        let config = tiny_r18().with_embedding_size(12);
        assert_forward_shapes::<Ad>(&config, 3);
        assert_forward_shapes::<Flex>(&config, 3);
        assert_forward_shapes::<Flex>(&config.with_input_size([40, 24]), 2);
    }

    #[test]
    fn r18_forward_with_dropout() {
        let config = tiny_r18().with_embedding_size(12).with_dropout(0.5);
        assert_forward_shapes::<Ad>(&config, 2);
        assert_forward_shapes::<Flex>(&config, 2);
    }

    #[test]
    fn mbf_forward_shapes_on_both_backends() {
        let config = tiny_mbf().with_embedding_size(16);
        assert_forward_shapes::<Ad>(&config, 2);
        assert_forward_shapes::<Flex>(&config, 2);
    }

    #[test]
    fn normalized_rows_have_unit_norm() {
        let device = Default::default();
        let raw = Tensor::<Flex, 2>::from_floats([[3.0, 4.0], [-0.5, 0.0], [1e-3, 1e-3]], &device);

        let embedding = Embedding::from_raw(raw);

        let expected = [[0.6, 0.8], [-1.0, 0.0], [0.5_f32.sqrt(), 0.5_f32.sqrt()]];
        embedding.normalized.to_data().assert_approx_eq::<f32>(
            &Tensor::<Flex, 2>::from_floats(expected, &device).into_data(),
            Tolerance::default(),
        );
        embedding.norms().into_data().assert_approx_eq::<f32>(
            &Tensor::<Flex, 1>::from_floats([5.0, 0.5, 2e-6_f32.sqrt()], &device).into_data(),
            Tolerance::default(),
        );
    }

    #[test]
    fn zero_row_has_finite_gradient() {
        let device = Default::default();
        let raw = Tensor::<Ad, 2>::from_floats([[0.0, 0.0], [1.0, 1.0]], &device).require_grad();

        let embedding = Embedding::from_raw(raw.clone());
        let grads = embedding.normalized.clone().sum().backward();

        let normalized: Vec<f32> = embedding.normalized.into_data().to_vec().unwrap();
        assert_eq!(&normalized[..2], &[0.0, 0.0]);
        let grad: Vec<f32> = raw.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
    }
}
