//! This machine's training devices: one thread per device, each owning a [`Replica`], driven
//! by [`Command`]s from the training loop ([`super::run::Trainer`]).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use burn::collective::{
    all_reduce, finish_collective, register, AllReduceStrategy, CollectiveConfig, PeerId,
    ReduceOperation,
};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvSegmentor;

use super::collective::CollectiveGather;
use super::replica::{freeze_for_stage, trainable, Replica, ReplicaSettings, StepValues};
use crate::data::Batch;

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

/// How the devices of this run are grouped.
#[derive(Debug, Clone)]
pub struct Group {
    /// Devices on this machine.
    pub local: usize,
    pub node_rank: usize,
    /// Devices on all machines.
    pub world: usize,
    pub cluster: Option<Cluster>,
}

impl Group {
    pub fn new(local: usize, cluster: Option<Cluster>) -> Self {
        let (nodes, node_rank) = cluster.as_ref().map_or((1, 0), |c| (c.nodes, c.node_rank));
        Self {
            local,
            node_rank,
            world: local * nodes,
            cluster,
        }
    }

    pub fn nodes(&self) -> usize {
        self.world / self.local
    }

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

/// A replica's weights (on the plain backend) and its optimizer state (the checkpoint's bytes).
pub struct Snapshot<B: Backend> {
    pub model: OvSegmentor<B>,
    pub optimizer: Vec<u8>,
}

impl<B: Backend> Clone for Snapshot<B> {
    fn clone(&self) -> Self {
        Self {
            model: self.model.clone(),
            optimizer: self.optimizer.clone(),
        }
    }
}

enum Command<B: Backend> {
    Step {
        micro: Vec<Batch>,
        lr: f64,
        step: usize,
    },
    Snapshot,
    /// Tell every machine this number (see [`Devices::exchange`]).
    Exchange(u32),
    /// Go back to this model and optimizer state.
    Restore(Snapshot<B>),
}

enum Reply<B: Backend> {
    Step(Result<StepValues>),
    Snapshot(Result<Snapshot<B>>),
    /// Every machine's number, in machine order.
    Exchange(Result<Vec<u32>>),
    Restore(Result<()>),
}

struct Worker<B: Backend> {
    commands: Sender<Command<B>>,
    replies: Receiver<Reply<B>>,
    thread: std::thread::JoinHandle<()>,
}

/// What every replica is made with.
pub struct ReplicaSetup {
    pub tokenizer: Arc<TextTokenizer>,
    pub settings: ReplicaSettings,
}

/// The device threads of this machine.
pub struct Devices<B: Backend> {
    workers: Vec<Worker<B>>,
    group: Group,
    first: B::Device,
}

impl<B: Backend> Devices<B> {
    /// One replica of `model` on each device, with a fresh optimizer or the state `optimizer`
    /// (a checkpoint's bytes); returns once every device has joined the group (none can go on
    /// before all have registered).
    pub fn spawn(
        devices: Vec<B::Device>,
        group: Group,
        model: OvSegmentor<B>,
        optimizer: Option<Vec<u8>>,
        setup: ReplicaSetup,
    ) -> Result<Self> {
        let setup = Arc::new(setup);
        let first = devices[0].clone();
        // Drawn once (a fresh model's parameters are drawn when first read, separately by
        // each clone), so that every replica starts from the same weights.
        let model = model.fork(&first);
        let started: Vec<(Worker<B>, Receiver<Result<()>>)> = devices
            .into_iter()
            .enumerate()
            .map(|(rank, device)| {
                let model = model.clone();
                let optimizer = optimizer.clone();
                spawn_worker(rank, group.clone(), device, model, optimizer, setup.clone())
            })
            .collect::<Result<_>>()?;
        let mut workers = Vec::with_capacity(started.len());
        for (rank, (worker, ready)) in started.into_iter().enumerate() {
            ready
                .recv()
                .map_err(|_| anyhow!("device {rank} failed to start"))??;
            workers.push(worker);
        }
        Ok(Self {
            workers,
            group,
            first,
        })
    }

    pub fn group(&self) -> &Group {
        &self.group
    }

    /// The device whose weights [`Devices::snapshot`] gives.
    pub fn first(&self) -> &B::Device {
        &self.first
    }

    /// One optimizer step: `micro[d]` are device `d`'s micro-batches. Gives the step's values
    /// (equal on every device after the all-reduce).
    pub fn step(&self, micro: Vec<Vec<Batch>>, lr: f64, step: usize) -> Result<StepValues> {
        for (worker, micro) in self.workers.iter().zip(micro) {
            self.send(worker, Command::Step { micro, lr, step })?;
        }
        let mut values = None;
        for worker in &self.workers {
            match worker.replies.recv() {
                Ok(Reply::Step(v)) => values = Some(v?),
                _ => return Err(self.lost()),
            }
        }
        Ok(values.expect("at least one device"))
    }

    /// The first device's weights and optimizer state (all devices hold the same).
    pub fn snapshot(&self) -> Result<Snapshot<B>> {
        let first = &self.workers[0];
        self.send(first, Command::Snapshot)?;
        match first.replies.recv() {
            Ok(Reply::Snapshot(result)) => result,
            _ => Err(self.lost()),
        }
    }

