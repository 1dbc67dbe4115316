//! How the loader makes batches: crop size, stage, augmentation, seed, threads, buffers and this
//! machine's share of every global batch.

use super::augment::{Augmentation, Stage};
use super::share::Share;

#[derive(Debug, Clone)]
pub struct DataConfig {
    /// Side of the square training crop (224).
    pub image_size: usize,
    pub stage: Stage,
    /// Of the training picture (partners get stage 2's).
    pub augmentation: Augmentation,
    pub seed: u64,
    /// Threads decoding and augmenting pictures.
    pub workers: usize,
    /// Batches made ahead of the consumer.
    pub prefetch: usize,
    /// Samples a batch (the global batch).
    pub batch_size: usize,
    /// Shards only: samples held in the shuffle buffer.
    pub shuffle_buffer: usize,
    /// Shards only: recent samples kept per entity to draw stage-2 partners from.
    pub partner_pool: usize,
    /// The part of every global batch this machine makes (all of it on one machine).
    pub share: Share,
}

impl DataConfig {
    /// 224-pixel crops with the paper's augmentation, one worker per core, 2 batches
    /// prefetched, a 1000-sample shuffle buffer and 16 partners per entity.
    pub fn new(stage: Stage, batch_size: usize, seed: u64) -> Self {
        Self {
            image_size: 224,
            stage,
            augmentation: Augmentation::paper(stage),
            seed,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            prefetch: 2,
            batch_size,
            shuffle_buffer: 1000,
            partner_pool: 16,
            share: Share::WHOLE,
        }
    }
}
