//! `ovseg index`: one pass over a meta-file (`{"filename": ..., "caption": ...}` a line) that
//! keeps the pairs whose caption names an entity (the paper's CC4M filter) and records, for
//! every entity, the pairs that show it (cross-image partners are drawn from these lists).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use ovseg_model::data::entities::EntityVocab;

pub const INDEX_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedSample {
    pub filename: String,
    pub caption: String,
    pub entities: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Lines that are not a JSON object with a filename and a caption...
    pub invalid_lines: usize,
    /// ...and the first of them as (line number, reason).
    pub invalid_examples: Vec<(usize, String)>,
    pub empty_caption: usize,
    pub no_entity: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityIndex {
    pub version: u32,
    pub samples: Vec<IndexedSample>,
    /// Entity class -> indices into `samples`.
    pub by_entity: BTreeMap<String, Vec<usize>>,
    pub skipped: Skipped,
}

#[derive(Deserialize)]
struct MetaLine {
    filename: String,
    caption: String,
}

/// At most this many invalid lines are listed one by one (all are counted).
const LISTED_INVALID: usize = 100;

pub fn build_index(meta: &Path, progress: &ProgressBar) -> Result<EntityIndex> {
    let file = std::fs::File::open(meta)
        .with_context(|| format!("cannot open meta-file {}", meta.display()))?;
    progress.set_length(file.metadata().map(|m| m.len()).unwrap_or(0));
    let vocab = EntityVocab::default();
    let mut index = EntityIndex {
        version: INDEX_VERSION,
        samples: Vec::new(),
        by_entity: BTreeMap::new(),
        skipped: Skipped::default(),
    };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{} line {}: cannot read", meta.display(), i + 1))?;
        progress.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        let parsed: MetaLine = match serde_json::from_str(&line) {
            Ok(p) => p,
            Err(e) => {
                index.skipped.invalid_lines += 1;
                if index.skipped.invalid_examples.len() < LISTED_INVALID {
                    index.skipped.invalid_examples.push((i + 1, e.to_string()));
                }
                continue;
            }
        };
        if parsed.caption.trim().is_empty() {
            index.skipped.empty_caption += 1;
            continue;
        }
        let entities = vocab.extract(&parsed.caption).classes;
        if entities.is_empty() {
            index.skipped.no_entity += 1;
            continue;
        }
        let id = index.samples.len();
        for e in &entities {
            index.by_entity.entry(e.clone()).or_default().push(id);
        }
        index.samples.push(IndexedSample {
            filename: parsed.filename,
            caption: parsed.caption,
            entities,
        });
    }
    Ok(index)
}
