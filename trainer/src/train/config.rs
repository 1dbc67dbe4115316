//! A training run's settings, as a JSON file (`ovseg train --config`) or a named preset with
//! the paper's values (docs/training.md, "Recipes").

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::loader::{Augmentation, Stage};

use super::optimizer::AdamWSettings;
use super::schedule::CosineSchedule;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// 1: matching + masked entity, everything trained. 2: adds the cross-image mask loss,
    /// freezes the text encoder and moves the momentum encoder by EMA.
    pub stage: Stage,
    pub epochs: usize,
    /// Samples per device in one forward.
    pub batch_size: usize,
    /// Forwards accumulated into one optimizer step.
    #[serde(default = "one")]
    pub accumulation: usize,
    pub base_lr: f64,
    #[serde(default)]
    pub warmup_lr: f64,
    pub min_lr: f64,
    #[serde(default)]
    pub warmup_epochs: f64,
    /// The rates above are for this global batch and scale linearly with the real one (the
    /// reference's rule); absent: used as they are.
    #[serde(default)]
    pub lr_reference_batch: Option<usize>,
    #[serde(default = "weight_decay")]
    pub weight_decay: f64,
    /// AdamW's epsilon (1e-8).
    #[serde(default = "adam_epsilon")]
    pub adam_epsilon: f64,
    #[serde(default = "clip_grad")]
    pub clip_grad: Option<f64>,
    /// Stage 2's momentum-encoder EMA factor.
    #[serde(default = "momentum")]
    pub momentum: f64,
    #[serde(default = "image_size")]
    pub image_size: usize,
    #[serde(default)]
    pub seed: u64,
    /// Image decoding threads (0: one per core).
    #[serde(default)]
    pub workers: usize,
    /// Batches decoded ahead.
    #[serde(default = "prefetch")]
    pub prefetch: usize,
    /// Checkpoint every N optimizer steps (and at every epoch end).
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: usize,
    /// Checkpoints kept besides the best one.
    #[serde(default = "keep_last")]
    pub keep_last: usize,
    /// Stop after this many optimizer steps (smoke runs, benchmarks).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Periodic zero-shot evaluation.
    #[serde(default)]
    pub eval: Option<EvalSpec>,
    /// Stage 1 with the text encoder frozen (the paper trains it): keeps a pretrained encoder's
    /// vocabulary as it is and, with its outputs cached per text, makes a step far cheaper.
    /// Stage 2 always freezes it.
    #[serde(default)]
    pub freeze_text_encoder: bool,
    /// The training pictures' augmentation; absent: the paper's for the stage.
    #[serde(default)]
    pub augment: Option<Augmentation>,
    /// Device memory (MB) for the frozen text encoder's outputs, cached per text.
    #[serde(default = "text_cache_mb")]
    pub text_cache_mb: usize,
    /// Mixed precision: the matrix products in "bf16", everything else (parameters,
    /// optimizer, normalisation, softmax, losses) in f32, as `torch.autocast` (meant for CUDA).
    #[serde(default)]
    pub autocast: Option<Autocast>,
    /// Weight of ovseg's group-naming loss (`ovseg_model::losses::group_naming_loss`), an
    /// addition to the paper's losses that trains each caption entity onto the picture's
    /// best-matching group; 0 (the default, and the paper): off.
    #[serde(default)]
    pub group_naming: f64,
}

/// The half precision of [`TrainConfig::autocast`]. Only bf16: it has f32's exponent range.
/// f16 gradients underflow without a loss scaler (PyTorch's `GradScaler`), which ovseg does not
/// have (measured: a step's gradient norm off by a third).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Autocast {
    Bf16,
}

impl Autocast {
    pub fn dtype(self) -> burn::tensor::FloatDType {
        match self {
            Autocast::Bf16 => burn::tensor::FloatDType::BF16,
        }
    }
}

/// A benchmark in one of `ovseg eval`'s layouts, scored every `every` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// voc | context | coco_object | ade20k
    pub dataset: String,
    pub root: PathBuf,
    #[serde(default)]
    pub classes: Option<String>,
    pub every: usize,
    #[serde(default)]
    pub limit: Option<usize>,
}

