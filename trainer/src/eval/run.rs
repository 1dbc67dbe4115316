//! The mIoU loop: every picture segmented as docs/architecture.md, "Inference" says, scored as
//! docs/cli.md, "ovseg eval", says.
//! `ovseg eval` and training's periodic evaluation both call [`evaluate`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use indicatif::ProgressBar;
use ovseg_model::eval::IouAccumulator;
use ovseg_model::segmentation::{ClassEmbedder, RgbImage, SegmentOptions, TemplateSet};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvSegmentor;
use serde::Serialize;

use super::datasets::{Dataset, Sample};
use super::labels::read_label_png;
use crate::image_io::read_image;
use crate::overlay::palette_color;

#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub template: TemplateSet,
    /// Score only the first N samples.
    pub limit: Option<usize>,
    /// Write each prediction as a coloured PNG here.
    pub save_pred: Option<PathBuf>,
    /// Segmentation window; `None`: the model's own (`OvSegmentor::segment_options`).
    pub window: Option<usize>,
}

impl EvalOptions {
    /// The samples scored: the dataset's first `limit`, or all of them.
    pub fn samples<'a>(&self, dataset: &'a Dataset) -> &'a [Sample] {
        let n = self.limit.unwrap_or(usize::MAX).min(dataset.samples.len());
        &dataset.samples[..n]
    }
}

/// The dataset's foreground classes through the text side with the options' prompts: [K, D].
pub fn class_embeddings<B: Backend>(
    model: &OvSegmentor<B>,
    tokenizer: &TextTokenizer,
    dataset: &Dataset,
    options: &EvalOptions,
    device: &B::Device,
) -> Result<Tensor<B, 2>> {
    Ok(ClassEmbedder::new(tokenizer, options.template).embed(
        model,
        dataset.foreground(),
        device,
    )?)
}

/// What `ovseg eval --out` writes (percentages; a class absent from predictions and labels has
/// a null IoU and is left out of the means).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub dataset: String,
    pub images: usize,
    pub miou: f64,
    /// mIoU over the classes other than background (`null` without a background class): where
    /// pictures are mostly background, the figure that says whether objects were found.
    pub fg_miou: Option<f64>,
    /// mIoU of predicting background everywhere on the same labels (`null` without a
    /// background class): the trivial score to beat.
    pub all_background_miou: Option<f64>,
    pub macc: f64,
    pub aacc: f64,
    pub per_class: BTreeMap<String, f64>,
    pub per_class_acc: BTreeMap<String, f64>,
    /// Class order of the tables.
    pub classes: Vec<String>,
    pub seconds: f64,
}

