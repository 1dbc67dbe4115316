//! Which kind of model file a file is, decided here once for every front end: the command line
//! (`trainer/src/model_io.rs`), the page's engine (`web/src/engine.rs`) and, through the wasm
//! function `model_file_kind`, the page's file chooser.
//!
//! | kind | how it begins | what it holds |
//! |---|---|---|
//! | [`ModelFile::Model`] | a MessagePack map whose first key is `metadata` (burn's named record) | the whole model, any file name (`ovseg convert`, `ovseg train`) |
//! | [`ModelFile::ImagePack`] | `OVSEGPAK`, a header with `"part":"image"` | `ovseg export-web`'s `image.ovsegpack`: enough to segment with given class embeddings |
//! | [`ModelFile::TextPack`] | `OVSEGPAK`, a header with `"part":"text"` | its `text.ovsegpack`: the text encoder and tokenizer, added to the image pack |
//! | [`ModelFile::Checkpoint`] | `PK` (a zip) | a released PyTorch `.pth`, read with a configuration (feature `import`) |
//!
//! A model is built from a model file or an image pack ([`open_model`]); a text pack is only
//! ever added to an image pack's model ([`TextPack::attach`]).

use burn::prelude::Backend;
use thiserror::Error;

use crate::checksum;
use crate::config::OvsegConfig;
use crate::error::OvsegError;
use crate::model::OvSegmentor;
use crate::pack::{Pack, PackPart, MAGIC as PACK_MAGIC};
use crate::record::model_from_bytes;

/// File names of the two parts `ovseg export-web` writes.
pub const IMAGE_PACK: &str = "image.ovsegpack";
pub const TEXT_PACK: &str = "text.ovsegpack";

/// Bytes of a file's beginning [`ModelFile::detect`] is given at most: every kind is known from
/// its first few dozen bytes (a pack's part follows its format at the header's start).
pub const DETECT_BYTES: usize = 1 << 16;

/// The first key of burn's named MessagePack record, as a MessagePack string.
const RECORD_KEY: &[u8] = b"\xa8metadata";

/// The kinds of model file ovseg reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFile {
    /// An ovseg model file (`.mpk` or any name).
    Model,
    /// The image part of a web export.
    ImagePack,
    /// The text part of a web export.
    TextPack,
    /// A released PyTorch checkpoint (`.pth`), which needs its model configuration.
    Checkpoint,
}

/// Why a file's beginning is none of the [`ModelFile`] kinds, in one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct UnknownModelFile(pub String);

impl UnknownModelFile {
    /// The error naming the file it came from.
    pub fn at(self, origin: &str) -> OvsegError {
        OvsegError::Checkpoint {
            path: origin.into(),
            message: self.0,
        }
    }
}

impl ModelFile {
    /// The kind of the file `prefix` begins (up to [`DETECT_BYTES`] of it; the whole file is
    /// fine too). Looks at the beginning only: the file's checksum and contents are checked by
    /// the reader of its kind.
    pub fn detect(prefix: &[u8]) -> Result<Self, UnknownModelFile> {
        let unknown = |m: String| Err(UnknownModelFile(m));
        match prefix {
            [] => unknown("an empty file, not an ovseg model file".into()),
            p if p.starts_with(PACK_MAGIC) => pack_kind(p),
            p if PACK_MAGIC.starts_with(p) => unknown(format!(
                "a weight pack cut short after {} bytes (truncated)",
                p.len()
            )),
            [b'P', b'K', ..] => Ok(Self::Checkpoint),
            // burn's named record: a MessagePack map (fixmap, map16, map32) whose first key is
            // "metadata".
            [0x80..=0x8f, rest @ ..] | [0xde, _, _, rest @ ..] | [0xdf, _, _, _, _, rest @ ..]
                if rest.starts_with(RECORD_KEY) =>
            {
                Ok(Self::Model)
            }
            p @ [0x80..=0x8f, rest @ ..] if RECORD_KEY.starts_with(rest) => unknown(format!(
                "an ovseg model file cut short after {} bytes (truncated)",
                p.len()
            )),
            p => unknown(format!(
                "not an ovseg model file, web weight pack or PyTorch checkpoint ({})",
                describe_start(p)
            )),
        }
    }

    /// The kind's name for scripts: `model`, `image-pack`, `text-pack` or `checkpoint`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::ImagePack => "image-pack",
            Self::TextPack => "text-pack",
            Self::Checkpoint => "checkpoint",
        }
    }

    /// The kind in words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Model => "an ovseg model file",
            Self::ImagePack => "the image part of a web export",
            Self::TextPack => "the text part of a web export",
            Self::Checkpoint => "a PyTorch checkpoint",
        }
    }
}

