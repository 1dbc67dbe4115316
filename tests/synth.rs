//! `ovseg synth` as a user runs it: a small world on disk whose pictures decode, whose captions
//! name exactly the kinds of objects the ground truth shows, laid out so that `ovseg eval`
//! reads its evaluation split like PASCAL VOC; the same seed gives the same bytes and a
//! complete world is reused.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use ovseg_model::data::entities::EntityVocab;

const SIZE: u32 = 96;

fn synth(out: &Path, seed: &str, train: &str, val: &str) -> String {
    ok(&[
        "synth",
        "--out",
        s(out),
        "--train",
        train,
        "--val",
        val,
        "--size",
        &SIZE.to_string(),
        "--seed",
        seed,
        "--examples",
        "2",
    ])
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(String::from)
        .collect()
}

fn assert_jpeg(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..2],
        &[0xff, 0xd8],
        "{} is not a JPEG",
        path.display()
    );
    let picture = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!((picture.width(), picture.height()), (SIZE, SIZE));
}

/// The label values of a palette PNG, checked to be an 8-bit indexed picture of SIZE².
fn label_values(path: &Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        info.color_type,
        png::ColorType::Indexed,
        "{}",
        path.display()
    );
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    assert_eq!((info.width, info.height), (SIZE, SIZE));
    buf.truncate((SIZE * SIZE) as usize);
    buf
}

fn entities(vocab: &EntityVocab, caption: &str) -> BTreeSet<String> {
    vocab.extract(caption).classes.into_iter().collect()
}

fn meta(path: &Path) -> Vec<(String, String)> {
    lines(path)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("meta line is JSON");
            (
                v["filename"].as_str().expect("filename").to_string(),
                v["caption"].as_str().expect("caption").to_string(),
            )
        })
        .collect()
}

#[test]
fn world_pictures_captions_and_ground_truth_agree() {
    let dir = scratch("synth-world");
    let out = dir.join("world");
    let said = synth(&out, "11", "40", "16");
    assert!(
        said.contains("wrote 40 train pairs and 16 val pictures"),
        "{said}"
    );
    let vocab = EntityVocab::default();

    let val = out.join("val");
    let classes = lines(&val.join("classes.txt"));
    let caption_classes = lines(&val.join("classes-caption.txt"));
    assert_eq!(classes.len(), 11);
    assert_eq!(caption_classes.len(), 11);
    assert_eq!(
        (classes[0].as_str(), caption_classes[0].as_str()),
        ("background", "background")
    );
    // Caption classes are entity classes; several evaluation names are words outside the
    // caption vocabulary.
    for name in &caption_classes[1..] {
        assert_eq!(vocab.class_of(name), Some(name.as_str()), "{name}");
    }
    let unseen: Vec<&String> = classes[1..]
        .iter()
        .filter(|c| vocab.class_of(c).is_none())
        .collect();
    assert!(unseen.len() >= 4, "too few unseen synonyms: {unseen:?}");

    let train = meta(&out.join("train/meta.jsonl"));
    assert_eq!(train.len(), 40);
    let mut seen = BTreeSet::new();
    for (filename, caption) in &train {
        assert_jpeg(&out.join("train").join(filename));
        let found = entities(&vocab, caption);
        assert!(!found.is_empty(), "caption without an entity: {caption}");
        for e in &found {
            assert!(
                caption_classes.contains(e),
                "{e} is not a synth class: {caption}"
            );
        }
        seen.extend(found);
    }
    assert!(seen.len() >= 8, "40 captions show only {seen:?}");
    for (_, caption) in &train {
        for name in &unseen {
            assert!(
                !caption.to_lowercase().contains(name.as_str()),
                "evaluation synonym {name} in a caption: {caption}"
            );
        }
    }

    let ids = lines(&val.join("ImageSets/Segmentation/val.txt"));
    assert_eq!(ids.len(), 16);
    let val_meta = meta(&val.join("meta.jsonl"));
    assert_eq!(val_meta.len(), 16);
    for (id, (filename, caption)) in ids.iter().zip(&val_meta) {
        assert_eq!(filename, &format!("JPEGImages/{id}.jpg"));
        assert_jpeg(&val.join(filename));
        let labels = label_values(&val.join(format!("SegmentationClass/{id}.png")));
        let present: BTreeSet<String> = labels
            .iter()
            .map(|&v| {
                assert!((v as usize) < classes.len(), "{id}: label value {v}");
                v
            })
            .filter(|&v| v != 0)
            .map(|v| caption_classes[v as usize].clone())
            .collect();
        // Every kind drawn has visible pixels and the caption names exactly those kinds.
        assert_eq!(entities(&vocab, caption), present, "{id}: {caption}");
        assert!(labels.contains(&0), "{id} has no background");
    }

    let examples: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("examples/examples.json")).unwrap())
            .unwrap();
    assert_eq!(examples.as_array().unwrap().len(), 2);
    assert_jpeg(
        &out.join("examples")
            .join(examples[0]["file"].as_str().unwrap()),
    );
    assert!(out.join("README.txt").is_file());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("synth.json")).unwrap()).unwrap();
    assert_eq!(manifest["params"]["train"], 40);
}

