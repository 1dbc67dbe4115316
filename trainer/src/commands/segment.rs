use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use ovseg_model::segmentation::{
    ClassEmbedder, Request, SegmentOptions, TemplateSet, MAX_BYTE_LABELS, MAX_LABELS,
};
use ovseg_model::share::{LinkPicture, ShareLink};

use crate::files::write_atomically;
use crate::image_io::{expand_inputs, read_image, write_mask};
use crate::overlay::render_overlay;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Pictures to segment: files or folders of JPEG/PNG (repeatable).
    #[arg(long, required = true, num_args = 1..)]
    image: Vec<PathBuf>,
    /// The words to label pixels with, comma separated: "cat,sofa,window".
    #[arg(long)]
    labels: String,
    /// Prompt templates ensembled per label.
    #[arg(long, value_enum, default_value_t)]
    template: TemplateSet,
    /// No background class: every pixel gets one of the labels.
    #[arg(long)]
    no_background: bool,
    /// Background threshold (pixels whose best label scores below it are background).
    #[arg(long, default_value_t = 0.95)]
    bg_thresh: f64,
    /// Label map PNG (one image only): each pixel holds its label index, 0 = background.
    #[arg(long)]
    out_mask: Option<PathBuf>,
    /// Overlay PNG (one image only): colours blended over the picture, with a legend.
    #[arg(long)]
    out_overlay: Option<PathBuf>,
    /// Logits (one image only): safetensors with `logits` [classes, H, W] float32.
    #[arg(long)]
    out_logits: Option<PathBuf>,
    /// Folder for the outputs not named explicitly: <stem>.mask.png and <stem>.overlay.png.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Print a segmentation link for each picture: the page at BASE (e.g. https://host/ovseg/)
    /// shows the result from the link alone (docs/web.md, "Share links").
    #[arg(long, value_name = "BASE")]
    share_url: Option<String>,
    /// With --share-url: the picture's URL to put in the link instead of an embedded small JPEG.
    #[arg(long, value_name = "URL", requires = "share_url")]
    share_image_url: Option<String>,
    /// With --share-url: the model's URL to put in the link (so "run again" loads it).
    #[arg(long, value_name = "URL", requires = "share_url")]
    share_model_url: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    crate::on_device!(args.model.device, run_on(&args))
}

fn run_on<B: Backend>(args: &Args, device: B::Device) -> Result<()> {
    let request = request(args)?;
    let images = expand_inputs(&args.image)?;
    let out_dir = output_folder(args, images.len())?;

    let (model, tokenizer) = args.model.load::<B>(&device)?;
    // The words are encoded once for every picture of the run.
    let classes = ClassEmbedder::new(&tokenizer, request.template()).embed(
        &model,
        request.labels(),
        &device,
    )?;
    let options = SegmentOptions {
        bg_thresh: request.threshold(),
        ..model.segment_options(args.model.window)
    };

    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("template"),
    );
    let mut failures = Vec::new();
    for path in &images {
        bar.set_message(
            path.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        let outcome = guarded(|| {
            segment_one(
                &model,
                path,
                &classes,
                &options,
                &request,
                args,
                out_dir.as_deref(),
            )
        });
        match outcome {
            Ok(summary) => bar.suspend(|| println!("{summary}")),
            Err(e) if images.len() > 1 => {
                let reason = format!("{e:#}").replace('\n', " ");
                bar.suspend(|| eprintln!("skipped {}: {reason}", path.display()));
                failures.push(path.clone());
            }
            Err(e) => return Err(e),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !failures.is_empty() {
        bail!(
            "{} of {} pictures could not be segmented",
            failures.len(),
            images.len()
        );
    }
    Ok(())
}

/// The words, template and threshold of the command line as one checked request.
fn request(args: &Args) -> Result<Request> {
    let request = Request::parse(
        &args.labels,
        !args.no_background,
        args.bg_thresh,
        args.template.name(),
        MAX_LABELS,
    )
    .map_err(|e| {
        let flag = format!("--{}", e.field().replace('_', "-"));
        anyhow::Error::new(e).context(flag)
    })?;
    if args.share_url.is_some() && request.labels().len() > MAX_BYTE_LABELS {
        bail!(
            "a share link holds at most {MAX_BYTE_LABELS} labels; {} given",
            request.labels().len()
        );
    }
    Ok(request)
}

/// The folder the outputs of `pictures` pictures go to (made if missing): `--out-dir`, the
/// current folder, or none when one picture's outputs are named one by one.
fn output_folder(args: &Args, pictures: usize) -> Result<Option<PathBuf>> {
    let explicit =
        args.out_mask.is_some() || args.out_overlay.is_some() || args.out_logits.is_some();
    if pictures > 1 && explicit {
        bail!("--out-mask, --out-overlay and --out-logits name one picture's outputs; with {pictures} pictures use --out-dir");
    }
    let out_dir = match (&args.out_dir, explicit) {
        (Some(dir), _) => Some(dir.clone()),
        (None, false) => Some(PathBuf::from(".")),
        (None, true) => None,
    };
    if let Some(dir) = &out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(out_dir)
}

/// Runs one picture's work, a panic (a bug, or the backend refusing an input) becoming that
/// picture's error so that a folder run goes on with the other pictures. The default panic hook
/// is silenced meanwhile: the error is reported in one line like any other.
fn guarded(work: impl FnOnce() -> Result<String>) -> Result<String> {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    std::panic::set_hook(default_hook);
    outcome.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        Err(anyhow!("internal error: {message}"))
    })
}

