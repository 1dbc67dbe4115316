//! The training loop on the CPU: two devices equal one device with twice the batch, a resumed
//! run equals an uninterrupted one, and the optimizer groups follow the reference.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::data::Stage;
use anyhow::Result;
use burn::backend::Flex;
use burn::module::Module;
use burn::prelude::*;
use ovseg_model::record::{model_from_bytes, model_to_bytes, Precision};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvsegConfig;

use super::config::TrainConfig;
use super::optimizer::no_decay_params;
use super::run::{train, BatchSource, RunOptions, RunSummary, Start};
use crate::data::{Batch, DataPosition};

/// Fixed pseudo-random batches: batch `k` of epoch `e` depends on (e, k) only.
struct Synthetic {
    batch: usize,
    batches: usize,
    image_size: usize,
    stage_two: bool,
    /// These batches of every epoch hold NaN pixels.
    poison: Range<usize>,
}

fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

impl BatchSource for Synthetic {
    fn steps_per_epoch(&self) -> Option<usize> {
        Some(self.batches)
    }

    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        let words = ["dog", "cat", "car", "boat", "kite", "house", "ball", "cup"];
        Box::new((start..self.batches).map(move |k| {
            let pixels = 3 * self.image_size * self.image_size;
            let texts = |prefix: &str| -> Vec<String> {
                (0..self.batch)
                    .map(|i| {
                        let w = words[(i + k * 3 + epoch) % words.len()];
                        format!("{prefix} {w} on a table number {i}")
                    })
                    .collect()
            };
            let seed = (epoch * 1000 + k) as u64;
            let mut images = noise(seed, self.batch * pixels);
            if self.poison.contains(&k) {
                images[0] = f32::NAN;
            }
            Ok(Batch {
                size: self.batch,
                image_size: self.image_size,
                images,
                captions: texts("a photo of a"),
                questions: texts("a [MASK] near"),
                answers: texts("a picture of the"),
                entities: (0..self.batch)
                    .map(|i| vec![words[(i + k * 3 + epoch) % words.len()].to_string()])
                    .collect(),
                partner_images: self
                    .stage_two
                    .then(|| noise(seed + 77, self.batch * pixels)),
                partner_texts: self.stage_two.then(|| texts("A photo of")),
                position: DataPosition {
                    epoch,
                    batch: k + 1,
                },
            })
        }))
    }

    fn skipped(&self) -> Option<String> {
        None
    }
}

fn model_config() -> OvsegConfig {
    let mut c = OvsegConfig::tiny();
    c.proj_inner_dim = 64;
    c.image.drop_path_rate = 0.0;
    c.image.gumbel = false;
    c.image.img_size = 64;
    c
}

/// [`model_config`] with GroupViT's Gumbel noise on and drop-path rates 0, 1/6, 1/3 and 1/2
/// over the four blocks: every training forward draws noise for each sample.
fn noisy_model_config() -> OvsegConfig {
    let mut c = model_config();
    c.image.gumbel = true;
    c.image.drop_path_rate = 0.5;
    c
}

