use burn::prelude::*;

use crate::model::normalize;

/// Group naming, an ovseg addition (not in the paper, off in its recipes): every entity class a
/// caption names must be matched by one of its picture's groups better than the batch's other
/// classes match any group. This is what zero-shot segmentation reads (docs/architecture.md,
/// "Inference" names each group by its projected embedding against the class prompts); the paper's
/// losses only train the groups through their mean (matching) and the multimodal block (masked
/// entity).
///
/// `groups` [B, G, D] projected segment tokens, `prompts` [C, D] the projected text embeddings
/// of "a photo of a {class}." for the C classes of the batch, `positives` [B, C] 1 where the
/// caption of picture b names class c, `count` the number of ones (at least one).
///
/// Per positive (b, c), with s = scale * max over groups of cos(group, prompt):
/// -log(exp(s_bc) / (exp(s_bc) + sum over classes n not named by b of exp(s_bn))), averaged
/// over the positives (the other classes of the same caption are not negatives).
pub fn group_naming_loss<B: Backend>(
    groups: Tensor<B, 3>,
    prompts: Tensor<B, 2>,
    positives: Tensor<B, 2>,
    count: usize,
    scale: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [b, _, _] = groups.dims();
    let c = prompts.dims()[0];
    let groups = normalize(groups);
    let prompts = normalize(prompts);
    let similarity = groups.matmul(prompts.transpose().unsqueeze_dim::<3>(0)); // [B, G, C]
    let best = similarity.max_dim(1).reshape([b, c]);
    let logits = best * scale.unsqueeze_dim::<2>(0);
    // Shifted by the row maximum, which cancels out of every term.
    let shift = logits.clone().detach().max_dim(1);
    let shifted = logits - shift;
    let exp = shifted.clone().exp();
    let negatives = (exp.clone() * positives.clone().neg().add_scalar(1.0)).sum_dim(1);
    let per_positive = (exp + negatives).log() - shifted;
    (per_positive * positives).sum() / count as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn the_loss_is_the_cross_entropy_of_the_best_groups_against_the_unnamed_classes() {
        let device = Default::default();
        // Two pictures of two groups in 2-d; three classes along the axes and a diagonal.
        let groups = Tensor::<B, 3>::from_floats(
            [[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [-1.0, 0.0]]],
            &device,
        );
        let prompts = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], &device);
        // Picture 0 names classes 0 and 1, picture 1 names class 2.
        let positives = Tensor::<B, 2>::from_floats([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], &device);
        let scale = Tensor::<B, 1>::from_floats([2.0], &device);
        let loss = group_naming_loss(groups, prompts, positives, 3, scale)
            .into_scalar()
            .elem::<f64>();

        let r = 0.5f64.sqrt();
        // Best cosines: picture 0: class 0 -> 1, class 1 -> 1, class 2 -> r.
        // Picture 1: groups (r, r) and (-1, 0): class 0 -> r, class 1 -> r, class 2 -> 1.
        let term = |s: f64, negatives: &[f64]| {
            let denominator =
                (2.0 * s).exp() + negatives.iter().map(|n| (2.0 * n).exp()).sum::<f64>();
            -((2.0 * s).exp() / denominator).ln()
        };
        let expected = (term(1.0, &[r]) + term(1.0, &[r]) + term(1.0, &[r, r])) / 3.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    }
}
