//! The three training losses (docs/architecture.md, "Training"), ovseg's optional group naming, and
//! the training-step forward that combines them.

mod contrastive;
mod group_naming;
mod hungarian;
mod mask_consistency;
mod step;

pub use crate::nn::{GatherAll, LocalGather, RandomStream};
pub use contrastive::contrastive_loss;
pub use group_naming::group_naming_loss;
pub use hungarian::min_cost_assignment;
pub use mask_consistency::{mask_consistency_loss, MaskLossInputs};
pub use step::{
    CrossPair, GroupNaming, LossOptions, Losses, TextInput, TrainBatch, ENTITY_WEIGHT, MASK_WEIGHT,
};
