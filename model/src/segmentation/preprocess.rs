use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::error::OvsegError;

/// An 8-bit RGB picture, row-major, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self, OvsegError> {
        if width == 0 || height == 0 {
            return Err(OvsegError::Input(format!(
                "image has no pixels ({width}x{height})"
            )));
        }
        if pixels.len() != width * height * 3 {
            return Err(OvsegError::Input(format!(
                "RGB buffer holds {} bytes, a {width}x{height} image needs {}",
                pixels.len(),
                width * height * 3
            )));
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }
}

/// ImageNet mean and std on RGB 0-255.
#[derive(Debug, Clone, Copy)]
pub struct ImageNorm {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for ImageNorm {
    fn default() -> Self {
        Self {
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
        }
    }
}

/// mmcv's `imrescale` with keep-ratio scale (long, short): the largest scale at which the long
/// side fits `max_long` and the short side `short`. Returns (width, height).
pub fn working_size(width: usize, height: usize, short: usize, max_long: usize) -> (usize, usize) {
    let long_side = width.max(height) as f64;
    let short_side = width.min(height) as f64;
    let scale = (max_long as f64 / long_side).min(short as f64 / short_side);
    let w = ((width as f64 * scale) + 0.5) as usize;
    let h = ((height as f64 * scale) + 0.5) as usize;
    (w.max(1), h.max(1))
}

/// Decoded picture -> normalised [1, 3, H, W] at the working size. Resizing is bilinear on the
/// 0-255 values, rounded back to 8-bit levels as the reference's OpenCV resize does.
pub fn prepare_image<B: Backend>(
    image: &RgbImage,
    size: (usize, usize),
    norm: ImageNorm,
    device: &B::Device,
) -> Tensor<B, 4> {
    let (w, h) = (image.width, image.height);
    let data: Vec<f32> = image.pixels.iter().map(|&p| p as f32).collect();
    let x = Tensor::<B, 3>::from_data(TensorData::new(data, [h, w, 3]), device)
        .permute([2, 0, 1])
        .unsqueeze_dim::<4>(0);
    let x = if size == (w, h) {
        x
    } else {
        let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false);
        interpolate(x, [size.1, size.0], options)
            .round()
            .clamp(0.0, 255.0)
    };
    let mean = Tensor::<B, 1>::from_floats(norm.mean, device).reshape([1, 3, 1, 1]);
    let std = Tensor::<B, 1>::from_floats(norm.std, device).reshape([1, 3, 1, 1]);
    (x - mean) / std
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_size_follows_mmcv() {
        assert_eq!(working_size(500, 375, 448, 2048), (597, 448));
        assert_eq!(working_size(672, 448, 448, 2048), (672, 448));
        assert_eq!(working_size(224, 224, 448, 2048), (448, 448));
        // An extreme panorama is bounded by the long side.
        assert_eq!(working_size(5000, 500, 448, 2048), (2048, 205));
        // Thin pictures keep their aspect and end up below one patch across, which
        // `slide_logits` pads; a pixel is the least.
        assert_eq!(working_size(1, 5000, 448, 2048), (1, 2048));
        assert_eq!(working_size(3, 2000, 448, 2048), (3, 2048));
        assert_eq!(working_size(2000, 3, 448, 2048), (2048, 3));
        assert_eq!(working_size(1, 1, 448, 2048), (448, 448));
    }
}
