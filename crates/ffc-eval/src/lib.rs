//! Face verification metrics for ffc: balanced pair lists, flip-test features, the insightface
//! k-fold accuracy protocol and the IJB-C style TAR@FAR read-out.
//!
//! Everything works on flat `[rows * dim]` f32 embedding buffers and index pairs, so the crate
//! depends on no tensor library. A validation run typically embeds every image and its mirror
//! image, logs [`xnorm`] of the raw embeddings, combines them with [`flip_sum`], and scores a
//! [`PairList`] with [`verify`]:
//!
//! ```
//! use ffc_eval::{PairList, flip_sum, verify, xnorm};
//!
//! // Four images in 2-D: two of identity A near (1, 0), two of identity B near (0, 1).
//! let raw = [2.0, 0.1, 1.9, -0.1, 0.1, 2.0, -0.1, 2.1];
//! let mirrored = [2.0, -0.1, 2.0, 0.1, 0.0, 2.0, 0.0, 2.0];
//! let features = flip_sum(&raw, &mirrored, 2);
//!
//! let pairs = PairList {
//!     pairs: vec![(0, 1), (0, 2), (2, 3), (1, 3)],
//!     issame: vec![true, false, true, false],
//! };
//! let result = verify(&features, 2, &pairs, 2)?;
//! assert_eq!(result.accuracy_mean, 1.0);
//!
//! // Like insightface, average the raw norms over both the original and mirrored embeddings.
//! let both: Vec<f32> = raw.iter().chain(&mirrored).copied().collect();
//! let summary = result.summary(xnorm(&both, 2));
//! assert_eq!(summary.pairs, 4);
//! # Ok::<(), ffc_eval::EvalError>(())
//! ```

mod error;
mod features;
mod pairs;
mod roc;
mod verify;

pub use error::EvalError;
pub use features::{flip_sum, l2_normalize_rows, xnorm};
pub use pairs::{PairList, folder_pairs};
pub use roc::tar_at_far;
pub use verify::{EvalSummary, Verification, fold_ranges, verify};
