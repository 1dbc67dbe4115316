//! The training loop ([`Trainer`]): reads the data, hands every device of this machine its rows
//! ([`Devices`]), logs, checkpoints, evaluates and resumes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::collective::reset_collective;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use ovseg_model::record::{model_from_bytes, model_to_bytes, Precision};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig};
use serde::Serialize;

use super::checkpoint::{Checkpoint, Checkpoints, RunState};
use super::config::TrainConfig;
pub use super::devices::Cluster;
use super::devices::{Devices, Group, ReplicaSetup, Snapshot};
use super::replica::{ReplicaSettings, StepValues};
use super::schedule::CosineSchedule;
use crate::data::{micro_batch_start, Batch, DataPosition};
use crate::files::write_atomically;

/// Global batches (one optimizer step each) in a deterministic order, resumable at any batch.
pub trait BatchSource {
    /// Optimizer steps in one epoch; `None` for streams of unknown length.
    fn steps_per_epoch(&self) -> Option<usize>;
    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_>;
    /// One line on what was skipped (corrupt images, invalid lines, ...), if anything.
    fn skipped(&self) -> Option<String>;
}

/// Consecutive steps with a non-finite loss or gradient that stop the run.
pub const MAX_BAD_STEPS: usize = 5;

/// Called with the model after a checkpoint when evaluation is due; returns mIoU (percent).
pub type EvalHook<'a, B> = dyn FnMut(&OvSegmentor<B>, usize) -> Result<f64> + 'a;

/// What a run starts from.
pub enum Start<B: Backend> {
    /// This model with a fresh optimizer (stage 1 from scratch or `--init`, stage 2 from stage
    /// 1's model).
    Fresh(OvSegmentor<B>),
    /// The newest checkpoint in the run folder.
    Resume,
}

pub struct RunOptions {
    pub dir: PathBuf,
    /// `None`: one machine.
    pub cluster: Option<Cluster>,
    pub config: TrainConfig,
    pub model_config: OvsegConfig,
    /// Resume even when the recipe changed since the checkpoint (no longer step-exact).
    pub resume_changed: bool,
    pub show_progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricsLine {
    pub step: usize,
    pub epoch: usize,
    pub lr: f64,
    pub matching: f64,
    pub entity: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub naming: Option<f64>,
    pub total: f64,
    pub grad_norm: f64,
    pub images_per_s: f64,
    /// Several devices: seconds one device spent in the gradient all-reduce (waiting
    /// included) and the megabytes of gradient each device all-reduced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allreduce_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allreduce_mb: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: usize,
    pub first: Option<StepValues>,
    pub last: Option<StepValues>,
    pub final_model: PathBuf,
}

/// Trains from `start` on `devices` to the end of the recipe's schedule.
pub fn train<B: Backend>(
    options: &RunOptions,
    start: Start<B>,
    tokenizer: Arc<TextTokenizer>,
    source: &dyn BatchSource,
    devices: Vec<B::Device>,
    eval: Option<&mut EvalHook<'_, B>>,
) -> Result<RunSummary> {
    let mut trainer = Trainer::resume_or_init(options, start, tokenizer, source, devices)?;
    trainer.run(source, eval)?;
    trainer.finish(source)
}

/// A run on this machine's devices: its replicas, where it stands, and what it writes (the
/// run folder's checkpoints, `metrics.jsonl`, `best.mpk`, `model.mpk`).
pub struct Trainer<'a, B: Backend> {
    options: &'a RunOptions,
    devices: Devices<B>,
    stored_tokenizer: Option<String>,
    schedule: CosineSchedule,
    checkpoints: Checkpoints,
    state: RunState,
    metrics: Metrics,
    bar: ProgressBar,
    first: Option<StepValues>,
    last: Option<StepValues>,
    bad_steps: usize,
}

