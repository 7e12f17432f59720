//! Verification during and after training: held-out identity folders (all same-identity pairs
//! plus as many different-identity pairs) and insightface `.bin` packs, scored with the
//! insightface protocol (flip-sum features, squared distance, 10 contiguous folds).

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ffc_data::{FaceSource, Preprocess, ValidationPack};
use ffc_eval::{
    EvalSummary, PairList, Verification, flip_sum, folder_pairs, l2_normalize_rows, verify, xnorm,
};
use ffc_model::Backbone;
use serde::Serialize;

/// Folds of the verification protocol.
pub const FOLDS: usize = 10;

/// Image source of a validation set.
enum Images {
    Folder(Arc<dyn FaceSource>),
    Pack(ValidationPack),
}

/// A named set of image pairs to verify.
pub struct ValidationSet {
    /// Name used in logs, metrics and `summary.json` (`val` for a folder, the file stem for a
    /// pack).
    pub name: String,
    images: Images,
    pairs: PairList,
}

/// Scores of one validation set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetResult {
    /// Set name.
    pub name: String,
    /// Accuracy, XNorm and pair count.
    #[serde(flatten)]
    pub summary: EvalSummary,
}

/// A validation set that could not be loaded or scored.
#[derive(Debug, thiserror::Error)]
pub enum EvalSetError {
    /// Reading the images failed.
    #[error(transparent)]
    Data(#[from] ffc_data::DataError),
    /// The pairs or features are unusable.
    #[error("cannot evaluate `{name}`")]
    Eval {
        /// Set name.
        name: String,
        /// Cause.
        #[source]
        source: ffc_eval::EvalError,
    },
}

impl ValidationSet {
    /// Pairs every image of a held-out identity folder: all same-identity pairs and as many
    /// different-identity pairs drawn with `seed`, laid out so each fold is balanced.
    pub fn from_folder(path: &Path, seed: u64) -> Result<Self, EvalSetError> {
        let source = ffc_data::open_source(path)?;
        let labels: Vec<u64> = (0..source.len()).map(|image| source.label(image)).collect();
        let pairs = folder_pairs(&labels, seed, FOLDS)
            .map_err(|source| EvalSetError::Eval { name: "val".into(), source })?;
        Ok(Self { name: "val".into(), images: Images::Folder(source), pairs })
    }

    /// Opens an insightface `.bin` pack; pair i is images 2i and 2i+1.
    pub fn from_pack(path: &Path) -> Result<Self, EvalSetError> {
        let pack = ValidationPack::open(path)?;
        if pack.pairs() < FOLDS {
            let (pairs, required, folds) = (pack.pairs(), FOLDS, FOLDS);
            let source = ffc_eval::EvalError::TooFewPairs { pairs, required, folds };
            return Err(EvalSetError::Eval { name: pack.name.clone(), source });
        }
        let pairs = PairList {
            pairs: (0..pack.pairs()).map(|i| (2 * i, 2 * i + 1)).collect(),
            issame: pack.issame.clone(),
        };
        Ok(Self { name: pack.name.clone(), images: Images::Pack(pack), pairs })
    }

    /// Decodes every image once, so that a broken image fails before training rather than at
    /// the first evaluation.
    pub fn check_images(&self, preprocess: &Preprocess) -> Result<(), EvalSetError> {
        let chunk = 256;
        for start in (0..self.len()).step_by(chunk) {
            self.decode(start..(start + chunk).min(self.len()), preprocess, false)?;
        }
        Ok(())
    }

    /// Number of pairs.
    pub fn pairs(&self) -> usize {
        self.pairs.issame.len()
    }

    fn len(&self) -> usize {
        match &self.images {
            Images::Folder(source) => source.len(),
            Images::Pack(pack) => pack.images.len(),
        }
    }

