//! `ovseg`: the command line over the model crate (docs/cli.md lists every command).

mod backend;
mod commands;
mod model_io;
mod synth;

use clap::{Parser, Subcommand};
// The library's modules under the names the commands use (`crate::train`, ...).
use ovseg_trainer::{data, eval, files, image_io, overlay, train};

#[derive(Parser)]
#[command(
    name = "ovseg",
    version,
    about = "Open-vocabulary semantic segmentation (OVSegmentor, CVPR 2023)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a released PyTorch checkpoint (.pth) into an ovseg model file.
    Convert(commands::convert::Args),
    /// Label every pixel of one or more pictures with one of the given words.
    Segment(commands::segment::Args),
    /// Extract caption entities from a meta-file and index which pairs show each entity.
    Index(commands::index::Args),
    /// Train OVSegmentor on image-caption pairs (stage 1 or 2 of the paper's recipe).
    Train(Box<commands::train::Args>),
    /// Zero-shot mIoU on a segmentation benchmark, or ImageNet top-1/top-5.
    Eval(commands::eval::Args),
    /// Generate a synthetic world: image-caption pairs and a held-out split with ground truth.
    Synth(commands::synth::Args),
    /// Write what the in-browser page needs: inference-only weight packs (int8 by default; the
    /// text pack carries the tokenizer) and precomputed class embeddings of the VOC, Context,
    /// COCO Object and ADE20K vocabularies.
    ExportWeb(commands::export_web::Args),
    /// Time the image and text encoders on the CPU backends (random weights), or training.
    Bench(commands::bench::Args),
    /// The meeting point of a training run over several machines.
    Orchestrator(commands::orchestrator::Args),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OVSEG_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(args) => commands::convert::run(args),
        Command::Segment(args) => commands::segment::run(args),
        Command::Index(args) => commands::index::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Train(args) => commands::train::run(*args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Orchestrator(args) => commands::orchestrator::run(args),
        Command::Synth(args) => commands::synth::run(args),
        Command::ExportWeb(args) => commands::export_web::run(args),
    };
    if let Err(error) = result {
        // One line: the chain of causes, most general first.
        let reason: Vec<String> = error
            .chain()
            .map(|e| e.to_string().replace('\n', " "))
            .collect();
        eprintln!("error: {}", reason.join(": "));
        std::process::exit(1);
    }
}
