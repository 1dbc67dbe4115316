//! A batch of training samples: what the loader makes, what the training loop splits over
//! devices and micro-steps ([`Batch::rows`]) and what a device trains on in one forward.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub size: usize,
    pub image_size: usize,
    /// [size, 3, H, W], normalised, CHW row-major.
    pub images: Vec<f32>,
    pub captions: Vec<String>,
    /// Captions with every entity word replaced by `[MASK]`.
    pub questions: Vec<String>,
    /// A random template prefix and the caption's entities joined with " and ".
    pub answers: Vec<String>,
    /// Each caption's unique entity classes (read by the group-naming loss).
    pub entities: Vec<Vec<String>>,
    /// Stage 2: [size, 3, H, W], each sharing an entity with the sample.
    pub partner_images: Option<Vec<f32>>,
    /// Stage 2: "A photo of <entity>".
    pub partner_texts: Option<Vec<String>>,
    /// Where the data stands after this batch (for checkpoints): resume with
    /// `loader.epoch(position.epoch, position.batch)`.
    pub position: DataPosition,
}

/// Where the next batch comes from: batch `batch` of epoch `epoch`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataPosition {
    pub epoch: usize,
    pub batch: usize,
}

impl Batch {
    /// Rows `start..start + len`, at this batch's position.
    pub fn rows(&self, start: usize, len: usize) -> Batch {
        let pixels = 3 * self.image_size * self.image_size;
        let texts = |t: &[String]| t[start..start + len].to_vec();
        let images = |i: &[f32]| i[start * pixels..(start + len) * pixels].to_vec();
        Batch {
            size: len,
            image_size: self.image_size,
            images: images(&self.images),
            captions: texts(&self.captions),
            questions: texts(&self.questions),
            answers: texts(&self.answers),
            entities: self.entities[start..start + len].to_vec(),
            partner_images: self.partner_images.as_deref().map(images),
            partner_texts: self.partner_texts.as_deref().map(texts),
            position: self.position,
        }
    }

    /// Stage 2: the partner pictures and their texts.
    pub fn partners(&self) -> Option<(&[f32], &[String])> {
        self.partner_images
            .as_deref()
            .zip(self.partner_texts.as_deref())
    }
}
