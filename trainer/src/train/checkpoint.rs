//! Training checkpoints: `RUN/checkpoints/step-NNNNNNNN/` holding the model (an ordinary ovseg
//! model file, so `ovseg segment` reads it), the optimizer state and `state.json` (step, data
//! position, RNG seed, best score). A checkpoint folder is written under a temporary name and
//! renamed when complete, then `RUN/checkpoints/latest` is replaced atomically: a run killed at
//! any moment leaves the previous checkpoint intact.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
pub use crate::data::DataPosition;
use crate::files::{rename, sync_folder, write_atomically, write_synced};

pub const MODEL_FILE: &str = "model.mpk";
pub const OPTIMIZER_FILE: &str = "optimizer.mpk";
pub const STATE_FILE: &str = "state.json";
/// Name prefixes of a checkpoint being written and of one set aside while it replaces it.
const PARTIAL: &str = ".partial-";
const REPLACED: &str = ".replaced-";

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

impl RunState {
    /// A run that has not taken a step, on `devices` devices in all.
    pub fn fresh(config: &TrainConfig, devices: usize) -> Self {
        Self {
            step: 0,
            position: DataPosition::default(),
            devices,
            seed: config.seed,
            best_miou: None,
            config: config.clone(),
        }
    }
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

    /// Writes a checkpoint and points `latest` at it. The order keeps a complete checkpoint on
    /// disk at every moment, even when one of the same step is replaced: write and fsync a
    /// partial folder, set the old one aside, rename the new one into place, fsync the folder,
    /// replace `latest`, and only then delete what was set aside and what `keep_last` drops.
    pub fn save(
        &self,
        state: &RunState,
        model: &[u8],
        optimizer: &[u8],
        keep_last: usize,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        self.recover()?;
        let target = self.folder(state.step);
        let partial = self
            .dir
            .join(format!("{PARTIAL}{:08}-{}", state.step, std::process::id()));
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        write_synced(&partial.join(MODEL_FILE), model)?;
        write_synced(&partial.join(OPTIMIZER_FILE), optimizer)?;
        let json = serde_json::to_vec_pretty(state).expect("run state serialises");
        write_synced(&partial.join(STATE_FILE), &json)?;
        let aside = self.dir.join(format!("{REPLACED}{:08}", state.step));
        if target.exists() {
            rename(&target, &aside)?;
        }
        if let Err(e) = rename(&partial, &target) {
            if aside.exists() {
                rename(&aside, &target)?;
            }
            return Err(e);
        }
        sync_folder(&self.dir)?;
        write_atomically(
            &self.dir.join("latest"),
            target
                .file_name()
                .expect("named folder")
                .to_string_lossy()
                .as_bytes(),
        )?;
        if aside.exists() {
            remove(&aside)?;
        }
        self.prune(keep_last.max(1))?;
        Ok(target)
    }

    /// Repairs what a run killed inside `save` left: a checkpoint set aside for one of the same
    /// step that never arrived goes back into place (else it is deleted), and partial folders
    /// are deleted.
    fn recover(&self) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with(PARTIAL) {
                remove(&path)?;
            } else if let Some(step) = name.strip_prefix(REPLACED).and_then(|s| s.parse().ok()) {
                let target = self.folder(step);
                if target.join(STATE_FILE).is_file() {
                    remove(&path)?;
                } else {
                    tracing::warn!("restoring {} from an interrupted save", target.display());
                    if target.exists() {
                        remove(&target)?;
                    }
                    rename(&path, &target)?;
                }
            }
        }
        Ok(())
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
            remove(path)?;
        }
        Ok(())
    }

    /// The newest complete checkpoint: the one `latest` names, else the highest step found.
    pub fn latest(&self) -> Result<Option<Checkpoint>> {
        self.recover()?;
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

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> RunState {
        RunState {
            step,
            position: DataPosition::default(),
            devices: 1,
            seed: 7,
            best_miou: None,
            config: TrainConfig::stage1(),
        }
    }

    fn model_of(checkpoint: &Checkpoint) -> Vec<u8> {
        std::fs::read(checkpoint.model_path()).unwrap()
    }

    #[test]
    fn a_checkpoint_resaved_at_its_step_survives_an_interrupted_save() {
        let run = std::env::temp_dir().join(format!("ovseg-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        let checkpoints = Checkpoints::new(&run);
        checkpoints.save(&state(4), b"first", b"opt", 1).unwrap();
        // Saved again at the same step with keep_last 1: the new one replaces it.
        checkpoints.save(&state(4), b"second", b"opt", 1).unwrap();
        let latest = checkpoints.latest().unwrap().unwrap();
        assert_eq!(model_of(&latest), b"second");

        // A save killed after setting step 4 aside and before moving its replacement in, with a
        // partial folder left behind: the set-aside copy is restored, the partial one deleted.
        let aside = run.join("checkpoints").join(format!("{REPLACED}00000004"));
        std::fs::rename(&latest.path, &aside).unwrap();
        let partial = run.join("checkpoints").join(format!("{PARTIAL}00000004-1"));
        std::fs::create_dir_all(&partial).unwrap();
        let latest = checkpoints.latest().unwrap().expect("step 4 restored");
        assert_eq!(
            (latest.state.step, model_of(&latest)),
            (4, b"second".to_vec())
        );
        assert!(!aside.exists() && !partial.exists());

        // Killed after the replacement arrived but before the old copy was deleted: the new one
        // stands, the old one goes.
        checkpoints.save(&state(4), b"third", b"opt", 1).unwrap();
        std::fs::create_dir_all(&aside).unwrap();
        std::fs::write(aside.join(STATE_FILE), b"{}").unwrap();
        let latest = checkpoints.latest().unwrap().unwrap();
        assert_eq!(model_of(&latest), b"third");
        assert!(!aside.exists());

        // A newer step with keep_last 1 leaves exactly that one.
        checkpoints.save(&state(6), b"sixth", b"opt", 1).unwrap();
        let steps: Vec<usize> = checkpoints.list().unwrap().iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![6]);
        std::fs::remove_dir_all(&run).unwrap();
    }
}
