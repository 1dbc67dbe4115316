//! Every picture size segments, from 1x1 up: pictures thinner than one patch at working size
//! (1x5000 is 1x2048 there) are padded to a patch, and the label map is computed without every
//! label channel at full size yet equals the argmax of the full-size logits. `ovseg segment` over
//! a folder reports a bad picture in one line and segments the others.

mod common;

use std::path::Path;

use burn::backend::Flex;
use burn::prelude::*;
use common::*;
use ovseg_model::import::load_checkpoint;
use ovseg_model::segmentation::{ClassEmbedder, RgbImage, SegmentOptions, TemplateSet};
use ovseg_model::text::TextTokenizer;
use ovseg_model::{OvSegmentor, OvsegConfig};

type B = Flex;

const VOC: &str = "aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person,plant,sheep,sofa,train,monitor";

fn reference_model() -> (OvSegmentor<B>, Tensor<B, 2>) {
    let device = &Default::default();
    let tiny = tiny_dir();
    let config =
        OvsegConfig::from_json(&std::fs::read_to_string(tiny.join("model.json")).unwrap()).unwrap();
    let (model, _) = load_checkpoint::<B>(&tiny.join("checkpoint.pth"), &config, device).unwrap();
    let json = std::fs::read_to_string(fixtures_dir().join("minilm/tokenizer.json")).unwrap();
    let tokenizer = TextTokenizer::from_json(&json).unwrap();
    let labels: Vec<String> = VOC.split(',').map(String::from).collect();
    let classes = ClassEmbedder::new(&tokenizer, TemplateSet::Simple)
        .embed(&model, &labels, device)
        .unwrap();
    (model, classes)
}

/// A picture with some structure: the reference picture's pixels, tiled.
fn picture(width: usize, height: usize) -> RgbImage {
    let seg = image::open(tiny_dir().join("seg_image.png"))
        .unwrap()
        .to_rgb8();
    let rgb = image::RgbImage::from_fn(width as u32, height as u32, |x, y| {
        *seg.get_pixel(x * 7 % seg.width(), y * 5 % seg.height())
    });
    RgbImage::new(width, height, rgb.into_raw()).unwrap()
}

fn ints(t: Tensor<B, 2, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec().unwrap()
}

#[test]
fn thin_tiny_and_large_pictures_get_their_label_map() {
    let (model, classes) = reference_model();
    let options = SegmentOptions {
        bg_thresh: Some(0.95),
        ..Default::default()
    };
    for (w, h) in [
        (1, 5000),
        (5000, 1),
        (3, 2000),
        (2000, 3),
        (1, 1),
        (2, 3),
        (15, 3000),
    ] {
        let result = model.segment(&picture(w, h), classes.clone(), &options);
        assert_eq!(result.labels.dims(), [h, w], "{w}x{h}");
        let labels = result.label_values();
        assert_eq!(labels.len(), w * h);
        assert!(labels.iter().all(|&l| l <= 20), "{w}x{h}: labels 0..=20");
        // The label map is the argmax of the logits at the picture's size.
        let full = result.picture_logits();
        assert_eq!(full.dims(), [21, h, w]);
        let expected = ints(full.argmax(0).squeeze_dim::<2>(0));
        let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        assert_eq!(labels, expected, "{w}x{h}");
    }
    // Upsampled (1000x700 is 640x448 at working size) and downsampled pictures: the running
    // argmax over chunks of channels gives exactly the full-size argmax, with several labels.
    for (w, h) in [(1000, 700), (300, 200)] {
        let result = model.segment(&picture(w, h), classes.clone(), &options);
        let labels = ints(result.labels.clone());
        let expected = ints(result.picture_logits().argmax(0).squeeze_dim::<2>(0));
        assert_eq!(labels, expected, "{w}x{h}");
        let mut distinct = labels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 2, "{w}x{h}: only labels {distinct:?}");
    }
}

fn save(picture: &RgbImage, path: &Path) {
    image::RgbImage::from_raw(
        picture.width as u32,
        picture.height as u32,
        picture.pixels.clone(),
    )
    .unwrap()
    .save(path)
    .unwrap();
}

fn read_mask(path: &Path) -> (Vec<u32>, u32, u32) {
    let img = image::open(path).unwrap().to_luma8();
    let (w, h) = img.dimensions();
    (img.into_raw().into_iter().map(u32::from).collect(), w, h)
}

#[test]
fn a_folder_run_reports_a_bad_picture_and_segments_the_others() {
    let dir = scratch("segment-sizes");
    let model = convert_fixture(env!("CARGO_BIN_EXE_ovseg"), &dir, &["--inference-only"]);
    let pictures = dir.join("pictures");
    std::fs::create_dir_all(&pictures).unwrap();
    std::fs::copy(
        tiny_dir().join("seg_image.png"),
        pictures.join("astronaut.png"),
    )
    .unwrap();
    let sizes = [(1, 5000), (5000, 1), (3, 2000), (1, 1)];
    for (w, h) in sizes {
        save(&picture(w, h), &pictures.join(format!("thin_{w}x{h}.png")));
    }
    std::fs::write(pictures.join("corrupt.png"), b"\x89PNG\r\n\x1a\nnot a png").unwrap();
    let out_dir = dir.join("out");
    let out = ovseg(&[
        "segment",
        "--model",
        s(&model),
        "--image",
        s(&pictures),
        "--labels",
        VOC,
        "--out-dir",
        s(&out_dir),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "one picture failed: {stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("skipped ") && lines[0].contains("corrupt.png"),
        "{stderr}"
    );
    assert_eq!(lines[1], "error: 1 of 6 pictures could not be segmented");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");

    for (w, h) in sizes {
        let (labels, mw, mh) = read_mask(&out_dir.join(format!("thin_{w}x{h}.mask.png")));
        assert_eq!((mw as usize, mh as usize), (w, h));
        assert!(labels.iter().all(|&l| l <= 20), "thin_{w}x{h}");
    }
    assert!(!out_dir.join("corrupt.mask.png").exists());
    // The normal picture in the same run still gives the reference label map.
    let (labels, w, h) = read_mask(&out_dir.join("astronaut.mask.png"));
    assert_eq!((w, h), (672, 448));
    let expected = Fixture::open(tiny_dir().join("outputs.safetensors")).f32s("seg_pred_slide");
    let differing = labels
        .iter()
        .zip(&expected)
        .filter(|(a, b)| **a as f32 != **b)
        .count();
    assert!(
        differing * 2000 <= expected.len(),
        "{differing} labels differ"
    );
}
