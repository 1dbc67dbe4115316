use std::collections::BTreeMap;
use std::path::Path;

use crate::error::OvsegError;

/// Named tensors read from a file, handed out as f32.
pub trait TensorSource {
    fn keys(&self) -> Vec<String>;
    fn shape(&self, key: &str) -> Option<Vec<usize>>;
    fn read_f32(&self, key: &str) -> Result<Vec<f32>, OvsegError>;
}

fn checkpoint_error(path: &Path, message: impl ToString) -> OvsegError {
    OvsegError::Checkpoint {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// A PyTorch `.pth` (zip) whose `model` entry is the state dict. Other entries, including pickled
/// Python objects (optimizer state, an OmegaConf config), are never constructed.
pub struct PthSource {
    path: std::path::PathBuf,
    tensors: candle_core::pickle::PthTensors,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl PthSource {
    pub fn open(path: &Path) -> Result<Self, OvsegError> {
        if !path.is_file() {
            return Err(checkpoint_error(path, "no such file"));
        }
        let read = |key| candle_core::pickle::PthTensors::new(path, key);
        // Released checkpoints hold the state dict under `model`; a bare state dict works too.
        let tensors = match read(Some("model")) {
            Ok(t) if !t.tensor_infos().is_empty() => t,
            _ => read(None)
                .map_err(|e| checkpoint_error(path, format!("not a PyTorch checkpoint: {e}")))?,
        };
        if tensors.tensor_infos().is_empty() {
            return Err(checkpoint_error(
                path,
                "holds no tensors (expected a state dict under 'model')",
            ));
        }
        let shapes = tensors
            .tensor_infos()
            .iter()
            .map(|(k, info)| (k.clone(), info.layout.shape().dims().to_vec()))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            shapes,
        })
    }
}

impl TensorSource for PthSource {
    fn keys(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.shapes.get(key).cloned()
    }

    fn read_f32(&self, key: &str) -> Result<Vec<f32>, OvsegError> {
        let tensor = self
            .tensors
            .get(key)
            .map_err(|e| checkpoint_error(&self.path, format!("{key}: {e}")))?
            .ok_or_else(|| checkpoint_error(&self.path, format!("{key}: missing")))?;
        tensor
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| checkpoint_error(&self.path, format!("{key}: {e}")))
    }
}

/// A safetensors file (HuggingFace weights), f32, f16 or bf16.
pub struct SafetensorsSource {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl SafetensorsSource {
    pub fn open(path: &Path) -> Result<Self, OvsegError> {
        let bytes = std::fs::read(path).map_err(|e| checkpoint_error(path, e))?;
        let shapes = {
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| checkpoint_error(path, format!("not a safetensors file: {e}")))?;
            st.tensors()
                .into_iter()
                .map(|(k, v)| (k, v.shape().to_vec()))
                .collect()
        };
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            shapes,
        })
    }
}

impl TensorSource for SafetensorsSource {
    fn keys(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.shapes.get(key).cloned()
    }

    fn read_f32(&self, key: &str) -> Result<Vec<f32>, OvsegError> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes)
            .map_err(|e| checkpoint_error(&self.path, e))?;
        let view = st
            .tensor(key)
            .map_err(|e| checkpoint_error(&self.path, format!("{key}: {e}")))?;
        let data = view.data();
        use safetensors::Dtype;
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            other => {
                return Err(checkpoint_error(
                    &self.path,
                    format!("{key}: unsupported dtype {other:?}"),
                ))
            }
        };
        Ok(values)
    }
}

/// IEEE half -> single precision.
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}
