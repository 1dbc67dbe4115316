//! The `ovseg` command line as a user runs it: convert the reference checkpoint, segment the
//! reference picture with the 20 VOC classes and get the reference label map; bad input gives a
//! one-line error and a non-zero exit, never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const VOC: &str = "aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person,plant,sheep,sofa,train,monitor";

/// Runs a command that must fail and returns its one-line reason.
fn fails(args: &[&str]) -> String {
    let out = ovseg(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "ovseg {args:?} should fail");
    assert!(
        !stderr.contains("panicked"),
        "ovseg {args:?} panicked: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line reason, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

fn converted(dir: &Path, extra: &[&str]) -> PathBuf {
    convert_fixture(env!("CARGO_BIN_EXE_ovseg"), dir, extra)
}

fn read_mask(path: &Path) -> (Vec<u32>, u32, u32) {
    let img = image::open(path).unwrap().to_luma8();
    let (w, h) = img.dimensions();
    (img.into_raw().into_iter().map(u32::from).collect(), w, h)
}

#[test]
fn segment_reproduces_the_reference_label_map() {
    let dir = scratch("parity");
    let model = converted(&dir, &[]);
    let tiny = tiny_dir();
    let mask = dir.join("mask.png");
    let logits = dir.join("logits.safetensors");
    let overlay = dir.join("overlay.png");
    let stdout = ok(&[
        "segment",
        "--model",
        s(&model),
        "--image",
        s(&tiny.join("seg_image.png")),
        "--labels",
        VOC,
        "--out-mask",
        s(&mask),
        "--out-logits",
        s(&logits),
        "--out-overlay",
        s(&overlay),
    ]);
    assert!(
        stdout.contains("seg_image.png") && stdout.contains('%'),
        "{stdout}"
    );

    let (labels, w, h) = read_mask(&mask);
    assert_eq!((w, h), (672, 448));
    let expected: Vec<u32> = Fixture::open(tiny.join("outputs.safetensors"))
        .f32s("seg_pred_slide")
        .iter()
        .map(|&v| v as u32)
        .collect();
    let differing = labels.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert!(
        differing * 2000 <= expected.len(),
        "{differing} pixels differ from seg_pred_slide"
    );

    let saved = Fixture::open(logits);
    assert_eq!(saved.shape("logits"), vec![21, 448, 672]);
    let v = saved.f32s("logits");
    let mut every4 = Vec::new();
    for c in 0..21 {
        for y in (0..448).step_by(4) {
            for x in (0..672).step_by(4) {
                every4.push(v[(c * 448 + y) * 672 + x]);
            }
        }
    }
    let reference = Fixture::open(tiny.join("outputs.safetensors"));
    assert_close(
        "seg_logits_slide_every4",
        &every4,
        &reference.f32s("seg_logits_slide_every4"),
        1e-4,
        1e-4,
    );

    let overlay = image::open(&overlay).unwrap();
    assert_eq!(overlay.width(), 672);
    assert!(overlay.height() > 448, "legend below the picture");

    // The released .pth with its config gives the same map.
    let mask2 = dir.join("mask2.png");
    ok(&[
        "segment",
        "--model",
        s(&tiny.join("checkpoint.pth")),
        "--config",
        s(&tiny.join("model.json")),
        "--image",
        s(&tiny.join("seg_image.png")),
        "--labels",
        VOC,
        "--out-mask",
        s(&mask2),
    ]);
    assert_eq!(read_mask(&mask2).0, labels);
}

#[test]
fn half_precision_and_inference_only_models_segment() {
    let dir = scratch("half");
    let full = std::fs::metadata(converted(&scratch("half-full"), &[]))
        .unwrap()
        .len();
    let model = converted(&dir, &["--half", "--inference-only"]);
    let half = std::fs::metadata(&model).unwrap().len();
    assert!(
        half * 2 < full,
        "f16 inference-only file ({half} B) is much smaller than f32 full ({full} B)"
    );
    let mask = dir.join("m.png");
    let tiny = tiny_dir();
    ok(&[
        "segment",
        "--model",
        s(&model),
        "--image",
        s(&tiny.join("seg_image.png")),
        "--labels",
        VOC,
        "--out-mask",
        s(&mask),
    ]);
    let (labels, _, _) = read_mask(&mask);
    let expected: Vec<u32> = Fixture::open(tiny.join("outputs.safetensors"))
        .f32s("seg_pred_slide")
        .iter()
        .map(|&v| v as u32)
        .collect();
    let agree = labels.iter().zip(&expected).filter(|(a, b)| a == b).count();
    assert!(
        agree * 100 >= expected.len() * 95,
        "f16 weights keep {agree} of {} labels",
        expected.len()
    );
}

/// A JPEG with an EXIF orientation tag (6: rotate 90 degrees clockwise to display).
fn jpeg_with_orientation(path: &Path, w: u32, h: u32, orientation: u16) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec(); // little endian, IFD at 8, one entry
    tiff.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0]); // tag 0x0112 SHORT x1
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0, 0, 0, 0, 0]); // padding + no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&jpeg[2..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn folders_exif_grey_and_rgba_pictures() {
    let dir = scratch("inputs");
    let model = converted(&dir, &["--inference-only"]);
    let pictures = dir.join("pictures");
    std::fs::create_dir_all(&pictures).unwrap();
    jpeg_with_orientation(&pictures.join("rotated.jpg"), 320, 200, 6);
    image::GrayImage::from_fn(300, 240, |x, _| image::Luma([(x % 256) as u8]))
        .save(pictures.join("grey.png"))
        .unwrap();
    image::RgbaImage::from_fn(256, 256, |x, y| image::Rgba([x as u8, y as u8, 0, 128]))
        .save(pictures.join("rgba.png"))
        .unwrap();
    std::fs::write(pictures.join("notes.txt"), "not a picture").unwrap();
    let out = dir.join("out");
    let stdout = ok(&[
        "segment",
        "--model",
        s(&model),
        "--image",
        s(&pictures),
        "--labels",
        "cat, sofa ,window",
        "--no-background",
        "--out-dir",
        s(&out),
    ]);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let (rotated, w, h) = read_mask(&out.join("rotated.mask.png"));
    assert_eq!(
        (w, h),
        (200, 320),
        "EXIF orientation 6 turns 320x200 into 200x320"
    );
    assert!(
        rotated.iter().all(|&l| l < 3),
        "without background the labels are 0..K-1"
    );
    assert_eq!(read_mask(&out.join("grey.mask.png")).1, 300);
    assert_eq!(read_mask(&out.join("rgba.mask.png")).1, 256);
    assert!(out.join("rgba.overlay.png").is_file());
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = scratch("errors");
    let model = converted(&dir, &["--inference-only"]);
    let tiny = tiny_dir();
    let picture = tiny.join("seg_image.png");
    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let text_model = dir.join("model.txt");
    std::fs::write(&text_model, "hello").unwrap();
    let mut wrong_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("model.json")).unwrap()).unwrap();
    wrong_config["image"]["embed_dim"] = serde_json::json!(128);
    let wrong = dir.join("wrong.json");
    std::fs::write(&wrong, wrong_config.to_string()).unwrap();
    let broken = dir.join("broken.json");
    std::fs::write(&broken, "{\"image\": ").unwrap();

    let seg = |model: &Path, image: &Path, labels: &str| {
        fails(&[
            "segment",
            "--model",
            s(model),
            "--image",
            s(image),
            "--labels",
            labels,
            "--out-dir",
            s(&dir),
        ])
    };
    assert!(seg(&model, &dir.join("missing.png"), "cat").contains("does not exist"));
    assert!(seg(&model, &corrupt, "cat").contains("corrupt.png"));
    assert!(seg(&model, &picture, " , ").contains("no labels"));
    assert!(seg(&model, &picture, "cat,cat").contains("twice"));
    assert!(seg(&dir.join("nope.mpk"), &picture, "cat").contains("does not exist"));
    assert!(seg(&text_model, &picture, "cat").contains("not an ovseg model file"));
    // One flipped bit in a weight: the checksum trailer catches it.
    let mut bytes = std::fs::read(&model).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let flipped = dir.join("flipped.mpk");
    std::fs::write(&flipped, bytes).unwrap();
    let e = seg(&flipped, &picture, "cat");
    assert!(
        e.contains("flipped.mpk") && e.contains("checksum mismatch"),
        "{e}"
    );
    let e = fails(&[
        "segment",
        "--model",
        s(&tiny.join("checkpoint.pth")),
        "--config",
        s(&wrong),
        "--image",
        s(&picture),
        "--labels",
        "cat",
    ]);
    assert!(
        e.contains("shape mismatch") && e.contains("img_encoder.pos_embed"),
        "{e}"
    );
    let e = fails(&[
        "convert",
        "--checkpoint",
        s(&tiny.join("checkpoint.pth")),
        "--config",
        s(&broken),
        "--out",
        s(&dir.join("x.mpk")),
    ]);
    assert!(e.contains("broken.json"), "{e}");
    let e = fails(&[
        "convert",
        "--checkpoint",
        s(&text_model),
        "--config",
        s(&tiny.join("model.json")),
        "--out",
        s(&dir.join("x.mpk")),
    ]);
    assert!(e.contains("model.txt"), "{e}");
    let e = fails(&[
        "segment",
        "--model",
        s(&model),
        "--image",
        s(&picture),
        "--labels",
        "cat",
        "--bg-thresh",
        "3",
    ]);
    assert!(e.contains("bg-thresh"), "{e}");
}

