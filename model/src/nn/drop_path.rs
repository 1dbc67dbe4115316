use burn::prelude::*;
use burn::tensor::Distribution;

/// Stochastic depth (timm's `drop_path`): in training, zero a sample's residual branch with
/// probability `rate` and scale the survivors by 1 / (1 - rate). Identity otherwise.
pub fn drop_path<B: Backend>(x: Tensor<B, 3>, rate: f64, training: bool) -> Tensor<B, 3> {
    if !training || rate <= 0.0 {
        return x;
    }
    let keep = 1.0 - rate;
    let [b, _, _] = x.dims();
    let mask = Tensor::<B, 3>::random([b, 1, 1], Distribution::Bernoulli(keep), &x.device());
    x * mask / keep
}
