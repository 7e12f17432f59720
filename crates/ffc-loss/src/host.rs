//! Direct reads of CPU-backend tensors, for the one step that is faster as a plain loop.

use std::any::Any;

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// Calls `f` with the row-major values of `tensor` when `B` is burn-flex and the tensor is
/// f32. Returns `None` on every other backend.
pub(crate) fn with_flex_values<B: Backend, R>(
    tensor: &Tensor<B, 2>,
    f: impl FnOnce(&[f32]) -> R,
) -> Option<R> {
    let primitive = tensor.clone().into_primitive().tensor();
    let flex = (&primitive as &dyn Any).downcast_ref::<FlexTensor>()?;
    if flex.dtype() != DType::F32 {
        return None;
    }
    let contiguous = flex.to_contiguous();
    Some(f(contiguous.storage::<f32>()))
}
