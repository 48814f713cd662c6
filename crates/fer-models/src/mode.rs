//! Training vs inference behaviour of BatchNorm and dropout, chosen explicitly.
//!
//! Burn 0.21 picks the behaviour from the backend: `BatchNorm` and `Dropout` act in training
//! mode whenever the backend records gradients (`Autodiff<_>`), whatever the caller wants. An
//! attack needs the opposite combination: gradients with respect to the *input* of a model that
//! behaves as at inference (running statistics, no dropout, no running-statistic update). The
//! functions here give that on every backend.

use burn::nn::{BatchNorm, Dropout};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::running::{running_value, update_running};

/// What BatchNorm does in a *training* forward pass (an autodiff backend; dropout stays on).
///
/// Adversarial training runs two training forward passes per step, one on clean and one on
/// attacked faces. With [`NormStatistics::BatchUpdate`] (Burn's and PyTorch's training behaviour,
/// and the reference's) both move the running statistics that inference later uses, so a model
/// trained against large perturbations is evaluated on clean faces with statistics partly taken
/// from perturbed ones. The two other choices keep the running statistics to clean batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormStatistics {
    /// Normalise with the batch's mean and biased variance and move the running statistics
    /// towards them (momentum of the layer).
    #[default]
    BatchUpdate,
    /// Normalise with the batch's statistics; leave the running statistics unchanged.
    Batch,
    /// Normalise with the running statistics, as at inference, and leave them unchanged;
    /// gradients still reach γ, β and the input.
    Running,
}

impl NormStatistics {
    /// Every choice, in the order of the docs.
    pub const ALL: [NormStatistics; 3] = [NormStatistics::BatchUpdate, NormStatistics::Batch, NormStatistics::Running];

    /// The name the CLI and `config.json` use: `batch-update`, `batch` or `running`.
    pub fn name(self) -> &'static str {
        match self {
            NormStatistics::BatchUpdate => "batch-update",
            NormStatistics::Batch => "batch",
            NormStatistics::Running => "running",
        }
    }
}

impl std::str::FromStr for NormStatistics {
    type Err = String;
    fn from_str(s: &str) -> Result<NormStatistics, String> {
        let lower = s.to_ascii_lowercase();
        NormStatistics::ALL
            .into_iter()
            .find(|n| n.name() == lower)
            .ok_or_else(|| format!("unknown BatchNorm statistics `{s}` (expected batch-update, batch or running)"))
    }
}

/// How BatchNorm and dropout behave in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Burn's choice of training vs inference: on autodiff backends training behaviour, inference
    /// behaviour otherwise.
    Backend {
        /// What BatchNorm does.
        statistics: NormStatistics,
        /// Where dropout masks come from: `None`, the backend's generator (Burn's `Dropout`);
        /// `Some(seed)`, a generator seeded here (see [`dropout`]).
        dropout_seed: Option<u64>,
    },
    /// Inference behaviour on every backend.
    Inference,
}

impl Mode {
    /// Burn's own behaviour: BatchNorm with [`NormStatistics::BatchUpdate`], Burn's dropout.
    pub(crate) const BURN: Mode = Mode::training(NormStatistics::BatchUpdate, None);

    /// [`Mode::Backend`] with these statistics and dropout masks.
    pub(crate) const fn training(statistics: NormStatistics, dropout_seed: Option<u64>) -> Mode {
        Mode::Backend { statistics, dropout_seed }
    }
}

/// How BatchNorm with batch statistics is recorded for autodiff on Burn's GPU backends
/// (`Autodiff<Cuda>`, `Autodiff<Wgpu>`, with fer-models' features `cuda` / `wgpu`): a
/// process-wide choice, [`set_gpu_batch_norm`]. Values and gradients are the same up to float
/// rounding either way (tested against Burn's `BatchNorm`); burn-flex always runs fer-models' own
/// kernel and ndarray the composed formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuBatchNorm {
    /// One autodiff operation over the inner backend's tensor operations, with the closed-form
    /// backward step: two per-channel sums forward (mean, variance), two backward (`Σ dy`,
    /// `Σ dy · x̂`), the rest element-wise for Burn's fusion (the default).
    #[default]
    Operation,
    /// The formula composed from Burn tensor operations, each an autodiff node, each broadcast
    /// reducing its gradient over N and H·W: what fer-models did before `Operation`, kept to
    /// measure one against the other (`fer bench-train --gpu-batch-norm composed`).
    Composed,
}

