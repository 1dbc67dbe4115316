//! Learning itself as a regression test: `configs/experiments/learning-check.json` (a small
//! caption world, a small model, a short stage 1) is made, trained and scored exactly as
//! `scripts/experiment.py` does it (one thread, so the run is the measured one bit for bit), and
//! its held-out pictures, named with synonyms no caption contains, must clear bars set from the
//! spread measured over seeds (docs/experiments.md, "The learning check"): the image-level naming
//! learned from the captions, and segmentation above what an untrained model scores. A change
//! that stops the model learning from captions fails here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The experiment this test runs (one file for the runner and the test).
const EXPERIMENT: &str = "configs/experiments/learning-check.json";
/// Image-level naming: the baseline's foreground mIoU (every pixel gets the class the whole
/// picture matches best). Measured: 6.7-7.2 over seeds 0-3, 1.2 untrained (docs/experiments.md).
const MIN_NAMING_FG_MIOU: f64 = 5.0;
/// Zero-shot segmentation's foreground mIoU. Measured: 4.1-14.8 over seeds 0-3 (seed 0: 14.8),
/// 3.1 untrained: a short run names its groups in some seeds only, so this bar is low.
const MIN_SEGMENTATION_FG_MIOU: f64 = 3.5;
/// The training seed (the world's own seed is in the experiment file).
const SEED: u64 = 0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ovseg(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_ovseg"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("ovseg runs");
    assert!(
        out.status.success(),
        "ovseg {} failed: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The experiment as `scripts/experiment.py --materialise` writes it for `SEED` (the runner's
/// own reading of the file, so the test trains exactly what the runner trains): synth options,
/// model.json and stage1.json in `dir`.
fn materialise(dir: &Path) -> Vec<String> {
    let out = Command::new("python3")
        .arg(repo().join("scripts/experiment.py"))
        .arg(repo().join(EXPERIMENT))
        .args(["--seeds", &SEED.to_string(), "--materialise", s(dir)])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "experiment.py --materialise failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = std::fs::read_to_string(dir.join("synth.args")).unwrap();
    args.lines().map(String::from).collect()
}

#[test]
fn segmentation_emerges_from_captions_in_the_learning_check() {
    let dir = scratch("learning");
    let regime = dir.join("regime");
    let world = dir.join("world");
    let mut synth = vec!["synth".to_string(), "--out".into(), s(&world).into()];
    synth.extend(materialise(&regime));
    ovseg(&synth);
    let (model, recipe) = (regime.join("model.json"), regime.join("stage1.json"));
    let run = dir.join("run");
    let data = world.join("train/meta.jsonl");
    let minilm = minilm_dir();
    ovseg(
        &[
            "train",
            "--quiet",
            "--out",
            s(&run),
            "--data",
            s(&data),
            "--recipe",
            s(&recipe),
            "--model",
            s(&model),
            "--bert",
            s(&minilm),
        ]
        .map(String::from),
    );
    let report = dir.join("eval.json");
    let (root, classes) = (world.join("val"), world.join("val/classes.txt"));
    ovseg(
        &[
            "eval",
            "--model",
            s(&run.join("model.mpk")),
            "--dataset",
            "voc",
            "--root",
            s(&root),
            "--classes",
            s(&classes),
            "--baseline",
            "--out",
            s(&report),
        ]
        .map(String::from),
    );
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let segmentation = scores["segmentation"]["fg_miou"].as_f64().unwrap();
    let naming = scores["baseline"]["fg_miou"].as_f64().unwrap();
    eprintln!(
        "learning check: segmentation foreground mIoU {segmentation:.2}, \
         image-level naming {naming:.2}"
    );
    assert!(
        naming >= MIN_NAMING_FG_MIOU,
        "naming was not learned from the captions: image-level foreground mIoU {naming:.2} \
         (bar {MIN_NAMING_FG_MIOU})"
    );
    assert!(
        segmentation >= MIN_SEGMENTATION_FG_MIOU,
        "segmentation foreground mIoU {segmentation:.2} is at an untrained model's level \
         (bar {MIN_SEGMENTATION_FG_MIOU})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