fn train_config(stage: u8, batch: usize, steps: usize) -> TrainConfig {
    TrainConfig {
        stage: Stage::try_from(stage).unwrap(),
        epochs: 1,
        batch_size: batch,
        base_lr: 1e-3,
        warmup_lr: 1e-4,
        min_lr: 1e-5,
        warmup_epochs: 0.5,
        lr_reference_batch: None,
        // Gradients that are zero in exact arithmetic (a key bias under softmax) hold float
        // noise that AdamW with eps 1e-8 turns into full steps, differently for any change of
        // summation order; a larger eps keeps the comparison about the real gradients.
        adam_epsilon: 1e-4,
        image_size: 64,
        checkpoint_every: 2,
        keep_last: 10,
        max_steps: Some(steps),
        ..TrainConfig::stage1()
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ovseg-train-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn run(
    dir: &PathBuf,
    config: TrainConfig,
    devices: usize,
    global_batch: usize,
    initial: Vec<u8>,
    resume: bool,
) -> RunSummary {
    run_with(dir, config, devices, global_batch, initial, resume, None)
}

fn run_with(
    dir: &PathBuf,
    config: TrainConfig,
    devices: usize,
    global_batch: usize,
    initial: Vec<u8>,
    resume: bool,
    poison: Option<usize>,
) -> RunSummary {
    try_run(dir, config, devices, global_batch, initial, resume, poison).expect("training runs")
}

fn try_run(
    dir: &PathBuf,
    config: TrainConfig,
    devices: usize,
    global_batch: usize,
    initial: Vec<u8>,
    resume: bool,
    poison: Option<usize>,
) -> Result<RunSummary> {
    Job {
        poison: poison.map_or(0..0, |k| k..k + 1),
        ..Job::new(config, devices, global_batch)
    }
    .try_run(dir, initial, resume)
}

/// One training run: the recipe, the model shape, the devices and the data it sees.
#[derive(Clone)]
struct Job {
    config: TrainConfig,
    model: OvsegConfig,
    devices: usize,
    global_batch: usize,
    /// Batches of every epoch with NaN pixels.
    poison: Range<usize>,
}

impl Job {
    fn new(config: TrainConfig, devices: usize, global_batch: usize) -> Self {
        Self {
            config,
            model: model_config(),
            devices,
            global_batch,
            poison: 0..0,
        }
    }

    /// The same run with Gumbel noise and drop-path on ([`noisy_model_config`]).
    fn noisy(self) -> Self {
        Self {
            model: noisy_model_config(),
            ..self
        }
    }

    fn try_run(&self, dir: &PathBuf, initial: Vec<u8>, resume: bool) -> Result<RunSummary> {
        // burn-collective keeps one registry per process: runs on several devices take turns.
        static COLLECTIVE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn =
            (self.devices > 1).then(|| COLLECTIVE.lock().unwrap_or_else(|e| e.into_inner()));
        let source = Synthetic {
            batch: self.global_batch,
            batches: 6,
            image_size: 64,
            stage_two: self.config.stage == Stage::Two,
            poison: self.poison.clone(),
        };
        let options = RunOptions {
            dir: dir.clone(),
            cluster: None,
            config: self.config.clone(),
            model_config: self.model.clone(),
            resume_changed: false,
            show_progress: false,
        };
        let tokenizer = Arc::new(TextTokenizer::bert_base_uncased());
        let devices = vec![Default::default(); self.devices];
        let start = if resume {
            Start::Resume
        } else {
            let (model, _) = model_from_bytes::<Flex>(initial, "the initial model", &devices[0])?;
            Start::Fresh(model)
        };
        train::<Flex>(&options, start, tokenizer, &source, devices, None)
    }

    fn run(&self, dir: &PathBuf, initial: Vec<u8>, resume: bool) -> RunSummary {
        self.try_run(dir, initial, resume).expect("training runs")
    }
}

fn initial_model(stage_two: bool) -> Vec<u8> {
    initial_model_of(&model_config(), stage_two)
}

fn initial_model_of(config: &OvsegConfig, stage_two: bool) -> Vec<u8> {
    let device = Default::default();
    let mut model = config.init::<Flex>(&device);
    if stage_two {
        model.reset_momentum_encoder();
    }
    model_to_bytes(model, config, None, Precision::Full).unwrap()
}

fn weights(path: &PathBuf) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let (model, _) = model_from_bytes::<Flex>(bytes, "test", &Default::default()).unwrap();
    let mut all = Vec::new();
    for t in collect(&model) {
        all.extend(t);
    }
    all
}

fn collect<M: Module<Flex>>(model: &M) -> Vec<Vec<f32>> {
    struct Params(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor<Flex> for Params {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<Flex, D>>) {
            self.0.push(p.val().into_data().to_vec().unwrap());
        }
    }
    let mut p = Params(Vec::new());
    model.visit(&mut p);
    p.0
}

fn read_metrics(dir: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn two_devices_with_batch_b_equal_one_device_with_batch_2b() {
    let initial = initial_model(false);
    let (one, two) = (scratch("one-device-1"), scratch("two-devices-1"));
    run(&one, train_config(1, 4, 2), 1, 4, initial.clone(), false);
    run(&two, train_config(1, 2, 2), 2, 4, initial.clone(), false);
    assert_eq!(read_metrics(&one).len(), 2);
    assert_same_training(&one, &two, &initial, "1 device x 4 vs 2 devices x 2");
    std::fs::remove_dir_all(&one).ok();
    std::fs::remove_dir_all(&two).ok();
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let initial = initial_model(false);
    let straight = scratch("straight");
    run(
        &straight,
        train_config(1, 2, 4),
        1,
        2,
        initial.clone(),
        false,
    );
    let resumed = scratch("resumed");
    run(
        &resumed,
        train_config(1, 2, 2),
        1,
        2,
        initial.clone(),
        false,
    );
    // The second invocation continues from step 2's checkpoint up to step 4 (steps 1-2 are in
    // the warmup, whose rates a longer run shares).
    run(&resumed, train_config(1, 2, 4), 1, 2, Vec::new(), true);
    // Going on to step 6 would have given step 4 another rate: refused.
    let err = try_run(
        &resumed,
        train_config(1, 2, 6),
        1,
        2,
        Vec::new(),
        true,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("changes the learning rate of step 4"), "{err}");
    let steps: Vec<u64> = read_metrics(&resumed)
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4], "no step lost or repeated");
    let a = read_metrics(&straight);
    let b = read_metrics(&resumed);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["total"], y["total"], "step {}", x["step"]);
        assert_eq!(x["lr"], y["lr"]);
    }
    assert_eq!(
        weights(&straight.join("model.mpk")),
        weights(&resumed.join("model.mpk"))
    );
    std::fs::remove_dir_all(&straight).ok();
    std::fs::remove_dir_all(&resumed).ok();
}

