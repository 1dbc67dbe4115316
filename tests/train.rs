//! `ovseg train` as a user runs it, on a small caption dataset written as real JPEG files and a
//! meta-file: stage 1 then stage 2 with falling losses, and a run killed mid-way that resumes
//! with no step lost or repeated.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const KINDS: [(&str, [u8; 3]); 6] = [
    ("dog", [200, 60, 40]),
    ("car", [40, 80, 210]),
    ("boat", [230, 210, 40]),
    ("kite", [40, 190, 60]),
    ("cat", [150, 60, 190]),
    ("house", [240, 140, 30]),
];

/// `n` pictures of one or two coloured shapes on grey, captions naming them, plus one corrupt
/// JPEG, one line that is not JSON and one empty caption, which training must skip.
fn caption_dataset(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut meta = String::new();
    for i in 0..n {
        let a = i % KINDS.len();
        let b = (i / KINDS.len() + a + 1) % KINDS.len();
        let two = i % 3 == 0;
        let mut img = image::RgbImage::from_pixel(96, 96, image::Rgb([128, 128, 128]));
        for (y, x, p) in img.enumerate_pixels_mut().map(|(x, y, p)| (y, x, p)) {
            if x < 48 + (i as u32 % 16) && y > 20 {
                *p = image::Rgb(KINDS[a].1);
            } else if two && x > 60 && y < 50 {
                *p = image::Rgb(KINDS[b].1);
            }
        }
        let name = format!("images/{i:04}.jpg");
        img.save(dir.join(&name)).unwrap();
        let caption = if two {
            format!("a {} next to a {} in the picture", KINDS[a].0, KINDS[b].0)
        } else {
            format!("a photo of a {} on grey", KINDS[a].0)
        };
        meta.push_str(&format!(
            "{{\"filename\": \"{name}\", \"caption\": \"{caption}\"}}\n"
        ));
    }
    std::fs::write(dir.join("images/broken.jpg"), b"\xff\xd8 not really a jpeg").unwrap();
    meta.push_str("{\"filename\": \"images/broken.jpg\", \"caption\": \"a dog that is broken\"}\n");
    meta.push_str("this line is not json\n");
    meta.push_str("{\"filename\": \"images/0000.jpg\", \"caption\": \"\"}\n");
    let path = dir.join("meta.jsonl");
    std::fs::write(&path, meta).unwrap();
    path
}

/// The fixture-sized model at 64 pixels: fast enough for a few dozen CPU steps.
fn model_config(dir: &Path) -> PathBuf {
    let config = serde_json::json!({
        "image": {"img_size": 64, "patch_size": 16, "embed_dim": 64, "depths": [2, 2],
                  "num_heads": [4, 4], "num_group_tokens": [16, 0],
                  "num_output_groups": [4], "mlp_ratio": 4.0, "drop_path_rate": 0.0},
        "text": {"vocab_size": 30522, "hidden_size": 96, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "intermediate_size": 192},
        "output_dim": 32, "proj_inner_dim": 64, "entity_heads": 4
    });
    let path = dir.join("model.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn recipe(dir: &Path, stage: u8, steps: usize) -> PathBuf {
    let (base, min, warmup) = if stage == 1 {
        (2e-3, 5e-4, 0.1)
    } else {
        (1e-3, 2e-4, 0.0)
    };
    let recipe = serde_json::json!({
        "stage": stage, "epochs": 100, "batch_size": 8, "base_lr": base, "warmup_lr": 1e-4,
        "min_lr": min, "warmup_epochs": warmup, "image_size": 64, "workers": 2,
        "checkpoint_every": 4, "keep_last": 2, "max_steps": steps, "seed": 7
    });
    let path = dir.join(format!("stage{stage}.json"));
    std::fs::write(&path, recipe.to_string()).unwrap();
    path
}

/// `ovseg train --quiet` on a dataset, a recipe and a model configuration, writing to `out`;
/// callers add their own flags and run or spawn it.
fn train_command(out: &Path, recipe: &Path, meta: &Path, model: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ovseg"));
    command.args([
        "train",
        "--quiet",
        "--out",
        s(out),
        "--recipe",
        s(recipe),
        "--data",
        s(meta),
        "--model",
        s(model),
    ]);
    command
}

/// Every parameter's values (parameter ids differ between runs; values must not).
fn parameters(model: &Path) -> Vec<Vec<f32>> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::prelude::*;
    struct Values(Vec<Vec<f32>>);
    impl ModuleVisitor<burn::backend::Flex> for Values {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<burn::backend::Flex, D>>) {
            self.0.push(p.val().into_data().to_vec().unwrap());
        }
    }
    let bytes = std::fs::read(model).unwrap();
    let (model, _) = ovseg_model::record::model_from_bytes::<burn::backend::Flex>(
        bytes,
        "model",
        &Default::default(),
    )
    .unwrap();
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    values.0
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mean(values: &[serde_json::Value], key: &str) -> f64 {
    values.iter().map(|v| v[key].as_f64().unwrap()).sum::<f64>() / values.len() as f64
}

