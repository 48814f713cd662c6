//! Training-step throughput: the reference step (forward, backward, clamp, SGD) timed alone, with
//! or without adversarial training's attack.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, TensorData};
use fer_models::Model;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::features_train::feature_optimizer;
use crate::train::{adversarial_loss, build_optimizer};
use crate::{AdversarialTraining, FeatureTrainConfig, TrainConfig};

/// Timings of [`bench_train_steps`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainBench {
    /// Model: preset name, or [`fer_models::ModelConfig::label`] for a custom config.
    pub model: String,
    /// Images per step.
    pub batch_size: usize,
    /// Side of the square input crops.
    pub crop: usize,
    /// Adversarial training's attack in each step ([`fer_adversarial::Attack::label`], e.g.
    /// `FGSM ε=0.3`, and the source of its examples), or `None` for clean steps. With an attack a
    /// step crafts the batch's examples and trains on the clean and the attacked batch, so
    /// [`TrainBench::median_img_per_s`] counts training faces, each used twice.
    #[serde(default)]
    pub adversarial: Option<String>,
    /// Warm-up steps, left out of the median (kernel compilation and autotuning on GPUs happen
    /// here).
    pub warmup_steps: usize,
    /// Seconds of each warm-up step, device synchronised after each: what a run pays once per
    /// process before its steps reach [`TrainBench::median_step_seconds`] (empty in reports
    /// written before this field existed).
    #[serde(default)]
    pub warmup_seconds: Vec<f64>,
    /// Seconds of each timed step, device synchronised after each.
    pub step_seconds: Vec<f64>,
    /// Median step time.
    pub median_step_seconds: f64,
    /// `batch_size / median_step_seconds`.
    pub median_img_per_s: f64,
}

/// Times `steps` training steps of `config.model` after `warmup` untimed ones: forward in
/// training mode, cross-entropy, backward, the run's optimiser (clamp, weight decay, momentum)
/// and its learning rate; with `config.adversarial`, the step of adversarial training as
/// [`crate::train`] runs it on one device (the attack on the batch from the configured source,
/// then the weighted loss of the clean and the attacked batch; the attack's ε ramp is not applied).
/// Inputs are fixed random crops, so data loading (which [`crate::train`] overlaps with compute on
/// a loader thread) is not part of the figure.
pub fn bench_train_steps<B: AutodiffBackend>(
    config: &TrainConfig,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<TrainBench, String> {
    let mut step = TrainStep::<B>::new(config, device)?;
    let (warmup_seconds, step_seconds) = time_steps(warmup, steps, || step.run())?;
    let mut bench =
        TrainBench::new(&config.model.label(), config.batch_size, config.crop, warmup_seconds, step_seconds);
    bench.adversarial = config.adversarial.as_ref().map(adversarial_label);
    Ok(bench)
}

/// Times `steps` training steps of the CNN + landmarks + HOG model `config.model` after `warmup`
/// untimed ones, as [`train_features`](crate::train_features) runs them: forward in training mode
/// on fixed random 48×48 faces and feature vectors of `config.feature_set`'s length, cross-entropy,
/// backward, SGD with momentum at `config.lr`. `name` labels the result (e.g. `cnn-hog-b`).
pub fn bench_feature_train_steps<B: AutodiffBackend>(
    name: &str,
    config: &FeatureTrainConfig,
    warmup: usize,
    steps: usize,
    device: &B::Device,
) -> Result<TrainBench, String> {
    config.check()?;
    B::seed(device, config.seed);
    let (n, side, len) = (config.batch_size, config.model.image_side, config.feature_set.len());
    let images = Tensor::<B, 4>::random([n, 1, side, side], Distribution::Uniform(0.0, 1.0), device);
    let features = Tensor::<B, 2>::random([n, len], Distribution::Normal(0.0, 1.0), device);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 7).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), device);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut model = Some(config.model.init::<B>(device));
    let mut optim = feature_optimizer::<B>(config);
    let (warmup_seconds, step_seconds) = time_steps(warmup, steps, || {
        let current = model.take().ok_or("a previous step failed")?;
        let logits = current.forward(images.clone(), features.clone());
        let grads = GradientsParams::from_grads(loss_fn.forward(logits, targets.clone()).backward(), &current);
        model = Some(optim.step(config.lr, current, grads));
        B::sync(device).map_err(|e| format!("device sync failed: {e:?}"))
    })?;
    Ok(TrainBench::new(name, n, side, warmup_seconds, step_seconds))
}