#[test]
fn weight_decay_skips_biases_and_one_dimensional_parameters_but_not_logit_scale() {
    let model = model_config().init::<Flex>(&Default::default());
    let no_decay = no_decay_params(&model);
    assert!(!no_decay.contains(&model.logit_scale.id));
    assert!(no_decay.contains(&model.img_projector.norm.gamma.id));
    assert!(no_decay.contains(&model.img_projector.hidden.bias.as_ref().unwrap().id));
    assert!(!no_decay.contains(&model.img_projector.hidden.weight.id));
    assert!(!no_decay.contains(&model.img_encoder.pos_embed.id));
    let group_token = model.img_encoder.layers[0].group_token.as_ref().unwrap();
    assert!(!no_decay.contains(&group_token.id));
}

/// Stage 2 on two devices: the matching and entity losses are those of one device with the
/// whole batch. The mask loss keeps the reference's normalisation, which is per device (dice
/// summed over the device's own pairs / 8, averaged over devices as DDP does), so with two
/// devices it is half the one-device value on the same pairs.
#[test]
fn stage_two_on_two_devices_shares_the_contrastive_batch_and_keeps_the_per_device_mask_loss() {
    let initial = initial_model(true);
    let one = scratch("stage2-one-device");
    let two = scratch("stage2-two-devices");
    run(&one, train_config(2, 4, 1), 1, 4, initial.clone(), false);
    run(&two, train_config(2, 2, 1), 2, 4, initial, false);
    let (a, b) = (&read_metrics(&one)[0], &read_metrics(&two)[0]);
    let value = |m: &serde_json::Value, key: &str| m[key].as_f64().unwrap();
    for key in ["matching", "entity"] {
        let (x, y) = (value(a, key), value(b, key));
        assert!(
            (x - y).abs() <= 1e-4 * x.abs().max(1.0),
            "{key}: {x} vs {y}"
        );
    }
    let (x, y) = (value(a, "mask"), value(b, "mask"));
    assert!(
        x > 0.0 && (x / 2.0 - y).abs() <= 1e-4 * x,
        "mask: {x} (1 device) vs {y} (2 devices)"
    );
    std::fs::remove_dir_all(&one).ok();
    std::fs::remove_dir_all(&two).ok();
}

#[test]
fn a_step_with_a_non_finite_loss_or_gradient_changes_no_weight() {
    let initial = initial_model(false);
    let clean = scratch("nan-clean");
    run(&clean, train_config(1, 2, 1), 1, 2, initial.clone(), false);
    let poisoned = scratch("nan-poisoned");
    // Batch 1 (the second step) holds a NaN pixel.
    let summary = run_with(
        &poisoned,
        train_config(1, 2, 2),
        1,
        2,
        initial,
        false,
        Some(1),
    );
    assert_eq!(summary.steps, 2);
    let lines = read_metrics(&poisoned);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].get("skipped").is_none());
    assert_eq!(
        lines[1]["skipped"],
        serde_json::Value::Bool(true),
        "{lines:?}"
    );
    // The weights after the skipped step are those after the first step.
    assert_eq!(
        weights(&clean.join("model.mpk")),
        weights(&poisoned.join("model.mpk"))
    );
    std::fs::remove_dir_all(&clean).ok();
    std::fs::remove_dir_all(&poisoned).ok();
}

