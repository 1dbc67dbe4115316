use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Mutex;

use zip::ZipArchive;

use super::pickle::{self, TensorRef};
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

/// A PyTorch `.pth` (the zip `torch.save` writes) whose `model` entry is the state dict; a bare
/// state dict works too. The pickle is run by our own bounded reader ([`super::pickle`]): other
/// entries, including pickled Python objects (optimizer state, an OmegaConf config), are never
/// constructed. Tensor data is read from `<archive>/data/<key>` when asked for, each entry whole
/// so that its CRC-32 is checked.
pub struct PthSource {
    path: std::path::PathBuf,
    zip: Mutex<ZipArchive<BufReader<File>>>,
    file_len: u64,
    /// `<archive>/`, the folder holding `data.pkl` and `data/`.
    dir: String,
    tensors: BTreeMap<String, TensorRef>,
}

impl PthSource {
    pub fn open(path: &Path) -> Result<Self, OvsegError> {
        if !path.is_file() {
            return Err(checkpoint_error(path, "no such file"));
        }
        let fail = |message: String| checkpoint_error(path, message);
        let file = File::open(path).map_err(|e| fail(e.to_string()))?;
        let file_len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
        let mut zip = ZipArchive::new(BufReader::new(file)).map_err(|e| {
            fail(format!(
                "not a PyTorch checkpoint (not a zip archive: {e}; the legacy pre-1.6 torch.save \
                 format is not supported)"
            ))
        })?;
        let pickles: Vec<String> = zip
            .file_names()
            .filter(|n| n.ends_with("/data.pkl"))
            .map(str::to_string)
            .collect();
        let pickle_name = match pickles.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(fail(
                    "not a PyTorch checkpoint (no data.pkl in the zip)".into(),
                ))
            }
            _ => {
                return Err(fail(format!(
                    "not a PyTorch checkpoint ({} data.pkl entries: {})",
                    pickles.len(),
                    pickles.join(", ")
                )))
            }
        };
        let dir = pickle_name[..pickle_name.len() - "data.pkl".len()].to_string();
        let byteorder = format!("{dir}byteorder");
        if zip.index_for_name(&byteorder).is_some() {
            let order = read_entry(&mut zip, &byteorder, file_len, 64).map_err(fail)?;
            if order != b"little" {
                return Err(fail(format!(
                    "tensors stored {} (only little-endian checkpoints are supported)",
                    String::from_utf8_lossy(&order)
                )));
            }
        }
        let limits = pickle::Limits::default();
        let bytes =
            read_entry(&mut zip, &pickle_name, file_len, limits.max_input as u64).map_err(fail)?;
        let tensors = pickle::parse(&bytes, &limits)
            .and_then(|p| p.state_dict())
            .map_err(|e| fail(format!("{pickle_name}: {e}")))?;
        if tensors.is_empty() {
            return Err(fail(
                "holds no tensors (expected a state dict under 'model')".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            zip: Mutex::new(zip),
            file_len,
            dir,
            tensors,
        })
    }
}

/// Reads one stored zip entry whole (the zip reader checks its CRC-32 on reaching the end).
/// Its declared size is checked against the file's size and `max` before anything is allocated.
fn read_entry(
    zip: &mut ZipArchive<BufReader<File>>,
    name: &str,
    file_len: u64,
    max: u64,
) -> Result<Vec<u8>, String> {
    let mut entry = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(format!(
            "{name}: compressed ({}); torch.save stores entries uncompressed",
            entry.compression()
        ));
    }
    let size = entry.size();
    if size > file_len || entry.compressed_size() > file_len {
        return Err(format!(
            "{name}: claims {size} bytes, more than the whole file ({file_len} bytes)"
        ));
    }
    if size > max {
        return Err(format!("{name}: {size} bytes, more than the {max} allowed"));
    }
    let mut data = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut data).map_err(|e| {
        if e.to_string().contains("checksum") {
            format!("{name}: CRC-32 mismatch, the file is damaged ({e})")
        } else {
            format!("{name}: {e}")
        }
    })?;
    if data.len() as u64 != size {
        return Err(format!(
            "{name}: holds {} bytes, its header says {size}",
            data.len()
        ));
    }
    Ok(data)
}

impl TensorSource for PthSource {
    fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn shape(&self, key: &str) -> Option<Vec<usize>> {
        self.tensors.get(key).map(|t| t.shape.clone())
    }

