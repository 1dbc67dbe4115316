use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;

use super::autocast;

/// Linear -> GELU (erf) -> Linear, timm's `Mlp` (`fc1`, `fc2`).
#[derive(Config, Debug)]
pub struct MlpConfig {
    pub in_features: usize,
    pub hidden_features: usize,
    pub out_features: usize,
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl MlpConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        Mlp {
            fc1: LinearConfig::new(self.in_features, self.hidden_features).init(device),
            fc2: LinearConfig::new(self.hidden_features, self.out_features).init(device),
        }
    }
}

impl<B: Backend> Mlp<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        autocast::linear(&self.fc2, gelu(autocast::linear(&self.fc1, x)))
    }
}
