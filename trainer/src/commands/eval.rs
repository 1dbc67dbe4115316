use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ovseg_model::segmentation::{check_bg_thresh, TemplateSet, Vocab};

use burn::prelude::Backend;

use crate::eval::baseline::evaluate_baseline;
use crate::eval::datasets::{read_class_list, Benchmark, Dataset, BENCHMARKS};
use crate::eval::imagenet::{classify, read_val_list};
use crate::eval::run::{evaluate, EvalOptions};
use crate::files::write_atomically;

/// Zero-shot ImageNet classification (top-1/top-5) over a folder and its val.csv, beside the
/// segmentation benchmarks.
const IMAGENET: &str = "imagenet";

fn dataset_names() -> clap::builder::PossibleValuesParser {
    BENCHMARKS
        .iter()
        .map(|b| b.name)
        .chain([IMAGENET])
        .collect::<Vec<_>>()
        .into()
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// A segmentation benchmark, or imagenet (classification).
    #[arg(long, value_parser = dataset_names())]
    dataset: String,
    /// Dataset folder in the benchmark's usual layout.
    #[arg(long)]
    root: PathBuf,
    /// Write the scores as JSON (miou, macc, aacc in percent; per_class IoU by class name).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Score only the first N pictures.
    #[arg(long)]
    limit: Option<usize>,
    /// Write each prediction as a coloured PNG into this folder.
    #[arg(long)]
    save_pred: Option<PathBuf>,
    /// Class names for custom data in a benchmark's layout: comma separated or a file, one a
    /// line, background first when the layout has one.
    #[arg(long)]
    classes: Option<String>,
    /// Background threshold override.
    #[arg(long)]
    bg_thresh: Option<f64>,
    /// Prompt templates ensembled per class (default: simple for segmentation, full for ImageNet).
    #[arg(long, value_enum)]
    template: Option<TemplateSet>,
    /// ImageNet: the label file, `<image>,<class index>` per line (default ROOT/val.csv).
    #[arg(long)]
    labels_file: Option<PathBuf>,
    /// Also score the image-level baseline (every pixel gets the class the whole picture's
    /// embedding matches best, the picture resized to one segmentation window) and print both
    /// tables side by side; --out then holds {"segmentation": .., "baseline": ..}.
    #[arg(long)]
    baseline: bool,
}

fn bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}, {per_sec}]",
        )
        .expect("template"),
    );
    bar
}

pub fn run(args: Args) -> Result<()> {
    crate::on_device!(args.model.device, run_on(&args))
}

fn run_on<B: Backend>(args: &Args, device: B::Device) -> Result<()> {
    if let Some(t) = args.bg_thresh {
        check_bg_thresh(t).context("--bg-thresh")?;
    }
    let classes = args.classes.as_deref().map(read_class_list).transpose()?;

    if args.dataset == IMAGENET {
        return imagenet::<B>(args, classes, device);
    }
    let benchmark = Benchmark::named(&args.dataset)?;
    let dataset = Dataset::open(benchmark, &args.root, classes, args.bg_thresh)?;
    let (model, tokenizer) = args.model.load::<B>(&device)?;
    let options = EvalOptions {
        template: args.template.unwrap_or(TemplateSet::Simple),
        limit: args.limit,
        save_pred: args.save_pred.clone(),
        window: args.model.window,
    };
    let progress = bar();
    let report = evaluate(&model, &tokenizer, &dataset, &options, &progress, &device)?;
    progress.finish_and_clear();
    if args.baseline {
        let progress = bar();
        let baseline =
            evaluate_baseline(&model, &tokenizer, &dataset, &options, &progress, &device)?;
        progress.finish_and_clear();
        print!("{}", report.side_by_side(&baseline));
        if let Some(out) = &args.out {
            let both = serde_json::json!({"segmentation": report, "baseline": baseline});
            write_atomically(out, serde_json::to_string_pretty(&both)?.as_bytes())?;
        }
        return Ok(());
    }
    print!("{}", report.table());
    if let Some(out) = &args.out {
        write_atomically(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

/// `--dataset imagenet`: top-1 and top-5 zero-shot classification.
fn imagenet<B: Backend>(
    args: &Args,
    classes: Option<Vec<String>>,
    device: B::Device,
) -> Result<()> {
    let names = classes.unwrap_or_else(|| Vocab::get().imagenet_classes.clone());
    let list = read_val_list(
        &args
            .labels_file
            .clone()
            .unwrap_or_else(|| args.root.join("val.csv")),
        names.len(),
    )?;
    let list = &list[..args.limit.unwrap_or(usize::MAX).min(list.len())];
    let template = args.template.unwrap_or(TemplateSet::Full);
    let (model, tokenizer) = args.model.load::<B>(&device)?;
    let progress = bar();
    let report = classify(
        &model, &tokenizer, &args.root, list, &names, template, 32, &progress, &device,
    )?;
    progress.finish_and_clear();
    println!(
        "imagenet: {} images, top-1 {:.2}, top-5 {:.2}",
        report.images, report.top1, report.top5
    );
    if let Some(out) = &args.out {
        write_atomically(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}
