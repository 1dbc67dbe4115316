//! HuggingFace `BertModel` (post-norm, GELU erf, token type 0, padding masked), with field names
//! that mirror `text_encoder.transformer.*` (`LayerNorm` -> `layer_norm`, `self` -> `self_attn`).
//! `RobertaModel` has the same modules and names; its position ids are in `roberta.rs`.

use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;

use crate::config::{TextConfig, TextModelType};
use crate::nn::{autocast, merge_heads, scaled_dot_product, split_heads};

#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Embedding<B>,
    pub token_type_embeddings: Embedding<B>,
    pub layer_norm: LayerNorm<B>,
    pub pad_token_id: usize,
    /// How position ids are numbered (BERT: 0..L; RoBERTa: `roberta::position_ids`).
    pub model_type: TextModelType,
}

#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub num_heads: usize,
}

/// `dense` + residual + `LayerNorm`, shared by the attention output and the block output.
#[derive(Module, Debug)]
pub struct BertResidualOutput<B: Backend> {
    pub dense: Linear<B>,
    pub layer_norm: LayerNorm<B>,
}

#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    pub self_attn: BertSelfAttention<B>,
    pub output: BertResidualOutput<B>,
}

#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    pub dense: Linear<B>,
}

#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    pub attention: BertAttention<B>,
    pub intermediate: BertIntermediate<B>,
    pub output: BertResidualOutput<B>,
}

#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    pub layer: Vec<BertLayer<B>>,
}

#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub encoder: BertEncoder<B>,
}

/// `text_encoder`: the reference wraps the BERT or RoBERTa in a module whose field is
/// `transformer`.
#[derive(Module, Debug)]
pub struct TextEncoder<B: Backend> {
    pub transformer: Bert<B>,
}

impl TextConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> TextEncoder<B> {
        let h = self.hidden_size;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let residual = |i: usize| BertResidualOutput {
            dense: linear(i, h),
            layer_norm: norm(),
        };
        let layer = || BertLayer {
            attention: BertAttention {
                self_attn: BertSelfAttention {
                    query: linear(h, h),
                    key: linear(h, h),
                    value: linear(h, h),
                    num_heads: self.num_attention_heads,
                },
                output: residual(h),
            },
            intermediate: BertIntermediate {
                dense: linear(h, self.intermediate_size),
            },
            output: residual(self.intermediate_size),
        };
        TextEncoder {
            transformer: Bert {
                embeddings: BertEmbeddings {
                    word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                    position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                        .init(device),
                    token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h)
                        .init(device),
                    layer_norm: norm(),
                    pad_token_id: self.pad_token_id,
                    model_type: self.model_type,
                },
                encoder: BertEncoder {
                    layer: (0..self.num_hidden_layers).map(|_| layer()).collect(),
                },
            },
        }
    }
}

impl<B: Backend> BertResidualOutput<B> {
    fn forward(&self, hidden: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layer_norm
            .forward(autocast::linear(&self.dense, hidden) + residual)
    }
}

impl<B: Backend> BertLayer<B> {
    fn forward(&self, x: Tensor<B, 3>, padding: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let a = &self.attention.self_attn;
        let h = a.num_heads;
        let q = split_heads(autocast::linear(&a.query, x.clone()), h);
        let k = split_heads(autocast::linear(&a.key, x.clone()), h);
        let v = split_heads(autocast::linear(&a.value, x.clone()), h);
        let context = merge_heads(scaled_dot_product(q, k, v, Some(padding)));
        let x = self.attention.output.forward(context, x);
        let inner = gelu(autocast::linear(&self.intermediate.dense, x.clone()));
        self.output.forward(inner, x)
    }
}

impl<B: Backend> Bert<B> {
    /// `ids` [B, L] token ids, `mask` [B, L] 1 for real tokens and 0 for padding.
    /// Returns the last hidden state [B, L, hidden].
    pub fn forward(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, l] = ids.dims();
        let device = ids.device();
        let e = &self.embeddings;
        let positions = match e.model_type {
            TextModelType::Bert => Tensor::<B, 1, Int>::arange(0..l as i64, &device)
                .unsqueeze_dim::<2>(0)
                .expand([b, l]),
            TextModelType::Roberta => super::roberta::position_ids(ids.clone(), e.pad_token_id),
        };
        let types = Tensor::<B, 2, Int>::zeros([b, l], &device);
        let words = e.word_embeddings.forward(ids.clone());
        // nn.Embedding(padding_idx=pad): the padding row never receives a gradient.
        let is_pad = ids
            .equal_elem(e.pad_token_id as i64)
            .unsqueeze_dim::<3>(2)
            .expand(words.dims());
        let words = words.clone().mask_where(is_pad, words.detach());
        let x = words
            + e.token_type_embeddings.forward(types)
            + e.position_embeddings.forward(positions);
        let mut x = e.layer_norm.forward(x);
        let padding = mask.equal_elem(0);
        for layer in &self.encoder.layer {
            x = layer.forward(x, padding.clone());
        }
        x
    }
}

impl<B: Backend> TextEncoder<B> {
    pub fn forward(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.transformer.forward(ids, mask)
    }

    /// The first token's hidden state (`[CLS]`, or RoBERTa's `<s>`): [B, hidden].
    pub fn forward_cls(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let hidden = self.forward(ids, mask);
        let [b, _, h] = hidden.dims();
        hidden.slice([0..b, 0..1, 0..h]).reshape([b, h])
    }

    pub fn hidden_size(&self) -> usize {
        self.transformer.embeddings.word_embeddings.weight.dims()[1]
    }
}
