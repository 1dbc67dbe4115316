//! Weights from outside: released PyTorch checkpoints (`.pth`, the state dict under `model`) and
//! HuggingFace BERT weights (`model.safetensors` + `config.json`), and DINO ViT weights to start
//! the image encoder from. Native only (feature `import`).
//!
//! Every burn parameter path maps to one checkpoint key through [`mapping::torch_key`]; a missing
//! key, an unexpected key that matters or a shape mismatch is an error listing all of them.

mod dino;
pub mod mapping;
mod pickle;
mod source;

pub use dino::{load_dino_vit, DinoSource};
pub use source::{PthSource, SafetensorsSource, TensorSource};

use std::path::Path;

use burn::prelude::*;
use burn_store::{ModuleSnapshot, TensorSnapshot};

use crate::config::{OvsegConfig, TextConfig};
use crate::error::OvsegError;
use crate::model::OvSegmentor;
use crate::text::TextEncoder;

/// What a load matched, for logging.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub loaded: usize,
    pub ignored: Vec<String>,
}

/// Builds the model a released checkpoint describes and loads every parameter and buffer.
/// Optional training parts (momentum encoder, entity heads) are present iff the checkpoint has them.
pub fn load_checkpoint<B: Backend>(
    path: &Path,
    config: &OvsegConfig,
    device: &B::Device,
) -> Result<(OvSegmentor<B>, ImportReport), OvsegError> {
    let source = PthSource::open(path)?;
    let keys = source.keys();
    let has = |prefix: &str| keys.iter().any(|k| k.starts_with(prefix));
    let mut model = config.init::<B>(device);
    if !has("img_encoder_momentum.") {
        model.img_encoder_momentum = None;
    }
    if !has("multimodal_groupingblock.") {
        model.align_proj_img = None;
        model.align_proj_text = None;
        model.multimodal_groupingblock = None;
        model.bridge_projector = None;
    }
    let report = load_module(
        &mut model,
        &source,
        &path.display().to_string(),
        |path| Some(mapping::torch_key(path)),
        mapping::ignorable_checkpoint_key,
    )?;
    Ok((model, report))
}

/// Loads HuggingFace BERT or RoBERTa weights (`model.safetensors`, keys with or without a
/// `bert.`/`roberta.` prefix) into a text encoder built from the matching `config.json`.
pub fn load_hf_bert<B: Backend>(
    weights: &Path,
    config: &TextConfig,
    device: &B::Device,
) -> Result<(TextEncoder<B>, ImportReport), OvsegError> {
    let source = SafetensorsSource::open(weights)?;
    let prefix = format!("{}.", config.model_type.name());
    let prefixed = source.keys().iter().any(|k| k.starts_with(&prefix));
    let mut encoder = config.init::<B>(device);
    let key = |path: &str| {
        let k = mapping::torch_key(path);
        let k = k.strip_prefix("transformer.").unwrap_or(&k).to_string();
        Some(if prefixed { format!("{prefix}{k}") } else { k })
    };
    let report = load_module(
        &mut encoder,
        &source,
        &weights.display().to_string(),
        key,
        mapping::ignorable_bert_key,
    )?;
    Ok((encoder, report))
}

/// Reads the HuggingFace `config.json` beside `model.safetensors` and loads both.
pub fn load_hf_bert_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(TextConfig, TextEncoder<B>), OvsegError> {
    let config_path = dir.join("config.json");
    let json = std::fs::read_to_string(&config_path).map_err(|e| OvsegError::Io {
        path: config_path.display().to_string(),
        message: e.to_string(),
    })?;
    let config = TextConfig::from_hf_json(&json)?;
    let (encoder, _) = load_hf_bert(&dir.join("model.safetensors"), &config, device)?;
    Ok((config, encoder))
}

/// Loads `module`'s parameters from `source`, `key_of` naming the source key of each burn path
/// (`None`: the source does not provide it and it keeps its initialisation).
pub fn load_module<B: Backend, M: ModuleSnapshot<B> + Module<B>>(
    module: &mut M,
    source: &dyn TensorSource,
    origin: &str,
    key_of: impl Fn(&str) -> Option<String>,
    ignorable: impl Fn(&str) -> bool,
) -> Result<ImportReport, OvsegError> {
    let targets = module.collect(None, None, false);
    let mut used = std::collections::BTreeSet::new();
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut snapshots = Vec::with_capacity(targets.len());
    for target in targets {
        let path = target.full_path();
        let Some(key) = key_of(&path) else {
            continue;
        };
        let Some(found_shape) = source.shape(&key) else {
            missing.push(format!(
                "{key} (for {path}, shape {:?})",
                target.shape.to_vec()
            ));
            continue;
        };
        used.insert(key.clone());
        let expected = target.shape.to_vec();
        let linear_weight =
            target.module_type().as_deref() == Some("Struct:Linear") && path.ends_with(".weight");
        let Some(layout) = mapping::layout_for(&found_shape, &expected, linear_weight) else {
            mismatched.push(format!(
                "{key}: checkpoint {found_shape:?}, model {expected:?}"
            ));
            continue;
        };
        let values = source.read_f32(&key)?;
        let data = mapping::apply_layout(values, &found_shape, &expected, layout);
        snapshots.push(TensorSnapshot::from_data(
            data,
            target.path_stack.clone().unwrap_or_default(),
            target.container_stack.clone().unwrap_or_default(),
            target.tensor_id.unwrap_or_default(),
        ));
    }
    let (ignored, unexpected): (Vec<String>, Vec<String>) = source
        .keys()
        .into_iter()
        .filter(|key| !used.contains(key))
        .partition(|key| ignorable(key.as_str()));
    if !(missing.is_empty() && mismatched.is_empty() && unexpected.is_empty()) {
        return Err(OvsegError::Checkpoint {
            path: origin.into(),
            message: mismatch_message(&mismatched, &missing, &unexpected),
        });
    }
    let loaded = snapshots.len();
    let result = module.apply(snapshots, None, None, false);
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        return Err(OvsegError::Checkpoint {
            path: origin.into(),
            message: errors.join("; "),
        });
    }
    Ok(ImportReport { loaded, ignored })
}

/// What [`load_module`] found wrong, on one line: the first few of each kind, the first
/// mismatch first.
fn mismatch_message(mismatched: &[String], missing: &[String], unexpected: &[String]) -> String {
    let mut parts = Vec::new();
    for (title, list) in [
        ("shape mismatch", mismatched),
        ("missing", missing),
        ("unexpected", unexpected),
    ] {
        if !list.is_empty() {
            let shown: Vec<&str> = list.iter().take(4).map(String::as_str).collect();
            let more = if list.len() > shown.len() {
                format!(", ... and {} more", list.len() - shown.len())
            } else {
                String::new()
            };
            parts.push(format!(
                "{title} ({}): {}{more}",
                list.len(),
                shown.join(", ")
            ));
        }
    }
    format!(
        "does not match the model configuration: {}",
        parts.join("; ")
    )
}
