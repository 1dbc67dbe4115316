use burn::prelude::*;

use super::Draws;

/// Stochastic depth (timm's `drop_path`): in training, zero a sample's residual branch with
/// probability `rate` and scale the survivors by 1 / (1 - rate). Identity in inference, and at
/// rate 0 (which draws nothing).
pub fn drop_path<B: Backend>(x: Tensor<B, 3>, rate: f64, draws: Draws<'_>) -> Tensor<B, 3> {
    if rate <= 0.0 {
        return x;
    }
    let keep = 1.0 - rate;
    let [b, _, _] = x.dims();
    match draws.keep_mask::<B>(b, keep, &x.device()) {
        Some(mask) => x * mask / keep,
        None => x,
    }
}
