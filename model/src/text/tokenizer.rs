use std::sync::Arc;

use burn::prelude::*;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use tokenizers::processors::PostProcessorWrapper;

use crate::config::{TextConfig, TextModelType};
use crate::data::entities::MASK_PLACEHOLDER;
use crate::error::OvsegError;

/// Captions, questions, answers and entities are padded (and truncated) to this length.
pub const CONTEXT_LENGTH: usize = 77;

/// The built-in uncased BERT `tokenizer.json` (what a BERT model without a stored tokenizer uses).
#[cfg(feature = "embedded-tokenizer")]
pub const BERT_BASE_UNCASED_JSON: &str =
    include_str!("../../assets/bert-base-uncased-tokenizer.json");

/// A HuggingFace `tokenizer.json` (BERT's WordPiece or RoBERTa's byte-level BPE), padding as
/// docs/architecture.md, "The text encoder" says, with its special tokens read from the file.
#[derive(Clone)]
pub struct TextTokenizer {
    /// Configured once for each padding rule, so encoding never reconfigures or clones.
    fixed: Tokenizer,
    longest: Tokenizer,
    specials: SpecialTokens,
    /// The file's text, kept to be stored with a model; `None` for the built-in BERT one.
    json: Option<Arc<str>>,
}

/// The special tokens the model depends on, as the tokenizer file names them. The first and
/// last tokens (`[CLS]`/`[SEP]`, `<s>`/`</s>`) are added by the file's own post-processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    pub pad: String,
    pub pad_id: u32,
    /// Written where a masked-entity question hides an entity.
    pub mask: String,
    /// One more than the largest id the tokenizer can produce.
    pub id_bound: usize,
    /// The model its post-processor frames texts for (`BertProcessing`: `[CLS] .. [SEP]`,
    /// `RobertaProcessing`: `<s> .. </s>`); `None` for a template, which either may use.
    pub made_for: Option<TextModelType>,
}

/// Token ids and attention mask of a batch, row-major [batch, len].
#[derive(Debug, Clone, PartialEq)]
pub struct TextBatch {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub batch: usize,
    pub len: usize,
}

impl SpecialTokens {
    /// The padding token of the file's `padding` section, else its special `<pad>`/`[PAD]`;
    /// the mask token is its special `<mask>`/`[MASK]`.
    fn read(tokenizer: &Tokenizer) -> Result<Self, OvsegError> {
        let special = |name: &str| {
            let mut found: Vec<(u32, String)> = tokenizer
                .get_added_tokens_decoder()
                .into_iter()
                .filter(|(_, t)| {
                    t.special
                        && t.content
                            .trim_matches(|c| matches!(c, '[' | ']' | '<' | '>'))
                            .eq_ignore_ascii_case(name)
                })
                .map(|(id, t)| (id, t.content))
                .collect();
            found.sort();
            found.into_iter().next().ok_or_else(|| {
                OvsegError::Tokenizer(format!("tokenizer.json has no special {name} token"))
            })
        };
        let (pad_id, pad) = match tokenizer.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => special("pad")?,
        };
        let (_, mask) = special("mask")?;
        let id_bound = tokenizer
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        let made_for = match tokenizer.get_post_processor() {
            Some(PostProcessorWrapper::Bert(_)) => Some(TextModelType::Bert),
            Some(PostProcessorWrapper::Roberta(_)) => Some(TextModelType::Roberta),
            _ => None,
        };
        Ok(Self {
            pad,
            pad_id,
            mask,
            id_bound,
            made_for,
        })
    }
}

