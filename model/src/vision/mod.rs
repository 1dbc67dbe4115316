//! GroupViT image encoder (docs/architecture.md, "The image encoder").

mod assign;
mod group_vit;
mod grouping;

pub use assign::{AssignAttention, AssignAttentionConfig, Assignment};
pub use group_vit::{GroupVit, GroupVitOutput, GroupingLayer, PatchEmbed};
pub use grouping::{GroupingBlock, GroupingBlockConfig, GroupingOutput};
