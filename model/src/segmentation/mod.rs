//! Zero-shot segmentation (docs/architecture.md, "Inference"): prompt-ensembled class embeddings,
//! short side 448, 448/224 sliding window, group-to-class affinity with the top-5 filter and
//! background rule; the [`Request`] every front end validates its words and settings with,
//! its limits, and the VOC palette labels are coloured with.

mod classes;
mod labels;
mod palette;
mod preprocess;
mod request;
mod vocab;
mod window;

pub use classes::ClassEmbedder;
pub use labels::parse_labels;
pub use palette::{voc_color, voc_palette};
pub use preprocess::{prepare_image, working_size, ImageNorm, RgbImage};
pub use request::{
    check_bg_thresh, check_picture_size, parse_words, rgba_picture, Request, RequestError,
    BACKGROUND, MAX_BYTE_LABELS, MAX_LABELS, MAX_PIXELS,
};
pub use vocab::{DatasetVocab, TemplateSet, Vocab};
pub use window::{SegmentOptions, Segmentation, WindowLogits};
