use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::files::write_atomically;
use crate::synth::{self, Kind, Split, GENERATOR_VERSION};

#[derive(clap::Args)]
pub struct Args {
    /// Output folder. Its train/, val/ and examples/ subfolders are replaced unless synth.json
    /// shows they already hold this exact world.
    #[arg(long)]
    out: PathBuf,
    /// Number of training image-caption pairs.
    #[arg(long, default_value_t = 2000)]
    train: usize,
    /// Number of held-out evaluation pictures with ground truth.
    #[arg(long, default_value_t = 200)]
    val: usize,
    /// Side of the square pictures, pixels.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Seed of the world: the same seed and parameters give the same files, byte for byte.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also copy the first K evaluation pictures with their captions into examples/.
    #[arg(long, default_value_t = 0)]
    examples: usize,
    /// JPEG quality, 1-100.
    #[arg(long, default_value_t = 90)]
    quality: u8,
    /// How often captions say colours, patterns and the place, 0-1 (1: the usual captions;
    /// lower: more captions that name only the objects).
    #[arg(long, default_value_t = 1.0)]
    detail: f64,
    /// How often an object comes in one of its kind's two typical colours, 0-1 (0: any of the
    /// ten colours, equally likely; each colour is typical of two kinds, so it narrows down
    /// what an object is and the shape decides).
    #[arg(long, default_value_t = 0.0)]
    typical_colours: f64,
    /// Objects of the first N kinds only (1-10; the class lists shrink to match): a smaller
    /// world that a short training run can learn.
    #[arg(long, default_value_t = 10)]
    kinds: usize,
    /// Objects this many times their usual size (0.5-2; 1: 15-55% of the side, at most 90%).
    #[arg(long, default_value_t = 1.0)]
    object_scale: f32,
    /// Backdrops of one flat colour instead of textured surfaces (an easier world).
    #[arg(long)]
    plain_backdrop: bool,
    /// Every kind in one colour of its own, without patterns (colour tells the kind).
    #[arg(long)]
    own_colours: bool,
    /// How often captions say the place (the backdrop), 0-1, whatever --detail says of colours
    /// and patterns (default: 0.7 x --detail).
    #[arg(long)]
    place: Option<f64>,
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))
}

fn count_lines(path: &Path) -> Option<usize> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
}

/// The output of an earlier run with the same parameters is complete: its manifest (written
/// last) matches and the files it lists are there.
fn is_complete(out: &Path, params: &Value, args: &Args) -> bool {
    let Ok(text) = std::fs::read_to_string(out.join("synth.json")) else {
        return false;
    };
    let Ok(manifest) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    if manifest.get("params") != Some(params) {
        return false;
    }
    let val = out.join("val");
    let last = |dir: &Path, split: Split, n: usize, ext: &str| {
        n == 0
            || dir
                .join(format!("{}_{:06}.{ext}", split.name(), n - 1))
                .is_file()
    };
    count_lines(&out.join("train/meta.jsonl")) == Some(args.train)
        && count_lines(&val.join("ImageSets/Segmentation/val.txt")) == Some(args.val)
        && last(&out.join("train/images"), Split::Train, args.train, "jpg")
        && last(&val.join("JPEGImages"), Split::Val, args.val, "jpg")
        && last(&val.join("SegmentationClass"), Split::Val, args.val, "png")
        && val.join("classes.txt").is_file()
}

fn bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} pictures [{elapsed_precise}<{eta_precise}, {per_sec}]",
        )
        .expect("template"),
    );
    bar
}

struct Made {
    id: String,
    caption: String,
    kinds: Vec<Kind>,
}

/// Generates `n` pictures of `split` on all cores; `save` writes one sample's files.
fn generate(
    args: &Args,
    split: Split,
    n: usize,
    progress: &ProgressBar,
    save: impl Fn(&synth::Sample) -> Result<()> + Sync,
) -> Result<Vec<Made>> {
    let style = synth::Style {
        detail: args.detail,
        typical_colours: args.typical_colours,
        kinds: args.kinds,
        object_scale: args.object_scale,
        plain_backdrop: args.plain_backdrop,
        own_colours: args.own_colours,
        place: args.place,
    };
    (0..n)
        .into_par_iter()
        .map(|i| {
            let sample = synth::sample(args.seed, split, i, args.size, style);
            save(&sample)?;
            progress.inc(1);
            Ok(Made {
                id: sample.id,
                caption: sample.caption,
                kinds: sample.kinds,
            })
        })
        .collect()
}

fn meta_file(path: &Path, made: &[Made], folder: &str) -> Result<()> {
    let mut text = String::new();
    for m in made {
        // Written by hand to keep the seed's key order (filename first).
        let filename = Value::from(format!("{folder}/{}.jpg", m.id));
        let caption = Value::from(m.caption.as_str());
        text.push_str(&format!(
            "{{\"filename\": {filename}, \"caption\": {caption}}}\n"
        ));
    }
    write(path, text.as_bytes())
}

