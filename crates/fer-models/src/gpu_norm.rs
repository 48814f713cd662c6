//! BatchNorm with batch statistics as one autodiff operation over any inner backend's tensor
//! operations, used on Burn's GPU backends (`Autodiff<Cuda>`, `Autodiff<Wgpu>`).
//!
//! Composed from Burn tensors, the formula `y = (x − μ) · γ / √(σ² + ε) + β` records one
//! autodiff node per operation, and each broadcast of a `[1, C, 1]` factor over `[N, C, H·W]`
//! (the subtraction of μ, the product with the scale, the sum with β) reduces its gradient over
//! N and H·W in the backward pass: on the H200 a VGG19 step launched 244 reductions and 175
//! element-wise kernels, most of them BatchNorm's (docs/RESULTS.md, "The step on the GPU").
//! Here the backward step is the closed form instead, with `x̂ = (x − μ) / √(σ² + ε)`:
//! `dβ = Σ dy`, `dγ = Σ dy · x̂`, `dx = γ / √(σ² + ε) · (dy − dβ / M − x̂ · dγ / M)` (`M` = N·H·W,
//! the gradient through the batch mean and variance included). The forward step takes two
//! per-channel sums (μ, then σ² of the centred values), the backward step two (dβ, dγ), each a
//! reduction over H·W then one over N; everything else is element-wise, which Burn's fusion
//! compiles into few kernels. With `with_relu` the ReLU is applied in the same operation and its
//! gradient gate (`dy = 0` where `y ≤ 0`, Burn's `relu_backward`) opens the backward step.
//!
//! The operation runs on the *inner* backend's tensor operations, so it is the same code on every
//! backend; the unit tests check it on `Autodiff<NdArray>` against Burn's `BatchNorm` (values,
//! running statistics and gradients of x, γ and β).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensor;

/// Burn's autodiff backend over `I`, as `burn::backend::Autodiff<I>` names it.
type Ad<I> = Autodiff<I, NoCheckpointing>;

/// The backward step of [`batch_norm_autodiff`]: parents are the input, γ and β.
#[derive(Debug)]
struct NormBackward;

/// What the backward step keeps: the input `[N, C, H, W]`, the per-channel mean, `1/σ` and γ as
/// `[1, C, 1]`, and the output when a ReLU followed (its sign gates the gradient).
#[derive(Clone, Debug)]
struct NormState<I: Backend> {
    dims: [usize; 4],
    x: FloatTensor<I>,
    mean: FloatTensor<I>,
    inv_std: FloatTensor<I>,
    gamma: FloatTensor<I>,
    relu_output: Option<FloatTensor<I>>,
}

/// An inner-backend tensor from its primitive.
fn inner<I: Backend, const D: usize>(t: FloatTensor<I>) -> Tensor<I, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Per-channel sums of `[N, C, L]` as `[1, C, 1]`: over L (contiguous), then over N.
fn channel_sums<I: Backend>(t: Tensor<I, 3>) -> Tensor<I, 3> {
    t.sum_dim(2).sum_dim(0)
}

