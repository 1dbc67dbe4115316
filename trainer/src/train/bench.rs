//! `ovseg bench --train`: one optimizer step of each stage at a small configuration: training
//! images per second and the process's peak memory.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use burn::backend::Autodiff;
use burn::prelude::*;
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvsegConfig;

use crate::data::{Batch, DataPosition};
use crate::train::optimizer::AdamWSettings;
use crate::train::replica::{freeze_for_stage, Replica, ReplicaSettings};

/// Peak resident memory of this process (Linux), reset before each measurement.
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn reset_peak_memory() {
    // Writing 5 to clear_refs resets VmHWM to the current resident size.
    std::fs::write("/proc/self/clear_refs", "5").ok();
}

fn batch(size: usize, image_size: usize, stage_two: bool) -> Batch {
    let pixels = size * 3 * image_size * image_size;
    let image: Vec<f32> = (0..pixels)
        .map(|i| ((i * 37 % 255) as f32 - 127.0) / 64.0)
        .collect();
    let texts = |t: &str| {
        (0..size)
            .map(|i| format!("{t} dog and a kite number {i}"))
            .collect()
    };
    Batch {
        size,
        image_size,
        images: image.clone(),
        captions: texts("a photo of a"),
        questions: texts("a [MASK] and a [MASK] with"),
        answers: texts("a good photo of a"),
        entities: vec![vec!["dog".to_string(), "kite".to_string()]; size],
        partner_texts: stage_two.then(|| texts("A photo of")),
        partner_images: stage_two.then_some(image),
        position: DataPosition::default(),
    }
}

/// (images/s, peak MB) of one step of `stage`, after one warm-up step.
pub fn measure<B: Backend>(
    config: &OvsegConfig,
    batch_size: usize,
    stage_two: bool,
    repeats: usize,
    device: B::Device,
) -> Result<(f64, Option<f64>)> {
    let mut model = config.init::<Autodiff<B>>(&device);
    if stage_two {
        model.reset_momentum_encoder();
    }
    let model = freeze_for_stage(model, stage_two);
    let settings = ReplicaSettings {
        adamw: AdamWSettings::default(),
        momentum: stage_two.then_some(0.99),
        seed: 0,
        frozen_text_cache_mb: stage_two.then_some(1024),
        autocast: None,
        group_naming: None,
    };
    let tokenizer = Arc::new(TextTokenizer::bert_base_uncased());
    let mut replica = Replica::new(model, tokenizer, device, None, settings);
    let data = [batch(batch_size, config.image.img_size, stage_two)];
    replica.step(&data, 1e-5, 0)?;
    reset_peak_memory();
    let start = Instant::now();
    for step in 0..repeats.max(1) {
        // The step reads its loss values back, so it has finished when it returns.
        replica.step(&data, 1e-5, step + 1)?;
    }
    let per_step = start.elapsed().as_secs_f64() / repeats.max(1) as f64;
    Ok((batch_size as f64 / per_step, peak_memory_mb()))
}