#[test]
fn index_extracts_entities_and_reports_bad_lines() {
    let dir = scratch("index");
    let meta = dir.join("meta.jsonl");
    std::fs::write(
        &meta,
        concat!(
            "{\"filename\": \"a.jpg\", \"caption\": \"a cat lying on a blanket next to a remote\"}\n",
            "{\"filename\": \"b.jpg\", \"caption\": \"Two dogs and a man's bike\"}\n",
            "not json at all\n",
            "{\"filename\": \"c.jpg\", \"caption\": \"   \"}\n",
            "{\"filename\": \"d.jpg\", \"caption\": \"a sunset over the sea\"}\n",
            "{\"filename\": \"e.jpg\", \"caption\": \"a cat on a sofa\"}\n",
        ),
    )
    .unwrap();
    let out = ovseg(&["index", s(&meta)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("line 3"), "the bad line is named: {stderr}");
    assert!(stdout.contains("indexed 3 pairs"), "{stdout}");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.index.json")).unwrap())
            .unwrap();
    assert_eq!(index["by_entity"]["cat"], serde_json::json!([0, 2]));
    assert_eq!(index["by_entity"]["people"], serde_json::json!([1]));
    assert_eq!(
        index["samples"][1]["entities"],
        serde_json::json!(["dog", "people", "bicycle"])
    );
    assert_eq!(index["skipped"]["invalid_lines"], 1);
    assert_eq!(index["skipped"]["empty_caption"], 1);
    assert_eq!(index["skipped"]["no_entity"], 1);
    let e = fails(&["index", s(&dir.join("missing.jsonl"))]);
    assert!(e.contains("missing.jsonl"), "{e}");

    // The original project's released sampling files, in their shape (class 49 is "dog").
    let labels = dir.join("class_label.json");
    std::fs::write(&labels, r#"{"a.jpg": "49", "b.jpg": "49"}"#).unwrap();
    let list = dir.join("sample_list.json");
    std::fs::write(
        &list,
        r#"{"49": [["b.jpg", "Two dogs"], ["z.jpg", "a dog"]]}"#,
    )
    .unwrap();
    let out = ovseg(&[
        "index",
        s(&meta),
        "--class-labels",
        s(&labels),
        "--sample-list",
        s(&list),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 pairs without a class label"), "{stdout}");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.index.json")).unwrap())
            .unwrap();
    assert_eq!(index["samples"][0]["entities"], serde_json::json!(["dog"]));
    assert_eq!(
        index["samples"][2]["entities"],
        serde_json::json!(["cat", "sofa"]),
        "e.jpg has no class label: its caption's entities stay"
    );
    assert_eq!(index["by_entity"]["dog"], serde_json::json!([0, 1]));
    assert_eq!(
        index["released"]["partners"]["dog"],
        serde_json::json!(["b.jpg", "z.jpg"])
    );
    // One without the other is a usage error (clap's, with the usage line).
    let out = ovseg(&["index", s(&meta), "--class-labels", s(&labels)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--sample-list"),
        "{stderr}"
    );
    std::fs::write(&labels, r#"{"a.jpg": "100"}"#).unwrap();
    let e = fails(&[
        "index",
        s(&meta),
        "--class-labels",
        s(&labels),
        "--sample-list",
        s(&list),
    ]);
    assert!(
        e.contains("class_label.json") && e.contains("\"100\""),
        "{e}"
    );
}

#[test]
fn export_web_writes_a_small_model_and_the_preset_embeddings() {
    use base64::Engine as _;
    let dir = scratch("export-web");
    let model = converted(&dir, &[]);
    let out = dir.join("web");
    let stdout = ok(&[
        "export-web",
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--labels",
        "cat, sky, grass",
    ]);
    assert!(stdout.contains("classes.json"), "{stdout}");
    for f in ["image.ovsegpack", "text.ovsegpack", "classes.json"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    // The tokenizer travels in the text pack (a BERT model's: the built-in one, not repeated).
    assert!(!out.join("tokenizer.json").exists());
    let size = |f: &str| std::fs::metadata(out.join(f)).unwrap().len();
    let full = std::fs::metadata(&model).unwrap().len();
    let small = size("image.ovsegpack") + size("text.ovsegpack");
    assert!(small * 2 < full, "export {small} B vs convert {full} B");

    let classes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("classes.json")).unwrap()).unwrap();
    assert_eq!(classes["template"], "simple");
    assert_eq!(classes["output_dim"], 32);
    let mut voc = Vec::new();
    for (name, n) in [
        ("voc", 20),
        ("context", 59),
        ("coco_object", 80),
        ("ade20k", 150),
    ] {
        let d = &classes["datasets"][name];
        assert_eq!(d["labels"].as_array().unwrap().len(), n, "{name}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["embeddings"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes.len(), n * 32 * 4, "{name}");
        if name == "voc" {
            voc = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
        }
    }
    // The presets are embedded by the int8 model the page holds: each VOC class embedding
    // points where the reference's (f32) does.
    let reference = Fixture::open(tiny_dir().join("outputs.safetensors"));
    let expected_voc = reference.f32s("class_embedding");
    for (got, want) in voc.chunks(32).zip(expected_voc.chunks(32)) {
        let cos: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(
            cos > 0.99,
            "int8 VOC class embedding at cosine {cos} from the reference"
        );
    }
    // With f32 storage the VOC preset is the reference's own class classifier.
    let out32 = dir.join("web32");
    ok(&[
        "export-web",
        "--model",
        s(&model),
        "--out",
        s(&out32),
        "--precision",
        "f32",
    ]);
    let classes32: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out32.join("classes.json")).unwrap()).unwrap();
    let voc32: Vec<f32> = base64::engine::general_purpose::STANDARD
        .decode(classes32["datasets"]["voc"]["embeddings"].as_str().unwrap())
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_close("class_embedding", &voc32, &expected_voc, 1e-4, 1e-4);

    // The page's starting words (www/index.html) are precomputed, so its first segmentation
    // never needs the text pack.
    let html = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/index.html"),
    )
    .unwrap();
    let start = html
        .find("id=\"labels\"")
        .expect("labels box in index.html");
    let text = &html[start..];
    let words = &text[text.find('>').unwrap() + 1..text.find("</textarea>").unwrap()];
    let words: Vec<&str> = words.split(',').map(str::trim).collect();
    assert_eq!(
        classes["datasets"]["page"]["labels"],
        serde_json::json!(words)
    );
    let extra = &classes["datasets"]["labels1"];
    assert_eq!(extra["labels"], serde_json::json!(["cat", "sky", "grass"]));
    assert_eq!(extra["with_background"], true);

    // The int8 export segments the reference picture (accuracy measured against seg_pred_slide);
    // natively the image pack is read with the text pack beside it.
    let mask = dir.join("m.png");
    ok(&[
        "segment",
        "--model",
        s(&out.join("image.ovsegpack")),
        "--image",
        s(&tiny_dir().join("seg_image.png")),
        "--labels",
        VOC,
        "--out-mask",
        s(&mask),
    ]);
    let (labels, _, _) = read_mask(&mask);
    let expected: Vec<u32> = reference
        .f32s("seg_pred_slide")
        .iter()
        .map(|&v| v as u32)
        .collect();
    let agree = labels.iter().zip(&expected).filter(|(a, b)| a == b).count();
    println!(
        "int8 export: {agree} of {} pixels as the f32 reference",
        expected.len()
    );
    assert!(
        agree * 100 >= expected.len() * 99,
        "int8 export keeps {agree} of {}",
        expected.len()
    );

    std::fs::remove_file(out.join("text.ovsegpack")).unwrap();
    let e = fails(&[
        "segment",
        "--model",
        s(&out.join("image.ovsegpack")),
        "--image",
        s(&tiny_dir().join("seg_image.png")),
        "--labels",
        VOC,
    ]);
    assert!(
        e.contains("text.ovsegpack") && e.contains("not beside it"),
        "{e}"
    );
}

