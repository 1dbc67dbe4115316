//! Parity with the reference implementation (`../shared/fixtures/reference-tiny`): every output
//! of `outputs.safetensors` at the README's tolerances, on burn's Flex CPU backend (and the
//! image encoder on NdArray too, to prove the code is backend-generic).

mod common;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::prelude::*;
use common::*;
use ovseg_model::import::load_checkpoint;
use ovseg_model::losses::{CrossPair, LocalGather, LossOptions, TextInput, TrainBatch};
use ovseg_model::segmentation::{ClassEmbedder, SegmentOptions, TemplateSet};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig};

type B = Flex;
type AB = Autodiff<Flex>;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn config() -> OvsegConfig {
    OvsegConfig::from_json(&std::fs::read_to_string(tiny_dir().join("model.json")).unwrap())
        .unwrap()
}

fn model<Bk: Backend>(device: &Bk::Device) -> OvSegmentor<Bk> {
    let (model, report) =
        load_checkpoint::<Bk>(&tiny_dir().join("checkpoint.pth"), &config(), device).unwrap();
    assert!(model.has_training_heads() && model.img_encoder_momentum.is_some());
    assert!(report.loaded > 250, "loaded only {} tensors", report.loaded);
    model
}

fn inputs() -> Fixture {
    Fixture::open(tiny_dir().join("inputs.safetensors"))
}

fn outputs() -> Fixture {
    Fixture::open(tiny_dir().join("outputs.safetensors"))
}

fn check<Bk: Backend, const D: usize>(name: &str, actual: Tensor<Bk, D>, out: &Fixture) {
    assert_eq!(actual.dims().to_vec(), out.shape(name), "{name}: shape");
    assert_close(name, &values(actual), &out.f32s(name), ATOL, RTOL);
}

fn image_encoder_matches<Bk: Backend>() {
    let device = Default::default();
    let m = model::<Bk>(&device);
    let (inp, out) = (inputs(), outputs());

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

#[test]
fn image_encoder_flex() {
    image_encoder_matches::<B>();
}

#[test]
fn image_encoder_ndarray() {
    image_encoder_matches::<NdArray>();
}

#[test]
fn text_encoder_and_class_embeddings() {
    let device = Default::default();
    let m = model::<B>(&device);
    let (inp, out) = (inputs(), outputs());
    let ids = inp.int::<B, 2>("caption_ids", &device);
    let mask = inp.int::<B, 2>("caption_mask", &device);
    let hidden = m.text_encoder.forward(ids.clone(), mask.clone());
    check("text_feat_before_proj", hidden, &out);
    let cls = m.text_encoder.forward_cls(ids.clone(), mask.clone());
    check("text_x_before_proj", cls, &out);
    check("text_x", m.encode_text(ids, mask, false), &out);

    // The class embeddings from our tokenizer and the prompts in meta.json.
    let tokenizer = TextTokenizer::from_json(
        &std::fs::read_to_string(fixtures_dir().join("minilm/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_dir().join("meta.json")).unwrap())
            .unwrap();
    let classes: Vec<String> = meta["fg_classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let prompts = TemplateSet::Simple.prompts(&classes);
    let expected_prompts: Vec<&str> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(prompts, expected_prompts);
    let batch = tokenizer.encode_longest(&prompts).unwrap();
    assert_eq!(batch.ids, inp.i64s("class_ids"));
    assert_eq!(batch.mask, inp.i64s("class_mask"));
    let embedding = ClassEmbedder::new(&tokenizer, TemplateSet::Simple)
        .embed(&m, &classes, &device)
        .unwrap();
    check("class_embedding", embedding, &out);
}

#[test]
fn tokenizer_pads_captions_to_77() {
    let inp = inputs();
    let tokenizer = TextTokenizer::from_json(
        &std::fs::read_to_string(fixtures_dir().join("minilm/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_dir().join("meta.json")).unwrap())
            .unwrap();
    for (field, name) in [
        ("captions", "caption"),
        ("questions", "question"),
        ("answers", "answer"),
        ("cross_entities", "cross_entity"),
    ] {
        let texts: Vec<String> = meta["config"][field]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        let batch = tokenizer.encode_fixed(&texts).unwrap();
        assert_eq!((batch.batch, batch.len), (2, 77));
        assert_eq!(batch.ids, inp.i64s(&format!("{name}_ids")), "{field}");
        assert_eq!(batch.mask, inp.i64s(&format!("{name}_mask")), "{field}");
    }
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
#[test]
fn losses_from_pre_encoded_texts_equal_the_reference() {
    let device = Default::default();
    let m = model::<B>(&device);
    let (inp, out) = (inputs(), outputs());
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

#[test]
fn losses_and_gradients() {
    let device = Default::default();
    let m = model::<AB>(&device);
    let (inp, out) = (inputs(), outputs());
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

#[test]
fn segmentation_single_window_and_slide() {
    let device = Default::default();
    let m = model::<B>(&device);
    let (inp, out) = (inputs(), outputs());
    let tokenizer = TextTokenizer::from_json(
        &std::fs::read_to_string(fixtures_dir().join("minilm/tokenizer.json")).unwrap(),
    )
    .unwrap();
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
    check("seg_logits_224", window.logits.squeeze_dim::<3>(0), &out);
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
