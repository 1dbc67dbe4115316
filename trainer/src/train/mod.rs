//! `ovseg train`: the paper's two-stage recipe (SPEC sections 4-5) on one or several devices.

pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod optimizer;
pub mod replica;
pub mod run;
pub mod schedule;
pub mod source;
#[cfg(test)]
mod tests;
pub mod text_cache;
