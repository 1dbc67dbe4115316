//! The model file `ovseg convert` writes and every front end reads: a burn named-MessagePack
//! record holding the weights and a JSON manifest (configuration and which optional parts are
//! present), so that one file is enough to rebuild the model. Bytes in, bytes out: the same code
//! runs natively and in the browser.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::record::{
    FullPrecisionSettings, HalfPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder,
};
use serde::{Deserialize, Serialize};

use crate::checksum::{self, Sealed};
use crate::config::OvsegConfig;
use crate::error::OvsegError;
use crate::model::{OvSegmentor, OvSegmentorRecord};

/// Version of the file layout. Format 2 ends with a checksum trailer ([`crate::checksum`]);
/// format 1 files (without one) still load.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Record)]
pub struct OvsegRecord<B: Backend> {
    pub manifest: String,
    pub model: OvSegmentorRecord<B>,
}

/// What a model file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub config: OvsegConfig,
    /// "f32" or "f16".
    pub precision: String,
    pub momentum_encoder: bool,
    pub training_heads: bool,
    /// The model's `tokenizer.json`; absent for the built-in uncased BERT one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

/// Storage precision of the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Full,
    Half,
}

impl Precision {
    fn name(self) -> &'static str {
        match self {
            Self::Full => "f32",
            Self::Half => "f16",
        }
    }
}

impl Manifest {
    pub fn describe<B: Backend>(
        model: &OvSegmentor<B>,
        config: &OvsegConfig,
        tokenizer: Option<&str>,
        precision: Precision,
    ) -> Self {
        Self {
            format: FORMAT_VERSION,
            config: config.clone(),
            precision: precision.name().into(),
            momentum_encoder: model.img_encoder_momentum.is_some(),
            training_heads: model.has_training_heads(),
            tokenizer: tokenizer.map(str::to_string),
        }
    }

    /// The empty model this manifest describes, ready for `load_record`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> OvSegmentor<B> {
        let mut model = if self.training_heads {
            self.config.init(device)
        } else {
            self.config.init_inference(device)
        };
        if !self.momentum_encoder {
            model.img_encoder_momentum = None;
        }
        model
    }
}

/// Serialises a model, its manifest and its tokenizer (`TextTokenizer::stored_json`).
pub fn model_to_bytes<B: Backend>(
    model: OvSegmentor<B>,
    config: &OvsegConfig,
    tokenizer: Option<&str>,
    precision: Precision,
) -> Result<Vec<u8>, OvsegError> {
    let manifest = Manifest::describe(&model, config, tokenizer, precision);
    let record = OvsegRecord {
        manifest: serde_json::to_string(&manifest).expect("manifest serialises"),
        model: model.into_record(),
    };
    let bytes = match precision {
        Precision::Full => NamedMpkBytesRecorder::<FullPrecisionSettings>::new().record(record, ()),
        Precision::Half => NamedMpkBytesRecorder::<HalfPrecisionSettings>::new().record(record, ()),
    };
    let mut bytes =
        bytes.map_err(|e| OvsegError::Input(format!("cannot serialise the model: {e}")))?;
    checksum::seal(&mut bytes);
    Ok(bytes)
}

/// Rebuilds a model from [`model_to_bytes`] output, checking every parameter's shape against
/// the manifest's configuration. `origin` names the file in errors.
pub fn model_from_bytes<B: Backend>(
    bytes: Vec<u8>,
    origin: &str,
    device: &B::Device,
) -> Result<(OvSegmentor<B>, Manifest), OvsegError> {
    let fail = |message: String| OvsegError::Checkpoint {
        path: origin.into(),
        message,
    };
    let mut bytes = bytes;
    let sealed = checksum::open(&mut bytes, origin)?;
    let record: OvsegRecord<B> = NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .load(bytes, device)
        .map_err(|e| fail(format!("not an ovseg model file ({e})")))?;
    // Before anything is built from it: the sizes come from the file.
    let manifest = parse_manifest(&record.manifest, sealed, origin)?;
    let empty = manifest.init::<B>(device);
    let expected = shapes(&empty);
    let model = empty.load_record(record.model);
    let found = shapes(&model);
    if expected != found {
        let diff: Vec<String> = expected
            .iter()
            .zip(&found)
            .filter(|(e, f)| e != f)
            .take(8)
            .map(|((path, e), (_, f))| format!("{path}: file {f:?}, config {e:?}"))
            .collect();
        return Err(fail(format!(
            "weights do not match the configuration: {}",
            diff.join(", ")
        )));
    }
    Ok((model, manifest))
}

