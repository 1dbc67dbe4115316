//! Reading pictures (JPEG, PNG, ...; EXIF orientation applied; grey and RGBA accepted) and
//! writing label maps.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader};
use ovseg_model::segmentation::RgbImage;

/// Pictures beyond this many pixels are refused (the page's bound too).
pub const MAX_PIXELS: u64 = ovseg_model::segmentation::MAX_PIXELS as u64;

pub fn read_image(path: &Path) -> Result<RgbImage> {
    let reader =
        ImageReader::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    let rgb = decode(reader, &path.display().to_string())?;
    let (w, h) = rgb.dimensions();
    Ok(RgbImage::new(w as usize, h as usize, rgb.into_raw())?)
}

/// Decodes a picture held in memory (a tar member); `name` is used in error messages.
pub fn decode_image_bytes(bytes: &[u8], name: &str) -> Result<image::RgbImage> {
    decode(ImageReader::new(std::io::Cursor::new(bytes)), name)
}

/// Reads a picture file as the `image` crate's RGB buffer (for the training augmentations).
pub fn read_rgb(path: &Path) -> Result<image::RgbImage> {
    let reader =
        ImageReader::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    decode(reader, &path.display().to_string())
}

fn decode<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    name: &str,
) -> Result<image::RgbImage> {
    let mut reader = reader
        .with_guessed_format()
        .with_context(|| format!("cannot read image {name}"))?;
    if reader.format().is_none() {
        bail!("{name} is not an image in a format ovseg reads (JPEG, PNG)");
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4);
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .with_context(|| format!("corrupt image {name}"))?;
    let (w, h) = decoder.dimensions();
    if w as u64 * h as u64 > MAX_PIXELS {
        bail!("image {name} is {w}x{h}, larger than the {MAX_PIXELS}-pixel limit");
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut picture =
        DynamicImage::from_decoder(decoder).with_context(|| format!("corrupt image {name}"))?;
    picture.apply_orientation(orientation);
    Ok(picture.to_rgb8())
}

/// Files to segment: every file named, and every JPEG/PNG inside every folder named (sorted).
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("cannot list {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension()
                                .and_then(|e| e.to_str())
                                .map(str::to_ascii_lowercase)
                                .as_deref(),
                            Some("jpg" | "jpeg" | "png")
                        )
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("folder {} holds no JPEG or PNG pictures", input.display());
            }
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            bail!("image {} does not exist", input.display());
        }
    }
    if files.is_empty() {
        bail!("no image given (use --image FILE or a folder)");
    }
    Ok(files)
}

/// A label map as PNG: 8-bit grey when every index fits, 16-bit otherwise.
pub fn write_mask(path: &Path, labels: &[u32], width: usize, height: usize) -> Result<()> {
    let max = labels.iter().copied().max().unwrap_or(0);
    let result = if max < 256 {
        let bytes: Vec<u8> = labels.iter().map(|&l| l as u8).collect();
        image::GrayImage::from_raw(width as u32, height as u32, bytes)
            .expect("sizes agree")
            .save(path)
    } else {
        let words: Vec<u16> = labels.iter().map(|&l| l as u16).collect();
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(width as u32, height as u32, words)
            .expect("sizes agree")
            .save(path)
    };
    result.with_context(|| format!("cannot write {}", path.display()))
}
