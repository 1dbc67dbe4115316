//! The training loop: one thread per device, each owning a [`Replica`]; this thread reads the
//! data, hands every device its rows, logs, checkpoints, evaluates and resumes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use burn::backend::Autodiff;
use burn::collective::{
    all_reduce, finish_collective, register, reset_collective, AllReduceStrategy, CollectiveConfig,
    PeerId, ReduceOperation,
};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use indicatif::{ProgressBar, ProgressStyle};
use ovseg_model::record::{model_from_bytes, model_to_bytes, Precision};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvsegConfig;
use ovseg_trainer::data::micro_batch_start;
use serde::Serialize;

use super::checkpoint::{Checkpoint, Checkpoints, DataPosition, RunState};
use super::collective::CollectiveGather;
use super::config::TrainConfig;
use super::replica::{freeze_for_stage, DeviceBatch, Replica, ReplicaSettings, StepValues};
use crate::files::write_atomically;

/// Global batches (one optimizer step each) in a deterministic order, resumable at any batch.
pub trait BatchSource {
    /// Optimizer steps in one epoch; `None` for streams of unknown length.
    fn steps_per_epoch(&self) -> Option<usize>;
    fn epoch(
        &self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<DeviceBatch>> + '_>;
    /// One line on what was skipped (corrupt images, invalid lines, ...), if anything.
    fn skipped(&self) -> Option<String>;
}

/// Consecutive steps with a non-finite loss or gradient that stop the run.
pub const MAX_BAD_STEPS: usize = 5;

/// Called with the model after a checkpoint when evaluation is due; returns mIoU (percent).
pub type EvalHook<'a> = dyn FnMut(&[u8], usize) -> Result<f64> + 'a;

/// This machine's place in a multi-machine run (burn-collective's global orchestrator).
#[derive(Debug, Clone)]
pub struct Cluster {
    pub nodes: usize,
    pub node_rank: usize,
    /// The orchestrator started with `ovseg orchestrator`, e.g. `ws://10.0.0.1:9000`.
    pub orchestrator: String,
    /// This node's address as the others reach it, e.g. `ws://10.0.0.2:9001`.
    pub node_address: String,
    /// Port of this node's tensor data service.
    pub data_port: u16,
}

pub struct RunOptions {
    pub dir: PathBuf,
    /// `None`: one machine.
    pub cluster: Option<Cluster>,
    pub config: TrainConfig,
    pub model_config: OvsegConfig,
    pub resume: bool,
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

enum Command {
    Step {
        micro: Vec<DeviceBatch>,
        lr: f64,
        step: usize,
    },
    Snapshot,
    /// Tell every machine this number (see [`exchange`]).
    Exchange(u32),
    /// Go back to this model file and optimizer state.
    Restore {
        model: Vec<u8>,
        optimizer: Vec<u8>,
    },
}

enum Reply {
    Step(Result<StepValues>),
    Snapshot(Result<(Vec<u8>, Vec<u8>)>),
    /// Every machine's number, in machine order.
    Exchange(Result<Vec<u32>>),
    Restore(Result<()>),
}

struct Worker {
    commands: Sender<Command>,
    replies: Receiver<Reply>,
    thread: std::thread::JoinHandle<()>,
}

/// Trains from `initial` (model file bytes; ignored when resuming) on `devices`.
pub fn train<B: Backend>(
    options: &RunOptions,
    initial: Vec<u8>,
    tokenizer: Arc<TextTokenizer>,
    source: &dyn BatchSource,
    devices: Vec<B::Device>,
    eval: Option<&mut EvalHook<'_>>,
) -> Result<RunSummary> {
    let config = &options.config;
    config.validate()?;
    let local = devices.len().max(1);
    let (nodes, node_rank) = options
        .cluster
        .as_ref()
        .map_or((1, 0), |c| (c.nodes, c.node_rank));
    let world = local * nodes;
    let checkpoints = Checkpoints::new(&options.dir);
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("cannot create run folder {}", options.dir.display()))?;