/// Stage 1 with `freeze_text_encoder`: the text encoder never moves (its projector does), and
/// caching its outputs per text gives the losses of encoding every text at every step.
#[test]
fn a_frozen_text_encoder_never_moves_and_its_cache_changes_no_loss() {
    let initial = initial_model(false);
    let config = |cache_mb| TrainConfig {
        freeze_text_encoder: true,
        text_cache_mb: cache_mb,
        epochs: 2,
        // Past the first epoch's 6 batches, texts come again and are read from the cache.
        ..train_config(1, 2, 9)
    };
    let cached = scratch("frozen-text-cached");
    let uncached = scratch("frozen-text-uncached");
    run(&cached, config(1024), 1, 2, initial.clone(), false);
    run(&uncached, config(0), 1, 2, initial.clone(), false);
    let (a, b) = (read_metrics(&cached), read_metrics(&uncached));
    assert_eq!(a.len(), 9);
    for (x, y) in a.iter().zip(&b) {
        for key in ["matching", "entity", "total"] {
            let (x, y) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{key}: {x} (cached) vs {y}"
            );
        }
    }
    let load = |bytes: Vec<u8>| {
        model_from_bytes::<Flex>(bytes, "run", &Default::default())
            .unwrap()
            .0
    };
    let start = load(initial);
    let trained = load(std::fs::read(cached.join("model.mpk")).unwrap());
    assert_eq!(collect(&trained.text_encoder), collect(&start.text_encoder));
    assert_ne!(
        collect(&trained.text_projector),
        collect(&start.text_projector)
    );
    assert_ne!(collect(&trained.img_encoder), collect(&start.img_encoder));
    std::fs::remove_dir_all(&cached).ok();
    std::fs::remove_dir_all(&uncached).ok();
}

/// One step with autocast in `dtype` next to the f32 step: the largest relative difference of
/// the logged losses and gradient norm, and how far the weights ended from the f32 run's, as a
/// fraction of the f32 update.
fn autocast_step_against_f32(autocast: super::config::Autocast) -> (f64, f64) {
    // One step: after it, AdamW's first update (about lr * sign(gradient)) turns the rounding of
    // near-zero gradients into full steps, so later losses are not a measure of precision.
    let initial = initial_model(false);
    let full = scratch(&format!("autocast-f32-{autocast:?}"));
    let half = scratch(&format!("autocast-{autocast:?}"));
    run(&full, train_config(1, 4, 1), 1, 4, initial.clone(), false);
    let mut config = train_config(1, 4, 1);
    config.autocast = Some(autocast);
    run(&half, config, 1, 4, initial.clone(), false);
    let (a, b) = (&read_metrics(&full)[0], &read_metrics(&half)[0]);
    let mut worst = 0.0f64;
    for key in ["matching", "entity", "total", "grad_norm"] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        println!("{autocast:?} {key}: f32 {x}, autocast {y}");
        worst = worst.max((x - y).abs() / x.abs());
    }
    // The saved weights read back as f32 (`collect` reads f32 values).
    let start = collect(
        &model_from_bytes::<Flex>(initial, "initial", &Default::default())
            .unwrap()
            .0,
    );
    let start: Vec<f32> = start.into_iter().flatten().collect();
    let (wf, wh) = (
        weights(&full.join("model.mpk")),
        weights(&half.join("model.mpk")),
    );
    let (mut diff, mut update) = (0.0f64, 0.0f64);
    for ((s, f), h) in start.iter().zip(&wf).zip(&wh) {
        diff += ((f - h) as f64).powi(2);
        update += ((f - s) as f64).powi(2);
    }
    std::fs::remove_dir_all(&full).ok();
    std::fs::remove_dir_all(&half).ok();
    (worst, (diff / update).sqrt())
}

#[test]
fn an_autocast_step_follows_the_f32_step_and_keeps_f32_parameters() {
    use super::config::Autocast;
    // Measured on random initial models: bf16 moves the losses by up to 10 % (these models'
    // logits are near ties that rounding reorders; Flex's CPU products also round coarser than
    // a GPU's f32 accumulation) and the gradient norm by a few percent, yet the weights end
    // 0.014-0.020 of the update away from the f32 run's.
    let (bf16_values, bf16_weights) = autocast_step_against_f32(Autocast::Bf16);
    assert!(bf16_values > 0.0, "the products really ran in bf16");
    assert!(
        bf16_weights < 0.05,
        "bf16: weights {bf16_weights} of the update from f32's"
    );
}

