//! APGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
//! ensemble of diverse parameter-free attacks"): PGD with momentum and a step size of its own per
//! face, halved whenever the loss stops climbing, which leaves no step size to tune. AutoAttack's
//! first two attacks are APGD on the cross-entropy and on the difference of logits ratio (DLR),
//! a loss that does not change when the logits are scaled or shifted, so a model that only
//! flattens its softmax does not escape it. Written from the paper's Algorithm 1 and §3.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use rand::Rng;

use crate::attack::{AttackError, project, random_start};
use crate::linearity::face_cross_entropy;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// The loss APGD climbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApgdLoss {
    /// The cross-entropy of the label (`apgd-ce`).
    Ce,
    /// The difference of logits ratio of the label, `(max_{i≠y} z_i − z_y) / (z_π1 − z_π3)`, with
    /// `z_π1 ≥ z_π2 ≥ …` the sorted logits (`apgd-dlr`; needs 3 classes or more).
    Dlr,
    /// Both, one after the other from fresh random starts, the DLR run on the faces the
    /// cross-entropy run left unbroken only; a face counts as broken when either breaks it
    /// (`apgd`: the worst case of AutoAttack's first two attacks, up to twice the passes).
    CeThenDlr,
}

/// The momentum of the paper, α = 0.75: each step goes 3/4 of the way to the projected signed
/// step and keeps 1/4 of the last move.
const MOMENTUM: f64 = 0.75;
/// The paper's ρ: at a checkpoint the step size is halved when the loss rose in fewer than this
/// share of the steps since the last one.
const RHO: f64 = 0.75;

/// The iterations after which APGD may halve a face's step size, `w_j = ⌈p_j · steps⌉` with
/// `p_0 = 0`, `p_1 = 0.22`, `p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)` (the paper's §3.1),
/// without `w_0 = 0`, repeated values, or values past `steps`. For 100 steps: 22, 41, 57, 70, 80,
/// 87, 93, 99.
pub(crate) fn checkpoints(steps: usize) -> Vec<usize> {
    let (mut before, mut p) = (0.0f64, 0.22f64);
    let mut out: Vec<usize> = Vec::new();
    while p <= 1.0 + 1e-9 {
        // The small offset keeps a product such as 0.41 · 100 = 41.000000000000004 at 41.
        let w = (p * steps as f64 - 1e-9).ceil().max(0.0) as usize;
        if w > 0 && w <= steps && out.last() != Some(&w) {
            out.push(w);
        }
        let next = p + (p - before - 0.03).max(0.06);
        before = p;
        p = next;
    }
    out
}

/// The paper's test at a checkpoint, for one face: halve the step size when the loss rose on
/// fewer than ρ = 75 % of the `compared` steps since the last checkpoint (condition 1), or when the
/// step size was not halved at the last checkpoint and the best loss has not risen since
/// (condition 2).
pub(crate) fn halves(rises: usize, compared: usize, halved_last: bool, best: f32, best_at_last: f32) -> bool {
    let few_rises = (rises as f64) < RHO * compared as f64;
    let stalled = !halved_last && best <= best_at_last;
    few_rises || stalled
}

/// The refusal of a model of `classes` < 3 classes, which the DLR loss cannot attack.
pub(crate) fn dlr_needs_three_classes(classes: usize) -> AttackError {
    AttackError::Config(format!(
        "APGD's DLR loss compares the largest logit with the third: it needs 3 classes or more, the model has {classes}"
    ))
}

