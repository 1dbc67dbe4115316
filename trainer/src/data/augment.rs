//! Training-time image augmentation, following timm's `create_transform` as GroupViT/OVSegmentor
//! configure it:
//! - stage 1: RandomResizedCropAndInterpolation(224, scale 0.08-1, ratio 3/4-4/3, bicubic),
//!   horizontal flip p=0.5, RandAugment "rand-m9-mstd0.5" (fill = ImageNet mean colour),
//!   ImageNet normalisation, RandomErasing(p=0.25, mode 'pixel');
//! - stage 2: the crop with scale 0.4-1, the flip, normalisation.
//!
//! The configs also ask for colour jitter 0.4, but timm's `transforms_imagenet_train` applies
//! colour jitter only when no auto-augment policy is given, so with RandAugment on it is not
//! applied; we follow timm.

use image::imageops;
use image::{Rgb, RgbImage};
use rand::Rng;
use rand_distr::{Distribution, Normal, StandardNormal};
use serde::{Deserialize, Serialize};

/// ImageNet mean and std on RGB 0-255.
pub const MEAN: [f32; 3] = [123.675, 116.28, 103.53];
pub const STD: [f32; 3] = [58.395, 57.12, 57.375];
/// timm's `img_mean` hparam: round(255 * mean), the fill of rotations, shears and translations.
pub const FILL: [u8; 3] = [124, 116, 104];

/// The paper's two training stages; recipes and checkpoints write them as 1 and 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Stage {
    One,
    Two,
}

impl TryFrom<u8> for Stage {
    type Error = String;

    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(Stage::One),
            2 => Ok(Stage::Two),
            n => Err(format!("stage must be 1 or 2, not {n}")),
        }
    }
}

impl From<Stage> for u8 {
    fn from(stage: Stage) -> u8 {
        match stage {
            Stage::One => 1,
            Stage::Two => 2,
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", u8::from(*self))
    }
}

/// What training does to a picture. [`Augmentation::paper`] gives the reference's for each
/// stage; a recipe can set its own (a small world of small pictures loses its objects to crops
/// of 8% of the area).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    /// Area fraction range of the random resized crop.
    pub crop_scale: (f64, f64),
    /// RandAugment m9, mstd 0.5.
    pub rand_augment: bool,
    /// Probability of random erasing.
    pub erasing: f64,
}

