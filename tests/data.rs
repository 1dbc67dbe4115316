//! The training data loader on real files: JPEGs and a meta-file with the faults of real data
//! (a corrupt picture, a line that is not JSON, an empty caption, a caption without an entity),
//! and a webdataset tar shard. Every picture is one flat colour (with a small dark corner), so a
//! stage-2 crop of it still tells which file it came from.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{scratch, tar_member};
use image::{Rgb, RgbImage};
use ovseg_model::data::entities::EntityVocab;
use ovseg_model::segmentation::TemplateSet;
use ovseg_trainer::data::augment::{MEAN, STD};
use ovseg_trainer::data::{Batch, DataConfig, DataPosition, Loader, Share, Source, Stage};

const SIZE: usize = 32;

/// The captions of the usable pairs; the last one's picture is corrupt.
const CAPTIONS: [&str; 12] = [
    "a dog on the grass",
    "a black dog next to a car",
    "a red car in the street",
    "a cat sleeping on a sofa",
    "two cats and a dog",
    "a man riding a bicycle",
    "a woman with an umbrella",
    "a bus near a car",
    "a horse in a field",
    "a cup of coffee on a table",
    "a table with a laptop",
    "a bird on a broken picture",
];
const CORRUPT: usize = 11;

fn colour(i: usize) -> [u8; 3] {
    [
        (20 * i + 15) as u8,
        (240 - 18 * i) as u8,
        ((i * 67) % 200 + 30) as u8,
    ]
}

fn picture(i: usize, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        if x < w / 5 && y < h / 5 {
            Rgb([0, 0, 0])
        } else {
            Rgb(colour(i))
        }
    })
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    bytes
}

/// Meta-file lines: line 4 is not JSON, then an empty caption and one without an entity.
fn write_meta(dir: &Path) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut lines = Vec::new();
    for (i, caption) in CAPTIONS.iter().enumerate() {
        let name = format!("img{i}.jpg");
        let bytes = if i == CORRUPT {
            b"this is not a picture".to_vec()
        } else {
            jpeg(&picture(i, 60 + 7 * i as u32, 45 + 3 * i as u32))
        };
        std::fs::write(images.join(&name), bytes).unwrap();
        lines.push(serde_json::json!({"filename": name, "caption": caption}).to_string());
        if i == 2 {
            lines.push("{\"filename\": \"x.jpg\", \"caption\": ".to_string()); // line 4
        }
    }
    lines.push(r#"{"filename": "img0.jpg", "caption": "   "}"#.to_string());
    lines.push(r#"{"filename": "img1.jpg", "caption": "a sunset over the sea"}"#.to_string());
    let meta = dir.join("meta.jsonl");
    std::fs::write(&meta, lines.join("\n") + "\n").unwrap();
    (meta, images)
}

fn config(stage: Stage, batch_size: usize) -> DataConfig {
    DataConfig {
        image_size: SIZE,
        workers: 2,
        prefetch: 2,
        shuffle_buffer: 4,
        ..DataConfig::new(stage, batch_size, 42)
    }
}

fn meta_loader(dir: &Path, stage: Stage, batch_size: usize) -> Loader {
    let (meta, images) = (dir.join("meta.jsonl"), dir.join("images"));
    Loader::new(
        Source::meta(&meta, &images).unwrap(),
        config(stage, batch_size),
    )
    .unwrap()
}

fn collect(loader: &Loader, epoch: usize, start: usize) -> Vec<Batch> {
    loader
        .epoch(epoch, start)
        .collect::<anyhow::Result<Vec<_>>>()
        .unwrap()
}

fn assert_same(a: &[Batch], b: &[Batch]) {
    assert_eq!(a.len(), b.len(), "batch counts differ");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.captions, y.captions);
        assert_eq!(x.questions, y.questions);
        assert_eq!(x.answers, y.answers);
        assert_eq!(x.partner_texts, y.partner_texts);
        assert_eq!(x.position, y.position);
        // Bit-identical pictures.
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(bits(&x.images) == bits(&y.images), "images differ");
        assert_eq!(
            x.partner_images.as_deref().map(bits),
            y.partner_images.as_deref().map(bits)
        );
    }
}

fn classes(caption: &str) -> Vec<String> {
    EntityVocab::default().extract(caption).classes
}

