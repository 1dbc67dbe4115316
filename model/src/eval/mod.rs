//! Evaluation arithmetic shared by every front end (docs/cli.md, "ovseg eval"): mIoU accumulated
//! over a dataset, pixel and mean accuracy, and zero-shot classification accuracy.

mod classification;
mod metrics;

pub use classification::TopK;
pub use metrics::{IouAccumulator, LabelTransform, SegmentationScores, IGNORE_INDEX};