impl TextTokenizer {
    /// From the contents of a HuggingFace `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self, OvsegError> {
        let mut tokenizer = Self::parse(json)?;
        #[cfg(feature = "embedded-tokenizer")]
        let builtin = json == BERT_BASE_UNCASED_JSON;
        #[cfg(not(feature = "embedded-tokenizer"))]
        let builtin = false;
        if !builtin {
            tokenizer.json = Some(Arc::from(json));
        }
        Ok(tokenizer)
    }

    fn parse(json: &str) -> Result<Self, OvsegError> {
        let base = json
            .parse::<Tokenizer>()
            .map_err(|e| OvsegError::Tokenizer(format!("cannot read tokenizer.json: {e}")))?;
        let specials = SpecialTokens::read(&base)?;
        let configure = |strategy| -> Result<Tokenizer, OvsegError> {
            let mut t = base.clone();
            t.with_padding(Some(PaddingParams {
                strategy,
                pad_id: specials.pad_id,
                pad_token: specials.pad.clone(),
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
            specials,
            json: None,
        })
    }

    /// The uncased BERT WordPiece tokenizer (30522 tokens) of every released BERT OVSegmentor
    /// and of MiniLM, compiled into the crate.
    #[cfg(feature = "embedded-tokenizer")]
    pub fn bert_base_uncased() -> Self {
        Self::parse(BERT_BASE_UNCASED_JSON).expect("embedded tokenizer.json is valid")
    }

    /// The tokenizer a model file stores (`None`: the built-in uncased BERT one).
    #[cfg(feature = "embedded-tokenizer")]
    pub fn stored(json: Option<&str>) -> Result<Self, OvsegError> {
        json.map_or_else(|| Ok(Self::bert_base_uncased()), Self::from_json)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OvsegError> {
        let json = std::str::from_utf8(bytes)
            .map_err(|_| OvsegError::Tokenizer("tokenizer.json is not UTF-8".into()))?;
        Self::from_json(json)
    }

    /// The file to store with a model: `None` when it is the built-in uncased BERT one.
    pub fn stored_json(&self) -> Option<&str> {
        self.json.as_deref()
    }

    pub fn specials(&self) -> &SpecialTokens {
        &self.specials
    }

    /// Refuses a tokenizer that does not belong to the text encoder `config` describes: one
    /// padding with another id (a BERT tokenizer on a RoBERTa model or the reverse), or one
    /// whose ids run past the word-embedding table.
    pub fn check_model(&self, config: &TextConfig) -> Result<(), OvsegError> {
        let s = &self.specials;
        if let Some(kind) = s.made_for.filter(|&k| k != config.model_type) {
            return Err(OvsegError::Tokenizer(format!(
                "a {} tokenizer for a {} text encoder: the configuration's model_type and the \
                 tokenizer must belong to the same model",
                kind.name(),
                config.model_type.name()
            )));
        }
        if s.pad_id as usize != config.pad_token_id {
            return Err(OvsegError::Tokenizer(format!(
                "pads with {} (id {}) but the {} text encoder's pad_token_id is {}: \
                 the tokenizer of another model (give the model's own tokenizer.json)",
                s.pad,
                s.pad_id,
                config.model_type.name(),
                config.pad_token_id
            )));
        }
        if s.id_bound > config.vocab_size {
            return Err(OvsegError::Tokenizer(format!(
                "ids up to {} but the text encoder's vocabulary has {} rows: \
                 the tokenizer of another model",
                s.id_bound - 1,
                config.vocab_size
            )));
        }
        Ok(())
    }

    /// Pads and truncates every text to [`CONTEXT_LENGTH`] (captions and the like).
    pub fn encode_fixed(&self, texts: &[String]) -> Result<TextBatch, OvsegError> {
        encode(&self.fixed, texts)
    }

    /// Masked-entity questions, padded as [`Self::encode_fixed`], with this tokenizer's mask
    /// token where the question builder wrote [`MASK_PLACEHOLDER`].
    pub fn encode_questions(&self, questions: &[String]) -> Result<TextBatch, OvsegError> {
        if self.specials.mask == MASK_PLACEHOLDER {
            return self.encode_fixed(questions);
        }
        let written: Vec<String> = questions
            .iter()
            .map(|q| q.replace(MASK_PLACEHOLDER, &self.specials.mask))
            .collect();
        self.encode_fixed(&written)
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
