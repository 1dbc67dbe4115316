//! webdataset shards as img2dataset writes them: tar files in which the members of one sample
//! share a key ("00001.jpg", "00001.txt", "00001.json") and follow each other. They are read
//! as a stream: shards in a seeded order, samples through a seeded shuffle buffer.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use crossbeam_channel::Sender;
use rand::seq::SliceRandom;
use rand::Rng;

use ovseg_model::data::entities::EntityVocab;

use super::loader::{DataConfig, Stage};
use super::sample::{rng_for, ImageSource, Job, Purpose};
use super::skips::{SkipCounts, SkipLog};

/// A picture and its caption from a shard, with the caption's entities.
#[derive(Debug, Clone)]
pub struct ShardPair {
    /// "shard.tar/KEY.jpg"
    pub name: String,
    pub image: Arc<Vec<u8>>,
    pub caption: String,
}

/// Picture extensions the decoder reads.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Reads the picture-caption pairs of one shard in order, calling `emit` for each; members
/// without a partner are counted in `unpaired`. A read error ends the shard with an error.
pub fn read_shard(
    path: &Path,
    unpaired: &mut usize,
    mut emit: impl FnMut(ShardPair) -> bool,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open shard {}", path.display()))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let shard_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut current: Option<Pending> = None;
    let entries = archive
        .entries()
        .with_context(|| format!("cannot read shard {}", path.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("shard {} is damaged", path.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path()?.to_string_lossy().into_owned();
        let (key, extension) = split_key(&member);
        if current.as_ref().is_some_and(|c| c.key != key) {
            let done = current.take().expect("checked");
            if let Some(pair) = done.pair(&shard_name, unpaired) {
                if !emit(pair) {
                    return Ok(());
                }
            }
        }
        let pending = current.get_or_insert_with(|| Pending::new(key));
        let extension = extension.to_ascii_lowercase();
        let mut bytes = Vec::with_capacity(entry.header().size().unwrap_or(0) as usize);
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("shard {} is damaged at {member}", path.display()))?;
        if IMAGE_EXTENSIONS.contains(&extension.as_str()) && pending.image.is_none() {
            pending.image = Some((member.clone(), bytes));
        } else if extension == "txt" {
            pending.caption = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    if let Some(pair) = current.and_then(|c| c.pair(&shard_name, unpaired)) {
        emit(pair);
    }
    Ok(())
}

/// webdataset's rule: the key is the member path up to the first dot of its file name.
fn split_key(member: &str) -> (&str, &str) {
    let name_start = member.rfind('/').map_or(0, |i| i + 1);
    match member[name_start..].find('.') {
        Some(dot) => (&member[..name_start + dot], &member[name_start + dot + 1..]),
        None => (member, ""),
    }
}

struct Pending {
    key: String,
    image: Option<(String, Vec<u8>)>,
    caption: Option<String>,
}

impl Pending {
    fn new(key: &str) -> Self {
        Self {
            key: key.to_string(),
            image: None,
            caption: None,
        }
    }

    fn pair(self, shard: &str, unpaired: &mut usize) -> Option<ShardPair> {
        match (self.image, self.caption) {
            (Some((member, image)), Some(caption)) => Some(ShardPair {
                name: format!("{shard}/{member}"),
                image: Arc::new(image),
                caption,
            }),
            (None, None) => None, // only metadata (e.g. a failed download's KEY.json)
            _ => {
                *unpaired += 1;
                None
            }
        }
    }
}

/// Streams the shards' samples of `epoch` into `jobs` from batch `start` on; returns how many
/// samples the epoch holds. The caption-level skip counts describe this pass.
pub(crate) fn feed_shards(
    config: &DataConfig,
    shards: &[PathBuf],
    skips: &SkipLog,
    epoch: usize,
    start: usize,
    jobs: &Sender<Job>,
) -> Result<usize> {
    skips.set_text(SkipCounts::default());
    let mut order: Vec<&PathBuf> = shards.iter().collect();
    order.shuffle(&mut rng_for(config.seed, epoch, 0, Purpose::ShardOrder));
    let mut stream = Stream {
        config,
        epoch,
        skip: start * config.batch_size,
        vocab: EntityVocab::default(),
        buffer: Vec::with_capacity(config.shuffle_buffer.max(1)),
        buffer_rng: rng_for(config.seed, epoch, 0, Purpose::ShuffleBuffer),
        pools: HashMap::new(),
        position: 0,
        jobs,
        closed: false,
    };
    let mut first_error = None;
    for shard in order {
        let mut counts = SkipCounts::default();
        let mut unpaired = 0;
        let result = read_shard(shard, &mut unpaired, |pair| stream.take(pair, &mut counts));
        skips.update_text(|c| {
            c.unpaired += unpaired;
            c.empty_captions += counts.empty_captions;
            c.no_entity += counts.no_entity;
        });
        if let Err(e) = result {
            // A truncated download should not stop training: count it, read the next shard.
            tracing::warn!("{e:#}; going on with the next shard");
            skips.update_text(|c| c.unreadable_shards += 1);
            first_error.get_or_insert(e);
        }
        if stream.closed {
            return Ok(stream.position);
        }
    }
    stream.drain();
    if stream.position == 0 {
        if let Some(e) = first_error {
            return Err(e.context("no sample could be read from the shards"));
        }
    }
    Ok(stream.position)
}

/// A picture's name and encoded bytes.
type Picture = (String, Arc<Vec<u8>>);

struct Stream<'a> {
    config: &'a DataConfig,
    epoch: usize,
    /// Samples before this position are not sent (resume) but still shape the stream.
    skip: usize,
    vocab: EntityVocab,
    buffer: Vec<(ShardPair, Vec<String>, String)>,
    buffer_rng: rand_chacha::ChaCha8Rng,
    /// Entity -> recent samples showing it (stage-2 partners).
    pools: HashMap<String, VecDeque<Picture>>,
    position: usize,
    jobs: &'a Sender<Job>,
    /// The consumer went away.
    closed: bool,
}

impl Stream<'_> {
    /// Filters a pair, passes it through the shuffle buffer; false once the consumer is gone.
    fn take(&mut self, pair: ShardPair, counts: &mut SkipCounts) -> bool {
        let caption = pair.caption.trim().to_string();
        if caption.is_empty() {
            counts.empty_captions += 1;
            return true;
        }
        let found = self.vocab.extract(&caption);
        if found.classes.is_empty() {
            counts.no_entity += 1;
            return true;
        }
        let item = (ShardPair { caption, ..pair }, found.classes, found.question);
        if self.buffer.len() < self.config.shuffle_buffer.max(1) {
            self.buffer.push(item);
            return true;
        }
        let k = self.buffer_rng.random_range(0..self.buffer.len());
        let out = std::mem::replace(&mut self.buffer[k], item);
        self.emit(out);
        !self.closed
    }

    fn drain(&mut self) {
        while !self.buffer.is_empty() && !self.closed {
            let k = self.buffer_rng.random_range(0..self.buffer.len());
            let out = self.buffer.swap_remove(k);
            self.emit(out);
        }
    }

    fn emit(&mut self, (pair, classes, question): (ShardPair, Vec<String>, String)) {
        let position = self.position;
        self.position += 1;
        let partner = match self.config.stage {
            Stage::One => None,
            Stage::Two => {
                let mut rng = rng_for(
                    self.config.seed,
                    self.epoch,
                    position,
                    Purpose::PartnerChoice,
                );
                let entity = classes[rng.random_range(0..classes.len())].clone();
                let source = match self.pools.get(&entity).filter(|p| !p.is_empty()) {
                    Some(pool) => {
                        let (name, bytes) = &pool[rng.random_range(0..pool.len())];
                        ImageSource::Bytes {
                            name: name.clone(),
                            bytes: Arc::clone(bytes),
                        }
                    }
                    None => ImageSource::Bytes {
                        name: pair.name.clone(),
                        bytes: Arc::clone(&pair.image),
                    },
                };
                for class in &classes {
                    let pool = self.pools.entry(class.clone()).or_default();
                    if pool.len() >= self.config.partner_pool.max(1) {
                        pool.pop_front();
                    }
                    pool.push_back((pair.name.clone(), Arc::clone(&pair.image)));
                }
                Some((entity, source))
            }
        };
        if position < self.skip {
            return;
        }
        let job = Job {
            position,
            image: ImageSource::Bytes {
                name: pair.name,
                bytes: pair.image,
            },
            caption: pair.caption,
            question,
            classes,
            partner,
        };
        if self.jobs.send(job).is_err() {
            self.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_webdataset() {
        assert_eq!(split_key("00001.jpg"), ("00001", "jpg"));
        assert_eq!(
            split_key("dir.v2/00001.seg.png"),
            ("dir.v2/00001", "seg.png")
        );
        assert_eq!(split_key("README"), ("README", ""));
    }
}