    let resumed = if options.resume {
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
        let changed = config.changed_since(&checkpoint.state.config);
        if !changed.is_empty() && !options.resume_changed {
            bail!(
                "{} was written with another recipe ({}); resume with --recipe {}, or pass \
                 --resume-changed to continue with the change (no longer step-exact)",
                checkpoint.path.display(),
                changed.join(", "),
                options.dir.join("train.json").display()
            );
        }
        let model = std::fs::read(checkpoint.model_path())
            .with_context(|| format!("cannot read {}", checkpoint.model_path().display()))?;
        Some((
            checkpoint.state.clone(),
            model,
            checkpoint.optimizer_bytes()?,
        ))
    } else {
        None
    };
    let steps_per_epoch = |config: &TrainConfig| match (source.steps_per_epoch(), config.max_steps)
    {
        (Some(0), _) => bail!(
            "the data holds fewer samples than one global batch ({})",
            config.global_batch(world)
        ),
        (Some(n), _) => Ok(n),
        (None, Some(max)) => Ok(max.div_ceil(config.epochs)),
        (None, None) => bail!("a stream of unknown length needs max_steps in the config"),
    };
    let schedule = config.schedule(steps_per_epoch(config)?, world);
    let total_steps = schedule.total_steps;
    if let Some((saved, ..)) = &resumed {
        // max_steps may change on resume (a run extended) as long as the steps already taken
        // had the learning rates the new schedule gives them.
        let before = saved
            .config
            .schedule(steps_per_epoch(&saved.config)?, world);
        let moved = (0..saved.step).find(|&s| before.lr(s) != schedule.lr(s));
        if let (Some(step), false) = (moved, options.resume_changed) {
            bail!(
                "resuming {} with max_steps {:?} (was {:?}) changes the learning rate of step {} \
                 already taken; pass --resume-changed to continue with it (no longer step-exact)",
                options.dir.display(),
                config.max_steps,
                saved.config.max_steps,
                step + 1
            );
        }
    }
    let (mut state, model_bytes, optimizer_bytes) = match resumed {
        // The recipe in force from here on (the same one unless --resume-changed).
        Some((state, model, optimizer)) => (
            RunState {
                config: config.clone(),
                ..state
            },
            model,
            Some(optimizer),
        ),
        None => (
            RunState {
                step: 0,
                position: DataPosition::default(),
                devices: world,
                seed: config.seed,
                best_miou: None,
                config: config.clone(),
            },
            initial,
            None,
        ),
    };
    let metrics_path = options.dir.join("metrics.jsonl");
    truncate_metrics(&metrics_path, state.step)?;
    write_atomically(
        &options.dir.join("train.json"),
        serde_json::to_string_pretty(config)?.as_bytes(),
    )?;

    let settings = ReplicaSettings {
        adamw: config.adamw(),
        momentum: config.stage_two().then_some(config.momentum),
        seed: state.seed,
        frozen_text_cache_mb: config.text_frozen().then_some(config.text_cache_mb),
        autocast: config.autocast.map(|a| a.dtype()),
        group_naming: (config.group_naming > 0.0).then_some(config.group_naming),
    };
    let model_bytes = Arc::new(model_bytes);
    let optimizer_bytes = Arc::new(optimizer_bytes);
    if world > 1 {
        reset_collective::<B>();
    }
    let group = Group {
        local,
        node_rank,
        world,
        cluster: options.cluster.clone(),
    };
    let started: Vec<(Worker, Receiver<Result<()>>)> = devices
        .into_iter()
        .enumerate()
        .map(|(rank, device)| {
            spawn_worker::<B>(
                rank,
                group.clone(),
                device,
                model_bytes.clone(),
                optimizer_bytes.clone(),
                tokenizer.clone(),
                settings,
                options.model_config.clone(),
            )
        })
        .collect::<Result<_>>()?;
    // Every device registers with the group before any can go on, so wait for all of them.
    let mut workers = Vec::with_capacity(local);
    for (rank, (worker, ready)) in started.into_iter().enumerate() {
        ready
            .recv()
            .map_err(|_| anyhow!("device {rank} failed to start"))??;
        workers.push(worker);
    }
    if options.resume && nodes > 1 {
        if let Some(back) = agree_on_resume(&workers, state.step, &checkpoints, node_rank)? {
            tracing::warn!(
                "another machine's last checkpoint is step {}: going back to it from step {}",
                back.state.step,
                state.step
            );
            restore(&workers, &back)?;
            state = RunState {
                config: config.clone(),
                ..back.state
            };
            truncate_metrics(&metrics_path, state.step)?;
        }
    }

