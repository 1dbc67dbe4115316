//! One device's share of training: its model replica, optimizer and the step itself (forward
//! of the three losses, backward, gradient accumulation, all-reduce, clipping, AdamW, EMA).

use std::sync::Arc;

use crate::data::{micro_batch_start, Batch};
use anyhow::{bail, Result};
use burn::backend::Autodiff;
use burn::collective::{all_reduce, ReduceOperation};
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{FloatDType, TensorPrimitive};
use ovseg_model::losses::{
    CrossPair, GatherAll, GroupNaming, LocalGather, LossOptions, Losses, TextInput, TrainBatch,
};
use ovseg_model::nn::{autocast, RandomStream};
use ovseg_model::segmentation::TemplateSet;
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvSegmentor;

use super::collective::{all_reduce_gradients, CollectiveGather};
use super::optimizer::{AdamWSettings, Optimizer};
use super::text_cache::{FrozenText, TextRows};

/// Loss values of one optimizer step, averaged over micro-batches and devices.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepValues {
    pub matching: f64,
    pub entity: f64,
    pub mask: Option<f64>,
    pub naming: Option<f64>,
    pub total: f64,
    pub grad_norm: f64,
    /// The loss was NaN or infinite: no weight changed.
    pub skipped: bool,
    /// Several devices: seconds this device spent in the gradient all-reduce (waiting for the
    /// slowest device included) and the gradient bytes it all-reduced.
    pub reduce: Option<(f64, u64)>,
}

#[derive(Debug, Clone, Copy)]
pub struct ReplicaSettings {
    pub adamw: AdamWSettings,
    /// Stage 2: EMA factor of the momentum encoder after every optimizer step.
    pub momentum: Option<f64>,
    pub seed: u64,
    /// The text encoder is frozen (stage 2, or stage 1 with `freeze_text_encoder`): its outputs
    /// are cached per text, in at most this many MB of device memory.
    pub frozen_text_cache_mb: Option<usize>,
    /// Mixed precision of the forward (`ovseg_model::nn::autocast`); `None`: all f32.
    pub autocast: Option<FloatDType>,
    /// Weight of ovseg's group-naming loss; `None`: the paper's losses only.
    pub group_naming: Option<f64>,
}

pub struct Replica<B: Backend> {
    model: Option<OvSegmentor<Autodiff<B>>>,
    optimizer: Optimizer<Autodiff<B>>,
    tokenizer: Arc<TextTokenizer>,
    device: B::Device,
    gather: Option<CollectiveGather>,
    settings: ReplicaSettings,
    frozen_text: Option<FrozenText<B>>,
}

impl<B: Backend> Replica<B> {
    pub fn new(
        model: OvSegmentor<Autodiff<B>>,
        tokenizer: Arc<TextTokenizer>,
        device: B::Device,
        gather: Option<CollectiveGather>,
        settings: ReplicaSettings,
    ) -> Self {
        let optimizer = Optimizer::new(&model, settings.adamw);
        let frozen_text = settings
            .frozen_text_cache_mb
            .map(|mb| FrozenText::new(model.text_encoder.valid(), mb, device.clone()));
        Self {
            model: Some(model),
            optimizer,
            tokenizer,
            device,
            gather,
            settings,
            frozen_text,
        }
    }

    pub fn model(&self) -> &OvSegmentor<Autodiff<B>> {
        self.model
            .as_ref()
            .expect("the model is only taken inside a step")
    }

    /// This device's place in the gradient all-reduce (`None`: the only device).
    pub fn gather(&self) -> Option<CollectiveGather> {
        self.gather
    }

