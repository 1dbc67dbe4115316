//! Parity with the reference implementation on both fixtures, `reference-tiny` (ViT + BERT)
//! and `reference-roberta` (ViT-S-like + RoBERTa): every output of `outputs.safetensors` at the
//! fixture README's tolerances, on burn's Flex CPU backend (and the image encoder on NdArray
//! too, to prove the code is backend-generic). Each test runs once per fixture (`parity_tests!`).

mod common;

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::prelude::*;
use common::*;
use ovseg_model::data::entities::EntityVocab;
use ovseg_model::import::load_checkpoint;
use ovseg_model::losses::{CrossPair, LocalGather, LossOptions, TextInput, TrainBatch};
use ovseg_model::segmentation::{ClassEmbedder, SegmentOptions, TemplateSet};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig};

type B = Flex;
type AB = Autodiff<Flex>;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

/// One reference fixture and the tokenizer its ids were made with.
#[derive(Clone, Copy)]
struct Reference {
    folder: &'static str,
    /// Relative to the fixtures folder.
    tokenizer: &'static str,
}

const TINY: Reference = Reference {
    folder: "reference-tiny",
    tokenizer: "minilm/tokenizer.json",
};
const ROBERTA: Reference = Reference {
    folder: "reference-roberta",
    tokenizer: "reference-roberta/tokenizer.json",
};

impl Reference {
    fn dir(self) -> PathBuf {
        fixtures_dir().join(self.folder)
    }

    fn config(self) -> OvsegConfig {
        OvsegConfig::from_json(&std::fs::read_to_string(self.dir().join("model.json")).unwrap())
            .unwrap()
    }

    fn model<Bk: Backend>(self, device: &Bk::Device) -> OvSegmentor<Bk> {
        let (model, report) =
            load_checkpoint::<Bk>(&self.dir().join("checkpoint.pth"), &self.config(), device)
                .unwrap();
        assert!(model.has_training_heads() && model.img_encoder_momentum.is_some());
        assert!(report.loaded > 250, "loaded only {} tensors", report.loaded);
        model
    }

    fn inputs(self) -> Fixture {
        Fixture::open(self.dir().join("inputs.safetensors"))
    }

    fn outputs(self) -> Fixture {
        Fixture::open(self.dir().join("outputs.safetensors"))
    }

    fn tokenizer(self) -> TextTokenizer {
        let path = fixtures_dir().join(self.tokenizer);
        let tokenizer = TextTokenizer::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
        tokenizer.check_model(&self.config().text).unwrap();
        tokenizer
    }

    fn meta(self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir().join("meta.json")).unwrap())
            .unwrap()
    }

    fn strings(self, pointer: &str) -> Vec<String> {
        self.meta()
            .pointer(pointer)
            .and_then(|v| v.as_array())
            .unwrap_or_else(|| panic!("meta.json has no {pointer}"))
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }
}

fn check<Bk: Backend, const D: usize>(name: &str, actual: Tensor<Bk, D>, out: &Fixture) {
    assert_eq!(actual.dims().to_vec(), out.shape(name), "{name}: shape");
    assert_close(name, &values(actual), &out.f32s(name), ATOL, RTOL);
}

fn image_encoder_matches<Bk: Backend>(r: Reference) {
    let device = Default::default();
    let m = r.model::<Bk>(&device);
    let (inp, out) = (r.inputs(), r.outputs());

    let enc = m.img_encoder.forward(inp.float("image", &device), false);
    check("image_x_before_proj", enc.pooled.clone(), &out);
    check("image_feat_before_proj", enc.segments.clone(), &out);
    check("image_x", m.img_projector.forward(enc.pooled, false), &out);
    check(
        "image_feat",
        m.img_projector.forward_tokens(enc.segments, false),
        &out,
    );
    check("attn_soft", enc.assignment.soft, &out);
    check("attn_q", enc.assignment.q, &out);
    check("attn_k", enc.assignment.k, &out);
    assert_eq!(
        values(enc.assignment.hard),
        out.f32s("attn_hard"),
        "attn_hard must be identical"
    );

    let enc = m
        .img_encoder
        .forward(inp.float("image_448", &device), false);
    check("attn_soft_448", enc.assignment.soft, &out);
    check(
        "image_x_448",
        m.img_projector.forward(enc.pooled, false),
        &out,
    );
    check(
        "image_feat_448",
        m.img_projector.forward_tokens(enc.segments, false),
        &out,
    );

    let momentum = m.img_encoder_momentum.as_ref().unwrap();
    let enc = momentum.forward(inp.float("cross_image", &device), false);
    check("momentum_cross_attn_soft", enc.assignment.soft, &out);
    check(
        "momentum_cross_image_feat",
        m.img_projector.forward_tokens(enc.segments, false),
        &out,
    );
}