/// A checkpoint just written: its model, as a model file's bytes too, and its folder.
pub struct Saved<B: Backend> {
    pub model: OvSegmentor<B>,
    pub bytes: Vec<u8>,
    pub path: PathBuf,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// Starts the replicas from `start`: a fresh model, or the newest checkpoint of the run
    /// folder (checked against the devices and the recipe it was written with).
    pub fn resume_or_init(
        options: &'a RunOptions,
        start: Start<B>,
        tokenizer: Arc<TextTokenizer>,
        source: &dyn BatchSource,
        devices: Vec<B::Device>,
    ) -> Result<Self> {
        let config = &options.config;
        config.validate()?;
        let group = Group::new(devices.len().max(1), options.cluster.clone());
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("cannot create run folder {}", options.dir.display()))?;
        let checkpoints = Checkpoints::new(&options.dir);
        let schedule = config.schedule(steps_per_epoch(source, config, group.world)?, group.world);
        let resume = matches!(start, Start::Resume);
        let (state, model, optimizer) = match start {
            Start::Fresh(model) => (RunState::fresh(config, group.world), model, None),
            Start::Resume => {
                let checkpoint = resume_point(options, &checkpoints, group.world)?;
                let saved = &checkpoint.state;
                let before = saved.config.schedule(
                    steps_per_epoch(source, &saved.config, group.world)?,
                    group.world,
                );
                check_schedule_kept(options, saved, &before, &schedule)?;
                let snapshot = load_checkpoint::<B>(&checkpoint, &devices[0])?;
                // The recipe in force from here on (the same one unless --resume-changed).
                let state = RunState {
                    config: config.clone(),
                    ..checkpoint.state
                };
                (state, snapshot.model, Some(snapshot.optimizer))
            }
        };
        write_atomically(
            &options.dir.join("train.json"),
            serde_json::to_string_pretty(config)?.as_bytes(),
        )?;
        let devices = Self::spawn_replicas(
            options, &state, devices, group, model, optimizer, &tokenizer,
        )?;
        let mut trainer = Self {
            options,
            devices,
            stored_tokenizer: tokenizer.stored_json().map(str::to_string),
            schedule,
            checkpoints,
            metrics: Metrics::open(&options.dir, state.step)?,
            state,
            bar: progress_bar(options.show_progress),
            first: None,
            last: None,
            bad_steps: 0,
        };
        if resume && trainer.devices.group().nodes() > 1 {
            trainer.agree_on_resume()?;
        }
        trainer.bar.set_length(trainer.schedule.total_steps as u64);
        trainer.bar.set_position(trainer.state.step as u64);
        Ok(trainer)
    }

    /// One replica of `model` on each device, with the run's seed, stage and precision.
    fn spawn_replicas(
        options: &RunOptions,
        state: &RunState,
        devices: Vec<B::Device>,
        group: Group,
        model: OvSegmentor<B>,
        optimizer: Option<Vec<u8>>,
        tokenizer: &Arc<TextTokenizer>,
    ) -> Result<Devices<B>> {
        let config = &options.config;
        let settings = ReplicaSettings {
            adamw: config.adamw(),
            momentum: config.stage_two().then_some(config.momentum),
            seed: state.seed,
            frozen_text_cache_mb: config.text_frozen().then_some(config.text_cache_mb),
            autocast: config.autocast.map(|a| a.dtype()),
            group_naming: (config.group_naming > 0.0).then_some(config.group_naming),
        };
        if group.world > 1 {
            reset_collective::<B>();
        }
        let setup = ReplicaSetup {
            tokenizer: tokenizer.clone(),
            settings,
        };
        Devices::spawn(devices, group, model, optimizer, setup)
    }

    /// Trains to the end of the schedule, checkpointing and evaluating as the recipe says.
    pub fn run(
        &mut self,
        source: &dyn BatchSource,
        mut eval: Option<&mut EvalHook<'_, B>>,
    ) -> Result<()> {
        for epoch in self.state.position.epoch..self.options.config.epochs {
            self.run_epoch(source, epoch, eval.as_deref_mut())?;
            if self.done() {
                break;
            }
            self.state.position = DataPosition {
                epoch: epoch + 1,
                batch: 0,
            };
            self.checkpoint()?;
        }
        Ok(())
    }

    /// The steps of one epoch, from where the run stands.
    fn run_epoch(
        &mut self,
        source: &dyn BatchSource,
        epoch: usize,
        mut eval: Option<&mut EvalHook<'_, B>>,
    ) -> Result<()> {
        let config = &self.options.config;
        let (stage, epochs) = (config.stage, config.epochs);
        self.bar
            .set_prefix(format!("stage {stage} epoch {}/{epochs}", epoch + 1));
        let start = if epoch == self.state.position.epoch {
            self.state.position.batch
        } else {
            0
        };
        // Machines read streams of their own, of different lengths: the epoch ends on all of
        // them when the first runs dry, so that none waits for a step that never comes.
        let vote = self.devices.group().nodes() > 1 && source.steps_per_epoch().is_none();
        let mut batches = source.epoch(epoch, start);
        for index in 0.. {
            if self.done() {
                break;
            }
            let batch = batches.next();
            if vote && !self.all_have_batch(matches!(batch, Some(Ok(_))))? {
                break;
            }
            let Some(batch) = batch else { break };
            let position = DataPosition {
                epoch,
                batch: start + index + 1,
            };
            self.step(&batch?, position)?;
            self.checkpoint_if_due(eval.as_deref_mut())?;
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.state.step >= self.schedule.total_steps
    }

    /// One optimizer step on this machine's rows of a global batch; `position`: where the data
    /// stands after it.
    pub fn step(&mut self, batch: &Batch, position: DataPosition) -> Result<StepValues> {
        let began = Instant::now();
        let config = &self.options.config;
        let lr = self.schedule.lr(self.state.step);
        let micro = split(batch, self.devices.group().local, config.accumulation)?;
        let values = self.devices.step(micro, lr, self.state.step)?;
        self.state.step += 1;
        self.state.position = position;
        let images = config.global_batch(self.devices.group().world) as f64;
        let line = MetricsLine::new(
            &self.state,
            lr,
            &values,
            images / began.elapsed().as_secs_f64(),
        );
        self.metrics.write(&line)?;
        if values.skipped {
            self.skipped_step(&values)?;
        } else {
            self.bad_steps = 0;
            self.first.get_or_insert(values);
            self.last = Some(values);
        }
        self.bar.set_message(progress_message(&line));
        self.bar.set_position(self.state.step as u64);
        Ok(values)
    }

    /// A step whose loss or gradient was not finite changed no weight; five in a row stop the
    /// run with a checkpoint of the last good step.
    fn skipped_step(&mut self, values: &StepValues) -> Result<()> {
        self.bad_steps += 1;
        let step = self.state.step;
        self.bar.suspend(|| {
            tracing::warn!(step, loss = values.total, grad_norm = values.grad_norm, "step skipped");
            eprintln!(
                "warning: step {step}: the loss ({}) or its gradient (norm {}) is not finite; this step changed no weight",
                values.total, values.grad_norm
            )
        });
        if self.bad_steps < MAX_BAD_STEPS {
            return Ok(());
        }
        // A skipped step changes no weight, so this checkpoint holds the model and optimizer of
        // the last good step, at the data position after the bad ones.
        let saved = self.checkpoint()?;
        bail!(
            "{MAX_BAD_STEPS} steps in a row had a non-finite loss or gradient (last: loss {}, \
             gradient norm {}): lower the learning rate or check the data; the weights of the \
             last good step ({}) are saved in {}",
            values.total,
            values.grad_norm,
            step - self.bad_steps,
            saved.path.display()
        );
    }

    /// Checkpoints every `checkpoint_every` steps, and evaluates when the recipe's evaluation
    /// is due (after a checkpoint of that step).
    fn checkpoint_if_due(&mut self, eval: Option<&mut EvalHook<'_, B>>) -> Result<()> {
        let config = &self.options.config;
        let step = self.state.step;
        let eval_due = config
            .eval
            .as_ref()
            .is_some_and(|e| step % e.every.max(1) == 0);
        if step % config.checkpoint_every != 0 && !eval_due {
            return Ok(());
        }
        let saved = self.checkpoint()?;
        match eval {
            Some(hook) if eval_due => self.evaluate(&saved, hook),
            _ => Ok(()),
        }
    }

    /// Writes a checkpoint of where the run stands (the first device's weights and optimizer).
    pub fn checkpoint(&self) -> Result<Saved<B>> {
        let snapshot = self.devices.snapshot()?;
        let bytes = model_to_bytes(
            snapshot.model.clone(),
            &self.options.model_config,
            self.stored_tokenizer.as_deref(),
            Precision::Full,
        )?;
        let keep = self.options.config.keep_last;
        let path = self
            .checkpoints
            .save(&self.state, &bytes, &snapshot.optimizer, keep)?;
        Ok(Saved {
            model: snapshot.model,
            bytes,
            path,
        })
    }

    /// Evaluates the model of checkpoint `saved`; a new best score writes `best.mpk` and the
    /// checkpoint again with the score.
    pub fn evaluate(&mut self, saved: &Saved<B>, hook: &mut EvalHook<'_, B>) -> Result<()> {
        let step = self.state.step;
        let miou = self.bar.suspend(|| hook(&saved.model, step))?;
        if self.state.best_miou.is_none_or(|best| miou > best) {
            self.state.best_miou = Some(miou);
            write_atomically(&self.options.dir.join("best.mpk"), &saved.bytes)?;
            self.checkpoint()?;
        }
        Ok(())
    }

    /// The last checkpoint, `model.mpk` and `model.json`; ends the device threads.
    pub fn finish(self, source: &dyn BatchSource) -> Result<RunSummary> {
        let saved = self.checkpoint()?;
        let final_model = self.options.dir.join("model.mpk");
        write_atomically(&final_model, &saved.bytes)?;
        write_atomically(
            &self.options.dir.join("model.json"),
            self.options.model_config.to_json().as_bytes(),
        )?;
        self.bar.finish_and_clear();
        if let Some(skipped) = source.skipped() {
            eprintln!("data: {skipped}");
        }
        self.devices.join()?;
        Ok(RunSummary {
            steps: self.state.step,
            first: self.first,
            last: self.last,
            final_model,
        })
    }

    /// Whether every machine has a batch for the next step (each says whether it has one).
    fn all_have_batch(&self, have: bool) -> Result<bool> {
        Ok(self.devices.exchange(have as u32)?.iter().all(|&v| v == 1))
    }

    /// Machines resuming a run go on from the newest step all of them reached: a machine
    /// stopped while the others saved is a checkpoint behind, and one ahead goes back to it.
    fn agree_on_resume(&mut self) -> Result<()> {
        let step = self.state.step;
        let node_rank = self.devices.group().node_rank;
        let steps = self.devices.exchange(u32::try_from(step)?)?;
        let (behind, &common) = steps
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| **s)
            .expect("at least one machine");
        let common = common as usize;
        if common == step {
            return Ok(());
        }
        let kept = self.checkpoints.list()?;
        let Some((_, path)) = kept.iter().find(|(s, _)| *s == common) else {
            bail!(
                "machine {node_rank} would resume at step {step}, but machine {behind}'s last \
                 checkpoint is step {common}, which this machine no longer keeps: copy machine \
                 {behind}'s checkpoint of step {common} into every machine's checkpoints folder"
            );
        };
        let back = Checkpoint::open(path)?;
        tracing::warn!(
            "another machine's last checkpoint is step {common}: going back to it from step {step}"
        );
        let snapshot = load_checkpoint::<B>(&back, self.devices.first())?;
        self.devices.restore(&snapshot)?;
        self.state = RunState {
            config: self.options.config.clone(),
            ..back.state
        };
        self.metrics = Metrics::open(&self.options.dir, self.state.step)?;
        Ok(())
    }
}

