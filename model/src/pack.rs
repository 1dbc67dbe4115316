//! Weight packs: the browser's model download, in two parts so that a page using a preset
//! vocabulary (class embeddings precomputed by `ovseg export-web`) never fetches the text
//! encoder. The image part (GroupViT, image projector, temperatures) is enough to build the
//! model and segment with given class embeddings; the text part (BERT, text projector) is
//! added when words outside the presets have to be encoded.
//!
//! Layout: `OVSEGPAK`, a little-endian u32 header length, the JSON [`PackHeader`], then the tensor
//! bytes. Each tensor is f32, f16, `q8` or `q6`: blocks of [`Q_BLOCK`] consecutive values
//! (row-major) sharing one f16 scale, stored as all the scales then all the integers, so a value
//! is `scale[i / Q_BLOCK] * q[i]` (symmetric blocks, as ggml's Q8_0 with larger blocks). `q8`
//! integers are int8 in -127..=127; `q6` integers are -31..=31 stored as `q + 32` in 6 bits,
//! four to three bytes (little-endian, the first value in the lowest bits).
//! Decoding checks every length, offset and shape before anything is built.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::f16;
use serde::{Deserialize, Serialize};

use crate::checksum::{self, Sealed};
use crate::config::{OvsegConfig, MAX_TENSOR_VALUES};
use crate::error::OvsegError;
use crate::model::OvSegmentor;
use crate::record::for_each_float_param;

pub const MAGIC: &[u8; 8] = b"OVSEGPAK";
/// Format 2 ends with a checksum trailer ([`crate::checksum`]); format 1 packs (without one)
/// still load.
pub const PACK_FORMAT: u32 = 2;
/// Values sharing one scale in a `q8` or `q6` tensor.
pub const Q_BLOCK: usize = 64;
/// Tensors smaller than this, and vectors (biases, norms), stay f16 in an int8 or int6 pack:
/// they are a negligible share of the bytes and the most sensitive to rounding.
pub const Q_MIN_VALUES: usize = 4096;
/// Bound on the JSON header (a vits-minilm header is about 40 kB).
const MAX_HEADER: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackPart {
    Image,
    Text,
}

impl PackPart {
    /// Which part a parameter path (as the module visitor names it) belongs to.
    pub fn of(path: &str) -> Self {
        if path.starts_with("text_encoder.") || path.starts_with("text_projector.") {
            Self::Text
        } else {
            Self::Image
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Text => "text",
        }
    }
}

/// How a pack stores its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    F32,
    F16,
    /// `q8` blocks for matrices of at least [`Q_MIN_VALUES`] values, f16 for the rest.
    Int8,
    /// The same with `q6` blocks: three quarters of int8.
    Int6,
    /// `q6` for the transformer blocks' MLP matrices (`.mlp.` in the path: over half of a
    /// ViT's weights), `q8` for the other matrices, f16 for the rest.
    Int8Mlp6,
}

