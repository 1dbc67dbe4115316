//! The data loader as the training loop's [`BatchSource`].

use anyhow::Result;
use ovseg_trainer::data::{Batch, Loader, SkipCounts};

use super::replica::DeviceBatch;
use super::run::BatchSource;

pub struct LoaderSource {
    loader: Loader,
}

impl LoaderSource {
    pub fn new(loader: Loader) -> Self {
        Self { loader }
    }
}

fn rows(batch: Batch) -> DeviceBatch {
    DeviceBatch {
        size: batch.size,
        image_size: batch.image_size,
        images: batch.images,
        captions: batch.captions,
        questions: batch.questions,
        answers: batch.answers,
        entities: batch.entities,
        partner: batch.partner_images.zip(batch.partner_texts),
    }
}

impl BatchSource for LoaderSource {
    fn steps_per_epoch(&self) -> Option<usize> {
        self.loader.batches_per_epoch()
    }

    fn epoch(
        &self,
        epoch: usize,
        start: usize,
    ) -> Box<dyn Iterator<Item = Result<DeviceBatch>> + '_> {
        Box::new(self.loader.epoch(epoch, start).map(|b| b.map(rows)))
    }

    fn skipped(&self) -> Option<String> {
        let counts = self.loader.skipped();
        (counts != SkipCounts::default()).then(|| counts.to_string())
    }
}
