//! The training loop on the CPU: two devices equal one device with twice the batch, a resumed
//! run equals an uninterrupted one, and the optimizer groups follow the reference.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use burn::backend::Flex;
use burn::module::Module;
use burn::prelude::*;
use ovseg_model::record::{model_from_bytes, model_to_bytes, Precision};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvsegConfig;

use super::config::TrainConfig;
use super::optimizer::no_decay_params;
use super::replica::DeviceBatch;
use super::run::{train, BatchSource, RunOptions, RunSummary};

/// Fixed pseudo-random batches: batch `k` of epoch `e` depends on (e, k) only.
struct Synthetic {
    batch: usize,
    batches: usize,
    image_size: usize,
    stage_two: bool,
    /// This batch of every epoch holds NaN pixels.
    poison: Option<usize>,
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

    fn epoch(
        &self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<DeviceBatch>> + '_> {
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
            if self.poison == Some(k) {
                images[0] = f32::NAN;
            }
            Ok(DeviceBatch {
                size: self.batch,
                image_size: self.image_size,
                images,
                captions: texts("a photo of a"),
                questions: texts("a [MASK] near"),
                answers: texts("a picture of the"),
                entities: (0..self.batch)
                    .map(|i| vec![words[(i + k * 3 + epoch) % words.len()].to_string()])
                    .collect(),
                partner: self
                    .stage_two
                    .then(|| (noise(seed + 77, self.batch * pixels), texts("A photo of"))),
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

fn train_config(stage: u8, batch: usize, steps: usize) -> TrainConfig {
    TrainConfig {
        stage,
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
    let source = Synthetic {
        batch: global_batch,
        batches: 6,
        image_size: 64,
        stage_two: config.stage == 2,
        poison,
    };
    let options = RunOptions {
        dir: dir.clone(),
        cluster: None,
        config,
        model_config: model_config(),
        resume,
        resume_changed: false,
        show_progress: false,
    };
    let tokenizer = Arc::new(TextTokenizer::bert_base_uncased());
    train::<Flex>(
        &options,
        initial,
        tokenizer,
        &source,
        vec![Default::default(); devices],
        None,
    )
}

fn initial_model(stage_two: bool) -> Vec<u8> {
    let device = Default::default();
    let mut model = model_config().init::<Flex>(&device);
    if stage_two {
        model.reset_momentum_encoder();
    }
    model_to_bytes(model, &model_config(), None, Precision::Full).unwrap()
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
    {
        let stage = 1u8;
        let initial = initial_model(stage == 2);
        let one = scratch(&format!("one-device-{stage}"));
        let two = scratch(&format!("two-devices-{stage}"));
        run(
            &one,
            train_config(stage, 4, 2),
            1,
            4,
            initial.clone(),
            false,
        );
        run(
            &two,
            train_config(stage, 2, 2),
            2,
            4,
            initial.clone(),
            false,
        );
        let (m1, m2) = (read_metrics(&one), read_metrics(&two));
        assert_eq!(m1.len(), 2);
        assert_eq!(m2.len(), 2);
        for (a, b) in m1.iter().zip(&m2) {
            for key in ["matching", "entity", "total", "grad_norm"] {
                let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                    "stage {stage} step {}: {key} {x} (1 device) vs {y} (2 devices)",
                    a["step"]
                );
            }
        }
        // Every parameter tensor moved the same way: the difference between the two runs is
        // a small fraction of the update itself.
        let load = |p: &PathBuf| {
            let bytes = std::fs::read(p).unwrap();
            collect(
                &model_from_bytes::<Flex>(bytes, "run", &Default::default())
                    .unwrap()
                    .0,
            )
        };
        let (a, b) = (load(&one.join("model.mpk")), load(&two.join("model.mpk")));
        let start = collect(
            &model_from_bytes::<Flex>(initial.clone(), "initial", &Default::default())
                .unwrap()
                .0,
        );
        let norm = |x: &[f32], y: &[f32]| -> f32 {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        let mut moved = 0;
        for (i, ((x, y), s)) in a.iter().zip(&b).zip(&start).enumerate() {
            let (difference, update) = (norm(x, y), norm(x, s));
            moved += usize::from(update > 0.0);
            assert!(
                difference <= 1e-2 * update + 1e-5,
                "stage {stage}, parameter {i} ({} values): runs differ by {difference}, update {update}",
                x.len()
            );
        }
        assert!(
            moved > a.len() / 2,
            "training moved most parameters ({moved} of {})",
            a.len()
        );
        std::fs::remove_dir_all(&one).ok();
        std::fs::remove_dir_all(&two).ok();
    }
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
