//! Caption processing shared by training and data preparation.

pub mod entities;
