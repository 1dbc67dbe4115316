//! `ovseg eval` end to end on tiny datasets written in each benchmark's layout, with the
//! reference checkpoint. The ground truth is made from the model's own predictions and then
//! edited, so the expected IoUs are known by brute-force counting.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use common::*;
use ovseg_model::segmentation::{ClassEmbedder, RgbImage, SegmentOptions, TemplateSet, Vocab};
use ovseg_model::text::TextTokenizer;

type B = Flex;

fn ovseg(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ovseg"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ovseg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The fixture's three photos as JPEG files (decoded back, exactly as ovseg will read them).
fn write_pictures(dir: &Path) -> Vec<(String, RgbImage)> {
    std::fs::create_dir_all(dir).unwrap();
    ["image0_224", "image1_224", "seg_image"]
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.jpg"));
            image::open(tiny_dir().join(format!("{name}.png")))
                .unwrap()
                .to_rgb8()
                .save(&path)
                .unwrap();
            let rgb = image::open(&path).unwrap().to_rgb8();
            let (w, h) = rgb.dimensions();
            (
                name.to_string(),
                RgbImage::new(w as usize, h as usize, rgb.into_raw()).unwrap(),
            )
        })
        .collect()
}

fn write_grey(path: &Path, values: &[u32], w: usize, h: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_raw(
        w as u32,
        h as u32,
        values.iter().map(|&v| v as u8).collect(),
    )
    .unwrap()
    .save(path)
    .unwrap();
}

fn write_indexed(path: &Path, values: &[u32], w: usize, h: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(
        (0..256u32)
            .flat_map(|i| [(i * 7) as u8, (i * 13) as u8, (i * 29) as u8])
            .collect::<Vec<u8>>(),
    );
    let mut writer = enc.write_header().unwrap();
    writer
        .write_image_data(&values.iter().map(|&v| v as u8).collect::<Vec<u8>>())
        .unwrap();
}

/// Ground truth from a prediction: a band of rows moved to another class and a block ignored.
fn edit(pred: &[u32], w: usize, classes: u32) -> Vec<u32> {
    pred.iter()
        .enumerate()
        .map(|(i, &p)| {
            let (x, y) = (i % w, i / w);
            if y < 20 {
                (p + 1) % classes
            } else if x < 10 {
                255
            } else {
                p
            }
        })
        .collect()
}

fn brute_force_iou(pairs: &[(u32, u32)], classes: usize) -> Vec<Option<f64>> {
    (0..classes as u32)
        .map(|c| {
            let scored = pairs.iter().filter(|(_, g)| *g != 255);
            let inter = scored.clone().filter(|(p, g)| *p == c && *g == c).count();
            let union = scored.filter(|(p, g)| *p == c || *g == c).count();
            (union > 0).then(|| 100.0 * inter as f64 / union as f64)
        })
        .collect()
}

/// The reference fixture's model, read from its released checkpoint.
fn fixture_model(device: &burn::tensor::Device<B>) -> ovseg_model::OvSegmentor<B> {
    ovseg_model::import::load_checkpoint::<B>(
        &tiny_dir().join("checkpoint.pth"),
        &ovseg_model::OvsegConfig::tiny(),
        device,
    )
    .unwrap()
    .0
}