/// A real stage-2 run: after every step the text encoder is the one it started with and the
/// momentum encoder is 0.99 of its previous self plus 0.01 of the online encoder just updated;
/// cut after step 2 (its later checkpoints gone), it resumes to the same losses and weights.
#[test]
fn stage_two_freezes_text_moves_momentum_and_resumes_exactly() {
    let initial = initial_model(true);
    let config = || TrainConfig {
        checkpoint_every: 1,
        ..train_config(2, 2, 4)
    };
    let dir = scratch("stage2-run");
    run(&dir, config(), 1, 2, initial.clone(), false);
    let load = |bytes: Vec<u8>| {
        model_from_bytes::<Flex>(bytes, "run", &Default::default())
            .unwrap()
            .0
    };
    let start = load(initial);
    let momentum =
        |m: &ovseg_model::OvSegmentor<Flex>| collect(m.img_encoder_momentum.as_ref().unwrap());
    let mut previous = momentum(&start);
    for step in 1..=4 {
        let path = dir.join(format!("checkpoints/step-{step:08}/model.mpk"));
        let model = load(std::fs::read(path).unwrap());
        assert_eq!(
            collect(&model.text_encoder),
            collect(&start.text_encoder),
            "step {step}"
        );
        let (online, now) = (collect(&model.img_encoder), momentum(&model));
        for ((o, n), p) in online
            .iter()
            .flatten()
            .zip(now.iter().flatten())
            .zip(previous.iter().flatten())
        {
            let expected = 0.99 * p + 0.01 * o;
            assert!(
                (n - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "step {step}"
            );
        }
        assert_ne!(now, previous, "step {step} moved the momentum encoder");
        previous = now;
    }

    let (metrics, end) = (read_metrics(&dir), weights(&dir.join("model.mpk")));
    for step in [3, 4] {
        std::fs::remove_dir_all(dir.join(format!("checkpoints/step-{step:08}"))).unwrap();
    }
    std::fs::remove_file(dir.join("model.mpk")).unwrap();
    std::fs::write(dir.join("checkpoints/latest"), "step-00000002").unwrap();
    run(&dir, config(), 1, 2, Vec::new(), true);
    let again = read_metrics(&dir);
    assert_eq!(again.len(), 4);
    for (x, y) in metrics.iter().zip(&again) {
        assert_eq!(x["total"], y["total"], "step {}", x["step"]);
    }
    assert_eq!(weights(&dir.join("model.mpk")), end);
    std::fs::remove_dir_all(&dir).ok();
}

/// Asserts that runs `a` and `b` (from `initial`) logged the same losses and ended with the same
/// weights up to float summation order. They add the same numbers in other orders (one backward
/// over the whole batch against an all-reduce mean of two; SyncBatchNorm sums per device, then
/// across; the matrix kernel blocks its sums by the machine's cache sizes): f32 rounding, about
/// 1e-7 of a value. Up to the first update that is all, hence 1e-5 of each value logged at step 1.
/// After it AdamW grows the difference: it divides each gradient by its own running size, so a
/// gradient that nearly cancels moves its parameter by up to the learning rate in a direction the
/// rounding picks. Measured on two machines: 1e-7 at step 1, 2e-5 at step 2, 8e-5 to 5e-4 at
/// step 3, hence 2e-3 from step 2 on and 1 % of each parameter tensor's update at the end. A
/// different draw (one Gumbel choice, one dropped branch) moves the first step's loss by far more
/// (checked in the first test that uses this).
fn assert_same_training(a: &PathBuf, b: &PathBuf, initial: &[u8], what: &str) {
    let (m1, m2) = (read_metrics(a), read_metrics(b));
    assert_eq!(m1.len(), m2.len(), "{what}");
    for (x, y) in m1.iter().zip(&m2) {
        let tolerance = if x["step"] == 1 { 1e-5 } else { 2e-3 };
        for key in ["matching", "entity", "total", "grad_norm"] {
            let (p, q) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                (p - q).abs() <= tolerance * p.abs().max(1.0),
                "{what}, step {}: {key} {p} vs {q}",
                x["step"]
            );
        }
    }
    let load = |bytes: Vec<u8>| {
        collect(
            &model_from_bytes::<Flex>(bytes, "run", &Default::default())
                .unwrap()
                .0,
        )
    };
    let start = load(initial.to_vec());
    let wa = load(std::fs::read(a.join("model.mpk")).unwrap());
    let wb = load(std::fs::read(b.join("model.mpk")).unwrap());
    let norm = |x: &[f32], y: &[f32]| -> f32 {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).powi(2))
            .sum::<f32>()
            .sqrt()
    };
    let mut moved = 0;
    for (i, ((x, y), s)) in wa.iter().zip(&wb).zip(&start).enumerate() {
        let (difference, update) = (norm(x, y), norm(x, s));
        moved += usize::from(update > 0.0);
        assert!(
            difference <= 1e-2 * update + 1e-5,
            "{what}, parameter {i} ({} values): runs differ by {difference}, update {update}",
            x.len()
        );
    }
    assert!(
        moved > wa.len() / 2,
        "{what}: {moved} of {} moved",
        wa.len()
    );
}