fn pictures_per_class(made: &[Made]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for m in made {
        for k in &m.kinds {
            *counts.entry(k.entity()).or_insert(0) += 1;
        }
    }
    counts
}

/// The options are in range and ask for something.
fn check(args: &Args) -> Result<()> {
    if !(32..=2048).contains(&args.size) {
        bail!("--size {} must be between 32 and 2048 pixels", args.size);
    }
    if !(1..=100).contains(&args.quality) {
        bail!("--quality {} must be between 1 and 100", args.quality);
    }
    if !(0.0..=1.0).contains(&args.detail) {
        bail!("--detail {} must be between 0 and 1", args.detail);
    }
    if !(0.0..=1.0).contains(&args.typical_colours) {
        bail!(
            "--typical-colours {} must be between 0 and 1",
            args.typical_colours
        );
    }
    if let Some(place) = args.place.filter(|p| !(0.0..=1.0).contains(p)) {
        bail!("--place {place} must be between 0 and 1");
    }
    if !(1..=Kind::ALL.len()).contains(&args.kinds) {
        bail!(
            "--kinds {} must be between 1 and {}",
            args.kinds,
            Kind::ALL.len()
        );
    }
    if !(0.5..=2.0).contains(&args.object_scale) {
        bail!(
            "--object-scale {} must be between 0.5 and 2",
            args.object_scale
        );
    }
    if args.train == 0 && args.val == 0 {
        bail!("nothing to generate: --train and --val are both 0");
    }
    if args.examples > args.val {
        bail!(
            "--examples {} asks for more pictures than --val {} makes",
            args.examples,
            args.val
        );
    }
    Ok(())
}

/// The manifest's `params`: what makes one world differ from another.
fn world_params(args: &Args) -> Value {
    let mut params = json!({
        "generator": GENERATOR_VERSION,
        "seed": args.seed,
        "size": args.size,
        "train": args.train,
        "val": args.val,
        "examples": args.examples,
        "quality": args.quality,
        "detail": args.detail,
        "typical_colours": args.typical_colours,
    });
    // Absent for the full world, so worlds made before the option are still recognised.
    if args.kinds < Kind::ALL.len() {
        params["kinds"] = args.kinds.into();
    }
    if args.object_scale != 1.0 {
        params["object_scale"] = args.object_scale.into();
    }
    if args.plain_backdrop {
        params["plain_backdrop"] = true.into();
    }
    if args.own_colours {
        params["own_colours"] = true.into();
    }
    if let Some(place) = args.place {
        params["place"] = place.into();
    }
    params
}

