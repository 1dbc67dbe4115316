//! Model files on disk: ovseg model files (any name) and released `.pth` checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ovseg_model::formats::{open_model, ModelFile, TextPack, DETECT_BYTES};
use ovseg_model::import::load_checkpoint;
use ovseg_model::record::{model_to_bytes, Precision};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig};

use burn::prelude::Backend;

use crate::backend::Cpu;
use crate::files::write_atomically;

pub use ovseg_model::formats::{IMAGE_PACK, TEXT_PACK};

/// A model configuration: a JSON file, or the name of a preset (`OvsegConfig::PRESETS`, e.g.
/// `vits-roberta` for the second released model) when no such file exists.
pub fn read_config(path: &Path) -> Result<OvsegConfig> {
    if let Some(name) = path.to_str().filter(|_| !path.exists()) {
        if OvsegConfig::PRESETS.contains(&name) {
            return Ok(OvsegConfig::preset(name)?);
        }
    }
    let json = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    OvsegConfig::from_json(&json).with_context(|| format!("config {}", path.display()))
}

/// Whether the file is a PyTorch checkpoint, from its first bytes ([`ModelFile::detect`]); the
/// other kinds are told apart, and refused when unknown, once the whole file is read.
fn is_checkpoint(path: &Path) -> Result<bool> {
    let mut prefix = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(
                &mut std::io::Read::take(f, DETECT_BYTES as u64),
                &mut prefix,
            )
        })
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(ModelFile::detect(&prefix) == Ok(ModelFile::Checkpoint))
}

/// A model as the commands use it: weights, configuration and the tokenizer that goes with them.
pub struct LoadedModel<B: Backend> {
    pub model: OvSegmentor<B>,
    pub config: OvsegConfig,
    pub tokenizer: TextTokenizer,
}

/// Loads what `ovseg convert` or `ovseg export-web` wrote, or a released `.pth` together with
/// its `--config`. The tokenizer is `tokenizer` when given, else the one stored with the model,
/// else the built-in uncased BERT one; it must fit the model's text encoder.
pub fn load_model<B: Backend>(
    path: &Path,
    config: Option<&Path>,
    tokenizer: Option<&Path>,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    if !path.is_file() {
        bail!("model file {} does not exist", path.display());
    }
    let (model, stored, stored_tokenizer) = if is_checkpoint(path)? {
        let Some(config_path) = config else {
            bail!(
                "{} is a PyTorch checkpoint: give its model configuration with --config",
                path.display()
            );
        };
        let config = read_config(config_path)?;
        let (model, _) = load_checkpoint::<B>(path, &config, device)?;
        (model, config, None)
    } else {
        let loaded = load_file::<B>(path, device)?;
        if let Some(config_path) = config {
            if read_config(config_path)? != loaded.1 {
                bail!(
                    "--config {} differs from the configuration stored in {}",
                    config_path.display(),
                    path.display()
                );
            }
        }
        loaded
    };
    let (tokenizer, origin) = match tokenizer {
        Some(file) => (
            load_tokenizer(Some(file))?,
            format!("tokenizer {}", file.display()),
        ),
        None => (
            TextTokenizer::stored(stored_tokenizer.as_deref())
                .with_context(|| format!("the tokenizer stored in {}", path.display()))?,
            match stored_tokenizer {
                Some(_) => format!("the tokenizer stored in {}", path.display()),
                None => format!(
                    "the built-in uncased BERT tokenizer ({} stores none; give the model's own with --tokenizer)",
                    path.display()
                ),
            },
        ),
    };
    check_tokenizer(&tokenizer, &stored, origin)?;
    check_finite(&model, path)?;
    Ok(LoadedModel {
        model,
        config: stored,
        tokenizer,
    })
}

/// Refuses weights holding NaN or an infinity, naming the first such parameter: a damaged file
/// or a diverged run, from which every label would be computed from NaN without a word.
pub fn check_finite<B: Backend>(model: &OvSegmentor<B>, path: &Path) -> Result<()> {
    let mut bad: Option<(String, usize)> = None;
    ovseg_model::record::for_each_float_param(model, |name, _, value| {
        if bad.is_none() {
            let data = value().convert::<f32>();
            let count = data.iter::<f32>().filter(|v| !v.is_finite()).count();
            if count > 0 {
                bad = Some((name.to_string(), count));
            }
        }
    });
    match bad {
        Some((name, count)) => bail!(
            "{}: parameter {name} holds {count} non-finite values (NaN or infinity); the file is \
             damaged or came from a diverged run",
            path.display()
        ),
        None => Ok(()),
    }
}

/// Refuses a tokenizer of another model (see `TextTokenizer::check_model`), naming where it
/// came from.
pub fn check_tokenizer(
    tokenizer: &TextTokenizer,
    config: &OvsegConfig,
    origin: String,
) -> Result<()> {
    tokenizer.check_model(&config.text).with_context(|| origin)
}

/// A model file, or the image pack `path` of `ovseg export-web` with the text pack
/// [`TEXT_PACK`] beside it (every native command embeds class names), which carries the
/// tokenizer; which it is, [`open_model`] decides.
fn load_file<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(OvSegmentor<B>, OvsegConfig, Option<String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let opened = open_model::<B>(bytes, &path.display().to_string(), device)?;
    if opened.has_text() {
        return Ok((opened.model, opened.config, opened.tokenizer));
    }
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
    let text = TextPack::from_bytes(text_bytes, &text_path.display().to_string())?;
    let model = text.attach(opened.model, &opened.config)?;
    Ok((model, opened.config, text.tokenizer().map(str::to_string)))
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

/// Writes the model file atomically (temporary file, then rename), with its tokenizer inside,
/// and its config beside it.
pub fn save_model(
    model: OvSegmentor<Cpu>,
    config: &OvsegConfig,
    tokenizer: &TextTokenizer,
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
    let bytes = model_to_bytes(model, config, tokenizer.stored_json(), precision)?;
    write_atomically(out, &bytes)?;
    write_atomically(&config_out, config.to_json().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[test]
    fn non_finite_weights_are_refused_by_name() {
        let device = Default::default();
        let config = OvsegConfig::tiny();
        let mut model = config.init::<Cpu>(&device);
        check_finite(&model, Path::new("m.ovseg")).unwrap();
        let scale = model.logit_scale.val();
        model.logit_scale = Param::from_tensor(scale.clone().div(scale.zeros_like()));
        let err = check_finite(&model, Path::new("m.ovseg"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("m.ovseg: parameter logit_scale holds 1 non-finite"),
            "{err}"
        );
    }
}
