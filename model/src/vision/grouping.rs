use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use super::{AssignAttention, AssignAttentionConfig, Assignment};
use crate::nn::{CrossBlockPost, CrossBlockPostConfig, Draws, Mlp, MlpConfig};

/// GroupViT's `GroupingBlock` (`layers.0.downsample`): G input group tokens become `num_output`
/// segments that gather the patches assigned to them.
#[derive(Config, Debug)]
pub struct GroupingBlockConfig {
    pub dim: usize,
    pub num_heads: usize,
    pub num_group_tokens: usize,
    pub num_output_groups: usize,
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    #[config(default = true)]
    pub gumbel: bool,
}

#[derive(Module, Debug)]
pub struct GroupingBlock<B: Backend> {
    pub norm_tokens: LayerNorm<B>,
    /// MLP across the token axis: G -> dim/2 -> num_output.
    pub mlp_inter: Mlp<B>,
    pub norm_post_tokens: LayerNorm<B>,
    pub norm_x: LayerNorm<B>,
    pub pre_assign_attn: CrossBlockPost<B>,
    pub assign: AssignAttention<B>,
    pub norm_new_x: LayerNorm<B>,
    pub mlp_channels: Mlp<B>,
}

pub struct GroupingOutput<B: Backend> {
    /// New segment tokens [B, num_output, C].
    pub segments: Tensor<B, 3>,
    pub assignment: Assignment<B>,
}

impl GroupingBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupingBlock<B> {
        let d = self.dim;
        let norm = || LayerNormConfig::new(d).init(device);
        let channels_hidden = (d as f64 * self.mlp_ratio) as usize;
        GroupingBlock {
            norm_tokens: norm(),
            mlp_inter: MlpConfig::new(self.num_group_tokens, d / 2, self.num_output_groups)
                .init(device),
            norm_post_tokens: norm(),
            norm_x: norm(),
            pre_assign_attn: CrossBlockPostConfig::new(d, self.num_heads)
                .with_mlp_ratio(self.mlp_ratio)
                .init(device),
            assign: AssignAttentionConfig::new(d)
                .with_gumbel(self.gumbel)
                .init(device),
            norm_new_x: norm(),
            mlp_channels: MlpConfig::new(d, channels_hidden, d).init(device),
        }
    }
}

impl<B: Backend> GroupingBlock<B> {
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        group_tokens: Tensor<B, 3>,
        draws: Draws<'_>,
    ) -> GroupingOutput<B> {
        let x = self.norm_x.forward(x);
        let tokens = self.norm_tokens.forward(group_tokens);
        let projected = self
            .mlp_inter
            .forward(tokens.swap_dims(1, 2))
            .swap_dims(1, 2);
        let projected = self.norm_post_tokens.forward(projected);
        let projected = self.pre_assign_attn.forward(projected, x.clone());
        let (gathered, assignment) = self.assign.forward(projected.clone(), x, draws);
        // `reduction` is the identity: input and output widths agree in every released model.
        let new = gathered + projected;
        let segments = new.clone() + self.mlp_channels.forward(self.norm_new_x.forward(new));
        GroupingOutput {
            segments,
            assignment,
        }
    }
}
