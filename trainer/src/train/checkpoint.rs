//! Training checkpoints: `RUN/checkpoints/step-NNNNNNNN/` holding the model (an ordinary ovseg
//! model file, so `ovseg segment` reads it), the optimizer state and `state.json` (step, data
//! position, RNG seed, best score). A checkpoint folder is written under a temporary name and
//! renamed when complete, then `RUN/checkpoints/latest` is replaced atomically: a run killed at
//! any moment leaves the previous checkpoint intact.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use crate::model_io::write_atomically;

pub const MODEL_FILE: &str = "model.mpk";
pub const OPTIMIZER_FILE: &str = "optimizer.mpk";
pub const STATE_FILE: &str = "state.json";

/// Where the next batch comes from: batch `batch` of epoch `epoch`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: usize,
    pub batch: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps done.
    pub step: usize,
    /// The first batch the next step reads.
    pub position: DataPosition,
    pub devices: usize,
    /// Random draws of step `s` come from `seed` and `s`, so this is the whole RNG state.
    pub seed: u64,
    pub best_miou: Option<f64>,
    pub config: TrainConfig,
}

pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(run: &Path) -> Self {
        Self {
            dir: run.join("checkpoints"),
        }
    }

    fn folder(&self, step: usize) -> PathBuf {
        self.dir.join(format!("step-{step:08}"))
    }

    pub fn save(
        &self,
        state: &RunState,
        model: &[u8],
        optimizer: &[u8],
        keep_last: usize,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let target = self.folder(state.step);
        let partial = self
            .dir
            .join(format!(".partial-{:08}-{}", state.step, std::process::id()));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).ok();
        }
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        write_synced(&partial.join(MODEL_FILE), model)?;
        write_synced(&partial.join(OPTIMIZER_FILE), optimizer)?;
        let json = serde_json::to_vec_pretty(state).expect("run state serialises");
        write_synced(&partial.join(STATE_FILE), &json)?;
        if target.exists() {
            std::fs::remove_dir_all(&target)
                .with_context(|| format!("cannot replace {}", target.display()))?;
        }
        std::fs::rename(&partial, &target)
            .with_context(|| format!("cannot move checkpoint into {}", target.display()))?;
        write_atomically(
            &self.dir.join("latest"),
            target
                .file_name()
                .expect("named folder")
                .to_string_lossy()
                .as_bytes(),
        )?;
        self.prune(keep_last.max(1))?;
        Ok(target)
    }

    /// Complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<(usize, PathBuf)>> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(found);
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
                if path.join(STATE_FILE).is_file() {
                    found.push((step, path));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn prune(&self, keep: usize) -> Result<()> {
        let all = self.list()?;
        for (_, path) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("cannot remove old checkpoint {}", path.display()))?;
        }
        Ok(())
    }

    /// The newest complete checkpoint: the one `latest` names, else the highest step found.
    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        let named = std::fs::read_to_string(self.dir.join("latest"))
            .ok()
            .map(|name| self.dir.join(name.trim()))
            .filter(|p| p.join(STATE_FILE).is_file());
        let path = match named {
            Some(p) => p,
            None => match self.list()?.pop() {
                Some((_, p)) => p,
                None => return Ok(None),
            },
        };
        Checkpoint::open(&path).map(Some)
    }
}

pub struct Checkpoint {
    pub path: PathBuf,
    pub state: RunState,
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let state_path = path.join(STATE_FILE);
        let text = std::fs::read_to_string(&state_path)
            .with_context(|| format!("cannot read {}", state_path.display()))?;
        let state: RunState = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run state", state_path.display()))?;
        for file in [MODEL_FILE, OPTIMIZER_FILE] {
            if !path.join(file).is_file() {
                bail!("checkpoint {} has no {file}", path.display());
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            state,
        })
    }

    pub fn model_path(&self) -> PathBuf {
        self.path.join(MODEL_FILE)
    }

    pub fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        let path = self.path.join(OPTIMIZER_FILE);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