/// Which test picture a stage-2 crop shows: the flat colour most of its pixels have.
fn which_picture(pixels: &[f32]) -> usize {
    let plane = SIZE * SIZE;
    let mut rgb = [0.0f32; 3];
    for c in 0..3 {
        let mut values: Vec<f32> = pixels[c * plane..(c + 1) * plane]
            .iter()
            .map(|v| v * STD[c] + MEAN[c])
            .collect();
        values.sort_by(f32::total_cmp);
        rgb[c] = values[plane / 2];
    }
    let distance = |i: usize| {
        let want = colour(i);
        (0..3).map(|c| (rgb[c] - want[c] as f32).abs()).sum::<f32>()
    };
    let best = (0..CAPTIONS.len())
        .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
        .unwrap();
    assert!(
        distance(best) < 15.0,
        "median colour {rgb:?} is no test picture"
    );
    best
}

fn caption_index(caption: &str) -> usize {
    CAPTIONS.iter().position(|c| *c == caption).unwrap()
}

#[test]
fn meta_batches_have_the_shapes_and_texts() {
    let dir = scratch("data-meta-shapes");
    write_meta(&dir);
    let loader = meta_loader(&dir, Stage::One, 4);
    assert_eq!(loader.batches_per_epoch(), Some(3));
    let batches = collect(&loader, 0, 0);
    assert_eq!(batches.len(), 3);
    let templates = TemplateSet::Full.templates();
    assert_eq!(templates.len(), 80);
    let mut seen = BTreeSet::new();
    for (b, batch) in batches.iter().enumerate() {
        assert_eq!(batch.size, 4);
        assert_eq!(batch.image_size, SIZE);
        assert_eq!(batch.images.len(), 4 * 3 * SIZE * SIZE);
        assert!(batch.images.iter().all(|v| v.is_finite()));
        assert_eq!(
            batch.position,
            DataPosition {
                epoch: 0,
                batch: b + 1
            }
        );
        assert!(batch.partner_images.is_none() && batch.partner_texts.is_none());
        for i in 0..4 {
            let caption = &batch.captions[i];
            assert_ne!(
                caption, CAPTIONS[CORRUPT],
                "the corrupt picture is never served"
            );
            seen.insert(caption.clone());
            assert!(
                batch.questions[i].contains("[MASK]"),
                "{}",
                batch.questions[i]
            );
            assert!(
                !batch.questions[i].contains("dog"),
                "{}",
                batch.questions[i]
            );
            let entities = classes(caption).join(" and ");
            let answer = &batch.answers[i];
            assert!(answer.ends_with(&entities), "{answer} for {caption}");
            let prefix = &answer[..answer.len() - entities.len()];
            assert!(
                templates
                    .iter()
                    .any(|t| t.split("{}").next() == Some(prefix)),
                "'{prefix}' is no template prefix"
            );
        }
    }
    // All 11 readable pairs appear; the corrupt one's slot went to another pair.
    assert_eq!(seen.len(), 11, "{seen:?}");
    // Texts follow the sample: question for "a black dog next to a car".
    let all: Vec<(String, String)> = batches
        .iter()
        .flat_map(|b| b.captions.iter().cloned().zip(b.questions.iter().cloned()))
        .collect();
    let q = &all.iter().find(|(c, _)| c == CAPTIONS[1]).unwrap().1;
    assert_eq!(q, "a black [MASK] next to a [MASK]");
}

#[test]
fn meta_batches_are_deterministic_and_resume_exactly() {
    let dir = scratch("data-meta-determinism");
    write_meta(&dir);
    let first = meta_loader(&dir, Stage::One, 4);
    let second = meta_loader(&dir, Stage::One, 4);
    let a = collect(&first, 1, 0);
    assert_same(&a, &collect(&second, 1, 0));
    // Resuming at batch 1 gives batches 1.. of the uninterrupted epoch, bit for bit.
    assert_same(&a[1..], &collect(&second, 1, 1));
    assert_same(&a[2..], &collect(&first, 1, 2));
    assert!(collect(&first, 1, 3).is_empty());
    // Another epoch is another order; another seed other pictures.
    let other = collect(&first, 2, 0);
    let order = |bs: &[Batch]| {
        bs.iter()
            .flat_map(|b| b.captions.clone())
            .collect::<Vec<_>>()
    };
    assert_ne!(order(&a), order(&other));
    let reseeded = Loader::new(
        Source::meta(&dir.join("meta.jsonl"), &dir.join("images")).unwrap(),
        DataConfig {
            seed: 7,
            ..config(Stage::One, 4)
        },
    )
    .unwrap();
    assert_ne!(collect(&reseeded, 1, 0)[0].images, a[0].images);
    // Different worker counts give the same batches.
    let single = Loader::new(
        Source::meta(&dir.join("meta.jsonl"), &dir.join("images")).unwrap(),
        DataConfig {
            workers: 1,
            prefetch: 1,
            ..config(Stage::One, 4)
        },
    )
    .unwrap();
    assert_same(&a, &collect(&single, 1, 0));
}