/// The manifest of a [`model_to_bytes`] file (configuration, tokenizer) without building its
/// weights: the weights are skipped over, not decoded into tensors.
pub fn read_manifest(bytes: Vec<u8>, origin: &str) -> Result<Manifest, OvsegError> {
    #[derive(serde::Deserialize)]
    struct Item {
        manifest: String,
    }
    #[derive(serde::Deserialize)]
    struct File {
        item: Item,
    }
    let fail = |message: String| OvsegError::Checkpoint {
        path: origin.into(),
        message,
    };
    let mut bytes = bytes;
    let sealed = checksum::open(&mut bytes, origin)?;
    let file: File = rmp_serde::from_slice(&bytes)
        .map_err(|e| fail(format!("not an ovseg model file ({e})")))?;
    parse_manifest(&file.item.manifest, sealed, origin)
}

/// A manifest as read from a file: a format this build reads, sealed from format 2 on, and a
/// valid configuration.
fn parse_manifest(json: &str, sealed: Sealed, origin: &str) -> Result<Manifest, OvsegError> {
    let fail = |message: String| OvsegError::Checkpoint {
        path: origin.into(),
        message,
    };
    let manifest: Manifest =
        serde_json::from_str(json).map_err(|e| fail(format!("unreadable manifest: {e}")))?;
    if !(1..=FORMAT_VERSION).contains(&manifest.format) {
        return Err(fail(format!(
            "model file format {} (this build reads 1 to {FORMAT_VERSION})",
            manifest.format
        )));
    }
    if manifest.format >= 2 && sealed == Sealed::Absent {
        return Err(checksum::missing(origin));
    }
    manifest
        .config
        .validate()
        .map_err(|e| fail(e.to_string()))?;
    Ok(manifest)
}

/// Calls `f(path, shape, value)` for every float parameter and running statistic of `module`, in
/// visiting order, with paths as the module tree names them (`img_encoder.pos_embed`). The
/// shape comes without materialising a lazy parameter; `value()` reads the tensor.
pub fn for_each_float_param<B: Backend, M: Module<B>>(
    module: &M,
    f: impl FnMut(&str, Vec<usize>, &dyn Fn() -> TensorData),
) {
    struct Visit<F> {
        path: Vec<String>,
        f: F,
    }
    impl<B: Backend, F: FnMut(&str, Vec<usize>, &dyn Fn() -> TensorData)> ModuleVisitor<B>
        for Visit<F>
    {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let path = self.path.join(".");
            (self.f)(&path, param.lazy_shape().to_vec(), &|| {
                param.val().into_data()
            });
        }
    }
    module.visit(&mut Visit {
        path: Vec::new(),
        f,
    });
}

