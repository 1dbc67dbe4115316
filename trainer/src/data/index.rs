//! `ovseg index`: one pass over a meta-file (`{"filename": ..., "caption": ...}` a line) that
//! keeps the pairs whose caption names an entity (the paper's CC4M filter) and records, for
//! every entity, the pairs that show it (cross-image partners are drawn from these lists).
//! The same over webdataset shards.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use ovseg_model::data::entities::EntityVocab;

use super::released::{read_class_labels, read_sample_list, ReleasedPartners};
use super::shards::read_shard;
pub use super::skips::Skipped;

pub const INDEX_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedSample {
    pub filename: String,
    pub caption: String,
    pub entities: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityIndex {
    pub version: u32,
    pub samples: Vec<IndexedSample>,
    /// Entity class -> indices into `samples`.
    pub by_entity: BTreeMap<String, Vec<usize>>,
    pub skipped: Skipped,
    /// Partners from the original project's released sampling files, when `ovseg index` was
    /// given them (see `released.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<ReleasedPartners>,
}

impl EntityIndex {
    /// Reads an index written by `ovseg index`, refusing other versions.
    pub fn load(path: &Path) -> Result<EntityIndex> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read entity index {}", path.display()))?;
        #[derive(Deserialize)]
        struct Version {
            version: Option<u32>,
        }
        let found: Version = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not an entity index (JSON object expected)",
                path.display()
            )
        })?;
        match found.version {
            Some(INDEX_VERSION) => {}
            Some(v) => bail!(
                "entity index {} has version {v} but this ovseg reads version {INDEX_VERSION}; \
                 rebuild it with `ovseg index`",
                path.display()
            ),
            None => bail!(
                "{} is not an entity index (no \"version\" field); build one with `ovseg index`",
                path.display()
            ),
        }
        let index: EntityIndex = serde_json::from_str(&text)
            .with_context(|| format!("entity index {} is damaged", path.display()))?;
        for (entity, ids) in &index.by_entity {
            if let Some(bad) = ids.iter().find(|&&i| i >= index.samples.len()) {
                bail!(
                    "entity index {} is damaged: '{entity}' lists pair {bad} of {}",
                    path.display(),
                    index.samples.len()
                );
            }
        }
        Ok(index)
    }
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
        released: None,
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
        index.add(&vocab, parsed.filename, parsed.caption);
    }
    Ok(index)
}

/// The same index over webdataset shards; a sample's filename is "SHARD.tar/KEY.jpg". (The
/// loader streams shards without it; it reports what the entity filter keeps.)
pub fn build_shard_index(shards: &[PathBuf], progress: &ProgressBar) -> Result<EntityIndex> {
    progress.set_length(shards.len() as u64);
    let vocab = EntityVocab::default();
    let mut index = EntityIndex {
        version: INDEX_VERSION,
        samples: Vec::new(),
        by_entity: BTreeMap::new(),
        skipped: Skipped::default(),
        released: None,
    };
    let mut last_damage = None;
    for shard in shards {
        let mut unpaired = 0;
        let read = read_shard(shard, &mut unpaired, |pair| {
            if pair.caption.trim().is_empty() {
                index.skipped.empty_caption += 1;
            } else {
                index.add(&vocab, pair.name, pair.caption.trim().to_string());
            }
            true
        });
        if let Err(e) = read {
            // Training skips such a shard the same way (and keeps the pairs before the damage).
            progress.suspend(|| tracing::warn!("{e:#}; its pairs after the damage are skipped"));
            index.skipped.damaged_shards += 1;
            last_damage = Some(e);
        }
        index.skipped.unpaired += unpaired;
        progress.inc(1);
    }
    if let Some(e) = last_damage.filter(|_| index.skipped.damaged_shards == shards.len()) {
        return Err(e.context(format!("all {} shards are damaged", shards.len())));
    }
    Ok(index)
}

impl EntityIndex {
    fn add(&mut self, vocab: &EntityVocab, filename: String, caption: String) {
        let entities = vocab.extract(&caption).classes;
        if entities.is_empty() {
            self.skipped.no_entity += 1;
            return;
        }
        let id = self.samples.len();
        for e in &entities {
            self.by_entity.entry(e.clone()).or_default().push(id);
        }
        self.samples.push(IndexedSample {
            filename,
            caption,
            entities,
        });
    }
}

impl EntityIndex {
    /// Gives every pair with a class label that class as its one entity and takes partners from
    /// the sample list instead of the index's own lists.
    pub fn use_released(&mut self, class_labels: &Path, sample_list: &Path) -> Result<()> {
        let labels = read_class_labels(class_labels)?;
        let partners = read_sample_list(sample_list)?;
        let mut by_entity: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut unlabelled = 0;
        for (id, sample) in self.samples.iter_mut().enumerate() {
            let name = sample
                .filename
                .rsplit('/')
                .next()
                .unwrap_or(&sample.filename);
            match labels.get(name) {
                Some(class) => sample.entities = vec![class.clone()],
                None => unlabelled += 1,
            }
            for entity in &sample.entities {
                by_entity.entry(entity.clone()).or_default().push(id);
            }
        }
        self.by_entity = by_entity;
        self.released = Some(ReleasedPartners {
            class_labels: class_labels.display().to_string(),
            sample_list: sample_list.display().to_string(),
            partners,
            unlabelled,
        });
        Ok(())
    }

    /// A pair's partner candidates for `entity` from the released sample list, if it has any.
    pub fn released_partners(&self, entity: &str) -> Option<&[String]> {
        let list = self.released.as_ref()?.partners.get(entity)?;
        (!list.is_empty()).then_some(list.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_checks_the_version_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("ovseg-index-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = dir.join("meta.jsonl");
        std::fs::write(
            &meta,
            "{\"filename\": \"a.jpg\", \"caption\": \"a dog on a sofa\"}\nnot json\n",
        )
        .unwrap();
        let index = build_index(&meta, &ProgressBar::hidden()).unwrap();
        let path = dir.join("meta.index.json");
        std::fs::write(&path, serde_json::to_string(&index).unwrap()).unwrap();
        let loaded = EntityIndex::load(&path).unwrap();
        assert_eq!(loaded, index);
        assert_eq!(loaded.by_entity["dog"], vec![0]);
        assert_eq!(loaded.skipped.invalid_examples[0].0, 2);

        let old =
            serde_json::to_string(&index)
                .unwrap()
                .replacen("\"version\":1", "\"version\":7", 1);
        std::fs::write(&path, old).unwrap();
        let err = format!("{:#}", EntityIndex::load(&path).unwrap_err());
        assert!(
            err.contains("version 7") && err.contains("meta.index.json"),
            "{err}"
        );
        std::fs::write(&path, "[1, 2]").unwrap();
        let err = format!("{:#}", EntityIndex::load(&path).unwrap_err());
        assert!(
            err.contains("not an entity index") && err.contains("meta.index.json"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            EntityIndex::load(&dir.join("missing.json")).unwrap_err()
        );
        assert!(err.contains("missing.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
