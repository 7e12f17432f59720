//! Export and import of the whole pool, for checkpoints and for loading reference cases.

use std::num::NonZeroUsize;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ffc_lru::{LruState, LruStateError, SlotLru};
use serde::{Deserialize, Serialize};

use crate::ClassPool;

/// Everything a [`ClassPool`] holds, on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    /// Number of slots Q.
    pub queue_size: usize,
    /// Feature dimension D.
    pub feat_dim: usize,
    /// The queue in row-major `[2, queue_size, feat_dim]` order.
    pub queue: Vec<f32>,
    /// Position bit of every slot (0 or 1): the row its next hit writes.
    pub positions: Vec<u8>,
    /// The label -> slot map, most recent first.
    pub lru: LruState,
}

/// A [`PoolState`] that cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum PoolStateError {
    /// The queue size is 0.
    #[error("pool state has queue size 0; a pool needs at least one slot")]
    EmptyQueue,
    /// The feature dimension is 0.
    #[error("pool state has feature dimension 0")]
    ZeroDim,
    /// The queue buffer does not have `2 * queue_size * feat_dim` values.
    #[error(
        "pool queue holds {actual} values, expected 2 x {queue_size} x {feat_dim} = {expected}"
    )]
    QueueLength {
        /// Values present.
        actual: usize,
        /// Values required.
        expected: usize,
        /// Q.
        queue_size: usize,
        /// D.
        feat_dim: usize,
    },
    /// The queue contains a NaN or infinite value.
    #[error("pool queue value {index} is not finite ({value})")]
    NonFinite {
        /// Flat index into the queue.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The number of position bits is not the queue size.
    #[error("pool state has {actual} position bits for {queue_size} slots")]
    PositionCount {
        /// Bits present.
        actual: usize,
        /// Q.
        queue_size: usize,
    },
    /// A position bit is neither 0 nor 1.
    #[error("position of slot {slot} is {value}; positions are 0 or 1")]
    PositionValue {
        /// The slot.
        slot: usize,
        /// The bad value.
        value: u8,
    },
    /// The LRU's capacity differs from the queue size.
    #[error("LRU capacity {capacity} does not match the queue size {queue_size}")]
    Capacity {
        /// LRU capacity.
        capacity: usize,
        /// Q.
        queue_size: usize,
    },
    /// The LRU state is invalid.
    #[error("invalid LRU state in pool state")]
    Lru(#[from] LruStateError),
}

impl<B: Backend> ClassPool<B> {
    /// Copies the pool to the host.
    pub fn export_state(&self) -> PoolState {
        let queue = self.queue.clone().into_data().convert::<f32>().into_vec::<f32>();
        PoolState {
            queue_size: self.queue_size(),
            feat_dim: self.feat_dim,
            queue: queue.expect("f32 data converts to f32"),
            positions: self.positions.clone(),
            lru: self.lru.export_state(),
        }
    }

    /// Rebuilds a pool from a state, after checking every field.
    pub fn from_state(state: &PoolState, device: &B::Device) -> Result<Self, PoolStateError> {
        let (q, d) = (state.queue_size, state.feat_dim);
        check_state(state)?;

        let lru = SlotLru::from_state(&state.lru)?;
        let data = TensorData::new(state.queue.clone(), [2, q, d]);
        Ok(Self {
            queue: Tensor::from_data(data, device),
            positions: state.positions.clone(),
            lru,
            feat_dim: d,
        })
    }

    /// Returns the capacity of the pool, which is the LRU capacity.
    pub fn capacity(&self) -> NonZeroUsize {
        self.lru.capacity()
    }
}

fn check_state(state: &PoolState) -> Result<(), PoolStateError> {
    let (q, d) = (state.queue_size, state.feat_dim);
    if q == 0 {
        return Err(PoolStateError::EmptyQueue);
    }
    if d == 0 {
        return Err(PoolStateError::ZeroDim);
    }
    let expected = 2 * q * d;
    if state.queue.len() != expected {
        let actual = state.queue.len();
        return Err(PoolStateError::QueueLength { actual, expected, queue_size: q, feat_dim: d });
    }
    if let Some(index) = state.queue.iter().position(|v| !v.is_finite()) {
        return Err(PoolStateError::NonFinite { index, value: state.queue[index] });
    }
    if state.positions.len() != q {
        let actual = state.positions.len();
        return Err(PoolStateError::PositionCount { actual, queue_size: q });
    }
    if let Some(slot) = state.positions.iter().position(|&p| p > 1) {
        return Err(PoolStateError::PositionValue { slot, value: state.positions[slot] });
    }
    if state.lru.capacity != q {
        return Err(PoolStateError::Capacity { capacity: state.lru.capacity, queue_size: q });
    }
    Ok(())
}