fn one() -> usize {
    1
}
fn weight_decay() -> f64 {
    0.05
}
fn adam_epsilon() -> f64 {
    1e-8
}
fn clip_grad() -> Option<f64> {
    Some(5.0)
}
fn momentum() -> f64 {
    0.99
}
fn image_size() -> usize {
    224
}
fn prefetch() -> usize {
    4
}
fn checkpoint_every() -> usize {
    1000
}
fn keep_last() -> usize {
    3
}
fn text_cache_mb() -> usize {
    1024
}

impl TrainConfig {
    /// Stage 1 of the paper: 30 epochs at a global batch of 4096, lr 6.4e-4 after 2 warmup
    /// epochs from 1.6e-5, cosine down to 1.6e-4.
    pub fn stage1() -> Self {
        Self {
            stage: Stage::One,
            epochs: 30,
            batch_size: 256,
            accumulation: 1,
            base_lr: 6.4e-4,
            warmup_lr: 1.6e-5,
            min_lr: 1.6e-4,
            warmup_epochs: 2.0,
            lr_reference_batch: Some(4096),
            weight_decay: weight_decay(),
            adam_epsilon: adam_epsilon(),
            clip_grad: clip_grad(),
            momentum: momentum(),
            image_size: image_size(),
            seed: 0,
            workers: 0,
            prefetch: prefetch(),
            checkpoint_every: checkpoint_every(),
            keep_last: keep_last(),
            max_steps: None,
            eval: None,
            freeze_text_encoder: false,
            augment: None,
            text_cache_mb: text_cache_mb(),
            autocast: None,
            group_naming: 0.0,
        }
    }

    /// Stage 2 of the paper: 10 epochs from the stage-1 weights at batch 128 a GPU (2048 on 16),
    /// lr 1e-5 to 1e-6 without warmup.
    pub fn stage2() -> Self {
        Self {
            stage: Stage::Two,
            epochs: 10,
            batch_size: 128,
            base_lr: 1e-5,
            warmup_lr: 0.0,
            min_lr: 1e-6,
            warmup_epochs: 0.0,
            lr_reference_batch: Some(2048),
            ..Self::stage1()
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "stage1" => Ok(Self::stage1()),
            "stage2" => Ok(Self::stage2()),
            other => bail!("unknown training preset {other:?} (stage1, stage2)"),
        }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read training config {}", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("training config {}", path.display()))?;
        config
            .validate()
            .with_context(|| format!("training config {}", path.display()))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.accumulation == 0 || self.epochs == 0 {
            bail!("batch_size, accumulation and epochs must be at least 1");
        }
        if self.checkpoint_every == 0 {
            bail!("checkpoint_every must be at least 1");
        }
        if !(self.base_lr > 0.0 && self.min_lr >= 0.0 && self.warmup_lr >= 0.0) {
            bail!("learning rates must be positive");
        }
        if let Some(augmentation) = &self.augment {
            augmentation
                .validate()
                .map_err(|e| anyhow::anyhow!("augment: {e}"))?;
        }
        if !(self.group_naming >= 0.0 && self.group_naming.is_finite()) {
            bail!("group_naming must be a finite weight of at least 0");
        }
        if self.image_size % 16 != 0 || self.image_size == 0 {
            bail!("image_size must be a positive multiple of the patch size 16");
        }
        Ok(())
    }

    pub fn stage_two(&self) -> bool {
        self.stage == Stage::Two
    }

    /// The text encoder gets no gradient: stage 2, or stage 1 with `freeze_text_encoder`.
    pub fn text_frozen(&self) -> bool {
        self.stage_two() || self.freeze_text_encoder
    }

    /// Samples consumed by one optimizer step over all devices.
    pub fn global_batch(&self, devices: usize) -> usize {
        self.batch_size * self.accumulation * devices
    }

    pub fn adamw(&self) -> AdamWSettings {
        AdamWSettings {
            weight_decay: self.weight_decay as f32,
            epsilon: self.adam_epsilon as f32,
            clip_grad: self.clip_grad,
            ..AdamWSettings::default()
        }
    }

