//! ELLE's local-linearity error (Abad Rocamora et al., ICLR 2024), a regulariser against
//! catastrophic overfitting in single-step adversarial training that needs no double
//! backpropagation.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::log_softmax;
use rand::{Rng, RngExt};

use crate::AttackError;
use crate::attack::random_start;

/// ELLE's local-linearity error of the cross-entropy around `images` (`[N, C, H, W]` in
/// `[0, 1]`) against `targets`, as a `[1]` tensor:
/// `mean over faces of (L(x_c) − α·L(x_a) − (1 − α)·L(x_b))²`, where `x_a` and `x_b` are drawn
/// uniformly from the L∞ ball of radius `eps` around each face (clipped to `[0, 1]`),
/// `α ~ U(0, 1)` per face, `x_c = α·x_a + (1 − α)·x_b`, and `L` is each face's cross-entropy
/// of `forward`'s logits.
///
/// A loss that is linear in the input within the ball has error 0; catastrophic overfitting
/// goes with a loss surface that curves sharply inside it, which FGSM's single linear step
/// then misjudges. Abad Rocamora et al. add `λ ·` this error to the adversarial training loss
/// (their CIFAR-10 scripts, FGSM without a random start: λ = 1,000 up to ε = 8/255, 5,000 from
/// 10/255 to 20/255, 10,000 from 22/255 to 26/255). The error is
/// differentiable in whatever `forward` depends on (a model's parameters); the points
/// themselves are detached.
///
/// `forward` is called three times, on `x_a`, `x_b` and `x_c` in that order, each `[N, C, H,
/// W]`: a forward with dropout should draw the same masks in all three (see
/// `fer_models::Model::forward_training`'s seed), or the error measures the masks'
/// differences rather than the curvature. The draws come from `rng` on the host: the noise of
/// `x_a`, that of `x_b` (as [`crate::perturb`]'s random starts), then the N values of α. An
/// empty batch gives 0.
pub fn local_linearity_error<B, F>(
    mut forward: F,
    images: Tensor<B, 4>,
    targets: Tensor<B, 1, Int>,
    eps: f64,
    rng: &mut impl Rng,
) -> Result<Tensor<B, 1>, AttackError>
where
    B: Backend,
    F: FnMut(Tensor<B, 4>) -> Tensor<B, 2>,
{
    if !(0.0..=1.0).contains(&eps) {
        return Err(AttackError::Epsilon { eps });
    }
    let clean = images.detach();
    let [n, _, _, _] = clean.dims();
    let device = clean.device();
    if n == 0 {
        return Ok(Tensor::zeros([1], &device));
    }
    if targets.dims()[0] != n {
        return Err(AttackError::Config(format!("{} targets for a batch of {n} faces", targets.dims()[0])));
    }
    let x_a = random_start(&clean, eps, rng).clamp(0.0, 1.0);
    let x_b = random_start(&clean, eps, rng).clamp(0.0, 1.0);
    let alpha: Vec<f32> = (0..n).map(|_| rng.random_range(0.0..=1.0f32)).collect();
    let alpha = Tensor::<B, 1>::from_data(TensorData::new(alpha, [n]), &device);
    let alpha_4d = alpha.clone().reshape([n, 1, 1, 1]);
    let x_c = x_a.clone() * alpha_4d.clone() + x_b.clone() * (alpha_4d.ones_like() - alpha_4d);
    let mut face_loss = |x: Tensor<B, 4>| face_cross_entropy(forward(x), targets.clone());
    let (loss_a, loss_b, loss_c) = (face_loss(x_a), face_loss(x_b), face_loss(x_c));
    let linear = loss_a * alpha.clone() + loss_b * (alpha.ones_like() - alpha);
    Ok((loss_c - linear).powi_scalar(2).mean())
}

