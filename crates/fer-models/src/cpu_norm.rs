//! fer-models' own BatchNorm with batch statistics for `Autodiff<Flex>`: one operation with its
//! own backward step, in place of the dozen burn-flex operations (sums, broadcasts, products and
//! their gradients) that the same formula costs when composed from Burn tensors.
//!
//! Forward, per channel over N, H and W (`M` values): mean `μ`, biased variance `σ²`,
//! `y = (x − μ) · γ / √(σ² + ε) + β`. Backward, with `x̂ = (x − μ) / √(σ² + ε)`:
//! `dβ = Σ dy`, `dγ = Σ dy · x̂`, `dx = γ / √(σ² + ε) · (dy − dβ / M − x̂ · dγ / M)` (the gradient
//! through the batch mean and variance included).
//!
//! Sums are taken per channel, each in a fixed order (16 lanes within an image plane, in `f32`;
//! across planes in `f64`), so results are deterministic and do not depend on the number of
//! threads; they equal the composed formula up to float rounding (tested).

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::backend_match::{same_backend, same_type};
use crate::cpu_conv::filled_vec;
use crate::flex_bridge::{FlexAd, contiguous, flex_tensor, slice};

/// Values a parallel task handles at least when it walks image planes (small planes are grouped).
const MIN_TASK_VALUES: usize = 1 << 14;

/// The batch's statistics of each channel, as [`try_batch_norm`] returns them for the running
/// statistics' update.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BatchStatistics {
    /// Per-channel mean over N, H and W.
    pub(crate) mean: Vec<f32>,
    /// Per-channel biased variance over N, H and W.
    pub(crate) variance: Vec<f32>,
}

/// `[N, C, H·W]` as the kernels see it.
#[derive(Clone, Copy, Debug)]
struct Layout {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Layout {
    /// Values per channel: the `M` of the formulas.
    fn count(&self) -> usize {
        self.batch * self.plane
    }
    /// The planes of channel `c`, one per image.
    fn planes<'a>(&self, values: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (channels, plane) = (self.channels, self.plane);
        (0..self.batch).map(move |n| &values[(n * channels + c) * plane..][..plane])
    }
    /// Image planes per parallel task (`plane` ≥ 1: [`try_batch_norm`] hands empty tensors back).
    fn planes_per_task(&self) -> usize {
        MIN_TASK_VALUES.div_ceil(self.plane)
    }
}

/// `Σ f(a[i], b[i])` in 16 `f32` lanes, added in a fixed order (the compiler vectorises it).
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (a_body, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_body, b_tail) = b.split_at(a_body.len());
    for (a, b) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += f(a[i], b[i]);
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(&a, &b)| f(a, b)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Per-channel sums `Σ f(a, b)` over every plane of the channel, in `f64` across planes.
fn channel_sums(l: &Layout, a: &[f32], b: &[f32], c: usize, f: impl Fn(f32, f32) -> f32 + Copy) -> f64 {
    l.planes(a, c).zip(l.planes(b, c)).map(|(a, b)| lane_sum(a, b, f) as f64).sum()
}

/// Writes `out[i] = f(a[i], b[i], channel coefficients)` plane by plane, in parallel.
fn map_planes<K: Copy + Send + Sync>(
    l: &Layout,
    a: &[f32],
    b: &[f32],
    coefficients: &[K],
    f: impl Fn(f32, f32, K) -> f32 + Sync,
) -> Vec<f32> {
    let per = l.planes_per_task();
    let write = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(per * l.plane).enumerate().for_each(|(task, out)| {
            for (j, out) in out.chunks_mut(l.plane).enumerate() {
                let index = task * per + j;
                let k = coefficients[index % l.channels];
                let (a, b) = (&a[index * l.plane..][..l.plane], &b[index * l.plane..][..l.plane]);
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    o.write(f(a, b, k));
                }
            }
        });
    };
    // SAFETY: the tasks' chunks cover the output in whole planes (its length is a multiple of
    // `plane`), and every plane is zipped with planes of `a` and `b` of the same length.
    unsafe { filled_vec(a.len(), write) }
}

/// Each channel's affine map `y = (x − mean) · scale + shift`, as the forward pass applies it.
#[derive(Clone, Copy, Debug)]
struct Affine {
    mean: f32,
    scale: f32,
    shift: f32,
}