/// Whether [`GpuBatchNorm::Composed`] was chosen.
static GPU_BATCH_NORM_COMPOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets how BatchNorm with batch statistics runs on Burn's GPU backends from now on, for every
/// thread (see [`GpuBatchNorm`]).
pub fn set_gpu_batch_norm(choice: GpuBatchNorm) {
    GPU_BATCH_NORM_COMPOSED.store(choice == GpuBatchNorm::Composed, std::sync::atomic::Ordering::Relaxed);
}

/// The current [`GpuBatchNorm`] choice.
pub fn gpu_batch_norm() -> GpuBatchNorm {
    if GPU_BATCH_NORM_COMPOSED.load(std::sync::atomic::Ordering::Relaxed) {
        GpuBatchNorm::Composed
    } else {
        GpuBatchNorm::Operation
    }
}

/// `norm` applied in `mode`, with Burn's `BatchNorm` semantics.
///
/// Training (autodiff backend, `Mode::Backend`): normalise with the batch's mean and biased
/// variance over N, H and W, update the running statistics with the layer's momentum (unless
/// [`NormStatistics::Batch`]), and scale by γ, shift by β. Inference, and
/// [`NormStatistics::Running`]: `(x − running_mean) / sqrt(running_var + ε) · γ + β`, the formula of
/// Burn's own inference path.
///
/// Computed here rather than through `BatchNorm::forward` for speed on burn-flex: Burn's version
/// swaps the batch and channel axes and broadcasts `[1, C, 1, 1]` statistics over `[N, C, H, W]`,
/// shapes that burn-flex 0.21 walks element by element on one thread (≈ 30 % of model B's CPU
/// training time). Here the image is viewed as `[N, C, H·W]` and every per-channel factor is
/// repeated to `[N, C, 1]`, which burn-flex's vectorised broadcast handles; the results equal
/// Burn's to rounding (tested against it, values and gradients). On `Autodiff<Flex>` (feature
/// `flex`) the batch-statistics path is one operation of fer-models' own instead (`cpu_norm`: a
/// pass over each channel per statistic, one for the output, two for the gradients), tested
/// against Burn's `BatchNorm` in the same way. On the autodiff backends of Burn's GPU backends
/// (features `cuda`, `wgpu`) it is one autodiff operation of fer-models' own over the backend's
/// tensor operations instead ([`GpuBatchNorm::Operation`], the default).
pub(crate) fn batch_norm<B: Backend>(norm: &BatchNorm<B>, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
    batch_norm_then_relu(norm, x, mode, false)
}

/// `relu(batch_norm(norm, x, mode))`, in one pass on `Autodiff<Flex>` with batch statistics
/// (fer-models' kernel gates the gradient by the output's sign itself, bit for bit what Burn's
/// `relu` would do after it), and composed from the two elsewhere.
pub(crate) fn batch_norm_relu<B: Backend>(norm: &BatchNorm<B>, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
    batch_norm_then_relu(norm, x, mode, true)
}