/// Optimizer steps in one epoch of `source` under `config`.
fn steps_per_epoch(source: &dyn BatchSource, config: &TrainConfig, world: usize) -> Result<usize> {
    match (source.steps_per_epoch(), config.max_steps) {
        (Some(0), _) => bail!(
            "the data holds fewer samples than one global batch ({})",
            config.global_batch(world)
        ),
        (Some(n), _) => Ok(n),
        (None, Some(max)) => Ok(max.div_ceil(config.epochs)),
        (None, None) => bail!("a stream of unknown length needs max_steps in the config"),
    }
}

/// The newest checkpoint, if this run may go on from it: written on as many devices, with the
/// same recipe (or `--resume-changed`).
fn resume_point(
    options: &RunOptions,
    checkpoints: &Checkpoints,
    world: usize,
) -> Result<Checkpoint> {
    let Some(checkpoint) = checkpoints.latest()? else {
        bail!(
            "--resume: no checkpoint in {}",
            options.dir.join("checkpoints").display()
        );
    };
    if checkpoint.state.devices != world {
        bail!(
            "{} was written by a run on {} devices; resume it on as many (given {world})",
            checkpoint.path.display(),
            checkpoint.state.devices
        );
    }
    let changed = options.config.changed_since(&checkpoint.state.config);
    if !changed.is_empty() && !options.resume_changed {
        bail!(
            "{} was written with another recipe ({}); resume with --recipe {}, or pass \
             --resume-changed to continue with the change (no longer step-exact)",
            checkpoint.path.display(),
            changed.join(", "),
            options.dir.join("train.json").display()
        );
    }
    Ok(checkpoint)
}

