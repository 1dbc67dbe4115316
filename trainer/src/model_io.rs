//! Model files on disk: ovseg model files (any name) and released `.pth` checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ovseg_model::import::load_checkpoint;
use ovseg_model::pack::{is_pack, Pack, Part};
use ovseg_model::record::{model_from_bytes, model_to_bytes, Precision};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig};

use burn::prelude::Backend;

use crate::backend::Cpu;

/// File names of the two parts `ovseg export-web` writes.
pub const IMAGE_PACK: &str = "image.ovsegpack";
pub const TEXT_PACK: &str = "text.ovsegpack";

pub fn read_config(path: &Path) -> Result<OvsegConfig> {
    let json = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    OvsegConfig::from_json(&json).with_context(|| format!("config {}", path.display()))
}

/// PyTorch checkpoints are zip archives; ovseg model files are MessagePack.
fn is_pth(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map(|_| &magic == b"PK")
        .unwrap_or(false)
}

/// Loads what `ovseg convert` wrote, or a released `.pth` together with its `--config`.
pub fn load_model<B: Backend>(
    path: &Path,
    config: Option<&Path>,
    device: &B::Device,
) -> Result<(OvSegmentor<B>, OvsegConfig)> {
    if !path.is_file() {
        bail!("model file {} does not exist", path.display());
    }
    if is_pth(path) {
        let Some(config_path) = config else {
            bail!(
                "{} is a PyTorch checkpoint: give its model configuration with --config",
                path.display()
            );
        };
        let config = read_config(config_path)?;
        let (model, _) = load_checkpoint::<B>(path, &config, device)?;
        return Ok((model, config));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (model, stored) = if is_pack(&bytes) {
        load_packs::<B>(path, bytes, device)?
    } else {
        let (model, manifest) = model_from_bytes::<B>(bytes, &path.display().to_string(), device)?;
        (model, manifest.config)
    };
    if let Some(config_path) = config {
        let given = read_config(config_path)?;
        if given != stored {
            bail!(
                "--config {} differs from the configuration stored in {}",
                config_path.display(),
                path.display()
            );
        }
    }
    Ok((model, stored))
}

/// The parts `ovseg export-web` writes: the image pack `path`, and the text pack
/// [`TEXT_PACK`] beside it (every native command embeds class names).
fn load_packs<B: Backend>(
    path: &Path,
    bytes: Vec<u8>,
    device: &B::Device,
) -> Result<(OvSegmentor<B>, OvsegConfig)> {
    let image = Pack::from_bytes(bytes, &path.display().to_string())?;
    let config = image.config().clone();
    let model = image.init_model::<B>(device)?;
    let text_path = path.with_file_name(TEXT_PACK);
    if !text_path.is_file() {
        bail!(
            "{} holds the image part of a web export; its text part {} is not beside it",
            path.display(),
            text_path.display()
        );
    }
    let text_bytes = std::fs::read(&text_path)
        .with_context(|| format!("cannot read {}", text_path.display()))?;
    let text = Pack::from_bytes(text_bytes, &text_path.display().to_string())?;
    if text.part() != Part::Text {
        bail!("{} is not a text pack", text_path.display());
    }
    Ok((text.load_into(model, &config)?, config))
}

/// A `tokenizer.json` the user names, or the built-in uncased BERT one.
pub fn load_tokenizer(path: Option<&Path>) -> Result<TextTokenizer> {
    match path {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            TextTokenizer::from_bytes(&bytes)
                .with_context(|| format!("tokenizer {}", path.display()))
        }
        None => Ok(TextTokenizer::bert_base_uncased()),
    }
}

/// `model.mpk` -> `model.json`, the configuration written beside a model file.
pub fn config_path_beside(model: &Path) -> PathBuf {
    model.with_extension("json")
}

/// Writes the model file atomically (temporary file, then rename) and its config beside it.
pub fn save_model(
    model: OvSegmentor<Cpu>,
    config: &OvsegConfig,
    out: &Path,
    precision: Precision,
) -> Result<()> {
    let config_out = config_path_beside(out);
    if config_out == out {
        bail!(
            "--out {} would be overwritten by its own config; choose a name not ending in .json",
            out.display()
        );
    }
    let bytes = model_to_bytes(model, config, precision)?;
    write_atomically(out, &bytes)?;
    write_atomically(&config_out, config.to_json().as_bytes())?;
    Ok(())
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
