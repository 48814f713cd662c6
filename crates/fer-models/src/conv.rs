//! The convolution every fer-models network runs: Burn's, or fer-models' own on burn-flex.

use burn::nn::conv::Conv2d;
use burn::prelude::*;

/// `conv.forward(x)`; with the `flex` feature, on `Flex` and `Autodiff<Flex>`, through fer-models'
/// GEMM kernels (groups 1, dilation 1, symmetric padding: every convolution of the networks here),
/// which compute the same values and gradients up to float rounding: im2col + GEMM, or on small
/// maps GEMMs that leave out the taps on padding (one dense GEMM on maps smaller than the kernel,
/// one GEMM per region of output pixels for stride-1 "same" convolutions where more than a fifth of
/// the taps fall on padding: maps of 6×6 or smaller under 3×3 kernels). VGG19 training steps ran
/// 1.8× as fast with the first of these as with burn-flex's own convolution (docs/RESULTS.md,
/// "Convolutions on burn-flex"; the small-map paths added 1.05× and 1.04×). Every other backend
/// and convolution goes through Burn.
///
/// Results are bit-for-bit reproducible and do not depend on the number of threads: the kernels
/// split the batch into chunks and add partial sums in an order that follows from the shape alone.
///
/// ```
/// use burn::backend::{Autodiff, Flex};
/// use burn::nn::PaddingConfig2d;
/// use burn::nn::conv::Conv2dConfig;
/// use burn::tensor::{Distribution, Tensor};
///
/// type B = Autodiff<Flex>;
/// let device = Default::default();
/// let conv = Conv2dConfig::new([3, 8], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init::<B>(&device);
/// let x = Tensor::<B, 4>::random([2, 3, 12, 12], Distribution::Normal(0.0, 1.0), &device).require_grad();
/// let ours = fer_models::conv2d(&conv, x.clone());
/// let burns = conv.forward(x.clone());
/// assert!((ours.clone() - burns).abs().max().into_scalar() < 1e-4);
/// let grads = ours.sum().backward();
/// assert_eq!(x.grad(&grads).unwrap().dims(), [2, 3, 12, 12]);
/// ```
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    let x = match crate::cpu_conv::try_conv2d(conv, x) {
        Ok(out) => return out,
        Err(x) => x,
    };
    conv2d_with_weight_gradient(conv, x, weight_gradient())
}

/// [`conv2d`] through Burn (never fer-models' burn-flex kernels) with the weight gradient
/// computed as `choice` says rather than as the process-wide [`weight_gradient`].
pub fn conv2d_with_weight_gradient<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    choice: WeightGradient,
) -> Tensor<B, 4> {
    match gemm_limits(choice) {
        Some((min_side, max_in_channels)) => conv2d_gemm_weight_gradient(conv, x, min_side, max_in_channels),
        None => conv.forward(x),
    }
}

/// The smallest output side and the largest input channel count that `choice` routes through
/// the batched GEMMs; `None` for Burn's own weight gradients.
fn gemm_limits(choice: WeightGradient) -> Option<(usize, usize)> {
    match choice {
        WeightGradient::Backend => None,
        WeightGradient::Gemm { min_side } => Some((min_side, usize::MAX)),
        WeightGradient::GemmStem { max_in_channels } => Some((0, max_in_channels)),
    }
}