impl Augmentation {
    pub fn paper(stage: Stage) -> Self {
        match stage {
            Stage::One => Self {
                crop_scale: (0.08, 1.0),
                rand_augment: true,
                erasing: 0.25,
            },
            Stage::Two => Self {
                crop_scale: (0.4, 1.0),
                rand_augment: false,
                erasing: 0.0,
            },
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let (lo, hi) = self.crop_scale;
        if !(0.0 < lo && lo <= hi && hi <= 1.0) {
            return Err(format!(
                "crop_scale ({lo}, {hi}) must satisfy 0 < low <= high <= 1"
            ));
        }
        if !(0.0..=1.0).contains(&self.erasing) {
            return Err(format!(
                "erasing {} must be a probability in [0, 1]",
                self.erasing
            ));
        }
        Ok(())
    }
}

/// A rectangle of an image: left, top, width, height in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// The full training transform of one picture: normalised CHW floats, `size` x `size`.
pub fn train_transform<R: Rng + ?Sized>(
    img: &RgbImage,
    augmentation: &Augmentation,
    size: u32,
    rng: &mut R,
) -> Vec<f32> {
    let rect = random_resized_crop_rect(
        img.width(),
        img.height(),
        augmentation.crop_scale,
        (0.75, 4.0 / 3.0),
        rng,
    );
    let mut out = resized_crop(img, rect, size);
    if rng.random::<f64>() < 0.5 {
        out = imageops::flip_horizontal(&out);
    }
    if augmentation.rand_augment {
        out = RandAugment::default().apply(&out, rng);
    }
    let mut pixels = normalize(&out);
    if augmentation.erasing > 0.0 {
        random_erasing(
            &mut pixels,
            size as usize,
            size as usize,
            augmentation.erasing,
            rng,
        );
    }
    pixels
}

/// timm `RandomResizedCropAndInterpolation.get_params`: ten tries at a box of a random area
/// fraction and log-uniform aspect ratio, then a central crop clamped to the ratio range.
pub fn random_resized_crop_rect<R: Rng + ?Sized>(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> Rect {
    let area = width as f64 * height as f64;
    let log_ratio = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = rng.random_range(scale.0..=scale.1) * area;
        let aspect = rng.random_range(log_ratio.0..=log_ratio.1).exp();
        let w = (target * aspect).sqrt().round() as u32;
        let h = (target / aspect).sqrt().round() as u32;
        if w >= 1 && h >= 1 && w <= width && h <= height {
            let y = rng.random_range(0..=height - h);
            let x = rng.random_range(0..=width - w);
            return Rect {
                x,
                y,
                width: w,
                height: h,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (
            width,
            ((width as f64 / ratio.0).round() as u32).clamp(1, height),
        )
    } else if in_ratio > ratio.1 {
        (
            ((height as f64 * ratio.1).round() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    Rect {
        x: (width - w) / 2,
        y: (height - h) / 2,
        width: w,
        height: h,
    }
}

/// Crops `rect` and resizes it to `size` x `size` with PIL's BICUBIC resampling: the a=-0.5
/// cubic, widened by the scale when shrinking (antialiasing), two separable passes rounding to
/// 8 bits in between. (`imageops::resize` computes the same filter but is ~10x slower.)
pub fn resized_crop(img: &RgbImage, rect: Rect, size: u32) -> RgbImage {
    if (rect.width, rect.height) == (size, size) {
        return imageops::crop_imm(img, rect.x, rect.y, rect.width, rect.height).to_image();
    }
    let (src_w, out) = (img.width() as usize, size as usize);
    let src = img.as_raw();
    let columns = resample_coefficients(rect.width as usize, out);
    let rows = resample_coefficients(rect.height as usize, out);
    // Horizontal pass over the crop's rows: [rect.height, out, 3].
    let mut tmp = vec![0u8; rect.height as usize * out * 3];
    for y in 0..rect.height as usize {
        let row = &src[((rect.y as usize + y) * src_w + rect.x as usize) * 3..];
        for (x, (start, weights)) in columns.iter().enumerate() {
            let mut acc = [0.0f32; 3];
            for (k, w) in weights.iter().enumerate() {
                let p = &row[(start + k) * 3..(start + k) * 3 + 3];
                for c in 0..3 {
                    acc[c] += w * p[c] as f32;
                }
            }
            let o = (y * out + x) * 3;
            for c in 0..3 {
                tmp[o + c] = to_u8(acc[c]);
            }
        }
    }
    let mut pixels = vec![0u8; out * out * 3];
    for (y, (start, weights)) in rows.iter().enumerate() {
        for x in 0..out {
            let mut acc = [0.0f32; 3];
            for (k, w) in weights.iter().enumerate() {
                let p = &tmp[((start + k) * out + x) * 3..][..3];
                for c in 0..3 {
                    acc[c] += w * p[c] as f32;
                }
            }
            let o = (y * out + x) * 3;
            for c in 0..3 {
                pixels[o + c] = to_u8(acc[c]);
            }
        }
    }
    RgbImage::from_raw(size, size, pixels).expect("sizes agree")
}

fn to_u8(v: f32) -> u8 {
    (v + 0.5).floor().clamp(0.0, 255.0) as u8
}

/// PIL's `precompute_coeffs` for BICUBIC: per output pixel, the first input pixel and the
/// normalised weights of the inputs it reads.
fn resample_coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).floor() as usize).min(in_size);
            let mut weights: Vec<f64> = (lo..hi)
                .map(|x| cubic_weight((x as f64 - centre + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (lo, weights.into_iter().map(|w| w as f32).collect())
        })
        .collect()
}

/// (pixel - mean) / std per channel, as CHW row-major floats.
pub fn normalize(img: &RgbImage) -> Vec<f32> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p.0[c] as f32 - MEAN[c]) / STD[c];
        }
    }
    out
}

