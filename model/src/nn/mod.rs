//! Building blocks shared by the image encoder, the text encoder and the heads.

mod attention;
pub mod autocast;
mod batch_norm;
mod block;
mod collective;
mod drop_path;
mod mlp;
mod random;

pub use attention::{CrossAttention, CrossAttentionConfig, FusedAttention, FusedAttentionConfig};
pub use batch_norm::{BatchNorm1d, BatchNorm1dConfig};
pub use block::{CrossBlockPost, CrossBlockPostConfig, TransformerBlock, TransformerBlockConfig};
pub use collective::{BatchStats, GatherAll, LocalGather};
pub use drop_path::drop_path;
pub use mlp::{Mlp, MlpConfig};
pub use random::{Draws, RandomStream};

use burn::prelude::*;

/// Splits the last axis into heads: [B, N, C] -> [B, heads, N, C / heads].
pub(crate) fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
}

/// Inverse of [`split_heads`]: [B, heads, N, D] -> [B, N, heads * D].
pub(crate) fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// softmax(q k^T / sqrt(d) + mask) v over [B, heads, N, D] tensors. `key_padding` is
/// [B, S] with `true` where the key must be ignored.
pub(crate) fn scaled_dot_product<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    key_padding: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 4> {
    let head_dim = q.dims()[3];
    let mut scores = autocast::matmul(q, k.swap_dims(2, 3)) * (head_dim as f64).powf(-0.5);
    if let Some(pad) = key_padding {
        let [b, s] = pad.dims();
        let pad = pad.reshape([b, 1, 1, s]).expand(scores.dims());
        // HuggingFace adds finfo(float32).min; any value that underflows exp() behaves alike.
        scores = scores.mask_fill(pad, -1.0e9);
    }
    autocast::matmul(burn::tensor::activation::softmax(scores, 3), v)
}
