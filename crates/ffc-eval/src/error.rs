//! The error type shared by every fallible function of the crate.

use thiserror::Error;

/// Reasons why a pair list cannot be built or a verification cannot be scored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EvalError {
    /// The fold count leaves no training folds to pick a threshold on.
    #[error("fold count `{folds}` is invalid (use at least 2 folds)")]
    InvalidFoldCount {
        /// The rejected fold count.
        folds: usize,
    },

    /// Some fold would be empty or, for a generated list, unbalanced.
    #[error(
        "`{pairs}` pairs are too few for `{folds}` folds (need at least `{required}`; \
         use fewer folds or more images)"
    )]
    TooFewPairs {
        /// Pairs available.
        pairs: usize,
        /// Pairs the fold count requires.
        required: usize,
        /// The requested fold count.
        folds: usize,
    },

    /// A labelled set with one identity (or none) has no different-identity pairs.
    #[error("labelled set has `{identities}` identities (need at least 2 for different pairs)")]
    TooFewIdentities {
        /// Distinct labels found.
        identities: usize,
    },

    /// Every identity has a single image, so there are no same-identity pairs.
    #[error(
        "no identity among `{identities}` has 2 or more images (need at least one for same pairs)"
    )]
    NoRepeatedIdentity {
        /// Distinct labels found.
        identities: usize,
    },

    /// The embedding dimension is zero.
    #[error("embedding dimension must be positive, got `0`")]
    ZeroDim,

    /// The flat feature buffer does not split into whole rows.
    #[error("feature length `{len}` is not a multiple of the embedding dimension `{dim}`")]
    FeatureLength {
        /// Length of the flat feature buffer.
        len: usize,
        /// Embedding dimension.
        dim: usize,
    },

    /// A pair names a feature row that does not exist.
    #[error("pair `{pair}` refers to feature row `{row}`, but there are only `{rows}` rows")]
    PairIndexOutOfRange {
        /// Position of the pair in the list.
        pair: usize,
        /// The out-of-range row index.
        row: usize,
        /// Number of feature rows.
        rows: usize,
    },

    /// The pair list and its labels have different lengths.
    #[error("pair list has `{pairs}` pairs but `{labels}` issame labels")]
    LabelCountMismatch {
        /// Number of pairs.
        pairs: usize,
        /// Number of issame labels.
        labels: usize,
    },

    /// A feature row contains NaN or an infinity, which usually means the model diverged.
    #[error("feature row `{row}` contains the non-finite value `{value}` (check the model output)")]
    NonFiniteFeature {
        /// Index of the offending row.
        row: usize,
        /// The first non-finite value in that row, as text so the error stays comparable.
        value: String,
    },
}