/// How [`conv2d`] gets a convolution's weight gradient on backends without fer-models' own kernels
/// (every backend but burn-flex): a process-wide choice, [`set_weight_gradient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightGradient {
    /// The backend's own (Burn's autodiff of its convolution): the default.
    #[default]
    Backend,
    /// As batched GEMMs, one per image of the batch, summed: for convolutions (groups 1, dilation
    /// 1) whose output map is at least `min_side` pixels on a side; the others as `Backend`.
    ///
    /// A weight gradient is one GEMM with a small output (out channels × in channels × taps:
    /// 64 × 576 for VGG19's second layer) and a long sum (batch × output pixels: 247,808 there).
    /// Burn 0.21's CUDA backend does not split that sum, so few of the GPU's cores work: on an
    /// H200 the weight gradients of VGG19's two 44×44 layers took 14.9 ms of a 43.5 ms step, 22 and
    /// 46 times their forward (docs/RESULTS.md, "Second GPU lease"). Here the forward stays the
    /// backend's convolution, its weight taken as a constant, and a second term with the value 0,
    /// `P − detach(P)` with `P = W · im2col(x)` per image, carries the weight gradient: the
    /// gradient of `P` in `W` is a batched GEMM over the batch's images, then a sum over them.
    /// It costs one more forward-sized GEMM and the im2col copy; whether it pays is measured on
    /// the card (`fer bench-train --weight-gradient gemm`). On an H200 with Burn 0.21's CUDA
    /// backend it does not: VGG19's step took 203.6 ms against 43.1 ms with Burn's own
    /// (docs/RESULTS.md, "Third GPU lease").
    Gemm {
        /// Smallest output side (height and width) routed through the GEMMs.
        min_side: usize,
    },
    /// As [`WeightGradient::Gemm`], whatever the output side, but only for convolutions with at
    /// most `max_in_channels` input channels: the networks' first convolution, which reads the
    /// gray face's one channel. There the im2col copy is small (9 values a pixel for a 3×3
    /// kernel) and the extra GEMM cheap, while Burn 0.21's CUDA backend computes that weight
    /// gradient with its fallback kernel (`wgrad_fallback`): 7,990 µs of VGG19's 43.5 ms step on
    /// an H200, the largest single weight gradient (docs/RESULTS.md, "Second GPU lease"). Whether
    /// the GEMMs beat it there is for the GPU's `wgrad` part to measure.
    GemmStem {
        /// Largest input channel count routed through the GEMMs (1: the gray first layer).
        max_in_channels: usize,
    },
}

/// 0: [`WeightGradient::Backend`]; `2s + 1`: [`WeightGradient::Gemm`] with `min_side` = `s`;
/// `2c + 2`: [`WeightGradient::GemmStem`] with `max_in_channels` = `c` (saturating).
static WEIGHT_GRADIENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets how [`conv2d`] computes weight gradients from now on, for every thread (see
/// [`WeightGradient`]). Values and gradients are the same up to float rounding either way.
pub fn set_weight_gradient(choice: WeightGradient) {
    let code = match choice {
        WeightGradient::Backend => 0,
        WeightGradient::Gemm { min_side } => min_side.min(usize::MAX / 2 - 1) * 2 + 1,
        WeightGradient::GemmStem { max_in_channels } => max_in_channels.min(usize::MAX / 2 - 1) * 2 + 2,
    };
    WEIGHT_GRADIENT.store(code, std::sync::atomic::Ordering::Relaxed);
}

/// The current [`WeightGradient`] choice.
pub fn weight_gradient() -> WeightGradient {
    match WEIGHT_GRADIENT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => WeightGradient::Backend,
        code if code % 2 == 1 => WeightGradient::Gemm { min_side: code / 2 },
        code => WeightGradient::GemmStem { max_in_channels: code / 2 - 1 },
    }
}

/// Where [`WeightGradient::Gemm`] applies: padding (top, left, bottom, right) and output size.
#[derive(Debug, PartialEq)]
struct GemmPlan {
    padding: [usize; 4],
    out: [usize; 2],
}

/// The [`GemmPlan`] of `conv` on `x`, or `None` where Burn's path stays: no autodiff or a weight
/// without gradient, groups or dilation other than 1, "same" padding, outputs under `min_side`,
/// more than `max_in_channels` input channels.
fn gemm_plan<B: Backend>(
    conv: &Conv2d<B>,
    x: &Tensor<B, 4>,
    min_side: usize,
    max_in_channels: usize,
) -> Option<GemmPlan> {
    let [_, in_channels, height, width] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let [top, left, bottom, right] = match conv.padding {
        burn::nn::PaddingConfig2d::Valid => [0; 4],
        burn::nn::PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        // "Same" padding: Burn's own rule (asymmetric for even kernels) stays Burn's.
        _ => return None,
    };
    let out_side = |size: usize, before: usize, after: usize, k: usize, stride: usize| {
        (size + before + after).checked_sub(k).map(|span| span / stride + 1)
    };
    let oh = out_side(height, top, bottom, kh, conv.stride[0])?;
    let ow = out_side(width, left, right, kw, conv.stride[1])?;
    let applies = B::ad_enabled(&x.device())
        && conv.weight.val().is_require_grad()
        && conv.groups == 1
        && conv.dilation == [1, 1]
        && oh.min(ow) >= min_side
        && in_channels <= max_in_channels;
    applies.then_some(GemmPlan { padding: [top, left, bottom, right], out: [oh, ow] })
}

