//! The parts of `ovseg` usable as a library: reading pictures, the image-caption data pipeline,
//! training ([`train::run::train`]) and zero-shot evaluation ([`eval`]). The `ovseg` binary
//! (`src/main.rs`, `src/commands/`) is the command line over them.

pub mod data;
pub mod eval;
pub mod files;
pub mod image_io;
pub mod overlay;
pub mod train;