    fn read_f32(&self, key: &str) -> Result<Vec<f32>, OvsegError> {
        let fail = |message: String| checkpoint_error(&self.path, format!("{key}: {message}"));
        let tensor = self
            .tensors
            .get(key)
            .ok_or_else(|| fail("missing".into()))?;
        let name = format!("{}data/{}", self.dir, tensor.storage_key);
        let bytes = {
            let mut zip = self.zip.lock().unwrap_or_else(|e| e.into_inner());
            read_entry(&mut zip, &name, self.file_len, self.file_len).map_err(fail)?
        };
        tensor.read_f32(&bytes).map_err(fail)
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
pub(super) fn half_to_f32(h: u16) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The reference fixtures (`$OVSEG_FIXTURES`, else `../shared/fixtures` beside the
    /// repository); `None` (the test is skipped) when absent.
    fn fixture(name: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("OVSEG_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
            });
        let path = dir.join(name).join("checkpoint.pth");
        if !path.is_file() {
            eprintln!("skipped: no fixture at {}", path.display());
            return None;
        }
        Some(path)
    }

    /// A scratch copy of `bytes`, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let path =
                std::env::temp_dir().join(format!("ovseg-pth-{}-{name}.pth", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn message(e: OvsegError) -> String {
        e.to_string()
    }

    /// FNV-1a over every key, shape and value bit pattern, in key order.
    fn digest(source: &PthSource) -> (usize, usize, u64) {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        };
        let mut elements = 0;
        let keys = source.keys();
        for key in &keys {
            eat(key.as_bytes());
            for d in source.shape(key).unwrap() {
                eat(&(d as u64).to_le_bytes());
            }
            let values = source.read_f32(key).unwrap();
            elements += values.len();
            for v in values {
                eat(&v.to_bits().to_le_bytes());
            }
        }
        (keys.len(), elements, h)
    }

    #[test]
    fn the_reference_checkpoints_load() {
        // Keys, element counts and digests of every value, recorded when this reader was checked
        // against candle's `PthTensors` (identical keys, shapes and f32 bit patterns).
        for (name, expected) in [
            ("reference-tiny", (300, 5_361_485, 11669375052610255311)),
            ("reference-roberta", (298, 3_830_029, 2877839421612160724)),
        ] {
            let Some(path) = fixture(name) else { return };
            let source = PthSource::open(&path).unwrap();
            assert_eq!(digest(&source), expected, "{name}");
            assert_eq!(source.shape("img_encoder.pos_embed").unwrap()[0], 196);
            assert!(source
                .keys()
                .iter()
                .any(|k| k.ends_with("num_batches_tracked")));
        }
    }

    /// Where entry `name`'s data starts in the zip `bytes`.
    fn data_start(bytes: &[u8], name: &str) -> usize {
        let mut zip = ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let entry = zip.by_name(name).unwrap();
        entry.data_start().unwrap() as usize
    }

    /// The offset of entry `name`'s central directory record in the zip `bytes`.
    fn central_record(bytes: &[u8], name: &str) -> usize {
        (0..bytes.len() - 46)
            .find(|&at| {
                bytes[at..at + 4] == [0x50, 0x4b, 0x01, 0x02] && {
                    let len = u16::from_le_bytes([bytes[at + 28], bytes[at + 29]]) as usize;
                    bytes.get(at + 46..at + 46 + len) == Some(name.as_bytes())
                }
            })
            .unwrap()
    }

    /// A key whose tensor lives in storage `storage`.
    fn key_on(source: &PthSource, storage: &str) -> String {
        let (key, _) = source
            .tensors
            .iter()
            .find(|(_, t)| t.storage_key == storage)
            .unwrap();
        key.clone()
    }

    #[test]
    fn a_flipped_byte_fails_the_crc_check() {
        let Some(path) = fixture("reference-tiny") else {
            return;
        };
        let valid = std::fs::read(&path).unwrap();
        // In a tensor's data: the pickle still opens, that tensor is refused, others read.
        let mut bytes = valid.clone();
        let at = data_start(&bytes, "checkpoint/data/3") + 1000;
        bytes[at] ^= 0x10;
        let copy = Scratch::new("flipped-data", &bytes);
        let source = PthSource::open(&copy.0).unwrap();
        let e = message(source.read_f32(&key_on(&source, "3")).unwrap_err());
        assert!(
            e.contains("ovseg-pth-")
                && e.contains("checkpoint/data/3: CRC-32 mismatch, the file is damaged"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        assert!(source.read_f32(&key_on(&source, "2")).is_ok());
        // In the pickle: the checkpoint does not open.
        let mut bytes = valid.clone();
        let at = data_start(&bytes, "checkpoint/data.pkl") + 500;
        bytes[at] ^= 0x01;
        let copy = Scratch::new("flipped-pickle", &bytes);
        let e = message(PthSource::open(&copy.0).err().unwrap());
        assert!(e.contains("checkpoint/data.pkl: CRC-32 mismatch"), "{e}");
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let Some(path) = fixture("reference-tiny") else {
            return;
        };
        let valid = std::fs::read(&path).unwrap();
        for end in [
            0,
            1,
            100,
            valid.len() / 2,
            valid.len() - 23,
            valid.len() - 1,
        ] {
            let copy = Scratch::new("truncated", &valid[..end]);
            let e = message(PthSource::open(&copy.0).err().unwrap());
            assert!(
                e.contains("not a PyTorch checkpoint (not a zip archive"),
                "{end}: {e}"
            );
        }
        let copy = Scratch::new("text", b"hello");
        let e = message(PthSource::open(&copy.0).err().unwrap());
        assert!(e.contains("not a zip archive"), "{e}");
        let e = message(
            PthSource::open(Path::new("/nonexistent/x.pth"))
                .err()
                .unwrap(),
        );
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn an_entry_claiming_a_huge_size_is_refused_before_allocating() {
        let Some(path) = fixture("reference-tiny") else {
            return;
        };
        let valid = std::fs::read(&path).unwrap();
        let claim = |bytes: &mut Vec<u8>, name: &str| {
            let at = central_record(bytes, name);
            let huge = 0xffff_ff00u32.to_le_bytes();
            bytes[at + 20..at + 24].copy_from_slice(&huge); // compressed size
            bytes[at + 24..at + 28].copy_from_slice(&huge); // uncompressed size
        };
        // A tensor's storage.
        let mut bytes = valid.clone();
        claim(&mut bytes, "checkpoint/data/3");
        let copy = Scratch::new("huge-data", &bytes);
        let source = PthSource::open(&copy.0).unwrap();
        let e = message(source.read_f32(&key_on(&source, "3")).unwrap_err());
        assert!(
            e.contains("checkpoint/data/3: claims 4294967040 bytes, more than the whole file"),
            "{e}"
        );
        // The pickle.
        let mut bytes = valid.clone();
        claim(&mut bytes, "checkpoint/data.pkl");
        let copy = Scratch::new("huge-pickle", &bytes);
        let e = message(PthSource::open(&copy.0).err().unwrap());
        assert!(
            e.contains("checkpoint/data.pkl: claims 4294967040 bytes, more than the whole file"),
            "{e}"
        );
    }

    /// Fuzz target for the pickle reader: damaged copies of a real checkpoint's `data.pkl`
    /// (past the zip's CRC, which would otherwise catch them first) end in an error or a
    /// state dict, never a panic.
    #[test]
    fn damaged_pickles_never_panic() {
        let Some(path) = fixture("reference-tiny") else {
            return;
        };
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut zip = ZipArchive::new(BufReader::new(file)).unwrap();
        let valid = read_entry(&mut zip, "checkpoint/data.pkl", len, u64::MAX).unwrap();
        let limits = pickle::Limits::default();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |below: usize| {
            // xorshift64*: enough spread for choosing damages, no dependency.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below.max(1)
        };
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let mut panics = 0;
        let (mut opened, cases) = (0, 1000);
        for _ in 0..cases {
            let mut bytes = valid.clone();
            for _ in 0..1 + next(4) {
                let at = next(bytes.len());
                match next(4) {
                    0 => bytes[at] ^= 1 << next(8),
                    1 => bytes[at] = next(256) as u8,
                    2 => bytes.truncate(at.max(1)),
                    _ => {
                        let extra: Vec<u8> = (0..1 + next(32)).map(|_| next(256) as u8).collect();
                        bytes.splice(at..at, extra);
                    }
                }
            }
            let run = std::panic::catch_unwind(|| {
                pickle::parse(&bytes, &limits)
                    .and_then(|p| p.state_dict())
                    .is_ok()
            });
            match run {
                Ok(ok) => opened += ok as usize,
                Err(_) => panics += 1,
            }
        }
        std::panic::set_hook(previous);
        assert_eq!(panics, 0, "{panics} of {cases} damaged pickles panicked");
        // Most damages land in tensor names or skipped entries and still read.
        assert!(opened > 0 && opened < cases, "{opened} of {cases} opened");
    }
}