fn total_at(dir: &PathBuf, line: usize) -> f64 {
    read_metrics(dir)[line]["total"].as_f64().unwrap()
}

/// One random stream per sample: with Gumbel noise and drop-path on, two devices with batch 2
/// train like one device with batch 4 for three steps, since each sample draws by its index in
/// the global batch (docs/training.md, "What a step sees").
#[test]
fn with_noise_on_two_devices_with_batch_b_equal_one_device_with_batch_2b() {
    let initial = initial_model_of(&noisy_model_config(), false);
    let one = scratch("noisy-one-device");
    let two = scratch("noisy-two-devices");
    let job = |batch, devices| Job::new(train_config(1, batch, 3), devices, 4).noisy();
    job(4, 1).run(&one, initial.clone(), false);
    job(2, 2).run(&two, initial.clone(), false);
    assert_same_training(&one, &two, &initial, "1 device x 4 vs 2 devices x 2");
    // The noise is on and matters: another seed draws other noise, and the first step's loss
    // moves by far more than the tolerance.
    let other = scratch("noisy-other-seed");
    let config = train_config(1, 4, 1);
    let reseeded = TrainConfig {
        seed: config.seed + 1,
        ..config
    };
    Job::new(reseeded, 1, 4).noisy().run(&other, initial, false);
    let (x, y) = (total_at(&one, 0), total_at(&other, 0));
    assert!((x - y).abs() > 1e-3 * x.abs(), "seed 1: {x}, seed 2: {y}");
    for dir in [one, two, other] {
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Accumulation keys the draws by the global index too. Micro-step `a` of device `r` trains rows
/// `(a * world + r) * b..`, so two devices x batch 1 x 2 accumulation steps see, micro-step by
/// micro-step, the rows, contrastive negatives, BatchNorm batches and noise of one device x
/// batch 2 x 2 accumulation steps, and train alike (noise on).
#[test]
fn with_noise_accumulation_on_two_devices_equals_accumulation_on_one() {
    let initial = initial_model_of(&noisy_model_config(), false);
    let one = scratch("noisy-accumulation-one-device");
    let two = scratch("noisy-accumulation-two-devices");
    let job = |batch, devices| {
        let config = TrainConfig {
            accumulation: 2,
            ..train_config(1, batch, 3)
        };
        Job::new(config, devices, 4).noisy()
    };
    job(2, 1).run(&one, initial.clone(), false);
    job(1, 2).run(&two, initial.clone(), false);
    assert_same_training(&one, &two, &initial, "accumulation: 1 device x 2 vs 2 x 1");
    std::fs::remove_dir_all(&one).ok();
    std::fs::remove_dir_all(&two).ok();
}

type AB = burn::backend::Autodiff<Flex>;

/// Gradients of every image-encoder parameter as flat f32 vectors (`None` where none).
fn encoder_gradients(
    model: &ovseg_model::OvSegmentor<AB>,
    grads: &burn::optim::GradientsParams,
) -> Vec<Option<Vec<f32>>> {
    struct Grads<'a>(&'a burn::optim::GradientsParams, Vec<Option<Vec<f32>>>);
    impl burn::module::ModuleVisitor<AB> for Grads<'_> {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<AB, D>>) {
            let g = self.0.get::<Flex, D>(p.id);
            self.1.push(g.map(|g| g.into_data().to_vec().unwrap()));
        }
    }
    let mut visitor = Grads(grads, Vec::new());
    model.img_encoder.visit(&mut visitor);
    visitor.1
}

