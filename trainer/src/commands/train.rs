//! `ovseg train`: stage 1 or stage 2 of the paper's recipe on caption data, on one device, on
//! several local devices (`--devices N`), resumable (`--resume`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::prelude::Backend;
use ovseg_model::import::{load_dino_vit, load_hf_bert_dir};
use ovseg_model::record::read_manifest;
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig};

use crate::backend::DeviceKind;
use crate::eval::datasets::{Benchmark, Dataset};
use crate::eval::run::{evaluate, EvalOptions};
use crate::model_io::{check_tokenizer, load_model, load_tokenizer, read_config};
use crate::train::config::{Autocast, TrainConfig};
use crate::train::run::{train, RunOptions, Start};
use crate::train::source::LoaderSource;
use ovseg_trainer::data::{DataConfig, EntityIndex, Loader, Share, Source};

#[derive(clap::Args)]
pub struct Args {
    /// Run folder: checkpoints/, metrics.jsonl, train.json and, at the end, model.mpk.
    #[arg(long)]
    out: PathBuf,
    /// Training settings: `stage1`, `stage2` (the paper's) or a JSON file.
    #[arg(long, default_value = "stage1")]
    recipe: String,
    /// Caption data: a meta-file (one `{"filename", "caption"}` a line; images beside it or in
    /// --images), or webdataset .tar shards (files or a folder).
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Image folder of a meta-file (default: the meta-file's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Entity index written by `ovseg index` (default: built now, and saved beside the meta-file).
    #[arg(long)]
    index: Option<PathBuf>,
    /// Model shape for a fresh start: a preset (paper, vits-roberta, paper-16-groups,
    /// vits-minilm, tiny) or a JSON file.
    #[arg(long, default_value = "paper")]
    model: String,
    /// Start from this model (stage 2: the stage-1 result): an ovseg model file, or a released
    /// PyTorch checkpoint (.pth, such as the released stage-1 one) with --config.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Model configuration of a .pth given to --init (as `ovseg convert --config`).
    #[arg(long, requires = "init")]
    config: Option<PathBuf>,
    /// Text encoder weights: a HuggingFace BERT or RoBERTa folder (config.json,
    /// model.safetensors).
    #[arg(long)]
    bert: Option<PathBuf>,
    /// Image encoder weights: a DINO ViT checkpoint (.pth).
    #[arg(long)]
    dino: Option<PathBuf>,
    /// tokenizer.json instead of the one stored with --init (a fresh model: instead of the
    /// built-in uncased BERT one; a RoBERTa model needs its own). Stored in every checkpoint.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// With --resume: accept a recipe that changed since the checkpoint (batch size, seed,
    /// rates...). The run is then no longer step-exact.
    #[arg(long, requires = "resume")]
    resume_changed: bool,
    /// Devices trained in data parallel (GPUs 0..N with cuda; N replicas on the CPU).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Overrides of the recipe.
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    accumulation: Option<usize>,
    #[arg(long)]
    max_steps: Option<usize>,
    /// Mixed precision: matrix products in bf16, parameters and optimizer in f32 (for CUDA; the
    /// CPU backend computes half precision slowly).
    #[arg(long, value_enum)]
    autocast: Option<Autocast>,
    /// Weight of ovseg's group-naming loss (not in the paper): each caption entity is trained
    /// onto the picture's best-matching group. 0: off.
    #[arg(long)]
    group_naming: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    workers: Option<usize>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Zero-shot evaluation during training: a VOC-layout folder scored every --eval-every steps.
    #[arg(long)]
    eval_voc: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    eval_every: usize,
    /// Class names of --eval-voc (comma separated or a file, background first).
    #[arg(long)]
    eval_classes: Option<String>,
    /// Several machines: how many take part (each runs this command with its --node-rank).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Address of the `ovseg orchestrator` every machine joins, e.g. ws://10.0.0.1:9000.
    #[arg(long)]
    orchestrator: Option<String>,
    /// This machine's address as the others reach it, e.g. ws://10.0.0.2:9001.
    #[arg(long)]
    node_address: Option<String>,
    /// Port this machine serves tensors on (the port of --node-address).
    #[arg(long, default_value_t = 9001)]
    data_port: u16,
    #[arg(long)]
    quiet: bool,
}

fn cluster(args: &Args) -> Result<Option<crate::train::run::Cluster>> {
    if args.nodes <= 1 {
        return Ok(None);
    }
    if args.node_rank >= args.nodes {
        bail!(
            "--node-rank {} but only {} nodes",
            args.node_rank,
            args.nodes
        );
    }
    let (Some(orchestrator), Some(node_address)) = (&args.orchestrator, &args.node_address) else {
        bail!(
            "--nodes {} needs --orchestrator and --node-address",
            args.nodes
        );
    };
    Ok(Some(crate::train::run::Cluster {
        nodes: args.nodes,
        node_rank: args.node_rank,
        orchestrator: orchestrator.clone(),
        node_address: node_address.clone(),
        data_port: args.data_port,
    }))
}

pub fn run(args: Args) -> Result<()> {
    let n = args.devices;
    if n == 0 {
        bail!("--devices must be at least 1");
    }
    match args.device {
        DeviceKind::Cpu => run_on::<crate::backend::Cpu>(args, vec![Default::default(); n]),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            let devices = (0..n).map(burn::backend::cuda::CudaDevice::new).collect();
            run_on::<burn::backend::Cuda>(args, devices)
        }
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => {
            if n > 1 {
                bail!("--devices {n} needs --device cuda (or cpu replicas)");
            }
            run_on::<burn::backend::Wgpu>(args, vec![Default::default()])
        }
    }
}

