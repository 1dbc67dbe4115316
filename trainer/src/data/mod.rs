//! Image-caption data on disk: the index `ovseg index` builds from a meta-file.

pub mod index;
