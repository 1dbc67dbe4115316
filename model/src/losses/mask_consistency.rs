use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::min_cost_assignment;
use crate::model::normalize;

/// What the cross-image mask-consistency loss reads (docs/architecture.md, "Training").
pub struct MaskLossInputs<B: Backend> {
    /// q of the online encoder's grouping block on the image: [B, G, C].
    pub q_online: Tensor<B, 3>,
    /// q and k of the momentum encoder on the paired image: [B, G, C] and [B, N, C].
    pub q_momentum: Tensor<B, 3>,
    pub k_momentum: Tensor<B, 3>,
    /// Similarity of each projected segment token to the shared entity's text embedding: [B, G].
    pub group_entity_similarity: Tensor<B, 2>,
    /// Side of the square the masks are upsampled to (the training resolution, 224).
    pub upsample_to: usize,
}

/// Cross-image mask consistency: dice between the online image's cross-attention masks onto the
/// paired image and the momentum encoder's own masks of it, after Hungarian matching.
/// Reads one [B, G, G] distance matrix back to the host for the matching.
pub fn mask_consistency_loss<B: Backend>(inputs: MaskLossInputs<B>) -> Tensor<B, 1> {
    let MaskLossInputs {
        q_online,
        q_momentum,
        k_momentum,
        group_entity_similarity,
        upsample_to,
    } = inputs;
    let [b, g, c] = q_online.dims();
    let n = k_momentum.dims()[1];
    let side = (n as f64).sqrt().round() as usize;
    let scale = (c as f64).powf(-0.5);
    let k_t = k_momentum.detach().swap_dims(1, 2);
    let m_cross = q_online.matmul(k_t.clone()) * scale; // [B, G, N]
    let m_ref = (q_momentum.detach().matmul(k_t) * scale).detach();

    let upsample = |m: Tensor<B, 3>| {
        let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(true);
        interpolate(
            m.reshape([b, g, side, side]),
            [upsample_to, upsample_to],
            options,
        )
        .reshape([b, g, upsample_to * upsample_to])
    };
    let m_cross = upsample(m_cross);
    let m_ref = upsample(m_ref);

    let m_cross = without_gradient_for_unrelated_groups(m_cross, group_entity_similarity);
    let order = matching_order(m_cross.clone(), m_ref.clone());
    let m_ref = sigmoid(m_ref.gather(1, order));
    dice_loss(m_cross, m_ref)
}

/// The half of the groups least similar to the shared entity get no gradient: `m_cross`
/// [B, G, P] with those groups' rows detached.
fn without_gradient_for_unrelated_groups<B: Backend>(
    m_cross: Tensor<B, 3>,
    group_entity_similarity: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [b, g, _] = m_cross.dims();
    let low = (g as f64 * 0.5) as usize;
    if low == 0 {
        return m_cross;
    }
    let (_, lowest) = group_entity_similarity
        .detach()
        .neg()
        .topk_with_indices(low, 1); // [B, low]
    let dropped = lowest
        .one_hot::<3>(g)
        .sum_dim(1)
        .reshape([b, g, 1])
        .float()
        .clamp_max(1.0);
    let keep = dropped.clone().neg() + 1.0;
    m_cross.clone() * keep + m_cross.detach() * dropped
}

/// Hungarian matching on Euclidean distances of the L2-normalised masks (on the host): for
/// each online group, the index of its reference group, expanded over the pixels to gather
/// `m_ref` [B, G, P] with.
fn matching_order<B: Backend>(m_cross: Tensor<B, 3>, m_ref: Tensor<B, 3>) -> Tensor<B, 3, Int> {
    let [b, g, pixels] = m_cross.dims();
    let device = m_cross.device();
    let a = normalize(m_cross).detach();
    let r = normalize(m_ref);
    let a2 = a.clone().square().sum_dim(2); // [B, G, 1]
    let r2 = r.clone().square().sum_dim(2).swap_dims(1, 2); // [B, 1, G]
    let dist = (a2 + r2 - a.matmul(r.swap_dims(1, 2)) * 2.0)
        .clamp_min(0.0)
        .sqrt();
    let dist: Vec<f64> = dist
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("f64 distances");
    let order: Vec<i64> = (0..b)
        .flat_map(|i| min_cost_assignment(&dist[i * g * g..(i + 1) * g * g], g))
        .map(|col| col as i64)
        .collect();
    Tensor::<B, 3, Int>::from_data(TensorData::new(order, [b, g, 1]), &device)
        .expand([b, g, pixels])
}

/// Dice between the online masks, min-max scaled per group, and the matched reference masks
/// thresholded at 0.6 of their maximum; summed over the batch, averaged over the groups.
fn dice_loss<B: Backend>(m_cross: Tensor<B, 3>, m_ref: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, g, pixels] = m_cross.dims();
    let target = m_ref.clone().greater_equal(m_ref.max_dim(2) * 0.6).float();
    let min = m_cross.clone().min_dim(2);
    let max = m_cross.clone().max_dim(2);
    let pred = (m_cross - min.clone()) / (max - min);

    let pred = pred.reshape([b, g * pixels]);
    let target = target.reshape([b, g * pixels]);
    let inter = (pred.clone() * target.clone()).sum_dim(1) * 2.0 + 1.0;
    let union = pred.sum_dim(1) + target.sum_dim(1) + 1.0;
    let dice = (inter / union).neg() + 1.0; // [B, 1]
    dice.sum().div_scalar(g as f64)
}
