use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::{Assignment, GroupingBlock, GroupingBlockConfig};
use crate::config::ImageConfig;
use crate::nn::{Draws, TransformerBlock, TransformerBlockConfig};

/// `patch_embed.proj`: Conv2d(3, C, p, stride p).
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: Conv2d<B>,
}

/// One GroupViT stage (`layers.i`): blocks over [patches, group tokens], then optionally the
/// grouping block that turns them into segments.
#[derive(Module, Debug)]
pub struct GroupingLayer<B: Backend> {
    pub group_token: Option<Param<Tensor<B, 3>>>,
    pub blocks: Vec<TransformerBlock<B>>,
    pub downsample: Option<GroupingBlock<B>>,
}

/// The GroupViT image encoder with its two stages.
#[derive(Module, Debug)]
pub struct GroupVit<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    /// [N, C] learned position embedding of the training grid (no cls position).
    pub pos_embed: Param<Tensor<B, 2>>,
    pub layers: Vec<GroupingLayer<B>>,
    pub norm: LayerNorm<B>,
    pub patch_size: usize,
    /// [`ImageConfig::segment_window`], resolved.
    pub segment_window: usize,
}

/// Everything the encoder exposes to the heads, the losses and segmentation.
#[derive(Debug, Clone)]
pub struct GroupVitOutput<B: Backend> {
    /// Segment tokens after the final norm, before projection: [B, G, C].
    pub segments: Tensor<B, 3>,
    /// Their average: [B, C].
    pub pooled: Tensor<B, 2>,
    /// Stage-0 assignment of patches to groups.
    pub assignment: Assignment<B>,
    /// Patch grid (rows, cols) of this input.
    pub grid: [usize; 2],
}

impl ImageConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupVit<B> {
        let d = self.embed_dim;
        let total_depth: usize = self.depths.iter().sum();
        let rate = |i: usize| {
            if total_depth > 1 {
                self.drop_path_rate * i as f64 / (total_depth - 1) as f64
            } else {
                0.0
            }
        };
        let mut block_index = 0;
        let mut layers = Vec::new();
        for stage in 0..self.depths.len() {
            let blocks = (0..self.depths[stage])
                .map(|_| {
                    let block = TransformerBlockConfig::new(d, self.num_heads[stage])
                        .with_mlp_ratio(self.mlp_ratio)
                        .with_drop_path(rate(block_index))
                        .init(device);
                    block_index += 1;
                    block
                })
                .collect();
            let groups = self.num_group_tokens[stage];
            let group_token = (groups > 0).then(|| {
                Param::from_tensor(Tensor::random(
                    [1, groups, d],
                    burn::tensor::Distribution::Normal(0.0, 0.02),
                    device,
                ))
            });
            let downsample = self.num_output_groups.get(stage).map(|&out| {
                GroupingBlockConfig::new(d, self.num_heads[stage], groups, out)
                    .with_mlp_ratio(self.mlp_ratio)
                    .with_gumbel(self.gumbel)
                    .init(device)
            });
            layers.push(GroupingLayer {
                group_token,
                blocks,
                downsample,
            });
        }
        let p = self.patch_size;
        GroupVit {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([3, d], [p, p])
                    .with_stride([p, p])
                    .init(device),
            },
            pos_embed: Param::from_tensor(Tensor::random(
                [self.grid() * self.grid(), d],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )),
            layers,
            norm: LayerNormConfig::new(d).init(device),
            patch_size: p,
            segment_window: self.segment_window.unwrap_or(2 * self.img_size),
        }
    }
}

impl<B: Backend> GroupVit<B> {
    /// `images`: [B, 3, H, W] normalised, H and W multiples of the patch size. Training draws
    /// from the backend's generator; the trainer uses [`Self::forward_with`].
    pub fn forward(&self, images: Tensor<B, 4>, training: bool) -> GroupVitOutput<B> {
        self.forward_with(images, Draws::from_training(training))
    }

    /// [`Self::forward`] with its drop-path masks and Gumbel noise from `draws`.
    pub fn forward_with(&self, images: Tensor<B, 4>, draws: Draws<'_>) -> GroupVitOutput<B> {
        let x = self.patch_embed.proj.forward(images);
        let [b, c, h, w] = x.dims();
        let x = x.flatten::<3>(2, 3).swap_dims(1, 2); // [B, N, C]
        let x = x + self.position_embedding(h, w).unsqueeze_dim(0);

        let mut x = x;
        let mut assignment = None;
        for layer in &self.layers {
            let n = x.dims()[1];
            let mut tokens = match &layer.group_token {
                Some(g) => Tensor::cat(vec![x, g.val().expand([b, g.dims()[1], c])], 1),
                None => x,
            };
            for block in &layer.blocks {
                tokens = block.forward_with(tokens, draws);
            }
            x = match &layer.downsample {
                Some(down) => {
                    let total = tokens.dims()[1];
                    let patches = tokens.clone().slice([0..b, 0..n, 0..c]);
                    let group_tokens = tokens.slice([0..b, n..total, 0..c]);
                    let out = down.forward(patches, group_tokens, draws);
                    assignment = Some(out.assignment);
                    out.segments
                }
                None => tokens,
            };
        }
        let segments = self.norm.forward(x);
        let pooled = segments.clone().mean_dim(1).squeeze_dim::<2>(1);
        GroupVitOutput {
            segments,
            pooled,
            assignment: assignment.expect("a validated config has a grouping stage"),
            grid: [h, w],
        }
    }

    /// The learned [N, C] embedding, resized bicubically (align_corners false) when the patch grid
    /// differs from the training one.
    pub fn position_embedding(&self, rows: usize, cols: usize) -> Tensor<B, 2> {
        let pe = self.pos_embed.val();
        let [n, c] = pe.dims();
        let side = (n as f64).sqrt().round() as usize;
        if rows == side && cols == side {
            return pe;
        }
        let grid = pe.reshape([1, side, side, c]).permute([0, 3, 1, 2]);
        let options = InterpolateOptions::new(InterpolateMode::Bicubic).with_align_corners(false);
        interpolate(grid, [rows, cols], options)
            .permute([0, 2, 3, 1])
            .reshape([rows * cols, c])
    }

    /// Side of the square training input (the resolution `pos_embed` was learned at).
    pub fn training_size(&self) -> usize {
        let n = self.pos_embed.dims()[0];
        (n as f64).sqrt().round() as usize * self.patch_size
    }

    /// Output width C.
    pub fn embed_dim(&self) -> usize {
        self.pos_embed.dims()[1]
    }
}