    /// The settings in which `self` differs from `saved` that change what a training step
    /// computes (everything but loading threads, checkpointing, evaluation and `max_steps`,
    /// whose effect on the schedule the run checks): a run resumed with any of them changed is
    /// no longer step-exact.
    pub fn changed_since(&self, saved: &TrainConfig) -> Vec<String> {
        const FREE: [&str; 7] = [
            "max_steps", // checked through the schedule it gives
            "workers",
            "prefetch",
            "checkpoint_every",
            "keep_last",
            "eval",
            "text_cache_mb",
        ];
        let fields = |c: &TrainConfig| match serde_json::to_value(c) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("a TrainConfig serialises to an object"),
        };
        let (now, then) = (fields(self), fields(saved));
        now.iter()
            .filter(|(key, value)| !FREE.contains(&key.as_str()) && then.get(*key) != Some(value))
            .map(|(key, value)| {
                let was = then.get(key).map_or("absent".into(), |v| v.to_string());
                format!("{key} {was} -> {value}")
            })
            .collect()
    }

    pub fn schedule(&self, steps_per_epoch: usize, devices: usize) -> CosineSchedule {
        let factor = match self.lr_reference_batch {
            Some(reference) => self.global_batch(devices) as f64 / reference as f64,
            None => 1.0,
        };
        let total = self.epochs * steps_per_epoch;
        CosineSchedule {
            base_lr: self.base_lr * factor,
            warmup_lr: self.warmup_lr * factor,
            min_lr: self.min_lr * factor,
            warmup_steps: (self.warmup_epochs * steps_per_epoch as f64).round() as usize,
            total_steps: self.max_steps.map_or(total, |m| m.min(total)).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_names_the_changes_that_alter_a_step() {
        let saved = TrainConfig::stage1();
        let mut now = saved.clone();
        now.workers = 3;
        now.checkpoint_every = 9;
        assert!(now.changed_since(&saved).is_empty());
        now.batch_size = 7;
        now.seed = 5;
        assert_eq!(
            now.changed_since(&saved),
            vec![
                format!("batch_size {} -> 7", saved.batch_size),
                "seed 0 -> 5".to_string()
            ]
        );
        assert_eq!(TrainConfig::stage2().changed_since(&saved).len() > 3, true);
    }

    #[test]
    fn paper_presets_scale_to_the_reference_batch() {
        let s1 = TrainConfig::stage1().schedule(1000, 16);
        assert!((s1.base_lr - 6.4e-4).abs() < 1e-15);
        assert_eq!(s1.warmup_steps, 2000);
        assert_eq!(s1.total_steps, 30_000);
        let s2 = TrainConfig::stage2().schedule(100, 16);
        assert!((s2.base_lr - 1e-5).abs() < 1e-18);
        assert_eq!(s2.warmup_steps, 0);
        // One GPU with batch 256: 1/16 of the paper's rates.
        let one = TrainConfig::stage1().schedule(10, 1);
        assert!((one.base_lr - 4e-5).abs() < 1e-15);
    }

    #[test]
    fn recipes_set_the_augmentation_and_a_frozen_text_encoder() {
        let json = r#"{"stage": 1, "epochs": 1, "batch_size": 4, "base_lr": 1e-3, "min_lr": 1e-4,
            "freeze_text_encoder": true,
            "augment": {"crop_scale": [0.5, 1.0], "rand_augment": false, "erasing": 0.0}}"#;
        let config: TrainConfig = serde_json::from_str(json).unwrap();
        config.validate().unwrap();
        assert!(config.text_frozen() && !config.stage_two());
        assert_eq!(config.augment.unwrap().crop_scale, (0.5, 1.0));
        assert!(!TrainConfig::stage1().text_frozen() && TrainConfig::stage2().text_frozen());
        let bad = TrainConfig {
            augment: Some(Augmentation {
                crop_scale: (0.0, 1.0),
                rand_augment: false,
                erasing: 0.0,
            }),
            ..config
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("crop_scale"), "{e}");
    }

    #[test]
    fn config_files_round_trip_and_reject_typos() {
        let json = serde_json::to_string(&TrainConfig::stage2()).unwrap();
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, TrainConfig::stage2());
        let typo = json.replace("\"epochs\"", "\"epoch\"");
        assert!(serde_json::from_str::<TrainConfig>(&typo).is_err());
        // Stages are written 1 and 2; any other number names the rule.
        assert!(json.contains("\"stage\":2"), "{json}");
        let third = json.replace("\"stage\":2", "\"stage\":3");
        let e = serde_json::from_str::<TrainConfig>(&third)
            .unwrap_err()
            .to_string();
        assert!(e.contains("stage must be 1 or 2, not 3"), "{e}");
    }
}
