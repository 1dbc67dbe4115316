//! One training sample: where its picture is, its texts, and turning it into tensors' worth of
//! floats. Every random draw comes from an RNG keyed by (seed, epoch, position, purpose), so a
//! sample does not depend on which thread made it or when.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ovseg_model::data::entities::{answer, cross_entity_text};

use super::augment::{train_transform, Augmentation, Stage};
use super::skips::SkipLog;
use crate::image_io::{decode_image_bytes, read_rgb};

/// What an RNG is drawn for; each purpose has its own stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Order = 0,
    Image = 1,
    PartnerImage = 2,
    Text = 3,
    PartnerChoice = 4,
    ShardOrder = 5,
    ShuffleBuffer = 6,
}

pub(crate) fn rng_for(seed: u64, epoch: usize, position: usize, purpose: Purpose) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(epoch as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(position as u64).to_le_bytes());
    key[24..].copy_from_slice(&(purpose as u64).to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

#[derive(Debug, Clone)]
pub(crate) enum ImageSource {
    File(PathBuf),
    /// A tar member, named "shard.tar/KEY.jpg".
    Bytes {
        name: String,
        bytes: Arc<Vec<u8>>,
    },
}

impl ImageSource {
    pub fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Bytes { name, .. } => name.clone(),
        }
    }

    /// Decodes the picture, remembering (and refusing quickly next time) unreadable ones.
    pub fn decode(&self, skips: &SkipLog) -> Result<image::RgbImage> {
        let name = self.name();
        if skips.is_unreadable(&name) {
            anyhow::bail!("{name} is unreadable (seen before)");
        }
        let decoded = match self {
            Self::File(path) => read_rgb(path),
            Self::Bytes { name, bytes } => decode_image_bytes(bytes, name),
        };
        decoded.inspect_err(|e| skips.unreadable(&name, e))
    }
}

/// A sample before decoding, as the feeder hands it to the workers.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Position in the epoch (global sample index).
    pub position: usize,
    pub image: ImageSource,
    pub caption: String,
    pub question: String,
    /// The caption's unique entity classes.
    pub classes: Vec<String>,
    /// Stage 2: the shared entity and the partner's picture.
    pub partner: Option<(String, ImageSource)>,
}

/// A decoded, augmented sample.
pub(crate) struct Sample {
    pub image: Vec<f32>,
    pub caption: String,
    pub question: String,
    pub answer: String,
    /// The caption's unique entity classes.
    pub entities: Vec<String>,
    pub partner_image: Option<Vec<f32>>,
    pub partner_text: Option<String>,
}

pub(crate) struct Recipe {
    pub seed: u64,
    pub epoch: usize,
    pub augmentation: Augmentation,
    pub image_size: u32,
    pub templates: &'static [String],
}

impl Recipe {
    /// Makes `job` with the random draws of `position` (its own, or the slot it stands in for
    /// when the picture meant for that slot is unreadable).
    pub fn make(&self, job: &Job, position: usize, skips: &SkipLog) -> Result<Sample> {
        let picture = job.image.decode(skips)?;
        let mut rng = rng_for(self.seed, self.epoch, position, Purpose::Image);
        let image = train_transform(&picture, &self.augmentation, self.image_size, &mut rng);

        let mut rng = rng_for(self.seed, self.epoch, position, Purpose::Text);
        let template = &self.templates[rng.random_range(0..self.templates.len())];
        let answer = answer(template, &job.classes);

        let (partner_image, partner_text) = match &job.partner {
            None => (None, None),
            Some((entity, source)) => {
                // An unreadable partner is replaced by the sample's own picture.
                let partner = match source.decode(skips) {
                    Ok(p) => p,
                    Err(_) => picture,
                };
                let mut rng = rng_for(self.seed, self.epoch, position, Purpose::PartnerImage);
                let pixels = train_transform(
                    &partner,
                    &Augmentation::paper(Stage::Two),
                    self.image_size,
                    &mut rng,
                );
                (Some(pixels), Some(cross_entity_text(entity)))
            }
        };
        Ok(Sample {
            image,
            caption: job.caption.clone(),
            question: job.question.clone(),
            answer,
            entities: job.classes.clone(),
            partner_image,
            partner_text,
        })
    }
}
