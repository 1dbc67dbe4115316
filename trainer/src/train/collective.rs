//! Data parallelism over several devices through burn-collective: every device holds a replica,
//! gradients are all-reduced (mean) after the backward, and the forward shares what the
//! reference shares: the global batch of the contrastive losses (`dist_collect`) and the
//! BatchNorm statistics (SyncBatchNorm). burn-collective has no all-gather and its all-reduce has
//! no backward, so [`all_reduce_sum`] adds one here as an autodiff op: forward and backward are
//! both an all-reduce sum, which makes zero-padded all-reduce a differentiable all-gather.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::collective::{all_reduce, CollectiveError, PeerId, ReduceOperation};
use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use ovseg_model::losses::GatherAll;

/// This device's place among `world` devices, each holding `rows` samples of the global batch.
#[derive(Debug, Clone, Copy)]
pub struct CollectiveGather {
    pub peer: PeerId,
    pub rank: usize,
    pub world: usize,
}

#[derive(Debug)]
struct AllReduceSum;

impl<B: Backend> Backward<B, 1> for AllReduceSum {
    type State = PeerId;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let peer = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            // Every replica runs the same graph, so every device reaches this call in the
            // same order; a failure here means a peer died, which nothing can recover.
            all_reduce::<B>(peer, grad, ReduceOperation::Sum)
                .unwrap_or_else(|e| panic!("all-reduce in backward failed: {e:?}"))
        });
    }
}

/// Sum of `x` over every device, differentiable: the gradient of each device's copy is the sum
/// of the gradients of every device's output.
pub fn all_reduce_sum<B: Backend, const D: usize>(
    peer: PeerId,
    x: Tensor<Autodiff<B>, D>,
) -> Tensor<Autodiff<B>, D> {
    let x = x.into_primitive().tensor();
    let summed = all_reduce::<B>(peer, x.primitive.clone(), ReduceOperation::Sum)
        .unwrap_or_else(|e| panic!("all-reduce failed: {e:?}"));
    let out = match AllReduceSum
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(peer, summed),
        OpsKind::UnTracked(prep) => prep.finish(summed),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

impl<B: Backend> GatherAll<Autodiff<B>> for CollectiveGather {
    fn gather(&self, x: Tensor<Autodiff<B>, 2>) -> (Tensor<Autodiff<B>, 2>, usize) {
        let [rows, width] = x.dims();
        let device = x.device();
        let offset = self.rank * rows;
        let after = (self.world - self.rank - 1) * rows;
        let mut parts = Vec::with_capacity(3);
        if offset > 0 {
            parts.push(Tensor::zeros([offset, width], &device));
        }
        parts.push(x);
        if after > 0 {
            parts.push(Tensor::zeros([after, width], &device));
        }
        (all_reduce_sum(self.peer, Tensor::cat(parts, 0)), offset)
    }

    fn sum_all(&self, x: Tensor<Autodiff<B>, 2>) -> Tensor<Autodiff<B>, 2> {
        all_reduce_sum(self.peer, x)
    }

    fn world_size(&self) -> usize {
        self.world
    }
}

/// Reduces every gradient over all devices (`op`: the mean, for data parallelism), one
/// parameter at a time in the module's own order; also gives the number of values reduced.
/// burn's `GradientsParams::all_reduce` goes in `ParamId` order, and ids are drawn at random in
/// each process: replicas of one process share them, but two machines would pair different
/// tensors.
pub fn all_reduce_gradients<B: Backend, M: Module<Autodiff<B>>>(
    model: &M,
    grads: GradientsParams,
    peer: PeerId,
    op: ReduceOperation,
) -> Result<(GradientsParams, usize), CollectiveError> {
    struct Reduce {
        grads: GradientsParams,
        peer: PeerId,
        op: ReduceOperation,
        error: Option<CollectiveError>,
        elements: usize,
    }
    impl<B: Backend> ModuleVisitor<Autodiff<B>> for Reduce {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Autodiff<B>, D>>) {
            if self.error.is_some() {
                return;
            }
            // Frozen parameters have no gradient, on every device alike.
            let Some(grad) = self.grads.remove::<B, D>(param.id) else {
                return;
            };
            self.elements += grad.shape().num_elements();
            match all_reduce::<B>(self.peer, grad.into_primitive().tensor(), self.op) {
                Ok(reduced) => self.grads.register::<B, D>(
                    param.id,
                    Tensor::from_primitive(TensorPrimitive::Float(reduced)),
                ),
                Err(e) => self.error = Some(e),
            }
        }
    }
    let mut reduce = Reduce {
        grads,
        peer,
        op,
        error: None,
        elements: 0,
    };
    model.visit(&mut reduce);
    match reduce.error {
        Some(e) => Err(e),
        None => Ok((reduce.grads, reduce.elements)),
    }
}