#[test]
fn faults_are_skipped_counted_and_reported() {
    let dir = scratch("data-meta-faults");
    write_meta(&dir);
    let loader = meta_loader(&dir, Stage::One, 4);
    let skipped = loader.skipped();
    assert_eq!(skipped.invalid_lines, 1);
    assert_eq!(skipped.invalid_line_numbers, vec![4]);
    assert_eq!(skipped.empty_captions, 1);
    assert_eq!(skipped.no_entity, 1);
    assert_eq!(skipped.unreadable_images, 0, "nothing decoded yet");
    for epoch in 0..2 {
        assert_eq!(collect(&loader, epoch, 0).len(), 3);
    }
    let skipped = loader.skipped();
    assert_eq!(skipped.unreadable_images, 1, "counted once over two epochs");
    assert!(
        skipped.unreadable_examples[0].contains("img11.jpg"),
        "{skipped:?}"
    );
    let report = skipped.to_string();
    assert!(report.contains("1 invalid JSON line (line 4)"), "{report}");
    assert!(report.contains("1 empty caption"), "{report}");
    assert!(report.contains("1 unreadable image"), "{report}");
}

#[test]
fn stage_two_partners_share_an_entity() {
    let dir = scratch("data-meta-stage2");
    write_meta(&dir);
    let loader = meta_loader(&dir, Stage::Two, 4);
    let vocab = EntityVocab::default();
    let mut distinct_partners = 0;
    for epoch in 0..2 {
        let batches = collect(&loader, epoch, 0);
        assert_eq!(batches.len(), 3);
        for batch in &batches {
            let partners = batch.partner_images.as_ref().expect("stage 2 partners");
            let texts = batch.partner_texts.as_ref().expect("stage 2 partner texts");
            assert_eq!(partners.len(), batch.images.len());
            assert_eq!(texts.len(), 4);
            let plane = 3 * SIZE * SIZE;
            for i in 0..4 {
                let own = caption_index(&batch.captions[i]);
                // The picture is the caption's own (crop and flip keep the flat colour).
                assert_eq!(
                    which_picture(&batch.images[i * plane..(i + 1) * plane]),
                    own
                );
                let entity = texts[i].strip_prefix("A photo of ").expect(&texts[i]);
                assert!(classes(CAPTIONS[own]).iter().any(|c| c == entity));
                let partner = which_picture(&partners[i * plane..(i + 1) * plane]);
                assert!(
                    vocab
                        .extract(CAPTIONS[partner])
                        .classes
                        .iter()
                        .any(|c| c == entity),
                    "partner '{}' does not show {entity}",
                    CAPTIONS[partner]
                );
                let readable_sharing = (0..CAPTIONS.len())
                    .filter(|&j| j != CORRUPT && classes(CAPTIONS[j]).iter().any(|c| c == entity))
                    .count();
                if readable_sharing >= 2 {
                    assert_ne!(partner, own, "{entity} has other pictures");
                    distinct_partners += 1;
                }
            }
        }
    }
    assert!(distinct_partners > 5, "{distinct_partners}");
}

