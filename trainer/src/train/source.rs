//! The data loader as the training loop's [`BatchSource`].

use crate::data::{Batch, Loader, SkipCounts};
use anyhow::Result;

use super::run::BatchSource;

pub struct LoaderSource {
    loader: Loader,
}

impl LoaderSource {
    pub fn new(loader: Loader) -> Self {
        Self { loader }
    }
}

impl BatchSource for LoaderSource {
    fn steps_per_epoch(&self) -> Option<usize> {
        self.loader.batches_per_epoch()
    }

    fn epoch(&self, epoch: usize, start: usize) -> Box<dyn Iterator<Item = Result<Batch>> + '_> {
        Box::new(self.loader.epoch(epoch, start))
    }

    fn skipped(&self) -> Option<String> {
        let counts = self.loader.skipped();
        (counts != SkipCounts::default()).then(|| counts.to_string())
    }
}
