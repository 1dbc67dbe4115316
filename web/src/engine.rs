//! Segmentation for the page, generic over the backend so it is tested natively: the model is
//! loaded once and class embeddings are cached per (labels, template), so a new picture with
//! the same words does not run the text encoder again.

use std::collections::HashMap;

use burn::prelude::*;
use ovseg_model::record::model_from_bytes;
use ovseg_model::segmentation::{
    parse_labels, ClassEmbedder, RgbImage, SegmentOptions, TemplateSet,
};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegError};

/// Pictures larger than this are refused before any work (the CLI's bound too).
pub const MAX_PIXELS: usize = 100_000_000;
/// The label map has one byte a pixel.
const MAX_LABELS: usize = 255;

pub struct Request<'a> {
    pub labels: &'a str,
    pub background: bool,
    pub bg_thresh: f64,
    pub template: &'a str,
}

pub struct Engine<B: Backend> {
    model: OvSegmentor<B>,
    tokenizer: TextTokenizer,
    classes: HashMap<(Vec<String>, TemplateSet), Tensor<B, 2>>,
    device: B::Device,
}

impl<B: Backend> Engine<B> {
    pub fn new(model_file: Vec<u8>, device: &B::Device) -> Result<Self, OvsegError> {
        let (model, _) = model_from_bytes::<B>(model_file, "model file", device)?;
        Ok(Self {
            model: model.into_inference(),
            tokenizer: TextTokenizer::bert_base_uncased(),
            classes: HashMap::new(),
            device: device.clone(),
        })
    }

    fn class_embeddings(
        &mut self,
        labels: Vec<String>,
        template: TemplateSet,
    ) -> Result<Tensor<B, 2>, OvsegError> {
        let key = (labels, template);
        if let Some(t) = self.classes.get(&key) {
            return Ok(t.clone());
        }
        let t = ClassEmbedder::new(&self.tokenizer, template).embed(
            &self.model,
            &key.0,
            &self.device,
        )?;
        self.classes.insert(key, t.clone());
        Ok(t)
    }

    /// Label indices, one byte a pixel, of an RGBA picture (alpha ignored).
    pub fn segment_rgba(
        &mut self,
        rgba: &[u8],
        width: usize,
        height: usize,
        request: &Request,
    ) -> Result<Vec<u8>, OvsegError> {
        if width == 0 || height == 0 || width.saturating_mul(height) > MAX_PIXELS {
            return Err(OvsegError::Input(format!(
                "picture size {width}x{height} is out of range"
            )));
        }
        if rgba.len() != width * height * 4 {
            return Err(OvsegError::Input(format!(
                "{} RGBA bytes for a {width}x{height} picture",
                rgba.len()
            )));
        }
        if !(0.0..=1.0).contains(&request.bg_thresh) {
            return Err(OvsegError::Input(format!(
                "background threshold {} is not between 0 and 1",
                request.bg_thresh
            )));
        }
        let labels = parse_labels(request.labels, MAX_LABELS)?;
        let template = TemplateSet::parse(request.template)?;
        let classes = self.class_embeddings(labels, template)?;
        let rgb: Vec<u8> = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let picture = RgbImage::new(width, height, rgb)?;
        let options = SegmentOptions {
            bg_thresh: request.background.then_some(request.bg_thresh),
            ..Default::default()
        };
        let labels = self
            .model
            .segment(&picture, classes, &options)
            .label_values();
        Ok(labels.into_iter().map(|v| v as u8).collect())
    }

    /// How many label sets have cached embeddings.
    pub fn cached_label_sets(&self) -> usize {
        self.classes.len()
    }
}
