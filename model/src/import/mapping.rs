//! The table between burn parameter paths and the reference's state-dict keys.

use burn::tensor::TensorData;

/// Field names that differ from the PyTorch ones everywhere they occur.
const RENAMES: &[(&str, &str)] = &[
    ("gamma", "weight"),         // LayerNorm / BatchNorm scale
    ("beta", "bias"),            // LayerNorm / BatchNorm shift
    ("layer_norm", "LayerNorm"), // HuggingFace BERT
    ("self_attn", "self"),       // `self` is a Rust keyword
];

/// Fields of a `ProjectMlp` (Conv1d, BatchNorm1d inside `linear_hidden`, then `linear_out`).
const PROJECTOR_RENAMES: &[(&str, &str)] = &[
    ("hidden", "linear_hidden.0"),
    ("norm", "linear_hidden.1"),
    ("out", "linear_out"),
];

/// burn path (`img_projector.norm.gamma`) -> checkpoint key (`img_projector.linear_hidden.1.weight`).
pub fn torch_key(path: &str) -> String {
    let segments: Vec<&str> = path.split('.').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let in_projector = i > 0 && segments[i - 1].ends_with("_projector");
        let table = if in_projector {
            PROJECTOR_RENAMES
        } else {
            RENAMES
        };
        out.push(
            table
                .iter()
                .find(|(from, _)| from == seg)
                .map(|(_, to)| *to)
                .unwrap_or(seg),
        );
    }
    out.join(".")
}

/// Checkpoint entries that no part of the computation reads.
pub fn ignorable_checkpoint_key(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
        || key.ends_with("position_ids")
        || key.starts_with("text_encoder.transformer.pooler.")
        // The reference builds an assignment inside the multimodal block but never calls it.
        || (key.starts_with("multimodal_groupingblock.") && key.contains(".assign."))
}

/// Keys of a HuggingFace BERT or RoBERTa checkpoint the text encoder does not use (the pooler,
/// the masked-LM heads, saved position-id buffers).
pub fn ignorable_bert_key(key: &str) -> bool {
    let key = key
        .strip_prefix("bert.")
        .or_else(|| key.strip_prefix("roberta."))
        .unwrap_or(key);
    key.starts_with("pooler.")
        || key.ends_with("position_ids")
        || key.starts_with("cls.")
        || key.starts_with("lm_head.")
}

/// How a checkpoint tensor becomes the burn parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Same values in the same order (size-1 axes may differ: `[1, N, C]` vs `[N, C]`, `()` vs `[1]`).
    Same,
    /// A Linear or kernel-1 Conv1d weight `[out, in(, 1)]` stored by burn as `[in, out]`.
    Transposed,
}

/// Decides the layout, or `None` when the shapes cannot be the same parameter.
pub fn layout_for(found: &[usize], expected: &[usize], linear_weight: bool) -> Option<Layout> {
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if linear_weight {
        let f: Vec<usize> = match found {
            [o, i] => vec![*o, *i],
            [o, i, 1] => vec![*o, *i],
            _ => return None,
        };
        return (expected == [f[1], f[0]]).then_some(Layout::Transposed);
    }
    (squeeze(found) == squeeze(expected)
        && found.iter().product::<usize>() == expected.iter().product::<usize>())
    .then_some(Layout::Same)
}

pub fn apply_layout(
    values: Vec<f32>,
    found: &[usize],
    expected: &[usize],
    layout: Layout,
) -> TensorData {
    match layout {
        Layout::Same => TensorData::new(values, expected.to_vec()),
        Layout::Transposed => {
            let (rows, cols) = (found[0], found[1]);
            let mut t = vec![0.0f32; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = values[r * cols + c];
                }
            }
            TensorData::new(t, expected.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_reference() {
        assert_eq!(
            torch_key("img_projector.norm.gamma"),
            "img_projector.linear_hidden.1.weight"
        );
        assert_eq!(
            torch_key("img_projector.norm.running_var"),
            "img_projector.linear_hidden.1.running_var"
        );
        assert_eq!(
            torch_key("bridge_projector.out.bias"),
            "bridge_projector.linear_out.bias"
        );
        assert_eq!(torch_key("img_encoder.norm.beta"), "img_encoder.norm.bias");
        assert_eq!(
            torch_key("text_encoder.transformer.encoder.layer.3.attention.self_attn.query.weight"),
            "text_encoder.transformer.encoder.layer.3.attention.self.query.weight"
        );
        assert_eq!(
            torch_key("text_encoder.transformer.embeddings.layer_norm.gamma"),
            "text_encoder.transformer.embeddings.LayerNorm.weight"
        );
    }

    #[test]
    fn layouts() {
        assert_eq!(
            layout_for(&[4096, 64, 1], &[64, 4096], true),
            Some(Layout::Transposed)
        );
        assert_eq!(
            layout_for(&[196, 64], &[196, 64], false),
            Some(Layout::Same)
        );
        assert_eq!(
            layout_for(&[1, 196, 64], &[196, 64], false),
            Some(Layout::Same)
        );
        assert_eq!(layout_for(&[], &[1], false), Some(Layout::Same));
        assert_eq!(layout_for(&[196, 32], &[196, 64], false), None);
        let d = apply_layout(
            vec![1., 2., 3., 4., 5., 6.],
            &[2, 3],
            &[3, 2],
            Layout::Transposed,
        );
        assert_eq!(d.to_vec::<f32>().unwrap(), vec![1., 4., 2., 5., 3., 6.]);
    }
}