fn recipe(args: &Args) -> Result<TrainConfig> {
    let mut config =
        if args.recipe.ends_with(".json") || std::path::Path::new(&args.recipe).is_file() {
            TrainConfig::read(std::path::Path::new(&args.recipe))?
        } else {
            TrainConfig::preset(&args.recipe)?
        };
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = args.$field { config.$field = v; })* };
    }
    set!(
        epochs,
        batch_size,
        accumulation,
        group_naming,
        seed,
        workers,
        checkpoint_every
    );
    if args.autocast.is_some() {
        config.autocast = args.autocast;
    }
    if args.max_steps.is_some() {
        config.max_steps = args.max_steps;
    }
    if let Some(root) = &args.eval_voc {
        config.eval = Some(crate::train::config::EvalSpec {
            dataset: "voc".into(),
            root: root.clone(),
            classes: args.eval_classes.clone(),
            every: args.eval_every,
            limit: None,
        });
    }
    config.validate()?;
    Ok(config)
}

fn model_config(args: &Args) -> Result<OvsegConfig> {
    read_config(std::path::Path::new(&args.model))
}

fn run_on<B: Backend>(args: Args, devices: Vec<B::Device>) -> Result<()> {
    let config = recipe(&args)?;
    let device = devices[0].clone();

    // The starting model; a resumed run reads it from its checkpoint.
    let (start, model_config, tokenizer) = if args.resume {
        let (config, tokenizer) = resumed_model(&args)?;
        (Start::Resume, config, tokenizer)
    } else {
        let (model, config, tokenizer) = initial_model::<B>(&args, &config, &device)?;
        (Start::Fresh(model), config, tokenizer)
    };
    let tokenizer = Arc::new(tokenizer);

    let cluster = cluster(&args)?;
    let (node, nodes) = cluster.as_ref().map_or((0, 1), |c| (c.node_rank, c.nodes));
    let share = Share {
        node,
        nodes,
        devices: devices.len(),
        accumulation: config.accumulation,
    };
    let source = data_source(&args, &config, share)?;
    let options = RunOptions {
        dir: args.out.clone(),
        cluster,
        config: config.clone(),
        model_config,
        resume_changed: args.resume_changed,
        show_progress: !args.quiet,
    };
    let mut eval_hook = eval_during_training::<B>(&config, tokenizer.clone(), device)?;
    let summary = train::<B>(
        &options,
        start,
        tokenizer,
        &source,
        devices,
        eval_hook
            .as_mut()
            .map(|h| h as &mut crate::train::run::EvalHook<'_, B>),
    )?;
    if let (Some(first), Some(last)) = (summary.first, summary.last) {
        println!(
            "trained {} steps: loss {:.4} -> {:.4}; model in {}",
            summary.steps,
            first.total,
            last.total,
            summary.final_model.display()
        );
    }
    Ok(())
}

/// The recipe's evaluation during training, as the training loop calls it. The evaluation
/// folder is read once, here, so a wrong path fails before training starts.
fn eval_during_training<B: Backend>(
    config: &TrainConfig,
    tokenizer: Arc<TextTokenizer>,
    device: B::Device,
) -> Result<Option<impl FnMut(&OvSegmentor<B>, usize) -> Result<f64>>> {
    let Some(spec) = config.eval.clone() else {
        return Ok(None);
    };
    let classes = match &spec.classes {
        Some(c) => Some(crate::eval::datasets::read_class_list(c)?),
        None => None,
    };
    let dataset = Dataset::open(Benchmark::named(&spec.dataset)?, &spec.root, classes, None)?;
    let options = EvalOptions {
        template: ovseg_model::segmentation::TemplateSet::Simple,
        limit: spec.limit,
        save_pred: None,
        window: None,
    };
    Ok(Some(move |model: &OvSegmentor<B>, step: usize| {
        let bar = indicatif::ProgressBar::hidden();
        let report = evaluate(model, &tokenizer, &dataset, &options, &bar, &device)?;
        tracing::info!(step, miou = report.miou, "zero-shot evaluation");
        eprintln!(
            "step {step}: mIoU {:.2} on {}",
            report.miou,
            spec.root.display()
        );
        Ok(report.miou)
    }))
}

/// `--tokenizer`, or the built-in uncased BERT one, checked against a fresh model's text encoder.
fn fresh_tokenizer(args: &Args, config: &OvsegConfig) -> Result<TextTokenizer> {
    let tokenizer = load_tokenizer(args.tokenizer.as_deref())?;
    let origin = match &args.tokenizer {
        Some(path) => format!("--tokenizer {}", path.display()),
        None => {
            "the built-in uncased BERT tokenizer (give the model's own with --tokenizer)".into()
        }
    };
    check_tokenizer(&tokenizer, config, origin)?;
    Ok(tokenizer)
}

/// The model training starts from, its configuration and its tokenizer.
fn initial_model<B: Backend>(
    args: &Args,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<(OvSegmentor<B>, OvsegConfig, TextTokenizer)> {
    let (mut model, mut model_config, tokenizer) = match &args.init {
        Some(path) => {
            let loaded = load_model::<B>(
                path,
                args.config.as_deref(),
                args.tokenizer.as_deref(),
                device,
            )?;
            if !loaded.model.has_training_heads() {
                bail!(
                    "{} is an inference-only export (no entity heads): start from a training checkpoint",
                    path.display()
                );
            }
            (loaded.model, loaded.config, loaded.tokenizer)
        }
        None => {
            let c = model_config(args)?;
            let tokenizer = fresh_tokenizer(args, &c)?;
            // The recipe's seed fixes the random initialisation too.
            B::seed(device, config.seed);
            (c.init::<B>(device), c, tokenizer)
        }
    };
    if let Some(dir) = &args.bert {
        let (text, encoder) = load_hf_bert_dir::<B>(dir, device)
            .with_context(|| format!("--bert {}", dir.display()))?;
        if text.hidden_size != model_config.text.hidden_size {
            bail!(
                "--bert {}: hidden size {} but the model's text encoder has {}",
                dir.display(),
                text.hidden_size,
                model_config.text.hidden_size
            );
        }
        model.text_encoder = encoder;
        model_config.text = text;
        model_config
            .validate()
            .with_context(|| format!("the model with the --bert {} text encoder", dir.display()))?;
        let origin = format!(
            "the tokenizer for the --bert {} text encoder",
            dir.display()
        );
        check_tokenizer(&tokenizer, &model_config, origin)?;
    }
    if let Some(path) = &args.dino {
        load_dino_vit(&mut model.img_encoder, &model_config.image.depths, path)?;
    }
    if config.image_size != model_config.image.img_size {
        bail!(
            "the recipe trains at {} pixels but the model's image encoder is built for {}",
            config.image_size,
            model_config.image.img_size
        );
    }
    if config.stage_two() {
        // Stage 2 starts with the momentum encoder equal to the stage-1 online encoder.
        model.reset_momentum_encoder();
    }
    Ok((model, model_config, tokenizer))
}

/// The configuration and tokenizer of the run `--resume` goes on with: those of its newest
/// checkpoint (read without its weights; the training loop loads them), or of `model.json`.
fn resumed_model(args: &Args) -> Result<(OvsegConfig, TextTokenizer)> {
    let stored = args.out.join("model.json");
    let checkpoint = crate::train::checkpoint::Checkpoints::new(&args.out)
        .latest()?
        .map(|c| c.model_path());
    match checkpoint {
        Some(path) => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let manifest = read_manifest(bytes, &path.display().to_string())?;
            let (tokenizer, origin) = match &args.tokenizer {
                Some(file) => (
                    load_tokenizer(Some(file))?,
                    format!("--tokenizer {}", file.display()),
                ),
                None => (
                    TextTokenizer::stored(manifest.tokenizer.as_deref())
                        .with_context(|| format!("the tokenizer stored in {}", path.display()))?,
                    format!("the tokenizer stored in {}", path.display()),
                ),
            };
            check_tokenizer(&tokenizer, &manifest.config, origin)?;
            Ok((manifest.config, tokenizer))
        }
        None if stored.is_file() => {
            let config = read_config(&stored)?;
            let tokenizer = fresh_tokenizer(args, &config)?;
            Ok((config, tokenizer))
        }
        None => bail!(
            "--resume: no checkpoint in {}",
            args.out.join("checkpoints").display()
        ),
    }
}

/// The loader of this machine's `share` of every global batch.
fn data_source(args: &Args, config: &TrainConfig, share: Share) -> Result<LoaderSource> {
    let stage = config.stage;
    let global_batch = config.global_batch(share.devices * share.nodes);
    let mut data_config = DataConfig::new(stage, global_batch, config.seed);
    data_config.share = share;
    data_config.image_size = config.image_size;
    if let Some(augmentation) = config.augment {
        data_config.augmentation = augmentation;
    }
    data_config.prefetch = config.prefetch.max(1);
    if config.workers > 0 {
        data_config.workers = config.workers;
    }
    let first = &args.data[0];
    let shards =
        args.data.len() > 1 || first.is_dir() || first.extension().is_some_and(|e| e == "tar");
    let source = if shards {
        Source::shards(&args.data)?
    } else {
        if !first.is_file() {
            bail!("meta-file {} does not exist", first.display());
        }
        match &args.index {
            Some(path) => Source::Meta {
                meta: first.clone(),
                images: images_folder(args, first),
                index: EntityIndex::load(path)?,
            },
            None => Source::meta(first, &images_folder(args, first))?,
        }
    };
    Ok(LoaderSource::new(Loader::new(source, data_config)?))
}

/// --images, else the meta-file's folder.
fn images_folder(args: &Args, meta: &std::path::Path) -> PathBuf {
    match &args.images {
        Some(images) => images.clone(),
        // A bare "meta.jsonl" has the parent "", which names no folder: the current one.
        None => match meta.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    }
}
