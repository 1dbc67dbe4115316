//! Mixed precision as PyTorch's `torch.autocast` does it: inside [`scope`], the matrix products
//! of linear layers and attention run in bf16 or f16, while parameters, normalisation,
//! softmax and losses stay in the parameters' precision (f32). Each product casts its inputs
//! down and its result back up; the casts are autodiff operations, so gradients reach the f32
//! parameters in f32 and the optimizer never sees a half-precision value. Like PyTorch's, the
//! setting is per thread: every training device runs on a thread of its own.

use std::cell::Cell;

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::FloatDType;

thread_local! {
    static COMPUTE: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Runs `f` with matrix products in `dtype` (`None`: in the inputs' own precision).
pub fn scope<R>(dtype: Option<FloatDType>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<FloatDType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE.set(self.0);
        }
    }
    let _restore = Restore(COMPUTE.replace(dtype));
    f()
}

/// The precision matrix products run in here, if autocast is on.
pub fn compute_dtype() -> Option<FloatDType> {
    COMPUTE.get()
}

/// `layer.forward(x)`, in the autocast precision when one is set.
pub fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let Some(low) = compute_dtype() else {
        return layer.forward(x);
    };
    let back: FloatDType = x.dtype().into();
    burn::tensor::module::linear(
        x.cast(low),
        layer.weight.val().cast(low),
        layer.bias.as_ref().map(|b| b.val().cast(low)),
    )
    .cast(back)
}

/// `a.matmul(b)`, in the autocast precision when one is set.
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let Some(low) = compute_dtype() else {
        return a.matmul(b);
    };
    let back: FloatDType = a.dtype().into();
    a.cast(low).matmul(b.cast(low)).cast(back)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::LinearConfig;
    use burn::tensor::DType;

    type B = Autodiff<Flex>;

    #[test]
    fn products_run_in_bf16_and_gradients_reach_f32_parameters() {
        let device = Default::default();
        let layer = LinearConfig::new(8, 4).init::<B>(&device);
        let x = Tensor::<B, 2>::from_data(
            TensorData::new((0..24).map(|i| (i as f32 * 0.37).sin()).collect(), [3, 8]),
            &device,
        );
        let full = linear(&layer, x.clone());
        let (half, in_scope) = scope(Some(FloatDType::BF16), || {
            (linear(&layer, x.clone()), compute_dtype())
        });
        assert_eq!(in_scope, Some(FloatDType::BF16));
        assert_eq!(compute_dtype(), None, "the scope ends with its closure");
        assert_eq!(half.dtype(), DType::F32, "results come back in f32");
        let (f, h): (Vec<f32>, Vec<f32>) = (
            full.clone().into_data().to_vec().unwrap(),
            half.clone().into_data().to_vec().unwrap(),
        );
        let mut exact = true;
        for (a, b) in f.iter().zip(&h) {
            // bf16 keeps 8 bits of mantissa: a relative error of about 2^-8 per product.
            assert!((a - b).abs() <= 2e-2 * a.abs().max(0.5), "{a} vs {b}");
            exact &= a == b;
        }
        assert!(!exact, "the product really ran in bf16");

        let grads = half.sum().backward();
        let g = layer.weight.grad(&grads).expect("weight gradient");
        assert_eq!(g.dtype(), DType::F32);
        let g_full = layer.weight.grad(&full.sum().backward()).unwrap();
        let (g, g_full): (Vec<f32>, Vec<f32>) = (
            g.into_data().to_vec().unwrap(),
            g_full.into_data().to_vec().unwrap(),
        );
        for (a, b) in g.iter().zip(&g_full) {
            assert!((a - b).abs() <= 2e-2 * b.abs().max(0.5), "{a} vs {b}");
        }
    }
}