fn text_encoder_and_class_embeddings(r: Reference) {
    let device = Default::default();
    let m = r.model::<B>(&device);
    let (inp, out) = (r.inputs(), r.outputs());
    let ids = inp.int::<B, 2>("caption_ids", &device);
    let mask = inp.int::<B, 2>("caption_mask", &device);
    let hidden = m.text_encoder.forward(ids.clone(), mask.clone());
    check("text_feat_before_proj", hidden, &out);
    let cls = m.text_encoder.forward_cls(ids.clone(), mask.clone());
    check("text_x_before_proj", cls, &out);
    check("text_x", m.encode_text(ids, mask, false), &out);

    // The class embeddings from our tokenizer and the prompts in meta.json.
    let tokenizer = r.tokenizer();
    let classes = r.strings("/fg_classes");
    let prompts = TemplateSet::Simple.prompts(&classes);
    assert_eq!(prompts, r.strings("/prompts"));
    let batch = tokenizer.encode_longest(&prompts).unwrap();
    assert_eq!(batch.ids, inp.i64s("class_ids"));
    assert_eq!(batch.mask, inp.i64s("class_mask"));
    let embedding = ClassEmbedder::new(&tokenizer, TemplateSet::Simple)
        .embed(&m, &classes, &device)
        .unwrap();
    check("class_embedding", embedding, &out);
}

/// Captions, answers and entity prompts tokenized as training does; the questions are built from
/// the captions by the entity extractor and take the tokenizer's own mask token.
fn tokenizer_pads_captions_to_77(r: Reference) {
    let inp = r.inputs();
    let tokenizer = r.tokenizer();
    let captions = r.strings("/config/captions");
    let vocab = EntityVocab::default();
    let questions: Vec<String> = captions.iter().map(|c| vocab.extract(c).question).collect();
    for (texts, name) in [
        (captions.clone(), "caption"),
        (r.strings("/config/answers"), "answer"),
        (r.strings("/config/cross_entities"), "cross_entity"),
    ] {
        let batch = tokenizer.encode_fixed(&texts).unwrap();
        assert_eq!((batch.batch, batch.len), (2, 77));
        assert_eq!(batch.ids, inp.i64s(&format!("{name}_ids")), "{name}");
        assert_eq!(batch.mask, inp.i64s(&format!("{name}_mask")), "{name}");
    }
    let batch = tokenizer.encode_questions(&questions).unwrap();
    assert_eq!(
        batch.ids,
        inp.i64s("question_ids"),
        "questions {questions:?}"
    );
    assert_eq!(batch.mask, inp.i64s("question_mask"));
}

fn train_batch<Bk: Backend>(inp: &Fixture, device: &Bk::Device) -> TrainBatch<Bk> {
    let pair = |n: &str| {
        TextInput::Tokens(
            inp.int::<Bk, 2>(&format!("{n}_ids"), device),
            inp.int::<Bk, 2>(&format!("{n}_mask"), device),
        )
    };
    TrainBatch {
        images: inp.float("image", device),
        caption: pair("caption"),
        question: pair("question"),
        answer: pair("answer"),
        cross: Some(CrossPair {
            images: inp.float("cross_image", device),
            entity: pair("cross_entity"),
        }),
        naming: None,
    }
}

/// A frozen text encoder's outputs are computed once and handed to the step already encoded
/// (the trainer's text cache): the losses must be the reference's all the same.
fn losses_from_pre_encoded_texts_equal_the_reference(r: Reference) {
    let device = Default::default();
    let m = r.model::<B>(&device);
    let (inp, out) = (r.inputs(), r.outputs());
    let mut batch = train_batch::<B>(&inp, &device);
    let encode = |text: &TextInput<B>, cls_only: bool| {
        let hidden = text.hidden(&m.text_encoder);
        let [b, _, h] = hidden.dims();
        TextInput::Encoded(if cls_only {
            hidden.slice([0..b, 0..1, 0..h])
        } else {
            hidden
        })
    };
    batch.caption = encode(&batch.caption, true);
    batch.question = encode(&batch.question, false);
    batch.answer = encode(&batch.answer, true);
    let cross = batch.cross.as_mut().unwrap();
    cross.entity = encode(&cross.entity, true);
    let losses = m
        .losses(
            &batch,
            &LossOptions {
                training: false,
                gather: &LocalGather,
            },
        )
        .unwrap();
    for (name, value) in [
        ("loss_matching", losses.matching),
        ("loss_entity", losses.entity),
        ("loss_mask", losses.mask.unwrap()),
        ("loss_total", losses.total),
    ] {
        let (value, expected) = (values(value)[0], out.f32s(name)[0]);
        assert!(
            ((value - expected) / expected).abs() <= 1e-4,
            "{name}: {value} vs reference {expected}"
        );
    }
}

