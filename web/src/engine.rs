//! Segmentation for the page, generic over the backend so it is tested natively: the model is
//! loaded once and class embeddings are cached per (labels, template), so a new picture with
//! the same words does not run the text encoder again. Precomputed embeddings (the presets
//! `ovseg export-web` writes) go into the same cache.
//!
//! The model comes as one file (`ovseg convert`), or as the image weight pack of
//! `ovseg export-web`, whose text pack is added with [`Engine::add_text_weights`] only when
//! words without embeddings are asked for ([`Engine::needs_text`]).
//!
//! Work is queued with [`Engine::start`], which returns the label map as a tensor; the caller
//! reads it back (asynchronously on WebGPU, where a synchronous read is impossible).

use std::collections::HashMap;

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use ovseg_model::pack::{is_pack, Pack, PackPart};
use ovseg_model::record::model_from_bytes;
use ovseg_model::segmentation::{
    parse_labels, prepare_image, ClassEmbedder, ImageNorm, RgbImage, SegmentOptions, TemplateSet,
};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig, OvsegError};

/// Pictures larger than this are refused before any work (the CLI's bound too).
pub const MAX_PIXELS: usize = 100_000_000;
/// The label map has one byte a pixel (background included).
pub const MAX_LABELS: usize = 254;

pub struct Request<'a> {
    pub labels: &'a str,
    pub background: bool,
    pub bg_thresh: f64,
    pub template: &'a str,
}

/// A segmentation queued on the device.
pub struct Pending<B: Backend> {
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
        let (model, config, has_text, stored) = if is_pack(&model_file) {
            let pack = Pack::from_bytes(model_file, "model file")?;
            let model = pack.init_model::<B>(device)?;
            (model, pack.config().clone(), false, None)
        } else {
            let (model, manifest) = model_from_bytes::<B>(model_file, "model file", device)?;
            (
                model.into_inference(),
                manifest.config,
                true,
                manifest.tokenizer,
            )
        };
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
        let pack = Pack::from_bytes(text_pack, "text weights")?;
        if pack.part() != PackPart::Text {
            return Err(OvsegError::Input(format!(
                "the text weights are a {} pack",
                pack.part().name()
            )));
        }
        let tokenizer = match tokenizer {
            Some(bytes) => Some(TextTokenizer::from_bytes(bytes)?),
            None if self.tokenizer_given => None,
            None => Some(TextTokenizer::stored(pack.tokenizer())?),
        };
        if let Some(t) = &tokenizer {
            t.check_model(&self.config.text)?;
        }
        self.model = pack.load_into(self.model.clone(), &self.config)?;
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
        let key = (
            parse_labels(labels, MAX_LABELS)?,
            TemplateSet::parse(template)?,
        );
        Ok(!self.has_text && !self.classes.contains_key(&key))
    }

    /// Seeds the cache with precomputed class embeddings ([labels x output_dim], row-major).
    pub fn add_class_embeddings(
        &mut self,
        labels: &str,
        template: &str,
        values: Vec<f32>,
    ) -> Result<(), OvsegError> {
        let labels = parse_labels(labels, MAX_LABELS)?;
        let template = TemplateSet::parse(template)?;
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

    /// Queues the segmentation of an RGBA picture (alpha ignored).
    pub fn start(
        &mut self,
        rgba: &[u8],
        width: usize,
        height: usize,
        request: &Request,
    ) -> Result<Pending<B>, OvsegError> {
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
        let names: Vec<String> = if request.background {
            std::iter::once("background".to_string())
                .chain(labels.iter().cloned())
                .collect()
        } else {
            labels.clone()
        };
        let (classes, encoded_text) = self.class_embeddings(labels, template)?;
        let rgb: Vec<u8> = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let picture = RgbImage::new(width, height, rgb)?;
        let options = SegmentOptions {
            bg_thresh: request.background.then_some(request.bg_thresh),
            ..self.model.segment_options(None)
        };
        let labels = self.model.segment(&picture, classes, &options).labels;
        Ok(Pending {
            labels,
            names,
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
        if width == 0
            || height == 0
            || width.saturating_mul(height) > MAX_PIXELS
            || rgba.len() != width * height * 4
        {
            return Err(OvsegError::Input(format!(
                "{} RGBA bytes for a {width}x{height} picture",
                rgba.len()
            )));
        }
        let rgb: Vec<u8> = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let picture = RgbImage::new(width, height, rgb)?;
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