#[test]
fn segment_prints_a_share_link_holding_the_label_map() {
    let dir = scratch("share");
    let model = converted(&dir, &[]);
    let mask = dir.join("m.png");
    let stdout = ok(&[
        "segment",
        "--model",
        s(&model),
        "--image",
        s(&tiny_dir().join("seg_image.png")),
        "--labels",
        VOC,
        "--out-mask",
        s(&mask),
        "--share-url",
        "https://example.org/ovseg/",
        "--share-model-url",
        "https://example.org/ovseg/demo/model.ovseg",
    ]);
    let link = stdout
        .lines()
        .find(|l| l.starts_with("https://example.org/ovseg/#ovseg1."))
        .unwrap_or_else(|| panic!("no link in {stdout}"));
    let shared = ovseg_model::share::ShareLink::from_link(link).unwrap();
    let (labels, w, h) = read_mask(&mask);
    assert_eq!((shared.width, shared.height), (w as usize, h as usize));
    assert!(shared
        .mask
        .iter()
        .zip(&labels)
        .all(|(&a, &b)| a as u32 == b));
    assert_eq!(shared.labels.len(), 20);
    assert!(shared.background && shared.bg_thresh == 0.95);
    assert_eq!(shared.model, "https://example.org/ovseg/demo/model.ovseg");
    match &shared.picture {
        ovseg_model::share::LinkPicture::Jpeg(j) => {
            let small = image::load_from_memory(j).unwrap();
            assert_eq!((small.width(), small.height()), (256, 171));
        }
        other => panic!("expected an embedded JPEG, got {other:?}"),
    }
    println!(
        "share link for 672x448 with 20 labels and an embedded JPEG: {} characters",
        link.len()
    );
    let e = fails(&[
        "segment",
        "--model",
        s(&model),
        "--image",
        s(&tiny_dir().join("seg_image.png")),
        "--labels",
        VOC,
        "--out-mask",
        s(&mask),
        "--share-url",
        "https://example.org/",
        "--share-image-url",
        "javascript:alert(1)",
    ]);
    assert!(e.contains("scheme"), "{e}");
}

