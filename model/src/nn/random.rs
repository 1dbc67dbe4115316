//! Where a forward takes its random draws (Gumbel noise, drop-path) from. Training draws from a
//! [`RandomStream`]: every value is a hash of (run seed, step, the sample's index in the global
//! batch, the draw's number in the forward, the value's index in the sample), computed on the
//! host and uploaded, so a sample gets the same noise on whichever device or gradient-
//! accumulation micro-batch it lands, and a resumed run draws what the uninterrupted one did
//! (docs/training.md, "What a step sees").

use std::cell::Cell;

use burn::prelude::*;
use burn::tensor::Distribution;

/// Random draws of one training forward over `first_sample..first_sample + B` of the global
/// batch. Draws are numbered in the order the forward makes them, which is the same on every
/// device, so one stream must serve exactly one forward.
#[derive(Debug)]
pub struct RandomStream {
    key: u64,
    first_sample: u64,
    draws: Cell<u64>,
}

/// SplitMix64's increment and finaliser (Steele et al. 2014): a bijective 64-bit mix.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One 64-bit key from several words, each mixed in turn.
fn hash(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(GAMMA, |h, &w| mix(h ^ w).wrapping_add(GAMMA))
}

impl RandomStream {
    /// The draws of training step `step` for the rows that start at `first_sample` of the
    /// global batch.
    pub fn new(seed: u64, step: u64, first_sample: u64) -> Self {
        Self {
            key: hash(&[seed, step]),
            first_sample,
            draws: Cell::new(0),
        }
    }

    /// The next draw: uniform values in (0, 1) of `shape`, whose first axis is the sample.
    /// Value `j` of row `i` is SplitMix64 output `j` of the key (seed, step, first_sample + i,
    /// draw), its top 24 bits centred in their interval: never 0 nor 1.
    pub fn uniform_values(&self, shape: &[usize]) -> Vec<f32> {
        let draw = self.draws.replace(self.draws.get() + 1);
        let per_sample: usize = shape[1..].iter().product();
        let mut values = Vec::with_capacity(shape[0] * per_sample);
        for i in 0..shape[0] as u64 {
            let key = hash(&[self.key, self.first_sample + i, draw]);
            values.extend((1..=per_sample as u64).map(|j| {
                let bits = mix(key.wrapping_add(j.wrapping_mul(GAMMA))) >> 40;
                (bits as f32 + 0.5) / (1u64 << 24) as f32
            }));
        }
        values
    }

    /// [`Self::uniform_values`] as a tensor on `device`.
    pub fn uniform<B: Backend, const D: usize>(
        &self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(self.uniform_values(&shape), shape), device)
    }
}

/// How a forward runs: inference (no draws), or training with its draws from the backend's
/// generator (ad-hoc forwards) or from a [`RandomStream`] (the trainer's step).
#[derive(Debug, Clone, Copy)]
pub enum Draws<'a> {
    Inference,
    Backend,
    Stream(&'a RandomStream),
}

impl<'a> Draws<'a> {
    /// The old `training` flag: training draws from the backend's generator.
    pub fn from_training(training: bool) -> Self {
        if training {
            Draws::Backend
        } else {
            Draws::Inference
        }
    }

    /// Training with `stream` when given, else with the backend's generator.
    pub fn training(stream: Option<&'a RandomStream>) -> Self {
        stream.map_or(Draws::Backend, Draws::Stream)
    }

    pub fn is_training(&self) -> bool {
        !matches!(self, Draws::Inference)
    }

    /// Uniform noise in (0, 1) shaped like `like` (first axis: the sample); `None` in inference.
    pub fn uniform_like<B: Backend, const D: usize>(
        &self,
        like: &Tensor<B, D>,
    ) -> Option<Tensor<B, D>> {
        match self {
            Draws::Inference => None,
            Draws::Backend => Some(like.random_like(Distribution::Uniform(1e-10, 1.0))),
            Draws::Stream(s) => Some(s.uniform(like.dims(), &like.device())),
        }
    }

    /// A [B, 1, 1] mask of ones (probability `keep`) and zeros; `None` in inference.
    pub fn keep_mask<B: Backend>(
        &self,
        samples: usize,
        keep: f64,
        device: &B::Device,
    ) -> Option<Tensor<B, 3>> {
        let shape = [samples, 1, 1];
        match self {
            Draws::Inference => None,
            Draws::Backend => Some(Tensor::random(shape, Distribution::Bernoulli(keep), device)),
            Draws::Stream(s) => {
                let mask = s
                    .uniform_values(&shape)
                    .into_iter()
                    .map(|u| f32::from(u8::from((u as f64) < keep)))
                    .collect();
                Some(Tensor::from_data(TensorData::new(mask, shape), device))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_samples_draws_depend_on_its_global_index_not_on_its_batch() {
        let whole = RandomStream::new(7, 3, 0);
        let (a, b) = (whole.uniform_values(&[4, 5]), whole.uniform_values(&[4, 2]));
        let tail = RandomStream::new(7, 3, 2);
        assert_eq!(tail.uniform_values(&[2, 5]), a[10..]);
        assert_eq!(tail.uniform_values(&[2, 2]), b[4..]);
        // Another step, seed or draw gives other values, all inside (0, 1).
        assert_ne!(RandomStream::new(7, 4, 0).uniform_values(&[4, 5]), a);
        assert_ne!(RandomStream::new(8, 3, 0).uniform_values(&[4, 5]), a);
        assert_ne!(a[..2], b[..2], "each draw has values of its own");
        assert!(a.iter().chain(&b).all(|&u| u > 0.0 && u < 1.0));
        let many = RandomStream::new(0, 0, 0).uniform_values(&[1, 100_000]);
        let mean = many.iter().map(|&u| u as f64).sum::<f64>() / many.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    }
}