    let bar = if options.show_progress {
        ProgressBar::new(total_steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed} < {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(state.step as u64);

    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;
    let mut eval = eval;
    let mut first = None;
    let mut last = None;
    let mut bad_steps = 0usize;
    let batch_images = config.global_batch(world) as f64;
    let vote_each_step = nodes > 1 && source.steps_per_epoch().is_none();

    let save = |state: &RunState, workers: &[Worker]| -> Result<(Vec<u8>, PathBuf)> {
        let (model, optimizer) = snapshot(&workers[0])?;
        let path = checkpoints.save(state, &model, &optimizer, config.keep_last)?;
        Ok((model, path))
    };

    'epochs: for epoch in state.position.epoch..config.epochs {
        bar.set_prefix(format!(
            "stage {} epoch {}/{}",
            config.stage,
            epoch + 1,
            config.epochs
        ));
        let start = if epoch == state.position.epoch {
            state.position.batch
        } else {
            0
        };
        let mut batches = source.epoch(epoch, start);
        for index in 0.. {
            if state.step >= total_steps {
                break 'epochs;
            }
            let batch = batches.next();
            // Machines read streams of their own, of different lengths: the epoch ends on all
            // of them when the first runs dry, so that none waits for a step that never comes.
            if vote_each_step && !all_have_batch(&workers, matches!(batch, Some(Ok(_))))? {
                break;
            }
            let Some(batch) = batch else { break };
            let batch = batch?;
            let began = Instant::now();
            let lr = schedule.lr(state.step);
            let micro = split(&batch, local, config.accumulation)?;
            for (worker, micro) in workers.iter().zip(micro) {
                worker
                    .commands
                    .send(Command::Step {
                        micro,
                        lr,
                        step: state.step,
                    })
                    .map_err(|_| device_lost(nodes))?;
            }
            let mut values = None;
            for worker in &workers {
                match worker.replies.recv() {
                    Ok(Reply::Step(v)) => values = Some(v?),
                    _ => return Err(device_lost(nodes)),
                }
            }
            let values = values.expect("at least one device");
            state.step += 1;
            state.position = DataPosition {
                epoch,
                batch: start + index + 1,
            };
            let line = MetricsLine {
                step: state.step,
                epoch,
                lr,
                matching: values.matching,
                entity: values.entity,
                mask: values.mask,
                naming: values.naming,
                total: values.total,
                grad_norm: values.grad_norm,
                images_per_s: batch_images / began.elapsed().as_secs_f64(),
                allreduce_s: values.reduce.map(|(s, _)| s),
                allreduce_mb: values.reduce.map(|(_, bytes)| bytes as f64 / 1e6),
                skipped: values.skipped,
            };
            writeln!(metrics, "{}", serde_json::to_string(&line)?)
                .and_then(|_| metrics.flush())
                .with_context(|| format!("cannot append to {}", metrics_path.display()))?;
            if values.skipped {
                bad_steps += 1;
                bar.suspend(|| {
                    tracing::warn!(step = state.step, loss = values.total, grad_norm = values.grad_norm, "step skipped");
                    eprintln!(
                        "warning: step {}: the loss ({}) or its gradient (norm {}) is not finite; this step changed no weight",
                        state.step, values.total, values.grad_norm
                    )
                });
                if bad_steps >= MAX_BAD_STEPS {
                    // A skipped step changes no weight, so this checkpoint holds the model and
                    // optimizer of the last good step, at the data position after the bad ones.
                    let (_, path) = save(&state, &workers)?;
                    bail!(
                        "{MAX_BAD_STEPS} steps in a row had a non-finite loss or gradient (last: \
                         loss {}, gradient norm {}): lower the learning rate or check the data; \
                         the weights of the last good step ({}) are saved in {}",
                        values.total,
                        values.grad_norm,
                        state.step - bad_steps,
                        path.display()
                    );
                }
            } else {
                bad_steps = 0;
                first.get_or_insert(values);
                last = Some(values);
            }
            bar.set_message(progress_message(&line));
            bar.set_position(state.step as u64);

            let eval_due = config
                .eval
                .as_ref()
                .is_some_and(|e| state.step % e.every.max(1) == 0);
            if state.step % config.checkpoint_every == 0 || eval_due {
                let (model, _) = save(&state, &workers)?;
                if let (true, Some(hook)) = (eval_due, eval.as_mut()) {
                    let miou = bar.suspend(|| hook(&model, state.step))?;
                    if state.best_miou.is_none_or(|best| miou > best) {
                        state.best_miou = Some(miou);
                        write_atomically(&options.dir.join("best.mpk"), &model)?;
                        save(&state, &workers)?;
                    }
                }
            }
        }
        if state.step >= total_steps {
            break;
        }
        state.position = DataPosition {
            epoch: epoch + 1,
            batch: 0,
        };
        save(&state, &workers)?;
    }
    let (model, _) = save(&state, &workers)?;
    let final_model = options.dir.join("model.mpk");
    write_atomically(&final_model, &model)?;
    write_atomically(
        &options.dir.join("model.json"),
        options.model_config.to_json().as_bytes(),
    )?;
    bar.finish_and_clear();
    if let Some(skipped) = source.skipped() {
        eprintln!("data: {skipped}");
    }
    for worker in workers {
        drop(worker.commands);
        worker
            .thread
            .join()
            .map_err(|_| anyhow!("a training device panicked"))?;
    }
    Ok(RunSummary {
        steps: state.step,
        first,
        last,
        final_model,
    })
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
/// the global batch in that order, see [`ovseg_trainer::data::Share::rows`]).
fn split(
    batch: &DeviceBatch,
    devices: usize,
    accumulation: usize,
) -> Result<Vec<Vec<DeviceBatch>>> {
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

/// Whether every machine has a batch for the next step (each says whether it has one).
fn all_have_batch(workers: &[Worker], have: bool) -> Result<bool> {
    Ok(exchange(workers, have as u32)?.iter().all(|&v| v == 1))
}

/// Tells every machine `value` and gives every machine's, in machine order (one all-reduce that
/// every device of every machine takes part in).
fn exchange(workers: &[Worker], value: u32) -> Result<Vec<u32>> {
    for worker in workers {
        worker
            .commands
            .send(Command::Exchange(value))
            .map_err(|_| machine_lost())?;
    }
    let mut values = Vec::new();
    for worker in workers {
        match worker.replies.recv() {
            Ok(Reply::Exchange(v)) => values = v?,
            _ => return Err(machine_lost()),
        }
    }
    Ok(values)
}

/// Machines resuming a run go on from the newest step all of them reached: a machine stopped
/// while the others saved is a checkpoint behind. Gives the checkpoint this machine goes back
/// to, if it is ahead.
fn agree_on_resume(
    workers: &[Worker],
    step: usize,
    checkpoints: &Checkpoints,
    node_rank: usize,
) -> Result<Option<Checkpoint>> {
    let steps = exchange(workers, u32::try_from(step)?)?;
    let (behind, &common) = steps
        .iter()
        .enumerate()
        .min_by_key(|(_, s)| **s)
        .expect("at least one machine");
    if common as usize == step {
        return Ok(None);
    }
    let kept = checkpoints.list()?;
    let Some((_, path)) = kept.iter().find(|(s, _)| *s == common as usize) else {
        bail!(
            "machine {node_rank} would resume at step {step}, but machine {behind}'s last \
             checkpoint is step {common}, which this machine no longer keeps: copy machine \
             {behind}'s checkpoint of step {common} into every machine's checkpoints folder"
        );
    };
    Checkpoint::open(path).map(Some)
}

/// Every device goes back to `checkpoint`'s model and optimizer.
fn restore(workers: &[Worker], checkpoint: &Checkpoint) -> Result<()> {
    let model = std::fs::read(checkpoint.model_path())
        .with_context(|| format!("cannot read {}", checkpoint.model_path().display()))?;
    let optimizer = checkpoint.optimizer_bytes()?;
    for worker in workers {
        worker
            .commands
            .send(Command::Restore {
                model: model.clone(),
                optimizer: optimizer.clone(),
            })
            .map_err(|_| machine_lost())?;
    }
    for worker in workers {
        match worker.replies.recv() {
            Ok(Reply::Restore(r)) => r?,
            _ => return Err(machine_lost()),
        }
    }
    Ok(())
}

/// A device thread ended mid-run.
fn device_lost(nodes: usize) -> anyhow::Error {
    if nodes > 1 {
        machine_lost()
    } else {
        anyhow!("a training device stopped unexpectedly")
    }
}

/// A device thread ended in a run on several machines: the usual cause is another machine that
/// stopped, whose all-reduce then fails on every other machine.
fn machine_lost() -> anyhow::Error {
    anyhow!(
        "a training device stopped: another machine stopped or cannot be reached (the \
         all-reduce failed); start every machine again with --resume to go on from the last \
         checkpoint"
    )
}

/// One device's part of [`exchange`]: the first device of each machine puts `value` in its
/// machine's slot of a zero vector; the sum over all devices holds every machine's value.
fn exchange_on<B: Backend>(
    gather: Option<&CollectiveGather>,
    group: &Group,
    local_rank: usize,
    value: u32,
    device: &B::Device,
) -> Result<Vec<u32>> {
    let Some(gather) = gather else {
        return Ok(vec![value]);
    };
    if value >= 1 << f32::MANTISSA_DIGITS {
        bail!("{value} is too large to tell the other machines exactly");
    }
    let mut slots = vec![0.0f32; group.world / group.local];
    if local_rank == 0 {
        slots[group.node_rank] = value as f32;
    }
    let mine = Tensor::<B, 1>::from_floats(slots.as_slice(), device);
    let sum = all_reduce::<B>(
        gather.peer,
        mine.into_primitive().tensor(),
        ReduceOperation::Sum,
    )
    .map_err(|e| anyhow!("the machines cannot reach each other: {e:?}"))?;
    let values = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(sum))
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| anyhow!("{e:?}"))?;
    Ok(values.iter().map(|v| v.round() as u32).collect())
}

fn snapshot(worker: &Worker) -> Result<(Vec<u8>, Vec<u8>)> {
    worker
        .commands
        .send(Command::Snapshot)
        .map_err(|_| anyhow!("the first training device stopped"))?;
    match worker.replies.recv() {
        Ok(Reply::Snapshot(result)) => result,
        _ => bail!("the first training device stopped unexpectedly"),
    }
}

#[allow(clippy::too_many_arguments)]
/// How the devices of this run are grouped.
#[derive(Debug, Clone)]
struct Group {
    local: usize,
    node_rank: usize,
    world: usize,
    cluster: Option<Cluster>,
}

impl Group {
    fn config(&self) -> Result<CollectiveConfig> {
        let config = CollectiveConfig::default().with_num_devices(self.local);
        let Some(cluster) = &self.cluster else {
            return Ok(config);
        };
        let address = |a: &str| a.parse().map_err(|e| anyhow!("invalid address {a:?}: {e}"));
        Ok(config
            .with_num_nodes(cluster.nodes as u32)
            .with_global_address(address(&cluster.orchestrator)?)
            .with_node_address(address(&cluster.node_address)?)
            .with_data_service_port(cluster.data_port)
            // burn's default ring cannot split a tensor with fewer rows than machines (the
            // logit scale has one); a binary tree takes every shape.
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2)))
    }
}

