//! The JavaScript surface of ovseg (wasm-bindgen), kept to this one file: load a model file,
//! segment RGBA pixels with comma-separated words. The work happens in [`engine`].

pub mod engine;

use wasm_bindgen::prelude::*;

use engine::{Engine, Request};

type Cpu = burn::backend::NdArray;

/// A loaded model, its tokenizer and the class embeddings computed so far.
#[wasm_bindgen]
pub struct Segmenter {
    engine: Engine<Cpu>,
}

#[wasm_bindgen]
impl Segmenter {
    /// `model`: the bytes of a file written by `ovseg convert`.
    #[wasm_bindgen(constructor)]
    pub fn new(model: &[u8]) -> Result<Segmenter, JsError> {
        let engine = Engine::new(model.to_vec(), &Default::default())
            .map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Segmenter { engine })
    }

    /// Label map (one byte a pixel, row-major; 0 = background when `background`) of an RGBA
    /// picture, e.g. `ImageData.data`.
    pub fn segment(
        &mut self,
        rgba: &[u8],
        width: usize,
        height: usize,
        labels: &str,
        background: bool,
        bg_thresh: f64,
        template: &str,
    ) -> Result<Vec<u8>, JsError> {
        let request = Request {
            labels,
            background,
            bg_thresh,
            template,
        };
        self.engine
            .segment_rgba(rgba, width, height, &request)
            .map_err(|e| JsError::new(&e.to_string()))
    }
}