/// timm `RandomErasing(probability, mode='pixel', max_count=1)` on a normalised CHW image: with
/// probability `prob`, one rectangle of 2%-33% of the area and aspect 0.3-3.3 is replaced by
/// standard normal noise per pixel and channel. Returns the erased rectangle.
pub fn random_erasing<R: Rng + ?Sized>(
    pixels: &mut [f32],
    height: usize,
    width: usize,
    prob: f64,
    rng: &mut R,
) -> Option<Rect> {
    if rng.random::<f64>() > prob {
        return None;
    }
    let area = (height * width) as f64;
    let log_aspect = ((0.3f64).ln(), (1.0f64 / 0.3).ln());
    let plane = height * width;
    for _ in 0..10 {
        let target = rng.random_range(0.02..=1.0 / 3.0) * area;
        let aspect = rng.random_range(log_aspect.0..=log_aspect.1).exp();
        let h = (target * aspect).sqrt().round() as usize;
        let w = (target / aspect).sqrt().round() as usize;
        if w < width && h < height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            for c in 0..3 {
                for y in top..top + h {
                    for x in left..left + w {
                        pixels[c * plane + y * width + x] = StandardNormal.sample(rng);
                    }
                }
            }
            return Some(Rect {
                x: left as u32,
                y: top as u32,
                width: w as u32,
                height: h as u32,
            });
        }
    }
    None
}

/// timm's `_RAND_TRANSFORMS` (Cutout is left out there too: random erasing plays its part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandOp {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

pub const RAND_OPS: [RandOp; 15] = [
    RandOp::AutoContrast,
    RandOp::Equalize,
    RandOp::Invert,
    RandOp::Rotate,
    RandOp::Posterize,
    RandOp::Solarize,
    RandOp::SolarizeAdd,
    RandOp::Color,
    RandOp::Contrast,
    RandOp::Brightness,
    RandOp::Sharpness,
    RandOp::ShearX,
    RandOp::ShearY,
    RandOp::TranslateXRel,
    RandOp::TranslateYRel,
];

/// timm `RandAugment` from "rand-m9-mstd0.5": `layers` ops drawn with replacement, each applied
/// with probability `prob` at a magnitude ~ N(magnitude, magnitude_std) clipped to [0, 10].
#[derive(Debug, Clone, Copy)]
pub struct RandAugment {
    pub layers: usize,
    pub magnitude: f64,
    pub magnitude_std: f64,
    pub prob: f64,
}

impl Default for RandAugment {
    fn default() -> Self {
        Self {
            layers: 2,
            magnitude: 9.0,
            magnitude_std: 0.5,
            prob: 0.5,
        }
    }
}

impl RandAugment {
    pub fn apply<R: Rng + ?Sized>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        let ops: Vec<RandOp> = (0..self.layers)
            .map(|_| RAND_OPS[rng.random_range(0..RAND_OPS.len())])
            .collect();
        let mut out = img.clone();
        for op in ops {
            if rng.random::<f64>() > self.prob {
                continue;
            }
            let m = if self.magnitude_std > 0.0 {
                Normal::new(self.magnitude, self.magnitude_std)
                    .expect("positive std")
                    .sample(rng)
            } else {
                self.magnitude
            };
            let negate = rng.random::<f64>() < 0.5;
            out = apply_op(&out, op, m.clamp(0.0, 10.0), negate);
        }
        out
    }
}