#[test]
fn every_layout_scores_like_a_brute_force_count() {
    let device = Default::default();
    let model = fixture_model(&device);
    let tokenizer = TextTokenizer::bert_base_uncased();
    let dir = scratch("layouts");
    let model_file = convert_fixture(env!("CARGO_BIN_EXE_ovseg"), &dir, &["--inference-only"]);

    for dataset in ["voc", "context", "coco_object", "ade20k"] {
        let vocab = Vocab::get().dataset(dataset).unwrap();
        let root = dir.join(dataset);
        let (picture_dir, label_path): (PathBuf, Box<dyn Fn(&str) -> PathBuf>) = match dataset {
            "voc" => (
                root.join("JPEGImages"),
                Box::new(|id| root.join("SegmentationClass").join(format!("{id}.png"))),
            ),
            "context" => (
                root.join("JPEGImages"),
                Box::new(|id| {
                    root.join("SegmentationClassContext")
                        .join(format!("{id}.png"))
                }),
            ),
            "coco_object" => (
                root.join("images/val2017"),
                Box::new(|id| {
                    root.join("annotations/val2017_cocoobject")
                        .join(format!("{id}_instanceTrainIds.png"))
                }),
            ),
            _ => (
                root.join("images/validation"),
                Box::new(|id| {
                    root.join("annotations/validation")
                        .join(format!("{id}.png"))
                }),
            ),
        };
        let pictures = write_pictures(&picture_dir);
        let classes = ClassEmbedder::new(&tokenizer, TemplateSet::Simple)
            .embed(&model, vocab.foreground(), &device)
            .unwrap();
        let options = SegmentOptions {
            bg_thresh: vocab.bg_thresh,
            ..Default::default()
        };
        let mut pairs = Vec::new();
        for (id, picture) in &pictures {
            let pred: Vec<u32> = values(
                model
                    .segment(picture, classes.clone(), &options)
                    .labels
                    .float(),
            )
            .iter()
            .map(|&v| v as u32)
            .collect();
            let truth = edit(&pred, picture.width, vocab.classes.len() as u32);
            pairs.extend(pred.iter().copied().zip(truth.iter().copied()));
            let (w, h) = (picture.width, picture.height);
            match dataset {
                "voc" | "context" => write_indexed(&label_path(id), &truth, w, h),
                "coco_object" => write_grey(&label_path(id), &truth, w, h),
                _ => write_grey(
                    &label_path(id),
                    &truth
                        .iter()
                        .map(|&t| if t == 255 { 0 } else { t + 1 })
                        .collect::<Vec<_>>(),
                    w,
                    h,
                ),
            }
        }
        if matches!(dataset, "voc" | "context") {
            let split = if dataset == "voc" {
                "ImageSets/Segmentation"
            } else {
                "ImageSets/SegmentationContext"
            };
            std::fs::create_dir_all(root.join(split)).unwrap();
            let ids: Vec<&str> = pictures.iter().map(|(id, _)| id.as_str()).collect();
            std::fs::write(root.join(split).join("val.txt"), ids.join("\n")).unwrap();
        }

        let out = dir.join(format!("{dataset}.json"));
        let preds = dir.join(format!("{dataset}-pred"));
        let stdout = ovseg(&[
            "eval",
            "--model",
            s(&model_file),
            "--dataset",
            dataset,
            "--root",
            s(&root),
            "--out",
            s(&out),
            "--save-pred",
            s(&preds),
        ]);
        assert!(stdout.contains("mIoU"), "{stdout}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(report["images"], 3);
        let expected = brute_force_iou(&pairs, vocab.classes.len());
        let mut kept = Vec::new();
        for (c, name) in vocab.classes.iter().enumerate() {
            let got = report["per_class"][name].as_f64();
            match expected[c] {
                Some(e) => {
                    let g = got.unwrap_or_else(|| panic!("{dataset}/{name}: missing IoU"));
                    assert!(
                        (g - e).abs() < 1e-9,
                        "{dataset}/{name}: {g} vs brute force {e}"
                    );
                    kept.push(e);
                }
                None => assert!(got.is_none(), "{dataset}/{name}: absent class has an IoU"),
            }
        }
        let miou = kept.iter().sum::<f64>() / kept.len() as f64;
        assert!(
            (report["miou"].as_f64().unwrap() - miou).abs() < 1e-9,
            "{dataset}: mIoU"
        );
        let scored: Vec<_> = pairs.iter().filter(|(_, g)| *g != 255).collect();
        let aacc =
            100.0 * scored.iter().filter(|(p, g)| p == g).count() as f64 / scored.len() as f64;
        assert!(
            (report["aacc"].as_f64().unwrap() - aacc).abs() < 1e-9,
            "{dataset}: aAcc"
        );
        assert_eq!(
            std::fs::read_dir(&preds).unwrap().count(),
            3,
            "{dataset}: saved predictions"
        );
        // The trivial answer beside it: every pixel background, counted by brute force.
        if vocab.with_background {
            let everything_background: Vec<(u32, u32)> =
                pairs.iter().map(|&(_, g)| (0, g)).collect();
            let kept: Vec<f64> = brute_force_iou(&everything_background, vocab.classes.len())
                .into_iter()
                .flatten()
                .collect();
            let expected = kept.iter().sum::<f64>() / kept.len() as f64;
            let got = report["all_background_miou"].as_f64().unwrap();
            assert!(
                (got - expected).abs() < 1e-9,
                "{dataset}: all-background {got} vs {expected}"
            );
        } else {
            assert!(report["all_background_miou"].is_null(), "{dataset}");
        }
    }

    // --limit scores fewer pictures.
    let out = dir.join("limited.json");
    ovseg(&[
        "eval",
        "--model",
        s(&model_file),
        "--dataset",
        "voc",
        "--root",
        s(&dir.join("voc")),
        "--limit",
        "1",
        "--out",
        s(&out),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["images"], 1);

    // A missing label file is named when the dataset opens, before any picture is scored.
    let voc = dir.join("voc");
    let labels = voc.join("SegmentationClass");
    let first = std::fs::read_dir(&labels)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::rename(&first, dir.join("set-aside.png")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ovseg"))
        .args([
            "eval",
            "--model",
            s(&model_file),
            "--dataset",
            "voc",
            "--root",
            s(&voc),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = first.file_name().unwrap().to_string_lossy();
    assert!(
        !out.status.success() && stderr.contains("label") && stderr.contains(&*name),
        "{stderr}"
    );
}

#[test]
fn imagenet_classification() {
    let dir = scratch("imagenet");
    let model_file = convert_fixture(env!("CARGO_BIN_EXE_ovseg"), &dir, &["--inference-only"]);
    let images = dir.join("val");
    write_pictures(&images);
    std::fs::write(
        images.join("val.csv"),
        "image,label\nimage0_224.jpg,281\nimage1_224.jpg,504\nseg_image.jpg,0\n",
    )
    .unwrap();
    let out = dir.join("imagenet.json");
    let stdout = ovseg(&[
        "eval",
        "--model",
        s(&model_file),
        "--dataset",
        "imagenet",
        "--root",
        s(&images),
        "--template",
        "simple",
        "--out",
        s(&out),
    ]);
    assert!(stdout.contains("top-1"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["images"], 3);
    let (top1, top5) = (
        report["top1"].as_f64().unwrap(),
        report["top5"].as_f64().unwrap(),
    );
    assert!((0.0..=100.0).contains(&top1) && top1 <= top5);

    // With two classes every picture is in the top five.
    std::fs::write(
        images.join("two.csv"),
        "image0_224.jpg,0\nimage1_224.jpg,1\n",
    )
    .unwrap();
    ovseg(&[
        "eval",
        "--model",
        s(&model_file),
        "--dataset",
        "imagenet",
        "--root",
        s(&images),
        "--labels-file",
        s(&images.join("two.csv")),
        "--classes",
        "cat,coffee",
        "--template",
        "simple",
        "--out",
        s(&out),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["top5"].as_f64().unwrap(), 100.0);
}

/// `--baseline`: every pixel of a picture gets the class its image-level embedding matches
/// best; the class is recomputed here from the model's parts and the IoUs counted by hand.
#[test]
fn image_level_baseline_scores_by_hand() {
    let device = Default::default();
    let dir = scratch("baseline");
    let model_file = convert_fixture(env!("CARGO_BIN_EXE_ovseg"), &dir, &["--inference-only"]);
    let root = dir.join("voc");
    let pictures = write_pictures(&root.join("JPEGImages"));
    let split = root.join("ImageSets/Segmentation");
    std::fs::create_dir_all(&split).unwrap();
    let ids: Vec<&str> = pictures.iter().map(|(id, _)| id.as_str()).collect();
    std::fs::write(split.join("val.txt"), ids.join("\n")).unwrap();
    // Left half background, right half class 1, the top 10 rows ignored; class 2 in a corner.
    let truths: Vec<Vec<u32>> = pictures
        .iter()
        .map(|(_, p)| {
            let (w, h) = (p.width, p.height);
            (0..w * h)
                .map(|i| {
                    let (x, y) = (i % w, i / w);
                    if y < 10 {
                        255
                    } else if x < 8 && y < 30 {
                        2
                    } else if x < w / 2 {
                        0
                    } else {
                        1
                    }
                })
                .collect()
        })
        .collect();
    for ((id, p), t) in pictures.iter().zip(&truths) {
        write_indexed(
            &root.join("SegmentationClass").join(format!("{id}.png")),
            t,
            p.width,
            p.height,
        );
    }

    let run = |classes: &str, out: &Path| -> (String, serde_json::Value) {
        let stdout = ovseg(&[
            "eval",
            "--model",
            s(&model_file),
            "--dataset",
            "voc",
            "--root",
            s(&root),
            "--classes",
            classes,
            "--baseline",
            "--out",
            s(out),
        ]);
        let report = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
        (stdout, report)
    };

    // Each picture's image-level class, recomputed from the model's parts, counted by brute
    // force. (Segmentation needs two foreground classes at least, so the list has three.)
    let model = fixture_model(&device);
    let tokenizer = TextTokenizer::bert_base_uncased();
    let names = ["cat".to_string(), "dog".to_string()];
    let embeddings = ClassEmbedder::new(&tokenizer, TemplateSet::Simple)
        .embed(&model, &names, &device)
        .unwrap();
    let mut pairs = Vec::new();
    for ((_, p), t) in pictures.iter().zip(&truths) {
        // The image-level class, recomputed from the model's parts: one 448x448 window.
        let x = ovseg_model::segmentation::prepare_image::<B>(
            p,
            (448, 448),
            ovseg_model::segmentation::ImageNorm::default(),
            &device,
        );
        let pooled = model.img_encoder.forward(x, false).pooled;
        let a = ovseg_model::model::normalize(model.img_projector.forward(pooled, false));
        let scores = values(a.matmul(embeddings.clone().transpose()));
        let k = if scores[1] > scores[0] { 1 } else { 0 };
        pairs.extend(t.iter().map(|&g| (k as u32 + 1, g)));
    }
    let expected = brute_force_iou(&pairs, 3);
    let three = dir.join("three.json");
    let (stdout, report) = run("background,cat,dog", &three);
    assert!(stdout.contains("| baseline IoU |"), "{stdout}");
    assert_eq!(report["baseline"]["images"], 3);
    assert!(report["segmentation"]["miou"].as_f64().is_some());
    for (c, name) in ["background", "cat", "dog"].iter().enumerate() {
        let got = report["baseline"]["per_class"][name].as_f64();
        match expected[c] {
            Some(e) => assert!((got.unwrap() - e).abs() < 1e-6, "{name}: {got:?} vs {e}"),
            None => assert!(got.is_none() || got.unwrap().is_nan(), "{name}: {got:?}"),
        }
    }
    assert_eq!(
        report["baseline"]["per_class"]["background"].as_f64(),
        Some(0.0)
    );
}
