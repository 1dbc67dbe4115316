use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use crate::nn::{CrossBlockPost, CrossBlockPostConfig, TransformerBlock, TransformerBlockConfig};

/// One block of `multimodal_groupingblock` (masked entity completion, docs/architecture.md,
/// "Training"): the question tokens attend to the visual segments (post-norm cross block), then a
/// pre-norm self-attention block runs over them (padding included, as in the reference); the answer
/// vector is the first token.
#[derive(Config, Debug)]
pub struct MultimodalBlockConfig {
    pub dim: usize,
    #[config(default = 8)]
    pub num_heads: usize,
}

#[derive(Module, Debug)]
pub struct MultimodalBlock<B: Backend> {
    pub norm_tokens: LayerNorm<B>,
    pub norm_x: LayerNorm<B>,
    pub pre_assign_attn: CrossBlockPost<B>,
    pub post_attn: TransformerBlock<B>,
    pub norm_new_x: LayerNorm<B>,
}

/// `multimodal_groupingblock`, holding its blocks like the reference does.
#[derive(Module, Debug)]
pub struct MultimodalGrouping<B: Backend> {
    pub blocks: Vec<MultimodalBlock<B>>,
}

impl MultimodalBlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> MultimodalBlock<B> {
        let norm = || LayerNormConfig::new(self.dim).init(device);
        MultimodalBlock {
            norm_tokens: norm(),
            norm_x: norm(),
            pre_assign_attn: CrossBlockPostConfig::new(self.dim, self.num_heads).init(device),
            post_attn: TransformerBlockConfig::new(self.dim, self.num_heads).init(device),
            norm_new_x: norm(),
        }
    }
}

impl<B: Backend> MultimodalBlock<B> {
    /// `visual` [B, G, D] segment tokens, `question` [B, L, D] question tokens -> [B, D].
    pub fn forward(
        &self,
        visual: Tensor<B, 3>,
        question: Tensor<B, 3>,
        training: bool,
    ) -> Tensor<B, 2> {
        let t = self.pre_assign_attn.forward(
            self.norm_tokens.forward(question),
            self.norm_x.forward(visual),
        );
        let new = self.post_attn.forward(t.clone(), training) + t;
        let new = self.norm_new_x.forward(new);
        let [b, _, d] = new.dims();
        new.slice([0..b, 0..1, 0..d]).reshape([b, d])
    }
}

impl<B: Backend> MultimodalGrouping<B> {
    pub fn forward(
        &self,
        visual: Tensor<B, 3>,
        question: Tensor<B, 3>,
        training: bool,
    ) -> Tensor<B, 2> {
        // The reference builds one block and reads the answer from it.
        self.blocks[0].forward(visual, question, training)
    }
}
