use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, PadMode};

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
    /// [K (+1), h, w] at the working size (docs/architecture.md, "Inference", step 4 before the
    /// resize back to the picture). Channel 0 is the background when there is one.
    pub working_logits: Tensor<B, 3>,
    /// [H, W] label indices at the picture's size.
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

    /// [K (+1), H, W]: the logits resized to the picture, whose argmax is `labels`. This holds
    /// every channel at full size, (K + 1) x H x W floats, so it is meant for small pictures
    /// (`ovseg segment --out-logits`); `labels` never needs it.
    pub fn picture_logits(&self) -> Tensor<B, 3> {
        let [h, w] = self.labels.dims();
        resize_logits(self.working_logits.clone(), h, w)
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
    /// docs/architecture.md, "Inference", step 3, for a batch of windows [W, 3, h, w] and the
    /// classifier [K, D].
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

    /// docs/architecture.md, "Inference", steps 3-4 on a normalised picture [1, 3, H, W] at working
    /// size: the window logits summed over the 448/224 slide and divided by the per-pixel window
    /// count. [K (+1), H, W].
    ///
    /// A side below one patch (a 1x5000 picture is 1x2048 at working size) leaves the patch
    /// embedding nothing to cover: the reference's Conv2d refuses such an input and burn's
    /// panics. That side is padded at its end up to one patch with zeros, i.e. the normalised
    /// mean colour (the value mmseg's `Pad` fills in after `Normalize`), and the logits of the
    /// padding are dropped. Pictures of at least one patch each way are untouched.
    pub fn slide_logits(
        &self,
        image: Tensor<B, 4>,
        classes: Tensor<B, 2>,
        options: &SegmentOptions,
    ) -> Tensor<B, 3> {
        let [_, _, h, w] = image.dims();
        let patch = self.img_encoder.patch_size;
        if h >= patch && w >= patch {
            return self.slide_windows(image, classes, options);
        }
        let padding = [(0, patch.saturating_sub(h)), (0, patch.saturating_sub(w))];
        let logits =
            self.slide_windows(image.pad(padding, PadMode::Constant(0.0)), classes, options);
        let channels = logits.dims()[0];
        logits.slice([0..channels, 0..h, 0..w])
    }

    /// [`Self::slide_logits`] on a picture of at least one patch each way.
    fn slide_windows(
        &self,
        image: Tensor<B, 4>,
        classes: Tensor<B, 2>,
        options: &SegmentOptions,
    ) -> Tensor<B, 3> {
        let [_, _, h, w] = image.dims();
        let device = image.device();
        let channels = classes.dims()[0] + usize::from(options.bg_thresh.is_some());
        // A window below one patch would leave the patch embedding empty too.
        let window = options.window.max(self.img_encoder.patch_size);
        let boxes = window_boxes(h, w, window, options.stride.max(1));

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
    /// logits back to the picture's size, argmax (docs/architecture.md, "Inference", steps 3-4),
    /// every picture size from 1x1 up.
    ///
    /// Memory beyond the model's: the working-size logits, (K + 1) x h x w floats with h x w at
    /// most `short_side` x `max_long_side`, and about `4 x ARGMAX_CHANNELS + 40` bytes a picture
    /// pixel for the label map ([`upsampled_argmax`]), whatever the number of labels K.
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
        let working_logits = self.slide_logits(image, classes, options);
        let labels = upsampled_argmax(working_logits.clone(), picture.height, picture.width);
        Segmentation {
            working_logits,
            labels,
        }
    }
}

/// Channels [`upsampled_argmax`] resizes to the picture's size at a time.
const ARGMAX_CHANNELS: usize = 8;

/// `logits` [C, h, w] bilinearly resized to [C, height, width] (align_corners false,
/// docs/architecture.md, "Inference", step 4).
fn resize_logits<B: Backend>(logits: Tensor<B, 3>, height: usize, width: usize) -> Tensor<B, 3> {
    let [_, h, w] = logits.dims();
    if (h, w) == (height, width) {
        return logits;
    }
    interpolate(logits.unsqueeze_dim::<4>(0), [height, width], bilinear()).squeeze_dim::<3>(0)
}

