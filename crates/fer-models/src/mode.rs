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

/// `norm` applied in `mode`. Inference: `(x − running_mean) / sqrt(running_var + ε) · γ + β`,
/// the formula of Burn's own inference path.
pub(crate) fn batch_norm<B: Backend>(norm: &BatchNorm<B>, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
    match mode {
        Mode::Backend => norm.forward(x),
        Mode::Inference => {
            let channels = x.dims()[1];
            let shape = [1, channels, 1, 1];
            let mean = norm.running_mean.value().reshape(shape);
            let std = norm.running_var.value().add_scalar(norm.epsilon).sqrt().reshape(shape);
            (x - mean) / std * norm.gamma.val().reshape(shape) + norm.beta.val().reshape(shape)
        }
    }
}

/// `dropout` applied in `mode` (inference: the identity).
pub(crate) fn dropout<B: Backend>(dropout: &Dropout, x: Tensor<B, 2>, mode: Mode) -> Tensor<B, 2> {
    match mode {
        Mode::Backend => dropout.forward(x),
        Mode::Inference => x,
    }
}