/// A weight pack's part, from `OVSEGPAK`, the u32 header length and the header's start.
fn pack_kind(prefix: &[u8]) -> Result<ModelFile, UnknownModelFile> {
    let unknown = |m: String| Err(UnknownModelFile(m));
    let Some(len) = prefix.get(8..12) else {
        return unknown("a weight pack cut short before its header (truncated)".into());
    };
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    let end = prefix.len().min(12usize.saturating_add(len));
    let header = &prefix[12..end];
    let key = b"\"part\":";
    let Some(at) = header.windows(key.len()).position(|w| w == key) else {
        return unknown(if end == prefix.len() && end < 12 + len {
            format!(
                "a weight pack whose first {} bytes do not name its part (truncated?)",
                prefix.len()
            )
        } else {
            "a weight pack whose header names no part".into()
        });
    };
    let value = header[at + key.len()..].trim_ascii_start();
    if value.starts_with(b"\"image\"") {
        Ok(ModelFile::ImagePack)
    } else if value.starts_with(b"\"text\"") {
        Ok(ModelFile::TextPack)
    } else {
        let shown: String = String::from_utf8_lossy(value).chars().take(12).collect();
        unknown(format!(
            "a weight pack of an unknown part ({shown}...; image or text)"
        ))
    }
}

/// The first bytes of an unknown file, for its error: text quoted, anything else in hex.
fn describe_start(prefix: &[u8]) -> String {
    let head = &prefix[..prefix.len().min(8)];
    if head.first() == Some(&b'{') {
        return "it begins with '{': JSON, such as a configuration or tokenizer, not weights"
            .into();
    }
    if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return format!("it begins with '{}'", String::from_utf8_lossy(head));
    }
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    format!("it begins with the bytes {}", hex.join(" "))
}

/// A model built from a model file or an image pack.
pub struct OpenedModel<B: Backend> {
    pub model: OvSegmentor<B>,
    pub config: OvsegConfig,
    /// The `tokenizer.json` stored with it (`None`: the built-in uncased BERT one, or an image
    /// pack, whose text pack carries it).
    pub tokenizer: Option<String>,
    /// [`ModelFile::Model`] or [`ModelFile::ImagePack`].
    pub kind: ModelFile,
}

impl<B: Backend> OpenedModel<B> {
    /// Whether the text encoder has weights (false for an image pack until
    /// [`TextPack::attach`]).
    pub fn has_text(&self) -> bool {
        self.kind == ModelFile::Model
    }
}

/// Builds the model of a whole model file or image pack; `origin` names the file in errors.
/// A text pack or a checkpoint is refused with what to do instead. A file of no known kind is
/// checked for damage first, so a flipped byte is reported as such.
pub fn open_model<B: Backend>(
    bytes: Vec<u8>,
    origin: &str,
    device: &B::Device,
) -> Result<OpenedModel<B>, OvsegError> {
    let kind = detect_whole(&bytes, origin)?;
    let refuse = |what: &str| {
        Err(OvsegError::Checkpoint {
            path: origin.into(),
            message: format!("{}: {what}", kind.describe()),
        })
    };
    let (model, config, tokenizer) = match kind {
        ModelFile::Model => {
            let (model, manifest) = model_from_bytes::<B>(bytes, origin, device)?;
            (model, manifest.config, manifest.tokenizer)
        }
        ModelFile::ImagePack => {
            let pack = Pack::from_bytes(bytes, origin)?;
            (pack.init_model::<B>(device)?, pack.config().clone(), None)
        }
        ModelFile::TextPack => {
            return refuse(&format!(
                "the model is built from its {IMAGE_PACK}, to which this one is added"
            ))
        }
        ModelFile::Checkpoint => {
            return refuse("convert it first (ovseg convert --checkpoint .. --config ..)")
        }
    };
    Ok(OpenedModel {
        model,
        config,
        tokenizer,
        kind,
    })
}

/// [`ModelFile::detect`] of a whole file, a damaged one reported as damaged.
fn detect_whole(bytes: &[u8], origin: &str) -> Result<ModelFile, OvsegError> {
    ModelFile::detect(bytes).or_else(|e| {
        checksum::check(bytes, origin)?;
        Err(e.at(origin))
    })
}

/// The text part of a web export, checked, ready to be added to its image pack's model.
pub struct TextPack {
    pack: Pack,
}

impl TextPack {
    /// Reads a whole text pack; any other kind of file is refused naming what it is.
    pub fn from_bytes(bytes: Vec<u8>, origin: &str) -> Result<Self, OvsegError> {
        let kind = detect_whole(&bytes, origin)?;
        if kind != ModelFile::TextPack {
            return Err(OvsegError::Checkpoint {
                path: origin.into(),
                message: format!("{}, not its text part ({TEXT_PACK})", kind.describe()),
            });
        }
        let pack = Pack::from_bytes(bytes, origin)?;
        debug_assert_eq!(pack.part(), PackPart::Text);
        Ok(Self { pack })
    }

    /// The `tokenizer.json` the pack carries (`None`: the built-in uncased BERT one).
    pub fn tokenizer(&self) -> Option<&str> {
        self.pack.tokenizer()
    }

