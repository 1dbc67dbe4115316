use std::path::PathBuf;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::index::{build_index, build_shard_index};
use crate::data::Source;
use crate::files::write_atomically;

#[derive(clap::Args)]
pub struct Args {
    /// Meta-file (one JSON object a line, {"filename": ..., "caption": ...}), or webdataset
    /// shards: .tar files or folders of them.
    #[arg(required = true, value_name = "META|SHARDS")]
    inputs: Vec<PathBuf>,
    /// Where to write the index (default: the first input with the extension .index.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The original project's released `class_label.json` (picture -> entity class): stage-2
    /// partners then come from --sample-list instead of being computed from captions.
    #[arg(long, requires = "sample_list", value_name = "JSON")]
    class_labels: Option<PathBuf>,
    /// The released `sample_list.json` (entity class -> candidate partners [filename, caption]).
    #[arg(long, requires = "class_labels", value_name = "JSON")]
    sample_list: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.inputs[0].with_extension("index.json"));
    let first = &args.inputs[0];
    let shards =
        args.inputs.len() > 1 || first.is_dir() || first.extension().is_some_and(|e| e == "tar");
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template(if shards {
            "{bar:30} {pos}/{len} shards [{elapsed_precise}<{eta_precise}]"
        } else {
            "{bar:30} {bytes}/{total_bytes} [{elapsed_precise}<{eta_precise}]"
        })
        .expect("template"),
    );
    if shards && args.class_labels.is_some() {
        bail!("--class-labels and --sample-list apply to a meta-file, not to shards");
    }
    let mut index = if shards {
        let Source::Shards { shards } = Source::shards(&args.inputs)? else {
            unreachable!("Source::shards gives shards")
        };
        build_shard_index(&shards, &progress)?
    } else {
        build_index(first, &progress)?
    };
    progress.finish_and_clear();
    if let (Some(labels), Some(list)) = (&args.class_labels, &args.sample_list) {
        index.use_released(labels, list)?;
    }
    let s = &index.skipped;
    for (line, reason) in &s.invalid_examples {
        eprintln!(
            "{} line {line}: skipped, not a JSON object with filename and caption: {reason}",
            first.display()
        );
    }
    if s.invalid_lines > s.invalid_examples.len() {
        eprintln!(
            "{}: ... and {} more invalid lines",
            first.display(),
            s.invalid_lines - s.invalid_examples.len()
        );
    }
    write_atomically(&out, serde_json::to_string(&index)?.as_bytes())?;
    println!(
        "indexed {} pairs with {} entities into {} (skipped: {} invalid lines, {} empty captions, {} without an entity, {} unpaired shard members, {} damaged shards)",
        index.samples.len(),
        index.by_entity.len(),
        out.display(),
        s.invalid_lines,
        s.empty_caption,
        s.no_entity,
        s.unpaired,
        s.damaged_shards
    );
    if let Some(released) = &index.released {
        println!(
            "partners from {} ({} classes); {} pairs without a class label keep their caption's entities",
            released.sample_list,
            released.partners.len(),
            released.unlabelled
        );
    }
    Ok(())
}