fn batch_norm_then_relu<B: Backend>(norm: &BatchNorm<B>, x: Tensor<B, 4>, mode: Mode, with_relu: bool) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let statistics = match mode {
        Mode::Backend { statistics, .. } => Some(statistics),
        Mode::Inference => None,
    };
    let batch_statistics = match statistics {
        Some(NormStatistics::BatchUpdate | NormStatistics::Batch) => B::ad_enabled(&x.device()),
        Some(NormStatistics::Running) | None => false,
    };
    // Moves the running statistics towards the batch's `[C]` mean and biased variance.
    let move_running = |mean: Tensor<B, 1>, var: Tensor<B, 1>| {
        if statistics == Some(NormStatistics::BatchUpdate) {
            // Through `running`: Burn's RunningState, or kept aside on this thread inside
            // `collect_running_updates` (data-parallel replicas).
            let momentum = norm.momentum;
            let running_mean = running_value(&norm.running_mean).to_device(&mean.device());
            let running_var = running_value(&norm.running_var).to_device(&var.device());
            update_running(
                &norm.running_mean,
                running_mean.mul_scalar(1.0 - momentum).add(mean.mul_scalar(momentum)).detach(),
            );
            update_running(
                &norm.running_var,
                running_var.mul_scalar(1.0 - momentum).add(var.mul_scalar(momentum)).detach(),
            );
        }
    };
    #[cfg(feature = "flex")]
    let x = if batch_statistics {
        match crate::cpu_norm::try_batch_norm(x, norm.gamma.val(), norm.beta.val(), norm.epsilon, with_relu) {
            Ok((y, batch)) => {
                let device = y.device();
                let channel = |v: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(v, [c]), &device);
                move_running(channel(batch.mean), channel(batch.variance));
                return y;
            }
            Err(x) => x,
        }
    } else {
        x
    };
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    let x = if batch_statistics && gpu_batch_norm() == GpuBatchNorm::Operation {
        match crate::gpu_norm::try_batch_norm(x, norm.gamma.val(), norm.beta.val(), norm.epsilon, with_relu) {
            Ok((y, mean, var)) => {
                move_running(mean, var);
                return y;
            }
            Err(x) => x,
        }
    } else {
        x
    };
    let x = x.reshape([n, c, h * w]);
    // A per-channel vector as `[N, C, 1]`, contiguous.
    let per_row = |v: Tensor<B, 3>| v.repeat_dim(0, n);
    let y = if batch_statistics {
        let count = (n * h * w) as f64;
        let mean = x.clone().sum_dim(2).sum_dim(0).div_scalar(count);
        let centered = x - per_row(mean.clone());
        let var = centered.clone().square().sum_dim(2).sum_dim(0).div_scalar(count);
        move_running(mean.detach().reshape([c]), var.clone().detach().reshape([c]));
        let std = var.add_scalar(norm.epsilon).sqrt();
        let scale = norm.gamma.val().reshape([1, c, 1]) / std;
        centered * per_row(scale) + per_row(norm.beta.val().reshape([1, c, 1]))
    } else {
        let channel = |v: Tensor<B, 1>| per_row(v.reshape([1, c, 1]));
        // `running_value` (Burn's `value_sync` outside a collection), not `value`: after a training
        // pass the running statistics hold a pending update that `value` leaves out (Burn folds it
        // in on the next update, `valid` or sync), so an attack or evaluation right after a
        // training step would otherwise use statistics one step old.
        let mean = channel(running_value(&norm.running_mean));
        let std = channel(running_value(&norm.running_var).add_scalar(norm.epsilon).sqrt());
        (x - mean) / std * channel(norm.gamma.val()) + channel(norm.beta.val())
    };
    let y = y.reshape([n, c, h, w]);
    if with_relu { burn::tensor::activation::relu(y) } else { y }
}

/// `norm` as fer-rs's models apply it in a training forward pass, for your own models and benches.
///
/// On an autodiff backend: BatchNorm with `statistics` ([`NormStatistics::BatchUpdate`] is Burn's
/// and PyTorch's training behaviour: batch mean and biased variance over N, H and W, running
/// statistics moved with the layer's momentum). On a backend without autodiff: running statistics,
/// as Burn's `BatchNorm::forward` does there. Equal to `BatchNorm::forward` to rounding (values,
/// running statistics and gradients are tested against it), and several times faster on burn-flex
/// 0.21, whose strided broadcasts Burn's formulation hits (docs/RESULTS.md, "BatchNorm on
/// burn-flex"); on `Autodiff<Flex>` the batch statistics run fer-models' own BatchNorm kernel,
/// forward and backward, deterministic and independent of the number of threads.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::BatchNormConfig;
/// use burn::prelude::*;
/// use fer_models::{NormStatistics, batch_norm_training};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let norm = BatchNormConfig::new(2).init::<B>(&device);
/// let x = Tensor::<B, 4>::from_floats([[[[1.0, 3.0]], [[0.0, 4.0]]]], &device);
/// let y = batch_norm_training(&norm, x, NormStatistics::BatchUpdate);
/// // Each channel normalised with its batch statistics (γ = 1, β = 0): ±1 up to ε.
/// let y: Vec<f32> = y.into_data().to_vec().unwrap();
/// assert!(y.iter().all(|v| (v.abs() - 1.0).abs() < 1e-3), "{y:?}");
/// // The running mean moved from 0 towards the batch means (2 and 2) by the momentum, 0.1.
/// let mean: Vec<f32> = norm.running_mean.value_sync().into_data().to_vec().unwrap();
/// assert!(mean.iter().all(|m| (m - 0.2).abs() < 1e-6), "{mean:?}");
/// ```
pub fn batch_norm_training<B: Backend>(
    norm: &BatchNorm<B>,
    x: Tensor<B, 4>,
    statistics: NormStatistics,
) -> Tensor<B, 4> {
    batch_norm(norm, x, Mode::training(statistics, None))
}

