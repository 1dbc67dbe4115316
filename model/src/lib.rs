//! OVSegmentor (CVPR 2023) in burn: open-vocabulary semantic segmentation learned from
//! image-caption pairs. Generic over burn's `Backend`; builds natively and for wasm32.
//!
//! - [`vision`]: the GroupViT image encoder, [`text`]: BERT and its tokenizer,
//!   [`heads`]: projection heads, [`model`]: the assembled [`OvSegmentor`],
//! - [`losses`]: matching, masked-entity and cross-image mask-consistency losses,
//! - [`segmentation`]: zero-shot segmentation with prompt-ensembled class embeddings, and the
//!   [`segmentation::Request`] every front end validates its words and settings with,
//! - [`formats`]: which kind of model file a file is, and building the model from it,
//! - [`import`] (feature `import`): released PyTorch checkpoints and HuggingFace BERT weights.

pub mod checksum;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod formats;
pub mod heads;
pub mod losses;
pub mod model;
pub mod nn;
pub mod pack;
pub mod record;
pub mod segmentation;
pub mod share;
pub mod text;
pub mod vision;

#[cfg(feature = "import")]
pub mod import;

pub use config::{ImageConfig, OvsegConfig, TextConfig};
pub use error::OvsegError;
pub use model::OvSegmentor;
