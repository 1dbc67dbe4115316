//! The parts of `ovseg` that tests and the training loop use as a library: reading pictures and
//! the image-caption data pipeline.

pub mod data;
pub mod image_io;