/// The per-face loss APGD climbs, `[N]`: cross-entropy or DLR of `targets` under `logits`.
pub(crate) fn per_face_loss<B: Backend>(
    loss: ApgdLoss,
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [n, classes] = logits.dims();
    match loss {
        ApgdLoss::Ce | ApgdLoss::CeThenDlr => face_cross_entropy(logits, targets),
        ApgdLoss::Dlr => {
            let device = logits.device();
            let index = targets.reshape([n, 1]);
            let label = logits.clone().gather(1, index.clone());
            let is_label = Tensor::<B, 1, Int>::arange(0..classes as i64, &device)
                .reshape([1, classes])
                .expand([n, classes])
                .equal(index.expand([n, classes]));
            let best_other = logits.clone().mask_fill(is_label, -1e30).max_dim(1);
            let sorted = logits.sort_descending(1);
            let spread = sorted.clone().narrow(1, 0, 1) - sorted.narrow(1, 2, 1);
            ((best_other - label) / spread.add_scalar(1e-12)).reshape([n])
        }
    }
}

/// One point of the walk: the loss per face, whether the answer left the label, and the
/// gradient of the summed loss (each face's own gradient) when asked for.
struct Point<B: AutodiffBackend> {
    /// The model's classes (the logits' width).
    classes: usize,
    loss: Vec<f32>,
    off_label: Vec<bool>,
    gradient: Option<Tensor<Inner<B>, 4>>,
}

/// What a walk climbs: `loss` of `targets` (`labels` on the host) under `forward`.
struct Objective<'a, B: AutodiffBackend, F> {
    forward: &'a F,
    targets: Tensor<B, 1, Int>,
    labels: Vec<i64>,
    loss: ApgdLoss,
}

impl<B, F> Objective<'_, B, F>
where
    B: AutodiffBackend,
    F: Fn(Tensor<B, 4>) -> Tensor<B, 2>,
{
    /// The loss and answers at `x`, and the gradient there when asked for. Refuses a DLR loss on
    /// a model of fewer than 3 classes.
    fn point(&self, x: &Tensor<Inner<B>, 4>, gradient: bool) -> Result<Point<B>, AttackError> {
        let input = Tensor::<B, 4>::from_inner(x.clone());
        let input = if gradient { input.require_grad() } else { input };
        let logits = (self.forward)(input.clone());
        let classes = logits.dims()[1];
        if self.loss == ApgdLoss::Dlr && classes < 3 {
            return Err(dlr_needs_three_classes(classes));
        }
        let per_face = per_face_loss(self.loss, logits.clone(), self.targets.clone());
        let answers = logits.inner().argmax(1).into_data().convert::<i64>().to_vec::<i64>().unwrap_or_default();
        let off_label = answers.iter().zip(&self.labels).map(|(a, y)| a != y).collect();
        let gradient = gradient.then(|| {
            let grads = per_face.clone().sum().backward();
            input.grad(&grads).unwrap_or_else(|| x.zeros_like())
        });
        let loss = per_face.inner().into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
        Ok(Point { classes, loss, off_label, gradient })
    }

    /// The same objective on the faces `rows` (positions in the batch) only, with `loss`, and
    /// those faces of `clean`.
    fn rows(
        &self,
        rows: &[usize],
        clean: &Tensor<Inner<B>, 4>,
        loss: ApgdLoss,
    ) -> (Objective<'_, B, F>, Tensor<Inner<B>, 4>) {
        let index: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        let index = Tensor::<Inner<B>, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &clean.device());
        let objective = Objective {
            forward: self.forward,
            targets: self.targets.clone().select(0, Tensor::from_inner(index.clone())),
            labels: rows.iter().map(|&i| self.labels[i]).collect(),
            loss,
        };
        (objective, clean.clone().select(0, index))
    }
}

/// `when` for the faces where `mask` holds, else `otherwise` (both `[N, C, H, W]`).
fn choose<Bk: Backend>(mask: &[bool], when: Tensor<Bk, 4>, otherwise: Tensor<Bk, 4>) -> Tensor<Bk, 4> {
    if mask.iter().all(|m| !m) {
        return otherwise;
    }
    if mask.iter().all(|m| *m) {
        return when;
    }
    let dims = when.dims();
    let mask = Tensor::<Bk, 1, Bool>::from_data(TensorData::new(mask.to_vec(), [dims[0]]), &when.device())
        .reshape([dims[0], 1, 1, 1])
        .expand(dims);
    otherwise.mask_where(mask, when)
}

