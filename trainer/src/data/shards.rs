//! webdataset shards as img2dataset writes them: tar files in which the members of one sample
//! share a key ("00001.jpg", "00001.txt", "00001.json") and follow each other. They are read
//! as a stream: shards in a seeded order, samples through a seeded shuffle buffer.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use crossbeam_channel::Sender;
use rand::seq::SliceRandom;
use rand::Rng;

use ovseg_model::data::entities::EntityVocab;

use super::augment::Stage;
use super::config::DataConfig;
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

/// Pictures and captions larger than this are skipped as damaged: img2dataset's pictures are
/// resized, a few hundred kB, and a member's bytes are held in memory whole.
pub const MAX_MEMBER_BYTES: u64 = 64 << 20;

/// Reads the picture-caption pairs of one shard in order, calling `emit` for each; members
/// without a partner are counted in `unpaired`, and so is a sample whose picture or caption is
/// over [`MAX_MEMBER_BYTES`] (skipped unread as damaged, with a warning naming it). A damaged
/// shard (unreadable header, a member claiming more bytes than the file has left: truncated)
/// ends with an error naming it and the member, after the pairs before it were emitted. The
/// memory a member takes is bounded by the cap and by the bytes left in the file, whatever its
/// header says.
pub fn read_shard(
    path: &Path,
    unpaired: &mut usize,
    emit: impl FnMut(ShardPair) -> bool,
) -> Result<()> {
    read_shard_capped(path, MAX_MEMBER_BYTES, unpaired, emit)
}

