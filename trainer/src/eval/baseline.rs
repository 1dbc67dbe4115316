//! The image-level baseline `ovseg eval --baseline` prints next to the segmentation scores:
//! every pixel of a picture gets the one foreground class its image-level embedding matches
//! best. It shows how much of the mIoU comes from *where* things are rather than *what* the
//! picture shows.
//!
//! Per picture: the whole picture is resized (bilinear, aspect ratio not kept) to one square
//! window of the size segmentation's sliding windows have (448 for the paper's model), encoded, and `a = normalise(img_projector(pooled))` is matched against the
//! same prompt-ensembled class embeddings segmentation uses: `class = argmax_k a·T_k` over the
//! foreground classes. Background is never predicted.

use anyhow::Result;
use burn::prelude::*;
use indicatif::ProgressBar;
use ovseg_model::eval::IouAccumulator;
use ovseg_model::model::normalize;
use ovseg_model::segmentation::{prepare_image, ImageNorm, RgbImage};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvSegmentor;

use super::datasets::Dataset;
use super::run::{class_embeddings, read_sample, EvalOptions, EvalReport};

/// The image-level class of one picture: the index (into the foreground classes) of the best
/// match of its normalised image embedding against `classes` ([K, D], normalised rows).
pub fn image_level_class<B: Backend>(
    model: &OvSegmentor<B>,
    picture: &RgbImage,
    classes: Tensor<B, 2>,
    window: usize,
    device: &B::Device,
) -> usize {
    let x = prepare_image::<B>(picture, (window, window), ImageNorm::default(), device);
    let pooled = model.img_encoder.forward(x, false).pooled;
    let a = normalize(model.img_projector.forward(pooled, false));
    let scores: Vec<f32> = a
        .matmul(classes.transpose())
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 scores");
    argmax(&scores)
}

/// Index of the largest score (the first one on ties).
pub fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

/// The baseline's label map: `pixels` copies of the foreground class `k`'s label value
/// (`k + 1` when label 0 is background).
pub fn fill_prediction(k: usize, with_background: bool, pixels: usize) -> Vec<u32> {
    vec![(k + usize::from(with_background)) as u32; pixels]
}

/// Scores the image-level baseline over the same samples [`super::run::evaluate`] scores.
pub fn evaluate_baseline<B: Backend>(
    model: &OvSegmentor<B>,
    tokenizer: &TextTokenizer,
    dataset: &Dataset,
    options: &EvalOptions,
    progress: &ProgressBar,
    device: &B::Device,
) -> Result<EvalReport> {
    let start = std::time::Instant::now();
    let classes = class_embeddings(model, tokenizer, dataset, options, device)?;
    let window = model.segment_options(options.window).window;
    let samples = options.samples(dataset);
    progress.set_length(samples.len() as u64);
    let mut scores = IouAccumulator::new(dataset.classes.len());
    for sample in samples {
        let (picture, label) = read_sample(sample, dataset)?;
        let k = image_level_class(model, &picture, classes.clone(), window, device);
        let pred = fill_prediction(k, dataset.with_background, label.len());
        scores.add(&pred, &label);
        progress.inc(1);
        progress.set_message(format!("baseline mIoU {:.2}", scores.scores().miou));
    }
    Ok(EvalReport::from_scores(
        dataset,
        samples.len(),
        &scores,
        start.elapsed().as_secs_f64(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_best() {
        assert_eq!(argmax(&[0.1, 0.7, 0.3]), 1);
        assert_eq!(argmax(&[0.5, 0.2, 0.5]), 0);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn the_filled_map_skips_background() {
        assert_eq!(fill_prediction(0, true, 3), vec![1, 1, 1]);
        assert_eq!(fill_prediction(2, false, 2), vec![2, 2]);
        assert!(fill_prediction(4, true, 0).is_empty());
    }
}
