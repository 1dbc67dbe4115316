//! Zero-shot ImageNet classification: the image-level embedding against every class's
//! prompt-ensembled text embedding, top-1 and top-5.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use image::imageops::FilterType;
use indicatif::ProgressBar;
use ovseg_model::eval::TopK;
use ovseg_model::model::normalize;
use ovseg_model::segmentation::{ClassEmbedder, ImageNorm, RgbImage, TemplateSet};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvSegmentor;
use serde::Serialize;

use crate::image_io::read_image;

/// `val.csv` as the reference reads it: a picture name and its class index per line
/// (comma or white-space separated; a header line is skipped).
pub fn read_val_list(path: &Path, classes: usize) -> Result<Vec<(String, usize)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        if fields.is_empty() {
            continue;
        }
        let index = fields.get(1).and_then(|f| f.parse::<usize>().ok());
        match index {
            Some(k) if k < classes => out.push((fields[0].to_string(), k)),
            Some(k) => bail!(
                "{} line {}: class {k} is out of range (0..{classes})",
                path.display(),
                i + 1
            ),
            None if i == 0 => continue,
            None => bail!(
                "{} line {}: expected '<image>,<class index>'",
                path.display(),
                i + 1
            ),
        }
    }
    if out.is_empty() {
        bail!("{} lists no pictures", path.display());
    }
    Ok(out)
}

/// Resize the short side to 224 (bicubic) and take the central 224x224, as the reference does.
fn center_crop(picture: &RgbImage, size: u32) -> Vec<f32> {
    let img = image::RgbImage::from_raw(
        picture.width as u32,
        picture.height as u32,
        picture.pixels.clone(),
    )
    .expect("sizes agree");
    let (w, h) = img.dimensions();
    let scale = size as f64 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(size),
        ((h as f64 * scale).round() as u32).max(size),
    );
    let resized = image::imageops::resize(&img, nw, nh, FilterType::CatmullRom);
    let (x0, y0) = ((nw - size) / 2, (nh - size) / 2);
    let crop = image::imageops::crop_imm(&resized, x0, y0, size, size).to_image();
    let norm = ImageNorm::default();
    let mut chw = vec![0.0f32; 3 * (size * size) as usize];
    for (i, p) in crop.pixels().enumerate() {
        for c in 0..3 {
            chw[c * (size * size) as usize + i] = (p[c] as f32 - norm.mean[c]) / norm.std[c];
        }
    }
    chw
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassificationReport {
    pub images: u64,
    pub top1: f64,
    pub top5: f64,
}

#[allow(clippy::too_many_arguments)]
pub fn classify<B: Backend>(
    model: &OvSegmentor<B>,
    tokenizer: &TextTokenizer,
    root: &Path,
    list: &[(String, usize)],
    class_names: &[String],
    template: TemplateSet,
    batch: usize,
    progress: &ProgressBar,
    device: &B::Device,
) -> Result<ClassificationReport> {
    let classes = ClassEmbedder::new(tokenizer, template).embed(model, class_names, device)?;
    let scale = model.scale().reshape([1, 1]);
    let mut topk = TopK::default();
    progress.set_length(list.len() as u64);
    for chunk in list.chunks(batch.max(1)) {
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * 224 * 224);
        for (name, _) in chunk {
            let path: PathBuf = root.join(name);
            pixels.extend(center_crop(&read_image(&path)?, 224));
        }
        let images =
            Tensor::<B, 4>::from_data(TensorData::new(pixels, [chunk.len(), 3, 224, 224]), device);
        let pooled = model.img_encoder.forward(images, false).pooled;
        let embedding = normalize(model.img_projector.forward(pooled, false));
        let logits = embedding.matmul(classes.clone().transpose()) * scale.clone();
        let logits: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 logits");
        for (i, (_, truth)) in chunk.iter().enumerate() {
            topk.add(
                &logits[i * class_names.len()..(i + 1) * class_names.len()],
                *truth,
            );
        }
        progress.inc(chunk.len() as u64);
        progress.set_message(format!("top-1 {:.2}", topk.top1_percent()));
    }
    Ok(ClassificationReport {
        images: topk.total,
        top1: topk.top1_percent(),
        top5: topk.top5_percent(),
    })
}
