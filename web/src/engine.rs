//! Segmentation for the page, generic over the backend so it is tested natively: the model is
//! loaded once and class embeddings are cached per (labels, template), so a new picture with
//! the same words does not run the text encoder again. Precomputed embeddings (the presets
//! `ovseg export-web` writes) go into the same cache.
//!
//! The model comes as one file (`ovseg convert`), or as the image weight pack of
//! `ovseg export-web`, whose text pack is added with [`Engine::add_text_weights`] only when
//! words without embeddings are asked for ([`Engine::needs_text`]); which it is,
//! `ovseg_model::formats` decides. Requests are `ovseg_model::segmentation::Request`s, at most
//! [`MAX_BYTE_LABELS`] words (the label map is read back one byte a pixel).
//!
//! Work is queued with [`Engine::start`], which returns the label map as a tensor; the caller
//! reads it back (asynchronously on WebGPU, where a synchronous read is impossible).

use std::collections::HashMap;

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use ovseg_model::formats::{open_model, TextPack};
pub use ovseg_model::segmentation::Request;
use ovseg_model::segmentation::{
    parse_words, prepare_image, rgba_picture, ClassEmbedder, ImageNorm, SegmentOptions,
    TemplateSet, MAX_BYTE_LABELS,
};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig, OvsegError};

/// A segmentation queued on the device: its label map is read back only when asked for.
pub struct LabelsOnDevice<B: Backend> {
    /// [H, W] label indices.
    pub labels: Tensor<B, 2, Int>,
    /// Names by index: "background" first when there is one.
    pub names: Vec<String>,
    /// Whether the text encoder ran for this request (false: cached or precomputed).
    pub encoded_text: bool,
}

pub struct Engine<B: Backend> {
    model: OvSegmentor<B>,
    config: OvsegConfig,
    /// False while an image pack's text part has not been added.
    has_text: bool,
    tokenizer: TextTokenizer,
    /// The caller chose the tokenizer: a text pack's own does not replace it.
    tokenizer_given: bool,
    output_dim: usize,
    classes: HashMap<(Vec<String>, TemplateSet), Tensor<B, 2>>,
    device: B::Device,
    text_runs: usize,
}

impl<B: Backend> Engine<B> {
    /// `model_file`: what `ovseg convert` or `ovseg export-web` wrote; `tokenizer`: a
    /// HuggingFace `tokenizer.json` to use instead of the model's own (stored in a model file
    /// and in a text pack; the built-in uncased BERT one when there is none).
    pub fn new(
        model_file: Vec<u8>,
        tokenizer: Option<&[u8]>,
        device: &B::Device,
    ) -> Result<Self, OvsegError> {
        let opened = open_model::<B>(model_file, "model file", device)?;
        let has_text = opened.has_text();
        let (model, config, stored) = (
            opened.model.into_inference(),
            opened.config,
            opened.tokenizer,
        );
        let tokenizer_given = tokenizer.is_some();
        let tokenizer = match tokenizer {
            Some(bytes) => TextTokenizer::from_bytes(bytes)?,
            None => TextTokenizer::stored(stored.as_deref())?,
        };
        if has_text || tokenizer_given {
            tokenizer.check_model(&config.text)?;
        }
        Ok(Self {
            model,
            output_dim: config.output_dim,
            config,
            has_text,
            tokenizer,
            tokenizer_given,
            classes: HashMap::new(),
            device: device.clone(),
            text_runs: 0,
        })
    }

    /// Adds the text part of an image pack with the tokenizer it carries (`tokenizer`: one to
    /// use instead).
    pub fn add_text_weights(
        &mut self,
        text_pack: Vec<u8>,
        tokenizer: Option<&[u8]>,
    ) -> Result<(), OvsegError> {
        let pack = TextPack::from_bytes(text_pack, "text weights")?;
        let tokenizer = match tokenizer {
            Some(bytes) => Some(TextTokenizer::from_bytes(bytes)?),
            None if self.tokenizer_given => None,
            None => Some(TextTokenizer::stored(pack.tokenizer())?),
        };
        if let Some(t) = &tokenizer {
            t.check_model(&self.config.text)?;
        }
        self.model = pack.attach(self.model.clone(), &self.config)?;
        if let Some(tokenizer) = tokenizer {
            self.tokenizer = tokenizer;
            self.tokenizer_given = true;
        }
        self.has_text = true;
        Ok(())
    }

    /// Whether the text encoder is loaded.
    pub fn has_text(&self) -> bool {
        self.has_text
    }

    /// Whether segmenting with these words needs text weights that are not loaded yet.
    pub fn needs_text(&self, labels: &str, template: &str) -> Result<bool, OvsegError> {
        let key = parse_words(labels, template, MAX_BYTE_LABELS)?;
        Ok(!self.has_text && !self.classes.contains_key(&key))
    }