    pub fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        self.optimizer.to_bytes()
    }

    pub fn load_optimizer(&mut self, bytes: Vec<u8>) -> Result<()> {
        let optimizer = Optimizer::new(self.model(), self.settings.adamw);
        self.optimizer = optimizer.load_bytes(bytes, &self.device)?;
        Ok(())
    }

    /// One optimizer step over `micro` (the gradient-accumulation micro-batches of this device,
    /// laid out in the global batch as [`micro_batch_start`] says).
    pub fn step(&mut self, micro: &[Batch], lr: f64, step: usize) -> Result<StepValues> {
        if micro.is_empty() {
            bail!("a training step needs at least one batch");
        }
        let model = self.model.take().expect("model present between steps");
        let batch_norms = model.batch_norms();
        let (grads, sums) = match self.accumulate(&model, micro, step) {
            Ok(Accumulated::Gradients(grads, sums)) => (grads, sums),
            Ok(Accumulated::NonFinite(values)) => {
                // The forward already moved the BatchNorm running statistics.
                model.restore_batch_norms(batch_norms);
                self.model = Some(model);
                return Ok(values);
            }
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let mut values = StepValues {
            matching: sums[0],
            entity: sums[1],
            mask: self.settings.momentum.map(|_| sums[2]),
            naming: self.settings.group_naming.map(|_| sums[4]),
            total: sums[3],
            grad_norm: f64::NAN,
            skipped: true,
            reduce: None,
        };
        let mut grads = grads;
        if let Some(g) = &self.gather {
            let began = std::time::Instant::now();
            let (reduced, elements) =
                all_reduce_gradients(&model, grads, g.peer, ReduceOperation::Mean)
                    .map_err(|e| anyhow::anyhow!("gradient all-reduce failed: {e:?}"))?;
            grads = reduced;
            values.reduce = Some((began.elapsed().as_secs_f64(), 4 * elements as u64));
        }
        let norm = self.optimizer.grad_norm(&model, &grads);
        values.grad_norm = norm.clone().into_scalar().elem::<f64>();
        if !values.grad_norm.is_finite() {
            // A finite loss can still have non-finite gradients (a NaN pixel that a clamp
            // hides from the loss): nothing is applied.
            model.restore_batch_norms(batch_norms);
            self.model = Some(model);
            return Ok(values);
        }
        let mut model = self.optimizer.step(lr, model, grads, norm);
        if let Some(m) = self.settings.momentum {
            model.update_momentum_encoder(m);
        }
        self.model = Some(model);
        values.skipped = false;
        Ok(values)
    }

    /// Forward and backward of every micro-batch, each with the random draws of its rows of the
    /// global batch (docs/training.md, "What a step sees"); gradients and loss values are
    /// averaged over the micro-batches.
    fn accumulate(
        &mut self,
        model: &OvSegmentor<Autodiff<B>>,
        micro: &[Batch],
        step: usize,
    ) -> Result<Accumulated> {
        let (rank, world) = self.gather.map_or((0, 1), |g| (g.rank, g.world));
        let mut accumulator = GradientsAccumulator::<OvSegmentor<Autodiff<B>>>::new();
        let mut sums = [0.0f64; 5];
        let scale = 1.0 / micro.len() as f64;
        for (index, batch) in micro.iter().enumerate() {
            let first = micro_batch_start(index, rank, world, batch.size);
            let stream = RandomStream::new(self.settings.seed, step as u64, first as u64);
            let losses = autocast::scope(self.settings.autocast, || {
                self.forward(model, batch, &stream)
            })?;
            let values = self.loss_values(&losses);
            if values.len() != 5 || values.iter().any(|v| !v.is_finite()) {
                return Ok(Accumulated::NonFinite(skipped_values(&values, &losses)));
            }
            for (sum, v) in sums.iter_mut().zip(&values) {
                *sum += *v as f64 * scale;
            }
            let grads = (losses.total * scale).backward();
            accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
        }
        Ok(Accumulated::Gradients(accumulator.grads(), sums))
    }

    /// The training forward of one micro-batch.
    fn forward(
        &mut self,
        model: &OvSegmentor<Autodiff<B>>,
        batch: &Batch,
        stream: &RandomStream,
    ) -> Result<Losses<Autodiff<B>>> {
        let batch = self.tensors(batch)?;
        let local = LocalGather;
        let gather: &dyn GatherAll<Autodiff<B>> = match &self.gather {
            Some(g) => g,
            None => &local,
        };
        let options = LossOptions {
            training: true,
            gather,
        };
        Ok(model.losses_with(&batch, &options, Some(stream))?)
    }

    /// [matching, entity, mask, total, naming] averaged over the devices, read back (absent
    /// terms are 0).
    fn loss_values(&self, losses: &Losses<Autodiff<B>>) -> Vec<f32> {
        let or_zero = |t: &Option<Tensor<Autodiff<B>, 1>>| {
            t.clone()
                .unwrap_or_else(|| Tensor::zeros([1], &self.device))
        };
        let values = Tensor::cat(
            vec![
                losses.matching.clone(),
                losses.entity.clone(),
                or_zero(&losses.mask),
                losses.total.clone(),
                or_zero(&losses.naming),
            ],
            0,
        )
        .detach()
        .inner();
        self.mean_over_devices(values)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default()
    }

    fn mean_over_devices(&self, values: Tensor<B, 1>) -> Tensor<B, 1> {
        match &self.gather {
            None => values,
            Some(g) => {
                let reduced = all_reduce::<B>(
                    g.peer,
                    values.into_primitive().tensor(),
                    ReduceOperation::Mean,
                )
                .unwrap_or_else(|e| panic!("all-reduce of the losses failed: {e:?}"));
                Tensor::from_primitive(TensorPrimitive::Float(reduced))
            }
        }
    }

    fn tensors(&mut self, batch: &Batch) -> Result<TrainBatch<Autodiff<B>>> {
        let device = &self.device;
        let s = batch.image_size;
        let images = |pixels: &[f32]| {
            Tensor::<Autodiff<B>, 4>::from_data(
                TensorData::new(pixels.to_vec(), [batch.size, 3, s, s]),
                device,
            )
        };
        // Only the CLS output of captions, answers and entity prompts is read, and padding is
        // masked, so padding them to the longest text gives the same embeddings as padding to
        // 77 at a fraction of the cost. Every token of the question enters the multimodal block
        // (padding included, as in the reference), so the question keeps the full 77.
        let tokenizer = &self.tokenizer;
        let mut text = |texts: &[String], rows: TextRows| -> Result<TextInput<Autodiff<B>>> {
            if let Some(frozen) = self.frozen_text.as_mut() {
                return frozen.encode(tokenizer, texts, rows);
            }
            Ok(rows
                .tokenize(tokenizer, texts)?
                .to_tensors::<Autodiff<B>>(device)
                .into())
        };
        let targets = self
            .settings
            .group_naming
            .map(|weight| (weight, naming_targets(&batch.entities)));
        let naming = match targets {
            Some((weight, (classes, positives, count))) if count > 0 => Some(GroupNaming {
                // The prompt zero-shot segmentation embeds classes with by default.
                prompts: text(&TemplateSet::Simple.prompts(&classes), TextRows::Cls)?,
                positives: Tensor::from_data(
                    TensorData::new(positives, [batch.size, classes.len()]),
                    device,
                ),
                count,
                weight,
            }),
            _ => None,
        };
        Ok(TrainBatch {
            images: images(&batch.images),
            caption: text(&batch.captions, TextRows::Cls)?,
            question: text(&batch.questions, TextRows::Questions)?,
            answer: text(&batch.answers, TextRows::Cls)?,
            cross: match batch.partners() {
                Some((pixels, entity)) => Some(CrossPair {
                    images: images(pixels),
                    entity: text(entity, TextRows::Cls)?,
                }),
                None => None,
            },
            naming,
        })
    }
}

