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
    config.check()?;
    if steps == 0 {
        return Err("at least one timed step is needed".into());
    }
    B::seed(device, config.seed);
    let mut model: Model<B> = config.model.init(device);
    let mut optim = build_optimizer::<B>(config);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let [n, side] = [config.batch_size, config.crop];
    let images = Tensor::<B, 4>::random([n, 1, side, side], Distribution::Uniform(0.0, 1.0), device);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 7).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), device);
    let mut step_seconds = Vec::with_capacity(steps);
    for step in 0..warmup + steps {
        let started = Instant::now();
        let loss = loss_fn.forward(model.forward(images.clone()), targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(config.lr, model, grads);
        B::sync(device).map_err(|e| format!("device sync failed: {e:?}"))?;
        if step >= warmup {
            step_seconds.push(started.elapsed().as_secs_f64());
        }
    }
    let median_step_seconds = median(&step_seconds);
    Ok(TrainBench {
        model: config.model.name().to_string(),
        batch_size: n,
        crop: side,
        warmup_steps: warmup,
        median_img_per_s: n as f64 / median_step_seconds.max(1e-12),
        median_step_seconds,
        step_seconds,
    })
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