fn write_shard(path: &Path) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| tar_member(&mut builder, name, bytes);
    for (i, caption) in CAPTIONS.iter().enumerate().take(CORRUPT) {
        let key = format!("{i:06}");
        add(&format!("{key}.jpg"), &jpeg(&picture(i, 50, 40)));
        add(&format!("{key}.txt"), caption.as_bytes());
        add(&format!("{key}.json"), br#"{"status": "success"}"#);
    }
    add("000100.jpg", &jpeg(&picture(0, 20, 20)));
    add("000100.txt", b"");
    add("000101.jpg", &jpeg(&picture(1, 20, 20)));
    add("000101.txt", b"a sunset over the sea");
    add("000102.txt", b"a dog without its picture");
    add("000103.json", br#"{"status": "failed_to_download"}"#);
    builder.into_inner().unwrap();
}

#[test]
fn shards_stream_deterministically_with_partners() {
    let dir = scratch("data-shards");
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    write_shard(&shards.join("00000.tar"));
    let make = || {
        Loader::new(
            Source::shards(std::slice::from_ref(&shards)).unwrap(),
            config(Stage::Two, 3),
        )
        .unwrap()
    };
    let loader = make();
    assert_eq!(loader.batches_per_epoch(), None);
    let a = collect(&loader, 0, 0);
    // 11 usable pairs: 3 full batches, the last 2 pairs dropped.
    assert_eq!(a.len(), 3);
    let plane = 3 * SIZE * SIZE;
    let mut seen = BTreeSet::new();
    for batch in &a {
        assert_eq!(batch.images.len(), 3 * plane);
        let texts = batch.partner_texts.as_ref().unwrap();
        let partners = batch.partner_images.as_ref().unwrap();
        for i in 0..3 {
            let own = caption_index(&batch.captions[i]);
            seen.insert(own);
            assert_eq!(
                which_picture(&batch.images[i * plane..(i + 1) * plane]),
                own
            );
            assert!(batch.questions[i].contains("[MASK]"));
            assert!(batch.answers[i].ends_with(&classes(CAPTIONS[own]).join(" and ")));
            let entity = texts[i].strip_prefix("A photo of ").unwrap();
            let partner = which_picture(&partners[i * plane..(i + 1) * plane]);
            assert!(classes(CAPTIONS[partner]).iter().any(|c| c == entity));
        }
    }
    assert_eq!(seen.len(), 9, "no pair twice in an epoch");
    let skipped = loader.skipped();
    assert_eq!(
        (skipped.empty_captions, skipped.no_entity, skipped.unpaired),
        (1, 1, 1),
        "{skipped}"
    );
    assert_same(&a, &collect(&make(), 0, 0));
    assert_same(&a[1..], &collect(&make(), 0, 1));
    let order = |bs: &[Batch]| {
        bs.iter()
            .flat_map(|b| b.captions.clone())
            .collect::<Vec<_>>()
    };
    assert_ne!(
        order(&a),
        order(&collect(&loader, 1, 0)),
        "the buffer shuffles per epoch"
    );
}

/// Rows `rows` of `batch`, as a batch of their own.
fn rows_of(batch: &Batch, rows: &[usize]) -> Batch {
    let plane = 3 * SIZE * SIZE;
    let pick = |v: &Vec<f32>| {
        rows.iter()
            .flat_map(|&r| v[r * plane..(r + 1) * plane].iter().copied())
            .collect::<Vec<_>>()
    };
    let texts = |v: &Vec<String>| rows.iter().map(|&r| v[r].clone()).collect::<Vec<_>>();
    Batch {
        size: rows.len(),
        image_size: batch.image_size,
        images: pick(&batch.images),
        captions: texts(&batch.captions),
        questions: texts(&batch.questions),
        answers: texts(&batch.answers),
        entities: rows.iter().map(|&r| batch.entities[r].clone()).collect(),
        partner_images: batch.partner_images.as_ref().map(pick),
        partner_texts: batch.partner_texts.as_ref().map(texts),
        position: batch.position,
    }
}

fn shared(dir: &Path, stage: Stage, share: Share) -> Loader {
    Loader::new(
        Source::meta(&dir.join("meta.jsonl"), &dir.join("images")).unwrap(),
        DataConfig {
            share,
            ..config(stage, 8)
        },
    )
    .unwrap()
}

#[test]
fn machines_decode_only_their_rows_of_a_meta_file() {
    // Two machines, one device each, two accumulation steps of 2 rows: each makes its rows of
    // every global batch of 8, and they are the rows one machine with two devices makes, bit for
    // bit (partners and the corrupt picture's stand-in, drawn from its micro-batch, included).
    let dir = scratch("data-meta-shared");
    write_meta(&dir);
    let one_machine = Share {
        devices: 2,
        accumulation: 2,
        ..Share::WHOLE
    };
    let machine = |node| Share {
        node,
        nodes: 2,
        devices: 1,
        accumulation: 2,
    };
    let mut met = [0, 0];
    for stage in [Stage::One, Stage::Two] {
        for epoch in 0..4 {
            let whole = collect(&shared(&dir, stage, one_machine), epoch, 0);
            assert_eq!(whole.len(), 1);
            for node in 0..2 {
                let loader = shared(&dir, stage, machine(node));
                assert_eq!(loader.batches_per_epoch(), Some(1));
                let part = collect(&loader, epoch, 0);
                let expected: Vec<Batch> = whole
                    .iter()
                    .map(|b| rows_of(b, &machine(node).rows(8)))
                    .collect();
                assert_same(&part, &expected);
                if stage == Stage::One {
                    met[node] += loader.skipped().unreadable_images;
                }
            }
        }
    }
    // The corrupt picture was in some epoch's batch, and only the machine whose rows held it
    // tried to decode it: the other never read it.
    let in_batch = (0..4)
        .filter(|&epoch| {
            let loader = shared(&dir, Stage::One, one_machine);
            collect(&loader, epoch, 0);
            loader.skipped().unreadable_images == 1
        })
        .count();
    assert!(in_batch > 0);
    assert_eq!(met[0] + met[1], in_batch, "{met:?}");
}

/// Shard `k` of `n` holds the usable pairs `i` with `i % n == k`.
fn write_shards(dir: &Path, n: usize) -> PathBuf {
    let shards = dir.join("dealt");
    std::fs::create_dir_all(&shards).unwrap();
    for k in 0..n {
        let mut builder =
            tar::Builder::new(std::fs::File::create(shards.join(format!("{k:05}.tar"))).unwrap());
        for (i, caption) in CAPTIONS.iter().enumerate().take(CORRUPT) {
            if i % n != k {
                continue;
            }
            for (ext, bytes) in [
                ("jpg", jpeg(&picture(i, 40, 30))),
                ("txt", caption.as_bytes().to_vec()),
            ] {
                tar_member(&mut builder, &format!("{i:06}.{ext}"), &bytes);
            }
        }
        builder.into_inner().unwrap();
    }
    shards
}

#[test]
fn machines_read_their_own_shards_reshuffled_every_epoch() {
    let dir = scratch("data-shards-shared");
    let shards = write_shards(&dir, 4);
    let loader = |node, nodes| {
        let share = Share {
            node,
            nodes,
            devices: 1,
            accumulation: 1,
        };
        Loader::new(
            Source::shards(std::slice::from_ref(&shards)).unwrap(),
            DataConfig {
                share,
                ..config(Stage::One, nodes)
            },
        )
        .unwrap()
    };
    // Which shards (pair index mod 4) each machine read in an epoch, and every pair it read.
    let read = |node, epoch| {
        let batches = collect(&loader(node, 2), epoch, 0);
        assert!(batches.iter().all(|b| b.size == 1));
        let pairs: Vec<usize> = batches
            .iter()
            .map(|b| caption_index(&b.captions[0]))
            .collect();
        let shards: BTreeSet<usize> = pairs.iter().map(|i| i % 4).collect();
        (shards, pairs)
    };
    let mut splits = BTreeSet::new();
    for epoch in 0..6 {
        let (a, pairs_a) = read(0, epoch);
        let (b, pairs_b) = read(1, epoch);
        assert_eq!(
            (a.len(), b.len()),
            (2, 2),
            "two shards each in epoch {epoch}"
        );
        assert!(a.is_disjoint(&b));
        // Every usable pair once in the epoch, by one machine.
        let mut all: Vec<usize> = pairs_a.iter().chain(&pairs_b).copied().collect();
        all.sort();
        assert_eq!(all, (0..CORRUPT).collect::<Vec<_>>());
        splits.insert(a);
    }
    assert!(splits.len() > 1, "the deal changes between epochs");
    // More machines than shards: one would have nothing to read.
    let err = Loader::new(
        Source::shards(std::slice::from_ref(&shards)).unwrap(),
        DataConfig {
            share: Share {
                node: 0,
                nodes: 5,
                devices: 1,
                accumulation: 1,
            },
            ..config(Stage::One, 5)
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("4 shards cannot be shared among 5 machines"),
        "{err}"
    );
}

#[test]
fn bad_sources_are_named() {
    let dir = scratch("data-bad-sources");
    let err = format!(
        "{:#}",
        Source::shards(&[dir.join("nope.tar")]).err().unwrap()
    );
    assert!(err.contains("nope.tar"), "{err}");
    let err = format!(
        "{:#}",
        Source::shards(std::slice::from_ref(&dir)).err().unwrap()
    );
    assert!(err.contains("holds no .tar"), "{err}");
    write_meta(&dir);
    let source = Source::meta(&dir.join("meta.jsonl"), &dir.join("missing")).unwrap();
    let err = format!(
        "{:#}",
        Loader::new(source, config(Stage::One, 4)).err().unwrap()
    );
    assert!(err.contains("missing"), "{err}");
    let source = Source::meta(&dir.join("meta.jsonl"), &dir.join("images")).unwrap();
    let err = format!(
        "{:#}",
        Loader::new(source, config(Stage::One, 64)).err().unwrap()
    );
    assert!(err.contains("fewer than one batch"), "{err}");
}

#[test]
fn shard_index_counts_what_the_entity_filter_keeps() {
    let dir = scratch("data-shard-index");
    let shard = dir.join("00000.tar");
    write_shard(&shard);
    let index = ovseg_trainer::data::index::build_shard_index(
        std::slice::from_ref(&shard),
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    assert_eq!(index.samples.len(), 11);
    assert_eq!(index.samples[1].filename, "00000.tar/000001.jpg");
    assert_eq!(index.samples[1].entities, vec!["dog", "car"]);
    assert_eq!(index.by_entity["dog"], vec![0, 1, 4]);
    assert_eq!(index.by_entity["car"], vec![1, 2, 7]);
    let s = &index.skipped;
    assert_eq!((s.empty_caption, s.no_entity, s.unpaired), (1, 1, 1));
}

/// A truncated shard is skipped and counted (its pairs before the damage kept), the others are
/// indexed; when every shard is damaged, indexing is an error naming one.
#[test]
fn shard_index_skips_and_counts_damaged_shards() {
    let dir = scratch("data-shard-index-damaged");
    let good = dir.join("00000.tar");
    write_shard(&good);
    let bytes = std::fs::read(&good).unwrap();
    // Cut inside the third picture's data: the first two pairs come before the damage.
    let cut = dir.join("00001.tar");
    std::fs::write(&cut, &bytes[..3 * 512 + 2 * 1024 + 1024 + 300]).unwrap();
    let progress = indicatif::ProgressBar::hidden();
    let build = |shards: &[std::path::PathBuf]| {
        ovseg_trainer::data::index::build_shard_index(shards, &progress)
    };
    let whole = build(std::slice::from_ref(&good)).unwrap();
    let index = build(&[good.clone(), cut.clone()]).unwrap();
    assert_eq!(index.skipped.damaged_shards, 1);
    let from_cut = index.samples.len() - whole.samples.len();
    assert!(
        from_cut < whole.samples.len(),
        "{from_cut} pairs from the cut shard"
    );
    assert!(index.samples[whole.samples.len()..]
        .iter()
        .all(|s| s.filename.starts_with("00001.tar/")));
    let e = format!("{:#}", build(std::slice::from_ref(&cut)).unwrap_err());
    assert!(
        e.starts_with("all 1 shards are damaged: shard ") && e.contains("00001.tar is damaged"),
        "{e}"
    );
}

#[test]
fn meta_source_reads_a_current_index_and_rebuilds_a_stale_one() {
    let dir = scratch("data-meta-index");
    let (meta, images) = write_meta(&dir);
    let mut index =
        ovseg_trainer::data::index::build_index(&meta, &indicatif::ProgressBar::hidden()).unwrap();
    assert_eq!(index.samples.len(), 12);
    // An index keeping only the first 8 pairs, written after the meta-file, is used as it is.
    index.samples.truncate(8);
    index
        .by_entity
        .values_mut()
        .for_each(|ids| ids.retain(|&i| i < 8));
    let index_path = dir.join("meta.index.json");
    std::fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
    let loader = Loader::new(Source::meta(&meta, &images).unwrap(), config(Stage::One, 4)).unwrap();
    assert_eq!(loader.batches_per_epoch(), Some(2));
    // Once the meta-file is newer, the index is rebuilt from it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text).unwrap();
    let loader = Loader::new(Source::meta(&meta, &images).unwrap(), config(Stage::One, 4)).unwrap();
    assert_eq!(loader.batches_per_epoch(), Some(3));
}

/// The original project's released sampling files (`class_label.json`, `sample_list.json`), in
/// their shape: every labelled picture asks for its class and takes its partner from the class's
/// list; the unlabelled one keeps its caption's entities and the computed partners.
#[test]
fn released_sampling_files_choose_the_partners() {
    let dir = scratch("data-released");
    let (meta, images) = write_meta(&dir);
    // "cat" is class 48 and "car" class 1 in the reference's list; img0 is left unlabelled.
    let labels: serde_json::Map<String, serde_json::Value> = (1..CAPTIONS.len())
        .map(|i| {
            let class = if i % 2 == 0 { "48" } else { "1" };
            (format!("img{i}.jpg"), serde_json::json!(class))
        })
        .collect();
    std::fs::write(
        dir.join("class_label.json"),
        serde_json::Value::Object(labels).to_string(),
    )
    .unwrap();
    // Partners: cats are drawn from img3 and img4 only, cars from img2 and the picture of a horse.
    std::fs::write(
        dir.join("sample_list.json"),
        r#"{"48": [["img3.jpg", "a cat sleeping on a sofa"], ["img4.jpg", "two cats and a dog"]],
            "1": [["img2.jpg", "a red car in the street"], ["img8.jpg", "a horse in a field"]]}"#,
    )
    .unwrap();
    let mut index =
        ovseg_trainer::data::index::build_index(&meta, &indicatif::ProgressBar::hidden()).unwrap();
    index
        .use_released(&dir.join("class_label.json"), &dir.join("sample_list.json"))
        .unwrap();
    assert_eq!(index.released.as_ref().unwrap().unlabelled, 1);
    let source = Source::Meta {
        meta,
        images,
        index,
    };
    let loader = Loader::new(source, config(Stage::Two, 4)).unwrap();
    let plane = 3 * SIZE * SIZE;
    let mut seen = BTreeSet::new();
    for epoch in 0..3 {
        for batch in collect(&loader, epoch, 0) {
            let texts = batch.partner_texts.as_ref().unwrap();
            let partners = batch.partner_images.as_ref().unwrap();
            for i in 0..4 {
                let own = caption_index(&batch.captions[i]);
                let partner = which_picture(&partners[i * plane..(i + 1) * plane]);
                let entity = texts[i].strip_prefix("A photo of ").unwrap();
                if own == 0 {
                    assert_eq!(entity, "dog", "img0 keeps its caption's entity");
                    assert!(classes(CAPTIONS[partner]).iter().any(|c| c == "dog"));
                    continue;
                }
                let (class, list) = if own % 2 == 0 {
                    ("cat", [3, 4])
                } else {
                    ("car", [2, 8])
                };
                assert_eq!(entity, class, "{}", CAPTIONS[own]);
                assert!(list.contains(&partner), "{} drew {partner}", CAPTIONS[own]);
                seen.insert(partner);
            }
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from([2, 3, 4, 8]),
        "every listed partner is drawn"
    );
}

/// An index built with the released files is not silently rebuilt without them.
#[test]
fn a_stale_index_from_released_files_is_not_rebuilt_without_them() {
    let dir = scratch("data-released-stale");
    let (meta, images) = write_meta(&dir);
    std::fs::write(dir.join("class_label.json"), r#"{"img3.jpg": "48"}"#).unwrap();
    std::fs::write(
        dir.join("sample_list.json"),
        r#"{"48": [["img3.jpg", "a cat"]]}"#,
    )
    .unwrap();
    let mut index =
        ovseg_trainer::data::index::build_index(&meta, &indicatif::ProgressBar::hidden()).unwrap();
    index
        .use_released(&dir.join("class_label.json"), &dir.join("sample_list.json"))
        .unwrap();
    let index_path = dir.join("meta.index.json");
    std::fs::write(&index_path, serde_json::to_string(&index).unwrap()).unwrap();
    assert!(Source::meta(&meta, &images).is_ok());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text).unwrap();
    let err = format!("{:#}", Source::meta(&meta, &images).err().unwrap());
    assert!(
        err.contains("released sampling files") && err.contains("meta.index.json"),
        "{err}"
    );
}