/// The second released model's kind (ViT-S + RoBERTa, `reference-roberta`): `convert
/// --tokenizer` stores the byte-level BPE tokenizer in the model file, and `segment` with that
/// file alone gives the reference's label map. A model and a tokenizer or configuration of the
/// other kind are refused.
#[test]
fn roberta_model_converts_with_its_tokenizer_and_segments() {
    let dir = scratch("roberta");
    let roberta = fixtures_dir().join("reference-roberta");
    let (checkpoint, config) = (roberta.join("checkpoint.pth"), roberta.join("model.json"));
    let tokenizer = roberta.join("tokenizer.json");
    let bert_tokenizer = fixtures_dir().join("minilm/tokenizer.json");
    let model = dir.join("roberta.ovseg");
    let convert = |config: &Path, extra: &[&str]| {
        let mut args = vec![
            "convert",
            "--checkpoint",
            s(&checkpoint),
            "--config",
            s(config),
            "--out",
            s(&model),
        ];
        args.extend(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<String>>()
    };
    let run_fails = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let e = run_fails(convert(&config, &[]));
    assert!(e.contains("pad") && e.contains("--tokenizer"), "{e}");
    let e = run_fails(convert(&config, &["--tokenizer", s(&bert_tokenizer)]));
    assert!(e.contains("pads with [PAD] (id 0)"), "{e}");
    // BERT's configuration on RoBERTa weights (and the reverse): named tensors do not fit.
    let e = run_fails(convert(&tiny_dir().join("model.json"), &[]));
    assert!(e.contains("shape mismatch"), "{e}");
    let e = fails(&[
        "convert",
        "--checkpoint",
        s(&tiny_dir().join("checkpoint.pth")),
        "--config",
        s(&config),
        "--tokenizer",
        s(&tokenizer),
        "--out",
        s(&dir.join("x.ovseg")),
    ]);
    assert!(e.contains("shape mismatch"), "{e}");
    // A preset name is a configuration too: the released ViT-S + RoBERTa-base shape is not the
    // fixture's.
    let preset = run_fails(convert(
        Path::new("vits-roberta"),
        &["--tokenizer", s(&tokenizer)],
    ));
    assert!(
        preset.contains("shape mismatch")
            && preset.contains("checkpoint [96, 3, 16, 16], model [384, 3, 16, 16]"),
        "{preset}"
    );
    assert!(!model.exists(), "nothing written by a refused conversion");

    let args = convert(&config, &["--tokenizer", s(&tokenizer)]);
    let stdout = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stdout.contains("wrote"), "{stdout}");
    let mask = dir.join("mask.png");
    ok(&[
        "segment",
        "--model",
        s(&model),
        "--image",
        s(&roberta.join("seg_image.png")),
        "--labels",
        VOC,
        "--out-mask",
        s(&mask),
    ]);
    let (labels, w, h) = read_mask(&mask);
    assert_eq!((w, h), (672, 448));
    let expected: Vec<u32> = Fixture::open(roberta.join("outputs.safetensors"))
        .f32s("seg_pred_slide")
        .iter()
        .map(|&v| v as u32)
        .collect();
    let differing = labels.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert!(
        differing * 2000 <= expected.len(),
        "{differing} pixels differ from seg_pred_slide"
    );
    // The stored tokenizer cannot be swapped for BERT's.
    let e = fails(&[
        "segment",
        "--model",
        s(&model),
        "--tokenizer",
        s(&bert_tokenizer),
        "--image",
        s(&roberta.join("seg_image.png")),
        "--labels",
        "cat",
    ]);
    assert!(e.contains("minilm/tokenizer.json"), "{e}");
}