fn losses_and_gradients(r: Reference) {
    let device = Default::default();
    let m = r.model::<AB>(&device);
    let (inp, out) = (r.inputs(), r.outputs());
    let losses = m
        .losses(
            &train_batch::<AB>(&inp, &device),
            &LossOptions {
                training: false,
                gather: &LocalGather,
            },
        )
        .unwrap();
    let scalar = |t: Tensor<AB, 1>| values(t)[0];
    for (name, value) in [
        ("loss_matching", scalar(losses.matching.clone())),
        ("loss_entity", scalar(losses.entity.clone())),
        ("loss_mask", scalar(losses.mask.clone().unwrap())),
        ("loss_total", scalar(losses.total.clone())),
    ] {
        let expected = out.f32s(name)[0];
        assert!(
            ((value - expected) / expected).abs() <= 1e-4,
            "{name}: {value} vs reference {expected}"
        );
    }

    let grads = losses.total.backward();
    // Linear and kernel-1 Conv1d weights are stored [in, out] by burn, [out, in(, 1)] by PyTorch.
    let transposed = |t: Tensor<B, 2>| t.transpose();
    let img = &m.img_encoder;
    let grad2 = |p: &burn::module::Param<Tensor<AB, 2>>| p.grad(&grads).expect("gradient");
    let cases: Vec<(&str, Vec<f32>)> = vec![
        (
            "bridge_projector.linear_out.bias",
            values(
                m.bridge_projector
                    .as_ref()
                    .unwrap()
                    .out
                    .bias
                    .as_ref()
                    .unwrap()
                    .grad(&grads)
                    .unwrap(),
            ),
        ),
        (
            "img_encoder.layers.0.downsample.assign.q_proj.weight",
            values(transposed(grad2(
                &img.layers[0]
                    .downsample
                    .as_ref()
                    .unwrap()
                    .assign
                    .q_proj
                    .weight,
            ))),
        ),
        (
            "img_encoder.layers.0.group_token",
            values(
                img.layers[0]
                    .group_token
                    .as_ref()
                    .unwrap()
                    .grad(&grads)
                    .unwrap(),
            ),
        ),
        (
            "img_encoder.layers.1.blocks.0.attn.qkv.weight",
            values(transposed(grad2(&img.layers[1].blocks[0].attn.qkv.weight))),
        ),
        (
            "img_encoder.patch_embed.proj.weight",
            values(img.patch_embed.proj.weight.grad(&grads).unwrap()),
        ),
        (
            "img_projector.linear_out.weight",
            values(transposed(grad2(&m.img_projector.out.weight))),
        ),
        ("logit_scale", values(m.logit_scale.grad(&grads).unwrap())),
        (
            "multimodal_groupingblock.blocks.0.pre_assign_attn.attn.q_proj.weight",
            values(transposed(grad2(
                &m.multimodal_groupingblock.as_ref().unwrap().blocks[0]
                    .pre_assign_attn
                    .attn
                    .q_proj
                    .weight,
            ))),
        ),
        (
            "text_encoder.transformer.encoder.layer.0.attention.self.query.weight",
            values(transposed(grad2(
                &m.text_encoder.transformer.encoder.layer[0]
                    .attention
                    .self_attn
                    .query
                    .weight,
            ))),
        ),
        (
            "text_projector.linear_hidden.0.weight",
            values(transposed(grad2(&m.text_projector.hidden.weight))),
        ),
    ];
    for (name, actual) in &cases {
        let expected = out.f32s(&format!("grad.{name}"));
        let err = relative_l2(actual, &expected);
        assert!(err <= 1e-3, "grad.{name}: relative L2 error {err}");
    }
    // Word embeddings: only the rows the batch touches are recorded.
    let name = "text_encoder.transformer.embeddings.word_embeddings.weight";
    let rows: Vec<i64> = out.i64s(&format!("grad_rows_ids.{name}"));
    let full = grad2(&m.text_encoder.transformer.embeddings.word_embeddings.weight);
    let picked = full.select(
        0,
        Tensor::<B, 1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &device),
    );
    let actual_rows = values(picked);
    let expected_rows = out.f32s(&format!("grad.{name}"));
    let err = relative_l2(&actual_rows, &expected_rows);
    assert!(err <= 1e-3, "grad.{name}: relative L2 error {err}");
    assert_eq!(
        cases.len() + 1,
        out_grad_count(&out),
        "every recorded gradient is checked"
    );
}