/// `[N, 1, 1, 1]` from one value per face.
fn per_face<Bk: Backend>(values: &[f64], device: &Bk::Device) -> Tensor<Bk, 4> {
    let faces = values.len();
    let values: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    Tensor::from_data(TensorData::new(values, [faces, 1, 1, 1]), device)
}

/// APGD with `steps` gradient passes (and one forward at the last point) from a uniform random
/// start in the ε-ball, climbing `objective` (its loss [`ApgdLoss::Ce`] or [`ApgdLoss::Dlr`]).
/// Returns per face the first point whose answer left the label, else the point of highest loss,
/// and whether one left it. A model of fewer than 3 classes is refused at the first point, before
/// any step, when the objective is DLR or `dlr_follows`.
fn walk<B, F>(
    objective: &Objective<'_, B, F>,
    clean: &Tensor<Inner<B>, 4>,
    eps: f64,
    steps: usize,
    dlr_follows: bool,
    rng: &mut impl Rng,
) -> Result<(Tensor<Inner<B>, 4>, Vec<bool>), AttackError>
where
    B: AutodiffBackend,
    F: Fn(Tensor<B, 4>) -> Tensor<B, 2>,
{
    let device = clean.device();
    let faces = objective.labels.len();
    let mut step_size = vec![2.0 * eps; faces];
    let checkpoints = checkpoints(steps);

    let start = project(random_start(clean, eps, rng), clean, eps);
    let at_start = objective.point(&start, true)?;
    if dlr_follows && at_start.classes < 3 {
        return Err(dlr_needs_three_classes(at_start.classes));
    }
    let mut found = at_start.off_label.clone();
    let mut adversarial = start.clone();
    let (mut best, mut best_loss) = (start.clone(), at_start.loss.clone());
    let mut best_gradient = at_start.gradient.clone().unwrap_or_else(|| start.zeros_like());

    let (mut before, mut current) = (start.clone(), start);
    let mut gradient = best_gradient.clone();
    let mut loss_now = at_start.loss;
    // Since the last checkpoint: steps taken, steps on which the loss rose; at it: the best loss,
    // and whether the step size was halved there.
    let (mut compared, mut rises) = (0usize, vec![0usize; faces]);
    let mut best_at_checkpoint = best_loss.clone();
    let mut halved_at_checkpoint = vec![false; faces];

    for k in 0..steps {
        let signed = gradient.clone().sign() * per_face::<Inner<B>>(&step_size, &device);
        let next = if k == 0 {
            // x(1) = P(x(0) + η sign ∇): the first step has no momentum.
            project(current.clone() + signed, clean, eps)
        } else {
            let z = project(current.clone() + signed, clean, eps);
            let moved = (z - current.clone()).mul_scalar(MOMENTUM)
                + (current.clone() - before.clone()).mul_scalar(1.0 - MOMENTUM);
            project(current.clone() + moved, clean, eps)
        };
        let last = k + 1 == steps;
        let here = objective.point(&next, !last)?;
        let newly: Vec<bool> = found.iter().zip(&here.off_label).map(|(f, o)| !f && *o).collect();
        adversarial = choose(&newly, next.clone(), adversarial);
        found.iter_mut().zip(&here.off_label).for_each(|(f, o)| *f |= *o);
        let improved: Vec<bool> = here.loss.iter().zip(&best_loss).map(|(l, b)| l > b).collect();
        best = choose(&improved, next.clone(), best);
        if let Some(g) = &here.gradient {
            best_gradient = choose(&improved, g.clone(), best_gradient);
        }
        for i in 0..faces {
            if here.loss[i] > loss_now[i] {
                rises[i] += 1;
            }
            if improved[i] {
                best_loss[i] = here.loss[i];
            }
        }
        compared += 1;
        before = current;
        current = next;
        loss_now = here.loss;
        let Some(g) = here.gradient else { break };
        gradient = g;

        // The paper's iteration counter is k + 1 here: x(k + 2) comes next.
        if checkpoints.contains(&(k + 1)) {
            let mut halve = vec![false; faces];
            for i in 0..faces {
                halve[i] = halves(rises[i], compared, halved_at_checkpoint[i], best_loss[i], best_at_checkpoint[i]);
                if halve[i] {
                    step_size[i] /= 2.0;
                    // Restart from the best point, whose gradient is kept: no extra pass.
                    loss_now[i] = best_loss[i];
                }
                halved_at_checkpoint[i] = halve[i];
                best_at_checkpoint[i] = best_loss[i];
                rises[i] = 0;
            }
            compared = 0;
            current = choose(&halve, best.clone(), current);
            gradient = choose(&halve, best_gradient.clone(), gradient);
        }
    }
    Ok((choose(&found, adversarial, best), found))
}