#[test]
fn stage_one_then_stage_two_on_jpeg_captions_and_the_losses_fall() {
    let dir = scratch("train-stages");
    let meta = caption_dataset(&dir, 32);
    let model = model_config(&dir);
    let stage1 = dir.join("stage1");
    let out = ok(&[
        "train",
        "--quiet",
        "--out",
        s(&stage1),
        "--recipe",
        s(&recipe(&dir, 1, 40)),
        "--data",
        s(&meta),
        "--model",
        s(&model),
    ]);
    assert!(out.contains("trained 40 steps"), "{out}");
    let m = metrics(&stage1);
    assert_eq!(m.len(), 40);
    let (early, late) = (mean(&m[..5], "total"), mean(&m[35..], "total"));
    assert!(
        late < 0.8 * early,
        "stage 1 loss should fall: {early} -> {late}"
    );
    assert!(m.iter().all(|v| v.get("mask").is_none()));
    // The checkpoint and the final model are ordinary model files.
    assert!(stage1.join("model.mpk").is_file());
    assert!(stage1.join("checkpoints/latest").is_file());

    let stage2 = dir.join("stage2");
    ok(&[
        "train",
        "--quiet",
        "--out",
        s(&stage2),
        "--recipe",
        s(&recipe(&dir, 2, 30)),
        "--data",
        s(&meta),
        "--init",
        s(&stage1.join("model.mpk")),
    ]);
    let m = metrics(&stage2);
    assert_eq!(m.len(), 30);
    assert!(m
        .iter()
        .all(|v| v["mask"].as_f64().is_some_and(|x| x.is_finite() && x > 0.0)));
    let (early, late) = (mean(&m[..5], "total"), mean(&m[25..], "total"));
    assert!(late < early, "stage 2 loss should fall: {early} -> {late}");

    // The result segments like any model file.
    ok(&[
        "segment",
        "--model",
        s(&stage2.join("model.mpk")),
        "--image",
        s(&dir.join("images/0001.jpg")),
        "--labels",
        "dog,car,boat",
        "--out-dir",
        s(&dir),
    ]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn group_naming_is_logged_falls_and_stays_out_of_the_paper_recipe() {
    let dir = scratch("train-naming");
    let meta = caption_dataset(&dir, 32);
    let model = model_config(&dir);
    let run = dir.join("naming");
    ok_command(
        train_command(&run, &recipe(&dir, 1, 30), &meta, &model).args(["--group-naming", "0.5"]),
    );
    let m = metrics(&run);
    assert_eq!(m.len(), 30);
    // The 32 captions name six classes, one or two a picture.
    assert!(m.iter().all(|v| v["naming"]
        .as_f64()
        .is_some_and(|x| x.is_finite() && x > 0.0)));
    for v in &m {
        let parts = v["matching"].as_f64().unwrap()
            + v["entity"].as_f64().unwrap()
            + 0.5 * v["naming"].as_f64().unwrap();
        let total = v["total"].as_f64().unwrap();
        assert!((total - parts).abs() < 1e-4 * total, "{total} vs {parts}");
    }
    let (early, late) = (mean(&m[..5], "naming"), mean(&m[25..], "naming"));
    assert!(
        late < early,
        "the naming loss should fall: {early} -> {late}"
    );
    let used: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("train.json")).unwrap()).unwrap();
    assert_eq!(used["group_naming"], 0.5);

    // Without the flag no naming term is computed or logged.
    let plain = dir.join("plain");
    ok_command(&mut train_command(
        &plain,
        &recipe(&dir, 1, 2),
        &meta,
        &model,
    ));
    assert!(metrics(&plain).iter().all(|v| v.get("naming").is_none()));

    let err = train_command(&dir.join("bad"), &recipe(&dir, 1, 2), &meta, &model)
        .arg("--group-naming=-1")
        .output()
        .unwrap();
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(stderr.contains("group_naming"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Kills `child`, training into `run`, once its checkpoint of `step` is complete (10 minutes
/// at most); the run must not end before.
fn kill_at_checkpoint(child: &mut std::process::Child, run: &Path, step: usize) {
    let state = run.join(format!("checkpoints/step-{step:08}/state.json"));
    let began = Instant::now();
    while !state.is_file() {
        assert!(
            began.elapsed() < Duration::from_secs(600),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint_with_no_step_lost_or_repeated() {
    let dir = scratch("train-resume");
    let meta = caption_dataset(&dir, 24);
    let model = model_config(&dir);
    let recipe = recipe(&dir, 1, 16);
    let straight = dir.join("straight");
    ok_command(&mut train_command(&straight, &recipe, &meta, &model));

    let killed = dir.join("killed");
    let mut child = train_command(&killed, &recipe, &meta, &model)
        .spawn()
        .unwrap();
    kill_at_checkpoint(&mut child, &killed, 8);
    assert!(!killed.join("model.mpk").exists(), "killed before the end");

    // A changed recipe is refused (no longer step-exact) and names what changed.
    let text = std::fs::read_to_string(&recipe).unwrap();
    let mut changed: serde_json::Value = serde_json::from_str(&text).unwrap();
    changed["seed"] = serde_json::json!(changed["seed"].as_u64().unwrap_or(0) + 1);
    let changed_recipe = dir.join("changed.json");
    std::fs::write(&changed_recipe, changed.to_string()).unwrap();
    let out = ovseg(&[
        "train",
        "--quiet",
        "--out",
        s(&killed),
        "--recipe",
        s(&changed_recipe),
        "--data",
        s(&meta),
        "--resume",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a changed recipe resumed");
    assert!(
        stderr.contains("another recipe (seed") && stderr.contains("--resume-changed"),
        "{stderr}"
    );

    ok(&[
        "train",
        "--quiet",
        "--out",
        s(&killed),
        "--recipe",
        s(&recipe),
        "--data",
        s(&meta),
        "--resume",
    ]);
    let steps: Vec<u64> = metrics(&killed)
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=16).collect::<Vec<u64>>());
    for (a, b) in metrics(&straight).iter().zip(metrics(&killed).iter()) {
        assert_eq!(a["total"], b["total"], "step {}", a["step"]);
    }
    assert!(
        parameters(&straight.join("model.mpk")) == parameters(&killed.join("model.mpk")),
        "the resumed run ends with the same weights"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_training_input_is_a_one_line_error() {
    let dir = scratch("train-errors");
    std::fs::create_dir_all(&dir).unwrap();
    let out = ovseg(&[
        "train",
        "--out",
        s(&dir.join("run")),
        "--data",
        s(&dir.join("nope.jsonl")),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("nope.jsonl"),
        "{stderr}"
    );
    let out = ovseg(&[
        "train",
        "--out",
        s(&dir.join("run")),
        "--data",
        s(&dir),
        "--resume",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no checkpoint"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Shard `dir/NNNNN.tar` in img2dataset's layout (KEY.jpg beside KEY.txt) holding the pictures
/// `pairs` of [`caption_dataset`], each captioned with its first kind.
fn write_shard(dir: &Path, shard: usize, pairs: std::ops::Range<usize>) -> PathBuf {
    let path = dir.join(format!("{shard:05}.tar"));
    let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for i in pairs {
        let key = format!("{i:09}");
        tar.append_path_with_name(dir.join(format!("images/{i:04}.jpg")), format!("{key}.jpg"))
            .unwrap();
        let caption = format!("a photo of a {}", KINDS[i % KINDS.len()].0);
        tar_member(&mut tar, &format!("{key}.txt"), caption.as_bytes());
    }
    tar.finish().unwrap();
    path
}

#[test]
fn training_streams_webdataset_shards() {
    let dir = scratch("train-shards");
    caption_dataset(&dir, 16);
    for shard in 0..2 {
        write_shard(&dir, shard, shard * 8..shard * 8 + 8);
    }
    let model = model_config(&dir);
    let run = dir.join("run");
    let out = ok(&[
        "train",
        "--quiet",
        "--out",
        s(&run),
        "--recipe",
        s(&recipe(&dir, 1, 3)),
        "--data",
        s(&dir.join("00000.tar")),
        s(&dir.join("00001.tar")),
        "--model",
        s(&model),
    ]);
    assert!(out.contains("trained 3 steps"), "{out}");
    assert_eq!(metrics(&run).len(), 3);
    std::fs::remove_dir_all(&dir).ok();
}

/// Ports nobody listens on now (bound, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Kills a child process when dropped, so a failed assertion leaves no orchestrator behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Two `ovseg train` processes started as two machines are (docs/training.md, "Several GPUs,
/// several machines"), here on 127.0.0.1 with an orchestrator: `command(rank)` gives machine
/// `rank`'s run folder and its train command, to which the cluster flags are added.
struct TwoMachines {
    _orchestrator: Running,
    /// Run folder, log file and process of each machine.
    machines: Vec<(PathBuf, PathBuf, std::process::Child)>,
}

impl TwoMachines {
    fn start(dir: &Path, command: impl Fn(usize) -> (PathBuf, Command)) -> TwoMachines {
        let ports = free_ports(3);
        let orchestrator = Running(
            Command::new(env!("CARGO_BIN_EXE_ovseg"))
                .args(["orchestrator", "--port", &ports[0].to_string()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let machines = (0..2)
            .map(|rank| {
                let (out, mut command) = command(rank);
                // A file, not a pipe: a machine blocked on a full pipe nobody reads yet would
                // stall the other one in their all-reduce.
                let log = dir.join(format!("machine-{rank}.log"));
                let port = ports[1 + rank].to_string();
                let child = command
                    .args(["--nodes", "2", "--node-rank", &rank.to_string()])
                    .args(["--orchestrator", &format!("ws://127.0.0.1:{}", ports[0])])
                    .args(["--node-address", &format!("ws://127.0.0.1:{port}")])
                    .args(["--data-port", &port])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap();
                (out, log, child)
            })
            .collect();
        TwoMachines {
            _orchestrator: orchestrator,
            machines,
        }
    }

    /// Waits for both (10 minutes at most), asserting success; returns their run folders.
    fn finish(self) -> Vec<PathBuf> {
        let began = Instant::now();
        let mut finished = Vec::new();
        for (out, log, mut child) in self.machines {
            let status = wait_at_most(&mut child, Duration::from_secs(600) - began.elapsed())
                .unwrap_or_else(|| {
                    panic!(
                        "{} did not finish in 10 minutes (a stalled all-reduce)",
                        out.display()
                    )
                });
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(status.success(), "{}: {stderr}", out.display());
            finished.push(out);
        }
        finished
    }
}

/// The child's exit status, or None (and the child killed) after `limit`.
fn wait_at_most(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let began = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if began.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn train_two_machines(dir: &Path, command: impl Fn(usize) -> (PathBuf, Command)) -> Vec<PathBuf> {
    TwoMachines::start(dir, command).finish()
}

/// The two models hold the same weights (1e-5).
fn assert_same_weights(expected: &Path, got: &Path) {
    let weights = parameters(expected);
    let other = parameters(got);
    assert_eq!(other.len(), weights.len());
    for (i, (a, b)) in weights.iter().zip(&other).enumerate() {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            diff <= 1e-5,
            "{}: parameter {i} differs by {diff}",
            got.display()
        );
    }
}

#[test]
fn two_machines_train_as_two_devices_of_one_machine() {
    // Each machine decodes and trains its half of every batch and must match, step for step,
    // one process with `--devices 2`, Gumbel noise on (every device draws by its rows' place
    // in the global batch).
    let dir = scratch("train-two-machines");
    let meta = caption_dataset(&dir, 24);
    let model = model_config(&dir);
    let recipe = recipe(&dir, 1, 3);
    let local = dir.join("two-devices");
    ok_command(train_command(&local, &recipe, &meta, &model).args(["--devices", "2"]));
    let finished = train_two_machines(&dir, |rank| {
        let out = dir.join(format!("machine-{rank}"));
        let mut command = train_command(&out, &recipe, &meta, &model);
        command.args(["--devices", "1"]);
        (out, command)
    });

    let expected = metrics(&local);
    assert_eq!(expected.len(), 3);
    for out in &finished {
        let got = metrics(out);
        assert_eq!(got.len(), 3, "{}", out.display());
        for (a, b) in expected.iter().zip(&got) {
            for key in ["matching", "entity", "total", "grad_norm"] {
                let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                    "{} step {}: {key} {y}, one machine with two devices {x}",
                    out.display(),
                    a["step"]
                );
            }
        }
        // Both machines hold the weights of the two devices of one machine.
        assert_same_weights(&local.join("model.mpk"), &out.join("model.mpk"));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn two_machines_read_their_own_shards_and_end_each_epoch_together() {
    // Shards are dealt out to the machines every epoch: one holds 3 batches of a machine
    // (2 pairs each), the other 1. Each epoch ends on both when the second runs dry, so two
    // epochs are two steps on both (had the first machine gone on alone, it would wait for a
    // partner that finished: a stalled all-reduce).
    let dir = scratch("train-two-machines-shards");
    caption_dataset(&dir, 8);
    let (long, short) = (write_shard(&dir, 0, 0..6), write_shard(&dir, 1, 6..8));
    let model = model_config(&dir);
    let recipe = dir.join("two-epochs.json");
    let config = serde_json::json!({
        "stage": 1, "epochs": 2, "batch_size": 2, "base_lr": 1e-3, "warmup_lr": 1e-4,
        "min_lr": 1e-4, "warmup_epochs": 0.0, "image_size": 64, "workers": 1,
        "checkpoint_every": 100, "keep_last": 1, "max_steps": 12, "seed": 5
    });
    std::fs::write(&recipe, config.to_string()).unwrap();
    let finished = train_two_machines(&dir, |rank| {
        let out = dir.join(format!("machine-{rank}"));
        let mut command = train_command(&out, &recipe, &long, &model);
        command.args(["--data", s(&short), "--devices", "1"]);
        (out, command)
    });
    for out in &finished {
        let epochs: Vec<u64> = metrics(out)
            .iter()
            .map(|m| m["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(epochs, [0, 1], "{}", out.display());
    }
    assert_same_weights(
        &finished[0].join("model.mpk"),
        &finished[1].join("model.mpk"),
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_two_machine_run_resumes_after_one_machine_is_killed() {
    // Machine 1 is killed after its step-4 checkpoint; machine 0 must stop with an error, not
    // wait for ever. Both started again with --resume finish the run as if nothing happened,
    // from the newest step both reached (machine 1 may die before naming step 4 its latest).
    let dir = scratch("train-two-machines-killed");
    let meta = caption_dataset(&dir, 24);
    let model = model_config(&dir);
    let recipe = recipe(&dir, 1, 8);
    let straight = dir.join("straight");
    ok_command(train_command(&straight, &recipe, &meta, &model).args(["--devices", "2"]));
    let machine = |rank: usize, resume: bool| {
        let out = dir.join(format!("machine-{rank}"));
        let mut command = train_command(&out, &recipe, &meta, &model);
        command.args(["--devices", "1"]);
        if resume {
            command.arg("--resume");
        }
        (out, command)
    };
    let mut run = TwoMachines::start(&dir, |rank| machine(rank, false));
    let (_, _, killed) = &mut run.machines[1];
    kill_at_checkpoint(killed, &dir.join("machine-1"), 4);
    let (out, log, survivor) = &mut run.machines[0];
    let status = wait_at_most(survivor, Duration::from_secs(120));
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "{}: {stderr}",
        out.display()
    );
    assert!(
        stderr.contains("error: a training device stopped: another machine stopped")
            && stderr.contains("--resume"),
        "{stderr}"
    );
    assert!(!dir.join("machine-0/model.mpk").exists());
    drop(run);
    // As if machine 1 had died before saving step 4: machine 0 must go back to step 3.
    let killed = dir.join("machine-1/checkpoints");
    std::fs::remove_dir_all(killed.join("step-00000004")).unwrap();
    std::fs::write(killed.join("latest"), "step-00000003").unwrap();
    assert!(dir
        .join("machine-0/checkpoints/step-00000004/state.json")
        .is_file());

    let finished = train_two_machines(&dir, |rank| machine(rank, true));
    let log = std::fs::read_to_string(dir.join("machine-0.log")).unwrap();
    assert!(
        log.contains("another machine's last checkpoint is step 3: going back to it from step 4"),
        "{log}"
    );
    for out in &finished {
        let steps: Vec<u64> = metrics(out)
            .iter()
            .map(|m| m["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (1..=8).collect::<Vec<u64>>(), "{}", out.display());
        for (a, b) in metrics(&straight).iter().zip(metrics(out).iter()) {
            let (x, y) = (a["total"].as_f64().unwrap(), b["total"].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "step {}: {y} against {x}",
                a["step"]
            );
        }
        assert_same_weights(&straight.join("model.mpk"), &out.join("model.mpk"));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A recipe at the released models' 224 pixels: `steps` steps of batch 2.
fn recipe_224(dir: &Path, stage: u8, steps: usize) -> PathBuf {
    let recipe = serde_json::json!({
        "stage": stage, "epochs": 1, "batch_size": 2, "base_lr": 1e-4, "warmup_lr": 1e-5,
        "min_lr": 1e-5, "warmup_epochs": 0.0, "image_size": 224, "workers": 1,
        "checkpoint_every": 100, "keep_last": 1, "max_steps": steps, "seed": 3
    });
    let path = dir.join(format!("stage{stage}-224.json"));
    std::fs::write(&path, recipe.to_string()).unwrap();
    path
}

/// The seed's third row (ViT-B/16 + BERT-base with 16 output groups), as the `paper-16-groups`
/// preset: a step from scratch, then zero-shot segmentation with its 16 groups.
#[test]
fn paper_16_groups_preset_trains_a_step_and_segments() {
    let dir = scratch("train-16-groups");
    let meta = caption_dataset(&dir, 8);
    let run = dir.join("run");
    let out = ok(&[
        "train",
        "--quiet",
        "--out",
        s(&run),
        "--recipe",
        s(&recipe_224(&dir, 1, 1)),
        "--data",
        s(&meta),
        "--model",
        "paper-16-groups",
    ]);
    assert!(out.contains("trained 1 steps"), "{out}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(
        config["image"]["num_output_groups"],
        serde_json::json!([16])
    );
    assert_eq!(config["image"]["embed_dim"], 768);
    assert_eq!(config["text"]["num_hidden_layers"], 12);
    let mask = dir.join("mask.png");
    ok(&[
        "segment",
        "--model",
        s(&run.join("model.mpk")),
        "--image",
        s(&dir.join("images/0001.jpg")),
        "--labels",
        "dog,car",
        "--out-mask",
        s(&mask),
    ]);
    assert_eq!(image::open(&mask).unwrap().width(), 96);
    std::fs::remove_dir_all(&dir).ok();
}

/// A released checkpoint (`.pth` with its configuration) starts stage 2 directly, as the seed's
/// stage-1 checkpoint is meant to: BERT with the built-in tokenizer, RoBERTa with its own, which
/// the trained model then carries (it segments without `--tokenizer`).
#[test]
fn released_pth_checkpoints_start_stage_two() {
    let dir = scratch("train-pth-init");
    let meta = caption_dataset(&dir, 8);
    let recipe = recipe_224(&dir, 2, 2);
    for (name, extra) in [
        ("reference-tiny", None),
        ("reference-roberta", Some("tokenizer.json")),
    ] {
        let fixture = fixtures_dir().join(name);
        let run = dir.join(name);
        let mut command = train_command(&run, &recipe, &meta, &fixture.join("model.json"));
        command.args([
            "--init",
            s(&fixture.join("checkpoint.pth")),
            "--config",
            s(&fixture.join("model.json")),
        ]);
        if let Some(tokenizer) = extra {
            command.args(["--tokenizer", s(&fixture.join(tokenizer))]);
        }
        let out = ok_command(&mut command);
        assert!(out.contains("trained 2 steps"), "{name}: {out}");
        let m = metrics(&run);
        assert!(
            m.iter()
                .all(|v| v["mask"].as_f64().is_some_and(f64::is_finite)),
            "{name}: stage 2 logs the mask-consistency loss"
        );
        ok(&[
            "segment",
            "--model",
            s(&run.join("model.mpk")),
            "--image",
            s(&dir.join("images/0002.jpg")),
            "--labels",
            "dog,car",
            "--out-dir",
            s(&run),
        ]);
    }
    // Without its tokenizer the RoBERTa checkpoint is refused before any training.
    let fixture = fixtures_dir().join("reference-roberta");
    let refused = train_command(
        &dir.join("refused"),
        &recipe,
        &meta,
        &fixture.join("model.json"),
    )
    .args([
        "--init",
        s(&fixture.join("checkpoint.pth")),
        "--config",
        s(&fixture.join("model.json")),
    ])
    .output()
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("tokenizer"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