fn out_grad_count(out: &Fixture) -> usize {
    let names = [
        "bridge_projector.linear_out.bias",
        "img_encoder.layers.0.downsample.assign.q_proj.weight",
        "img_encoder.layers.0.group_token",
        "img_encoder.layers.1.blocks.0.attn.qkv.weight",
        "img_encoder.patch_embed.proj.weight",
        "img_projector.linear_out.weight",
        "logit_scale",
        "multimodal_groupingblock.blocks.0.pre_assign_attn.attn.q_proj.weight",
        "text_encoder.transformer.embeddings.word_embeddings.weight",
        "text_encoder.transformer.encoder.layer.0.attention.self.query.weight",
        "text_projector.linear_hidden.0.weight",
    ];
    names
        .iter()
        .filter(|n| out.has(&format!("grad.{n}")))
        .count()
}

fn voc_classes() -> Vec<String> {
    ovseg_model::segmentation::Vocab::get()
        .dataset("voc")
        .unwrap()
        .foreground()
        .to_vec()
}

fn segmentation_single_window_and_slide(r: Reference) {
    let device = Default::default();
    let m = r.model::<B>(&device);
    let (inp, out) = (r.inputs(), r.outputs());
    let tokenizer = r.tokenizer();
    let classes = ClassEmbedder::new(&tokenizer, TemplateSet::Simple)
        .embed(&m, &voc_classes(), &device)
        .unwrap();
    let options = SegmentOptions {
        bg_thresh: Some(0.95),
        ..Default::default()
    };

    let first = inp
        .float::<B, 4>("image", &device)
        .slice([0..1, 0..3, 0..224, 0..224]);
    let window = m.window_logits(first, classes.clone(), &options);
    check_window_logits(
        &values(window.logits.clone()),
        &values(window.group_attention.clone()),
        &out,
    );
    let every4 = window
        .group_attention
        .squeeze_dim::<3>(0)
        .permute([1, 2, 0]);
    let every4: Vec<f32> = {
        let v = values(every4);
        let mut picked = Vec::new();
        for y in (0..224).step_by(4) {
            for x in (0..224).step_by(4) {
                picked.extend_from_slice(&v[(y * 224 + x) * 4..(y * 224 + x) * 4 + 4]);
            }
        }
        picked
    };
    assert_close(
        "seg_group_attn_224_every4",
        &every4,
        &out.f32s("seg_group_attn_224_every4"),
        ATOL,
        RTOL,
    );

    let logits = m.slide_logits(inp.float("seg_image", &device), classes, &options);
    let [c, h, w] = logits.dims();
    let v = values(logits.clone());
    let mut picked = Vec::new();
    for ch in 0..c {
        for y in (0..h).step_by(4) {
            for x in (0..w).step_by(4) {
                picked.push(v[(ch * h + y) * w + x]);
            }
        }
    }
    assert_close(
        "seg_logits_slide_every4",
        &picked,
        &out.f32s("seg_logits_slide_every4"),
        ATOL,
        RTOL,
    );
    let labels: Vec<f32> = values(logits.argmax(0).float());
    let expected = out.f32s("seg_pred_slide");
    let differing = labels.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert!(
        differing * 2000 <= expected.len(),
        "{differing} of {} labels differ",
        expected.len()
    );
}

macro_rules! parity_tests {
    ($module:ident, $reference:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn image_encoder_flex() {
                image_encoder_matches::<B>($reference);
            }

            #[test]
            fn image_encoder_ndarray() {
                image_encoder_matches::<NdArray>($reference);
            }

            #[test]
            fn text_encoder_and_class_embeddings() {
                super::text_encoder_and_class_embeddings($reference);
            }

            #[test]
            fn tokenizer_pads_captions_to_77() {
                super::tokenizer_pads_captions_to_77($reference);
            }

            #[test]
            fn losses_from_pre_encoded_texts_equal_the_reference() {
                super::losses_from_pre_encoded_texts_equal_the_reference($reference);
            }

            #[test]
            fn losses_and_gradients() {
                super::losses_and_gradients($reference);
            }

            #[test]
            fn segmentation_single_window_and_slide() {
                super::segmentation_single_window_and_slide($reference);
            }
        }
    };
}

