//! The training data loader: batches of augmented pictures and their texts, made by a pool of
//! threads, prefetched, in an order fixed by (seed, epoch) alone.
//!
//! A feeder thread lists the samples of the epoch in order (a seeded shuffle of the meta-file's
//! pairs, or the shard stream through a seeded shuffle buffer); workers decode and augment them;
//! the iterator puts them back in order and cuts batches. A sample whose picture cannot be read
//! takes the place of the next readable sample of its batch, with its own random draws.
//!
//! On several machines ([`Share`](super::Share)) each decodes only its part: a meta-file's
//! epoch is listed alike everywhere and each machine makes its own rows of every global batch;
//! shards are dealt out to the machines, reshuffled every epoch, each read by one machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use rand::seq::SliceRandom;
use rand::Rng;

use ovseg_model::data::entities::EntityVocab;
use ovseg_model::segmentation::TemplateSet;

pub use super::augment::{Augmentation, Stage};
use super::batch::{Batch, DataPosition};
pub use super::config::DataConfig;
use super::index::{build_index, EntityIndex};
use super::sample::{rng_for, ImageSource, Job, Purpose, Recipe, Sample};
use super::shards::feed_shards;
use super::skips::{SkipCounts, SkipLog};

pub enum Source {
    /// A meta-file, the folder its filenames are relative to, and its entity index.
    Meta {
        meta: PathBuf,
        images: PathBuf,
        index: EntityIndex,
    },
    /// webdataset tar shards (img2dataset's output): `KEY.jpg` beside `KEY.txt`.
    Shards { shards: Vec<PathBuf> },
}

impl Source {
    /// A meta-file source with the index `ovseg index` wrote beside it (META.index.json), or,
    /// when there is none or it is older than the meta-file, an index built now.
    pub fn meta(meta: &Path, images: &Path) -> Result<Source> {
        let index_path = meta.with_extension("index.json");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let current = match (modified(&index_path), modified(meta)) {
            (Some(index), Some(meta)) => index >= meta,
            _ => false,
        };
        let index = if current {
            EntityIndex::load(&index_path)?
        } else {
            if index_path.exists() && EntityIndex::load(&index_path)?.released.is_some() {
                bail!(
                    "{} is newer than {}, which was built with the released sampling files; \
                     rebuild it with `ovseg index {} --class-labels ... --sample-list ...`",
                    meta.display(),
                    index_path.display(),
                    meta.display()
                );
            }
            tracing::info!(
                "no current {}; indexing {} now",
                index_path.display(),
                meta.display()
            );
            build_index(meta, &indicatif::ProgressBar::hidden())?
        };
        Ok(Source::Meta {
            meta: meta.to_path_buf(),
            images: images.to_path_buf(),
            index,
        })
    }

    /// Shards named one by one, or every `*.tar` in a folder named (sorted).
    pub fn shards(paths: &[PathBuf]) -> Result<Source> {
        let mut shards = Vec::new();
        for path in paths {
            if path.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                    .with_context(|| format!("cannot list shard folder {}", path.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "tar"))
                    .collect();
                if found.is_empty() {
                    bail!("shard folder {} holds no .tar files", path.display());
                }
                found.sort();
                shards.extend(found);
            } else if path.is_file() {
                shards.push(path.clone());
            } else {
                bail!("shard {} does not exist", path.display());
            }
        }
        if shards.is_empty() {
            bail!("no shard given");
        }
        Ok(Source::Shards { shards })
    }
}

pub struct Loader {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    config: DataConfig,
    layout: BatchLayout,
    skips: SkipLog,
}

/// Which sample positions make this machine's batches.
enum BatchLayout {
    /// A meta-file: every machine lists the whole epoch in the same order and makes its `rows`
    /// (`mine`) of each global batch of `global` samples, so the draws of every sample are those
    /// of a one-machine run.
    Rows {
        global: usize,
        rows: Vec<usize>,
        mine: Vec<bool>,
        micro: usize,
    },
    /// Shard streams: each machine reads its own shards; sample `i` of its stream takes
    /// position `i * nodes + node` (the key of its random draws) and `batch` of them make a
    /// batch.
    Stream {
        batch: usize,
        node: usize,
        nodes: usize,
        micro: usize,
    },
}

