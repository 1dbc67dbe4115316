//! Zero-shot ImageNet classification: the image-level embedding against every class's
//! prompt-ensembled text embedding, top-1 and top-5.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use image::imageops::FilterType;
use indicatif::ProgressBar;
use ovseg_model::eval::TopK;
use ovseg_model::model::normalize;
use ovseg_model::segmentation::{ClassEmbedder, ImageNorm, RgbImage, TemplateSet};
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvSegmentor;
use serde::Serialize;

use crate::image_io::read_image;

/// `val.csv` as the reference reads it: a picture name and its class index per line
/// (comma or white-space separated; a header line is skipped).
pub fn read_val_list(path: &Path, classes: usize) -> Result<Vec<(String, usize)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        if fields.is_empty() {
            continue;
        }
        let index = fields.get(1).and_then(|f| f.parse::<usize>().ok());
        match index {
            Some(k) if k < classes => out.push((fields[0].to_string(), k)),
            Some(k) => bail!(
                "{} line {}: class {k} is out of range (0..{classes})",
                path.display(),
                i + 1
            ),
            None if i == 0 => continue,
            None => bail!(
                "{} line {}: expected '<image>,<class index>'",
                path.display(),
                i + 1
            ),
        }
    }
    if out.is_empty() {
        bail!("{} lists no pictures", path.display());
    }
    Ok(out)
}

/// Resize the short side to 224 (bicubic) and take the central 224x224, as the reference does.
fn center_crop(picture: &RgbImage, size: u32) -> Vec<f32> {
    let img = image::RgbImage::from_raw(
        picture.width as u32,
        picture.height as u32,
        picture.pixels.clone(),
    )
    .expect("sizes agree");
    let (w, h) = img.dimensions();
    let scale = size as f64 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(size),
        ((h as f64 * scale).round() as u32).max(size),
    );
    let resized = image::imageops::resize(&img, nw, nh, FilterType::CatmullRom);
    let (x0, y0) = ((nw - size) / 2, (nh - size) / 2);
    let crop = image::imageops::crop_imm(&resized, x0, y0, size, size).to_image();
    let norm = ImageNorm::default();
    let mut chw = vec![0.0f32; 3 * (size * size) as usize];
    for (i, p) in crop.pixels().enumerate() {
        for c in 0..3 {
            chw[c * (size * size) as usize + i] = (p[c] as f32 - norm.mean[c]) / norm.std[c];
        }
    }
    chw
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassificationReport {
    pub images: u64,
    pub top1: f64,
    pub top5: f64,
}

#[allow(clippy::too_many_arguments)]
pub fn classify<B: Backend>(
    model: &OvSegmentor<B>,
    tokenizer: &TextTokenizer,
    root: &Path,
    list: &[(String, usize)],
    class_names: &[String],
    template: TemplateSet,
    batch: usize,
    progress: &ProgressBar,
    device: &B::Device,
) -> Result<ClassificationReport> {
    let classes = ClassEmbedder::new(tokenizer, template).embed(model, class_names, device)?;
    let scale = model.scale().reshape([1, 1]);
    let mut topk = TopK::default();
    progress.set_length(list.len() as u64);
    for chunk in list.chunks(batch.max(1)) {
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * 224 * 224);
        for (name, _) in chunk {
            let path: PathBuf = root.join(name);
            pixels.extend(center_crop(&read_image(&path)?, 224));
        }
        let images =
            Tensor::<B, 4>::from_data(TensorData::new(pixels, [chunk.len(), 3, 224, 224]), device);
        let pooled = model.img_encoder.forward(images, false).pooled;
        let embedding = normalize(model.img_projector.forward(pooled, false));
        let logits = embedding.matmul(classes.clone().transpose()) * scale.clone();
        let logits: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 logits");
        for (i, (_, truth)) in chunk.iter().enumerate() {
            topk.add(
                &logits[i * class_names.len()..(i + 1) * class_names.len()],
                *truth,
            );
        }
        progress.inc(chunk.len() as u64);
        progress.set_message(format!("top-1 {:.2}", topk.top1_percent()));
    }
    Ok(ClassificationReport {
        images: topk.total,
        top1: topk.top1_percent(),
        top5: topk.top5_percent(),
    })
}

#[cfg(test)]
mod tests {
    //! A known answer: a model whose image embedding is, by construction, one chosen direction
    //! for a bright picture and another for a dark one, so every picture's rank of every class
    //! is known from the class embeddings alone.

