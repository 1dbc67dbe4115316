use std::path::PathBuf;

use anyhow::{Context, Result};
use ovseg_model::import::load_checkpoint;
use ovseg_model::record::Precision;

use crate::backend::Cpu;
use crate::model_io::{
    check_tokenizer, config_path_beside, load_tokenizer, read_config, save_model,
};

#[derive(clap::Args)]
pub struct Args {
    /// Released checkpoint: a PyTorch .pth whose `model` entry is the state dict.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Model configuration the checkpoint was trained with: a JSON file (`model_type` bert or
    /// roberta and the text encoder's HuggingFace fields) or a preset name (paper, vits-roberta).
    #[arg(long)]
    config: PathBuf,
    /// The model's tokenizer.json, stored in the model file (needed for RoBERTa; default: the
    /// built-in uncased BERT one).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Where to write the ovseg model file; the configuration goes beside it as <name>.json.
    #[arg(long)]
    out: PathBuf,
    /// Store the weights as f16 (half the size).
    #[arg(long)]
    half: bool,
    /// Leave out the momentum encoder and the training heads (inference only, smaller).
    #[arg(long)]
    inference_only: bool,
}

pub fn run(args: Args) -> Result<()> {
    let device = Default::default();
    let config = read_config(&args.config)?;
    let tokenizer = load_tokenizer(args.tokenizer.as_deref())?;
    let origin = match &args.tokenizer {
        Some(path) => format!("--tokenizer {}", path.display()),
        None => {
            "the built-in uncased BERT tokenizer (give the model's own with --tokenizer)".into()
        }
    };
    check_tokenizer(&tokenizer, &config, origin)?;
    let (model, report) = load_checkpoint::<Cpu>(&args.checkpoint, &config, &device)?;
    tracing::info!(loaded = report.loaded, ignored = ?report.ignored, "checkpoint read");
    crate::model_io::check_finite(&model, &args.checkpoint)?;
    let model = if args.inference_only {
        model.into_inference()
    } else {
        model
    };
    let precision = if args.half {
        Precision::Half
    } else {
        Precision::Full
    };
    save_model(model, &config, &tokenizer, &args.out, precision)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} tensors, {}) and {}",
        args.out.display(),
        report.loaded,
        if args.half { "f16" } else { "f32" },
        config_path_beside(&args.out).display()
    );
    Ok(())
}