impl BatchLayout {
    fn new(source: &Source, config: &DataConfig) -> BatchLayout {
        let share = config.share;
        match source {
            Source::Meta { .. } => {
                let rows = share.rows(config.batch_size);
                let mut mine = vec![false; config.batch_size];
                for &row in &rows {
                    mine[row] = true;
                }
                BatchLayout::Rows {
                    global: config.batch_size,
                    rows,
                    mine,
                    micro: share.micro_rows(config.batch_size),
                }
            }
            Source::Shards { .. } => BatchLayout::Stream {
                batch: share.rows_per_node(config.batch_size),
                node: share.node,
                nodes: share.nodes,
                micro: share.micro_rows(config.batch_size),
            },
        }
    }

    /// Samples one device trains in one micro-step.
    fn micro_rows(&self) -> usize {
        match self {
            BatchLayout::Rows { micro, .. } | BatchLayout::Stream { micro, .. } => *micro,
        }
    }

    /// Samples in one of this machine's batches.
    fn size(&self) -> usize {
        match self {
            BatchLayout::Rows { rows, .. } => rows.len(),
            BatchLayout::Stream { batch, .. } => *batch,
        }
    }

    /// The positions batch `index` of this machine takes, in order.
    fn slots(&self, index: usize) -> Vec<usize> {
        match self {
            BatchLayout::Rows { global, rows, .. } => {
                rows.iter().map(|r| index * global + r).collect()
            }
            BatchLayout::Stream {
                batch, node, nodes, ..
            } => (index * batch..(index + 1) * batch)
                .map(|i| i * nodes + node)
                .collect(),
        }
    }

    /// Whether batch `index` is whole in an epoch whose feeder listed `total` samples (all
    /// positions of a meta-file epoch; this machine's samples of a stream).
    fn fits(&self, index: usize, total: usize) -> bool {
        let per_batch = match self {
            BatchLayout::Rows { global, .. } => *global,
            BatchLayout::Stream { batch, .. } => *batch,
        };
        (index + 1) * per_batch <= total
    }
}

impl Loader {
    pub fn new(source: Source, config: DataConfig) -> Result<Loader> {
        if config.batch_size == 0 || config.image_size == 0 {
            bail!("batch size and image size must be at least 1");
        }
        if config.workers == 0 || config.prefetch == 0 {
            bail!("the loader needs at least one worker and one prefetched batch");
        }
        config.share.validate(config.batch_size)?;
        let skips = match &source {
            Source::Meta {
                meta,
                images,
                index,
            } => {
                if !images.is_dir() {
                    bail!("image folder {} does not exist", images.display());
                }
                if index.samples.len() < config.batch_size {
                    bail!(
                        "{} has {} usable pairs, fewer than one batch of {}",
                        meta.display(),
                        index.samples.len(),
                        config.batch_size
                    );
                }
                SkipLog::from_index(&index.skipped)
            }
            Source::Shards { shards } => {
                if let Some(missing) = shards.iter().find(|s| !s.is_file()) {
                    bail!("shard {} does not exist", missing.display());
                }
                if shards.len() < config.share.nodes {
                    bail!(
                        "{} shards cannot be shared among {} machines: each reads its own",
                        shards.len(),
                        config.share.nodes
                    );
                }
                SkipLog::default()
            }
        };
        Ok(Loader {
            inner: Arc::new(Inner {
                layout: BatchLayout::new(&source, &config),
                source,
                config,
                skips,
            }),
        })
    }

    /// Full batches an epoch holds (the last partial one is dropped); None for shard streams,
    /// whose length is only known once read.
    pub fn batches_per_epoch(&self) -> Option<usize> {
        match &self.inner.source {
            Source::Meta { index, .. } => Some(index.samples.len() / self.inner.config.batch_size),
            Source::Shards { .. } => None,
        }
    }

