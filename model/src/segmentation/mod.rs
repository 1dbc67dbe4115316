//! Zero-shot segmentation (docs/architecture.md, "Inference"): prompt-ensembled class embeddings,
//! short side 448, 448/224 sliding window, group-to-class affinity with the top-5 filter and
//! background rule.

mod classes;
mod labels;
mod preprocess;
mod vocab;
mod window;

pub use classes::ClassEmbedder;
pub use labels::parse_labels;
pub use preprocess::{prepare_image, working_size, ImageNorm, RgbImage};
pub use vocab::{DatasetVocab, TemplateSet, Vocab};
pub use window::{SegmentOptions, Segmentation, WindowLogits};
