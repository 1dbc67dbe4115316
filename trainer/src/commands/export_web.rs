//! `ovseg export-web`: what the in-browser page needs, small. An inference-only model file
//! (no momentum encoder, no training heads; f16 weights by default), its configuration, the
//! tokenizer, and precomputed class embeddings for the PASCAL VOC, PASCAL Context, COCO Object
//! and ADE20K vocabularies, so those presets segment without running the text encoder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine as _;
use ovseg_model::record::Precision;
use ovseg_model::segmentation::{ClassEmbedder, TemplateSet, Vocab};
use serde_json::json;

use crate::backend::Cpu;
use crate::model_io::{load_model, save_model, write_atomically};

/// The vocabularies whose class embeddings are precomputed (keys of `vocab.json` datasets).
pub const PRESETS: [&str; 4] = ["voc", "context", "coco_object", "ade20k"];

#[derive(clap::Args)]
pub struct Args {
    /// Model: a file written by `ovseg convert`, or a released .pth with --config.
    #[arg(long)]
    model: PathBuf,
    /// Model configuration, needed with a .pth checkpoint.
    #[arg(long)]
    config: Option<PathBuf>,
    /// tokenizer.json to use instead of the built-in uncased BERT one.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Output folder: model.ovseg, model.json, tokenizer.json, classes.json.
    #[arg(long)]
    out: PathBuf,
    /// Weight storage: f16 (half the size; measured to keep the label map, README) or f32.
    #[arg(long, default_value = "f16", value_parser = ["f16", "f32"])]
    precision: String,
    /// Prompt templates of the precomputed class embeddings.
    #[arg(long, default_value = "simple", value_parser = ["simple", "subset", "full", "identity"])]
    template: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = Default::default();
    let (model, config) = load_model::<Cpu>(&args.model, args.config.as_deref(), &device)?;
    let tokenizer_json = match &args.tokenizer {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => ovseg_model::text::tokenizer::BERT_BASE_UNCASED_JSON
            .as_bytes()
            .to_vec(),
    };
    let tokenizer =
        ovseg_model::text::TextTokenizer::from_bytes(&tokenizer_json).context("tokenizer")?;
    let template = TemplateSet::parse(&args.template)?;
    let model = model.into_inference();

    let mut datasets = serde_json::Map::new();
    for name in PRESETS {
        let vocab = Vocab::get().dataset(name)?;
        let labels: Vec<String> = vocab
            .foreground()
            .iter()
            .map(|c| c.trim().to_string())
            .collect();
        let embeddings =
            ClassEmbedder::new(&tokenizer, template).embed(&model, &labels, &device)?;
        let values: Vec<f32> = embeddings
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("class embeddings: {e:?}"))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        datasets.insert(
            name.to_string(),
            json!({
                "labels": labels,
                "with_background": vocab.with_background,
                "bg_thresh": vocab.bg_thresh,
                "embeddings": base64::engine::general_purpose::STANDARD.encode(bytes),
            }),
        );
    }
    let classes = json!({
        "format": 1,
        "template": template.name(),
        "output_dim": config.output_dim,
        "encoding": "base64 of little-endian f32, [labels x output_dim] row-major",
        "datasets": datasets,
    });

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let precision = match args.precision.as_str() {
        "f32" => Precision::Full,
        _ => Precision::Half,
    };
    let model_path = args.out.join("model.ovseg");
    save_model(model, &config, &model_path, precision)?;
    write_atomically(&args.out.join("tokenizer.json"), &tokenizer_json)?;
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
        "wrote {}: model.ovseg ({} bytes, {}, inference only), model.json, tokenizer.json ({} bytes), classes.json ({} bytes; {})",
        args.out.display(),
        size("model.ovseg"),
        args.precision,
        size("tokenizer.json"),
        size("classes.json"),
        PRESETS.join(", ")
    );
    Ok(())
}
