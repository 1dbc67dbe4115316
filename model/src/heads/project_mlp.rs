use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::nn::{autocast, BatchNorm1d, BatchNorm1dConfig, BatchStats};

/// The reference's 2-layer `ProjectMLP`: Conv1d(k=1) -> BatchNorm1d -> ReLU -> Conv1d(k=1).
/// A kernel-1 Conv1d is a Linear applied to every token; checkpoints hold it as
/// `linear_hidden.0` / `linear_hidden.1` (the norm) / `linear_out`.
#[derive(Config, Debug)]
pub struct ProjectMlpConfig {
    pub in_dim: usize,
    pub out_dim: usize,
    #[config(default = 4096)]
    pub inner_dim: usize,
}

#[derive(Module, Debug)]
pub struct ProjectMlp<B: Backend> {
    pub hidden: Linear<B>,
    pub norm: BatchNorm1d<B>,
    pub out: Linear<B>,
}

impl ProjectMlpConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ProjectMlp<B> {
        ProjectMlp {
            hidden: LinearConfig::new(self.in_dim, self.inner_dim).init(device),
            norm: BatchNorm1dConfig::new(self.inner_dim).init(device),
            out: LinearConfig::new(self.inner_dim, self.out_dim).init(device),
        }
    }
}

impl<B: Backend> ProjectMlp<B> {
    /// [N, C] -> [N, out]. BatchNorm statistics are over the N rows in training.
    pub fn forward(&self, x: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        self.forward_with(x, BatchStats::new(training))
    }

    pub fn forward_with(&self, x: Tensor<B, 2>, stats: BatchStats<'_, B>) -> Tensor<B, 2> {
        let h = self
            .norm
            .forward_with(autocast::linear(&self.hidden, x), stats);
        autocast::linear(&self.out, relu(h))
    }

    /// [B, L, C] -> [B, L, out], every token a row (as Conv1d over [B, C, L] normalises over B and L).
    pub fn forward_tokens(&self, x: Tensor<B, 3>, training: bool) -> Tensor<B, 3> {
        self.forward_tokens_with(x, BatchStats::new(training))
    }

    pub fn forward_tokens_with(&self, x: Tensor<B, 3>, stats: BatchStats<'_, B>) -> Tensor<B, 3> {
        let [b, l, c] = x.dims();
        let y = self.forward_with(x.reshape([b * l, c]), stats);
        let out = y.dims()[1];
        y.reshape([b, l, out])
    }
}
