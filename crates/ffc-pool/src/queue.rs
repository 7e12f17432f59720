//! Reads and writes of individual `[row, slot]` cells of the `[2, Q, D]` queue.
//!
//! burn's tensors are values, and burn-flex 0.21 (the CPU backend) implements both
//! `scatter_nd` and `slice_assign` by copying the whole destination, which at Q = 10^6 and
//! D = 512 is 4 GB per pass. On flex the writes therefore go straight into the queue's storage
//! when the pool owns the only handle to it; other backends use `scatter_nd`, which their
//! kernels apply on the device. Either way the cells must be distinct (callers resolve
//! duplicates on the host), because burn leaves repeated indices undefined.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

/// Returns the values of the given queue cells, `[cells.len(), feat_dim]`.
///
/// # Shapes
/// - `queue`: `[2, queue_size, feat_dim]`
/// - `cells`: `[row, slot]` pairs with `row < 2` and `slot < queue_size`
///
/// # Panics
/// If a cell is out of range.
pub fn read_cells<B: Backend>(queue: &Tensor<B, 3>, cells: &[[usize; 2]]) -> Tensor<B, 2> {
    let [rows, q, d] = queue.dims();
    let flat: Vec<i64> = cells.iter().map(|&cell| flat_index(cell, rows, q) as i64).collect();
    let count = flat.len();
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [count]), &queue.device());
    queue.clone().reshape([rows * q, d]).select(0, index)
}

/// Writes `values` row by row into the given distinct queue cells and returns the queue.
///
/// # Shapes
/// - `queue`: `[2, queue_size, feat_dim]`
/// - `cells`: `n` distinct `[row, slot]` pairs
/// - `values`: `[n, feat_dim]`
///
/// # Panics
/// If a cell is out of range or the number of cells and value rows differ.
pub fn write_cells<B: Backend>(
    queue: Tensor<B, 3>,
    cells: &[[usize; 2]],
    values: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [rows, q, d] = queue.dims();
    let [n, value_dim] = values.dims();
    assert_eq!(n, cells.len(), "{} queue cells but {n} value rows", cells.len());
    assert_eq!(value_dim, d, "values have dimension {value_dim}, the queue holds {d}");
    for &cell in cells {
        flat_index(cell, rows, q);
    }

    #[cfg(feature = "flex")]
    let (queue, values) = match flex::write_in_place(queue, cells, values) {
        Ok(queue) => return queue,
        Err(unchanged) => unchanged,
    };
    scatter(queue, cells, values)
}

fn scatter<B: Backend>(
    queue: Tensor<B, 3>,
    cells: &[[usize; 2]],
    values: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let flat: Vec<i64> = cells.iter().flat_map(|&[row, slot]| [row as i64, slot as i64]).collect();
    let count = cells.len();
    let indices =
        Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [count, 2]), &queue.device());
    queue.scatter_nd(indices, values, IndexingUpdateOp::Assign)
}

fn flat_index([row, slot]: [usize; 2], rows: usize, q: usize) -> usize {
    assert!(row < rows, "queue row {row} out of range for a queue of {rows} rows");
    assert!(slot < q, "slot {slot} out of range for a pool of {q} slots");
    row * q + slot
}

#[cfg(feature = "flex")]
mod flex {
    //! The in-place write for burn-flex, reached through a runtime type check so that the pool
    //! stays generic over every backend.

    use std::any::Any;

    use burn::backend::flex::FlexTensor;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorPrimitive};

    /// Writes in place when `B` is flex, the queue is a contiguous f32 tensor and its storage is
    /// not shared; otherwise hands both tensors back.
    #[allow(clippy::type_complexity)]
    pub(super) fn write_in_place<B: Backend>(
        queue: Tensor<B, 3>,
        cells: &[[usize; 2]],
        values: Tensor<B, 2>,
    ) -> Result<Tensor<B, 3>, (Tensor<B, 3>, Tensor<B, 2>)> {
        let [_, q, d] = queue.dims();
        let mut primitive = queue.into_primitive().tensor();
        let Some(target) = (&mut primitive as &mut dyn Any).downcast_mut::<FlexTensor>() else {
            return Err((Tensor::from_primitive(TensorPrimitive::Float(primitive)), values));
        };
        let writable = target.dtype() == DType::F32
            && target.is_contiguous()
            && target.layout().start_offset() == 0
            && target.is_unique();
        let source = values.clone().into_primitive().tensor();
        let source = (&source as &dyn Any).downcast_ref::<FlexTensor>().map(|t| t.to_contiguous());
        let (true, Some(source)) = (writable, source) else {
            return Err((Tensor::from_primitive(TensorPrimitive::Float(primitive)), values));
        };

        let storage = target.try_storage_mut::<f32>().expect("a unique flex tensor is writable");
        let source: &[f32] = source.storage();
        for (n, &[row, slot]) in cells.iter().enumerate() {
            let start = (row * q + slot) * d;
            storage[start..start + d].copy_from_slice(&source[n * d..(n + 1) * d]);
        }
        Ok(Tensor::from_primitive(TensorPrimitive::Float(primitive)))
    }
}
