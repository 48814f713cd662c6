//! Training-step throughput: the reference step (forward, backward, clamp, SGD) timed alone.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, TensorData};
use fer_models::Model;

use crate::TrainConfig;
use crate::train::build_optimizer;

/// Timings of [`bench_train_steps`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainBench {
    /// Model preset name.
    pub model: String,
    /// Images per step.
    pub batch_size: usize,
    /// Side of the square input crops.
    pub crop: usize,
    /// Untimed warm-up steps (kernel compilation and autotuning on GPUs happen here).
    pub warmup_steps: usize,
    /// Seconds of each timed step, device synchronised after each.
    pub step_seconds: Vec<f64>,
    /// Median step time.
    pub median_step_seconds: f64,
    /// `batch_size / median_step_seconds`.
    pub median_img_per_s: f64,
}

/// Times `steps` training steps of `config.model` after `warmup` untimed ones: forward in
/// training mode, cross-entropy, backward, the run's optimiser (clamp, weight decay, momentum)
/// and its learning rate. Inputs are fixed random crops, so data loading (which [`crate::train`]
/// overlaps with compute on a loader thread) is not part of the figure.
pub fn bench_train_steps<B: AutodiffBackend>(
    config: &TrainConfig,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<TrainBench, String> {
    if steps == 0 {
        return Err("at least one timed step is needed".into());
    }
    let mut step = TrainStep::<B>::new(config, device)?;
    let mut step_seconds = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let started = Instant::now();
        step.run()?;
        if i >= warmup {
            step_seconds.push(started.elapsed().as_secs_f64());
        }
    }
    let median_step_seconds = median(&step_seconds);
    Ok(TrainBench {
        model: config.model.name().to_string(),
        batch_size: config.batch_size,
        crop: config.crop,
        warmup_steps: warmup,
        median_img_per_s: config.batch_size as f64 / median_step_seconds.max(1e-12),
        median_step_seconds,
        step_seconds,
    })
}

/// One reference training step on fixed random crops, repeatable: what [`bench_train_steps`]
/// times, for other harnesses (criterion benches) to time their own way.
pub struct TrainStep<B: AutodiffBackend> {
    model: Option<Model<B>>,
    optim: crate::train::RunOptimizer<B>,
    loss_fn: burn::nn::loss::CrossEntropyLoss<B>,
    images: Tensor<B, 4>,
    targets: Tensor<B, 1, Int>,
    lr: f64,
    device: B::Device,
}

impl<B: AutodiffBackend> TrainStep<B> {
    /// A freshly initialised `config.model` (seeded by `config.seed`), its optimiser and one
    /// batch of `config.batch_size` random `config.crop`² crops.
    pub fn new(config: &TrainConfig, device: &B::Device) -> Result<TrainStep<B>, String> {
        config.check()?;
        B::seed(device, config.seed);
        let [n, side] = [config.batch_size, config.crop];
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 7).collect();
        Ok(TrainStep {
            model: Some(config.model.init(device)),
            optim: build_optimizer::<B>(config),
            loss_fn: CrossEntropyLossConfig::new().init(device),
            images: Tensor::random([n, 1, side, side], Distribution::Uniform(0.0, 1.0), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
            lr: config.lr,
            device: device.clone(),
        })
    }

    /// Forward in training mode, cross-entropy, backward, optimiser update; waits for the device.
    pub fn run(&mut self) -> Result<(), String> {
        let model = self.model.take().ok_or("a previous step failed")?;
        let loss = self.loss_fn.forward(model.forward(self.images.clone()), self.targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optim.step(self.lr, model, grads));
        B::sync(&self.device).map_err(|e| format!("device sync failed: {e:?}"))
    }
}

/// The median (mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use fer_models::ModelConfig;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn times_the_requested_steps() {
        let config = TrainConfig {
            batch_size: 4,
            ..TrainConfig::reference(ModelConfig::from_name("vgg-small").expect("known"))
        };
        let bench = bench_train_steps::<Autodiff<NdArray>>(&config, 1, 3, &Default::default()).expect("runs");
        assert_eq!(bench.step_seconds.len(), 3);
        assert_eq!(bench.warmup_steps, 1);
        assert!(bench.step_seconds.iter().all(|&s| s > 0.0));
        assert_eq!(bench.median_img_per_s, 4.0 / bench.median_step_seconds);
        let none = bench_train_steps::<Autodiff<NdArray>>(&config, 0, 0, &Default::default());
        assert!(none.expect_err("0 steps").contains("one timed step"));
    }
}
