//! The three training losses (SPEC section 4) and the training-step forward that combines them.

mod contrastive;
mod hungarian;
mod mask_consistency;
mod step;

pub use crate::nn::{GatherAll, LocalGather};
pub use contrastive::contrastive_loss;
pub use hungarian::min_cost_assignment;
pub use mask_consistency::{mask_consistency_loss, MaskLossInputs};
pub use step::{CrossPair, LossOptions, Losses, TextInput, TrainBatch, ENTITY_WEIGHT, MASK_WEIGHT};