fn spawn_worker<B: Backend>(
    local_rank: usize,
    group: Group,
    device: B::Device,
    model: Arc<Vec<u8>>,
    optimizer: Arc<Option<Vec<u8>>>,
    tokenizer: Arc<TextTokenizer>,
    settings: ReplicaSettings,
    model_config: OvsegConfig,
) -> Result<(Worker, Receiver<Result<()>>)> {
    let (commands, inbox) = channel::<Command>();
    let (outbox, replies) = channel::<Reply>();
    let (ready_tx, ready_rx) = channel::<Result<()>>();
    let thread = std::thread::Builder::new()
        .name(format!("ovseg-device-{local_rank}"))
        .spawn(move || {
            let rank = group.node_rank * group.local + local_rank;
            let gather = (group.world > 1).then(|| CollectiveGather {
                peer: PeerId(rank as u32),
                rank,
                world: group.world,
            });
            let stored_tokenizer = tokenizer.stored_json().map(str::to_string);
            // Each replica reads its own copy: separate autodiff graphs, same parameter ids.
            let load = |model: Vec<u8>, optimizer: Option<Vec<u8>>| -> Result<Replica<B>> {
                let (model, _) = model_from_bytes::<Autodiff<B>>(model, "the model", &device)?;
                let model = freeze_for_stage(model, settings.frozen_text_cache_mb.is_some());
                let mut replica =
                    Replica::new(model, tokenizer.clone(), device.clone(), gather, settings);
                if let Some(bytes) = optimizer {
                    replica.load_optimizer(bytes)?;
                }
                Ok(replica)
            };
            let setup = || -> Result<Replica<B>> {
                if let Some(g) = &gather {
                    register::<B>(g.peer, device.clone(), group.config()?)
                        .map_err(|e| anyhow!("cannot join the device group: {e:?}"))?;
                }
                load(model.as_ref().clone(), optimizer.as_ref().clone())
            };
            let mut replica = match setup() {
                Ok(r) => {
                    ready_tx.send(Ok(())).ok();
                    r
                }
                Err(e) => {
                    ready_tx.send(Err(e)).ok();
                    return;
                }
            };
            while let Ok(command) = inbox.recv() {
                let reply = match command {
                    Command::Step { micro, lr, step } => {
                        Reply::Step(replica.step(&micro, lr, step))
                    }
                    Command::Exchange(value) => Reply::Exchange(exchange_on::<B>(
                        gather.as_ref(),
                        &group,
                        local_rank,
                        value,
                        &device,
                    )),
                    Command::Restore { model, optimizer } => {
                        Reply::Restore(load(model, Some(optimizer)).map(|r| replica = r))
                    }
                    Command::Snapshot => Reply::Snapshot((|| {
                        let model = model_to_bytes(
                            replica.model().clone(),
                            &model_config,
                            stored_tokenizer.as_deref(),
                            Precision::Full,
                        )?;
                        Ok((model, replica.optimizer_bytes()?))
                    })()),
                };
                if outbox.send(reply).is_err() {
                    break;
                }
            }
            if let Some(g) = gather {
                finish_collective::<B>(g.peer).ok();
            }
        })
        .context("cannot start a device thread")?;
    Ok((
        Worker {
            commands,
            replies,
            thread,
        },
        ready_rx,
    ))
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
