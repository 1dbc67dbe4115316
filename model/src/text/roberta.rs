//! HuggingFace `RobertaModel`: BERT's transformer (`bert.rs`) with RoBERTa's embeddings rule and
//! shape. What differs from BERT, as the reference's `Roberta` text encoder computes it:
//! - position ids count from `pad_token_id + 1` over the non-pad tokens, and pad tokens keep
//!   `pad_token_id` (transformers' `create_position_ids_from_input_ids`, fairseq's
//!   `make_positions`): taken from the ids, not from the attention mask;
//! - `<pad>` is id 1 and `<s>` (first, the caption embedding's slot) is id 0; the tokenizer is
//!   byte-level BPE with `<s> ... </s>` around the text, and the special tokens are read from its
//!   `tokenizer.json` (`tokenizer.rs`);
//! - one token-type row (every type id is 0) and LayerNorm eps 1e-5.

use burn::prelude::*;

use crate::config::{TextConfig, TextModelType};

impl TextConfig {
    /// roberta-base (the text side of the second released model).
    pub fn roberta_base() -> Self {
        Self {
            model_type: TextModelType::Roberta,
            vocab_size: 50265,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 514,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
        }
    }
}

/// RoBERTa's position ids for `ids` [B, L]: `pad + 1 + (index among the row's non-pad tokens)`
/// for real tokens, `pad` for pad tokens.
pub fn position_ids<B: Backend>(ids: Tensor<B, 2, Int>, pad_token_id: usize) -> Tensor<B, 2, Int> {
    let real = ids.not_equal_elem(pad_token_id as i64).int();
    let counted = real.clone().cumsum(1) * real;
    counted.add_scalar(pad_token_id as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// The fixture's README: a 17-token caption padded with `<pad>` = 1 gets 2..18, then 1, 1.
    #[test]
    fn positions_count_real_tokens_from_pad_plus_one() {
        let device = Default::default();
        let ids = Tensor::<NdArray, 2, Int>::from_data(
            [[0, 50, 51, 2, 1, 1], [0, 7, 2, 1, 1, 1]],
            &device,
        );
        let positions = position_ids(ids, 1)
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(positions, vec![2, 3, 4, 5, 1, 1, 2, 3, 4, 1, 1, 1]);
    }

    #[test]
    fn roberta_base_is_the_released_shape() {
        let c = TextConfig::roberta_base();
        assert_eq!(
            (
                c.hidden_size,
                c.num_hidden_layers,
                c.vocab_size,
                c.max_position_embeddings
            ),
            (768, 12, 50265, 514)
        );
        assert_eq!(c.positions_needed(), 79);
    }
}