    use burn::backend::Flex;
    use burn::module::{Module, ModuleMapper, Param};
    use indicatif::ProgressBar;
    use ovseg_model::segmentation::{ClassEmbedder, TemplateSet};
    use ovseg_model::text::TextTokenizer;
    use ovseg_model::{OvSegmentor, OvsegConfig};

    use super::*;

    /// Sets every float parameter to zero.
    struct Zero;

    impl<B: Backend> ModuleMapper<B> for Zero {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            p.map(|t| t.zeros_like())
        }
    }

    fn param<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Param<Tensor<Flex, D>> {
        Param::from_tensor(Tensor::from_data(
            TensorData::new(values, shape),
            &Default::default(),
        ))
    }

    fn identity(n: usize) -> Param<Tensor<Flex, 2>> {
        param(
            (0..n * n).map(|i| f32::from(i % (n + 1) == 0)).collect(),
            [n, n],
        )
    }

    /// The image side of `model` rebuilt, every other weight zero: the patch embedding is the
    /// picture's mean normalised value s times d = (1, -1, 1, ...), the blocks are identities
    /// (zero residual branches), every patch goes to one group whose segment is a positive
    /// multiple of sign(s) d after the LayerNorms (the others are 0), and the projector maps
    /// +d to `bright` and -d to `dark` (ReLU of +-d.x): the embedding is `bright` or `dark`.
    fn two_answer_model(
        model: OvSegmentor<Flex>,
        bright: &[f32],
        dark: &[f32],
    ) -> OvSegmentor<Flex> {
        let mut model = model;
        let c = model.img_encoder.embed_dim();
        let d: Vec<f32> = (0..c)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let mut img = model.img_encoder.map(&mut Zero);
        let p = img.patch_size;
        let inputs = 3 * p * p;
        let conv = d.iter().flat_map(|&v| vec![v / inputs as f32; inputs]);
        img.patch_embed.proj.weight = param(conv.collect(), [c, 3, p, p]);
        let ones = || param(vec![1.0; c], [c]);
        let down = img.layers[0].downsample.as_mut().expect("a grouping stage");
        down.norm_x.gamma = ones();
        down.assign.v_proj.weight = identity(c);
        down.assign.proj.weight = identity(c);
        img.norm.gamma = ones();
        model.img_encoder = img;

        let mut proj = model.img_projector.map(&mut Zero);
        let [_, inner] = proj.hidden.weight.dims();
        let out = bright.len();
        let hidden = d.iter().flat_map(|&v| {
            let mut row = vec![0.0; inner];
            (row[0], row[1]) = (v, -v);
            row
        });
        proj.hidden.weight = param(hidden.collect(), [c, inner]);
        proj.norm.gamma = param(vec![1.0; inner], [inner]);
        let mut rows = vec![0.0; inner * out];
        rows[..out].copy_from_slice(bright);
        rows[out..2 * out].copy_from_slice(dark);
        proj.out.weight = param(rows, [inner, out]);
        model.img_projector = proj;
        model
    }

    /// A direction v with c_i . v = m + targets[i] for every class embedding c_i (m common to
    /// all): v = D^T a over the rows of D = c_i - mean, with (D D^T + 1 1^T) a = targets - their
    /// mean (the ones make the Gram matrix, singular along 1, invertible), solved in f64.
    fn direction_scoring(classes: &[Vec<f32>], targets: &[f64]) -> Vec<f32> {
        let (k, n) = (classes.len(), classes[0].len());
        let mean: Vec<f64> = (0..n)
            .map(|j| classes.iter().map(|c| c[j] as f64).sum::<f64>() / k as f64)
            .collect();
        let d: Vec<Vec<f64>> = classes
            .iter()
            .map(|c| c.iter().zip(&mean).map(|(&x, m)| x as f64 - m).collect())
            .collect();
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
        let t_mean = targets.iter().sum::<f64>() / k as f64;
        // Rows [G + 1 1^T | t]: Gaussian elimination with partial pivoting.
        let mut rows: Vec<Vec<f64>> = (0..k)
            .map(|i| {
                let mut row: Vec<f64> = (0..k).map(|j| dot(&d[i], &d[j]) + 1.0).collect();
                row.push(targets[i] - t_mean);
                row
            })
            .collect();
        for col in 0..k {
            let pivot = (col..k)
                .max_by(|&a, &b| rows[a][col].abs().total_cmp(&rows[b][col].abs()))
                .unwrap();
            rows.swap(col, pivot);
            for r in 0..k {
                if r != col {
                    let f = rows[r][col] / rows[col][col];
                    for c in col..=k {
                        rows[r][c] -= f * rows[col][c];
                    }
                }
            }
        }
        let a: Vec<f64> = (0..k).map(|i| rows[i][k] / rows[i][i]).collect();
        (0..n)
            .map(|j| (0..k).map(|i| a[i] * d[i][j]).sum::<f64>() as f32)
            .collect()
    }

    /// For each class, how many classes score higher against `direction` (TopK's rule).
    fn better_counts(classes: &[Vec<f32>], direction: &[f32]) -> Vec<usize> {
        let dot = |x: &[f32]| x.iter().zip(direction).map(|(p, q)| p * q).sum::<f32>();
        let length = dot(direction).sqrt();
        // Cosine similarities, as the evaluation scores them (the classes are unit vectors).
        let scores: Vec<f32> = classes.iter().map(|x| dot(x) / length).collect();
        // The construction needs every score apart from the others by more than rounding.
        for (i, s) in scores.iter().enumerate() {
            for t in &scores[i + 1..] {
                assert!((s - t).abs() > 1e-3, "near tie in {scores:?}");
            }
        }
        let better = |s: f32| scores.iter().filter(|&&t| t > s).count();
        scores.iter().map(|&s| better(s)).collect()
    }

    #[test]
    fn top1_and_top5_of_a_model_with_known_answers() {
        let device = Default::default();
        let mut config = OvsegConfig::tiny();
        config.proj_inner_dim = 64;
        let model = config.init_inference::<Flex>(&device);
        let tokenizer = TextTokenizer::bert_base_uncased();
        let names: Vec<String> = ["dog", "cat", "car", "boat", "kite", "house", "ball", "cup"]
            .map(String::from)
            .to_vec();
        let embedder = ClassEmbedder::new(&tokenizer, TemplateSet::Simple);
        let classes = embedder.embed(&model, &names, &device).unwrap();
        let k = names.len();
        let flat: Vec<f32> = classes.into_data().to_vec().unwrap();
        let classes: Vec<Vec<f32>> = flat.chunks(flat.len() / k).map(<[f32]>::to_vec).collect();
        // Class embeddings of a random model are close together: each answer is the direction
        // that scores the classes in a chosen order, one step apart.
        let up = direction_scoring(&classes, &[3.0, 1.0, 7.0, 0.0, 5.0, 2.0, 6.0, 4.0]);
        let down = direction_scoring(&classes, &[6.0, 2.0, 0.0, 7.0, 1.0, 4.0, 3.0, 5.0]);
        let model = two_answer_model(model, &up, &down);
        let (bright, dark) = (better_counts(&classes, &up), better_counts(&classes, &down));
        let with = |better: &[usize], n: usize| better.iter().position(|&m| m == n).unwrap();
        // (picture, light, size, class): classes ranked 1, 3, 5 and 8 for bright pictures (top-1
        // once, top-5 thrice) and 1, 2, 6, 7 for dark ones (top-1 once, top-5 twice).
        let pictures = [
            ("b0.png", true, (300, 200), with(&bright, 0)),
            ("d0.jpg", false, (224, 224), with(&dark, 0)),
            ("b2.jpg", true, (180, 260), with(&bright, 2)),
            ("d1.png", false, (260, 180), with(&dark, 1)),
            ("b4.png", true, (224, 300), with(&bright, 4)),
            ("d5.jpg", false, (400, 230), with(&dark, 5)),
            ("b7.jpg", true, (230, 230), with(&bright, 7)),
            ("d6.png", false, (200, 200), with(&dark, 6)),
        ];
        let dir = std::env::temp_dir().join(format!("ovseg-imagenet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut csv = String::from("image,label\n");
        for (name, light, (w, h), class) in pictures {
            let colour = if light { [230, 200, 120] } else { [30, 60, 20] };
            image::RgbImage::from_pixel(w, h, image::Rgb(colour))
                .save(dir.join(name))
                .unwrap();
            // Both separators the reader takes.
            let sep = if light { "," } else { " " };
            csv.push_str(&format!("{name}{sep}{class}\n"));
        }
        std::fs::write(dir.join("val.csv"), csv).unwrap();

        let list = read_val_list(&dir.join("val.csv"), k).unwrap();
        assert_eq!(list.len(), 8);
        let progress = ProgressBar::hidden();
        let report = classify(
            &model,
            &tokenizer,
            &dir,
            &list,
            &names,
            TemplateSet::Simple,
            3,
            &progress,
            &device,
        )
        .unwrap();
        assert_eq!(report.images, 8);
        assert_eq!(report.top1, 25.0, "2 of 8");
        assert_eq!(report.top5, 62.5, "5 of 8");
        std::fs::remove_dir_all(&dir).ok();
    }
}