/// Removes anything left from an older or interrupted run, but only the folders this command
/// owns; the manifest first, so an interruption never leaves a stale "complete" mark.
fn remove_old_output(out: &Path, manifest: &Path) -> Result<()> {
    if manifest.exists() {
        std::fs::remove_file(manifest)
            .with_context(|| format!("cannot remove {}", manifest.display()))?;
    }
    for sub in ["train", "val", "examples"] {
        let dir = out.join(sub);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove the old {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Writes val/classes.txt (the evaluation names) and val/classes-caption.txt (the names
/// captions use) and returns both lists.
fn write_class_lists(val: &Path, kinds: usize) -> Result<(Vec<String>, Vec<String>)> {
    let eval_classes = synth::class_names(false, kinds);
    let caption_classes = synth::class_names(true, kinds);
    write(
        &val.join("classes.txt"),
        format!("{}\n", eval_classes.join("\n")).as_bytes(),
    )?;
    write(
        &val.join("classes-caption.txt"),
        format!("{}\n", caption_classes.join("\n")).as_bytes(),
    )?;
    Ok((eval_classes, caption_classes))
}

/// Copies the first evaluation pictures into examples/ with examples.json listing their
/// captions and classes.
fn write_examples(out: &Path, jpeg_dir: &Path, examples: &[Made]) -> Result<()> {
    let dir = out.join("examples");
    create_dir(&dir)?;
    let mut list = Vec::new();
    for m in examples {
        let name = format!("{}.jpg", m.id);
        std::fs::copy(jpeg_dir.join(&name), dir.join(&name))
            .with_context(|| format!("cannot copy {name} into {}", dir.display()))?;
        list.push(json!({
            "file": name,
            "caption": m.caption,
            "classes": m.kinds.iter().map(|k| k.entity()).collect::<Vec<_>>(),
        }));
    }
    write(
        &dir.join("examples.json"),
        serde_json::to_string_pretty(&list)?.as_bytes(),
    )
}

pub fn run(args: Args) -> Result<()> {
    check(&args)?;
    let out = &args.out;
    let params = world_params(&args);
    if is_complete(out, &params, &args) {
        println!(
            "{} already holds this world ({} train pairs, {} val pictures, seed {}); reusing it",
            out.display(),
            args.train,
            args.val,
            args.seed
        );
        return Ok(());
    }

    let manifest = out.join("synth.json");
    remove_old_output(out, &manifest)?;
    let train_images = out.join("train/images");
    let val = out.join("val");
    let (jpeg_dir, label_dir, split_dir) = (
        val.join("JPEGImages"),
        val.join("SegmentationClass"),
        val.join("ImageSets/Segmentation"),
    );
    for dir in [&train_images, &jpeg_dir, &label_dir, &split_dir] {
        create_dir(dir)?;
    }

    let started = std::time::Instant::now();
    let progress = bar(args.train + args.val);
    let train = generate(&args, Split::Train, args.train, &progress, |s| {
        let jpeg = synth::encode_jpeg(&s.rgb, s.size, args.quality)?;
        write(&train_images.join(format!("{}.jpg", s.id)), &jpeg)
    })?;
    let val_made = generate(&args, Split::Val, args.val, &progress, |s| {
        let jpeg = synth::encode_jpeg(&s.rgb, s.size, args.quality)?;
        write(&jpeg_dir.join(format!("{}.jpg", s.id)), &jpeg)?;
        let png = synth::encode_label_png(&s.labels, s.size)?;
        write(&label_dir.join(format!("{}.png", s.id)), &png)
    })?;
    progress.finish_and_clear();

    meta_file(&out.join("train/meta.jsonl"), &train, "images")?;
    meta_file(&val.join("meta.jsonl"), &val_made, "JPEGImages")?;
    let ids: String = val_made.iter().map(|m| format!("{}\n", m.id)).collect();
    write(&split_dir.join("val.txt"), ids.as_bytes())?;
    let (eval_classes, caption_classes) = write_class_lists(&val, args.kinds)?;
    if args.examples > 0 {
        write_examples(out, &jpeg_dir, &val_made[..args.examples])?;
    }

    write(&out.join("README.txt"), readme(&args).as_bytes())?;
    let manifest_json = json!({
        "params": params,
        "classes": eval_classes,
        "caption_classes": caption_classes,
        "train_pictures_per_class": pictures_per_class(&train),
        "val_pictures_per_class": pictures_per_class(&val_made),
    });
    write_atomically(
        &manifest,
        serde_json::to_string_pretty(&manifest_json)?.as_bytes(),
    )?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "wrote {} train pairs and {} val pictures ({}px, seed {}) to {} in {:.1}s",
        args.train,
        args.val,
        args.size,
        args.seed,
        out.display(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

fn readme(args: &Args) -> String {
    let kinds: Vec<String> = Kind::ALL[..args.kinds]
        .iter()
        .map(|k| {
            let words = k.caption_words().join("/");
            let words = if args.typical_colours > 0.0 {
                let [a, b] = k.typical_colours();
                format!("{words:<16} typically {a} or {b}")
            } else {
                words
            };
            if k.eval_name() == k.entity() {
                format!("  {} {words}", k.label())
            } else {
                format!(
                    "  {} {words} (evaluated as \"{}\", a word no caption uses)",
                    k.label(),
                    k.eval_name()
                )
            }
        })
        .collect();
    format!(
        "A synthetic world for OVSegmentor, made by `ovseg synth --train {train} --val {val} --size {size} --seed {seed}
--detail {detail} --typical-colours {typical} --kinds {count} --object-scale {object_scale}` (generator version {GENERATOR_VERSION}).

Pictures: {size}x{size} JPEG, 1-4 objects of {count} kinds with varied colours, patterns (stripes,
dots, checks; with --typical-colours, each kind mostly in its two typical colours), sizes
(15-55% of the side, times --object-scale), positions, tilts and mirror images, overlapping
(the ground truth is the object on top; every object keeps at least 40% of its pixels visible),
on textured backgrounds: sky, sunset, grass, water, sand, snow, brick or painted walls, wooden
or tiled floors. Backgrounds are label 0.

Captions name every kind of object in the picture with entity-vocabulary words (\"building\"
is the vocabulary's synonym of house), with counts, colours, patterns, spatial relations and
the background: \"a red striped ball in front of a building on the grass\".

Label values and caption words:
{kinds}

Layout:
  train/images/train_NNNNNN.jpg
  train/meta.jsonl        {{\"filename\": \"images/train_NNNNNN.jpg\", \"caption\": ...}} a line,
                          filenames relative to train/
  val/                    PASCAL VOC layout: JPEGImages/, SegmentationClass/ (palette PNGs of
                          label values), ImageSets/Segmentation/val.txt
  val/meta.jsonl          the evaluation pictures' captions (not needed to evaluate)
  val/classes.txt         evaluation class names, background first, five of them synonyms
                          that never appear in a caption
  val/classes-caption.txt the same classes by the names the captions use
  examples/               a few evaluation pictures and their captions (with --examples)
  synth.json              the parameters and class statistics, written last

Evaluate:
  ovseg eval --model MODEL --dataset voc --root val --classes val/classes.txt
  ovseg eval --model MODEL --dataset voc --root val --classes val/classes-caption.txt
",
        train = args.train,
        val = args.val,
        size = args.size,
        seed = args.seed,
        detail = args.detail,
        typical = args.typical_colours,
        count = args.kinds,
        object_scale = args.object_scale,
        kinds = kinds.join("\n"),
    )
}
