use burn::prelude::*;

/// What data-parallel training shares between devices, with gradients flowing back: the
/// reference's `dist_collect` (the global batch of the contrastive losses) and SyncBatchNorm
/// (batch statistics over the global batch). One device uses [`LocalGather`].
pub trait GatherAll<B: Backend> {
    /// `x` [b, D] on this device -> ([b_total, D], row offset of this device's rows).
    fn gather(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, usize);

    /// Sum over every device of `x` (same shape everywhere); the backward sums the gradients
    /// of every device likewise.
    fn sum_all(&self, x: Tensor<B, 2>) -> Tensor<B, 2>;

    /// Number of devices taking part.
    fn world_size(&self) -> usize;
}

/// One device: the local batch is the global batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalGather;

impl<B: Backend> GatherAll<B> for LocalGather {
    fn gather(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, usize) {
        (x, 0)
    }

    fn sum_all(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x
    }

    fn world_size(&self) -> usize {
        1
    }
}

/// Where BatchNorm takes its statistics from.
pub enum BatchStats<'a, B: Backend> {
    /// Eval mode: the running statistics.
    Running,
    /// Training mode: the statistics of the global batch (updating the running ones).
    Batch(&'a dyn GatherAll<B>),
}

// Written out: a derive would ask `B: Copy`.
impl<B: Backend> Clone for BatchStats<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for BatchStats<'_, B> {}

impl<B: Backend> BatchStats<'_, B> {
    pub fn new(training: bool) -> Self {
        if training {
            BatchStats::Batch(&LocalGather)
        } else {
            BatchStats::Running
        }
    }
}
