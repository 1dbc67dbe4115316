use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use super::{autocast, merge_heads, scaled_dot_product, split_heads};

/// Multi-head self-attention with one fused `qkv` projection (timm's `Attention`).
#[derive(Config, Debug)]
pub struct FusedAttentionConfig {
    pub dim: usize,
    pub num_heads: usize,
}

#[derive(Module, Debug)]
pub struct FusedAttention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub num_heads: usize,
}

impl FusedAttentionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> FusedAttention<B> {
        FusedAttention {
            qkv: LinearConfig::new(self.dim, 3 * self.dim).init(device),
            proj: LinearConfig::new(self.dim, self.dim).init(device),
            num_heads: self.num_heads,
        }
    }
}

impl<B: Backend> FusedAttention<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, c] = x.dims();
        let h = self.num_heads;
        // [B, N, 3C] viewed as [B, N, 3, heads, head_dim], as the reference splits it.
        let qkv = autocast::linear(&self.qkv, x)
            .reshape([b, n, 3, h, c / h])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| {
            qkv.clone()
                .slice([i..i + 1, 0..b, 0..h, 0..n, 0..c / h])
                .reshape([b, h, n, c / h])
        };
        let out = scaled_dot_product(part(0), part(1), part(2), None);
        autocast::linear(&self.proj, merge_heads(out))
    }
}

/// Multi-head cross-attention with separate `q_proj`, `k_proj`, `v_proj` (GroupViT's
/// `Attention` used with a distinct key/value input).
#[derive(Config, Debug)]
pub struct CrossAttentionConfig {
    pub dim: usize,
    pub num_heads: usize,
}

#[derive(Module, Debug)]
pub struct CrossAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub proj: Linear<B>,
    pub num_heads: usize,
}

impl CrossAttentionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> CrossAttention<B> {
        let linear = || LinearConfig::new(self.dim, self.dim).init(device);
        CrossAttention {
            q_proj: linear(),
            k_proj: linear(),
            v_proj: linear(),
            proj: linear(),
            num_heads: self.num_heads,
        }
    }
}

impl<B: Backend> CrossAttention<B> {
    pub fn forward(&self, query: Tensor<B, 3>, key_value: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.num_heads;
        let q = split_heads(autocast::linear(&self.q_proj, query), h);
        let k = split_heads(autocast::linear(&self.k_proj, key_value.clone()), h);
        let v = split_heads(autocast::linear(&self.v_proj, key_value), h);
        autocast::linear(&self.proj, merge_heads(scaled_dot_product(q, k, v, None)))
    }
}
