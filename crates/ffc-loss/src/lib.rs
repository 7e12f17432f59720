//! FFC's losses: margin softmax (AM, Arc, SV) over the Dynamic Class Pool with a top-k penalty
//! for probes whose identity is not pooled, and the two-pass training step of the head.
//!
//! [`MarginLoss`] works on any burn backend and is differentiable through autodiff. The step
//! ([`ffc_step`]) runs on plain (inner-backend) tensors: it forms the cosine matrices from the
//! pool, takes the loss gradient with respect to them in closed form, and returns the gradient
//! with respect to the probe features directly, `dL/dP = dC1 W0 + dC2 W~`. The queue therefore
//! never enters the autodiff graph, so writing the pool after a pass never copies it. The trainer
//! feeds that gradient back into its network graph (see [`ffc_step`]).
//!
//! ```
//! # type B = burn::backend::Autodiff<burn::backend::Flex>;
//! use burn::tensor::Tensor;
//! use ffc_loss::{LossKind, MarginLoss};
//!
//! let device = Default::default();
//! let loss = MarginLoss { kind: LossKind::Am, scale: 32.0, margin: 0.4, sv_t: 1.2, hard_negatives: 1 };
//! let cos = Tensor::<B, 2>::from_floats([[0.9, 0.1], [0.3, 0.2]], &device).require_grad();
//! let value = loss.forward(cos.clone(), &[0, -1]);
//! let grads = value.backward();
//! assert!(cos.grad(&grads).is_some());
//! ```

mod analytic;
#[cfg(feature = "flex")]
mod fused;
mod head;
mod hits;
#[cfg(feature = "flex")]
mod host;
mod margin;

pub use head::{PassReport, StepInputs, StepOutcome, ffc_pass, ffc_step};
pub use margin::{ARC_SIN_EPS, LossKind, MarginLoss, SV_T, hard_negatives_for};
