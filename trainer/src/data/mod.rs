//! Image-caption data: the entity index `ovseg index` builds from a meta-file, webdataset
//! shards, the training augmentations, and the parallel, deterministic batch loader.

pub mod augment;
pub mod batch;
pub mod config;
pub mod index;
pub mod loader;
pub mod released;
mod sample;
pub mod shards;
pub mod share;
pub mod skips;

pub use augment::Stage;
pub use batch::{Batch, DataPosition};
pub use config::DataConfig;
pub use index::EntityIndex;
pub use loader::{Batches, Loader, Source};
pub use share::{micro_batch_start, Share};
pub use skips::SkipCounts;