    /// Every device goes back to `snapshot`.
    pub fn restore(&self, snapshot: &Snapshot<B>) -> Result<()> {
        for worker in &self.workers {
            self.send(worker, Command::Restore(snapshot.clone()))?;
        }
        for worker in &self.workers {
            match worker.replies.recv() {
                Ok(Reply::Restore(r)) => r?,
                _ => return Err(self.lost()),
            }
        }
        Ok(())
    }

    /// Tells every machine `value` and gives every machine's, in machine order (one all-reduce
    /// that every device of every machine takes part in).
    pub fn exchange(&self, value: u32) -> Result<Vec<u32>> {
        for worker in &self.workers {
            self.send(worker, Command::Exchange(value))?;
        }
        let mut values = Vec::new();
        for worker in &self.workers {
            match worker.replies.recv() {
                Ok(Reply::Exchange(v)) => values = v?,
                _ => return Err(self.lost()),
            }
        }
        Ok(values)
    }

    /// Ends the device threads.
    pub fn join(self) -> Result<()> {
        for worker in self.workers {
            drop(worker.commands);
            worker
                .thread
                .join()
                .map_err(|_| anyhow!("a training device panicked"))?;
        }
        Ok(())
    }

    fn send(&self, worker: &Worker<B>, command: Command<B>) -> Result<()> {
        worker.commands.send(command).map_err(|_| self.lost())
    }

    /// A device thread ended mid-run. On several machines the usual cause is another machine
    /// that stopped, whose all-reduce then fails on every other machine.
    fn lost(&self) -> anyhow::Error {
        if self.group.nodes() > 1 {
            anyhow!(
                "a training device stopped: another machine stopped or cannot be reached (the \
                 all-reduce failed); start every machine again with --resume to go on from the \
                 last checkpoint"
            )
        } else {
            anyhow!("a training device stopped unexpectedly")
        }
    }
}

fn spawn_worker<B: Backend>(
    local_rank: usize,
    group: Group,
    device: B::Device,
    model: OvSegmentor<B>,
    optimizer: Option<Vec<u8>>,
    setup: Arc<ReplicaSetup>,
) -> Result<(Worker<B>, Receiver<Result<()>>)> {
    let (commands, inbox) = channel::<Command<B>>();
    let (outbox, replies) = channel::<Reply<B>>();
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
            let device_setup = || -> Result<Replica<B>> {
                if let Some(g) = &gather {
                    register::<B>(g.peer, device.clone(), group.config()?)
                        .map_err(|e| anyhow!("cannot join the device group: {e:?}"))?;
                }
                replica(model, optimizer, &setup, &device, gather)
            };
            let mut replica = match device_setup() {
                Ok(r) => {
                    ready_tx.send(Ok(())).ok();
                    r
                }
                Err(e) => {
                    ready_tx.send(Err(e)).ok();
                    return;
                }
            };
            serve(
                &mut replica,
                &inbox,
                &outbox,
                &setup,
                &group,
                local_rank,
                &device,
            );
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

/// A device thread's work: each command's reply, until the training loop hangs up.
fn serve<B: Backend>(
    replica: &mut Replica<B>,
    inbox: &Receiver<Command<B>>,
    outbox: &Sender<Reply<B>>,
    setup: &ReplicaSetup,
    group: &Group,
    local_rank: usize,
    device: &B::Device,
) {
    let gather = replica.gather();
    while let Ok(command) = inbox.recv() {
        let reply = match command {
            Command::Step { micro, lr, step } => Reply::Step(replica.step(&micro, lr, step)),
            Command::Exchange(value) => Reply::Exchange(exchange_on::<B>(
                gather.as_ref(),
                group,
                local_rank,
                value,
                device,
            )),
            Command::Restore(snapshot) => Reply::Restore(
                self::replica(
                    snapshot.model,
                    Some(snapshot.optimizer),
                    setup,
                    device,
                    gather,
                )
                .map(|r| *replica = r),
            ),
            Command::Snapshot => {
                Reply::Snapshot(replica.optimizer_bytes().map(|optimizer| Snapshot {
                    model: replica.model().valid(),
                    optimizer,
                }))
            }
        };
        if outbox.send(reply).is_err() {
            break;
        }
    }
}

/// A replica of `model` on `device` (its own autodiff graph, the same parameter ids) with a
/// fresh optimizer or the state `optimizer`.
fn replica<B: Backend>(
    model: OvSegmentor<B>,
    optimizer: Option<Vec<u8>>,
    setup: &ReplicaSetup,
    device: &B::Device,
    gather: Option<CollectiveGather>,
) -> Result<Replica<B>> {
    let model = trainable(model.fork(device));
    let model = freeze_for_stage(model, setup.settings.frozen_text_cache_mb.is_some());
    let mut replica = Replica::new(
        model,
        setup.tokenizer.clone(),
        device.clone(),
        gather,
        setup.settings,
    );
    if let Some(bytes) = optimizer {
        replica.load_optimizer(bytes)?;
    }
    Ok(replica)
}

/// One device's part of [`Devices::exchange`]: the first device of each machine puts `value`
/// in its machine's slot of a zero vector; the sum over all devices holds every machine's value.
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
    let mut slots = vec![0.0f32; group.nodes()];
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