    /// Batches of `epoch` from batch index `start` on (resume), made in parallel and
    /// prefetched. The same (seed, epoch, batch) always gives the same batch.
    pub fn epoch(&self, epoch: usize, start: usize) -> Batches {
        let config = &self.inner.config;
        let capacity = (config.prefetch * self.inner.layout.size()).max(config.workers);
        let (jobs_tx, jobs_rx) = bounded::<Job>(capacity);
        let (done_tx, done_rx) = bounded::<Message>(capacity);
        let inner = Arc::clone(&self.inner);
        let feeder_done = done_tx.clone();
        std::thread::Builder::new()
            .name("ovseg-data-feeder".into())
            .spawn(move || {
                let result = match (&inner.source, &inner.layout) {
                    (Source::Meta { images, index, .. }, BatchLayout::Rows { mine, .. }) => {
                        feed_meta(&inner.config, images, index, mine, epoch, start, &jobs_tx)
                    }
                    (Source::Meta { .. }, BatchLayout::Stream { .. }) => {
                        unreachable!("BatchLayout::new gives meta-files rows")
                    }
                    (Source::Shards { shards }, _) => {
                        feed_shards(&inner.config, shards, &inner.skips, epoch, start, &jobs_tx)
                    }
                };
                let _ = feeder_done.send(match result {
                    Ok(total) => Message::End { total },
                    Err(e) => Message::Failed(e),
                });
            })
            .expect("spawn the data feeder");
        let recipe = Arc::new(self.recipe(epoch));
        for w in 0..config.workers {
            let (jobs, done) = (jobs_rx.clone(), done_tx.clone());
            let (inner, recipe) = (Arc::clone(&self.inner), Arc::clone(&recipe));
            std::thread::Builder::new()
                .name(format!("ovseg-data-{w}"))
                .spawn(move || {
                    for job in jobs {
                        // A decoder that panics on a malformed file costs the sample, not the
                        // worker.
                        let sample = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            recipe.make(&job, job.position, &inner.skips)
                        }))
                        .unwrap_or_else(|_| {
                            let name = job.image.name();
                            let reason = anyhow::anyhow!("the decoder crashed on {name}");
                            inner.skips.unreadable(&name, &reason);
                            Err(reason)
                        });
                        if done
                            .send(Message::Made {
                                job: Box::new(job),
                                sample,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                })
                .expect("spawn a data worker");
        }
        Batches {
            inner: Arc::clone(&self.inner),
            recipe,
            epoch,
            next: start,
            total: self.batches_per_epoch().map(|n| n * config.batch_size),
            pending: BTreeMap::new(),
            done: done_rx,
            finished: false,
        }
    }

    pub fn skipped(&self) -> SkipCounts {
        self.inner.skips.counts()
    }

    fn recipe(&self, epoch: usize) -> Recipe {
        let config = &self.inner.config;
        Recipe {
            seed: config.seed,
            epoch,
            augmentation: config.augmentation,
            image_size: config.image_size as u32,
            templates: TemplateSet::Full.templates(),
        }
    }
}

enum Message {
    Made {
        job: Box<Job>,
        sample: Result<Sample>,
    },
    /// The feeder listed `total` samples (for shards, the epoch's length).
    End {
        total: usize,
    },
    Failed(anyhow::Error),
}

/// Lists the meta-file's samples of `epoch` from batch `start` on, those of this machine's
/// rows (`mine`, by position in the global batch); returns the epoch's length.
fn feed_meta(
    config: &DataConfig,
    images: &Path,
    index: &EntityIndex,
    mine: &[bool],
    epoch: usize,
    start: usize,
    jobs: &Sender<Job>,
) -> Result<usize> {
    let n = index.samples.len();
    let total = n / config.batch_size * config.batch_size;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng_for(config.seed, epoch, 0, Purpose::Order));
    let vocab = EntityVocab::default();
    for (position, &id) in order
        .iter()
        .enumerate()
        .take(total)
        .skip(start * config.batch_size)
        .filter(|(position, _)| mine[position % config.batch_size])
    {
        let sample = &index.samples[id];
        let found = vocab.extract(&sample.caption);
        let partner = match config.stage {
            Stage::One => None,
            Stage::Two => {
                if sample.entities.is_empty() {
                    bail!(
                        "pair {id} ({}) of the entity index has no entity",
                        sample.filename
                    );
                }
                let mut rng = rng_for(config.seed, epoch, position, Purpose::PartnerChoice);
                let entity = &sample.entities[rng.random_range(0..sample.entities.len())];
                let file = images.join(partner_file(index, id, entity, &mut rng));
                Some((entity.clone(), ImageSource::File(file)))
            }
        };
        let job = Job {
            position,
            image: ImageSource::File(images.join(&sample.filename)),
            caption: sample.caption.clone(),
            question: found.question,
            classes: found.classes,
            partner,
        };
        if jobs.send(job).is_err() {
            break; // the epoch's iterator was dropped
        }
    }
    Ok(total)
}

/// The picture pair `id`'s stage-2 partner for `entity` comes from: drawn from the released
/// sample list when the index has one for it (the reference's `random.choice`, own picture
/// included), else uniformly from the other indexed pairs showing it (itself when alone).
fn partner_file<'a>(
    index: &'a EntityIndex,
    id: usize,
    entity: &str,
    rng: &mut impl Rng,
) -> &'a str {
    if let Some(list) = index.released_partners(entity) {
        return &list[rng.random_range(0..list.len())];
    }
    let others = index.by_entity.get(entity).map_or(&[][..], Vec::as_slice);
    let partner = if others.len() <= 1 {
        id
    } else {
        // Draw among len-1 slots, the sample's own slot standing for the last one.
        let k = rng.random_range(0..others.len() - 1);
        if others[k] == id {
            others[others.len() - 1]
        } else {
            others[k]
        }
    };
    &index.samples[partner].filename
}

