//! Image-caption data: the entity index `ovseg index` builds from a meta-file, and the training
//! augmentations.

pub mod augment;
pub mod index;

pub use augment::Stage;
pub use index::EntityIndex;
