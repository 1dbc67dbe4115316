use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::{prepare_image, working_size, ImageNorm, RgbImage};
use crate::model::{normalize, OvSegmentor};

/// Inference settings; the defaults are the paper's.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Background threshold; `None` when the label set has no background class.
    pub bg_thresh: Option<f64>,
    pub short_side: usize,
    pub max_long_side: usize,
    pub window: usize,
    pub stride: usize,
    /// Windows encoded together in one forward pass.
    pub window_batch: usize,
    /// Classes kept per group by the image-level filter.
    pub top_k: usize,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            bg_thresh: Some(0.95),
            short_side: 448,
            max_long_side: 2048,
            window: 448,
            stride: 224,
            window_batch: 4,
            top_k: 5,
        }
    }
}

impl SegmentOptions {
    /// Short side and window `window` pixels, stride half of it.
    pub fn with_window(mut self, window: usize) -> Self {
        self.short_side = window;
        self.window = window;
        self.stride = (window / 2).max(1);
        self
    }
}

/// Result of segmenting one picture.
#[derive(Debug, Clone)]
pub struct Segmentation<B: Backend> {
    /// [K (+1), H, W] at the picture's own size, before argmax. Channel 0 is the background
    /// when there is one.
    pub logits: Tensor<B, 3>,
    /// [H, W] label indices.
    pub labels: Tensor<B, 2, Int>,
}

impl<B: Backend> Segmentation<B> {
    /// The label map read back to the host, row-major.
    pub fn label_values(&self) -> Vec<u32> {
        let values: Vec<i64> = self
            .labels
            .clone()
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("integer labels");
        values.into_iter().map(|v| v as u32).collect()
    }
}

/// Per-window outputs, batched over windows.
#[derive(Debug, Clone)]
pub struct WindowLogits<B: Backend> {
    /// [W, K (+1), h, w].
    pub logits: Tensor<B, 4>,
    /// [W, G, h, w]: the soft assignment resized to the window.
    pub group_attention: Tensor<B, 4>,
}

fn bilinear() -> InterpolateOptions {
    InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false)
}

impl<B: Backend> OvSegmentor<B> {
    /// SPEC 6.2 a-d for a batch of windows [W, 3, h, w] and the classifier [K, D].
    pub fn window_logits(
        &self,
        windows: Tensor<B, 4>,
        classes: Tensor<B, 2>,
        options: &SegmentOptions,
    ) -> WindowLogits<B> {
        let [nw, _, h, w] = windows.dims();
        let k = classes.dims()[0];
        let out = self.img_encoder.forward(windows, false);
        let [gh, gw] = out.grid;
        let g = out.segments.dims()[1];

        let attention = out.assignment.soft.reshape([nw, g, gh, gw]);
        let group_attention = interpolate(attention, [h, w], bilinear());
        let group_of_pixel = group_attention.clone().argmax(1).reshape([nw, h * w, 1]); // [W, hw, 1]

        let groups = normalize(self.img_projector.forward_tokens(out.segments, false)); // [W, G, D]
        let image = normalize(self.img_projector.forward(out.pooled, false)); // [W, D]
        let scale = self.scale().reshape([1, 1, 1]);
        let classes_t = classes.transpose().unsqueeze_dim::<3>(0); // [1, D, K]

        let affinity = groups.matmul(classes_t.clone()) * scale.clone(); // [W, G, K]
        let probs = softmax(affinity.clone(), 2);
        let image_probs = softmax(image.unsqueeze_dim::<3>(1).matmul(classes_t) * scale, 2); // [W, 1, K]
                                                                                             // The image-level filter keeps each window's top-k classes. Picked by repeated argmax
                                                                                             // and compared with 0..K rather than `topk` + `one_hot`: on WebGPU in the browser both
                                                                                             // would read the device synchronously (a CPU sort, a bounds check), which wasm cannot.
        let top = options.top_k.min(k);
        let class_ids = Tensor::<B, 1, Int>::arange(0..k as i64, &image_probs.device())
            .reshape([1, 1, k])
            .expand([nw, 1, k]);
        let mut remaining = image_probs; // [W, 1, K]
        let mut chosen = Tensor::<B, 3, Int>::zeros([nw, 1, k], &remaining.device());
        for _ in 0..top {
            let best = remaining.clone().argmax(2).expand([nw, 1, k]); // [W, 1, K]
            let hit = best.equal(class_ids.clone());
            chosen = chosen + hit.clone().int();
            remaining = remaining.mask_fill(hit, f32::NEG_INFINITY);
        }
        let keep = chosen.greater_elem(0).expand([nw, g, k]);
        let filtered = softmax(affinity.mask_fill(keep.bool_not(), f32::NEG_INFINITY), 2) * probs; // [W, G, K]

        let foreground = filtered
            .clone()
            .gather(1, group_of_pixel.expand([nw, h * w, k])) // [W, hw, K]
            .swap_dims(1, 2)
            .reshape([nw, k, h, w]);
        let logits = match options.bg_thresh {
            None => foreground,
            Some(thresh) => {
                let best_fg = foreground.clone().max_dim(1); // [W, 1, h, w]
                let window_max = filtered
                    .reshape([nw, g * k])
                    .max_dim(1)
                    .reshape([nw, 1, 1, 1]);
                let threshold = window_max.clamp_max(thresh);
                let background = best_fg.lower(threshold.expand([nw, 1, h, w])).float();
                Tensor::cat(vec![background, foreground], 1)
            }
        };
        WindowLogits {
            logits,
            group_attention,
        }
    }