fn segment_one<B: Backend>(
    model: &ovseg_model::OvSegmentor<B>,
    path: &Path,
    classes: &Tensor<B, 2>,
    options: &SegmentOptions,
    request: &Request,
    args: &Args,
    out_dir: Option<&Path>,
) -> Result<String> {
    let picture = read_image(path)?;
    let result = model.segment(&picture, classes.clone(), options);
    let (w, h) = (picture.width, picture.height);
    let labels = result.label_values();
    let names = request.names();

    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "image".into());
    let default = |suffix: &str| out_dir.map(|d| d.join(format!("{stem}.{suffix}")));
    let mask_path = args.out_mask.clone().or_else(|| default("mask.png"));
    let overlay_path = args.out_overlay.clone().or_else(|| default("overlay.png"));
    if let Some(p) = &mask_path {
        write_mask(p, &labels, w, h)?;
    }
    if let Some(p) = &overlay_path {
        let overlay = render_overlay(&picture, &labels, &names, request.background(), 0.5);
        overlay
            .save(p)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.out_logits {
        write_logits(p, result.picture_logits())?;
    }

    if let Some(base) = &args.share_url {
        let picture = match &args.share_image_url {
            Some(url) => LinkPicture::Url(url.clone()),
            None => LinkPicture::Jpeg(small_jpeg(&picture)?),
        };
        let shared = ShareLink {
            labels: request.labels().to_vec(),
            background: request.background(),
            bg_thresh: request.bg_thresh(),
            template: request.template().name().to_string(),
            model: args.share_model_url.clone().unwrap_or_default(),
            width: w,
            height: h,
            mask: labels.iter().map(|&l| l as u8).collect(),
            picture,
        };
        println!("{}", shared.to_link(base)?);
    }

    let mut counts = vec![0usize; names.len()];
    for &l in &labels {
        counts[l as usize] += 1;
    }
    let mut order: Vec<usize> = (0..names.len()).filter(|&i| counts[i] > 0).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(counts[i]));
    let shares: Vec<String> = order
        .iter()
        .map(|&i| {
            format!(
                "{} {:.1}%",
                names[i],
                counts[i] as f64 * 100.0 / labels.len() as f64
            )
        })
        .collect();
    Ok(format!("{}: {}", path.display(), shares.join(", ")))
}

/// The picture as a JPEG of at most 256 pixels a side, for embedding in a share link.
fn small_jpeg(picture: &ovseg_model::segmentation::RgbImage) -> Result<Vec<u8>> {
    let full = image::RgbImage::from_raw(
        picture.width as u32,
        picture.height as u32,
        picture.pixels.clone(),
    )
    .context("picture buffer")?;
    let scale = (256.0 / picture.width.max(picture.height) as f64).min(1.0);
    let (w, h) = (
        ((picture.width as f64 * scale).round() as u32).max(1),
        ((picture.height as f64 * scale).round() as u32).max(1),
    );
    let small = image::imageops::resize(&full, w, h, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 70)
        .encode_image(&small)
        .context("encoding the link's JPEG")?;
    Ok(out)
}

fn write_logits<B: Backend>(path: &Path, logits: Tensor<B, 3>) -> Result<()> {
    let shape = logits.dims().to_vec();
    let values: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 logits");
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)?;
    let file = safetensors::serialize([("logits", view)], None)?;
    write_atomically(path, &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_pictures_error() {
        assert_eq!(guarded(|| Ok("fine".into())).unwrap(), "fine");
        let e = guarded(|| panic!("conv of an empty input")).unwrap_err();
        assert_eq!(e.to_string(), "internal error: conv of an empty input");
        let e = guarded(|| bail!("corrupt image x.png")).unwrap_err();
        assert_eq!(e.to_string(), "corrupt image x.png");
    }
}
