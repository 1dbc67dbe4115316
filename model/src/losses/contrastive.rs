use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::model::normalize;
use crate::nn::GatherAll;

/// Symmetric InfoNCE between paired rows of `a` and `b` ([b, D] each, not yet normalised):
/// mean of CE(a @ gather(b)^T * scale) and CE(b @ gather(a)^T * scale), labels = offset + i.
pub fn contrastive_loss<B: Backend>(
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scale: Tensor<B, 1>,
    gather: &dyn GatherAll<B>,
) -> Tensor<B, 1> {
    let a = normalize(a);
    let b = normalize(b);
    let (all_a, offset) = gather.gather(a.clone());
    let (all_b, _) = gather.gather(b.clone());
    let n = a.dims()[0];
    let device = a.device();
    let labels = Tensor::<B, 1, Int>::arange(offset as i64..(offset + n) as i64, &device);
    let scale = scale.unsqueeze_dim::<2>(0);
    let logits_a = a.matmul(all_b.transpose()) * scale.clone();
    let logits_b = b.matmul(all_a.transpose()) * scale;
    (cross_entropy(logits_a, labels.clone()) + cross_entropy(logits_b, labels)) * 0.5
}

/// Mean cross-entropy of rows of `logits` [n, classes] against integer `labels` [n].
pub(crate) fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let picked = log_softmax(logits, 1).gather(1, labels.unsqueeze_dim(1));
    picked.mean().neg()
}
