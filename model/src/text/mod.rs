//! The text encoder (docs/architecture.md, "The text encoder"), BERT or RoBERTa as the
//! configuration's `model_type` says, and the tokenizer that feeds it (WordPiece or byte-level BPE,
//! read from `tokenizer.json`).

mod bert;
pub mod roberta;
pub mod tokenizer;

pub use crate::config::TextModelType;
pub use bert::{Bert, BertAttention, BertEmbeddings, BertEncoder, BertLayer, TextEncoder};
pub use tokenizer::{SpecialTokens, TextBatch, TextTokenizer, CONTEXT_LENGTH};
