use burn::prelude::*;

use super::TemplateSet;
use crate::error::OvsegError;
use crate::model::{normalize, OvSegmentor};
use crate::text::TextTokenizer;

/// Turns class names into the [K, output_dim] normalised text classifier of docs/architecture.md,
/// "Inference", step 1: every prompt through the text encoder and projector, mean over templates,
/// L2-normalise.
pub struct ClassEmbedder<'a> {
    pub tokenizer: &'a TextTokenizer,
    pub templates: TemplateSet,
    /// Prompts encoded per forward pass (bounds memory with the 80-template set).
    pub chunk: usize,
}

impl<'a> ClassEmbedder<'a> {
    pub fn new(tokenizer: &'a TextTokenizer, templates: TemplateSet) -> Self {
        Self {
            tokenizer,
            templates,
            chunk: 256,
        }
    }

    pub fn embed<B: Backend>(
        &self,
        model: &OvSegmentor<B>,
        classes: &[String],
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, OvsegError> {
        if classes.is_empty() {
            return Err(OvsegError::Input("no class names".into()));
        }
        let prompts = self.templates.prompts(classes);
        let per_class = prompts.len() / classes.len();
        let mut projected = Vec::new();
        for chunk in prompts.chunks(self.chunk.max(1)) {
            let batch = self.tokenizer.encode_longest(chunk)?;
            let (ids, mask) = batch.to_tensors::<B>(device);
            projected.push(model.encode_text(ids, mask, false));
        }
        let projected = Tensor::cat(projected, 0);
        let d = projected.dims()[1];
        let mean = projected
            .reshape([classes.len(), per_class, d])
            .mean_dim(1)
            .reshape([classes.len(), d]);
        Ok(normalize(mean))
    }
}