/// APGD on `clean` (`[N, C, H, W]` in `[0, 1]`) against `targets`, as [`crate::perturb`] runs it
/// for [`crate::Attack::Apgd`]: `‖x' − x‖∞ ≤ ε`, `x' ∈ [0, 1]`.
pub(crate) fn apgd<B, F>(
    forward: &F,
    clean: &Tensor<Inner<B>, 4>,
    targets: Tensor<B, 1, Int>,
    eps: f64,
    steps: usize,
    loss: ApgdLoss,
    rng: &mut impl Rng,
) -> Result<Tensor<Inner<B>, 4>, AttackError>
where
    B: AutodiffBackend,
    F: Fn(Tensor<B, 4>) -> Tensor<B, 2>,
{
    let labels = targets.clone().inner().into_data().convert::<i64>().to_vec::<i64>().unwrap_or_default();
    if labels.is_empty() {
        return Ok(clean.clone());
    }
    let first = if loss == ApgdLoss::Dlr { ApgdLoss::Dlr } else { ApgdLoss::Ce };
    let objective = Objective { forward, targets, labels, loss: first };
    let (mut out, broken) = walk(&objective, clean, eps, steps, loss == ApgdLoss::CeThenDlr, rng)?;
    if loss != ApgdLoss::CeThenDlr {
        return Ok(out);
    }
    // As AutoAttack: the second attack runs on the faces the first left unbroken only.
    let left: Vec<usize> = (0..broken.len()).filter(|&i| !broken[i]).collect();
    if left.is_empty() {
        return Ok(out);
    }
    let (by_dlr_objective, faces) = objective.rows(&left, clean, ApgdLoss::Dlr);
    let (by_dlr, _) = walk(&by_dlr_objective, &faces, eps, steps, false, rng)?;
    let [_, c, h, w] = out.dims();
    for (j, &i) in left.iter().enumerate() {
        out = out.slice_assign([i..i + 1, 0..c, 0..h, 0..w], by_dlr.clone().slice([j..j + 1, 0..c, 0..h, 0..w]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attack, Labels, perturb};
    use burn::backend::{Autodiff, NdArray};
    use rand::rngs::ChaCha8Rng;
    use rand::{RngExt, SeedableRng};

    type B = Autodiff<NdArray>;

    fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().expect("floats")
    }

    fn answers(logits: Tensor<B, 2>) -> Vec<i64> {
        logits.argmax(1).into_data().convert::<i64>().to_vec::<i64>().expect("ints")
    }

    /// A random two-layer network on `side × side` faces: each face's loss landscape its own.
    fn network(rng: &mut ChaCha8Rng, side: usize, hidden: usize) -> impl Fn(Tensor<B, 4>) -> Tensor<B, 2> + use<> {
        let device = Default::default();
        let d = side * side;
        let w1: Vec<f32> = (0..d * hidden).map(|_| rng.random_range(-1.0f32..=1.0)).collect();
        let w2: Vec<f32> = (0..hidden * 7).map(|_| rng.random_range(-1.0f32..=1.0)).collect();
        let w1 = Tensor::<B, 2>::from_data(TensorData::new(w1, [d, hidden]), &device);
        let w2 = Tensor::<B, 2>::from_data(TensorData::new(w2, [hidden, 7]), &device);
        move |x: Tensor<B, 4>| {
            let n = x.dims()[0];
            x.reshape([n, d]).sub_scalar(0.5).matmul(w1.clone()).tanh().matmul(w2.clone()).mul_scalar(3.0)
        }
    }

    fn faces(rng: &mut ChaCha8Rng, n: usize, side: usize) -> Tensor<B, 4> {
        let v: Vec<f32> = (0..n * side * side).map(|_| rng.random_range(0.0f32..=1.0)).collect();
        Tensor::from_data(TensorData::new(v, [n, 1, side, side]), &Default::default())
    }

    #[test]
    fn checkpoints_follow_the_papers_schedule() {
        // p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05, past the end).
        assert_eq!(checkpoints(100), vec![22, 41, 57, 70, 80, 87, 93, 99]);
        assert_eq!(checkpoints(10), vec![3, 5, 6, 7, 8, 9, 10]);
        assert_eq!(checkpoints(1), vec![1]);
    }

    #[test]
    fn the_step_size_is_halved_as_the_paper_says() {
        // Condition 1: rises on fewer than 75 % of the steps (here 16 of 22 = 72.7 %; 17 is 77 %).
        assert!(halves(16, 22, true, 2.0, 1.0));
        assert!(!halves(17, 22, true, 2.0, 1.0));
        // Condition 2: not halved last time and no new best since, whatever the rises.
        assert!(halves(22, 22, false, 1.0, 1.0));
        assert!(!halves(22, 22, true, 1.0, 1.0), "halved last time: condition 2 waits");
        assert!(!halves(22, 22, false, 1.5, 1.0), "a new best since the last checkpoint");
    }

    #[test]
    fn the_losses_are_the_hand_computed_ones() {
        let device = Default::default();
        let z = [[2.0f32, 1.0, 0.5, -1.0], [0.0, 3.0, 1.0, 2.0]];
        let logits = |scale: f32, shift: f32| {
            let v: Vec<f32> = z.concat().iter().map(|v| v * scale + shift).collect();
            Tensor::<B, 2>::from_data(TensorData::new(v, [2, 4]), &device)
        };
        let labels = || Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i64, 2], [2]), &device);
        // DLR: (max_{i≠y} z_i − z_y) / (z_π1 − z_π3): (1 − 2) / (2 − 0.5) and (3 − 1) / (3 − 1).
        let dlr = floats(per_face_loss(ApgdLoss::Dlr, logits(1.0, 0.0), labels()));
        assert!((dlr[0] + 2.0 / 3.0).abs() < 1e-6 && (dlr[1] - 1.0).abs() < 1e-6, "{dlr:?}");
        // It does not see the logits' scale or shift (the cross-entropy does).
        let moved = floats(per_face_loss(ApgdLoss::Dlr, logits(3.0, 5.0), labels()));
        assert!(dlr.iter().zip(&moved).all(|(a, b)| (a - b).abs() < 1e-6), "{moved:?}");
        let ce = floats(per_face_loss(ApgdLoss::Ce, logits(1.0, 0.0), labels()));
        for (face, label) in [(0usize, 0usize), (1, 2)] {
            let sum: f64 = z[face].iter().map(|v| f64::from(*v).exp()).sum();
            let want = sum.ln() - f64::from(z[face][label]);
            assert!((f64::from(ce[face]) - want).abs() < 1e-5, "face {face}: {} vs {want}", ce[face]);
        }
        let scaled = floats(per_face_loss(ApgdLoss::Ce, logits(3.0, 5.0), labels()));
        assert!((scaled[0] - ce[0]).abs() > 0.1);
    }

    #[test]
    fn halving_the_step_size_finds_a_maximum_inside_the_ball() {
        // The cross-entropy of class 0 is log(1 + 6 exp(−50 ‖x − c‖²)), highest at x = c, a point
        // inside the ball: a fixed step of 2ε would jump around it; APGD's halvings close in.
        let device = Default::default();
        let (eps, clean) = (0.1, 0.5f32);
        let c: Vec<f32> = [0.05f32, -0.07, 0.02, -0.01].iter().map(|o| clean + o).collect();
        let centre = Tensor::<B, 2>::from_data(TensorData::new(c.clone(), [1, 4]), &device);
        let forward = |x: Tensor<B, 4>| {
            let n = x.dims()[0];
            let z0 = (x.reshape([n, 4]) - centre.clone()).powi_scalar(2).sum_dim(1).mul_scalar(50.0);
            Tensor::cat(vec![z0, Tensor::zeros([n, 6], &device)], 1)
        };
        let images = Tensor::<B, 4>::full([1, 1, 2, 2], clean, &device);
        let labels = Labels::Given(Tensor::from_data(TensorData::new(vec![0i64], [1]), &device));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let got =
            floats(perturb(&Attack::apgd(eps, 100, ApgdLoss::Ce), forward, images, labels, &mut rng).expect("runs"));
        let off = got.iter().zip(&c).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(f64::from(off) < eps / 20.0, "{got:?} is {off} from the maximum {c:?}");
    }

    #[test]
    fn each_face_walks_alone_and_the_ensemble_keeps_what_ce_broke() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let forward = network(&mut rng, 4, 12);
        let images = faces(&mut rng, 6, 4);
        let eps = 0.02;
        let run = |attack: Attack, images: Tensor<B, 4>, seed: u64| {
            floats(
                perturb(&attack, &forward, images, Labels::Predicted, &mut ChaCha8Rng::seed_from_u64(seed))
                    .expect("runs"),
            )
        };
        // The fifth face (one the attack does not break, so its best point is returned) alone,
        // its random start drawn as in the batch (after the first four faces' 4 × 16 draws): with
        // losses, step sizes and restarts kept per face, it ends at the same point as in the batch.
        let ce = Attack::apgd(eps, 20, ApgdLoss::Ce);
        let all = run(ce, images.clone(), 5);
        let mut skip = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..64 {
            let _: f32 = skip.random_range(-(eps as f32)..=eps as f32);
        }
        let alone =
            floats(perturb(&ce, &forward, images.clone().narrow(0, 4, 1), Labels::Predicted, &mut skip).expect("runs"));
        assert_eq!(&all[64..80], &alone[..]);

        let clean = answers(forward(images.clone()));
        let broken = |pixels: &[f32]| {
            let x = Tensor::<B, 4>::from_data(TensorData::new(pixels.to_vec(), [6, 1, 4, 4]), &Default::default());
            answers(forward(x)).iter().zip(&clean).map(|(a, c)| a != c).collect::<Vec<bool>>()
        };
        // The ensemble's first run is the CE run above (same seed): where it broke a face, the
        // ensemble keeps its point, pixel for pixel.
        let both = run(Attack::apgd(eps, 20, ApgdLoss::CeThenDlr), images, 5);
        let (by_ce, by_both) = (broken(&all), broken(&both));
        assert!(by_ce.iter().any(|b| *b) && by_ce.iter().any(|b| !b), "a budget that breaks some faces: {by_ce:?}");
        for face in 0..6 {
            assert!(by_both[face] || !by_ce[face], "face {face}: broken by CE, not by CE then DLR");
            if by_ce[face] {
                assert_eq!(&both[face * 16..][..16], &all[face * 16..][..16], "face {face}");
            }
        }
    }
}
