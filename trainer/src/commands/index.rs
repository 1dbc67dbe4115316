use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::index::build_index;
use crate::model_io::write_atomically;

#[derive(clap::Args)]
pub struct Args {
    /// Meta-file: one JSON object a line, {"filename": ..., "caption": ...}.
    meta: PathBuf,
    /// Where to write the index (default: META with the extension .index.json).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.meta.with_extension("index.json"));
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("template"),
    );
    let index = build_index(&args.meta, &progress)?;
    progress.finish_and_clear();
    let s = &index.skipped;
    for (line, reason) in &s.invalid_examples {
        eprintln!(
            "{} line {line}: skipped, not a JSON object with filename and caption: {reason}",
            args.meta.display()
        );
    }
    if s.invalid_lines > s.invalid_examples.len() {
        eprintln!(
            "{}: ... and {} more invalid lines",
            args.meta.display(),
            s.invalid_lines - s.invalid_examples.len()
        );
    }
    write_atomically(&out, serde_json::to_string(&index)?.as_bytes())?;
    println!(
        "indexed {} pairs with {} entities into {} (skipped: {} invalid lines, {} empty captions, {} without an entity)",
        index.samples.len(),
        index.by_entity.len(),
        out.display(),
        s.invalid_lines,
        s.empty_caption,
        s.no_entity
    );
    Ok(())
}