impl Storage {
    pub fn parse(name: &str) -> Result<Self, OvsegError> {
        match name {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "int8" => Ok(Self::Int8),
            "int6" => Ok(Self::Int6),
            "int8-mlp6" => Ok(Self::Int8Mlp6),
            other => Err(OvsegError::Input(format!(
                "unknown weight storage '{other}' (f32, f16, int8, int8-mlp6 or int6)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
            Self::Int6 => "int6",
            Self::Int8Mlp6 => "int8-mlp6",
        }
    }

    fn dtype_for(self, path: &str, shape: &[usize]) -> Dtype {
        let matrix = shape.len() >= 2 && shape.iter().product::<usize>() >= Q_MIN_VALUES;
        match self {
            Self::F32 => Dtype::F32,
            Self::F16 => Dtype::F16,
            Self::Int8 if matrix => Dtype::Q8,
            Self::Int6 if matrix => Dtype::Q6,
            Self::Int8Mlp6 if matrix && path.contains(".mlp.") => Dtype::Q6,
            Self::Int8Mlp6 if matrix => Dtype::Q8,
            Self::Int8 | Self::Int6 | Self::Int8Mlp6 => Dtype::F16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Dtype {
    F32,
    F16,
    Q8,
    Q6,
}

impl Dtype {
    /// Bytes of `n` values; `None` when the count does not fit in a u64. Counted in u64 on every
    /// target: a header may describe a tensor whose byte count overflows a 32-bit usize.
    fn bytes_for(self, n: u64) -> Option<u64> {
        let scales = || n.div_ceil(Q_BLOCK as u64).checked_mul(2);
        match self {
            Self::F32 => n.checked_mul(4),
            Self::F16 => n.checked_mul(2),
            Self::Q8 => scales()?.checked_add(n),
            Self::Q6 => scales()?.checked_add(n.div_ceil(4).checked_mul(3)?),
        }
    }

    /// The largest integer of a quantised type.
    fn levels(self) -> f32 {
        match self {
            Self::Q6 => 31.0,
            _ => 127.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    path: String,
    /// u64 as the header stores them, whatever this target's usize.
    shape: Vec<u64>,
    dtype: Dtype,
    /// From the start of the tensor bytes.
    offset: u64,
    /// Where the tensor's bytes lie in the whole file, set by [`Pack::from_bytes`] once checked.
    #[serde(skip)]
    span: std::ops::Range<usize>,
    /// The product of `shape`, set with `span`.
    #[serde(skip)]
    values: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PackHeader {
    format: u32,
    part: PackPart,
    storage: String,
    config: OvsegConfig,
    /// The text part's `tokenizer.json`; absent for the built-in uncased BERT one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokenizer: Option<String>,
    tensors: Vec<Entry>,
}

/// A decoded pack: its header and tensor bytes, not yet on a device.
pub struct Pack {
    header: PackHeader,
    /// The whole file (tensors at their entries' `span`).
    bytes: Vec<u8>,
    origin: String,
}

/// Whether `bytes` start like a weight pack.
pub fn is_pack(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Serialises one part of an inference model (momentum encoder and training heads are never
/// written). The text part carries the model's tokenizer (`TextTokenizer::stored_json`).
pub fn write_pack<B: Backend>(
    model: &OvSegmentor<B>,
    config: &OvsegConfig,
    part: PackPart,
    storage: Storage,
    tokenizer: Option<&str>,
) -> Result<Vec<u8>, OvsegError> {
    let mut tensors = Vec::new();
    let mut data = Vec::new();
    let mut problem = None;
    for_each_float_param(&model.clone().into_inference(), |path, shape, value| {
        if PackPart::of(path) != part || problem.is_some() {
            return;
        }
        match encode_tensor(path, shape, value(), storage, &mut data) {
            Ok(entry) => tensors.push(entry),
            Err(e) => problem = Some(e),
        }
    });
    if let Some(e) = problem {
        return Err(e);
    }
    let header = PackHeader {
        format: PACK_FORMAT,
        part,
        storage: storage.name().into(),
        config: config.clone(),
        tokenizer: (part == PackPart::Text)
            .then_some(tokenizer)
            .flatten()
            .map(str::to_string),
        tensors,
    };
    let json = serde_json::to_vec(&header).expect("pack header serialises");
    if json.len() > MAX_HEADER {
        return Err(OvsegError::Input(format!(
            "the {} pack's header would take {} bytes, over the limit of {MAX_HEADER}",
            part.name(),
            json.len()
        )));
    }
    let mut out = Vec::with_capacity(12 + json.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    checksum::seal(&mut out);
    Ok(out)
}

/// Appends one tensor's bytes to `data` and says where they are.
fn encode_tensor(
    path: &str,
    shape: Vec<usize>,
    value: TensorData,
    storage: Storage,
    data: &mut Vec<u8>,
) -> Result<Entry, OvsegError> {
    let values: Vec<f32> = value
        .convert::<f32>()
        .into_vec()
        .map_err(|e| OvsegError::Input(format!("{path}: {e:?}")))?;
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(OvsegError::Input(format!(
            "{path} holds {bad}: refusing to write a pack with non-finite weights"
        )));
    }
    let dtype = storage.dtype_for(path, &shape);
    let offset = data.len();
    encode(dtype, &values, data);
    Ok(Entry {
        path: path.to_string(),
        shape: shape.iter().map(|&d| d as u64).collect(),
        dtype,
        offset: offset as u64,
        span: offset..data.len(),
        values: values.len(),
    })
}

fn encode(dtype: Dtype, values: &[f32], out: &mut Vec<u8>) {
    match dtype {
        Dtype::F32 => values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        Dtype::F16 => values
            .iter()
            .for_each(|v| out.extend(f16::from_f32(*v).to_bits().to_le_bytes())),
        Dtype::Q8 | Dtype::Q6 => {
            let levels = dtype.levels();
            let scales: Vec<f16> = values
                .chunks(Q_BLOCK)
                .map(|block| f16::from_f32(block.iter().fold(0f32, |m, v| m.max(v.abs())) / levels))
                .collect();
            scales
                .iter()
                .for_each(|s| out.extend(s.to_bits().to_le_bytes()));
            // Quantised against the stored (f16-rounded) scale, so decoding is exact to it.
            let q = values
                .chunks(Q_BLOCK)
                .zip(&scales)
                .flat_map(|(block, scale)| {
                    let scale = scale.to_f32();
                    block.iter().map(move |v| {
                        if scale > 0.0 {
                            (v / scale).round().clamp(-levels, levels) as i8
                        } else {
                            0
                        }
                    })
                });
            if dtype == Dtype::Q8 {
                out.extend(q.map(|q| q as u8));
            } else {
                let q: Vec<i8> = q.collect();
                for four in q.chunks(4) {
                    let bits = (0..4).fold(0u32, |acc, k| {
                        let u = (*four.get(k).unwrap_or(&0) as i32 + 32) as u32;
                        acc | (u << (6 * k))
                    });
                    out.extend(&bits.to_le_bytes()[..3]);
                }
            }
        }
    }
}

impl Pack {
    /// Decodes a pack; `origin` names the file in errors.
    pub fn from_bytes(bytes: Vec<u8>, origin: &str) -> Result<Self, OvsegError> {
        let mut bytes = bytes;
        let sealed = checksum::open(&mut bytes, origin)?;
        let fail = |message: String| OvsegError::Checkpoint {
            path: origin.into(),
            message,
        };
        if !is_pack(&bytes) {
            return Err(fail(
                "not an ovseg weight pack (no OVSEGPAK signature)".into(),
            ));
        }
        let Some(len) = bytes.get(8..12) else {
            return Err(fail("truncated before the header".into()));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let data_start = 12usize.saturating_add(len);
        if len > MAX_HEADER || data_start > bytes.len() {
            return Err(fail(format!(
                "header of {len} bytes does not fit in the file ({} bytes): truncated?",
                bytes.len()
            )));
        }
        let mut header: PackHeader = serde_json::from_slice(&bytes[12..data_start])
            .map_err(|e| fail(format!("unreadable header: {e}")))?;
        if !(1..=PACK_FORMAT).contains(&header.format) {
            return Err(fail(format!(
                "pack format {} (this build reads 1 to {PACK_FORMAT})",
                header.format
            )));
        }
        if header.format >= 2 && sealed == Sealed::Absent {
            return Err(checksum::missing(origin));
        }
        header.config.validate().map_err(|e| fail(e.to_string()))?;
        // The tensor bytes stay where they are: a pack is tens of MB in a browser tab. Every
        // size below is counted in u64 and checked, so that a hostile header is an error on a
        // 32-bit target too.
        let data_len = (bytes.len() - data_start) as u64;
        let mut end = 0u64;
        for e in &mut header.tensors {
            let n = e
                .shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n > 0)
                .ok_or_else(|| fail(format!("{}: impossible shape {:?}", e.path, e.shape)))?;
            if n > MAX_TENSOR_VALUES {
                return Err(fail(format!(
                    "{}: shape {:?} has {n} values, over the limit of {MAX_TENSOR_VALUES} for one tensor",
                    e.path, e.shape
                )));
            }
            let stop = e
                .dtype
                .bytes_for(n)
                .and_then(|len| e.offset.checked_add(len));
            let Some(stop) = stop.filter(|&s| e.offset >= end && s <= data_len) else {
                return Err(fail(format!(
                    "{}: its bytes lie outside the file or overlap another tensor: truncated or corrupt",
                    e.path
                )));
            };
            end = stop;
            // Both within the file, which is in memory: they fit in a usize.
            let at = |x: u64| {
                usize::try_from(x)
                    .ok()
                    .and_then(|x| x.checked_add(data_start))
                    .ok_or_else(|| fail(format!("{}: offset {x} out of range", e.path)))
            };
            e.span = at(e.offset)?..at(stop)?;
            e.values = usize::try_from(n).map_err(|_| fail(format!("{}: too large", e.path)))?;
        }
        Ok(Self {
            header,
            bytes,
            origin: origin.into(),
        })
    }

    pub fn part(&self) -> PackPart {
        self.header.part
    }

    /// The `tokenizer.json` a text pack carries (`None`: the built-in uncased BERT one).
    pub fn tokenizer(&self) -> Option<&str> {
        self.header.tokenizer.as_deref()
    }

    pub fn config(&self) -> &OvsegConfig {
        &self.header.config
    }

    pub fn storage(&self) -> &str {
        &self.header.storage
    }

    fn fail(&self, message: String) -> OvsegError {
        OvsegError::Checkpoint {
            path: self.origin.clone(),
            message,
        }
    }

    /// The values of a checked entry ([`Pack::from_bytes`]).
    fn values(&self, e: &Entry) -> Vec<f32> {
        let n = e.values;
        let bytes = &self.bytes[e.span.clone()];
        match e.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            Dtype::Q8 | Dtype::Q6 => {
                let (scales, q) = bytes.split_at(2 * n.div_ceil(Q_BLOCK));
                let scale = |i: usize| {
                    let s = &scales[2 * (i / Q_BLOCK)..];
                    f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32()
                };
                if e.dtype == Dtype::Q8 {
                    q.iter()
                        .enumerate()
                        .map(|(i, v)| scale(i) * (*v as i8) as f32)
                        .collect()
                } else {
                    (0..n)
                        .map(|i| {
                            let b = &q[3 * (i / 4)..];
                            let bits = b[0] as u32 | (b[1] as u32) << 8 | (b[2] as u32) << 16;
                            let u = (bits >> (6 * (i % 4))) & 63;
                            scale(i) * (u as i32 - 32) as f32
                        })
                        .collect()
                }
            }
        }
    }

    /// The inference model of the image pack's configuration with the image part loaded; the
    /// text part stays unmaterialised (burn's lazy parameters) until [`Pack::load_into`] gives
    /// it weights, so it costs nothing before.
    pub fn init_model<B: Backend>(&self, device: &B::Device) -> Result<OvSegmentor<B>, OvsegError> {
        if self.part() != PackPart::Image {
            return Err(self.fail(format!(
                "a {} pack: the model is built from its image pack",
                self.part().name()
            )));
        }
        self.load_into(self.config().init_inference(device), self.config())
    }

    /// Replaces every parameter of this pack's part, checking that the pack was written for
    /// `config` and holds exactly the part's parameters with their shapes.
    pub fn load_into<B: Backend>(
        &self,
        model: OvSegmentor<B>,
        config: &OvsegConfig,
    ) -> Result<OvSegmentor<B>, OvsegError> {
        if self.config() != config {
            return Err(self.fail(
                "these weights were written for another model configuration than the loaded one"
                    .into(),
            ));
        }
        let entries: HashMap<&str, &Entry> = self
            .header
            .tensors
            .iter()
            .map(|e| (e.path.as_str(), e))
            .collect();
        let mut loader = PackReader {
            pack: self,
            entries,
            part: self.part(),
            path: Vec::new(),
            used: 0,
            problems: Vec::new(),
        };
        let model = model.map(&mut loader);
        if loader.used != self.header.tensors.len() {
            loader.problems.push(format!(
                "{} tensors the model does not have",
                self.header.tensors.len().saturating_sub(loader.used)
            ));
        }
        if !loader.problems.is_empty() {
            let shown: Vec<_> = loader.problems.iter().take(6).cloned().collect();
            return Err(self.fail(format!(
                "{} pack does not match the model: {}",
                self.part().name(),
                shown.join("; ")
            )));
        }
        Ok(model)
    }
}

struct PackReader<'a> {
    pack: &'a Pack,
    entries: HashMap<&'a str, &'a Entry>,
    part: PackPart,
    path: Vec<String>,
    used: usize,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for PackReader<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = self.path.join(".");
        if PackPart::of(&path) != self.part {
            return param;
        }
        let Some(entry) = self.entries.get(path.as_str()) else {
            self.problems.push(format!("{path} is missing"));
            return param;
        };
        let expected = param.lazy_shape().to_vec();
        if !entry
            .shape
            .iter()
            .copied()
            .eq(expected.iter().map(|&d| d as u64))
        {
            self.problems.push(format!(
                "{path}: file {:?}, model {expected:?}",
                entry.shape
            ));
            return param;
        }
        self.used += 1;
        let device = param.lazy_device();
        let tensor = Tensor::from_data(TensorData::new(self.pack.values(entry), expected), &device);
        // A fresh value under the same id; a lazy parameter is never initialised at random.
        Param::initialized(param.id, tensor)
    }
}

/// Bytes each part takes under `storage`, counted from the configuration alone.
pub fn part_sizes<B: Backend>(
    config: &OvsegConfig,
    storage: Storage,
    device: &B::Device,
) -> [(PackPart, usize, usize); 2] {
    let (mut image, mut text) = ((0, 0), (0, 0));
    let model = config.init_inference::<B>(device);
    for_each_float_param(&model, |path, shape, _| {
        let n: usize = shape.iter().product();
        let slot = match PackPart::of(path) {
            PackPart::Image => &mut image,
            PackPart::Text => &mut text,
        };
        let bytes = storage.dtype_for(path, &shape).bytes_for(n as u64);
        slot.0 += n;
        slot.1 += bytes
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(usize::MAX);
    });
    [
        (PackPart::Image, image.0, image.1),
        (PackPart::Text, text.0, text.1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// (path, value) of every float parameter, as the tests compare them.
    fn float_params(model: &OvSegmentor<NdArray>) -> Vec<(String, TensorData)> {
        let mut found = Vec::new();
        for_each_float_param(model, |path, _, value| {
            found.push((path.to_string(), value()))
        });
        found
    }

    fn tiny() -> OvsegConfig {
        let mut c = OvsegConfig::tiny();
        c.text.vocab_size = 100;
        c.proj_inner_dim = 64;
        c
    }

    /// The largest error of any tensor, relative to that tensor's largest magnitude.
    fn max_relative_error(a: Vec<(String, TensorData)>, b: Vec<(String, TensorData)>) -> f32 {
        assert_eq!(a.len(), b.len());
        a.into_iter()
            .zip(b)
            .map(|((pa, da), (pb, db))| {
                assert_eq!(pa, pb);
                let (x, y) = (da.to_vec::<f32>().unwrap(), db.to_vec::<f32>().unwrap());
                let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
                x.iter()
                    .zip(&y)
                    .fold(0f32, |m, (p, q)| m.max((p - q).abs()))
                    / scale
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn both_parts_rebuild_the_model() {
        let device = Default::default();
        let config = tiny();
        let model = config.init::<NdArray>(&device).into_inference();
        // Materialise the lazy parameters once, so every clone holds the same values.
        let _ = float_params(&model);
        // Half a step of each format, plus f16's rounding of values and scales.
        for (storage, tol) in [
            (Storage::F32, 0.0),
            (Storage::F16, 1e-3),
            (Storage::Int8, 0.5 / 127.0 + 1e-3),
            (Storage::Int6, 0.5 / 31.0 + 1e-3),
            (Storage::Int8Mlp6, 0.5 / 31.0 + 1e-3),
        ] {
            let image = write_pack(&model, &config, PackPart::Image, storage, None).unwrap();
            let text = write_pack(&model, &config, PackPart::Text, storage, None).unwrap();
            let image = Pack::from_bytes(image, "image.pack").unwrap();
            let text = Pack::from_bytes(text, "text.pack").unwrap();
            let back = image.init_model::<NdArray>(&device).unwrap();
            let back = text.load_into(back, &config).unwrap();
            let err = max_relative_error(float_params(&model), float_params(&back));
            assert!(err <= tol, "{storage:?}: {err}");
        }
    }

    #[test]
    fn image_pack_leaves_the_text_side_unmaterialised() {
        let device = Default::default();
        let config = tiny();
        let model = config.init::<NdArray>(&device);
        let bytes = write_pack(&model, &config, PackPart::Image, Storage::F16, None).unwrap();
        let back = Pack::from_bytes(bytes, "image.pack")
            .unwrap()
            .init_model::<NdArray>(&device)
            .unwrap();
        assert!(back.img_encoder.pos_embed.is_initialized());
        assert!(!back.text_projector.out.weight.is_initialized());
    }

    #[test]
    fn q8_and_q6_blocks_round_to_the_nearest_step() {
        let values: Vec<f32> = (0..201)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for dtype in [Dtype::Q8, Dtype::Q6] {
            let mut bytes = Vec::new();
            encode(dtype, &values, &mut bytes);
            assert_eq!(bytes.len() as u64, dtype.bytes_for(201).unwrap());
            let span = 0..bytes.len();
            let pack = Pack {
                header: PackHeader {
                    format: PACK_FORMAT,
                    part: PackPart::Image,
                    storage: "int8".into(),
                    config: tiny(),
                    tokenizer: None,
                    tensors: vec![],
                },
                bytes,
                origin: "mem".into(),
            };
            let entry = Entry {
                path: "x".into(),
                shape: vec![201],
                dtype,
                offset: 0,
                span,
                values: 201,
            };
            let back = pack.values(&entry);
            assert_eq!(back.len(), 201);
            for (block, got) in values.chunks(Q_BLOCK).zip(back.chunks(Q_BLOCK)) {
                let step = block.iter().fold(0f32, |m, v| m.max(v.abs())) / dtype.levels();
                for (v, g) in block.iter().zip(got) {
                    assert!(
                        (v - g).abs() <= step * 0.501 + 1e-6,
                        "{dtype:?}: {v} -> {g} (step {step})"
                    );
                }
            }
        }
    }

    #[test]
    fn damaged_packs_are_errors_naming_the_file() {
        let device = Default::default();
        let config = tiny();
        let model = config.init::<NdArray>(&device);
        let bytes = write_pack(&model, &config, PackPart::Image, Storage::Int8, None).unwrap();
        // Damage behind a valid checksum, as a hostile writer would make it.
        let resealed = |mut b: Vec<u8>| {
            b.truncate(b.len() - checksum::TRAILER_LEN);
            checksum::seal(&mut b);
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not a pack".to_vec(), "no OVSEGPAK signature"),
            (bytes[..10].to_vec(), "truncated"),
            (bytes[..bytes.len() - 1].to_vec(), "truncated"),
            (
                {
                    let mut b = bytes.clone();
                    b[bytes.len() / 2] ^= 1;
                    b
                },
                "checksum mismatch",
            ),
            (
                {
                    let mut b = bytes.clone();
                    b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
                    resealed(b)
                },
                "does not fit",
            ),
            (
                {
                    let mut b = bytes.clone();
                    b[14] = b'#';
                    resealed(b)
                },
                "unreadable header",
            ),
        ];
        for (bytes, expected) in cases {
            let e = Pack::from_bytes(bytes, "demo/image.ovsegpack")
                .err()
                .expect("an error")
                .to_string();
            assert!(
                e.contains("demo/image.ovsegpack") && e.contains(expected),
                "{e}"
            );
        }
        let text = write_pack(&model, &config, PackPart::Text, Storage::F16, None).unwrap();
        let e = Pack::from_bytes(text, "text.ovsegpack")
            .unwrap()
            .init_model::<NdArray>(&device)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("image pack"), "{e}");
        let mut other = config.clone();
        other.output_dim += 8;
        let pack = Pack::from_bytes(bytes, "image.ovsegpack").unwrap();
        let e = pack
            .load_into(other.init_inference::<NdArray>(&device), &other)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("another model configuration"), "{e}");
    }

    /// A pack made by hand: `tensors` as the header lists them, `data` bytes after it.
    fn hand_made(config: serde_json::Value, tensors: serde_json::Value, data: usize) -> Vec<u8> {
        let header = serde_json::json!({
            "format": PACK_FORMAT, "part": "image", "storage": "f32",
            "config": config, "tensors": tensors,
        });
        let json = serde_json::to_vec(&header).unwrap();
        let mut out = MAGIC.to_vec();
        out.extend((json.len() as u32).to_le_bytes());
        out.extend(json);
        out.extend(vec![0u8; data]);
        checksum::seal(&mut out);
        out
    }

    /// Packs written before the checksum trailer (format 1) still load; a format 2 pack without
    /// its trailer is refused as truncated.
    #[test]
    fn format_1_packs_load_without_a_trailer() {
        let device = Default::default();
        let config = tiny();
        let model = config.init::<NdArray>(&device);
        let sealed = write_pack(&model, &config, PackPart::Image, Storage::F16, None).unwrap();
        let unsealed = sealed[..sealed.len() - checksum::TRAILER_LEN].to_vec();
        let e = Pack::from_bytes(unsealed.clone(), "new.ovsegpack")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "checkpoint new.ovsegpack: its checksum trailer is missing: the file is truncated or damaged"
        );
        let mut old = unsealed;
        let key = b"\"format\":2";
        let at = old.windows(key.len()).position(|w| w == key).unwrap();
        old[at + key.len() - 1] = b'1';
        let back = Pack::from_bytes(old, "old.ovsegpack").unwrap();
        let rebuilt = back.init_model::<NdArray>(&device).unwrap();
        let again = Pack::from_bytes(sealed, "new.ovsegpack").unwrap();
        let expected = again.init_model::<NdArray>(&device).unwrap();
        let image = |m: &OvSegmentor<NdArray>| -> Vec<_> {
            let params = float_params(m).into_iter();
            params
                .filter(|(p, _)| PackPart::of(p) == PackPart::Image)
                .collect()
        };
        assert_eq!(max_relative_error(image(&rebuilt), image(&expected)), 0.0);
    }

    /// Sizes in a header are counted in u64 and checked: overflowing shapes, offsets and byte
    /// counts (2^30 f32 values overflow a 32-bit usize byte count) and absurd configurations
    /// are errors naming the file, never a panic or an allocation.
    #[test]
    fn hostile_headers_are_errors() {
        let config = serde_json::to_value(tiny()).unwrap();
        let tensor = |shape: serde_json::Value, dtype: &str, offset: u64| {
            serde_json::json!([{"path": "img_encoder.pos_embed", "shape": shape,
                                "dtype": dtype, "offset": offset}])
        };
        let max = u64::MAX;
        let cases = [
            (
                tensor(serde_json::json!([max, 2]), "f32", 0),
                "impossible shape",
            ),
            (
                tensor(serde_json::json!([0, 4]), "f32", 0),
                "impossible shape",
            ),
            (
                tensor(serde_json::json!([1u64 << 30]), "f32", 0),
                "has 1073741824 values, over the limit of 268435456",
            ),
            (
                tensor(serde_json::json!([1u64 << 16, 1u64 << 16]), "q6", 0),
                "has 4294967296 values",
            ),
            (
                tensor(serde_json::json!([4]), "f32", max - 3),
                "outside the file",
            ),
            (
                tensor(serde_json::json!([4]), "f16", max),
                "outside the file",
            ),
            (
                tensor(serde_json::json!([1u64 << 28]), "f32", 0),
                "outside the file",
            ),
            (
                tensor(serde_json::json!([17]), "f32", 0),
                "outside the file",
            ),
        ];
        for (tensors, expected) in cases {
            let bytes = hand_made(config.clone(), tensors, 64);
            let e = Pack::from_bytes(bytes, "evil/image.ovsegpack")
                .err()
                .expect("an error")
                .to_string();
            assert!(
                e.starts_with("checkpoint evil/image.ovsegpack: img_encoder.pos_embed: ")
                    && e.contains(expected),
                "{expected}: {e}"
            );
        }
        // Two tensors over the same bytes.
        let both = serde_json::json!([
            {"path": "a", "shape": [4], "dtype": "f32", "offset": 0},
            {"path": "b", "shape": [4], "dtype": "f32", "offset": 8},
        ]);
        let e = Pack::from_bytes(hand_made(config.clone(), both, 64), "x.ovsegpack")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("b: its bytes") && e.contains("overlap"), "{e}");
        // Within its 64 bytes: accepted (the shape is checked against the model at loading).
        let fits = tensor(serde_json::json!([16]), "f32", 0);
        let pack = Pack::from_bytes(hand_made(config.clone(), fits, 64), "ok.ovsegpack").unwrap();
        assert_eq!(pack.header.tensors[0].span.len(), 64);
        // An absurd configuration in the header, refused before anything is built from it.
        let mut huge = config;
        huge["image"]["embed_dim"] = serde_json::json!(1u64 << 40);
        let e = Pack::from_bytes(
            hand_made(huge, serde_json::json!([]), 0),
            "evil/image.ovsegpack",
        )
        .err()
        .unwrap()
        .to_string();
        assert_eq!(
            e,
            "checkpoint evil/image.ovsegpack: invalid model configuration: image.embed_dim 1099511627776 is out of bounds (2..=8192)"
        );
    }

    #[test]
    fn vits_minilm_sizes() {
        let device = Default::default();
        let config = OvsegConfig::vits_minilm();
        let sizes = |storage| part_sizes::<NdArray>(&config, storage, &device);
        let [(_, image_n, image_f16), (_, text_n, text_f16)] = sizes(Storage::F16);
        let [(_, _, image_q8), _] = sizes(Storage::Int8);
        let [(_, _, image_q6), _] = sizes(Storage::Int6);
        let [(_, _, image_mixed), _] = sizes(Storage::Int8Mlp6);
        println!(
            "vits-minilm image part {image_n} values: f16 {image_f16} B, int8 {image_q8} B, int8-mlp6 {image_mixed} B, int6 {image_q6} B; text part {text_n} values, f16 {text_f16} B"
        );
        assert!(image_q6 < image_mixed && image_mixed < image_q8);
        assert!(image_q8 < image_f16 * 53 / 100, "{image_q8} vs {image_f16}");
        assert!(image_q6 < image_q8 * 80 / 100, "{image_q6} vs {image_q8}");
    }
}