    /// Seeds the cache with precomputed class embeddings ([labels x output_dim], row-major).
    pub fn add_class_embeddings(
        &mut self,
        labels: &str,
        template: &str,
        values: Vec<f32>,
    ) -> Result<(), OvsegError> {
        let (labels, template) = parse_words(labels, template, MAX_BYTE_LABELS)?;
        if values.len() != labels.len() * self.output_dim {
            return Err(OvsegError::Input(format!(
                "{} embedding values for {} labels of dimension {}",
                values.len(),
                labels.len(),
                self.output_dim
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(OvsegError::Input("embeddings hold NaN or infinity".into()));
        }
        let t = Tensor::from_data(
            TensorData::new(values, [labels.len(), self.output_dim]),
            &self.device,
        );
        self.classes.insert((labels, template), t);
        Ok(())
    }

    fn class_embeddings(
        &mut self,
        labels: Vec<String>,
        template: TemplateSet,
    ) -> Result<(Tensor<B, 2>, bool), OvsegError> {
        let key = (labels, template);
        if let Some(t) = self.classes.get(&key) {
            return Ok((t.clone(), false));
        }
        if !self.has_text {
            return Err(OvsegError::Input(format!(
                "no embeddings for these words ({}) and the text encoder is not loaded: add the \
                 model's text weights, or choose a preset vocabulary",
                key.0.join(", ")
            )));
        }
        let t = ClassEmbedder::new(&self.tokenizer, template).embed(
            &self.model,
            &key.0,
            &self.device,
        )?;
        self.text_runs += 1;
        self.classes.insert(key, t.clone());
        Ok((t, true))
    }

    /// Queues the segmentation of an RGBA picture (alpha ignored). `request` holds at most
    /// [`MAX_BYTE_LABELS`] words (`Request::parse(.., MAX_BYTE_LABELS)`).
    pub fn start(
        &mut self,
        rgba: &[u8],
        width: usize,
        height: usize,
        request: &Request,
    ) -> Result<LabelsOnDevice<B>, OvsegError> {
        let picture = rgba_picture(rgba, width, height)?;
        if request.labels().len() > MAX_BYTE_LABELS {
            return Err(OvsegError::Input(format!(
                "{} labels; at most {MAX_BYTE_LABELS} fit a label map of one byte a pixel",
                request.labels().len()
            )));
        }
        let (classes, encoded_text) =
            self.class_embeddings(request.labels().to_vec(), request.template())?;
        let options = SegmentOptions {
            bg_thresh: request.threshold(),
            ..self.model.segment_options(None)
        };
        let labels = self.model.segment(&picture, classes, &options).labels;
        Ok(LabelsOnDevice {
            labels,
            names: request.names(),
            encoded_text,
        })
    }

    /// Queues the raw group map: the whole picture squashed to one window, each pixel's
    /// strongest group (the soft assignment resized bilinearly, as segmentation does). Returns
    /// [side, side] group indices and the number of groups.
    pub fn start_groups(
        &self,
        rgba: &[u8],
        width: usize,
        height: usize,
    ) -> Result<(Tensor<B, 2, Int>, usize), OvsegError> {
        let picture = rgba_picture(rgba, width, height)?;
        let side = self.model.segment_options(None).window;
        let image = prepare_image::<B>(&picture, (side, side), ImageNorm::default(), &self.device);
        let out = self.model.img_encoder.forward(image, false);
        let [gh, gw] = out.grid;
        let groups = out.segments.dims()[1];
        let attention = out.assignment.soft.reshape([1, groups, gh, gw]);
        let resized = interpolate(
            attention,
            [side, side],
            InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
        );
        Ok((resized.argmax(1).reshape([side, side]), groups))
    }

    /// [`Engine::start`] and a synchronous read-back (native and CPU backends).
    pub fn segment_rgba(
        &mut self,
        rgba: &[u8],
        width: usize,
        height: usize,
        request: &Request,
    ) -> Result<Vec<u8>, OvsegError> {
        let pending = self.start(rgba, width, height, request)?;
        label_bytes(pending.labels.into_data())
    }

    /// How many label sets have cached embeddings.
    pub fn cached_label_sets(&self) -> usize {
        self.classes.len()
    }

    /// How many times the text encoder ran.
    pub fn text_encoder_runs(&self) -> usize {
        self.text_runs
    }
}

/// A read-back label map as one byte a pixel.
pub fn label_bytes(data: TensorData) -> Result<Vec<u8>, OvsegError> {
    let values: Vec<i64> = data
        .convert::<i64>()
        .to_vec()
        .map_err(|e| OvsegError::Input(format!("label map read-back: {e:?}")))?;
    Ok(values.into_iter().map(|v| v.clamp(0, 255) as u8).collect())
}
