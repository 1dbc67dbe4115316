//! AdamW as the reference sets it up: weight decay on every trainable parameter except those
//! with one dimension and those named `*.bias` (the 0-d `logit_scale` of the reference is a
//! [1] tensor here, and decayed like the original), gradient clipping at a global norm, and a
//! state that checkpoints carry.

use std::collections::HashSet;

use anyhow::{Context, Result};
use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer as _};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use ovseg_model::{checksum, OvSegmentor};

use super::checkpoint::OPTIMIZER_FILE;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWSettings {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    /// Global gradient norm above which gradients are scaled down (torch's clip_grad_norm_).
    pub clip_grad: Option<f64>,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.05,
            clip_grad: Some(5.0),
        }
    }
}

type Adaptor<B> = OptimizerAdaptor<AdamW, OvSegmentor<B>, B>;

pub struct Optimizer<B: AutodiffBackend> {
    decayed: Adaptor<B>,
    not_decayed: Adaptor<B>,
    no_decay: HashSet<ParamId>,
    settings: AdamWSettings,
}

/// Ids of the parameters that take no weight decay: one-dimensional ones and biases, except
/// the logit scales (0-d in the reference, so decayed there).
pub fn no_decay_params<B: Backend>(model: &OvSegmentor<B>) -> HashSet<ParamId> {
    #[derive(Default)]
    struct Groups {
        path: Vec<String>,
        no_decay: HashSet<ParamId>,
    }
    impl<B: Backend> ModuleVisitor<B> for Groups {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let name = self.path.last().map(String::as_str).unwrap_or("");
            let scalar_in_reference = name.starts_with("logit_scale");
            if (D == 1 && !scalar_in_reference) || name == "bias" || name == "beta" {
                self.no_decay.insert(param.id);
            }
        }
    }
    let mut groups = Groups::default();
    model.visit(&mut groups);
    groups.no_decay
}

impl<B: AutodiffBackend> Optimizer<B> {
    pub fn new(model: &OvSegmentor<B>, settings: AdamWSettings) -> Self {
        let config = AdamWConfig::new()
            .with_beta_1(settings.beta_1)
            .with_beta_2(settings.beta_2)
            .with_epsilon(settings.epsilon);
        Self {
            decayed: config
                .clone()
                .with_weight_decay(settings.weight_decay)
                .init(),
            not_decayed: config.with_weight_decay(0.0).init(),
            no_decay: no_decay_params(model),
            settings,
        }
    }

    /// The global norm of `grads` (a [1] device tensor), to check before [`Self::step`].
    pub fn grad_norm(
        &self,
        model: &OvSegmentor<B>,
        grads: &GradientsParams,
    ) -> Tensor<B::InnerBackend, 1> {
        global_norm(model, grads)
    }

    /// Clips `grads` to the global norm (when set; `norm` from [`Self::grad_norm`]) and applies
    /// them.
    pub fn step(
        &mut self,
        lr: f64,
        model: OvSegmentor<B>,
        mut grads: GradientsParams,
        norm: Tensor<B::InnerBackend, 1>,
    ) -> OvSegmentor<B> {
        if let Some(max) = self.settings.clip_grad {
            // torch: clip_coef = max / (norm + 1e-6), applied when below 1.
            let factor = (norm + 1e-6).recip().mul_scalar(max).clamp_max(1.0);
            scale_grads(&model, &mut grads, factor);
        }
        let mut decayed = GradientsParams::new();
        split_grads(&model, &mut grads, &mut decayed, &self.no_decay);
        let model = self.decayed.step(lr, model, decayed);
        self.not_decayed.step(lr, model, grads)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let record = (self.decayed.to_record(), self.not_decayed.to_record());
        let mut bytes = recorder
            .record(record, ())
            .context("cannot serialise the optimizer state")?;
        checksum::seal(&mut bytes);
        Ok(bytes)
    }

    /// Reads [`Self::to_bytes`] output (checkpoints from before the checksum trailer too).
    pub fn load_bytes(mut self, bytes: Vec<u8>, device: &B::Device) -> Result<Self> {
        let mut bytes = bytes;
        checksum::open(&mut bytes, OPTIMIZER_FILE)?;
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
        let (decayed, not_decayed) = recorder
            .load(bytes, device)
            .context("not an ovseg optimizer state")?;
        self.decayed = self.decayed.load_record(decayed);
        self.not_decayed = self.not_decayed.load_record(not_decayed);
        Ok(self)
    }
}

/// sqrt of the sum of squares of every gradient, as a [1] tensor.
fn global_norm<B: AutodiffBackend>(
    model: &OvSegmentor<B>,
    grads: &GradientsParams,
) -> Tensor<B::InnerBackend, 1> {
    struct Norm<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        sum: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Norm<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let s = g.square().sum();
                self.sum = Some(match self.sum.take() {
                    Some(acc) => acc + s,
                    None => s,
                });
            }
        }
    }
    let mut visitor = Norm::<B> { grads, sum: None };
    model.visit(&mut visitor);
    let device = model.logit_scale.val().inner().device();
    visitor
        .sum
        .unwrap_or_else(|| Tensor::zeros([1], &device))
        .sqrt()
}

fn scale_grads<B: AutodiffBackend>(
    model: &OvSegmentor<B>,
    grads: &mut GradientsParams,
    factor: Tensor<B::InnerBackend, 1>,
) {
    struct Scale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        factor: Tensor<B::InnerBackend, 1>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let factor = self.factor.clone().reshape([1; D]);
                self.grads.register(param.id, g * factor);
            }
        }
    }
    model.visit(&mut Scale::<B> { grads, factor });
}

/// Moves the gradients of decayed parameters from `grads` into `decayed`.
fn split_grads<B: AutodiffBackend>(
    model: &OvSegmentor<B>,
    grads: &mut GradientsParams,
    decayed: &mut GradientsParams,
    no_decay: &HashSet<ParamId>,
) {
    struct Split<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        decayed: &'a mut GradientsParams,
        no_decay: &'a HashSet<ParamId>,
        _backend: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.no_decay.contains(&param.id) {
                return;
            }
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.decayed.register(param.id, g);
            }
        }
    }
    model.visit(&mut Split::<B> {
        grads,
        decayed,
        no_decay,
        _backend: std::marker::PhantomData,
    });
}