pub fn evaluate<B: Backend>(
    model: &OvSegmentor<B>,
    tokenizer: &TextTokenizer,
    dataset: &Dataset,
    options: &EvalOptions,
    progress: &ProgressBar,
    device: &B::Device,
) -> Result<EvalReport> {
    let start = std::time::Instant::now();
    let classes = class_embeddings(model, tokenizer, dataset, options, device)?;
    let segment = SegmentOptions {
        bg_thresh: dataset.bg_thresh,
        ..model.segment_options(options.window)
    };
    let samples = options.samples(dataset);
    if let Some(dir) = &options.save_pred {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    progress.set_length(samples.len() as u64);
    let mut scores = IouAccumulator::new(dataset.classes.len());
    for sample in samples {
        let (picture, label) = read_sample(sample, dataset)?;
        let (w, h) = (picture.width, picture.height);
        let result = model.segment(&picture, classes.clone(), &segment);
        let pred = result.label_values();
        scores.add(&pred, &label);
        if let Some(dir) = &options.save_pred {
            save_prediction(
                &dir.join(format!("{}.png", sample.id)),
                &pred,
                w,
                h,
                dataset,
            )?;
        }
        progress.inc(1);
        progress.set_message(format!("mIoU {:.2}", scores.scores().miou));
    }
    Ok(EvalReport::from_scores(
        dataset,
        samples.len(),
        &scores,
        start.elapsed().as_secs_f64(),
    ))
}

/// One sample's picture and its label map, mapped through the dataset's label transform.
pub fn read_sample(sample: &Sample, dataset: &Dataset) -> Result<(RgbImage, Vec<u32>)> {
    let picture = read_image(&sample.image)?;
    let (stored, w, h) = read_label_png(&sample.label)?;
    if (w, h) != (picture.width, picture.height) {
        bail!(
            "label {} is {w}x{h} but its picture {} is {}x{}",
            sample.label.display(),
            sample.image.display(),
            picture.width,
            picture.height
        );
    }
    let label = stored
        .into_iter()
        .map(|v| dataset.transform.apply(v))
        .collect();
    Ok((picture, label))
}

fn save_prediction(path: &Path, pred: &[u32], w: usize, h: usize, dataset: &Dataset) -> Result<()> {
    let color = |l: u32| match &dataset.palette {
        Some(p) => p[l as usize],
        None => palette_color(l as usize + usize::from(!dataset.with_background)),
    };
    let pixels: Vec<u8> = pred.iter().flat_map(|&l| color(l)).collect();
    image::RgbImage::from_raw(w as u32, h as u32, pixels)
        .expect("sizes agree")
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

impl EvalReport {
    /// The report of accumulated scores over `images` pictures of `dataset`.
    pub fn from_scores(
        dataset: &Dataset,
        images: usize,
        scores: &IouAccumulator,
        seconds: f64,
    ) -> Self {
        let s = scores.scores();
        let table = |values: &[f64]| {
            dataset
                .classes
                .iter()
                .cloned()
                .zip(values.iter().copied())
                .collect()
        };
        let fg_miou = dataset.with_background.then(|| s.foreground_miou());
        let all_background_miou = dataset
            .with_background
            .then(|| scores.all_background().scores().miou);
        EvalReport {
            dataset: dataset.name.clone(),
            images,
            miou: s.miou,
            fg_miou,
            all_background_miou,
            macc: s.macc,
            aacc: s.aacc,
            per_class: table(&s.iou),
            per_class_acc: table(&s.acc),
            classes: dataset.classes.clone(),
            seconds,
        }
    }

    /// This report's per-class IoU and accuracy next to `baseline`'s (the same classes), and
    /// both summaries, as `ovseg eval --baseline` prints them.
    pub fn side_by_side(&self, baseline: &EvalReport) -> String {
        let fmt = |v: Option<&f64>| match v {
            Some(v) if !v.is_nan() => format!("{v:.2}"),
            _ => "-".to_string(),
        };
        let mut out = String::from(
            "| class | IoU | Acc | baseline IoU | baseline Acc |\n|---|---|---|---|---|\n",
        );
        for name in &self.classes {
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {} |\n",
                fmt(self.per_class.get(name)),
                fmt(self.per_class_acc.get(name)),
                fmt(baseline.per_class.get(name)),
                fmt(baseline.per_class_acc.get(name)),
            ));
        }
        out.push_str(&format!(
            "| **mean** | **{:.2}** | **{:.2}** | **{:.2}** | **{:.2}** |\n",
            self.miou, self.macc, baseline.miou, baseline.macc
        ));
        let fg = |r: &EvalReport| {
            r.fg_miou
                .map(|v| format!(", foreground mIoU {v:.2}"))
                .unwrap_or_default()
        };
        out.push_str(&format!(
            "\n{}: {} images; segmentation mIoU {:.2}{} (aAcc {:.2}, {:.1} s), image-level baseline mIoU {:.2}{} (aAcc {:.2}, {:.1} s){}; {} classes\n",
            self.dataset,
            self.images,
            self.miou,
            fg(self),
            self.aacc,
            self.seconds,
            baseline.miou,
            fg(baseline),
            baseline.aacc,
            baseline.seconds,
            self.all_background_miou
                .map(|v| format!(", all-background mIoU {v:.2}"))
                .unwrap_or_default(),
            self.classes.len(),
        ));
        out
    }

    /// The per-class table and the summary, as printed by `ovseg eval`.
    pub fn table(&self) -> String {
        let mut out = String::from("| class | IoU | Acc |\n|---|---|---|\n");
        let fmt = |v: f64| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.2}")
            }
        };
        for name in &self.classes {
            out.push_str(&format!(
                "| {name} | {} | {} |\n",
                fmt(self.per_class[name]),
                fmt(self.per_class_acc[name])
            ));
        }
        out.push_str(&format!(
            "\n{}: {} images, mIoU {:.2}{}, mAcc {:.2}, aAcc {:.2} ({:.1} s, {:.2} images/s)\n",
            self.dataset,
            self.images,
            self.miou,
            match (self.fg_miou, self.all_background_miou) {
                (Some(fg), Some(bg)) => format!(" (foreground {fg:.2}; all-background {bg:.2})"),
                _ => String::new(),
            },
            self.macc,
            self.aacc,
            self.seconds,
            self.images as f64 / self.seconds.max(1e-9)
        ));
        out
    }
}