fn read_shard_capped(
    path: &Path,
    max_member: u64,
    unpaired: &mut usize,
    mut emit: impl FnMut(ShardPair) -> bool,
) -> Result<()> {
    let (mut archive, file_len) = open_shard(path)?;
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
        let member = entry
            .path()
            .with_context(|| format!("shard {} is damaged: a member's name", path.display()))?
            .to_string_lossy()
            .into_owned();
        // The size the header claims (or its pax extension), checked before any byte is read.
        let size = entry.size();
        let left = file_len.saturating_sub(entry.raw_file_position());
        if size > left {
            bail!(
                "shard {} is damaged: {member} claims {size} bytes but only {left} are left in the file (truncated?)",
                path.display()
            );
        }
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
        let image = IMAGE_EXTENSIONS.contains(&extension.as_str()) && pending.image.is_none();
        if !image && extension != "txt" {
            continue; // metadata and extra pictures: the archive skips their bytes
        }
        if size > max_member {
            tracing::warn!(
                "skipping {shard_name}/{member}: {size} bytes, over the limit of {max_member} for a picture or caption; its sample is dropped as damaged"
            );
            pending.damaged = true;
            continue;
        }
        // At most `max_member`, and no more than the file holds.
        let bytes = read_member(&mut entry, size, path, &member)?;
        if image {
            pending.image = Some((member.clone(), bytes));
        } else {
            pending.caption = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    if let Some(pair) = current.and_then(|c| c.pair(&shard_name, unpaired)) {
        emit(pair);
    }
    Ok(())
}

/// Opens a shard, with the file's length: what a member's data can take at most is the bytes
/// after its header (a pipe: unknown, `u64::MAX`).
fn open_shard(path: &Path) -> Result<(tar::Archive<BufReader<File>>, u64)> {
    let file = File::open(path).with_context(|| format!("cannot open shard {}", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read shard {}", path.display()))?;
    let file_len = if metadata.is_file() {
        metadata.len()
    } else {
        u64::MAX
    };
    Ok((tar::Archive::new(BufReader::new(file)), file_len))
}

/// The `size` bytes of `member`, read whole; a shard that ends before them is damaged.
fn read_member(entry: &mut impl Read, size: u64, path: &Path, member: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("shard {} is damaged at {member}", path.display()))?;
    if bytes.len() as u64 != size {
        bail!(
            "shard {} is damaged: {member} ends after {} of its {size} bytes",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes)
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
    /// A picture or caption of it was skipped as oversized.
    damaged: bool,
}

impl Pending {
    fn new(key: &str) -> Self {
        Self {
            key: key.to_string(),
            image: None,
            caption: None,
            damaged: false,
        }
    }

    fn pair(self, shard: &str, unpaired: &mut usize) -> Option<ShardPair> {
        if self.damaged {
            *unpaired += 1;
            return None;
        }
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

/// Streams this machine's samples of `epoch` into `jobs` from its batch `start` on; returns how
/// many samples its epoch holds. The epoch's shard order is dealt out to the machines of
/// `config.share` in turn, so each shard is read by one machine an epoch. The caption-level skip
/// counts describe this pass.
pub(crate) fn feed_shards(
    config: &DataConfig,
    shards: &[PathBuf],
    skips: &SkipLog,
    epoch: usize,
    start: usize,
    jobs: &Sender<Job>,
) -> Result<usize> {
    skips.set_text(SkipCounts::default());
    let share = config.share;
    let mut order: Vec<&PathBuf> = shards.iter().collect();
    order.shuffle(&mut rng_for(config.seed, epoch, 0, Purpose::ShardOrder));
    let order = order.into_iter().skip(share.node).step_by(share.nodes);
    let mut stream = Stream {
        config,
        epoch,
        skip: start * share.rows_per_node(config.batch_size),
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
        let local = self.position;
        self.position += 1;
        // Positions key the random draws: the machines' streams interleave, never repeat.
        let share = self.config.share;
        let position = local * share.nodes + share.node;
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
        if local < self.skip {
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

    /// A ustar header made by hand: the size field holds 12 octal digits (up to 64 GiB).
    fn tar_header(name: &str, size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:012o}").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    /// A member: its header, then its bytes padded to the 512-byte block.
    fn tar_member(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        out.extend(tar_header(name, data.len() as u64));
        out.extend(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ovseg-shards-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Three samples; the third's picture is 200 bytes.
    fn good_shard(path: &Path) {
        let mut tar = Vec::new();
        for (key, caption, picture) in [
            ("00001", "a dog on the grass", 20),
            ("00002", "a cat on a sofa", 30),
            ("00003", "a horse in a field", 200),
        ] {
            tar_member(&mut tar, &format!("{key}.jpg"), &vec![7u8; picture]);
            tar_member(&mut tar, &format!("{key}.txt"), caption.as_bytes());
            tar_member(&mut tar, &format!("{key}.json"), b"{}");
        }
        tar.extend([0u8; 1024]);
        std::fs::write(path, tar).unwrap();
    }

    /// 2 KB in which a picture claims 40 GiB.
    fn hostile_shard(path: &Path) -> Vec<u8> {
        let mut tar = Vec::new();
        tar_member(&mut tar, "00001.txt", b"a dog asleep");
        tar.extend(tar_header("00001.jpg", 40 << 30));
        tar.extend([0xffu8; 512]);
        assert_eq!(tar.len(), 2048);
        std::fs::write(path, &tar).unwrap();
        tar
    }

    /// Members over the cap are skipped unread and their sample counted; a member claiming more
    /// than the file holds ends the shard with an error naming it, nothing reserved for it.
    #[test]
    fn oversized_and_truncated_members() {
        let dir = scratch("members");
        let (good, hostile) = (dir.join("good.tar"), dir.join("hostile.tar"));
        good_shard(&good);
        hostile_shard(&hostile);
        let mut pairs = Vec::new();
        let mut unpaired = 0;
        read_shard_capped(&good, 100, &mut unpaired, |p| {
            pairs.push((p.name, p.image.len(), p.caption));
            true
        })
        .unwrap();
        assert_eq!(
            pairs,
            vec![
                (
                    "good.tar/00001.jpg".to_string(),
                    20,
                    "a dog on the grass".to_string()
                ),
                (
                    "good.tar/00002.jpg".to_string(),
                    30,
                    "a cat on a sofa".to_string()
                ),
            ]
        );
        assert_eq!(unpaired, 1);
        // With the real cap the third is read too.
        let mut n = 0;
        read_shard(&good, &mut 0, |_| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 3);

        let mut emitted = 0;
        let e = read_shard(&hostile, &mut 0, |_| {
            emitted += 1;
            true
        })
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "shard {} is damaged: 00001.jpg claims 42949672960 bytes but only 512 are left in the file (truncated?)",
                hostile.display()
            )
        );
        assert_eq!(emitted, 0);
        // A member ending early within what the file holds (the claim fits, the bytes do not
        // follow it as a tar would have them): still an error, not a short picture.
        let mut short = Vec::new();
        tar_member(&mut short, "00001.txt", b"a dog");
        short.extend(tar_header("00001.jpg", 600));
        short.extend([1u8; 100]);
        let path = dir.join("short.tar");
        std::fs::write(&path, &short).unwrap();
        let e = read_shard(&path, &mut 0, |_| true).unwrap_err();
        assert!(
            format!("{e:#}").contains("00001.jpg claims 600 bytes but only 100"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Training reads on past a hostile shard and counts it.
    #[test]
    fn a_hostile_shard_is_counted_not_fatal() {
        let dir = scratch("feed");
        let (good, hostile) = (dir.join("good.tar"), dir.join("hostile.tar"));
        good_shard(&good);
        hostile_shard(&hostile);
        let config = DataConfig::new(Stage::One, 1, 7);
        let skips = SkipLog::default();
        let (jobs, received) = crossbeam_channel::unbounded();
        let total = feed_shards(&config, &[hostile.clone(), good], &skips, 0, 0, &jobs).unwrap();
        assert_eq!(total, 3);
        assert_eq!(received.try_iter().count(), 3);
        let counts = skips.counts();
        assert_eq!((counts.unreadable_shards, counts.unpaired), (1, 0));
        assert!(
            counts.to_string().contains("1 unreadable shard"),
            "{counts}"
        );
        // Only the hostile shard: nothing to train on, an error naming it.
        let e =
            feed_shards(&config, std::slice::from_ref(&hostile), &skips, 0, 0, &jobs).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.starts_with("no sample could be read from the shards: shard ")
                && e.contains("hostile.tar is damaged: 00001.jpg claims 42949672960 bytes"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