/// max_steps may change on resume (a run extended) as long as the steps already taken had the
/// learning rates the new schedule gives them.
fn check_schedule_kept(
    options: &RunOptions,
    saved: &RunState,
    before: &CosineSchedule,
    now: &CosineSchedule,
) -> Result<()> {
    let moved = (0..saved.step).find(|&s| before.lr(s) != now.lr(s));
    if let (Some(step), false) = (moved, options.resume_changed) {
        bail!(
            "resuming {} with max_steps {:?} (was {:?}) changes the learning rate of step {} \
             already taken; pass --resume-changed to continue with it (no longer step-exact)",
            options.dir.display(),
            options.config.max_steps,
            saved.config.max_steps,
            step + 1
        );
    }
    Ok(())
}

/// A checkpoint's model (on `device`) and optimizer state.
fn load_checkpoint<B: Backend>(checkpoint: &Checkpoint, device: &B::Device) -> Result<Snapshot<B>> {
    let path = checkpoint.model_path();
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let (model, _) = model_from_bytes::<B>(bytes, &path.display().to_string(), device)?;
    Ok(Snapshot {
        model,
        optimizer: checkpoint.optimizer_bytes()?,
    })
}

fn progress_bar(show: bool) -> ProgressBar {
    let bar = if show {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// `metrics.jsonl`: one line per step.
struct Metrics {
    path: PathBuf,
    file: File,
}

impl Metrics {
    /// Opens the run's metrics for appending after step `step` (the lines of later steps, from
    /// a run that went further before it was resumed, are dropped).
    fn open(dir: &Path, step: usize) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        truncate_metrics(&path, step)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { path, file })
    }

    fn write(&mut self, line: &MetricsLine) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(line)?)
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }
}

