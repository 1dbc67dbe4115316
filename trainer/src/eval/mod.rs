//! Zero-shot evaluation: benchmark readers, the mIoU loop (also the hook training calls) and
//! ImageNet classification.

pub mod datasets;
pub mod imagenet;
pub mod labels;
pub mod run;