    /// The paper's settings at this model's segmentation window (its configuration's
    /// `segment_window`: 448 for the paper's model), or at `window`.
    pub fn segment_options(&self, window: Option<usize>) -> SegmentOptions {
        SegmentOptions::default().with_window(window.unwrap_or(self.img_encoder.segment_window))
    }

    /// SPEC 6.2-6.3 on a normalised picture [1, 3, H, W] at working size: the window logits
    /// summed over the 448/224 slide and divided by the per-pixel window count. [K (+1), H, W].
    pub fn slide_logits(
        &self,
        image: Tensor<B, 4>,
        classes: Tensor<B, 2>,
        options: &SegmentOptions,
    ) -> Tensor<B, 3> {
        let [_, _, h, w] = image.dims();
        let device = image.device();
        let channels = classes.dims()[0] + usize::from(options.bg_thresh.is_some());
        let boxes = window_boxes(h, w, options.window, options.stride);

        let mut sum = Tensor::<B, 3>::zeros([channels, h, w], &device);
        let mut count = Tensor::<B, 3>::zeros([1, h, w], &device);
        for chunk in boxes.chunks(options.window_batch.max(1)) {
            let crops = chunk
                .iter()
                .map(|&[y1, y2, x1, x2]| image.clone().slice([0..1, 0..3, y1..y2, x1..x2]))
                .collect();
            // Every window of one picture has the same size (the picture is at least one window
            // in each direction, or the window is the whole picture).
            let logits = self
                .window_logits(Tensor::cat(crops, 0), classes.clone(), options)
                .logits;
            for (i, &[y1, y2, x1, x2]) in chunk.iter().enumerate() {
                let one = logits
                    .clone()
                    .slice([i..i + 1, 0..channels, 0..y2 - y1, 0..x2 - x1])
                    .squeeze_dim::<3>(0);
                let region = [0..channels, y1..y2, x1..x2];
                sum = sum
                    .clone()
                    .slice_assign(region.clone(), sum.slice(region) + one);
                count = count.clone().slice_assign(
                    [0..1, y1..y2, x1..x2],
                    count.slice([0..1, y1..y2, x1..x2]) + 1.0,
                );
            }
        }
        sum / count
    }

    /// Segments a decoded picture end to end: resize to the working size, slide, resize the
    /// logits back to the picture's size, argmax.
    pub fn segment(
        &self,
        picture: &RgbImage,
        classes: Tensor<B, 2>,
        options: &SegmentOptions,
    ) -> Segmentation<B> {
        let device = classes.device();
        let size = working_size(
            picture.width,
            picture.height,
            options.short_side,
            options.max_long_side,
        );
        let image = prepare_image::<B>(picture, size, ImageNorm::default(), &device);
        let logits = self.slide_logits(image, classes, options);
        let logits = if size == (picture.width, picture.height) {
            logits
        } else {
            interpolate(
                logits.unsqueeze_dim::<4>(0),
                [picture.height, picture.width],
                bilinear(),
            )
            .squeeze_dim::<3>(0)
        };
        let labels = logits.clone().argmax(0).squeeze_dim::<2>(0);
        Segmentation { logits, labels }
    }
}

/// mmseg's slide boxes [y1, y2, x1, x2]: a grid with the given stride, the last window of each
/// axis shifted back to end at the border.
pub fn window_boxes(h: usize, w: usize, window: usize, stride: usize) -> Vec<[usize; 4]> {
    let steps = |size: usize| (size.saturating_sub(window) + stride - 1) / stride + 1;
    let mut boxes = Vec::new();
    for hi in 0..steps(h) {
        for wi in 0..steps(w) {
            let y2 = (hi * stride + window).min(h);
            let x2 = (wi * stride + window).min(w);
            boxes.push([y2.saturating_sub(window), y2, x2.saturating_sub(window), x2]);
        }
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::window_boxes;

    #[test]
    fn slide_boxes_cover_the_picture() {
        assert_eq!(
            window_boxes(448, 672, 448, 224),
            vec![[0, 448, 0, 448], [0, 448, 224, 672]]
        );
        assert_eq!(
            window_boxes(448, 597, 448, 224),
            vec![[0, 448, 0, 448], [0, 448, 149, 597]]
        );
        assert_eq!(window_boxes(300, 300, 448, 224), vec![[0, 300, 0, 300]]);
        assert_eq!(window_boxes(896, 448, 448, 224).len(), 3);
    }
}