/// What accumulation does not change: each sample's own part of the step. With noise on, the
/// image encoder run over two micro-batches of 2, each with the stream of its rows, assigns every
/// patch as the run over the whole batch of 4 does, and the accumulated gradients of a per-sample
/// loss (pooled features against fixed weights, averaged over the 4 rows as the trainer scales
/// micro-batches) equal the whole batch's up to summation order (1e-4 of the largest value).
/// The contrastive losses and BatchNorm are not per sample: their batch stays the micro-step's.
#[test]
fn accumulated_micro_batches_draw_and_differentiate_per_sample_terms_like_the_whole_batch() {
    use burn::optim::{GradientsAccumulator, GradientsParams};
    use ovseg_model::nn::{Draws, RandomStream};

    use crate::data::micro_batch_start;

    let device = Default::default();
    let model = noisy_model_config().init::<AB>(&device);
    let pixels = 3 * 64 * 64;
    let all = noise(9, 4 * pixels);
    let target = Tensor::<AB, 2>::from_data(TensorData::new(noise(5, 64), [1, 64]), &device);
    // Rows `first..first + n`, drawing as rows `drawn_as..` of the global batch.
    let forward = |first: usize, n: usize, drawn_as: usize| {
        let data = TensorData::new(
            all[first * pixels..(first + n) * pixels].to_vec(),
            [n, 3, 64, 64],
        );
        let stream = RandomStream::new(3, 11, drawn_as as u64);
        let out = model
            .img_encoder
            .forward_with(Tensor::from_data(data, &device), Draws::Stream(&stream));
        let loss = (out.pooled * target.clone()).sum() / 4.0;
        (out.assignment.hard.inner().into_data(), loss)
    };
    let (whole_hard, whole_loss) = forward(0, 4, 0);
    let whole = GradientsParams::from_grads(whole_loss.backward(), &model);
    let mut accumulator = GradientsAccumulator::<ovseg_model::OvSegmentor<AB>>::new();
    let mut hard = Vec::new();
    for micro in 0..2 {
        let first = micro_batch_start(micro, 0, 1, 2);
        let (h, loss) = forward(first, 2, first);
        hard.extend(h.to_vec::<f32>().unwrap());
        accumulator.accumulate(&model, GradientsParams::from_grads(loss.backward(), &model));
    }
    assert_eq!(hard, whole_hard.to_vec::<f32>().unwrap(), "same choices");
    // Drawn as rows 0-1 (a per-device stream), rows 2-3 would choose otherwise.
    let (other, _) = forward(2, 2, 0);
    assert_ne!(other.to_vec::<f32>().unwrap(), hard[hard.len() / 2..]);

    let (a, b) = (
        encoder_gradients(&model, &whole),
        encoder_gradients(&model, &accumulator.grads()),
    );
    assert_eq!(a.len(), b.len());
    // Rounding follows the size of the terms summed, not of the result: a parameter whose
    // gradient nearly cancels (largest value 1e-6 where others reach 10) is held to 1e-4 of one
    // hundredth of the largest gradient of all, 1e-6 of it (measured: 7e-8 and 1.6e-7 of it on
    // two machines).
    let top = a
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    let mut compared = 0;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let (Some(x), Some(y)) = (x, y) else {
            assert_eq!(x.is_some(), y.is_some(), "parameter {i}");
            continue;
        };
        let own = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let largest = own.max(1e-2 * top);
        let difference = x
            .iter()
            .zip(y)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            difference <= 1e-4 * largest + 1e-9,
            "parameter {i}: {difference} of {largest}"
        );
        compared += usize::from(own > 1e-2 * top);
    }
    assert!(
        compared > a.len() / 2,
        "{compared} of {} gradients",
        a.len()
    );
}