/// One RandAugment op at `magnitude` (0-10) with timm's level-to-argument mappings; `negate`
/// flips the sign of the signed ops (rotate, shear, translate), as timm's `_randomly_negate`.
pub fn apply_op(img: &RgbImage, op: RandOp, magnitude: f64, negate: bool) -> RgbImage {
    let level = magnitude / 10.0;
    let sign = if negate { -1.0 } else { 1.0 };
    let enhance = level * 1.8 + 0.1;
    let (w, h) = (img.width() as f64, img.height() as f64);
    match op {
        RandOp::AutoContrast => per_channel_lut(img, autocontrast_lut),
        RandOp::Equalize => per_channel_lut(img, equalize_lut),
        RandOp::Invert => map_values(img, |v| 255 - v),
        RandOp::Posterize => {
            let bits = (level * 4.0) as u32;
            let mask = !((1u32 << (8 - bits)) - 1) as u8;
            map_values(img, |v| v & mask)
        }
        RandOp::Solarize => {
            let threshold = (level * 256.0) as u32;
            map_values(img, |v| if (v as u32) < threshold { v } else { 255 - v })
        }
        RandOp::SolarizeAdd => {
            let add = (level * 110.0) as u32;
            map_values(img, |v| {
                if v < 128 {
                    (v as u32 + add).min(255) as u8
                } else {
                    v
                }
            })
        }
        RandOp::Color => blend(img, &grey(img), enhance),
        RandOp::Contrast => {
            let g = grey(img);
            let sum: u64 = g.pixels().map(|p| p.0[0] as u64).sum();
            let mean = (sum as f64 / (g.width() * g.height()) as f64 + 0.5) as u8;
            let flat = RgbImage::from_pixel(img.width(), img.height(), Rgb([mean; 3]));
            blend(img, &flat, enhance)
        }
        RandOp::Brightness => {
            let black = RgbImage::new(img.width(), img.height());
            blend(img, &black, enhance)
        }
        RandOp::Sharpness => blend(img, &smooth(img), enhance),
        RandOp::Rotate => {
            // PIL `rotate(deg)`: counter-clockwise about the centre; input = R (out - c) + c.
            let t = (sign * level * 30.0).to_radians();
            let (c, s) = (t.cos(), t.sin());
            let (cx, cy) = (w / 2.0, h / 2.0);
            affine(
                img,
                [c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy],
            )
        }
        RandOp::ShearX => affine(img, [1.0, sign * level * 0.3, 0.0, 0.0, 1.0, 0.0]),
        RandOp::ShearY => affine(img, [1.0, 0.0, 0.0, sign * level * 0.3, 1.0, 0.0]),
        RandOp::TranslateXRel => affine(img, [1.0, 0.0, sign * level * 0.45 * w, 0.0, 1.0, 0.0]),
        RandOp::TranslateYRel => affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, sign * level * 0.45 * h]),
    }
}

fn map_values(img: &RgbImage, f: impl Fn(u8) -> u8) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = f(*v);
    }
    out
}

fn per_channel_lut(img: &RgbImage, make: fn(&[u64; 256]) -> [u8; 256]) -> RgbImage {
    let mut hist = [[0u64; 256]; 3];
    for p in img.pixels() {
        for c in 0..3 {
            hist[c][p.0[c] as usize] += 1;
        }
    }
    let luts = [make(&hist[0]), make(&hist[1]), make(&hist[2])];
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in 0..3 {
            p.0[c] = luts[c][p.0[c] as usize];
        }
    }
    out
}

/// PIL `ImageOps.autocontrast` (cutoff 0): stretch [min, max] of the channel to [0, 255].
fn autocontrast_lut(hist: &[u64; 256]) -> [u8; 256] {
    let mut lut = [0u8; 256];
    let lo = hist.iter().position(|&n| n > 0).unwrap_or(0);
    let hi = hist.iter().rposition(|&n| n > 0).unwrap_or(255);
    for (i, v) in lut.iter_mut().enumerate() {
        *v = if hi <= lo {
            i as u8
        } else {
            let scale = 255.0 / (hi - lo) as f64;
            (i as f64 * scale - lo as f64 * scale).clamp(0.0, 255.0) as u8
        };
    }
    lut
}

/// PIL `ImageOps.equalize`.
fn equalize_lut(hist: &[u64; 256]) -> [u8; 256] {
    let mut lut = [0u8; 256];
    for (i, v) in lut.iter_mut().enumerate() {
        *v = i as u8;
    }
    let used: Vec<u64> = hist.iter().copied().filter(|&n| n > 0).collect();
    if used.len() <= 1 {
        return lut;
    }
    let step = (used.iter().sum::<u64>() - used[used.len() - 1]) / 255;
    if step == 0 {
        return lut;
    }
    let mut n = step / 2;
    for (i, v) in lut.iter_mut().enumerate() {
        *v = (n / step).min(255) as u8;
        n += hist[i];
    }
    lut
}

/// PIL's "L" conversion (ITU-R 601-2 luma) as a grey RGB image.
fn grey(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let [r, g, b] = p.0;
        let l = ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8;
        p.0 = [l; 3];
    }
    out
}