/// The argmax over channels of `logits` [C, h, w] resized to [height, width], as [height, width],
/// without all C channels at full size: [`ARGMAX_CHANNELS`] channels are resized at a time and
/// folded into a running best score and label per pixel. Bilinear resizing treats each channel
/// on its own and a later chunk wins only when strictly greater (ties stay with the lower label,
/// as in argmax), so the map equals `resize_logits(logits).argmax(0)` exactly.
///
/// Bound: besides `logits`, about ARGMAX_CHANNELS + 6 values a picture pixel (the resized
/// chunk, its max and argmax, the running score and label and their updates), i.e. roughly
/// `4 x ARGMAX_CHANNELS + 40` bytes a pixel with 64-bit labels, not C x 4.
fn upsampled_argmax<B: Backend>(
    logits: Tensor<B, 3>,
    height: usize,
    width: usize,
) -> Tensor<B, 2, Int> {
    let [c, h, w] = logits.dims();
    if (h, w) == (height, width) {
        return logits.argmax(0).squeeze_dim::<2>(0);
    }
    let mut best: Option<(Tensor<B, 3>, Tensor<B, 3, Int>)> = None;
    for start in (0..c).step_by(ARGMAX_CHANNELS) {
        let chunk = logits
            .clone()
            .slice([start..(start + ARGMAX_CHANNELS).min(c), 0..h, 0..w]);
        let chunk = resize_logits(chunk, height, width);
        let label = chunk.clone().argmax(0) + start as i64; // [1, H, W]
        let score = chunk.max_dim(0);
        best = Some(match best {
            None => (score, label),
            Some((best_score, best_label)) => {
                let better = score.clone().greater(best_score.clone());
                (
                    best_score.mask_where(better.clone(), score),
                    best_label.mask_where(better, label),
                )
            }
        });
    }
    best.expect("logits have channels").1.squeeze_dim::<2>(0)
}

/// mmseg's slide boxes [y1, y2, x1, x2]: a grid with the given stride, the last window of each
/// axis shifted back to end at the border.
pub fn window_boxes(h: usize, w: usize, window: usize, stride: usize) -> Vec<[usize; 4]> {
    let steps = |size: usize| size.saturating_sub(window).div_ceil(stride) + 1;
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
    use burn::backend::{Flex, NdArray};
    use burn::tensor::Distribution;

    use super::*;
    use crate::OvsegConfig;

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

    /// Logits with many exact ties (a few levels only), [C, h, w].
    fn tied_logits<B: Backend>(c: usize, h: usize, w: usize) -> Tensor<B, 3> {
        let values = (0..c * h * w).map(|i| ((i * 7919) % 5) as f32).collect();
        Tensor::from_data(TensorData::new(values, [c, h, w]), &Default::default())
    }

    fn ints<B: Backend>(t: Tensor<B, 2, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().to_vec().unwrap()
    }

    fn argmax_matches_the_full_resize<B: Backend>() {
        let sizes = [
            (21, 7, 9, 23, 31),
            (21, 30, 20, 11, 7),
            (8, 5, 5, 9, 9),
            (1, 3, 4, 6, 8),
            (151, 4, 6, 13, 5),
        ];
        for (c, h, w, height, width) in sizes {
            let random = Tensor::random([c, h, w], Distribution::Default, &Default::default());
            for logits in [tied_logits::<B>(c, h, w), random] {
                let full = resize_logits(logits.clone(), height, width).argmax(0);
                let running = upsampled_argmax(logits, height, width);
                assert_eq!(running.dims(), [height, width]);
                assert_eq!(
                    ints(running),
                    ints(full.squeeze_dim::<2>(0)),
                    "{c} channels {h}x{w} -> {height}x{width}"
                );
            }
        }
    }

    #[test]
    fn running_argmax_equals_the_argmax_of_the_full_resize() {
        argmax_matches_the_full_resize::<Flex>();
        argmax_matches_the_full_resize::<NdArray>();
    }

    fn picture(width: usize, height: usize) -> RgbImage {
        let pixels = (0..width * height * 3)
            .map(|i| (i * 31 % 256) as u8)
            .collect();
        RgbImage::new(width, height, pixels).unwrap()
    }

    /// Every picture size segments, thin ones below one patch at working size included.
    #[test]
    fn thin_and_tiny_pictures_get_a_label_map_of_their_size() {
        let device = Default::default();
        let model = OvsegConfig::tiny().init_inference::<Flex>(&device);
        let classes = Tensor::<Flex, 2>::random([3, 32], Distribution::Normal(0.0, 1.0), &device);
        let classes = normalize(classes);
        let paper = model.segment_options(None);
        // Working size and window below one patch too (the window is taken as one patch).
        let small = SegmentOptions {
            short_side: 8,
            max_long_side: 8,
            window: 8,
            stride: 4,
            ..paper.clone()
        };
        let cases = [
            (1, 5000, &paper),
            (5000, 1, &paper),
            (3, 2000, &paper),
            (2000, 3, &paper),
            (1, 1, &paper),
            (1, 1, &small),
            (40, 3, &small),
        ];
        for (w, h, options) in cases {
            let result = model.segment(&picture(w, h), classes.clone(), options);
            assert_eq!(result.labels.dims(), [h, w], "{w}x{h}");
            assert!(result.label_values().iter().all(|&l| l < 4), "{w}x{h}");
            let (ww, wh) = working_size(w, h, options.short_side, options.max_long_side);
            assert_eq!(result.working_logits.dims(), [4, wh, ww], "{w}x{h}");
        }
    }
}
