//! The whole OVSegmentor: image and text encoders, projection heads, logit scales and, for
//! training, the heads of the masked-entity and cross-image losses. Field names mirror the
//! reference checkpoint's top-level keys.

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::config::OvsegConfig;
use crate::heads::{MultimodalBlockConfig, MultimodalGrouping, ProjectMlp, ProjectMlpConfig};
use crate::text::TextEncoder;
use crate::vision::GroupVit;

/// Upper bound of exp(logit_scale) (the reference clamps at 100).
pub const MAX_LOGIT_SCALE: f64 = 100.0;

#[derive(Module, Debug)]
pub struct OvSegmentor<B: Backend> {
    pub img_encoder: GroupVit<B>,
    pub text_encoder: TextEncoder<B>,
    pub img_projector: ProjectMlp<B>,
    pub text_projector: ProjectMlp<B>,
    /// ln(1 / temperature), initialised to ln(1 / 0.07); shape [1] (0-d in checkpoints).
    pub logit_scale: Param<Tensor<B, 1>>,
    /// Present in stage-2 checkpoints; no loss reads it.
    pub logit_scale_mask: Param<Tensor<B, 1>>,
    /// Training-only parts (absent from exported inference models).
    pub img_encoder_momentum: Option<GroupVit<B>>,
    pub align_proj_img: Option<Linear<B>>,
    pub align_proj_text: Option<Linear<B>>,
    pub multimodal_groupingblock: Option<MultimodalGrouping<B>>,
    pub bridge_projector: Option<ProjectMlp<B>>,
}

impl OvsegConfig {
    /// The full model, with the heads and momentum encoder that training needs.
    pub fn init<B: Backend>(&self, device: &B::Device) -> OvSegmentor<B> {
        let ci = self.image.embed_dim;
        let ct = self.text.hidden_size;
        let width = self.multimodal_dim();
        let mut model = self.init_inference(device);
        model.img_encoder_momentum = Some(self.image.init(device));
        model.align_proj_img = (ci > ct).then(|| LinearConfig::new(ci, width).init(device));
        model.align_proj_text = (ct > ci).then(|| LinearConfig::new(ct, width).init(device));
        model.multimodal_groupingblock = Some(MultimodalGrouping {
            blocks: vec![MultimodalBlockConfig::new(width)
                .with_num_heads(self.entity_heads)
                .init(device)],
        });
        model.bridge_projector = Some(self.projector(width).init(device));
        model
    }

    /// Only what zero-shot segmentation reads.
    pub fn init_inference<B: Backend>(&self, device: &B::Device) -> OvSegmentor<B> {
        let scale = (1.0f64 / 0.07).ln();
        OvSegmentor {
            img_encoder: self.image.init(device),
            text_encoder: self.text.init(device),
            img_projector: self.projector(self.image.embed_dim).init(device),
            text_projector: self.projector(self.text.hidden_size).init(device),
            logit_scale: Param::from_tensor(Tensor::from_floats([scale as f32], device)),
            logit_scale_mask: Param::from_tensor(Tensor::from_floats([scale as f32], device)),
            img_encoder_momentum: None,
            align_proj_img: None,
            align_proj_text: None,
            multimodal_groupingblock: None,
            bridge_projector: None,
        }
    }

    fn projector(&self, in_dim: usize) -> ProjectMlpConfig {
        ProjectMlpConfig::new(in_dim, self.output_dim).with_inner_dim(self.proj_inner_dim)
    }
}

impl<B: Backend> OvSegmentor<B> {
    /// min(exp(logit_scale), 100) as a [1] tensor (differentiable).
    pub fn scale(&self) -> Tensor<B, 1> {
        self.logit_scale.val().exp().clamp_max(MAX_LOGIT_SCALE)
    }

    /// Drops the momentum encoder and the loss heads (for inference-only exports).
    pub fn into_inference(mut self) -> Self {
        self.img_encoder_momentum = None;
        self.align_proj_img = None;
        self.align_proj_text = None;
        self.multimodal_groupingblock = None;
        self.bridge_projector = None;
        self
    }

    /// Running statistics of every BatchNorm, to put back with [`Self::restore_batch_norms`].
    pub fn batch_norms(&self) -> Vec<(Tensor<B, 1>, Tensor<B, 1>)> {
        self.projectors().map(|p| p.norm.running()).collect()
    }

    pub fn restore_batch_norms(&self, saved: Vec<(Tensor<B, 1>, Tensor<B, 1>)>) {
        for (p, stats) in self.projectors().zip(saved) {
            p.norm.restore_running(stats);
        }
    }

    fn projectors(&self) -> impl Iterator<Item = &ProjectMlp<B>> {
        [&self.img_projector, &self.text_projector]
            .into_iter()
            .chain(self.bridge_projector.as_ref())
    }

    pub fn has_training_heads(&self) -> bool {
        self.multimodal_groupingblock.is_some() && self.bridge_projector.is_some()
    }

    /// Text CLS embeddings projected into the joint space: [B, output_dim] (not normalised).
    pub fn encode_text(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        training: bool,
    ) -> Tensor<B, 2> {
        self.text_projector
            .forward(self.text_encoder.forward_cls(ids, mask), training)
    }
}

/// L2-normalises the last axis like `F.normalize` (eps 1e-12).
pub fn normalize<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x / norm
}

impl<B: Backend> OvSegmentor<B> {
    /// Stage 2 starts with the momentum encoder equal to the online one.
    pub fn reset_momentum_encoder(&mut self) {
        self.img_encoder_momentum = Some(self.img_encoder.clone().no_grad());
    }

    /// momentum = m * momentum + (1 - m) * online, parameter by parameter (no gradients).
    pub fn update_momentum_encoder(&mut self, m: f64) {
        let Some(momentum) = self.img_encoder_momentum.take() else {
            return;
        };
        let mut online = ParamCollector::default();
        self.img_encoder.visit(&mut online);
        let mut ema = EmaMapper {
            online: online.tensors.into_iter(),
            m,
        };
        self.img_encoder_momentum = Some(momentum.map(&mut ema));
    }
}

/// Collects every float parameter, flattened, in visiting order.
#[derive(Default)]
struct ParamCollector<B: Backend> {
    tensors: Vec<Tensor<B, 1>>,
}

impl<B: Backend> burn::module::ModuleVisitor<B> for ParamCollector<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.tensors
            .push(param.val().detach().flatten::<1>(0, D - 1));
    }
}

/// Blends each parameter of a module with the same-position parameter of its twin.
struct EmaMapper<B: Backend> {
    online: std::vec::IntoIter<Tensor<B, 1>>,
    m: f64,
}

impl<B: Backend> burn::module::ModuleMapper<B> for EmaMapper<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let online = self
            .online
            .next()
            .expect("online and momentum encoders have the same structure");
        let m = self.m;
        param.map(|t| {
            let shape = t.shape();
            (t.detach() * m + online.reshape(shape) * (1.0 - m)).detach()
        })
    }
}
