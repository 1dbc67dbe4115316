use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use super::{
    drop_path, CrossAttention, CrossAttentionConfig, Draws, FusedAttention, FusedAttentionConfig,
    Mlp, MlpConfig,
};

/// Pre-norm transformer block (timm's ViT `Block`): x + attn(norm1(x)), then x + mlp(norm2(x)).
#[derive(Config, Debug)]
pub struct TransformerBlockConfig {
    pub dim: usize,
    pub num_heads: usize,
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    #[config(default = 0.0)]
    pub drop_path: f64,
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: FusedAttention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub drop_path: f64,
}

impl TransformerBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerBlock<B> {
        let norm = || {
            LayerNormConfig::new(self.dim)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let hidden = (self.dim as f64 * self.mlp_ratio) as usize;
        TransformerBlock {
            norm1: norm(),
            attn: FusedAttentionConfig::new(self.dim, self.num_heads).init(device),
            norm2: norm(),
            mlp: MlpConfig::new(self.dim, hidden, self.dim).init(device),
            drop_path: self.drop_path,
        }
    }
}

impl<B: Backend> TransformerBlock<B> {
    pub fn forward(&self, x: Tensor<B, 3>, training: bool) -> Tensor<B, 3> {
        self.forward_with(x, Draws::from_training(training))
    }

    /// [`Self::forward`] with its drop-path masks (one per residual branch) from `draws`.
    pub fn forward_with(&self, x: Tensor<B, 3>, draws: Draws<'_>) -> Tensor<B, 3> {
        let attn = self.attn.forward(self.norm1.forward(x.clone()));
        let x = x + drop_path(attn, self.drop_path, draws);
        let mlp = self.mlp.forward(self.norm2.forward(x.clone()));
        x + drop_path(mlp, self.drop_path, draws)
    }
}

/// GroupViT's `CrossAttnBlock` with `post_norm=True`: the query is not normalised before
/// attention; q + attn(q, kv), then + mlp(norm2(.)), then `norm_post`.
#[derive(Config, Debug)]
pub struct CrossBlockPostConfig {
    pub dim: usize,
    pub num_heads: usize,
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
}

#[derive(Module, Debug)]
pub struct CrossBlockPost<B: Backend> {
    pub attn: CrossAttention<B>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub norm_post: LayerNorm<B>,
}

impl CrossBlockPostConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> CrossBlockPost<B> {
        let hidden = (self.dim as f64 * self.mlp_ratio) as usize;
        CrossBlockPost {
            attn: CrossAttentionConfig::new(self.dim, self.num_heads).init(device),
            norm2: LayerNormConfig::new(self.dim).init(device),
            mlp: MlpConfig::new(self.dim, hidden, self.dim).init(device),
            norm_post: LayerNormConfig::new(self.dim).init(device),
        }
    }
}

impl<B: Backend> CrossBlockPost<B> {
    pub fn forward(&self, query: Tensor<B, 3>, key_value: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = query.clone() + self.attn.forward(query, key_value);
        let x = x.clone() + self.mlp.forward(self.norm2.forward(x));
        self.norm_post.forward(x)
    }
}