impl<I: Backend> Backward<I, 3> for NormBackward {
    type State = NormState<I>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let NormState { dims, x, mean, inv_std, gamma, relu_output } = ops.state;
        let [n, c, h, w] = dims;
        let count = (n * h * w) as f64;
        let dy = inner::<I, 4>(grads.consume::<I>(&ops.node)).reshape([n, c, h * w]);
        let dy = match relu_output {
            Some(y) => {
                let y = inner::<I, 4>(y).reshape([n, c, h * w]);
                dy.mask_fill(y.lower_equal_elem(0.0), 0.0)
            }
            None => dy,
        };
        // No `x̂` is kept: `x − μ` is written out where it is read, so Burn's fusion folds it into
        // that kernel (on llvmpipe a kept `x̂` ran as two more whole-tensor passes). Per-channel
        // factors stay `[1, C, 1]`: repeated to `[N, C, 1]` they ended fusion, and dx ran as four
        // passes.
        let (x, mean, inv_std) = (inner::<I, 4>(x).reshape([n, c, h * w]), inner::<I, 3>(mean), inner::<I, 3>(inv_std));
        let dbeta = channel_sums(dy.clone());
        // Σ dy · (x − μ); dγ = that · 1/σ.
        let dot = channel_sums(dy.clone() * (x.clone() - mean.clone()));
        let dgamma = dot.clone() * inv_std.clone();
        if let Some(node) = node_x {
            // dx = k · (dy − dβ / M − x̂ · dγ / M) with k = γ / σ and x̂ = (x − μ) / σ, as
            // `k · dy + a · x + b` with per-channel a = −k · Σ dy·(x − μ) / (σ² M) and
            // b = −a · μ − k · dβ / M: one element-wise pass over dy and x.
            let k = inner::<I, 3>(gamma) * inv_std.clone();
            let a = (k.clone() * inv_std.square() * dot.div_scalar(count)).neg();
            let b = (a.clone() * mean + k.clone() * dbeta.clone().div_scalar(count)).neg();
            let dx = dy * k + x * a + b;
            grads.register::<I>(node.id, dx.reshape(dims).into_primitive().tensor());
        }
        if let Some(node) = node_gamma {
            grads.register::<I>(node.id, dgamma.reshape([c]).into_primitive().tensor());
        }
        if let Some(node) = node_beta {
            grads.register::<I>(node.id, dbeta.reshape([c]).into_primitive().tensor());
        }
    }
}

/// BatchNorm of `x` (`[N, C, H, W]`) with its batch's statistics, scaled by `gamma` and shifted by
/// `beta` (then ReLU when `with_relu`), as one autodiff operation with [`NormBackward`] as its
/// gradient. Also returns the batch's per-channel mean and biased variance (`[C]`, untracked)
/// for the caller's running statistics.
pub(crate) fn batch_norm_autodiff<I: Backend>(
    x: Tensor<Ad<I>, 4>,
    gamma: Tensor<Ad<I>, 1>,
    beta: Tensor<Ad<I>, 1>,
    epsilon: f64,
    with_relu: bool,
) -> (Tensor<Ad<I>, 4>, Tensor<I, 1>, Tensor<I, 1>) {
    let dims = x.dims();
    let [n, c, h, w] = dims;
    let count = (n * h * w) as f64;
    let (x, gamma, beta) =
        (x.into_primitive().tensor(), gamma.into_primitive().tensor(), beta.into_primitive().tensor());
    let x3 = inner::<I, 4>(x.primitive.clone()).reshape([n, c, h * w]);
    let mean = channel_sums(x3.clone()).div_scalar(count);
    let var = channel_sums((x3.clone() - mean.clone()).square()).div_scalar(count);
    let inv_std = var.clone().add_scalar(epsilon).sqrt().recip();
    let gamma3 = inner::<I, 1>(gamma.primitive.clone()).reshape([1, c, 1]);
    let beta3 = inner::<I, 1>(beta.primitive.clone()).reshape([1, c, 1]);
    // y = x · a + b with per-channel a = γ / σ and b = β − μ · a: one pass over x.
    let a = gamma3.clone() * inv_std.clone();
    let b = beta3 - mean.clone() * a.clone();
    let y = x3 * a + b;
    let y = if with_relu { burn::tensor::activation::relu(y) } else { y };
    let y = y.reshape(dims).into_primitive().tensor();
    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let y = match NormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let state = NormState {
                dims,
                x: x.primitive,
                mean: mean.clone().into_primitive().tensor(),
                inv_std: inv_std.into_primitive().tensor(),
                gamma: gamma3.into_primitive().tensor(),
                relu_output: with_relu.then(|| y.clone()),
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (Tensor::from_primitive(TensorPrimitive::Float(y)), mean.reshape([c]), var.reshape([c]))
}

/// The normalised input and the batch's per-channel mean and biased variance (`[C]`, untracked).
type Normalised<B> = (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>);

/// Tries [`batch_norm_autodiff`] over the inner backend `I`: when `B` is `Autodiff<I>`, the
/// normalised `x` and the batch's mean and variance (`[C]`, untracked, on `B`); `x` back otherwise.
fn try_on<B: Backend, I: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    with_relu: bool,
) -> Result<Normalised<B>, Tensor<B, 4>> {
    use crate::backend_match::{same_backend, same_type};
    let x = same_type::<Tensor<B, 4>, Tensor<Ad<I>, 4>>(x)?;
    let (y, mean, var) = batch_norm_autodiff::<I>(x, same_backend(gamma), same_backend(beta), epsilon, with_relu);
    let untracked = |t: Tensor<I, 1>| same_backend::<Tensor<Ad<I>, 1>, Tensor<B, 1>>(Tensor::from_inner(t));
    Ok((same_backend(y), untracked(mean), untracked(var)))
}

