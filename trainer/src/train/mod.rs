//! `ovseg train`: the paper's two-stage recipe (docs/training.md, "Recipes") on one or several
//! devices.

pub mod bench;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod devices;
pub mod optimizer;
pub mod replica;
pub mod run;
pub mod schedule;
pub mod source;
#[cfg(test)]
mod tests;
pub mod text_cache;