/// Seconds of the warm-up steps and of the timed ones.
type StepSeconds = (Vec<f64>, Vec<f64>);

/// Runs `step` `warmup + steps` times; the seconds of the first `warmup` and of the last `steps`.
fn time_steps(
    warmup: usize,
    steps: usize,
    mut step: impl FnMut() -> Result<(), String>,
) -> Result<StepSeconds, String> {
    if steps == 0 {
        return Err("at least one timed step is needed".into());
    }
    let mut seconds = Vec::with_capacity(warmup + steps);
    for _ in 0..warmup + steps {
        let started = Instant::now();
        step()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    let step_seconds = seconds.split_off(warmup);
    Ok((seconds, step_seconds))
}

impl TrainBench {
    fn new(
        model: &str,
        batch_size: usize,
        crop: usize,
        warmup_seconds: Vec<f64>,
        step_seconds: Vec<f64>,
    ) -> TrainBench {
        let median_step_seconds = median(&step_seconds);
        TrainBench {
            model: model.to_string(),
            batch_size,
            crop,
            adversarial: None,
            warmup_steps: warmup_seconds.len(),
            warmup_seconds,
            median_img_per_s: batch_size as f64 / median_step_seconds.max(1e-12),
            median_step_seconds,
            step_seconds,
        }
    }
}

/// `FGSM ε=0.3 (frozen)`: the attack and the model that crafts the examples, and ELLE's λ
/// (`FGSM ε=0.3 (frozen) + ELLE λ=5000`) when it has one.
fn adversarial_label(adv: &AdversarialTraining) -> String {
    let elle = adv.linearity_weight.map_or(String::new(), |lambda| format!(" + ELLE λ={lambda}"));
    format!("{} ({}){elle}", adv.attack.label(), adv.source.name())
}

/// One reference training step on fixed random crops (with `config.adversarial`, one step of
/// adversarial training), repeatable: what [`bench_train_steps`] times, for other harnesses
/// (criterion benches) to time their own way.
pub struct TrainStep<B: AutodiffBackend> {
    model: Option<Model<B>>,
    adversarial: Option<AdversarialTraining>,
    rng: ChaCha8Rng,
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
            adversarial: config.adversarial.clone(),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            optim: build_optimizer::<B>(config),
            loss_fn: CrossEntropyLossConfig::new().init(device),
            images: Tensor::random([n, 1, side, side], Distribution::Uniform(0.0, 1.0), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
            lr: config.lr,
            device: device.clone(),
        })
    }

    /// Forward in training mode, cross-entropy (with an attack: the attack, then the loss of the
    /// clean and the attacked batch), backward, optimiser update; waits for the device.
    pub fn run(&mut self) -> Result<(), String> {
        let model = self.model.take().ok_or("a previous step failed")?;
        // The training loop's own loss: cross-entropy, or with an attack the mixed loss.
        let (images, targets) = (self.images.clone(), self.targets.clone());
        let loss =
            adversarial_loss(self.adversarial.as_ref(), &model, images, targets, &self.loss_fn, &mut self.rng, false)
                .map_err(|e| e.to_string())?
                .loss;
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
        assert_eq!(bench.warmup_seconds.len(), 1);
        assert!(bench.step_seconds.iter().chain(&bench.warmup_seconds).all(|&s| s > 0.0));
        assert_eq!(bench.median_img_per_s, 4.0 / bench.median_step_seconds);
        let none = bench_train_steps::<Autodiff<NdArray>>(&config, 0, 0, &Default::default());
        assert!(none.expect_err("0 steps").contains("one timed step"));
    }

    #[test]
    fn times_feature_model_steps() {
        use fer_features::FeatureSet;
        use fer_models::CnnHogConfig;
        let set = FeatureSet::Landmarks;
        let config =
            FeatureTrainConfig { batch_size: 4, ..FeatureTrainConfig::reference(CnnHogConfig::tiny(set.len()), set) };
        let bench = bench_feature_train_steps::<Autodiff<NdArray>>("cnn-hog-tiny", &config, 1, 2, &Default::default())
            .expect("runs");
        assert_eq!((bench.model.as_str(), bench.batch_size, bench.crop), ("cnn-hog-tiny", 4, 48));
        assert_eq!(bench.step_seconds.len(), 2);
        assert_eq!(bench.median_img_per_s, 4.0 / bench.median_step_seconds);
        let wrong = FeatureTrainConfig { feature_set: FeatureSet::LandmarksWholeHog, ..config.clone() };
        let err = bench_feature_train_steps::<Autodiff<NdArray>>("x", &wrong, 0, 1, &Default::default());
        assert!(err.expect_err("feature length mismatch").contains("136 features"));
        let none = bench_feature_train_steps::<Autodiff<NdArray>>("x", &config, 0, 0, &Default::default());
        assert!(none.expect_err("0 steps").contains("one timed step"));
    }

    #[test]
    fn an_adversarial_step_trains_on_the_attacked_batch() {
        use fer_adversarial::Attack;
        use fer_models::{NormStatistics, VggConfig};
        type A = Autodiff<NdArray>;
        let device = Default::default();
        // Dropout off and the same weights and batch in every step: the backend's generator is
        // shared with tests running beside this one, so nothing here may draw from it.
        let Ok(ModelConfig::Vgg(vgg)) = ModelConfig::from_name("vgg-small") else { panic!("a VGG") };
        let net = ModelConfig::Vgg(VggConfig { dropout: 0.0, ..vgg });
        let clean = TrainConfig { batch_size: 4, ..TrainConfig::reference(net.clone()) };
        let initial: Model<A> = net.init(&device);
        let pixels: Vec<f32> = (0..4 * 44 * 44).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
        let images = Tensor::<A, 4>::from_data(TensorData::new(pixels, [4, 1, 44, 44]), &device);
        let with_weight = |weight: f64| TrainConfig {
            adversarial: Some(AdversarialTraining { weight, ..AdversarialTraining::new(Attack::fgsm(0.3)) }),
            ..clean.clone()
        };
        // The weights after one step, seen through a batch-statistics forward (the running
        // statistics also move with the attacked pass, so inference would differ anyway).
        let after_one_step = |config: &TrainConfig| {
            let mut step = TrainStep::<A>::new(config, &device).expect("config");
            (step.model, step.images) = (Some(initial.clone()), images.clone());
            step.run().expect("step");
            let probe = Tensor::<A, 4>::ones([2, 1, 44, 44], &device).mul_scalar(0.5);
            let model = step.model.take().expect("trained");
            model.forward_training(probe, NormStatistics::Batch, None).into_data().to_vec::<f32>().expect("f32")
        };
        let reference = after_one_step(&clean);
        assert_eq!(after_one_step(&with_weight(0.0)), reference, "weight 0: the attacked batch adds nothing");
        assert_ne!(after_one_step(&with_weight(0.5)), reference, "the attacked batch is trained on");

        let bench = bench_train_steps::<A>(&with_weight(0.5), 0, 1, &device).expect("runs");
        assert_eq!(bench.adversarial.as_deref(), Some("FGSM ε=0.300 (frozen)"));
        let elle = TrainConfig {
            adversarial: Some(AdversarialTraining {
                linearity_weight: Some(5000.0),
                ..AdversarialTraining::new(Attack::fgsm(0.3))
            }),
            ..clean.clone()
        };
        assert_ne!(after_one_step(&elle), after_one_step(&with_weight(0.5)), "the error is trained on");
        let bench = bench_train_steps::<A>(&elle, 0, 1, &device).expect("runs");
        assert_eq!(bench.adversarial.as_deref(), Some("FGSM ε=0.300 (frozen) + ELLE λ=5000"));
        assert_eq!(bench_train_steps::<A>(&clean, 0, 1, &device).expect("runs").adversarial, None);
    }
}