/// BatchNorm with batch statistics (then ReLU when `with_relu`) through [`batch_norm_autodiff`]
/// when `B` is the autodiff backend of one of Burn's GPU backends this build has (features `cuda`,
/// `wgpu`) and `x` is not empty: the output and the batch's `[C]` mean and biased variance for the
/// running statistics. `x` back otherwise, for the composed formula.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code, unused_variables))]
pub(crate) fn try_batch_norm<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    with_relu: bool,
) -> Result<Normalised<B>, Tensor<B, 4>> {
    if x.dims().contains(&0) {
        return Err(x);
    }
    #[cfg(feature = "cuda")]
    let x = match try_on::<B, burn::backend::Cuda>(x, gamma.clone(), beta.clone(), epsilon, with_relu) {
        Ok(done) => return Ok(done),
        Err(x) => x,
    };
    #[cfg(feature = "wgpu")]
    let x = match try_on::<B, burn::backend::Wgpu>(x, gamma, beta, epsilon, with_relu) {
        Ok(done) => return Ok(done),
        Err(x) => x,
    };
    Err(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::module::Param;
    use burn::nn::{BatchNorm, BatchNormConfig};
    use burn::tensor::Distribution;

    use crate::mode::tests::assert_close;

    type I = NdArray;
    type B = Ad<I>;

    /// Burn's BatchNorm with non-trivial γ and β (tracked), and an input far from N(0, 1).
    fn setup() -> (BatchNorm<B>, Tensor<B, 4>) {
        let device = Default::default();
        B::seed(&device, 5);
        let mut norm = BatchNormConfig::new(3).with_momentum(1.0).init::<B>(&device);
        norm.gamma = Param::from_tensor(Tensor::from_floats([0.5, -1.5, 2.0], &device));
        norm.beta = Param::from_tensor(Tensor::from_floats([0.1, 0.0, -0.7], &device));
        let x = Tensor::<B, 4>::random([4, 3, 5, 6], Distribution::Normal(2.0, 3.0), &device);
        (norm, x)
    }

    /// The operation against Burn's `BatchNorm` (then Burn's `relu` when `with_relu`): output,
    /// batch statistics (momentum 1 puts them in Burn's running ones) and the gradients of x, γ
    /// and β under a loss that weighs every output differently.
    fn check_against_burn(with_relu: bool) {
        let (norm, x) = setup();
        let weights = Tensor::<B, 4>::random(x.dims(), Distribution::Default, &Default::default());
        let (ours_x, burns_x) = (x.clone().require_grad(), x.require_grad());
        let (ours, mean, var) =
            batch_norm_autodiff(ours_x.clone(), norm.gamma.val(), norm.beta.val(), norm.epsilon, with_relu);
        let burns = norm.forward(burns_x.clone());
        let burns = if with_relu { burn::tensor::activation::relu(burns) } else { burns };
        assert_close("output", ours.to_data(), burns.to_data());
        if with_relu {
            let zeros = ours.to_data().to_vec::<f32>().unwrap().iter().filter(|&&v| v == 0.0).count();
            assert!(zeros > 20, "the ReLU should zero a good share of the 360 outputs, zeroed {zeros}");
        }
        assert_close("batch mean", mean.into_data(), norm.running_mean.value_sync().inner().into_data());
        assert_close("batch variance", var.into_data(), norm.running_var.value_sync().inner().into_data());
        let ours_grads = (ours * weights.clone()).sum().backward();
        let burns_grads = (burns * weights).sum().backward();
        assert_close(
            "grad x",
            ours_x.grad(&ours_grads).unwrap().into_data(),
            burns_x.grad(&burns_grads).unwrap().into_data(),
        );
        // γ and β are the same parameters on both sides: each side's gradients are its own graph's.
        let grad = |g: &<B as burn::tensor::backend::AutodiffBackend>::Gradients, p: &Param<Tensor<B, 1>>| {
            p.grad(g).unwrap().into_data()
        };
        assert_close("grad gamma", grad(&ours_grads, &norm.gamma), grad(&burns_grads, &norm.gamma));
        assert_close("grad beta", grad(&ours_grads, &norm.beta), grad(&burns_grads, &norm.beta));
    }

    #[test]
    fn values_statistics_and_gradients_equal_burns_batch_norm() {
        check_against_burn(false);
    }

    #[test]
    fn with_relu_equals_burns_batch_norm_then_relu() {
        check_against_burn(true);
    }

    #[test]
    fn only_tracked_parents_get_gradients() {
        let (norm, x) = setup();
        // Burn's `detach` keeps a parameter's `require_grad`: untracked means `set_require_grad(false)`.
        let untracked = |t: Tensor<B, 1>| t.detach().set_require_grad(false);
        let gamma = untracked(norm.gamma.val()).require_grad();
        let beta = untracked(norm.beta.val());
        let (y, _, _) = batch_norm_autodiff(x.clone(), gamma.clone(), beta.clone(), 1e-5, false);
        let grads = (y * x.clone()).sum().backward();
        assert!(x.grad(&grads).is_none(), "x is untracked, yet has a gradient");
        assert!(beta.grad(&grads).is_none(), "β is untracked, yet has a gradient");
        let dgamma: Vec<f32> = gamma.grad(&grads).expect("γ is tracked").into_data().to_vec().unwrap();
        assert!(dgamma.iter().all(|g| g.abs() > 1e-3), "Σ x · x̂ is far from 0 for each channel: {dgamma:?}");
        // Nothing tracked: an untracked output, the same values.
        let (plain, _, _) = batch_norm_autodiff(x.clone(), untracked(gamma.clone()), beta.clone(), 1e-5, false);
        let (tracked, _, _) = batch_norm_autodiff(x, gamma, beta, 1e-5, false);
        assert!(!plain.is_require_grad());
        assert_close("untracked output", plain.into_data(), tracked.into_data());
    }

    #[test]
    fn dispatch_takes_only_the_autodiff_backend_of_the_inner_one() {
        let (norm, x) = setup();
        let (gamma, beta) = (norm.gamma.val(), norm.beta.val());
        let done = try_on::<B, I>(x.clone(), gamma.clone(), beta.clone(), 1e-5, true).expect("Autodiff<NdArray>");
        assert_eq!(done.0.dims(), [4, 3, 5, 6]);
        assert_eq!((done.1.dims(), done.2.dims()), ([3], [3]));
        // Another inner backend, or the inner backend itself (no autodiff): `x` comes back.
        let back = try_on::<B, NdArray<f64>>(x.clone(), gamma.clone(), beta.clone(), 1e-5, true).expect_err("f64");
        assert_close("x handed back", back.into_data(), x.clone().into_data());
        let inner_x = x.inner();
        let (ig, ib) = (gamma.inner(), beta.inner());
        assert!(try_on::<I, I>(inner_x, ig, ib, 1e-5, true).is_err(), "no autodiff, no operation");
    }

    #[test]
    fn empty_batches_are_handed_back() {
        let device = Default::default();
        let x = Tensor::<B, 4>::zeros([0, 3, 5, 6], &device);
        let ones = Tensor::<B, 1>::ones([3], &device);
        assert!(try_batch_norm(x, ones.clone(), ones, 1e-5, false).is_err());
    }
}
