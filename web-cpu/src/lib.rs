//! The page's CPU-only build: `ovseg-web`'s wasm-bindgen surface without the WebGPU backend, so
//! a browser without WebGPU downloads a fraction of the code (docs/benchmarks.md, "Browser budgets").

#[cfg(target_arch = "wasm32")]
pub use ovseg_web::*;