/// A two-device run with noise on, cut after step 2 (its later checkpoints and final model
/// gone), resumes to exactly the losses and weights of the uninterrupted run: the draws depend
/// on the seed, the step and the sample, not on a generator's state.
#[test]
fn with_noise_a_two_device_run_resumed_after_step_2_equals_the_uninterrupted_one() {
    let config = TrainConfig {
        checkpoint_every: 1,
        ..train_config(1, 2, 4)
    };
    let job = Job::new(config, 2, 4).noisy();
    let dir = scratch("noisy-two-devices-resume");
    job.run(&dir, initial_model_of(&job.model, false), false);
    let (metrics, end) = (read_metrics(&dir), weights(&dir.join("model.mpk")));
    for step in [3, 4] {
        std::fs::remove_dir_all(dir.join(format!("checkpoints/step-{step:08}"))).unwrap();
    }
    std::fs::remove_file(dir.join("model.mpk")).unwrap();
    std::fs::write(dir.join("checkpoints/latest"), "step-00000002").unwrap();
    job.run(&dir, Vec::new(), true);
    let again = read_metrics(&dir);
    assert_eq!(again.len(), 4);
    for (x, y) in metrics.iter().zip(&again) {
        for key in ["matching", "entity", "total", "grad_norm"] {
            assert_eq!(x[key], y[key], "step {} {key}", x["step"]);
        }
    }
    assert_eq!(weights(&dir.join("model.mpk")), end);
    std::fs::remove_dir_all(&dir).ok();
}

/// The steps whose metrics line says `skipped`, 1-based.
fn skipped_steps(dir: &PathBuf) -> Vec<u64> {
    read_metrics(dir)
        .iter()
        .filter(|m| m.get("skipped").is_some())
        .map(|m| m["step"].as_u64().unwrap())
        .collect()
}

/// run.rs's guard: five steps in a row with a non-finite loss stop the run with an error naming
/// the checkpoint it saved, which holds the weights of the last good step (skipped steps change
/// no weight).
#[test]
fn five_bad_steps_in_a_row_stop_the_run_and_save_the_last_good_weights() {
    let initial = initial_model(false);
    let clean = scratch("bad-steps-clean");
    run(&clean, train_config(1, 2, 1), 1, 2, initial.clone(), false);
    let dir = scratch("bad-steps-five");
    // Batches 1-5 (steps 2-6) hold NaN pixels; no periodic checkpoint falls in the run.
    let config = TrainConfig {
        checkpoint_every: 100,
        ..train_config(1, 2, 6)
    };
    let job = Job {
        poison: 1..6,
        ..Job::new(config, 1, 2)
    };
    let err = job.try_run(&dir, initial, false).unwrap_err().to_string();
    let saved = dir.join("checkpoints/step-00000006");
    assert!(
        err.contains("5 steps in a row had a non-finite loss or gradient")
            && err.contains("the weights of the last good step (1) are saved in")
            && err.contains(&saved.display().to_string()),
        "{err}"
    );
    assert_eq!(skipped_steps(&dir), [2, 3, 4, 5, 6]);
    assert!(!dir.join("model.mpk").exists(), "the run did not finish");
    let latest = std::fs::read_to_string(dir.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000006");
    assert_eq!(
        weights(&saved.join("model.mpk")),
        weights(&clean.join("model.mpk"))
    );
    std::fs::remove_dir_all(&clean).ok();
    std::fs::remove_dir_all(&dir).ok();
}

/// Four bad steps in a row are skipped and training goes on; a good step resets the count, so
/// eight bad steps in two runs of four never stop the run.
#[test]
fn fewer_than_five_bad_steps_in_a_row_are_skipped_and_training_goes_on() {
    let initial = initial_model(false);
    let clean = scratch("bad-steps-clean-one");
    run(&clean, train_config(1, 2, 1), 1, 2, initial.clone(), false);
    let dir = scratch("bad-steps-four");
    let config = TrainConfig {
        epochs: 2,
        ..train_config(1, 2, 12)
    };
    // Batches 1-4 of each 6-batch epoch: steps 2-5 and 8-11.
    let job = Job {
        poison: 1..5,
        ..Job::new(config, 1, 2)
    };
    let summary = job.run(&dir, initial, false);
    assert_eq!(summary.steps, 12);
    assert_eq!(skipped_steps(&dir), [2, 3, 4, 5, 8, 9, 10, 11]);
    assert!(summary
        .last
        .is_some_and(|v| !v.skipped && v.total.is_finite()));
    // Steps 6, 7 and 12 trained.
    assert_ne!(
        weights(&dir.join("model.mpk")),
        weights(&clean.join("model.mpk"))
    );
    std::fs::remove_dir_all(&clean).ok();
    std::fs::remove_dir_all(&dir).ok();
}