impl MetricsLine {
    fn new(state: &RunState, lr: f64, values: &StepValues, images_per_s: f64) -> Self {
        Self {
            step: state.step,
            epoch: state.position.epoch,
            lr,
            matching: values.matching,
            entity: values.entity,
            mask: values.mask,
            naming: values.naming,
            total: values.total,
            grad_norm: values.grad_norm,
            images_per_s,
            allreduce_s: values.reduce.map(|(s, _)| s),
            allreduce_mb: values.reduce.map(|(_, bytes)| bytes as f64 / 1e6),
            skipped: values.skipped,
        }
    }
}

fn progress_message(line: &MetricsLine) -> String {
    let optional = |name: &str, value: Option<f64>| {
        value.map(|v| format!(" {name} {v:.3}")).unwrap_or_default()
    };
    let (mask, naming) = (optional("mask", line.mask), optional("naming", line.naming));
    format!(
        "loss {:.3} (match {:.3} entity {:.3}{mask}{naming}) lr {:.2e} {:.1} img/s",
        line.total, line.matching, line.entity, line.lr, line.images_per_s
    )
}

/// This machine's batch over its `devices`: micro-step `a` of device `d` takes rows
/// `(a * devices + d) * b ..` ([`micro_batch_start`]; the loader laid out a machine's share of
/// the global batch in that order, see [`crate::data::Share::rows`]).
fn split(batch: &Batch, devices: usize, accumulation: usize) -> Result<Vec<Vec<Batch>>> {
    let parts = devices * accumulation;
    if batch.size % parts != 0 || batch.size == 0 {
        bail!(
            "a batch of {} samples cannot be split over {devices} devices x {accumulation} accumulation steps",
            batch.size
        );
    }
    let b = batch.size / parts;
    Ok((0..devices)
        .map(|d| {
            (0..accumulation)
                .map(|a| batch.rows(micro_batch_start(a, d, devices, b), b))
                .collect()
        })
        .collect())
}

/// A resumed run rewrites the steps after its checkpoint: drop their old lines.
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomically(path, kept.as_bytes())
}