/// PIL's SMOOTH filter (3x3, centre 5, others 1, /13); border pixels are kept.
fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let mut acc = [0u32; 3];
            for dy in 0..3 {
                for dx in 0..3 {
                    let weight = if dx == 1 && dy == 1 { 5 } else { 1 };
                    let p = img.get_pixel(x + dx - 1, y + dy - 1).0;
                    for c in 0..3 {
                        acc[c] += weight * p[c] as u32;
                    }
                }
            }
            out.put_pixel(x, y, Rgb(acc.map(|a| ((a + 6) / 13) as u8)));
        }
    }
    out
}

/// PIL `Image.blend(degenerate, img, factor)`: degenerate + factor (img - degenerate), clipped.
fn blend(img: &RgbImage, degenerate: &RgbImage, factor: f64) -> RgbImage {
    let mut out = img.clone();
    for (o, d) in out.iter_mut().zip(degenerate.iter()) {
        let v = *d as f64 + factor * (*o as f64 - *d as f64);
        *o = v.clamp(0.0, 255.0) as u8;
    }
    out
}

/// PIL `Image.transform(AFFINE, m, BICUBIC, fillcolor=FILL)`: the output pixel centre (x, y) is
/// read from the input at (m0 x + m1 y + m2, m3 x + m4 y + m5); points outside get the fill.
pub fn affine(img: &RgbImage, m: [f64; 6]) -> RgbImage {
    let (w, h) = img.dimensions();
    let src = img.as_raw();
    let mut pixels = Vec::with_capacity(src.len());
    for y in 0..h {
        for x in 0..w {
            let (ox, oy) = (x as f64 + 0.5, y as f64 + 0.5);
            let ix = m[0] * ox + m[1] * oy + m[2];
            let iy = m[3] * ox + m[4] * oy + m[5];
            let value = if ix < 0.0 || iy < 0.0 || ix >= w as f64 || iy >= h as f64 {
                FILL
            } else {
                bicubic(src, w as i64, h as i64, ix - 0.5, iy - 0.5)
            };
            pixels.extend_from_slice(&value);
        }
    }
    RgbImage::from_raw(w, h, pixels).expect("sizes agree")
}

fn cubic_weight(t: f64) -> f64 {
    const A: f64 = -0.5;
    let t = t.abs();
    if t < 1.0 {
        ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        (((t - 5.0) * t + 8.0) * t - 4.0) * A
    } else {
        0.0
    }
}