/// What [`Replica::accumulate`] gives.
enum Accumulated {
    /// The gradients averaged over the micro-batches and the loss values [matching, entity,
    /// mask, total, naming] likewise.
    Gradients(GradientsParams, [f64; 5]),
    /// A micro-batch had a non-finite loss: the values of the skipped step.
    NonFinite(StepValues),
}

/// The values of a step skipped for the non-finite loss `values` (as read by `loss_values`).
fn skipped_values<B: Backend>(values: &[f32], losses: &Losses<B>) -> StepValues {
    let value = |i: usize| values.get(i).copied().unwrap_or(f32::NAN) as f64;
    StepValues {
        matching: value(0),
        entity: value(1),
        mask: losses.mask.as_ref().map(|_| value(2)),
        naming: losses.naming.as_ref().map(|_| value(4)),
        total: value(3),
        grad_norm: f64::NAN,
        skipped: true,
        reduce: None,
    }
}

/// The classes the rows name (sorted), the [rows, classes] 0/1 matrix of who names what, and
/// its number of ones.
fn naming_targets(entities: &[Vec<String>]) -> (Vec<String>, Vec<f32>, usize) {
    let mut classes: Vec<String> = entities.iter().flatten().cloned().collect();
    classes.sort_unstable();
    classes.dedup();
    let mut positives = vec![0.0f32; entities.len() * classes.len()];
    let mut count = 0;
    for (row, names) in entities.iter().enumerate() {
        for name in names {
            let column = classes.binary_search(name).expect("collected above");
            let cell = &mut positives[row * classes.len() + column];
            if *cell == 0.0 {
                *cell = 1.0;
                count += 1;
            }
        }
    }
    (classes, positives, count)
}

/// `model` on the autodiff backend with every float parameter trainable: a model built or
/// loaded on the plain backend marks none as needing a gradient ([`freeze_for_stage`] then
/// freezes what the stage keeps fixed).
pub fn trainable<B: Backend>(model: OvSegmentor<B>) -> OvSegmentor<Autodiff<B>> {
    struct RequireGrad;
    impl<B: AutodiffBackend> ModuleMapper<B> for RequireGrad {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            param.map(|tensor| tensor.require_grad())
        }
    }
    OvSegmentor::<Autodiff<B>>::from_inner(model).map(&mut RequireGrad)
}

/// Freezes what the run leaves untrained: the momentum encoder always (it moves by EMA), and
/// the text encoder in stage 2 (or with `freeze_text_encoder`).
pub fn freeze_for_stage<B: Backend>(
    mut model: OvSegmentor<Autodiff<B>>,
    freeze_text: bool,
) -> OvSegmentor<Autodiff<B>> {
    model.img_encoder_momentum = model.img_encoder_momentum.map(|m| m.no_grad());
    if freeze_text {
        model.text_encoder = model.text_encoder.no_grad();
    }
    model
}

#[cfg(test)]
mod naming_tests {
    use super::naming_targets;

    #[test]
    fn naming_targets_mark_each_rows_classes_once() {
        let rows = |r: &[&[&str]]| -> Vec<Vec<String>> {
            r.iter()
                .map(|names| names.iter().map(|n| n.to_string()).collect())
                .collect()
        };
        let entities = rows(&[&["kite", "ball"], &[], &["ball", "ball"]]);
        let (classes, positives, count) = naming_targets(&entities);
        assert_eq!(classes, ["ball", "kite"]);
        assert_eq!(positives, [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(count, 3);
    }
}
