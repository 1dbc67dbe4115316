use burn::prelude::*;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::OvsegError;

/// Captions, questions, answers and entities are padded (and truncated) to this length.
pub const CONTEXT_LENGTH: usize = 77;

/// The built-in uncased BERT `tokenizer.json` (what `ovseg export-web` writes for the page).
#[cfg(feature = "embedded-tokenizer")]
pub const BERT_BASE_UNCASED_JSON: &str =
    include_str!("../../assets/bert-base-uncased-tokenizer.json");

/// The uncased BERT WordPiece tokenizer (`tokenizer.json`), padding as SPEC section 2 says.
#[derive(Clone)]
pub struct TextTokenizer {
    /// Configured once for each padding rule, so encoding never reconfigures or clones.
    fixed: Tokenizer,
    longest: Tokenizer,
}

/// Token ids and attention mask of a batch, row-major [batch, len].
#[derive(Debug, Clone, PartialEq)]
pub struct TextBatch {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub batch: usize,
    pub len: usize,
}

impl TextTokenizer {
    /// From the contents of a HuggingFace `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self, OvsegError> {
        let base = json
            .parse::<Tokenizer>()
            .map_err(|e| OvsegError::Tokenizer(format!("cannot read tokenizer.json: {e}")))?;
        let configure = |strategy| -> Result<Tokenizer, OvsegError> {
            let mut t = base.clone();
            t.with_padding(Some(PaddingParams {
                strategy,
                pad_id: 0,
                pad_token: "[PAD]".into(),
                ..Default::default()
            }));
            t.with_truncation(Some(TruncationParams {
                max_length: CONTEXT_LENGTH,
                ..Default::default()
            }))
            .map_err(|e| OvsegError::Tokenizer(e.to_string()))?;
            Ok(t)
        };
        Ok(Self {
            fixed: configure(PaddingStrategy::Fixed(CONTEXT_LENGTH))?,
            longest: configure(PaddingStrategy::BatchLongest)?,
        })
    }

    /// The uncased BERT WordPiece tokenizer (30522 tokens) of every released OVSegmentor and of
    /// MiniLM, compiled into the crate.
    #[cfg(feature = "embedded-tokenizer")]
    pub fn bert_base_uncased() -> Self {
        Self::from_json(BERT_BASE_UNCASED_JSON).expect("embedded tokenizer.json is valid")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OvsegError> {
        let json = std::str::from_utf8(bytes)
            .map_err(|_| OvsegError::Tokenizer("tokenizer.json is not UTF-8".into()))?;
        Self::from_json(json)
    }

    /// Pads and truncates every text to [`CONTEXT_LENGTH`] (captions and the like).
    pub fn encode_fixed(&self, texts: &[String]) -> Result<TextBatch, OvsegError> {
        encode(&self.fixed, texts)
    }

    /// Pads to the longest text of the batch (class prompts), truncating at [`CONTEXT_LENGTH`].
    pub fn encode_longest(&self, texts: &[String]) -> Result<TextBatch, OvsegError> {
        encode(&self.longest, texts)
    }
}

fn encode(tokenizer: &Tokenizer, texts: &[String]) -> Result<TextBatch, OvsegError> {
    if texts.is_empty() {
        return Err(OvsegError::Input("no text to encode".into()));
    }
    let encodings = tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| OvsegError::Tokenizer(e.to_string()))?;
    let len = encodings[0].get_ids().len();
    let mut ids = Vec::with_capacity(texts.len() * len);
    let mut mask = Vec::with_capacity(texts.len() * len);
    for e in &encodings {
        ids.extend(e.get_ids().iter().map(|&i| i as i64));
        mask.extend(e.get_attention_mask().iter().map(|&m| m as i64));
    }
    Ok(TextBatch {
        ids,
        mask,
        batch: texts.len(),
        len,
    })
}

impl TextBatch {
    pub fn to_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let shape = [self.batch, self.len];
        (
            Tensor::from_data(TensorData::new(self.ids.clone(), shape), device),
            Tensor::from_data(TensorData::new(self.mask.clone(), shape), device),
        )
    }
}