/// Bicubic sample of a w x h RGB buffer at continuous pixel coordinates (pixel centres at
/// integers), edge-clamped.
fn bicubic(src: &[u8], w: i64, h: i64, x: f64, y: f64) -> [u8; 3] {
    let (x0, y0) = (x.floor() as i64, y.floor() as i64);
    let (fx, fy) = (x - x0 as f64, y - y0 as f64);
    let wx = [-1i64, 0, 1, 2].map(|i| cubic_weight(fx - i as f64) as f32);
    let wy = [-1i64, 0, 1, 2].map(|j| cubic_weight(fy - j as f64) as f32);
    let mut acc = [0.0f32; 3];
    for (j, wy) in wy.iter().enumerate() {
        let row = (y0 + j as i64 - 1).clamp(0, h - 1) * w;
        for (i, wx) in wx.iter().enumerate() {
            let o = ((row + (x0 + i as i64 - 1).clamp(0, w - 1)) * 3) as usize;
            let weight = wx * wy;
            for c in 0..3 {
                acc[c] += weight * src[o + c] as f32;
            }
        }
    }
    acc.map(to_u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 255 / w.max(2)) as u8,
                (y * 255 / h.max(2)) as u8,
                ((x * 7 + y * 13) % 256) as u8,
            ])
        })
    }

    #[test]
    fn flip_is_a_mirror() {
        let img = gradient(5, 3);
        let flipped = imageops::flip_horizontal(&img);
        for y in 0..3 {
            for x in 0..5 {
                assert_eq!(flipped.get_pixel(x, y), img.get_pixel(4 - x, y));
            }
        }
    }

    #[test]
    fn crop_box_is_inside_and_in_the_scale_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (w, h) in [(640, 480), (300, 900), (224, 224), (1000, 100)] {
            let area = (w * h) as f64;
            for _ in 0..500 {
                let r = random_resized_crop_rect(w, h, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
                assert!(r.width >= 1 && r.height >= 1);
                assert!(
                    r.x + r.width <= w && r.y + r.height <= h,
                    "{r:?} outside {w}x{h}"
                );
                let ratio = r.width as f64 / r.height as f64;
                let fraction = (r.width * r.height) as f64 / area;
                // Either a sampled box (area and ratio in range, up to rounding) or the fallback.
                let sampled = fraction > 0.07 && fraction <= 1.01 && ratio > 0.7 && ratio < 1.4;
                let fallback = r.x == (w - r.width) / 2 && r.y == (h - r.height) / 2;
                assert!(sampled || fallback, "{r:?} of {w}x{h}");
            }
        }
        // A picture far wider than 4:3 falls back to a centred 4:3 crop when no box fits.
        let r = random_resized_crop_rect(1000, 10, (1.0, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!(
            r,
            Rect {
                x: 493,
                y: 0,
                width: 13,
                height: 10
            }
        );
        let r = random_resized_crop_rect(400, 300, (0.4, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert!((r.width * r.height) as f64 >= 0.39 * 120000.0);
    }

    #[test]
    fn resized_crop_has_the_size_and_keeps_flat_colour() {
        let img = RgbImage::from_pixel(50, 40, Rgb([10, 200, 30]));
        let out = resized_crop(
            &img,
            Rect {
                x: 5,
                y: 5,
                width: 30,
                height: 20,
            },
            16,
        );
        assert_eq!(out.dimensions(), (16, 16));
        assert!(out.pixels().all(|p| p.0 == [10, 200, 30]));
        // The crop of a gradient at its own size is the source window.
        let img = gradient(40, 30);
        let out = resized_crop(
            &img,
            Rect {
                x: 3,
                y: 2,
                width: 8,
                height: 8,
            },
            8,
        );
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(3, 2));
        assert_eq!(out.get_pixel(7, 7), img.get_pixel(10, 9));
    }

    #[test]
    fn resize_agrees_with_the_image_crates_catmull_rom() {
        let img = RgbImage::from_fn(120, 90, |x, y| {
            let v = |f: f32| ((f.sin() * 0.5 + 0.5) * 255.0) as u8;
            Rgb([
                v(x as f32 * 0.05),
                v(y as f32 * 0.07),
                v((x + y) as f32 * 0.03),
            ])
        });
        let rect = Rect {
            x: 7,
            y: 5,
            width: 100,
            height: 70,
        };
        for size in [32, 150] {
            let ours = resized_crop(&img, rect, size);
            let crop = imageops::crop_imm(&img, 7, 5, 100, 70).to_image();
            let theirs = imageops::resize(&crop, size, size, imageops::FilterType::CatmullRom);
            let worst = ours
                .iter()
                .zip(theirs.iter())
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .max()
                .unwrap();
            assert!(worst <= 3, "size {size}: max difference {worst}");
        }
    }

    #[test]
    fn normalisation_values() {
        let img = RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([0, 128, 255])
            } else {
                Rgb([124, 116, 104])
            }
        });
        let v = normalize(&img);
        assert_eq!(v.len(), 6);
        let expect = |c: usize, p: f32| (p - MEAN[c]) / STD[c];
        assert!((v[0] - expect(0, 0.0)).abs() < 1e-6 && (v[0] + 2.117904).abs() < 1e-5);
        assert!((v[2] - expect(1, 128.0)).abs() < 1e-6);
        assert!((v[4] - expect(2, 255.0)).abs() < 1e-6 && (v[4] - 2.64).abs() < 1e-5);
        // CHW: the second pixel's red is at index 1.
        assert!((v[1] - (124.0 - 123.675) / 58.395).abs() < 1e-6);
    }

    #[test]
    fn erasing_changes_only_a_rectangle() {
        let (h, w) = (32, 48);
        let original: Vec<f32> = (0..3 * h * w).map(|i| i as f32 * 1e-3).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut erased_once = false;
        for _ in 0..40 {
            let mut pixels = original.clone();
            let Some(r) = random_erasing(&mut pixels, h, w, 1.0, &mut rng) else {
                continue;
            };
            erased_once = true;
            let area = (r.width * r.height) as f64 / (h * w) as f64;
            assert!(area > 0.015 && area < 0.36, "{r:?}");
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        let i = c * h * w + y * w + x;
                        let inside = x >= r.x as usize
                            && x < (r.x + r.width) as usize
                            && y >= r.y as usize
                            && y < (r.y + r.height) as usize;
                        if inside {
                            assert_ne!(pixels[i], original[i]);
                        } else {
                            assert_eq!(pixels[i], original[i]);
                        }
                    }
                }
            }
        }
        assert!(erased_once);
        let mut pixels = original.clone();
        assert_eq!(random_erasing(&mut pixels, h, w, 0.0, &mut rng), None);
        assert_eq!(pixels, original);
    }

    #[test]
    fn rand_ops_keep_shape_and_do_what_they_say() {
        let img = gradient(31, 23);
        for op in RAND_OPS {
            let out = apply_op(&img, op, 9.0, false);
            assert_eq!(out.dimensions(), img.dimensions(), "{op:?}");
            assert_eq!(
                out,
                apply_op(&img, op, 9.0, false),
                "{op:?} is deterministic"
            );
        }
        let inverted = apply_op(&img, RandOp::Invert, 9.0, false);
        assert_eq!(
            inverted.get_pixel(4, 5).0,
            img.get_pixel(4, 5).0.map(|v| 255 - v)
        );
        // m9 keeps int(0.9 * 4) = 3 bits.
        let posterized = apply_op(&img, RandOp::Posterize, 9.0, false);
        assert!(posterized.iter().all(|v| v & 0b0001_1111 == 0));
        // Solarize at m10 (threshold 256) changes nothing; at m0 it inverts all.
        assert_eq!(apply_op(&img, RandOp::Solarize, 10.0, false), img);
        assert_eq!(apply_op(&img, RandOp::Solarize, 0.0, false), inverted);
        // Brightness at level 5 is factor 1.0: the identity.
        assert_eq!(apply_op(&img, RandOp::Brightness, 5.0, false), img);
        // A translation by 45% of the width moves a column and fills with the mean colour.
        let moved = apply_op(&img, RandOp::TranslateXRel, 10.0, false);
        let shift = (0.45f64 * 31.0).round() as u32; // 13.95 -> a sub-pixel shift, ~14 columns
        assert_eq!(moved.get_pixel(30, 3).0, FILL);
        let near = moved.get_pixel(0, 3).0[0] as i32 - img.get_pixel(shift, 3).0[0] as i32;
        assert!(near.abs() <= 9, "{near}");
        // Rotating by 0 degrees and shearing by 0 are the identity.
        assert_eq!(apply_op(&img, RandOp::Rotate, 0.0, true), img);
        assert_eq!(apply_op(&img, RandOp::ShearY, 0.0, false), img);
        // Autocontrast stretches a narrow channel to 0..255.
        let narrow = RgbImage::from_fn(4, 1, |x, _| Rgb([100 + x as u8, 50, 7]));
        let stretched = apply_op(&narrow, RandOp::AutoContrast, 9.0, false);
        assert_eq!(stretched.get_pixel(0, 0).0[0], 0);
        assert_eq!(stretched.get_pixel(3, 0).0[0], 255);
    }

    #[test]
    fn rand_augment_is_deterministic_for_a_seed() {
        let img = gradient(64, 48);
        let ra = RandAugment::default();
        let a = ra.apply(&img, &mut ChaCha8Rng::seed_from_u64(7));
        let b = ra.apply(&img, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a, b);
        assert_eq!(a.dimensions(), (64, 48));
        let differs = (0..20u64).any(|s| ra.apply(&img, &mut ChaCha8Rng::seed_from_u64(s)) != img);
        assert!(differs, "some seed must change the picture");
        let full = |seed| {
            train_transform(
                &img,
                &Augmentation::paper(Stage::One),
                32,
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
        };
        assert_eq!(full(5), full(5));
        assert_eq!(full(5).len(), 3 * 32 * 32);
        assert_ne!(full(5), full(6));
    }
}
