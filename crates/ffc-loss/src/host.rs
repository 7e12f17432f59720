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

/// Returns the row-major `[m, n]` product of `lhs`, `[m, k]`, and `rhs`, `[k, n]` (or `[n, k]`
/// with `rhs_transposed`), both row-major, on the calling thread.
///
/// For the `[96, 512] x [512, 96]` products of the hit columns this took 20% to 35% less time
/// than burn's `matmul` with the copy to or from the host that the caller needs. Splitting a
/// product of that size over gemm's or rayon's threads made it slower, not faster.
///
/// # Panics
/// If a slice is shorter than its shape.
pub(crate) fn host_product(
    lhs: &[f32],
    rhs: &[f32],
    [m, k, n]: [usize; 3],
    rhs_transposed: bool,
) -> Vec<f32> {
    assert!(lhs.len() >= m * k, "lhs has {} values, [{m}, {k}] needs {}", lhs.len(), m * k);
    assert!(rhs.len() >= k * n, "rhs has {} values, [{k}, {n}] needs {}", rhs.len(), k * n);
    let mut dst = vec![0.0f32; m * n];
    if dst.is_empty() {
        return dst;
    }
    // Strides in elements, column then row, of the row-major operands.
    let (rhs_cs, rhs_rs) = if rhs_transposed { (k as isize, 1) } else { (1, n as isize) };
    // SAFETY: each pointer covers its operand's whole shape under the strides given, checked by
    // the asserts above and by the length of `dst`, which is a separate allocation.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    dst
}
