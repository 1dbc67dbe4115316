//! The benchmarks' folder layouts (docs/cli.md, "ovseg eval") as lists of (picture, label) pairs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ovseg_model::eval::LabelTransform;
use ovseg_model::segmentation::Vocab;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// PASCAL VOC 2012: JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt.
    Voc,
    /// PASCAL Context (59 classes + background): SegmentationClassContext, ImageSets/SegmentationContext/val.txt.
    Context,
    /// COCO Object (GroupViT's conversion): images/val2017, annotations/val2017_cocoobject/*_instanceTrainIds.png.
    CocoObject,
    /// ADE20K: images/validation, annotations/validation (labels shifted down, 0 ignored).
    Ade20k,
}

impl Layout {
    /// From the names `vocab_name` gives.
    pub fn parse(name: &str) -> Result<Self> {
        [Self::Voc, Self::Context, Self::CocoObject, Self::Ade20k]
            .into_iter()
            .find(|l| l.vocab_name() == name)
            .with_context(|| {
                format!("unknown dataset layout {name:?} (voc, context, coco_object, ade20k)")
            })
    }

    pub fn vocab_name(self) -> &'static str {
        match self {
            Self::Voc => "voc",
            Self::Context => "context",
            Self::CocoObject => "coco_object",
            Self::Ade20k => "ade20k",
        }
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

/// Every `<id><suffix>` label in `labels` with its picture `<id>.jpg` in `images` (COCO Object,
/// ADE20K: no split file, the annotation folder is the split).
fn paired_folders(root: &Path, images: &str, labels: &str, suffix: &str) -> Result<Vec<Sample>> {
    let labels = root.join(labels);
    Ok(files_with_suffix(&labels, suffix)?
        .into_iter()
        .map(|id| Sample {
            image: root.join(images).join(format!("{id}.jpg")),
            label: labels.join(format!("{id}{suffix}")),
            id,
        })
        .collect())
}

impl Dataset {
    /// Reads `root` in `layout`. `classes` (background first when `with_background`) and
    /// `bg_thresh` override the benchmark's own, for custom data in the same layout.
    pub fn open(
        layout: Layout,
        root: &Path,
        classes: Option<Vec<String>>,
        bg_thresh: Option<f64>,
    ) -> Result<Self> {
        if !root.is_dir() {
            bail!("dataset root {} is not a folder", root.display());
        }
        let vocab = Vocab::get().dataset(layout.vocab_name())?;
        let samples: Vec<Sample> = match layout {
            Layout::Voc | Layout::Context => {
                let (labels, split) = if layout == Layout::Voc {
                    ("SegmentationClass", "ImageSets/Segmentation/val.txt")
                } else {
                    (
                        "SegmentationClassContext",
                        "ImageSets/SegmentationContext/val.txt",
                    )
                };
                split_ids(&root.join(split))?
                    .into_iter()
                    .map(|id| Sample {
                        image: root.join("JPEGImages").join(format!("{id}.jpg")),
                        label: root.join(labels).join(format!("{id}.png")),
                        id,
                    })
                    .collect()
            }
            Layout::CocoObject => paired_folders(
                root,
                "images/val2017",
                "annotations/val2017_cocoobject",
                "_instanceTrainIds.png",
            )?,
            Layout::Ade20k => {
                paired_folders(root, "images/validation", "annotations/validation", ".png")?
            }
        };
        if samples.is_empty() {
            bail!(
                "no samples found in {} ({:?} layout)",
                root.display(),
                layout
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
                "a {:?} class list needs the background first and at least one class",
                layout
            );
        }
        Ok(Self {
            name: layout.vocab_name().to_string(),
            samples,
            palette: vocab.palette.clone().filter(|p| p.len() >= classes.len()),
            classes,
            with_background,
            bg_thresh: if with_background {
                bg_thresh.or(vocab.bg_thresh)
            } else {
                None
            },
            transform: if layout == Layout::Ade20k {
                LabelTransform::ReduceZero
            } else {
                LabelTransform::Identity
            },
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
