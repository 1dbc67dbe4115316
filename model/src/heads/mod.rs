//! Projection heads into the joint space and the multimodal block of the masked-entity loss.

mod multimodal;
mod project_mlp;

pub use multimodal::{MultimodalBlock, MultimodalBlockConfig, MultimodalGrouping};
pub use project_mlp::{ProjectMlp, ProjectMlpConfig};
