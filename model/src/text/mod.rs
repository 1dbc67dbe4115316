//! BERT text encoder (SPEC section 2) and the WordPiece tokenizer that feeds it.

mod bert;
pub mod tokenizer;

pub use bert::{Bert, BertAttention, BertEmbeddings, BertEncoder, BertLayer, TextEncoder};
pub use tokenizer::{TextBatch, TextTokenizer, CONTEXT_LENGTH};