    /// The image pack's model (of configuration `config`) with the text encoder's weights.
    pub fn attach<B: Backend>(
        &self,
        model: OvSegmentor<B>,
        config: &OvsegConfig,
    ) -> Result<OvSegmentor<B>, OvsegError> {
        self.pack.load_into(model, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{write_pack, Storage};
    use crate::record::{model_to_bytes, Precision};
    use burn::backend::NdArray;

    fn tiny() -> OvsegConfig {
        let mut c = OvsegConfig::tiny();
        c.text.vocab_size = 100;
        c.proj_inner_dim = 64;
        c
    }

    /// A model file, an image pack and a text pack of the tiny model, as ovseg writes them.
    fn files() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let config = tiny();
        let model = config.init::<NdArray>(&Default::default()).into_inference();
        let image = write_pack(&model, &config, PackPart::Image, Storage::F16, None).unwrap();
        let text = write_pack(&model, &config, PackPart::Text, Storage::F16, None).unwrap();
        let whole = model_to_bytes(model, &config, None, Precision::Half).unwrap();
        (whole, image, text)
    }

    #[test]
    fn detects_every_kind_from_its_first_bytes() {
        let (whole, image, text) = files();
        for (bytes, kind) in [
            (&whole, ModelFile::Model),
            (&image, ModelFile::ImagePack),
            (&text, ModelFile::TextPack),
        ] {
            assert_eq!(ModelFile::detect(bytes), Ok(kind));
            assert_eq!(ModelFile::detect(&bytes[..64]), Ok(kind));
        }
        // A zip's local file header, as every .pth begins.
        let pth = b"PK\x03\x04\x14\x00\x00\x00\x08\x00";
        assert_eq!(ModelFile::detect(pth), Ok(ModelFile::Checkpoint));
        assert_eq!(ModelFile::TextPack.name(), "text-pack");
        assert_eq!(&whole[..10], b"\x83\xa8metadata");
    }

    #[test]
    fn unknown_and_truncated_files_are_one_line_errors() {
        let (_, image, _) = files();
        let err = |bytes: &[u8]| ModelFile::detect(bytes).unwrap_err().0;
        assert_eq!(err(b""), "an empty file, not an ovseg model file");
        assert_eq!(
            err(b"\x83\xa8meta"),
            "an ovseg model file cut short after 6 bytes (truncated)"
        );
        assert_eq!(
            err(b"OVSEG"),
            "a weight pack cut short after 5 bytes (truncated)"
        );
        assert_eq!(
            err(&image[..10]),
            "a weight pack cut short before its header (truncated)"
        );
        assert_eq!(
            err(&image[..20]),
            "a weight pack whose first 20 bytes do not name its part (truncated?)"
        );
        assert_eq!(
            err(b"{\"image\": {}}"),
            "not an ovseg model file, web weight pack or PyTorch checkpoint (it begins with '{': \
             JSON, such as a configuration or tokenizer, not weights)"
        );
        assert_eq!(
            err(b"\x89PNG\r\n\x1a\n...."),
            "not an ovseg model file, web weight pack or PyTorch checkpoint (it begins with the \
             bytes 89 50 4e 47 0d 0a 1a 0a)"
        );
        let mut other = image[..64].to_vec();
        let at = other.windows(7).position(|w| w == b"\"image\"").unwrap();
        other[at + 1..at + 6].copy_from_slice(b"audio");
        assert!(err(&other).starts_with("a weight pack of an unknown part (\"audio\""));
        for e in [err(b"hello"), err(&other)] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_model_is_opened_from_a_model_file_or_an_image_pack_and_a_text_pack_attached() {
        let device = Default::default();
        let (whole, image, text) = files();
        let opened = open_model::<NdArray>(whole, "m.mpk", &device).unwrap();
        assert!(opened.has_text() && opened.kind == ModelFile::Model);
        let opened = open_model::<NdArray>(image.clone(), IMAGE_PACK, &device).unwrap();
        assert!(!opened.has_text());
        let e = open_model::<NdArray>(text.clone(), TEXT_PACK, &device)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "checkpoint text.ovsegpack: the text part of a web export: the model is built from \
             its image.ovsegpack, to which this one is added"
        );
        let e = TextPack::from_bytes(image.clone(), IMAGE_PACK)
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "checkpoint image.ovsegpack: the image part of a web export, not its text part \
             (text.ovsegpack)"
        );
        let text = TextPack::from_bytes(text, TEXT_PACK).unwrap();
        assert_eq!(text.tokenizer(), None);
        let model = text.attach(opened.model, &opened.config).unwrap();
        assert!(model.text_projector.out.weight.is_initialized());
    }

    #[test]
    fn a_damaged_file_of_no_known_kind_is_reported_as_damaged() {
        let (_, image, _) = files();
        let mut damaged = image;
        let at = damaged.windows(7).position(|w| w == b"\"image\"").unwrap();
        damaged[at + 1] = b'j';
        let e = open_model::<NdArray>(damaged, IMAGE_PACK, &Default::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
    }
}