/// [`WeightGradient::Gemm`]'s convolution: Burn's forward with the weight held constant, plus
/// `P − detach(P)` (zero) whose weight gradient is the batched GEMM. Falls back to
/// `conv.forward` where the weight takes no gradient (inference backends, frozen copies), for
/// groups or dilation other than 1, for outputs smaller than `min_side` and for inputs of more
/// than `max_in_channels` channels.
fn conv2d_gemm_weight_gradient<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    min_side: usize,
    max_in_channels: usize,
) -> Tensor<B, 4> {
    let Some(GemmPlan { padding: [top, left, bottom, right], out: [oh, ow] }) =
        gemm_plan(conv, &x, min_side, max_in_channels)
    else {
        return conv.forward(x);
    };
    let [n, _, _, _] = x.dims();
    let [kh, kw] = conv.kernel_size;
    let weight = conv.weight.val();
    let [out_channels, in_channels, _, _] = weight.dims();
    let options = burn::tensor::ops::PaddedConvOptions::asymmetric(
        conv.stride,
        [top, left],
        [bottom, right],
        conv.dilation,
        conv.groups,
    );
    let bias = conv.bias.as_ref().map(|b| b.val());
    let out = burn::tensor::module::conv2d(x.clone(), weight.clone().detach(), bias, options);
    // im2col of the constant input: [N, C_in·kh·kw, oh·ow], taps in the weight's (C_in, kh, kw) order.
    let taps = in_channels * kh * kw;
    let mut windows = x
        .detach()
        .pad((left, right, top, bottom), burn::tensor::ops::PadMode::Constant(0.0))
        .unfold::<5, _>(2, kh, conv.stride[0])
        .unfold::<6, _>(3, kw, conv.stride[1]);
    let [_, _, rows, cols, _, _] = windows.dims();
    if (rows, cols) != (oh, ow) {
        windows = windows.narrow(2, 0, oh).narrow(3, 0, ow);
    }
    let columns = windows.permute([0, 1, 4, 5, 2, 3]).reshape([n, taps, oh * ow]);
    let product = weight.reshape([1, out_channels, taps]).expand([n, out_channels, taps]).matmul(columns).reshape([
        n,
        out_channels,
        oh,
        ow,
    ]);
    out + (product.clone() - product.detach())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    type B = Autodiff<NdArray>;

    fn max_diff(a: Tensor<NdArray, 4>, b: Tensor<NdArray, 4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// The GEMM weight gradient: the same output and the same gradients of input, weight and bias
    /// as Burn's, for the convolutions of the networks (3×3 "same", strided 3×3 and 1×1 shortcuts,
    /// the one-channel first layer, a 2×2 map smaller than the kernel's reach).
    #[test]
    fn gemm_weight_gradient_matches_burns() {
        let device = Default::default();
        let cases =
            [(1, 8, 3, 1, 1, 12), (4, 8, 3, 1, 1, 11), (4, 6, 3, 2, 1, 11), (4, 6, 1, 2, 0, 10), (6, 5, 3, 1, 1, 2)];
        for (cin, cout, k, stride, pad, side) in cases {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init::<B>(&device);
            let x =
                Tensor::<B, 4>::random([3, cin, side, side], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let run = |choice| {
                let out = conv2d_with_weight_gradient(&conv, x.clone(), choice);
                // A loss whose gradient differs per output element.
                let grads = (out.clone() * out.clone()).sum().backward();
                let weight = conv.weight.grad(&grads).expect("weight gradient");
                let bias = conv.bias.as_ref().expect("bias").grad(&grads).expect("bias gradient");
                let input = x.grad(&grads).expect("input gradient");
                (out.inner(), weight, bias, input)
            };
            let (out_b, w_b, b_b, x_b) = run(WeightGradient::Backend);
            // The one-channel first layer through the stem's rule, the others through `Gemm`'s.
            let choice = if cin == 1 {
                WeightGradient::GemmStem { max_in_channels: 1 }
            } else {
                WeightGradient::Gemm { min_side: 0 }
            };
            let (out_g, w_g, b_g, x_g) = run(choice);
            let case = format!("{cin}→{cout}, {k}×{k}, stride {stride}, padding {pad}, side {side}");
            assert_eq!(out_g.dims(), out_b.dims(), "{case}");
            assert!(max_diff(out_g, out_b) < 1e-5, "output, {case}");
            let scale = w_b.clone().abs().max().into_scalar().max(1.0);
            assert!(max_diff(w_g, w_b) < 1e-4 * scale, "weight gradient, {case}");
            assert!((b_g - b_b).abs().max().into_scalar() < 1e-3, "bias gradient, {case}");
            assert!(max_diff(x_g, x_b) < 1e-4, "input gradient, {case}");
        }
    }

    /// Maps below `min_side`, inference backends and frozen weights take Burn's path unchanged.
    #[test]
    fn gemm_weight_gradient_falls_back_where_it_does_not_apply() {
        let device = Default::default();
        let conv =
            Conv2dConfig::new([2, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init::<B>(&device);
        let x = Tensor::<B, 4>::random([2, 2, 6, 6], Distribution::Default, &device);
        let gemm = WeightGradient::Gemm { min_side: 8 };
        assert_eq!(gemm_plan(&conv, &x, 8, usize::MAX), None, "6×6 outputs");
        assert!(gemm_plan(&conv, &x, 6, usize::MAX).is_some());
        assert_eq!(gemm_plan(&conv, &x, 0, 1), None, "2 input channels, the stem's rule");
        assert!(gemm_plan(&conv, &x, 0, 2).is_some());
        assert_eq!(gemm_plan(&conv.clone().no_grad(), &x, 0, usize::MAX), None, "frozen weights");
        assert_eq!(gemm_plan(&conv.valid(), &x.clone().inner(), 0, usize::MAX), None, "no autodiff");
        // Each choice's limits: the stem's rule takes any side but only few channels.
        let plan = |choice, conv: &Conv2d<B>, x: &Tensor<B, 4>| {
            gemm_limits(choice).and_then(|(side, channels)| gemm_plan(conv, x, side, channels))
        };
        let gray =
            Conv2dConfig::new([1, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init::<B>(&device);
        let gray_x = Tensor::<B, 4>::random([2, 1, 6, 6], Distribution::Default, &device);
        assert!(plan(WeightGradient::GemmStem { max_in_channels: 1 }, &gray, &gray_x).is_some(), "gray, 6×6");
        assert_eq!(plan(WeightGradient::GemmStem { max_in_channels: 1 }, &conv, &x), None, "2 channels");
        assert!(plan(WeightGradient::GemmStem { max_in_channels: 2 }, &conv, &x).is_some());
        assert_eq!(plan(WeightGradient::Gemm { min_side: 8 }, &gray, &gray_x), None, "gray, but 6×6 < 8");
        assert_eq!(plan(WeightGradient::Backend, &gray, &gray_x), None);
        let small = conv2d_with_weight_gradient(&conv, x.clone(), gemm);
        assert_eq!(max_diff(small.inner(), conv.forward(x.clone()).inner()), 0.0);
        let frozen = conv.clone().no_grad();
        let out = conv2d_with_weight_gradient(&frozen, x.clone(), WeightGradient::Gemm { min_side: 0 });
        assert_eq!(max_diff(out.inner(), frozen.forward(x.clone()).inner()), 0.0);
        let inference = conv.valid();
        let out = conv2d_with_weight_gradient(&inference, x.clone().inner(), WeightGradient::Gemm { min_side: 0 });
        assert_eq!(max_diff(out, inference.forward(x.inner())), 0.0);
    }

    #[test]
    fn weight_gradient_choice_round_trips() {
        // The only test that sets the process-wide choice; it restores the default.
        for choice in [
            WeightGradient::Gemm { min_side: 16 },
            WeightGradient::Gemm { min_side: 0 },
            WeightGradient::GemmStem { max_in_channels: 1 },
            WeightGradient::GemmStem { max_in_channels: 0 },
            WeightGradient::Gemm { min_side: usize::MAX / 2 - 1 },
            WeightGradient::Backend,
        ] {
            set_weight_gradient(choice);
            assert_eq!(weight_gradient(), choice);
        }
    }
}
