//! The benchmarks' folder layouts (docs/cli.md, "ovseg eval") as lists of (picture, label) pairs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ovseg_model::eval::LabelTransform;
use ovseg_model::segmentation::Vocab;

/// A segmentation benchmark in its usual folder layout (docs/cli.md, "ovseg eval"): where its
/// pictures, labels and split live and how its label values count. Its classes, background
/// threshold, palette and display title are the `vocab.json` dataset of the same name.
#[derive(Debug)]
pub struct Benchmark {
    pub name: &'static str,
    /// Folder of the pictures, `ID.jpg`.
    pub images: &'static str,
    /// Folder of the label files, `ID` + `label_suffix`.
    pub labels: &'static str,
    pub label_suffix: &'static str,
    /// The file listing the ids to score; `None`: every label file in `labels`.
    pub split: Option<&'static str>,
    pub transform: LabelTransform,
}

/// Every segmentation benchmark, one row each.
pub const BENCHMARKS: [Benchmark; 4] = [
    Benchmark {
        name: "voc",
        images: "JPEGImages",
        labels: "SegmentationClass",
        label_suffix: ".png",
        split: Some("ImageSets/Segmentation/val.txt"),
        transform: LabelTransform::Identity,
    },
    Benchmark {
        name: "context",
        images: "JPEGImages",
        labels: "SegmentationClassContext",
        label_suffix: ".png",
        split: Some("ImageSets/SegmentationContext/val.txt"),
        transform: LabelTransform::Identity,
    },
    // GroupViT's conversion of COCO to 80 object classes.
    Benchmark {
        name: "coco_object",
        images: "images/val2017",
        labels: "annotations/val2017_cocoobject",
        label_suffix: "_instanceTrainIds.png",
        split: None,
        transform: LabelTransform::Identity,
    },
    // mmseg's ADE20K: label 0 is "other" (ignored), classes count from 1.
    Benchmark {
        name: "ade20k",
        images: "images/validation",
        labels: "annotations/validation",
        label_suffix: ".png",
        split: None,
        transform: LabelTransform::ReduceZero,
    },
];

impl Benchmark {
    pub fn named(name: &str) -> Result<&'static Benchmark> {
        BENCHMARKS.iter().find(|b| b.name == name).with_context(|| {
            let known: Vec<&str> = BENCHMARKS.iter().map(|b| b.name).collect();
            format!("unknown benchmark {name:?} ({})", known.join(", "))
        })
    }

    /// The (picture, label) pairs under `root`.
    fn samples(&self, root: &Path) -> Result<Vec<Sample>> {
        let ids = match self.split {
            Some(split) => split_ids(&root.join(split))?,
            None => files_with_suffix(&root.join(self.labels), self.label_suffix)?,
        };
        Ok(ids
            .into_iter()
            .map(|id| Sample {
                image: root.join(self.images).join(format!("{id}.jpg")),
                label: root
                    .join(self.labels)
                    .join(format!("{id}{}", self.label_suffix)),
                id,
            })
            .collect())
    }
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub id: String,
    pub image: PathBuf,
    pub label: PathBuf,
}

/// A benchmark ready to score: samples, class names (background first where there is one),
/// the background threshold and the label transform.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub samples: Vec<Sample>,
    pub classes: Vec<String>,
    pub with_background: bool,
    pub bg_thresh: Option<f64>,
    pub transform: LabelTransform,
    pub palette: Option<Vec<[u8; 3]>>,
}

/// Class list overrides: comma separated names or a file with one name a line.
pub fn read_class_list(arg: &str) -> Result<Vec<String>> {
    let path = Path::new(arg);
    let names: Vec<String> = if path.is_file() {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read class list {}", path.display()))?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    } else {
        arg.split(',').map(|c| c.trim().to_string()).collect()
    };
    if names.is_empty() || names.iter().any(|n| n.is_empty()) {
        bail!("class list '{arg}' is empty or has an empty name");
    }
    Ok(names)
}

fn split_ids(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read split file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Result<Vec<String>> {
    let mut stems: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(suffix))
                .map(String::from)
        })
        .collect();
    stems.sort();
    Ok(stems)
}

impl Dataset {
    /// Reads `benchmark` under `root`. `classes` (background first when `with_background`) and
    /// `bg_thresh` override the benchmark's own, for custom data in the same layout.
    pub fn open(
        benchmark: &Benchmark,
        root: &Path,
        classes: Option<Vec<String>>,
        bg_thresh: Option<f64>,
    ) -> Result<Self> {
        if !root.is_dir() {
            bail!("dataset root {} is not a folder", root.display());
        }
        let vocab = Vocab::get().dataset(benchmark.name)?;
        let samples = benchmark.samples(root)?;
        if samples.is_empty() {
            bail!(
                "no samples found in {} ({} layout)",
                root.display(),
                benchmark.name
            );
        }
        if let Some(missing) = samples.iter().find(|s| !s.image.is_file()) {
            bail!(
                "picture {} of sample '{}' is missing",
                missing.image.display(),
                missing.id
            );
        }
        // Label files too, before a training run reaches its first evaluation.
        if let Some(missing) = samples.iter().find(|s| !s.label.is_file()) {
            bail!(
                "label {} of sample '{}' is missing",
                missing.label.display(),
                missing.id
            );
        }
        let with_background = vocab.with_background;
        let classes = match classes {
            Some(c) => c,
            None => vocab.classes.clone(),
        };
        if with_background && classes.len() < 2 {
            bail!(
                "a {} class list needs the background first and at least one class",
                benchmark.name
            );
        }
        Ok(Self {
            name: benchmark.name.to_string(),
            samples,
            palette: vocab.palette.clone().filter(|p| p.len() >= classes.len()),
            classes,
            with_background,
            bg_thresh: if with_background {
                bg_thresh.or(vocab.bg_thresh)
            } else {
                None
            },
            transform: benchmark.transform,
        })
    }

    /// Class names the text encoder sees (the background is not a word).
    pub fn foreground(&self) -> &[String] {
        if self.with_background {
            &self.classes[1..]
        } else {
            &self.classes
        }
    }
}