fn files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_seed_same_bytes_and_a_complete_world_is_reused() {
    let dir = scratch("synth-determinism");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    synth(&a, "3", "12", "6");
    synth(&b, "3", "12", "6");
    let listed = files(&a);
    assert_eq!(listed, files(&b));
    assert!(listed.len() > 12 + 6 * 2);
    for f in &listed {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{} differs between two runs with one seed",
            f.display()
        );
    }
    synth(&c, "4", "12", "6");
    assert_ne!(
        std::fs::read(a.join("train/meta.jsonl")).unwrap(),
        std::fs::read(c.join("train/meta.jsonl")).unwrap()
    );

    let said = synth(&a, "3", "12", "6");
    assert!(said.contains("reusing"), "{said}");
    // Other parameters, or an interrupted run (no manifest), make the world again; a smaller
    // world leaves no pictures of the bigger one behind.
    let said = synth(&a, "3", "8", "6");
    assert!(said.contains("wrote 8 train pairs"), "{said}");
    assert!(!a.join("train/images/train_000011.jpg").exists());
    std::fs::remove_file(a.join("synth.json")).unwrap();
    let said = synth(&a, "3", "8", "6");
    assert!(said.contains("wrote"), "{said}");
}

#[test]
fn eval_reads_the_split_like_a_benchmark() {
    let dir = scratch("synth-eval");
    let out = dir.join("world");
    synth(&out, "5", "0", "4");
    let model = convert_fixture(env!("CARGO_BIN_EXE_ovseg"), &dir, &[]);
    let val = out.join("val");
    for list in ["classes.txt", "classes-caption.txt"] {
        let scores = dir.join(format!("{list}.json"));
        let said = ok(&[
            "eval",
            "--model",
            s(&model),
            "--dataset",
            "voc",
            "--root",
            s(&val),
            "--classes",
            s(&val.join(list)),
            "--out",
            s(&scores),
        ]);
        assert!(said.contains("mIoU") || said.contains("miou"), "{said}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&scores).unwrap()).unwrap();
        let miou = report["miou"].as_f64().expect("miou");
        assert!((0.0..=100.0).contains(&miou), "{report}");
        let per_class = report["per_class"].as_object().expect("per_class");
        for name in lines(&val.join(list)) {
            assert!(
                per_class.contains_key(&name),
                "{name} missing from {report}"
            );
        }
    }
}

#[test]
fn bad_parameters_end_with_a_one_line_error() {
    let dir = scratch("synth-errors");
    for args in [
        vec!["--size", "8"],
        vec!["--train", "0", "--val", "0"],
        vec!["--val", "2", "--examples", "3"],
        vec!["--quality", "0"],
    ] {
        let mut full = vec!["synth", "--out", s(&dir)];
        full.extend(args.iter().copied());
        let out = ovseg(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{full:?} should fail");
        assert!(
            stderr.starts_with("error: ") && stderr.contains("--"),
            "{full:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// A small world (64 px, 2 held-out pictures, seed 5) with one style option set; returns its
/// folder and the arguments that made it.
fn styled_world(name: &str, train: &str, option: &str, value: &str) -> (PathBuf, Vec<String>) {
    let out = scratch(name);
    let args: Vec<String> = [
        "synth",
        "--out",
        s(&out),
        "--train",
        train,
        "--val",
        "2",
        "--size",
        "64",
        "--seed",
        "5",
        option,
        value,
    ]
    .map(String::from)
    .into();
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (out, args)
}

/// `--detail` says colours and places less often; the pictures and ground truth stay the same.
#[test]
fn detail_changes_how_much_captions_say_and_not_the_pictures() {
    let colours = [
        "red", "blue", "green", "yellow", "purple", "pink", "white", "black", "brown", "grey",
    ];
    let (full, _) = styled_world("synth-detail-1", "60", "--detail", "1");
    let (plain, _) = styled_world("synth-detail-02", "60", "--detail", "0.2");
    let with_colour = |out: &Path| {
        meta(&out.join("train/meta.jsonl"))
            .iter()
            .filter(|(_, caption)| {
                caption
                    .split(|c: char| !c.is_alphabetic())
                    .any(|w| colours.contains(&w.to_lowercase().as_str()))
            })
            .count()
    };
    let (a, b) = (with_colour(&full), with_colour(&plain));
    assert!(
        b * 2 < a,
        "captions with a colour word: {a} at detail 1, {b} at 0.2"
    );
    for (x, y) in meta(&full.join("train/meta.jsonl"))
        .iter()
        .zip(meta(&plain.join("train/meta.jsonl")))
    {
        let bytes = |out: &Path, f: &str| std::fs::read(out.join("train").join(f)).unwrap();
        assert_eq!(bytes(&full, &x.0), bytes(&plain, &y.0), "{}", x.0);
    }
    let label =
        |out: &Path| std::fs::read(out.join("val/SegmentationClass/val_000000.png")).unwrap();
    assert_eq!(label(&full), label(&plain));
    let bad = ovseg(&["synth", "--out", s(&plain), "--detail", "1.5"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--detail 1.5"));
    std::fs::remove_dir_all(&full).ok();
    std::fs::remove_dir_all(&plain).ok();
}

/// `--typical-colours` changes the pictures (objects wear their kinds' colours) and is part of
/// what makes a world the same world.
#[test]
fn typical_colours_are_part_of_the_world() {
    let (uniform, _) = styled_world("synth-typical-0", "20", "--typical-colours", "0");
    let (usual, args) = styled_world("synth-typical-1", "20", "--typical-colours", "1");
    let picture = |out: &Path| std::fs::read(out.join("train/images/train_000000.jpg")).unwrap();
    assert_ne!(picture(&uniform), picture(&usual));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(usual.join("synth.json")).unwrap()).unwrap();
    assert_eq!(manifest["params"]["typical_colours"], 1.0);
    let readme = std::fs::read_to_string(usual.join("README.txt")).unwrap();
    assert!(readme.contains("typically red or white"), "{readme}");
    // The same parameters again: reused, not rewritten.
    let again = ovseg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&again.stdout).contains("reusing"));
    let bad = ovseg(&["synth", "--out", s(&usual), "--typical-colours", "1.5"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--typical-colours 1.5"));
    std::fs::remove_dir_all(&uniform).ok();
    std::fs::remove_dir_all(&usual).ok();
}