/// Each face's cross-entropy: `−log softmax(logits)[target]`, `[N]`.
pub(crate) fn face_cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    log_softmax(logits, 1).gather(1, targets.unsqueeze_dim(1)).squeeze_dim::<1>(1).neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;
    use std::cell::RefCell;

    type B = Autodiff<NdArray>;

    const N: usize = 3;
    const D: usize = 4;
    const K: usize = 3;

    fn weights() -> Vec<f32> {
        (0..D * K).map(|i| ((i * 37 % 23) as f32 - 11.0) / 4.0).collect()
    }

    fn faces() -> Vec<f32> {
        vec![0.2, 0.9, 0.5, 0.0, 1.0, 0.3, 0.6, 0.45, 0.05, 0.7, 0.35, 0.8]
    }

    const LABELS: [i64; N] = [2, 0, 1];

    fn tensors(device: &Device<B>) -> (Tensor<B, 2>, Tensor<B, 4>, Tensor<B, 1, Int>) {
        let w = Tensor::<B, 2>::from_data(TensorData::new(weights(), [D, K]), device).require_grad();
        let x = Tensor::<B, 4>::from_data(TensorData::new(faces(), [N, 1, 2, 2]), device);
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(LABELS.to_vec(), [N]), device);
        (w, x, y)
    }

    fn value(t: Tensor<B, 1>) -> f64 {
        f64::from(t.into_scalar())
    }

    #[test]
    fn equals_a_hand_computation_on_a_linear_model() {
        let device = Default::default();
        let (w, x, y) = tensors(&device);
        let forward = |images: Tensor<B, 4>| images.reshape([N, D]).matmul(w.clone());
        let eps = 0.3;
        let error = local_linearity_error(forward, x, y, eps, &mut ChaCha8Rng::seed_from_u64(7)).expect("ok");

        // The same draws, in the documented order, and the losses in f64.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let e = eps as f32;
        let mut draw = || -> Vec<f64> {
            faces().iter().map(|&p| f64::from((p + rng.random_range(-e..=e)).clamp(0.0, 1.0))).collect()
        };
        let (a, b) = (draw(), draw());
        let alpha: Vec<f64> = (0..N).map(|_| f64::from(rng.random_range(0.0..=1.0f32))).collect();
        let w = weights();
        let loss = |x: &[f64], face: usize| -> f64 {
            let z: Vec<f64> =
                (0..K).map(|c| (0..D).map(|j| x[face * D + j] * f64::from(w[j * K + c])).sum::<f64>()).collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let log_sum = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            log_sum - z[LABELS[face] as usize]
        };
        let mut sum = 0.0;
        for (face, &t) in alpha.iter().enumerate() {
            let c: Vec<f64> = a.iter().zip(&b).map(|(p, q)| t * p + (1.0 - t) * q).collect();
            let gap = loss(&c, face) - t * loss(&a, face) - (1.0 - t) * loss(&b, face);
            sum += gap * gap;
        }
        let expected = sum / N as f64;
        assert!(expected > 1e-3, "the test's losses must curve within the ball: {expected}");
        let got = value(error);
        assert!((got - expected).abs() <= 1e-3 * expected, "{got} vs {expected}");
    }

    #[test]
    fn is_zero_at_eps_zero_and_differentiable_in_the_model() {
        let device = Default::default();
        let (w, x, y) = tensors(&device);
        let forward = |images: Tensor<B, 4>| images.reshape([N, D]).matmul(w.clone());
        let zero = local_linearity_error(forward, x.clone(), y.clone(), 0.0, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(value(zero.expect("ok")), 0.0, "three copies of the faces");
        let error = local_linearity_error(forward, x, y, 0.2, &mut ChaCha8Rng::seed_from_u64(1)).expect("ok");
        let grads = error.backward();
        let gradient = w.grad(&grads).expect("the weights get a gradient");
        let size: f32 = gradient.abs().sum().into_scalar();
        assert!(size > 0.0, "the error must train the model");
    }

    #[test]
    fn points_stay_in_the_ball_and_the_third_lies_between_the_others() {
        let device = Default::default();
        let (w, x, y) = tensors(&device);
        let seen = RefCell::new(Vec::new());
        let forward = |images: Tensor<B, 4>| {
            seen.borrow_mut().push(images.clone().into_data().convert::<f32>().to_vec::<f32>().expect("floats"));
            images.reshape([N, D]).matmul(w.clone())
        };
        let eps = 0.25;
        local_linearity_error(forward, x, y, eps, &mut ChaCha8Rng::seed_from_u64(3)).expect("ok");
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 3, "one pass per point");
        let clean = faces();
        for point in &seen {
            for (p, c) in point.iter().zip(&clean) {
                assert!((0.0..=1.0).contains(p) && (p - c).abs() <= eps as f32 + 1e-6, "{p} from {c}");
            }
        }
        let mut strictly_between = 0;
        for ((a, b), c) in seen[0].iter().zip(&seen[1]).zip(&seen[2]) {
            assert!(*c >= a.min(*b) - 1e-6 && *c <= a.max(*b) + 1e-6, "{c} not between {a} and {b}");
            strictly_between += usize::from(*c > a.min(*b) + 1e-4 && *c < a.max(*b) - 1e-4);
        }
        assert!(strictly_between > clean.len() / 2, "x_c must mix x_a and x_b: {strictly_between}");
        assert_ne!(seen[0], seen[1], "two independent draws");
    }

    #[test]
    fn refuses_bad_budgets_and_mismatched_targets() {
        let device = Default::default();
        let (w, x, y) = tensors(&device);
        let forward = |images: Tensor<B, 4>| images.reshape([N, D]).matmul(w.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for eps in [-0.1, 1.5, f64::NAN] {
            let err = local_linearity_error(forward, x.clone(), y.clone(), eps, &mut rng).expect_err("bad ε");
            assert!(matches!(err, AttackError::Epsilon { .. }), "{err}");
        }
        let two = y.narrow(0, 0, 2);
        let err = local_linearity_error(forward, x, two, 0.1, &mut rng).expect_err("2 targets, 3 faces");
        assert!(err.to_string().contains("2 targets for a batch of 3 faces"), "{err}");
        let empty = Tensor::<B, 4>::zeros([0, 1, 2, 2], &device);
        let none = Tensor::<B, 1, Int>::zeros([0], &device);
        let zero =
            local_linearity_error(|i: Tensor<B, 4>| i.reshape([0, D]).matmul(w.clone()), empty, none, 0.1, &mut rng);
        assert_eq!(value(zero.expect("empty batch")), 0.0);
    }
}