impl Affine {
    fn apply(self, v: f32) -> f32 {
        (v - self.mean) * self.scale + self.shift
    }
}

/// ReLU as Burn computes it: 0 where `y ≤ 0`, `y` elsewhere (NaN stays NaN).
fn relu(y: f32) -> f32 {
    if y <= 0.0 { 0.0 } else { y }
}

/// ReLU's gradient gate: `g` where the output `y` is positive, 0 elsewhere (Burn's `relu_backward`).
fn gate(g: f32, y: f32) -> f32 {
    if y <= 0.0 { 0.0 } else { g }
}

/// Forward: `y` (through ReLU when `with_relu`), each channel's [`Affine`] map and
/// `1 / √(σ² + ε)`, and the statistics.
fn forward(
    l: &Layout,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    with_relu: bool,
) -> (Vec<f32>, Vec<Affine>, Vec<f64>, BatchStatistics) {
    let m = l.count() as f64;
    let (mean, variance): (Vec<f64>, Vec<f64>) = (0..l.channels)
        .into_par_iter()
        .map(|c| {
            let mean = channel_sums(l, x, x, c, |v, _| v) / m;
            let centre = mean as f32;
            let variance = channel_sums(l, x, x, c, |v, _| (v - centre) * (v - centre)) / m;
            (mean, variance)
        })
        .unzip();
    let inv_std: Vec<f64> = variance.iter().map(|v| 1.0 / (v + epsilon).sqrt()).collect();
    let affine: Vec<Affine> = (0..l.channels)
        .map(|c| Affine { mean: mean[c] as f32, scale: (gamma[c] as f64 * inv_std[c]) as f32, shift: beta[c] })
        .collect();
    let y = if with_relu {
        map_planes(l, x, x, &affine, |v, _, k| relu(k.apply(v)))
    } else {
        map_planes(l, x, x, &affine, |v, _, k| k.apply(v))
    };
    let statistics = BatchStatistics {
        mean: affine.iter().map(|k| k.mean).collect(),
        variance: variance.iter().map(|&v| v as f32).collect(),
    };
    (y, affine, inv_std, statistics)
}

/// Backward: `(dx, dγ, dβ)` from `dy`. With `with_relu`, `dy` is the gradient of the ReLU's
/// output: it is gated by the sign of the normalised value, recomputed from `x` with the forward
/// pass's own arithmetic, so the results are bit for bit those of a separate ReLU's backward step
/// followed by the plain one.
fn backward(
    l: &Layout,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    affine: &[Affine],
    inv_std: &[f64],
    with_relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = l.count() as f64;
    let (dbeta, dgamma_raw): (Vec<f64>, Vec<f64>) = (0..l.channels)
        .into_par_iter()
        .map(|c| {
            let k = affine[c];
            if with_relu {
                let g = move |g: f32, v: f32| gate(g, k.apply(v));
                (channel_sums(l, dy, x, c, g), channel_sums(l, dy, x, c, move |d, v| g(d, v) * (v - k.mean)))
            } else {
                (channel_sums(l, dy, dy, c, |g, _| g), channel_sums(l, dy, x, c, |g, v| g * (v - k.mean)))
            }
        })
        .unzip();
    // dx = a·dy + b·(x − μ) + shift, with a = γ/σ, b = −a·dγ/(σ·M), shift = −a·dβ/M.
    let coefficients: Vec<(Affine, f32, f32, f32)> = (0..l.channels)
        .map(|c| {
            let a = gamma[c] as f64 * inv_std[c];
            let b = -a * inv_std[c] * inv_std[c] * dgamma_raw[c] / m;
            (affine[c], a as f32, b as f32, (-a * dbeta[c] / m) as f32)
        })
        .collect();
    let dx = if with_relu {
        map_planes(l, dy, x, &coefficients, |g, v, (k, a, b, shift)| a * gate(g, k.apply(v)) + b * (v - k.mean) + shift)
    } else {
        map_planes(l, dy, x, &coefficients, |g, v, (k, a, b, shift)| a * g + b * (v - k.mean) + shift)
    };
    let dgamma = dgamma_raw.iter().zip(inv_std).map(|(s, i)| (s * i) as f32).collect();
    let dbeta = dbeta.iter().map(|&s| s as f32).collect();
    (dx, dgamma, dbeta)
}

