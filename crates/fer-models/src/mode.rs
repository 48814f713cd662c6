//! Training vs inference behaviour of BatchNorm and dropout, chosen explicitly.
//!
//! Burn 0.21 picks the behaviour from the backend: `BatchNorm` and `Dropout` act in training
//! mode whenever the backend records gradients (`Autodiff<_>`), whatever the caller wants. An
//! attack needs the opposite combination: gradients with respect to the *input* of a model that
//! behaves as at inference (running statistics, no dropout, no running-statistic update). The
//! functions here give that on every backend.

use burn::nn::{BatchNorm, Dropout};
use burn::prelude::*;

/// How BatchNorm and dropout behave in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Burn's choice: training behaviour (batch statistics, running-statistic update, dropout)
    /// on autodiff backends, inference behaviour otherwise.
    Backend,
    /// Inference behaviour on every backend.
    Inference,
}

/// `norm` applied in `mode`, with Burn's `BatchNorm` semantics.
///
/// Training (autodiff backend, `Mode::Backend`): normalise with the batch's mean and biased
/// variance over N, H and W, update the running statistics with the layer's momentum, and scale by
/// γ, shift by β. Inference: `(x − running_mean) / sqrt(running_var + ε) · γ + β`, the formula of
/// Burn's own inference path.
///
/// Computed here rather than through `BatchNorm::forward` for speed on burn-flex: Burn's version
/// swaps the batch and channel axes and broadcasts `[1, C, 1, 1]` statistics over `[N, C, H, W]`,
/// shapes that burn-flex 0.21 walks element by element on one thread (≈ 30 % of model B's CPU
/// training time). Here the image is viewed as `[N, C, H·W]` and every per-channel factor is
/// repeated to `[N, C, 1]`, which burn-flex's vectorised broadcast handles; the results equal
/// Burn's to rounding (tested against it, values and gradients).
pub(crate) fn batch_norm<B: Backend>(norm: &BatchNorm<B>, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let x = x.reshape([n, c, h * w]);
    // A per-channel vector as `[N, C, 1]`, contiguous.
    let per_row = |v: Tensor<B, 3>| v.repeat_dim(0, n);
    let y = if mode == Mode::Backend && B::ad_enabled(&x.device()) {
        let count = (n * h * w) as f64;
        let mean = x.clone().sum_dim(2).sum_dim(0).div_scalar(count);
        let centered = x - per_row(mean.clone());
        let var = centered.clone().square().sum_dim(2).sum_dim(0).div_scalar(count);
        let momentum = norm.momentum;
        let running_mean = norm.running_mean.value_sync().to_device(&mean.device());
        let running_var = norm.running_var.value_sync().to_device(&var.device());
        norm.running_mean.update(
            running_mean.mul_scalar(1.0 - momentum).add(mean.detach().mul_scalar(momentum).reshape([c])).detach(),
        );
        norm.running_var.update(
            running_var.mul_scalar(1.0 - momentum).add(var.clone().detach().mul_scalar(momentum).reshape([c])).detach(),
        );
        let std = var.add_scalar(norm.epsilon).sqrt();
        let scale = norm.gamma.val().reshape([1, c, 1]) / std;
        centered * per_row(scale) + per_row(norm.beta.val().reshape([1, c, 1]))
    } else {
        let channel = |v: Tensor<B, 1>| per_row(v.reshape([1, c, 1]));
        let mean = channel(norm.running_mean.value());
        let std = channel(norm.running_var.value().add_scalar(norm.epsilon).sqrt());
        (x - mean) / std * channel(norm.gamma.val()) + channel(norm.beta.val())
    };
    y.reshape([n, c, h, w])
}

/// `dropout` applied in `mode` (inference: the identity).
pub(crate) fn dropout<B: Backend>(dropout: &Dropout, x: Tensor<B, 2>, mode: Mode) -> Tensor<B, 2> {
    match mode {
        Mode::Backend => dropout.forward(x),
        Mode::Inference => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;

    type B = Autodiff<NdArray>;

    fn assert_close(what: &str, ours: TensorData, burns: TensorData) {
        let ours: Vec<f32> = ours.to_vec().unwrap();
        let burns: Vec<f32> = burns.to_vec().unwrap();
        assert_eq!(ours.len(), burns.len(), "{what}: lengths");
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}[{i}]: ours {a}, burn's {b}");
        }
    }

    /// A norm with non-trivial γ, β and running statistics, and an input far from N(0, 1).
    fn setup() -> (BatchNorm<B>, Tensor<B, 4>) {
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

    #[test]
    fn training_equals_burns_batch_norm_in_values_statistics_and_gradients() {
        let (norm, x) = setup();
        let ours_x = x.clone().require_grad();
        let burns_x = x.require_grad();
        let ours_norm = norm.clone();
        let burns_norm = norm;
        // A loss that weighs every output differently, so every gradient path is exercised.
        let weights = Tensor::<B, 4>::random([4, 3, 5, 6], Distribution::Default, &Default::default());
        let ours = batch_norm(&ours_norm, ours_x.clone(), Mode::Backend);
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

    #[test]
    fn inference_equals_burns_batch_norm_without_autodiff() {
        let (norm, x) = setup();
        let norm = norm.valid();
        let x = x.inner();
        let ours: Vec<f32> = batch_norm(&norm, x.clone(), Mode::Backend).into_data().to_vec().unwrap();
        let forced: Vec<f32> = batch_norm(&norm, x.clone(), Mode::Inference).into_data().to_vec().unwrap();
        let burns: Vec<f32> = norm.forward(x).into_data().to_vec().unwrap();
        assert_eq!(ours, forced);
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "[{i}]: ours {a}, burn's {b}");
        }
    }

    #[test]
    fn inference_mode_on_autodiff_uses_running_statistics_and_leaves_them() {
        let (norm, x) = setup();
        let ours: Vec<f32> = batch_norm(&norm, x.clone(), Mode::Inference).into_data().to_vec().unwrap();
        let burns: Vec<f32> = norm.valid().forward(x.inner()).into_data().to_vec().unwrap();
        for (i, (a, b)) in ours.iter().zip(&burns).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "[{i}]: ours {a}, burn's {b}");
        }
        let mean: Vec<f32> = norm.running_mean.value().into_data().to_vec().unwrap();
        assert_eq!(mean, vec![0.2, -0.1, 3.0]);
    }
}