/// The batches of one epoch, in order.
pub struct Batches {
    inner: Arc<Inner>,
    recipe: Arc<Recipe>,
    epoch: usize,
    next: usize,
    /// Samples in the epoch, once known.
    total: Option<usize>,
    pending: BTreeMap<usize, (Job, Result<Sample>)>,
    done: Receiver<Message>,
    finished: bool,
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        // The positions this batch takes, listed once however many samples arrive meanwhile.
        let slots = self.inner.layout.slots(self.next);
        while !self.finished {
            let layout = &self.inner.layout;
            if self
                .total
                .is_some_and(|total| !layout.fits(self.next, total))
            {
                self.finished = true;
                break;
            }
            if slots.iter().all(|p| self.pending.contains_key(p)) {
                let result = self.assemble(&slots);
                self.next += 1;
                if result.is_err() {
                    self.finished = true;
                }
                return Some(result);
            }
            match self.done.recv() {
                Ok(Message::Made { job, sample }) => {
                    self.pending.insert(job.position, (*job, sample));
                }
                Ok(Message::End { total }) => self.total = Some(total),
                Ok(Message::Failed(e)) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Err(_) => {
                    self.finished = true;
                    return Some(Err(anyhow::anyhow!(
                        "the data workers stopped before batch {} of epoch {}",
                        self.next,
                        self.epoch
                    )));
                }
            }
        }
        None
    }
}

impl Batches {
    fn assemble(&mut self, positions: &[usize]) -> Result<Batch> {
        let config = &self.inner.config;
        let size = positions.len();
        let slots: Vec<(Job, Result<Sample>)> = positions
            .iter()
            .map(|p| self.pending.remove(p).expect("complete batch"))
            .collect();
        let plane = 3 * config.image_size * config.image_size;
        let stage_two = config.stage == Stage::Two;
        let mut batch = Batch {
            size,
            image_size: config.image_size,
            images: Vec::with_capacity(size * plane),
            captions: Vec::with_capacity(size),
            questions: Vec::with_capacity(size),
            answers: Vec::with_capacity(size),
            entities: Vec::with_capacity(size),
            partner_images: stage_two.then(|| Vec::with_capacity(size * plane)),
            partner_texts: stage_two.then(|| Vec::with_capacity(size)),
            position: DataPosition {
                epoch: self.epoch,
                batch: self.next + 1,
            },
        };
        for i in 0..size {
            let made;
            let sample = match &slots[i].1 {
                Ok(sample) => sample,
                Err(_) => {
                    made = self.stand_in(&slots, i, positions[i])?;
                    &made
                }
            };
            batch.images.extend_from_slice(&sample.image);
            batch.captions.push(sample.caption.clone());
            batch.questions.push(sample.question.clone());
            batch.answers.push(sample.answer.clone());
            batch.entities.push(sample.entities.clone());
            if let (Some(images), Some(image)) = (&mut batch.partner_images, &sample.partner_image)
            {
                images.extend_from_slice(image);
            }
            if let (Some(texts), Some(text)) = (&mut batch.partner_texts, &sample.partner_text) {
                texts.push(text.clone());
            }
        }
        Ok(batch)
    }

    /// The sample for slot `i` whose picture is unreadable: the next readable sample of its
    /// device's micro-batch (wrapping; so alike however the batch is shared among machines),
    /// else of the rest of the batch, made again with the draws of `position`.
    fn stand_in(
        &self,
        slots: &[(Job, Result<Sample>)],
        i: usize,
        position: usize,
    ) -> Result<Sample> {
        let (n, micro) = (slots.len(), self.inner.layout.micro_rows());
        let first = i / micro * micro;
        let in_micro = (1..micro).map(|k| first + (i - first + k) % micro);
        let beyond = (1..n)
            .map(|k| (i + k) % n)
            .filter(|&j| j / micro != i / micro);
        for j in in_micro.chain(beyond) {
            let (job, made) = &slots[j];
            if made.is_ok() {
                if let Ok(sample) = self.recipe.make(job, position, &self.inner.skips) {
                    return Ok(sample);
                }
            }
        }
        let reason = slots[i]
            .1
            .as_ref()
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        bail!(
            "no picture of batch {} of epoch {} can be read (first: {reason})",
            self.next,
            self.epoch
        )
    }
}