/// `dropout` applied in `mode`: at inference the identity; in training Burn's `Dropout::forward`
/// (on an autodiff backend, zero each element with the layer's probability `p` and scale the rest
/// by `1 / (1 − p)`), its mask drawn from the backend's generator, or with a `dropout_seed` from
/// ChaCha8 seeded by that seed and `site` (the dropout layer's number within the model).
///
/// Burn 0.21's CPU backends share one generator between threads, so replicas training side by side
/// (`fer_train::data_parallel_step`) would draw their masks in the order the threads happen to
/// run; a seed per replica and step makes the masks independent of thread timing.
pub(crate) fn dropout<B: Backend>(dropout: &Dropout, x: Tensor<B, 2>, mode: Mode, site: u64) -> Tensor<B, 2> {
    match mode {
        Mode::Backend { dropout_seed: None, .. } => dropout.forward(x),
        Mode::Backend { dropout_seed: Some(seed), .. } => {
            if !B::ad_enabled(&x.device()) || dropout.prob == 0.0 {
                return x;
            }
            let keep = 1.0 - dropout.prob;
            let scale = (1.0 / keep) as f32;
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ site.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let shape = x.shape();
            let mask: Vec<f32> =
                (0..shape.num_elements()).map(|_| if rng.random::<f64>() < keep { scale } else { 0.0 }).collect();
            let mask = Tensor::from_data(TensorData::new(mask, shape), &x.device());
            x * mask
        }
        Mode::Inference => x,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;
    use burn::tensor::backend::AutodiffBackend;

    type B = Autodiff<NdArray>;

    /// Each BatchNorm test below, on `Autodiff<NdArray>` (the formula composed from Burn tensors)
    /// and, with the `flex` feature, on `Autodiff<Flex>` (fer-models' BatchNorm kernel).
    macro_rules! on_cpu_backends {
        ($($name:ident),* $(,)?) => {
            mod on_cpu_backends {
                $(
                    #[test]
                    fn $name() {
                        super::$name::<burn::backend::Autodiff<burn::backend::NdArray>>();
                        #[cfg(feature = "flex")]
                        super::$name::<crate::flex_bridge::FlexAd>();
                    }
                )*
            }
        };
    }

    on_cpu_backends!(
        training_equals_burns_batch_norm_in_values_statistics_and_gradients,
        inference_equals_burns_batch_norm_without_autodiff,
        inference_mode_on_autodiff_uses_running_statistics_and_leaves_them,
        inference_right_after_a_training_pass_uses_the_updated_statistics,
        batch_statistics_without_update_normalise_like_burn_and_leave_the_running_statistics,
        running_statistics_in_training_equal_inference_and_pass_gradients,
    );

    /// `ours` equals `burns` value by value, to a relative 1e-4.
    pub(crate) fn assert_close(what: &str, ours: TensorData, burns: TensorData) {
        let ours: Vec<f32> = ours.to_vec().unwrap();
        let burns: Vec<f32> = burns.to_vec().unwrap();
        assert_eq!(ours.len(), burns.len(), "{what}: lengths");
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}[{i}]: ours {a}, burn's {b}");
        }
    }

    /// A norm with non-trivial γ, β and running statistics, and an input far from N(0, 1).
    fn setup<B: AutodiffBackend>() -> (BatchNorm<B>, Tensor<B, 4>) {
        let device = Default::default();
        B::seed(&device, 11);
        let mut norm = BatchNormConfig::new(3).with_momentum(0.3).init::<B>(&device);
        norm.gamma = norm.gamma.map(|_| Tensor::from_floats([0.5, -1.5, 2.0], &device).require_grad());
        norm.beta = norm.beta.map(|_| Tensor::from_floats([0.1, 0.0, -0.7], &device).require_grad());
        norm.running_mean = burn::module::RunningState::new(Tensor::from_floats([0.2, -0.1, 3.0], &device));
        norm.running_var = burn::module::RunningState::new(Tensor::from_floats([0.5, 2.0, 9.0], &device));
        let x = Tensor::<B, 4>::random([4, 3, 5, 6], Distribution::Normal(2.0, 3.0), &device);
        (norm, x)
    }

    fn training_equals_burns_batch_norm_in_values_statistics_and_gradients<B: AutodiffBackend>() {
        let (norm, x) = setup::<B>();
        let ours_x = x.clone().require_grad();
        let burns_x = x.require_grad();
        let ours_norm = norm.clone();
        let burns_norm = norm;
        // A loss that weighs every output differently, so every gradient path is exercised.
        let weights = Tensor::<B, 4>::random([4, 3, 5, 6], Distribution::Default, &Default::default());
        let ours = batch_norm_training(&ours_norm, ours_x.clone(), NormStatistics::BatchUpdate);
        let burns = burns_norm.forward(burns_x.clone());
        assert_close("output", ours.to_data(), burns.to_data());
        let ours_grads = (ours * weights.clone()).sum().backward();
        let burns_grads = (burns * weights).sum().backward();
        assert_close(
            "grad x",
            ours_x.grad(&ours_grads).unwrap().into_data(),
            burns_x.grad(&burns_grads).unwrap().into_data(),
        );
        for (what, ours, burns) in [
            ("grad gamma", ours_norm.gamma.grad(&ours_grads), burns_norm.gamma.grad(&burns_grads)),
            ("grad beta", ours_norm.beta.grad(&ours_grads), burns_norm.beta.grad(&burns_grads)),
        ] {
            assert_close(what, ours.unwrap().into_data(), burns.unwrap().into_data());
        }
        assert_close(
            "running mean",
            ours_norm.running_mean.value().into_data(),
            burns_norm.running_mean.value().into_data(),
        );
        assert_close(
            "running var",
            ours_norm.running_var.value().into_data(),
            burns_norm.running_var.value().into_data(),
        );
        // The statistics moved: the update is not a no-op on both sides.
        let moved: Vec<f32> = ours_norm.running_mean.value().into_data().to_vec().unwrap();
        assert!((moved[2] - 3.0).abs() > 0.1, "running mean of channel 2 did not move: {moved:?}");
    }

    fn inference_equals_burns_batch_norm_without_autodiff<B: AutodiffBackend>() {
        let (norm, x) = setup::<B>();
        let norm = norm.valid();
        let x = x.inner();
        let ours: Vec<f32> = batch_norm(&norm, x.clone(), Mode::BURN).into_data().to_vec().unwrap();
        let forced: Vec<f32> = batch_norm(&norm, x.clone(), Mode::Inference).into_data().to_vec().unwrap();
        let burns: Vec<f32> = norm.forward(x).into_data().to_vec().unwrap();
        assert_eq!(ours, forced);
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "[{i}]: ours {a}, burn's {b}");
        }
    }

    fn inference_mode_on_autodiff_uses_running_statistics_and_leaves_them<B: AutodiffBackend>() {
        let (norm, x) = setup::<B>();
        let ours: Vec<f32> = batch_norm(&norm, x.clone(), Mode::Inference).into_data().to_vec().unwrap();
        let burns: Vec<f32> = norm.valid().forward(x.inner()).into_data().to_vec().unwrap();
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "[{i}]: ours {a}, burn's {b}");
        }
        let mean: Vec<f32> = norm.running_mean.value().into_data().to_vec().unwrap();
        assert_eq!(mean, vec![0.2, -0.1, 3.0]);
    }

    fn inference_right_after_a_training_pass_uses_the_updated_statistics<B: AutodiffBackend>() {
        let (norm, x) = setup::<B>();
        let _ = batch_norm(&norm, x.clone().mul_scalar(2.0), Mode::BURN);
        // Computed before `valid`, which folds the pending update in for everyone.
        let ours: Vec<f32> = batch_norm(&norm, x.clone(), Mode::Inference).into_data().to_vec().unwrap();
        let synced: Vec<f32> = norm.valid().forward(x.clone().inner()).into_data().to_vec().unwrap();
        let stale = {
            let (old, _) = setup::<B>();
            old.valid().forward(x.inner()).into_data().to_vec::<f32>().unwrap()
        };
        assert_ne!(synced, stale, "the training pass moved the statistics");
        for (i, (a, b)) in ours.iter().zip(&synced).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "[{i}]: ours {a}, after the update {b}");
        }
    }

    fn values<B: Backend>(t: Tensor<B, 1>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    fn batch_statistics_without_update_normalise_like_burn_and_leave_the_running_statistics<B: AutodiffBackend>() {
        let (norm, x) = setup::<B>();
        let (before_mean, before_var) = (values(norm.running_mean.value_sync()), values(norm.running_var.value_sync()));
        let kept = batch_norm(&norm, x.clone(), Mode::training(NormStatistics::Batch, None));
        assert_eq!(values(norm.running_mean.value_sync()), before_mean, "running mean moved");
        assert_eq!(values(norm.running_var.value_sync()), before_var, "running variance moved");
        let burns = norm.clone().forward(x);
        assert_close("output", kept.to_data(), burns.to_data());
        assert_ne!(values(norm.running_mean.value_sync()), before_mean, "Burn's pass moves the statistics");
    }

    fn running_statistics_in_training_equal_inference_and_pass_gradients<B: AutodiffBackend>() {
        let (norm, x) = setup::<B>();
        let x = x.require_grad();
        let before = values(norm.running_mean.value_sync());
        let running = batch_norm(&norm, x.clone(), Mode::training(NormStatistics::Running, None));
        let inference = batch_norm(&norm, x.clone(), Mode::Inference);
        assert_close("output", running.to_data(), inference.to_data());
        assert_eq!(values(norm.running_mean.value_sync()), before, "running mean moved");
        let grads = running.sum().backward();
        // d/dx of (x − μ)/σ · γ + β is γ/σ per channel: channel 1 has γ = −1.5, σ = √(2 + ε).
        let grad_x: Vec<f32> = x.grad(&grads).expect("input gradient").into_data().to_vec().unwrap();
        let expected = -1.5 / (2.0f32 + norm.epsilon as f32).sqrt();
        assert!((grad_x[30] - expected).abs() < 1e-5, "{} vs {expected}", grad_x[30]);
        let grad_gamma: Vec<f32> = norm.gamma.grad(&grads).expect("γ gradient").into_data().to_vec().unwrap();
        assert!(grad_gamma.iter().all(|g| g.abs() > 0.0), "{grad_gamma:?}");
    }

    #[test]
    fn seeded_dropout_repeats_its_masks_on_any_thread_and_scales_as_burn() {
        let layer = burn::nn::DropoutConfig::new(0.25).init();
        // The output of a seeded training pass over ones (the mask itself) and the input gradient.
        let pass = |seed: u64, site: u64| -> (Vec<f32>, Vec<f32>) {
            let x = Tensor::<B, 2>::ones([64, 128], &Default::default()).require_grad();
            let y = dropout(&layer, x.clone(), Mode::training(NormStatistics::BatchUpdate, Some(seed)), site);
            let grad = x.grad(&y.clone().sum().backward()).expect("input gradient");
            (y.into_data().to_vec().unwrap(), grad.into_data().to_vec().unwrap())
        };
        let (mask, grad) = pass(7, 0);
        assert_eq!(grad, mask, "the gradient of x · mask is the mask");
        let kept = 1.0 / 0.75f32;
        assert!(mask.iter().all(|&v| v == 0.0 || v == kept), "elements other than 0 and 1/(1 − p)");
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / mask.len() as f64;
        assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped} of the elements, p = 0.25"); // σ ≈ 0.005
        assert_eq!(pass(7, 0).0, mask, "same seed and site, another mask");
        assert_ne!(pass(8, 0).0, mask, "another seed, the same mask");
        assert_ne!(pass(7, 1).0, mask, "another site, the same mask");
        // On two other threads at once, while the backend's shared generator is drawn from too.
        let masks: Vec<Vec<f32>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2).map(|_| scope.spawn(|| pass(7, 0).0)).collect();
            let _ = Tensor::<B, 2>::random([64, 128], Distribution::Default, &Default::default());
            workers.into_iter().map(|w| w.join().expect("thread")).collect()
        });
        assert!(masks.iter().all(|m| *m == mask), "a thread drew another mask");
        // Without autodiff, and at inference, dropout is the identity.
        let ones = Tensor::<NdArray, 2>::ones([4, 8], &Default::default());
        let seeded = Mode::training(NormStatistics::BatchUpdate, Some(7));
        assert_eq!(dropout(&layer, ones.clone(), seeded, 0).into_data(), ones.to_data());
        let ones = Tensor::<B, 2>::ones([4, 8], &Default::default());
        assert_eq!(dropout(&layer, ones.clone(), Mode::Inference, 0).into_data(), ones.into_data());
    }

    #[test]
    fn statistics_names_round_trip() {
        for n in NormStatistics::ALL {
            assert_eq!(n.name().parse::<NormStatistics>(), Ok(n));
            assert_eq!(serde_json::to_string(&n).unwrap(), format!("\"{}\"", n.name()));
        }
        assert!("clean".parse::<NormStatistics>().unwrap_err().contains("`clean`"));
    }
}
