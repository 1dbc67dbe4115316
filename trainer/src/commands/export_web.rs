//! `ovseg export-web`: what the in-browser page needs, small. The inference-only model (no
//! momentum encoder, no training heads) in two weight packs (`ovseg_model::pack`): the image
//! part, downloaded first, and the text part, downloaded only when the page has to encode words
//! it has no embeddings for, carrying the model's tokenizer; and precomputed class embeddings for the PASCAL VOC,
//! PASCAL Context, COCO Object and ADE20K vocabularies (and any `--labels`), so those segment
//! before the text encoder has even downloaded.

use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine as _;
use burn::prelude::Backend;
use ovseg_model::pack::{write_pack, Pack, PackPart, Storage};
use ovseg_model::segmentation::{ClassEmbedder, TemplateSet, Vocab, MAX_BYTE_LABELS};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvSegmentor;
use serde_json::json;

use crate::backend::Cpu;
use crate::eval::datasets::BENCHMARKS;
use crate::files::write_atomically;
use crate::model_io::{load_model, IMAGE_PACK, TEXT_PACK};

/// The words the page starts with (`www/index.html`), precomputed too so that its first
/// segmentation never waits for the text encoder.
pub const PAGE_LABELS: &str = "person, rocket, flag, sky";

#[derive(clap::Args)]
pub struct Args {
    /// Model: a file written by `ovseg convert`, or a released .pth with --config.
    #[arg(long)]
    model: PathBuf,
    /// Model configuration, needed with a .pth checkpoint: a JSON file or a preset name
    /// (paper, vits-roberta, ...).
    #[arg(long)]
    config: Option<PathBuf>,
    /// tokenizer.json to use instead of the one stored with the model.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Output folder: image.ovsegpack, text.ovsegpack (with the tokenizer), classes.json.
    #[arg(long)]
    out: PathBuf,
    /// Weight storage: int8 (8-bit blocks for the matrices, f16 for the rest; about a quarter
    /// of f32), int8-mlp6 (the transformer MLP matrices in 6-bit blocks), int6 (every matrix in
    /// 6-bit blocks), f16 or f32. Accuracy of each is measured in docs/cli.md.
    #[arg(long, default_value = "int8", value_parser = ["int8", "int8-mlp6", "int6", "f16", "f32"])]
    precision: String,
    /// Also precompute the class embeddings of these comma-separated words (repeatable), e.g.
    /// the words a demo page starts with, so they segment without the text encoder.
    #[arg(long = "labels")]
    labels: Vec<String>,
    /// Prompt templates of the precomputed class embeddings.
    #[arg(long, value_enum, default_value_t)]
    template: TemplateSet,
}

/// A list of classes whose embeddings classes.json carries, with how the page segments them.
struct LabelSet {
    name: String,
    labels: Vec<String>,
    with_background: bool,
    bg_thresh: Option<f64>,
}

/// Every benchmark's classes, the page's first words and each `--labels` list.
fn label_sets(extra: &[String]) -> Result<Vec<LabelSet>> {
    let mut sets = Vec::new();
    // Every benchmark's classes are precomputed.
    for name in BENCHMARKS.iter().map(|b| b.name) {
        let vocab = Vocab::get().dataset(name)?;
        let labels: Vec<String> = vocab
            .foreground()
            .iter()
            .map(|c| c.trim().to_string())
            .collect();
        sets.push(LabelSet {
            name: name.to_string(),
            labels,
            with_background: vocab.with_background,
            bg_thresh: vocab.bg_thresh,
        });
    }
    let page = ovseg_model::segmentation::parse_labels(PAGE_LABELS, MAX_BYTE_LABELS)?;
    sets.push(LabelSet {
        name: "page".to_string(),
        labels: page,
        with_background: true,
        bg_thresh: None,
    });
    for (i, words) in extra.iter().enumerate() {
        let labels = ovseg_model::segmentation::parse_labels(words, MAX_BYTE_LABELS)
            .with_context(|| format!("--labels {words:?}"))?;
        sets.push(LabelSet {
            name: format!("labels{}", i + 1),
            labels,
            with_background: true,
            bg_thresh: None,
        });
    }
    Ok(sets)
}

/// classes.json's `datasets`: each set's labels and their class embeddings (base64 of
/// little-endian f32), by name.
fn embed_sets<B: Backend>(
    model: &OvSegmentor<B>,
    tokenizer: &TextTokenizer,
    template: TemplateSet,
    sets: Vec<LabelSet>,
    device: &B::Device,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut datasets = serde_json::Map::new();
    for set in sets {
        let embeddings =
            ClassEmbedder::new(tokenizer, template).embed(model, &set.labels, device)?;
        let values: Vec<f32> = embeddings
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("class embeddings: {e:?}"))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        datasets.insert(
            set.name,
            json!({
                "labels": set.labels,
                "with_background": set.with_background,
                "bg_thresh": set.bg_thresh,
                "embeddings": base64::engine::general_purpose::STANDARD.encode(bytes),
            }),
        );
    }
    Ok(datasets)
}

pub fn run(args: Args) -> Result<()> {
    let device = Default::default();
    let loaded = load_model::<Cpu>(
        &args.model,
        args.config.as_deref(),
        args.tokenizer.as_deref(),
        &device,
    )?;
    let (model, config, tokenizer) = (loaded.model, loaded.config, loaded.tokenizer);
    let template = args.template;
    let model = model.into_inference();
    let storage = Storage::parse(&args.precision)?;
    let image_pack = write_pack(&model, &config, PackPart::Image, storage, None)?;
    let text_pack = write_pack(
        &model,
        &config,
        PackPart::Text,
        storage,
        tokenizer.stored_json(),
    )?;
    // The presets are embedded by the model as the page will hold it (weights rounded to the
    // storage), so a preset gives what the page's own text encoder would.
    let stored = Pack::from_bytes(image_pack.clone(), IMAGE_PACK)?.init_model::<Cpu>(&device)?;
    let model = Pack::from_bytes(text_pack.clone(), TEXT_PACK)?.load_into(stored, &config)?;

    let sets = label_sets(&args.labels)?;
    let datasets = embed_sets(&model, &tokenizer, template, sets, &device)?;
    let classes = json!({
        "format": 1,
        "template": template.name(),
        "output_dim": config.output_dim,
        "encoding": "base64 of little-endian f32, [labels x output_dim] row-major",
        "datasets": datasets,
    });

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    write_atomically(&args.out.join(IMAGE_PACK), &image_pack)?;
    write_atomically(&args.out.join(TEXT_PACK), &text_pack)?;
    write_atomically(
        &args.out.join("classes.json"),
        serde_json::to_string(&classes)?.as_bytes(),
    )?;
    let size = |f: &str| {
        std::fs::metadata(args.out.join(f))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    println!(
        "wrote {}: {IMAGE_PACK} ({} bytes, {}; the page's first download), {TEXT_PACK} ({} bytes, with the tokenizer; fetched for words without embeddings), classes.json ({} bytes; {}{})",
        args.out.display(),
        size(IMAGE_PACK),
        args.precision,
        size(TEXT_PACK),
        size("classes.json"),
        BENCHMARKS.map(|b| b.name).join(", "),
        if args.labels.is_empty() { String::new() } else { format!(" and {} --labels sets", args.labels.len()) }
    );
    Ok(())
}
