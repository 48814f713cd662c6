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
    conv.forward(x)
}
