use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::nn::{autocast, Draws};

/// GroupViT's `AssignAttention` (1 head, qkv bias, `hard=True`, `gumbel=True`, assign_eps 1):
/// every patch picks one group; the softmax runs over the GROUP axis.
#[derive(Config, Debug)]
pub struct AssignAttentionConfig {
    pub dim: usize,
    #[config(default = true)]
    pub gumbel: bool,
}

#[derive(Module, Debug)]
pub struct AssignAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub proj: Linear<B>,
    pub gumbel: bool,
}

/// What the assignment produces besides the new group tokens.
#[derive(Debug, Clone)]
pub struct Assignment<B: Backend> {
    /// Plain softmax over groups, no noise: [B, 1, G, N]. Segmentation reads this.
    pub soft: Tensor<B, 4>,
    /// One-hot (straight-through) assignment actually used: [B, 1, G, N].
    pub hard: Tensor<B, 4>,
    /// q_proj(group tokens): [B, 1, G, C], for the mask-consistency loss.
    pub q: Tensor<B, 4>,
    /// k_proj(patch tokens): [B, 1, N, C].
    pub k: Tensor<B, 4>,
}

impl AssignAttentionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> AssignAttention<B> {
        let linear = || LinearConfig::new(self.dim, self.dim).init(device);
        AssignAttention {
            q_proj: linear(),
            k_proj: linear(),
            v_proj: linear(),
            proj: linear(),
            gumbel: self.gumbel,
        }
    }
}

impl<B: Backend> AssignAttention<B> {
    /// `groups` [B, G, C] attend to `x` [B, N, C]. Training adds Gumbel noise (tau 1), drawn
    /// from `draws`, before the hard choice (when `gumbel`); both modes pass the gradient of the
    /// soft map through the one-hot.
    pub fn forward(
        &self,
        groups: Tensor<B, 3>,
        x: Tensor<B, 3>,
        draws: Draws<'_>,
    ) -> (Tensor<B, 3>, Assignment<B>) {
        let [b, g, c] = groups.dims();
        let n = x.dims()[1];
        let q = autocast::linear(&self.q_proj, groups);
        let k = autocast::linear(&self.k_proj, x.clone());
        let v = autocast::linear(&self.v_proj, x);
        let logits = autocast::matmul(q.clone(), k.clone().swap_dims(1, 2)) * (c as f64).powf(-0.5); // [B, G, N]

        let soft = softmax(logits.clone(), 1);
        let uniform = self.gumbel.then(|| draws.uniform_like(&logits)).flatten();
        let choice = match uniform {
            Some(uniform) => {
                let gumbel = -(-uniform.log()).log();
                softmax(logits + gumbel, 1)
            }
            None => soft.clone(),
        };
        let index = choice.clone().argmax(1).squeeze_dim::<2>(1); // [B, N]
                                                                  // One-hot over groups by comparison with 0..G: `one_hot`'s bounds check would read the
                                                                  // device synchronously, which WebGPU in the browser cannot do.
        let group_ids = Tensor::<B, 1, Int>::arange(0..g as i64, &index.device())
            .reshape([1, g, 1])
            .expand([b, g, n]);
        let one_hot: Tensor<B, 3> = index
            .unsqueeze_dim::<3>(1)
            .expand([b, g, n])
            .equal(group_ids)
            .float(); // [B, G, N]
        let hard = one_hot - choice.clone().detach() + choice;

        let weights = hard.clone() / (hard.clone().sum_dim(2) + 1.0);
        let out = autocast::linear(&self.proj, autocast::matmul(weights, v));
        let assignment = Assignment {
            soft: soft.reshape([b, 1, g, n]),
            hard: hard.reshape([b, 1, g, n]),
            q: q.reshape([b, 1, g, c]),
            k: k.reshape([b, 1, n, c]),
        };
        (out, assignment)
    }
}
