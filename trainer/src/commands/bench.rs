use std::time::Instant;

use anyhow::Result;
use burn::backend::{Flex, NdArray};
use burn::prelude::*;
use ovseg_model::segmentation::{ClassEmbedder, RgbImage, SegmentOptions, TemplateSet};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvsegConfig;

#[derive(clap::Args)]
pub struct Args {
    /// Presets to time (paper, vits-minilm).
    #[arg(long, num_args = 1.., default_values = ["paper", "vits-minilm"])]
    preset: Vec<String>,
    /// CPU backends to time (flex, ndarray).
    #[arg(long, num_args = 1.., default_values = ["flex", "ndarray"])]
    backend: Vec<String>,
    /// Timed runs per measurement (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Time training instead: one optimizer step of stage 1 and of stage 2 (images/s and peak
    /// memory) for the first --preset (default here: tiny) at --train-batch.
    #[arg(long)]
    train: bool,
    #[arg(long, default_value_t = 8)]
    train_batch: usize,
    /// Device of the training benchmark (cuda with a `--features cuda` build).
    #[arg(long, value_enum, default_value_t = crate::backend::DeviceKind::Cpu)]
    device: crate::backend::DeviceKind,
}

fn run_train(args: &Args) -> Result<()> {
    let explicit = std::env::args().any(|a| a == "--preset");
    let preset = if explicit {
        args.preset[0].as_str()
    } else {
        "tiny"
    };
    let config = OvsegConfig::preset(preset)?;
    println!("| preset | device | stage | batch | training images/s | peak memory (MB) |");
    println!("|---|---|---|---|---|---|");
    for stage_two in [false, true] {
        let (rate, peak) = crate::on_device!(
            args.device,
            measure_train(&config, args.train_batch, stage_two, args.repeats)
        )?;
        println!(
            "| {preset} | {:?} | {} | {} | {rate:.2} | {} |",
            args.device,
            if stage_two { 2 } else { 1 },
            args.train_batch,
            peak.map_or("n/a".into(), |p| format!("{p:.0}"))
        );
    }
    Ok(())
}

fn measure_train<B: Backend>(
    config: &OvsegConfig,
    batch: usize,
    stage_two: bool,
    repeats: usize,
    device: B::Device,
) -> Result<(f64, Option<f64>)> {
    crate::train::bench::measure::<B>(config, batch, stage_two, repeats, device)
}

/// The 20 PASCAL VOC classes: encoding them is what every segmentation starts with.
fn voc_classes() -> Vec<String> {
    ovseg_model::segmentation::Vocab::get()
        .dataset("voc")
        .expect("voc")
        .foreground()
        .to_vec()
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn time<F: FnMut()>(repeats: usize, mut f: F) -> f64 {
    f();
    median(
        (0..repeats.max(1))
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// (one 448x448 window through the image encoder, 20 class prompts through the text side,
/// one whole 500x375 picture segmented as evaluation does: resize to 597x448, two windows).
fn measure<B: Backend>(config: &OvsegConfig, repeats: usize) -> Result<(f64, f64, f64)> {
    let device = B::Device::default();
    let model = config.init_inference::<B>(&device);
    let window = Tensor::<B, 4>::random(
        [1, 3, 448, 448],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let window_s = time(repeats, || {
        let out = model.img_encoder.forward(window.clone(), false);
        // Reading a value back waits for the computation.
        let _ = out.pooled.into_data();
    });
    let tokenizer = TextTokenizer::bert_base_uncased();
    let classes = voc_classes();
    let embedder = ClassEmbedder::new(&tokenizer, TemplateSet::Simple);
    let mut failure = None;
    let prompts_s = time(repeats, || {
        match embedder.embed(&model, &classes, &device) {
            Ok(t) => {
                let _ = t.into_data();
            }
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    let classes = embedder.embed(&model, &classes, &device)?;
    let pixels: Vec<u8> = (0..500 * 375 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let picture = RgbImage::new(500, 375, pixels)?;
    let options = SegmentOptions::default();
    let picture_s = time(repeats, || {
        let _ = model
            .segment(&picture, classes.clone(), &options)
            .labels
            .into_data();
    });
    Ok((window_s, prompts_s, picture_s))
}

pub fn run(args: Args) -> Result<()> {
    if args.train {
        return run_train(&args);
    }
    println!("| preset | backend | 448x448 window, image encoder (s) | 20 class prompts, text side (s) | 500x375 picture, segmentation (images/s) |");
    println!("|---|---|---|---|---|");
    for preset in &args.preset {
        let config = OvsegConfig::preset(preset)?;
        for backend in &args.backend {
            let (window, prompts, picture) = match backend.as_str() {
                "flex" => measure::<Flex>(&config, args.repeats)?,
                "ndarray" => measure::<NdArray>(&config, args.repeats)?,
                other => anyhow::bail!("unknown backend '{other}' (known: flex, ndarray)"),
            };
            println!(
                "| {preset} | {backend} | {window:.3} | {prompts:.3} | {:.3} |",
                1.0 / picture
            );
        }
    }
    Ok(())
}
