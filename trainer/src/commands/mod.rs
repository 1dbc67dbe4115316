pub mod bench;
pub mod convert;
pub mod eval;
pub mod index;
pub mod segment;