/// (path, shape) of every float parameter, in visiting order.
fn shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut found = Vec::new();
    for_each_float_param(module, |path, shape, _| {
        found.push((path.to_string(), shape))
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    fn tiny() -> OvsegConfig {
        let mut c = OvsegConfig::tiny();
        c.text.vocab_size = 100;
        c.proj_inner_dim = 64;
        c
    }

    #[test]
    fn round_trip_full_and_half() {
        let device = Default::default();
        let config = tiny();
        let model = config.init::<NdArray>(&device);
        let reference = model.logit_scale.val().into_data();
        for precision in [Precision::Full, Precision::Half] {
            let bytes = model_to_bytes(model.clone(), &config, None, precision).unwrap();
            let (back, manifest) = model_from_bytes::<NdArray>(bytes, "mem", &device).unwrap();
            assert_eq!(manifest.config, config);
            assert!(manifest.training_heads && manifest.momentum_encoder);
            let a = model.img_encoder.pos_embed.val();
            let b = back.img_encoder.pos_embed.val();
            let err: f32 = (a - b).abs().max().into_scalar();
            let tol = if precision == Precision::Full {
                0.0
            } else {
                1e-3
            };
            assert!(err <= tol, "{precision:?}: {err}");
            back.logit_scale
                .val()
                .into_data()
                .assert_approx_eq::<f32>(&reference, burn::tensor::Tolerance::absolute(1e-2));
        }
        let inference = model.into_inference();
        let bytes = model_to_bytes(inference, &config, None, Precision::Full).unwrap();
        let (back, manifest) = model_from_bytes::<NdArray>(bytes, "mem", &device).unwrap();
        assert!(!manifest.training_heads && back.bridge_projector.is_none());
    }

    /// A manifest's configuration is checked before the model is built from it.
    #[test]
    fn absurd_manifest_is_refused_naming_the_file() {
        let device = Default::default();
        let config = tiny();
        let model = config.init_inference::<NdArray>(&device);
        let mut absurd = config.clone();
        absurd.text.vocab_size = 1 << 40;
        let bytes = model_to_bytes(model, &absurd, None, Precision::Half).unwrap();
        let e = model_from_bytes::<NdArray>(bytes, "evil.mpk", &device)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "checkpoint evil.mpk: invalid model configuration: text.vocab_size 1099511627776 is out of bounds (1..=1048576)"
        );
    }

    /// A flipped byte anywhere is caught by the checksum trailer; a file cut short loses it;
    /// a format 1 file (written before the trailer) still loads without one.
    #[test]
    fn damage_is_caught_and_format_1_files_still_load() {
        let device = Default::default();
        let config = tiny();
        let model = config.init_inference::<NdArray>(&device);
        let bytes = model_to_bytes(model, &config, None, Precision::Half).unwrap();
        let load = |b: Vec<u8>| model_from_bytes::<NdArray>(b, "m.mpk", &device);
        for at in [10, bytes.len() / 2, bytes.len() - 20] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x04;
            let e = load(damaged).err().unwrap().to_string();
            assert!(e.starts_with("checkpoint m.mpk: checksum mismatch"), "{e}");
        }
        let unsealed = bytes[..bytes.len() - checksum::TRAILER_LEN].to_vec();
        let e = load(unsealed.clone()).err().unwrap().to_string();
        assert_eq!(
            e,
            "checkpoint m.mpk: its checksum trailer is missing: the file is truncated or damaged"
        );
        let mut old = unsealed;
        // The manifest is a MessagePack string holding the JSON as it is.
        let key = b"\"format\":2";
        let at = old.windows(key.len()).position(|w| w == key).unwrap();
        old[at + key.len() - 1] = b'1';
        let (_, manifest) = load(old).unwrap();
        assert_eq!(manifest.format, 1);
    }

    /// `read_manifest` gives what `model_from_bytes` gives without building the weights, and
    /// refuses what it refuses.
    #[test]
    fn the_manifest_alone_is_the_loaded_one() {
        let device = Default::default();
        let config = tiny();
        let model = config.init::<NdArray>(&device);
        let bytes = model_to_bytes(model, &config, Some("{}"), Precision::Half).unwrap();
        let alone = read_manifest(bytes.clone(), "m.mpk").unwrap();
        let (_, loaded) = model_from_bytes::<NdArray>(bytes.clone(), "m.mpk", &device).unwrap();
        assert_eq!(alone.config, loaded.config);
        assert_eq!(alone.tokenizer.as_deref(), Some("{}"));
        assert_eq!(alone.tokenizer, loaded.tokenizer);
        assert_eq!(alone.format, loaded.format);
        let mut damaged = bytes;
        let at = damaged.len() / 2;
        damaged[at] ^= 0x04;
        let e = read_manifest(damaged, "m.mpk").unwrap_err().to_string();
        assert!(e.starts_with("checkpoint m.mpk: checksum mismatch"), "{e}");
        let e = read_manifest(b"not a model".to_vec(), "junk.mpk").unwrap_err();
        assert!(e.to_string().starts_with("checkpoint junk.mpk: "), "{e}");
    }

    #[test]
    fn garbage_is_an_error() {
        let device = Default::default();
        let e = model_from_bytes::<NdArray>(b"not a model".to_vec(), "junk.mpk", &device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("junk.mpk") && e.contains("not an ovseg model file"),
            "{e}"
        );
    }
}
