//! GroupViT image encoder (SPEC section 1).

mod assign;
mod group_vit;
mod grouping;

pub use assign::{AssignAttention, AssignAttentionConfig, Assignment};
pub use group_vit::{GroupVit, GroupVitOutput, GroupingLayer, PatchEmbed};
pub use grouping::{GroupingBlock, GroupingBlockConfig, GroupingOutput};
