//! A frozen text encoder's hidden states, kept on the device per text, so a text seen before is
//! not encoded again. Stage 2 always freezes the text encoder; stage 1 does with the recipe's
//! `freeze_text_encoder`. The step then gets [`TextInput::Encoded`] rows instead of tokens.

use std::collections::HashMap;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::prelude::*;
use ovseg_model::losses::TextInput;
use ovseg_model::text::{TextBatch, TextEncoder, TextTokenizer};

/// Which part of the hidden state a text needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRows {
    /// The [CLS] row only, texts padded to the longest of the batch (captions, answers,
    /// entity prompts: only their embedding is read).
    Cls,
    /// All 77 positions of masked-entity questions (every token enters the multimodal block),
    /// with the tokenizer's mask token.
    Questions,
}

impl TextRows {
    /// Tokens for this part: padded to the longest text for [CLS] reads, to 77 for all tokens.
    pub fn tokenize(self, tokenizer: &TextTokenizer, texts: &[String]) -> Result<TextBatch> {
        Ok(match self {
            TextRows::Cls => tokenizer.encode_longest(texts)?,
            TextRows::Questions => tokenizer.encode_questions(texts)?,
        })
    }
}

pub struct FrozenText<B: Backend> {
    encoder: TextEncoder<B>,
    /// [1, 1, hidden] rows by text.
    cls: HashMap<String, Tensor<B, 3>>,
    /// [1, 77, hidden] rows by text.
    all_tokens: HashMap<String, Tensor<B, 3>>,
    /// Floats that may still be cached; past it, texts are encoded every time they come.
    budget: usize,
    device: B::Device,
}

impl<B: Backend> FrozenText<B> {
    /// `budget_mb`: device memory the cache may take.
    pub fn new(encoder: TextEncoder<B>, budget_mb: usize, device: B::Device) -> Self {
        Self {
            encoder,
            cls: HashMap::new(),
            all_tokens: HashMap::new(),
            budget: budget_mb * (1 << 20) / std::mem::size_of::<f32>(),
            device,
        }
    }

    /// The hidden states of `texts` ([B, 1, hidden] or [B, 77, hidden]), encoding in one
    /// forward only the texts not cached yet.
    pub fn encode(
        &mut self,
        tokenizer: &TextTokenizer,
        texts: &[String],
        kind: TextRows,
    ) -> Result<TextInput<Autodiff<B>>> {
        let rows = match kind {
            TextRows::Cls => &mut self.cls,
            TextRows::Questions => &mut self.all_tokens,
        };
        let mut missing: Vec<String> = Vec::new();
        for text in texts {
            if !rows.contains_key(text) && !missing.contains(text) {
                missing.push(text.clone());
            }
        }
        let mut uncached = HashMap::new();
        if !missing.is_empty() {
            let (ids, mask) = kind
                .tokenize(tokenizer, &missing)?
                .to_tensors::<B>(&self.device);
            let hidden = self.encoder.forward(ids, mask);
            let [_, len, width] = hidden.dims();
            let len = if kind == TextRows::Cls { 1 } else { len };
            for (i, text) in missing.into_iter().enumerate() {
                let row = hidden.clone().slice([i..i + 1, 0..len, 0..width]);
                if self.budget >= len * width {
                    self.budget -= len * width;
                    rows.insert(text, row);
                } else {
                    uncached.insert(text, row);
                }
            }
        }
        let batch: Vec<Tensor<B, 3>> = texts
            .iter()
            .map(|t| {
                rows.get(t)
                    .or_else(|| uncached.get(t))
                    .expect("every text was encoded above")
                    .clone()
            })
            .collect();
        Ok(TextInput::Encoded(Tensor::from_inner(Tensor::cat(
            batch, 0,
        ))))
    }
}
