use burn::module::{Param, RunningState};
use burn::prelude::*;

use super::{BatchStats, GatherAll};

/// BatchNorm1d over rows of a [N, C] tensor, with the mode chosen by the caller rather than by
/// whether autodiff is on: the reference computes its losses (and the fixtures their gradients)
/// in eval mode, with running statistics, while gradients flow.
///
/// Training mode normalises with the batch statistics (biased variance) and updates the running
/// ones with PyTorch's rule (unbiased variance, `momentum` 0.1).
#[derive(Config, Debug)]
pub struct BatchNorm1dConfig {
    pub num_features: usize,
    #[config(default = 1e-5)]
    pub epsilon: f64,
    #[config(default = 0.1)]
    pub momentum: f64,
}

#[derive(Module, Debug)]
pub struct BatchNorm1d<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
    pub beta: Param<Tensor<B, 1>>,
    pub running_mean: RunningState<Tensor<B, 1>>,
    pub running_var: RunningState<Tensor<B, 1>>,
    pub epsilon: f64,
    pub momentum: f64,
}

impl BatchNorm1dConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> BatchNorm1d<B> {
        let n = self.num_features;
        BatchNorm1d {
            gamma: Param::from_tensor(Tensor::ones([n], device)),
            beta: Param::from_tensor(Tensor::zeros([n], device)),
            running_mean: RunningState::new(Tensor::zeros([n], device)),
            running_var: RunningState::new(Tensor::ones([n], device)),
            epsilon: self.epsilon,
            momentum: self.momentum,
        }
    }
}

impl<B: Backend> BatchNorm1d<B> {
    pub fn forward(&self, x: Tensor<B, 2>, training: bool) -> Tensor<B, 2> {
        self.forward_with(x, BatchStats::new(training))
    }

    pub fn forward_with(&self, x: Tensor<B, 2>, stats: BatchStats<'_, B>) -> Tensor<B, 2> {
        let device = x.device();
        let (mean, var) = match stats {
            BatchStats::Batch(collective) => {
                let (mean, var, rows) = batch_statistics(x.clone(), collective);
                let unbiased = var.clone().detach() * (rows as f64 / (rows.max(2) - 1) as f64);
                let m = self.momentum;
                let running_mean = self.running_mean.value_sync().to_device(&device) * (1.0 - m)
                    + mean.clone().detach().squeeze_dim::<1>(0) * m;
                let running_var = self.running_var.value_sync().to_device(&device) * (1.0 - m)
                    + unbiased.squeeze_dim::<1>(0) * m;
                self.running_mean.update(running_mean);
                self.running_var.update(running_var);
                (mean, var)
            }
            BatchStats::Running => {
                let mean = self
                    .running_mean
                    .value()
                    .to_device(&device)
                    .unsqueeze_dim(0);
                let var = self.running_var.value().to_device(&device).unsqueeze_dim(0);
                (mean, var)
            }
        };
        let x = (x - mean) / (var + self.epsilon).sqrt();
        x * self.gamma.val().unsqueeze_dim(0) + self.beta.val().unsqueeze_dim(0)
    }
}

impl<B: Backend> BatchNorm1d<B> {
    /// The running statistics as they are now (mean, variance).
    pub fn running(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        (
            self.running_mean.value_sync(),
            self.running_var.value_sync(),
        )
    }

    /// Puts back statistics taken with [`Self::running`] (a training step that is dropped
    /// must not leave its batch statistics behind).
    pub fn restore_running(&self, (mean, var): (Tensor<B, 1>, Tensor<B, 1>)) {
        self.running_mean.update(mean);
        self.running_var.update(var);
        self.running_mean.value_sync();
        self.running_var.value_sync();
    }
}

/// Mean and biased variance [1, C] over the rows of every device, and the global row count.
/// On several devices this is SyncBatchNorm: the sums are all-reduced with their gradients.
fn batch_statistics<B: Backend>(
    x: Tensor<B, 2>,
    collective: &dyn GatherAll<B>,
) -> (Tensor<B, 2>, Tensor<B, 2>, usize) {
    let rows = x.dims()[0];
    if collective.world_size() == 1 {
        let mean = x.clone().mean_dim(0);
        let var = (x - mean.clone()).square().mean_dim(0);
        return (mean, var, rows);
    }
    // Every device holds the same number of rows (the global batch is split evenly).
    let total = rows * collective.world_size();
    let mean = collective.sum_all(x.clone().sum_dim(0)) / total as f64;
    let var = collective.sum_all((x - mean.clone()).square().sum_dim(0)) / total as f64;
    (mean, var, total)
}
