pub mod bench;
pub mod convert;
pub mod eval;
pub mod export_web;
pub mod index;
pub mod orchestrator;
pub mod segment;
pub mod synth;
pub mod train;

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::Backend;
use ovseg_model::text::TextTokenizer;
use ovseg_model::OvSegmentor;

use crate::backend::DeviceKind;
use crate::model_io::load_model;

/// The model options `segment` and `eval` share.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Model: a file written by `ovseg convert`, or a released .pth with --config.
    #[arg(long)]
    pub model: PathBuf,
    /// Model configuration, needed with a .pth checkpoint: a JSON file or a preset name
    /// (paper, vits-roberta, ...).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// tokenizer.json to use instead of the one stored with the model (needed with a RoBERTa
    /// .pth; a model without one uses the built-in uncased BERT tokenizer).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Segmentation window and short side in pixels (stride: half of it). Default: the model
    /// configuration's `segment_window`, else twice its training size (the paper's 448).
    #[arg(long, value_parser = parse_window)]
    pub window: Option<usize>,
}

fn parse_window(text: &str) -> Result<usize, String> {
    let w: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of pixels"))?;
    if w < 32 || w % 16 != 0 || w > 2048 {
        return Err(format!(
            "{w}: the window must be a multiple of the patch size 16 between 32 and 2048"
        ));
    }
    Ok(w)
}

impl ModelArgs {
    /// The model and its tokenizer, loaded once for the whole run.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<(OvSegmentor<B>, TextTokenizer)> {
        let loaded = load_model::<B>(
            &self.model,
            self.config.as_deref(),
            self.tokenizer.as_deref(),
            device,
        )?;
        Ok((loaded.model, loaded.tokenizer))
    }
}
