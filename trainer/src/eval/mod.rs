//! Zero-shot evaluation: benchmark readers, the mIoU loop (also the hook training calls) and
//! ImageNet classification; the image-level segmentation baseline.

pub mod baseline;
pub mod datasets;
pub mod imagenet;
pub mod labels;
pub mod run;