    /// Decodes images `range` of the set, mirrored when `flip`, as `[n, 3, h, w]` values.
    fn decode(
        &self,
        range: std::ops::Range<usize>,
        preprocess: &Preprocess,
        flip: bool,
    ) -> Result<Vec<f32>, ffc_data::DataError> {
        match &self.images {
            Images::Folder(source) => {
                let images: Vec<usize> = range.collect();
                ffc_data::load_images(source.as_ref(), &images, preprocess, flip)
            }
            Images::Pack(pack) => {
                let mut out = vec![0.0; range.len() * preprocess.image_len()];
                for (row, image) in range.enumerate() {
                    let slot = &mut out[row * preprocess.image_len()..][..preprocess.image_len()];
                    preprocess.decode_into(&pack.images[image], flip, slot).map_err(|source| {
                        let image = format!("{image} of pack `{}`", self.name);
                        ffc_data::DataError::Decode { image, source: source.into() }
                    })?;
                }
                Ok(out)
            }
        }
    }

    /// Embeds every image (and its mirror when `flip`) with `net` and scores the pairs.
    pub fn evaluate<B: Backend>(
        &self,
        net: &Backbone<B>,
        preprocess: &Preprocess,
        batch_size: usize,
        flip: bool,
        device: &B::Device,
    ) -> Result<SetResult, EvalSetError> {
        let (raw, raw_flipped, dim) = self.embed(net, preprocess, batch_size, flip, device)?;
        let features = match &raw_flipped {
            Some(flipped) => flip_sum(&raw, flipped, dim),
            None => {
                let mut features = raw.clone();
                l2_normalize_rows(&mut features, dim);
                features
            }
        };
        let mut all_raw = raw;
        all_raw.extend(raw_flipped.unwrap_or_default());
        let verification = self.score(&features, dim)?;
        Ok(self.result(&verification, xnorm(&all_raw, dim)))
    }

    /// Scores the pairs on normalised raw pixels: the baseline any network must beat.
    pub fn raw_pixel_baseline(&self, preprocess: &Preprocess) -> Result<SetResult, EvalSetError> {
        let mut pixels = self.decode(0..self.len(), preprocess, false)?;
        let dim = preprocess.image_len();
        let norm = xnorm(&pixels, dim);
        l2_normalize_rows(&mut pixels, dim);
        let verification = self.score(&pixels, dim)?;
        Ok(self.result(&verification, norm))
    }

    fn score(&self, features: &[f32], dim: usize) -> Result<Verification, EvalSetError> {
        verify(features, dim, &self.pairs, FOLDS)
            .map_err(|source| EvalSetError::Eval { name: self.name.clone(), source })
    }

    fn result(&self, verification: &Verification, xnorm: f64) -> SetResult {
        SetResult {
            name: self.name.clone(),
            summary: EvalSummary {
                accuracy_mean: verification.accuracy_mean,
                accuracy_std: verification.accuracy_std,
                xnorm,
                pairs: verification.pairs,
            },
        }
    }

    /// Raw embeddings of every image, and of every mirrored image when `flip`, decoded and
    /// embedded `batch_size` images at a time.
    #[allow(clippy::type_complexity)]
    fn embed<B: Backend>(
        &self,
        net: &Backbone<B>,
        preprocess: &Preprocess,
        batch_size: usize,
        flip: bool,
        device: &B::Device,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>, usize), EvalSetError> {
        let mut raw = Vec::new();
        let mut flipped = flip.then(Vec::new);
        let mut dim = 0;
        let n = self.len();
        for start in (0..n).step_by(batch_size) {
            let range = start..(start + batch_size).min(n);
            for mirrored in [false, true] {
                if mirrored && !flip {
                    continue;
                }
                let values = self.decode(range.clone(), preprocess, mirrored)?;
                let data =
                    TensorData::new(values, [range.len(), 3, preprocess.height, preprocess.width]);
                let embedding = net.forward(Tensor::from_data(data, device)).raw;
                dim = embedding.dims()[1];
                let values =
                    embedding.into_data().convert::<f32>().into_vec::<f32>().expect("f32 data");
                if mirrored {
                    flipped.as_mut().expect("flip is on").extend(values)
                } else {
                    raw.extend(values)
                }
            }
        }
        Ok((raw, flipped, dim))
    }
}