parity_tests!(tiny, TINY);
parity_tests!(roberta, ROBERTA);

/// The special tokens come from each tokenizer file, and a tokenizer is refused by a text encoder
/// of the other kind, of another pad id or of a smaller vocabulary.
#[test]
fn tokenizers_name_their_specials_and_refuse_other_models() {
    let (bert, roberta) = (TINY.tokenizer(), ROBERTA.tokenizer());
    let b = bert.specials();
    assert_eq!(
        (b.pad.as_str(), b.pad_id, b.mask.as_str()),
        ("[PAD]", 0, "[MASK]")
    );
    let r = roberta.specials();
    assert_eq!(
        (r.pad.as_str(), r.pad_id, r.mask.as_str()),
        ("<pad>", 1, "<mask>")
    );
    assert_eq!(r.id_bound, 2000);

    let roberta_config = ROBERTA.config().text;
    let e = bert.check_model(&roberta_config).unwrap_err().to_string();
    assert!(e.contains("pads with [PAD] (id 0)"), "{e}");
    // The RoBERTa file under a BERT configuration with RoBERTa's pad id: its post-processor
    // (`<s> .. </s>`) says whose it is.
    let mut bert_config = TINY.config().text;
    bert_config.pad_token_id = 1;
    let e = roberta.check_model(&bert_config).unwrap_err().to_string();
    assert!(
        e.contains("a roberta tokenizer for a bert text encoder"),
        "{e}"
    );
    let mut small = roberta_config;
    small.vocab_size = 1000;
    let e = roberta.check_model(&small).unwrap_err().to_string();
    assert!(
        e.contains("ids up to 1999") && e.contains("1000 rows"),
        "{e}"
    );
}

/// `seg_logits_224` at the usual tolerance, except at pixels whose two most attended groups tie
/// to float32 precision (the fixtures' README allows <= 0.05% of pixels at exact ties): there
/// the group a pixel takes depends on the order of float operations. reference-roberta has one
/// (groups 0.25408873 and 0.25408876 at row 203, column 140).
fn check_window_logits(logits: &[f32], group_attention: &[f32], out: &Fixture) {
    let expected = out.f32s("seg_logits_224");
    let pixels = 224 * 224;
    let groups = group_attention.len() / pixels;
    let tied: Vec<bool> = (0..pixels)
        .map(|p| {
            let mut a: Vec<f32> = (0..groups)
                .map(|g| group_attention[g * pixels + p])
                .collect();
            a.sort_by(|x, y| y.total_cmp(x));
            a[0] - a[1] <= 1e-6
        })
        .collect();
    let ties = tied.iter().filter(|&&t| t).count();
    assert!(ties * 2000 <= pixels, "{ties} pixels at group ties");
    let keep = |i: &usize| !tied[i % pixels];
    let pick = |v: &[f32]| -> Vec<f32> { (0..v.len()).filter(keep).map(|i| v[i]).collect() };
    assert_eq!(logits.len(), expected.len(), "seg_logits_224: shape");
    assert_close(
        "seg_logits_224",
        &pick(logits),
        &pick(&expected),
        ATOL,
        RTOL,
    );
}

#[test]
fn minilm_matches_huggingface() {
    let device = Default::default();
    let (config, encoder) =
        ovseg_model::import::load_hf_bert_dir::<B>(&minilm_dir(), &device).unwrap();
    assert_eq!(config, ovseg_model::TextConfig::minilm_l6());
    let reference = Fixture::open(fixtures_dir().join("minilm/minilm_reference.safetensors"));
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures_dir().join("minilm/minilm_reference.json")).unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let tokenizer = TextTokenizer::from_json(
        &std::fs::read_to_string(minilm_dir().join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    let batch = tokenizer.encode_longest(&texts).unwrap();
    assert_eq!(batch.ids, reference.i64s("input_ids"));
    assert_eq!(batch.mask, reference.i64s("attention_mask"));
    let (ids, mask) = batch.to_tensors::<B>(&device);
    check(
        "last_hidden_state",
        encoder.forward(ids.clone(), mask.clone()),
        &reference,
    );
    check("cls", encoder.forward_cls(ids, mask), &reference);
}