/// The backward step of [`batch_norm_autodiff`]: parents are the input, γ and β.
#[derive(Debug)]
struct NormBackward;

/// What the backward step keeps: the input (contiguous), γ, each channel's [`Affine`] map and
/// `1/σ`, and whether a ReLU followed.
#[derive(Clone, Debug)]
struct NormState {
    layout: Layout,
    dims: [usize; 4],
    x: FlexTensor,
    gamma: Vec<f32>,
    affine: Vec<Affine>,
    inv_std: Vec<f64>,
    with_relu: bool,
}

impl Backward<Flex, 3> for NormBackward {
    type State = NormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let NormState { layout: l, dims, x, gamma, affine, inv_std, with_relu } = ops.state;
        let (dx, dgamma, dbeta) = backward(&l, slice(&x), slice(&dy), &gamma, &affine, &inv_std, with_relu);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, flex_tensor(dx, dims));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, flex_tensor(dgamma, [l.channels]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, flex_tensor(dbeta, [l.channels]));
        }
    }
}

/// BatchNorm with batch statistics (then ReLU when `with_relu`) on `Autodiff<Flex>` tensors, with
/// [`NormBackward`] as its gradient.
fn batch_norm_autodiff(
    x: Tensor<FlexAd, 4>,
    gamma: Tensor<FlexAd, 1>,
    beta: Tensor<FlexAd, 1>,
    epsilon: f64,
    with_relu: bool,
) -> (Tensor<FlexAd, 4>, BatchStatistics) {
    let dims = x.dims();
    let [batch, channels, height, width] = dims;
    let layout = Layout { batch, channels, plane: height * width };
    let (x, gamma, beta) =
        (x.into_primitive().tensor(), gamma.into_primitive().tensor(), beta.into_primitive().tensor());
    let xs = contiguous(x.primitive.clone());
    let gs = slice(&contiguous(gamma.primitive.clone())).to_vec();
    let bs = contiguous(beta.primitive.clone());
    let (y, affine, inv_std, statistics) = forward(&layout, slice(&xs), &gs, slice(&bs), epsilon, with_relu);
    let y = flex_tensor(y, dims);
    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    // `compute_bound`: what a checkpointing strategy would do; without one (`NoCheckpointing`) the
    // state is kept either way.
    let y = match NormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            prep.finish(NormState { layout, dims, x: xs, gamma: gs, affine, inv_std, with_relu }, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (Tensor::from_primitive(TensorPrimitive::Float(y)), statistics)
}

/// BatchNorm of `x` (`[N, C, H, W]`) with its batch's statistics, scaled by `gamma` and shifted by
/// `beta` (then ReLU when `with_relu`, in the same pass), through fer-models' kernel when the
/// backend is `Autodiff<Flex>` and `x` is not empty; `x` back otherwise. The running statistics
/// are the caller's to update, from the returned [`BatchStatistics`].
pub(crate) fn try_batch_norm<B: Backend>(
    x: Tensor<B, 4>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
    with_relu: bool,
) -> Result<(Tensor<B, 4>, BatchStatistics), Tensor<B, 4>> {
    if x.dims().contains(&0) {
        return Err(x);
    }
    let x = same_type::<Tensor<B, 4>, Tensor<FlexAd, 4>>(x)?;
    let (y, statistics) = batch_norm_autodiff(x, same_backend(gamma), same_backend(beta), epsilon, with_relu);
    Ok((same_backend(y), statistics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, TensorData};

    /// `x`, γ and β on `Autodiff<Flex>`, tracked, from a seeded generator.
    fn inputs(dims: [usize; 4], mean: f64, std: f64) -> (Tensor<FlexAd, 4>, Tensor<FlexAd, 1>, Tensor<FlexAd, 1>) {
        let device = Default::default();
        FlexAd::seed(&device, 5);
        let c = dims[1];
        let x = Tensor::<FlexAd, 4>::random(dims, Distribution::Normal(mean, std), &device).require_grad();
        let gamma = Tensor::<FlexAd, 1>::random([c], Distribution::Uniform(-2.0, 2.0), &device).require_grad();
        let beta = Tensor::<FlexAd, 1>::random([c], Distribution::Uniform(-1.0, 1.0), &device).require_grad();
        (x, gamma, beta)
    }

    fn to_f64(t: Tensor<FlexAd, 4>) -> Vec<f64> {
        t.into_data().to_vec::<f32>().expect("f32").into_iter().map(f64::from).collect()
    }

    /// What follows the normalisation in [`run_with`].
    #[derive(Clone, Copy, PartialEq)]
    enum Then {
        Nothing,
        FusedRelu,
        BurnRelu,
    }

    fn run(
        x: &Tensor<FlexAd, 4>,
        gamma: &Tensor<FlexAd, 1>,
        beta: &Tensor<FlexAd, 1>,
        upstream: &Tensor<FlexAd, 4>,
    ) -> (TensorData, BatchStatistics, [TensorData; 3]) {
        run_with(x, gamma, beta, upstream, Then::Nothing)
    }

    fn run_with(
        x: &Tensor<FlexAd, 4>,
        gamma: &Tensor<FlexAd, 1>,
        beta: &Tensor<FlexAd, 1>,
        upstream: &Tensor<FlexAd, 4>,
        then: Then,
    ) -> (TensorData, BatchStatistics, [TensorData; 3]) {
        let (y, statistics) = try_batch_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5, then == Then::FusedRelu)
            .unwrap_or_else(|_| panic!("Autodiff<Flex> takes fer-models' kernel"));
        let y = if then == Then::BurnRelu { burn::tensor::activation::relu(y) } else { y };
        let grads = (y.clone() * upstream.clone()).sum().backward();
        let grad = |t: Option<Tensor<Flex, 4>>| t.expect("gradient").into_data();
        let grad1 = |t: Option<Tensor<Flex, 1>>| t.expect("gradient").into_data();
        (y.into_data(), statistics, [grad(x.grad(&grads)), grad1(gamma.grad(&grads)), grad1(beta.grad(&grads))])
    }

    /// The forward pass and every gradient against the formulas in `f64`, on an input whose mean
    /// (40) is far larger than its spread (0.5), where a one-pass `E[x²] − E[x]²` in `f32` would
    /// lose every digit of the variance; 7×7 planes (a 16-lane body and a tail).
    #[test]
    fn values_and_gradients_equal_the_formulas_in_f64() {
        let dims = [6, 3, 7, 7];
        let (x, gamma, beta) = inputs(dims, 40.0, 0.5);
        let upstream = Tensor::<FlexAd, 4>::random(dims, Distribution::Normal(0.0, 1.0), &Default::default());
        let (y, statistics, [dx, dgamma, dbeta]) = run(&x, &gamma, &beta, &upstream);
        let (xs, dys) = (to_f64(x.clone()), to_f64(upstream));
        let g: Vec<f32> = gamma.into_data().to_vec().expect("γ");
        let b: Vec<f32> = beta.into_data().to_vec().expect("β");
        let (y, dx): (Vec<f32>, Vec<f32>) = (y.to_vec().expect("y"), dx.to_vec().expect("dx"));
        let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (dgamma.to_vec().expect("dγ"), dbeta.to_vec().expect("dβ"));
        let plane = 49;
        let m = (dims[0] * plane) as f64;
        for c in 0..dims[1] {
            let idx: Vec<usize> =
                (0..dims[0]).flat_map(|n| (0..plane).map(move |p| (n * dims[1] + c) * plane + p)).collect();
            let mean = idx.iter().map(|&i| xs[i]).sum::<f64>() / m;
            let var = idx.iter().map(|&i| (xs[i] - mean).powi(2)).sum::<f64>() / m;
            let inv = 1.0 / (var + 1e-5).sqrt();
            assert!((statistics.mean[c] as f64 - mean).abs() < 1e-5, "mean {c}");
            assert!((statistics.variance[c] as f64 - var).abs() < 1e-5 * var, "variance {c}: {var}");
            let sdy: f64 = idx.iter().map(|&i| dys[i]).sum();
            let sdyx: f64 = idx.iter().map(|&i| dys[i] * (xs[i] - mean) * inv).sum();
            assert!((dbeta[c] as f64 - sdy).abs() < 1e-4 * (1.0 + sdy.abs()), "dβ {c}");
            assert!((dgamma[c] as f64 - sdyx).abs() < 1e-3 * (1.0 + sdyx.abs()), "dγ {c}: {} vs {sdyx}", dgamma[c]);
            for &i in &idx {
                let xhat = (xs[i] - mean) * inv;
                let want_y = xhat * g[c] as f64 + b[c] as f64;
                assert!((y[i] as f64 - want_y).abs() < 1e-3 * (1.0 + want_y.abs()), "y[{i}]: {} vs {want_y}", y[i]);
                let want_dx = g[c] as f64 * inv * (dys[i] - sdy / m - xhat * sdyx / m);
                assert!(
                    (dx[i] as f64 - want_dx).abs() < 1e-3 * (1.0 + want_dx.abs()),
                    "dx[{i}]: {} vs {want_dx}",
                    dx[i]
                );
            }
        }
    }

    /// Bit-for-bit the same on 1 and 3 threads, and from one run to the next; planes of 2×2
    /// (grouped into tasks) and of 20×20.
    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        for dims in [[64, 40, 2, 2], [5, 4, 20, 20]] {
            let (x, gamma, beta) = inputs(dims, 0.3, 2.0);
            let upstream = Tensor::<FlexAd, 4>::random(dims, Distribution::Normal(0.0, 1.0), &Default::default());
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
                pool.install(|| run(&x, &gamma, &beta, &upstream))
            };
            let first = on(1);
            assert_eq!(on(3), first, "{dims:?}");
            assert_eq!(on(3), first, "{dims:?}, again");
        }
    }

    /// BatchNorm + ReLU in one operation gives bit for bit the values and gradients of the plain
    /// operation followed by Burn's ReLU, with outputs clipped and gradients gated on both sides.
    #[test]
    fn the_fused_relu_equals_burns_relu_after_the_plain_operation() {
        for dims in [[6, 3, 7, 7], [64, 40, 2, 2]] {
            let (x, gamma, beta) = inputs(dims, 0.3, 2.0);
            let upstream = Tensor::<FlexAd, 4>::random(dims, Distribution::Normal(0.0, 1.0), &Default::default());
            let fused = run_with(&x, &gamma, &beta, &upstream, Then::FusedRelu);
            assert_eq!(fused, run_with(&x, &gamma, &beta, &upstream, Then::BurnRelu), "{dims:?}");
            let plain = run_with(&x, &gamma, &beta, &upstream, Then::Nothing);
            let y: Vec<f32> = fused.0.to_vec().expect("y");
            let zeros = y.iter().filter(|&&v| v == 0.0).count();
            assert!(zeros > y.len() / 10 && zeros < y.len() * 9 / 10, "{dims:?}: {zeros} of {} clipped", y.len());
            assert_ne!(fused.2[0], plain.2[0], "{dims:?}: the gate changes dx");
            assert_eq!(fused.1, plain.1, "{dims:?}: the statistics are the input's");
        }
    }

    /// Untracked parents get no gradient, and other backends and empty inputs are handed back.
    #[test]
    fn untracked_parents_and_other_backends() {
        let (x, gamma, beta) = inputs([2, 3, 4, 4], 0.0, 1.0);
        let (y, _) = try_batch_norm(x.clone().detach(), gamma.clone(), beta.clone().detach(), 1e-5, false)
            .unwrap_or_else(|_| panic!("Autodiff<Flex> takes fer-models' kernel"));
        let grads = y.sum().backward();
        assert!(x.grad(&grads).is_none() && beta.grad(&grads).is_none());
        assert!(gamma.grad(&grads).is_some());
        let device = Default::default();
        let x = Tensor::<Autodiff<NdArray>, 4>::zeros([1, 2, 3, 3], &device);
        let channel = || Tensor::<Autodiff<NdArray>, 1>::ones([2], &device);
        assert!(try_batch_norm(x, channel(), channel(), 1e-5, false).is_err());
        let x = Tensor::<Flex, 4>::zeros([1, 2, 3, 3], &Default::default());
        let channel = || Tensor::<Flex, 1>::ones([2], &Default::default());
        assert!(try_batch_norm(x, channel(), channel(), 1e-5, false).is_err(), "no autodiff: running statistics apply");
        let empty = Tensor::<FlexAd, 4>::zeros([2, 3, 0, 4], &Default::default());
        let channel = || Tensor::<FlexAd, 1>::ones([3], &Default::default());
        assert!(try_batch_norm(empty, channel(), channel(), 1e-5, false).is_err(), "an empty input is Burn's");
    }
}
