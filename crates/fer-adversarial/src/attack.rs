//! FGSM, FGSM-RS, PGD-k and APGD under an L∞ budget, on pixels in `[0, 1]`, and N-FGSM, a
//! training attack whose examples leave that budget on purpose.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, RngExt};

use crate::apgd::{ApgdLoss, apgd};

/// What an attack cannot be run with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttackError {
    /// ε outside `[0, 1]` (pixels are scaled to `[0, 1]`) or not a number.
    #[error("ε = {eps} is outside [0, 1] (pixels are scaled to [0, 1]; ε = 8/255 ≈ 0.031 is a common budget)")]
    Epsilon {
        /// The value given.
        eps: f64,
    },
    /// Step size α negative or not a number.
    #[error("step size α = {alpha} must be a finite number >= 0")]
    StepSize {
        /// The value given.
        alpha: f64,
    },
    /// PGD or APGD with zero iterations.
    #[error("PGD and APGD need at least 1 step (got 0)")]
    Steps,
    /// An attack name that is not `fgsm`, `fgsm-rs`, `n-fgsm`, `pgd`, `apgd-ce`, `apgd-dlr` or
    /// `apgd`.
    #[error("unknown attack `{0}` (expected fgsm, fgsm-rs, n-fgsm, pgd, apgd-ce, apgd-dlr or apgd)")]
    UnknownMethod(String),
    /// N-FGSM's noise magnitude negative or not a number.
    #[error("N-FGSM noise magnitude {noise} must be a finite number >= 0")]
    Noise {
        /// The value given.
        noise: f64,
    },
    /// A training-only attack ([`Attack::is_bounded`] false) asked to measure robustness.
    #[error(
        "`{0}` is a training attack: its examples leave the ε-ball (up to noise + α from the clean face), so its \
         accuracy measures no ε-robustness; evaluate with fgsm, fgsm-rs, pgd or apgd"
    )]
    TrainingOnly(&'static str),
    /// A label source that is not `predicted`, `true` or `distribution`.
    #[error("unknown label source `{0}` (expected predicted, true or distribution)")]
    UnknownLabels(String),
    /// The clean answer distribution as labels of an attack without a random start.
    #[error(
        "labels `distribution` (TRADES's KL objective) have a zero gradient at the clean image, so `{0}` would not \
         move it: use an attack with a random start (fgsm-rs, n-fgsm or pgd)"
    )]
    NeedsRandomStart(&'static str),
    /// Another setting is not allowed (batch size, crop side, face index, …).
    #[error("{0}")]
    Config(String),
    /// ε written in a way that cannot be read.
    #[error("cannot read ε `{0}` (write 0.3, 8/255 or 0)")]
    BadEpsilon(String),
    /// A step size α written in a way that cannot be read.
    #[error("cannot read step size α `{0}` (write 0.075, 2/255 or 0)")]
    BadStepSize(String),
}

/// Which labels the attack pushes the model away from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    /// The model's own prediction on the clean image (the reference; no label leaking).
    #[default]
    Predicted,
    /// The ground-truth label.
    True,
    /// The model's answer distribution (softmax) on the clean image: the attack maximises
    /// `KL(p(x) ‖ p(x'))`, TRADES's inner maximisation (Zhang et al. 2019), which has the
    /// gradient of the cross-entropy against `p(x)` (they differ by `p(x)`'s entropy, a
    /// constant). That gradient is zero at `x' = x`, so it needs an attack with a random start
    /// (FGSM-RS or PGD).
    Distribution,
}

impl std::str::FromStr for LabelSource {
    type Err = AttackError;
    fn from_str(s: &str) -> Result<LabelSource, AttackError> {
        match s.to_ascii_lowercase().as_str() {
            "predicted" => Ok(LabelSource::Predicted),
            "true" => Ok(LabelSource::True),
            "distribution" => Ok(LabelSource::Distribution),
            _ => Err(AttackError::UnknownLabels(s.to_string())),
        }
    }
}

/// An untargeted L∞ attack; plain data, saved with runs and reports.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Attack {
    /// Goodfellow et al. 2015: `x' = clip(x + ε·sign(∇ₓ CE), 0, 1)`. One forward + backward.
    Fgsm {
        /// L∞ budget.
        eps: f64,
    },
    /// Wong et al. 2020 ("fast is better than free"): start at `x + δ`, `δ ~ U(−ε, ε)`, one
    /// signed-gradient step of `alpha` (1.25ε), projected back into the ε-ball and `[0, 1]`.
    FgsmRs {
        /// L∞ budget.
        eps: f64,
        /// Step size.
        alpha: f64,
    },
    /// Madry et al. 2018: random start in the ε-ball, then `steps` signed-gradient steps of
    /// `alpha`, each projected into the ε-ball and `[0, 1]`.
    Pgd {
        /// L∞ budget.
        eps: f64,
        /// Step size.
        alpha: f64,
        /// Iterations.
        steps: usize,
    },
    /// Croce & Hein 2020 (APGD, AutoAttack's first attacks): from a random start in the ε-ball,
    /// `steps` steps of PGD with momentum 0.75 and a step size per face that starts at 2ε and is
    /// halved at checkpoints where the loss stopped climbing (restarting from the face's best
    /// point), so no step size is set by hand. It keeps, per face, the first point whose answer
    /// left the label, else the point of highest loss. With [`ApgdLoss::CeThenDlr`] it runs on
    /// the cross-entropy, then on the DLR loss for the faces still unbroken, and keeps, per face,
    /// a point that breaks it if either found one: a stronger evaluation than PGD-k, for up to
    /// `2 · steps` passes.
    Apgd {
        /// L∞ budget.
        eps: f64,
        /// Gradient passes of each run (AutoAttack: 100).
        steps: usize,
        /// The loss climbed.
        loss: ApgdLoss,
    },
    /// de Jorge et al. 2022 ("Make some noise: reliable and efficient single-step adversarial
    /// training", NeurIPS): start at `x + η`, `η ~ U(−noise, noise)` (the paper: noise = 2ε), one
    /// signed-gradient step of `alpha` (the paper: α = ε), clipped to `[0, 1]` only, **not** to the
    /// ε-ball: the example lies up to `noise + alpha` (3ε) from the clean face. The paper found
    /// that the stronger noise and the missing projection keep single-step training out of
    /// catastrophic overfitting, for one gradient pass, up to ε = 16/255 on CIFAR-10 (on FER2013
    /// at ε = 0.3 they did not: docs/RESULTS.md). A training attack: robustness evaluation
    /// refuses it ([`AttackError::TrainingOnly`]).
    NFgsm {
        /// The budget the training aims at (the evaluation attacks' ε).
        eps: f64,
        /// Half-width of the uniform noise.
        noise: f64,
        /// Step size.
        alpha: f64,
    },
}

impl Attack {
    /// FGSM with budget `eps`.
    pub fn fgsm(eps: f64) -> Attack {
        Attack::Fgsm { eps }
    }

    /// FGSM-RS with budget `eps` and Wong et al.'s step 1.25ε.
    pub fn fgsm_rs(eps: f64) -> Attack {
        Attack::FgsmRs { eps, alpha: 1.25 * eps }
    }

    /// N-FGSM aimed at budget `eps` with de Jorge et al.'s defaults: noise 2ε, step ε.
    pub fn n_fgsm(eps: f64) -> Attack {
        Attack::NFgsm { eps, noise: 2.0 * eps, alpha: eps }
    }

    /// PGD-`steps` with budget `eps` and step `2.5ε / steps` (Madry et al.'s rule: the walk
    /// can cross the ball 2.5 times).
    pub fn pgd(eps: f64, steps: usize) -> Attack {
        Attack::Pgd { eps, alpha: 2.5 * eps / steps.max(1) as f64, steps }
    }

    /// APGD with budget `eps`, `steps` passes per run and `loss`.
    pub fn apgd(eps: f64, steps: usize, loss: ApgdLoss) -> Attack {
        Attack::Apgd { eps, steps, loss }
    }

    /// Builds an attack from its CLI name (`fgsm`, `fgsm-rs`, `n-fgsm`, `pgd`, `apgd-ce`,
    /// `apgd-dlr`, `apgd`), budget, optional step size (default as the constructors; APGD sets
    /// its own and refuses one) and iterations (`None`: 10 for PGD, 100 for APGD, as in
    /// AutoAttack; the single-step attacks ignore it); N-FGSM's noise is 2ε (set another with
    /// [`Attack::with_noise`]). Checks the result.
    pub fn from_name(name: &str, eps: f64, alpha: Option<f64>, steps: Option<usize>) -> Result<Attack, AttackError> {
        let name = name.to_ascii_lowercase();
        let apgd_loss = match name.as_str() {
            "apgd-ce" => Some(ApgdLoss::Ce),
            "apgd-dlr" => Some(ApgdLoss::Dlr),
            "apgd" => Some(ApgdLoss::CeThenDlr),
            _ => None,
        };
        if let (Some(_), Some(alpha)) = (apgd_loss, alpha) {
            return Err(AttackError::Config(format!(
                "{name} sets its own step size (2ε, halved where the loss stalls): drop the step size α = {alpha}"
            )));
        }
        let attack = match (name.as_str(), apgd_loss) {
            (_, Some(loss)) => Attack::apgd(eps, steps.unwrap_or(100), loss),
            ("fgsm", _) => Attack::fgsm(eps),
            ("fgsm-rs", _) => Attack::FgsmRs { eps, alpha: alpha.unwrap_or(1.25 * eps) },
            ("n-fgsm" | "nfgsm", _) => Attack::NFgsm { eps, noise: 2.0 * eps, alpha: alpha.unwrap_or(eps) },
            ("pgd", _) => {
                let steps = steps.unwrap_or(10);
                match alpha {
                    Some(alpha) => Attack::Pgd { eps, alpha, steps },
                    None => Attack::pgd(eps, steps),
                }
            }
            _ => return Err(AttackError::UnknownMethod(name)),
        };
        attack.check()?;
        Ok(attack)
    }

    /// N-FGSM with noise half-width `noise` in place of its default 2ε; any other attack has no
    /// noise to set: [`AttackError::Config`] names it. Checks the result.
    pub fn with_noise(&self, noise: f64) -> Result<Attack, AttackError> {
        let Attack::NFgsm { eps, alpha, .. } = *self else {
            return Err(AttackError::Config(format!(
                "a noise magnitude is a setting of n-fgsm only, not of {}",
                self.method()
            )));
        };
        let attack = Attack::NFgsm { eps, noise, alpha };
        attack.check()?;
        Ok(attack)
    }

    /// `fgsm`, `fgsm-rs`, `n-fgsm`, `pgd`, `apgd-ce`, `apgd-dlr` or `apgd` (the CLI names).
    pub fn method(&self) -> &'static str {
        match self {
            Attack::Fgsm { .. } => "fgsm",
            Attack::FgsmRs { .. } => "fgsm-rs",
            Attack::NFgsm { .. } => "n-fgsm",
            Attack::Pgd { .. } => "pgd",
            Attack::Apgd { loss: ApgdLoss::Ce, .. } => "apgd-ce",
            Attack::Apgd { loss: ApgdLoss::Dlr, .. } => "apgd-dlr",
            Attack::Apgd { loss: ApgdLoss::CeThenDlr, .. } => "apgd",
        }
    }

    /// Whether every example lies within ε of its clean face (all but N-FGSM), which an attack
    /// must for its accuracy to measure ε-robustness.
    pub fn is_bounded(&self) -> bool {
        !matches!(self, Attack::NFgsm { .. })
    }

    /// A short label such as `PGD-10 ε=0.300`.
    pub fn label(&self) -> String {
        match self {
            Attack::Fgsm { eps } => format!("FGSM ε={eps:.3}"),
            Attack::FgsmRs { eps, .. } => format!("FGSM-RS ε={eps:.3}"),
            Attack::NFgsm { eps, noise, .. } => format!("N-FGSM ε={eps:.3} noise={noise:.3}"),
            Attack::Pgd { eps, steps, .. } => format!("PGD-{steps} ε={eps:.3}"),
            Attack::Apgd { eps, steps, loss } => {
                let loss = match loss {
                    ApgdLoss::Ce => "CE",
                    ApgdLoss::Dlr => "DLR",
                    ApgdLoss::CeThenDlr => "CE+DLR",
                };
                format!("APGD-{loss}-{steps} ε={eps:.3}")
            }
        }
    }

    /// The L∞ budget.
    pub fn eps(&self) -> f64 {
        match *self {
            Attack::Fgsm { eps }
            | Attack::FgsmRs { eps, .. }
            | Attack::NFgsm { eps, .. }
            | Attack::Pgd { eps, .. }
            | Attack::Apgd { eps, .. } => eps,
        }
    }

    /// The same attack with budget `eps`, the step size (and N-FGSM's noise) scaled in proportion
    /// (for ε sweeps and the training ε ramp).
    pub fn with_eps(&self, eps: f64) -> Attack {
        let scale = |alpha: f64| if self.eps() > 0.0 { alpha * eps / self.eps() } else { alpha };
        match *self {
            Attack::Fgsm { .. } => Attack::Fgsm { eps },
            Attack::FgsmRs { alpha, .. } => Attack::FgsmRs { eps, alpha: scale(alpha) },
            Attack::NFgsm { noise, alpha, .. } => Attack::NFgsm { eps, noise: scale(noise), alpha: scale(alpha) },
            Attack::Pgd { alpha, steps, .. } => Attack::Pgd { eps, alpha: scale(alpha), steps },
            Attack::Apgd { steps, loss, .. } => Attack::Apgd { eps, steps, loss },
        }
    }

    /// Gradient evaluations (forward + backward passes) per image (for `apgd`, at most: its DLR
    /// run skips the faces its cross-entropy run broke).
    pub fn gradient_passes(&self) -> usize {
        match *self {
            Attack::Fgsm { .. } | Attack::FgsmRs { .. } | Attack::NFgsm { .. } => 1,
            Attack::Pgd { steps, .. } => steps,
            Attack::Apgd { steps, loss: ApgdLoss::CeThenDlr, .. } => 2 * steps,
            Attack::Apgd { steps, .. } => steps,
        }
    }

    /// Checks that labels from `source` can drive this attack: the clean answer distribution
    /// ([`LabelSource::Distribution`]) needs a random start, which FGSM has not, and APGD climbs
    /// the loss of a class label.
    pub fn check_labels(&self, source: LabelSource) -> Result<(), AttackError> {
        match (source, self) {
            (LabelSource::Distribution, Attack::Fgsm { .. }) => Err(AttackError::NeedsRandomStart(self.method())),
            (LabelSource::Distribution, Attack::Apgd { .. }) => Err(AttackError::Config(format!(
                "labels `distribution` (TRADES's KL objective) cannot drive {}: APGD climbs the cross-entropy or the \
                 DLR loss of a class label; use predicted or true labels",
                self.method()
            ))),
            _ => Ok(()),
        }
    }

    /// Checks ε ∈ [0, 1], α ≥ 0, N-FGSM's noise ≥ 0 and steps ≥ 1.
    pub fn check(&self) -> Result<(), AttackError> {
        let eps = self.eps();
        if !(eps.is_finite() && (0.0..=1.0).contains(&eps)) {
            return Err(AttackError::Epsilon { eps });
        }
        match *self {
            Attack::Fgsm { .. } => Ok(()),
            Attack::FgsmRs { alpha, .. } | Attack::NFgsm { alpha, .. } | Attack::Pgd { alpha, .. }
                if !(alpha.is_finite() && alpha >= 0.0) =>
            {
                Err(AttackError::StepSize { alpha })
            }
            Attack::NFgsm { noise, .. } if !(noise.is_finite() && noise >= 0.0) => Err(AttackError::Noise { noise }),
            Attack::Pgd { steps: 0, .. } | Attack::Apgd { steps: 0, .. } => Err(AttackError::Steps),
            _ => Ok(()),
        }
    }
}

/// Reads an ε such as `0.3`, `8/255` or `0`.
pub fn parse_eps(text: &str) -> Result<f64, AttackError> {
    let value = parse_fraction(text).ok_or_else(|| AttackError::BadEpsilon(text.to_string()))?;
    if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
        return Err(AttackError::Epsilon { eps: value });
    }
    Ok(value)
}

/// Reads a step size α such as `0.075`, `2/255` or `0` (written as ε is, see [`parse_eps`]).
pub fn parse_step_size(text: &str) -> Result<f64, AttackError> {
    let value = parse_fraction(text).ok_or_else(|| AttackError::BadStepSize(text.to_string()))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(AttackError::StepSize { alpha: value });
    }
    Ok(value)
}

/// Reads N-FGSM's noise half-width such as `0.6`, `16/255` or `0` (written as ε is, see
/// [`parse_eps`]; it may exceed 1, though noise past 1 covers the whole pixel range).
pub fn parse_noise(text: &str) -> Result<f64, AttackError> {
    let value = parse_fraction(text)
        .ok_or_else(|| AttackError::Config(format!("cannot read noise magnitude `{text}` (write 0.6, 16/255 or 0)")))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(AttackError::Noise { noise: value });
    }
    Ok(value)
}

/// `a` or `a/b` as a number; `None` when unreadable or `b` is 0.
fn parse_fraction(text: &str) -> Option<f64> {
    match text.trim().split_once('/') {
        Some((a, b)) => {
            let (a, b): (f64, f64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (b != 0.0).then(|| a / b)
        }
        None => text.trim().parse().ok(),
    }
}

/// The labels an attack pushes away from.
#[derive(Debug, Clone)]
pub enum Labels<B: Backend> {
    /// Given labels `[N]` (the ground truth, usually).
    Given(Tensor<B, 1, Int>),
    /// The model's prediction on the clean images.
    Predicted,
    /// The model's answer distribution on the clean images (see [`LabelSource::Distribution`]).
    Distribution,
}

impl<B: Backend> Labels<B> {
    /// The labels `source` names, `truth` being the ground truth of the batch.
    pub fn from_source(source: LabelSource, truth: Tensor<B, 1, Int>) -> Labels<B> {
        match source {
            LabelSource::True => Labels::Given(truth),
            LabelSource::Predicted => Labels::Predicted,
            LabelSource::Distribution => Labels::Distribution,
        }
    }
}

/// The gradient of the mean cross-entropy of `forward(images)` against `targets` with respect
/// to the images, and the logits. Only the input is differentiated: pass the forward of a
/// frozen model (`model.clone().no_grad()`) and no parameter gradient is even computed; the
/// gradients are dropped here in any case, so nothing reaches an optimiser.
pub fn input_gradient<B, F>(
    forward: &F,
    images: Tensor<B, 4>,
    targets: Option<Tensor<B, 1, Int>>,
) -> (Tensor<B::InnerBackend, 4>, Tensor<B::InnerBackend, 2>)
where
    B: AutodiffBackend,
    F: Fn(Tensor<B, 4>) -> Tensor<B, 2>,
{
    loss_input_gradient(forward, images, |logits| {
        // Predicted labels come from the same pass: FGSM on predictions costs one forward + backward.
        let targets = targets.unwrap_or_else(|| logits.clone().detach().argmax(1).squeeze_dim::<1>(1));
        CrossEntropyLossConfig::new().init(&logits.device()).forward(logits, targets)
    })
}

/// The gradient of `loss(forward(images))` with respect to the images only, and the logits.
fn loss_input_gradient<B, F>(
    forward: &F,
    images: Tensor<B, 4>,
    loss: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 1>,
) -> (Tensor<B::InnerBackend, 4>, Tensor<B::InnerBackend, 2>)
where
    B: AutodiffBackend,
    F: Fn(Tensor<B, 4>) -> Tensor<B, 2>,
{
    let x = images.detach().require_grad();
    let logits = forward(x.clone());
    let grads = loss(logits.clone()).backward();
    let gradient = x.grad(&grads).unwrap_or_else(|| x.clone().inner().zeros_like());
    (gradient, logits.inner())
}

/// Runs `attack` on `images` (`[N, C, H, W]` in `[0, 1]`) against the classifier `forward`
/// and returns the adversarial images, detached, with `‖x' − x‖∞ ≤ ε` and `x' ∈ [0, 1]`
/// ([`Attack::NFgsm`], a training attack: `‖x' − x‖∞ ≤ noise + α`).
///
/// `forward` is any differentiable map to logits; for a fer-rs model in the reference's setting
/// use a frozen copy in inference mode: `|x| frozen.logits_inference(x)`. Random starts draw
/// from `rng` on the host, so a seeded generator gives the same examples on every backend.
/// With [`Labels::Distribution`] the attack maximises [`kl_from_clean`] (TRADES) and needs a
/// random start: FGSM returns [`AttackError::NeedsRandomStart`].
pub fn perturb<B, F>(
    attack: &Attack,
    forward: F,
    images: Tensor<B, 4>,
    labels: Labels<B>,
    rng: &mut impl Rng,
) -> Result<Tensor<B, 4>, AttackError>
where
    B: AutodiffBackend,
    F: Fn(Tensor<B, 4>) -> Tensor<B, 2>,
{
    attack.check()?;
    let clean = images.detach().inner();
    let clean_logits = || forward(Tensor::from_inner(clean.clone())).inner();
    let targets = match (labels, attack) {
        (Labels::Given(t), _) => Targets::Hard(Some(t)),
        (Labels::Predicted, Attack::Fgsm { .. }) => Targets::Hard(None), // taken from the gradient pass itself
        (Labels::Predicted, _) => Targets::Hard(Some(Tensor::from_inner(clean_logits().argmax(1).squeeze_dim::<1>(1)))),
        (Labels::Distribution, _) => {
            attack.check_labels(LabelSource::Distribution)?;
            Targets::Distribution(clean_logits())
        }
    };
    let adversarial = match *attack {
        Attack::Fgsm { eps } => {
            let gradient = targets.gradient(&forward, Tensor::from_inner(clean.clone()));
            (clean.clone() + gradient.sign().mul_scalar(eps)).clamp(0.0, 1.0)
        }
        Attack::FgsmRs { eps, alpha } => {
            let mut x = project(random_start(&clean, eps, rng), &clean, eps);
            x = step(&forward, x, &clean, &targets, eps, alpha);
            x
        }
        Attack::NFgsm { noise, alpha, .. } => {
            let x = random_start(&clean, noise, rng).clamp(0.0, 1.0);
            let gradient = targets.gradient(&forward, Tensor::from_inner(x.clone()));
            (x + gradient.sign().mul_scalar(alpha)).clamp(0.0, 1.0)
        }
        Attack::Pgd { eps, alpha, steps } => {
            let mut x = project(random_start(&clean, eps, rng), &clean, eps);
            for _ in 0..steps {
                x = step(&forward, x, &clean, &targets, eps, alpha);
            }
            x
        }
        Attack::Apgd { eps, steps, loss } => {
            let Targets::Hard(Some(labels)) = targets else {
                // Predicted and given labels are hard labels here; the distribution is refused above.
                return Err(AttackError::Config(format!("{} needs class labels", attack.method())));
            };
            apgd(&forward, &clean, labels, eps, steps, loss, rng)?
        }
    };
    Ok(Tensor::from_inner(adversarial))
}

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// What the attack's loss compares the model's answer with.
enum Targets<B: AutodiffBackend> {
    /// Class labels (`None`: the prediction of the gradient pass itself); cross-entropy.
    Hard(Option<Tensor<B, 1, Int>>),
    /// The clean images' logits; `KL(softmax(clean) ‖ softmax(·))`.
    Distribution(Tensor<Inner<B>, 2>),
}

impl<B: AutodiffBackend> Targets<B> {
    /// The gradient of the attack's loss with respect to `images`.
    fn gradient<F>(&self, forward: &F, images: Tensor<B, 4>) -> Tensor<Inner<B>, 4>
    where
        F: Fn(Tensor<B, 4>) -> Tensor<B, 2>,
    {
        match self {
            Targets::Hard(labels) => input_gradient(forward, images, labels.clone()).0,
            Targets::Distribution(clean_logits) => {
                loss_input_gradient(forward, images, |logits| {
                    kl_from_clean(Tensor::from_inner(clean_logits.clone()), logits)
                })
                .0
            }
        }
    }
}

/// TRADES's robust term (Zhang et al. 2019): the batch mean of
/// `KL(softmax(clean_logits) ‖ softmax(attacked_logits))`, both `[N, classes]`, as a `[1]`
/// tensor. Differentiable in both arguments (TRADES trains through both); 0 when the two
/// answer distributions agree.
pub fn kl_from_clean<B: Backend>(clean_logits: Tensor<B, 2>, attacked_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let clean_log = log_softmax(clean_logits, 1);
    let terms = clean_log.clone().exp() * (clean_log - log_softmax(attacked_logits, 1));
    terms.sum_dim(1).mean()
}

/// One signed-gradient step of `alpha` from `x`, projected.
fn step<B, F>(
    forward: &F,
    x: Tensor<Inner<B>, 4>,
    clean: &Tensor<Inner<B>, 4>,
    targets: &Targets<B>,
    eps: f64,
    alpha: f64,
) -> Tensor<Inner<B>, 4>
where
    B: AutodiffBackend,
    F: Fn(Tensor<B, 4>) -> Tensor<B, 2>,
{
    let gradient = targets.gradient(forward, Tensor::from_inner(x.clone()));
    project(x + gradient.sign().mul_scalar(alpha), clean, eps)
}

/// `x` clipped into the ε-ball around `clean` and into `[0, 1]`.
pub(crate) fn project<B: Backend>(x: Tensor<B, 4>, clean: &Tensor<B, 4>, eps: f64) -> Tensor<B, 4> {
    let low = clean.clone().sub_scalar(eps);
    let high = clean.clone().add_scalar(eps);
    x.max_pair(low).min_pair(high).clamp(0.0, 1.0)
}

/// `clean + δ`, `δ ~ U(−ε, ε)` drawn on the host.
pub(crate) fn random_start<B: Backend>(clean: &Tensor<B, 4>, eps: f64, rng: &mut impl Rng) -> Tensor<B, 4> {
    let shape = clean.shape();
    let eps = eps as f32;
    let noise: Vec<f32> =
        (0..shape.num_elements()).map(|_| if eps > 0.0 { rng.random_range(-eps..=eps) } else { 0.0 }).collect();
    clean.clone() + Tensor::from_data(TensorData::new(noise, shape), &clean.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use fer_models::{Classifier, Model, ModelConfig};
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    type B = Autodiff<NdArray>;

    fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().expect("floats")
    }

    fn random_faces(rng: &mut ChaCha8Rng, n: usize, side: usize) -> Tensor<B, 4> {
        // Include exact 0s and 1s: the clip to [0, 1] must hold at the edges.
        let v: Vec<f32> = (0..n * side * side)
            .map(|i| match i % 11 {
                0 => 0.0,
                1 => 1.0,
                _ => rng.random_range(0.0..=1.0),
            })
            .collect();
        Tensor::from_data(TensorData::new(v, [n, 1, side, side]), &Default::default())
    }

    struct Flatten(Vec<f32>);
    impl<Bk: Backend> ModuleVisitor<Bk> for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            self.0.extend(param.val().into_data().convert::<f32>().to_vec::<f32>().expect("floats"));
        }
    }

    fn params(model: &Model<B>) -> Vec<f32> {
        let mut v = Flatten(Vec::new());
        model.visit(&mut v);
        v.0
    }

    #[test]
    fn fgsm_on_a_linear_model_is_the_analytic_gradient_sign() {
        let device = Default::default();
        let (n, d, k) = (3usize, 4usize, 7usize);
        let w: Vec<f32> = (0..d * k).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let b: Vec<f32> = (0..k).map(|i| i as f32 / 10.0).collect();
        let x: Vec<f32> = vec![0.2, 0.9, 0.5, 0.0, 1.0, 0.3, 0.6, 0.45, 0.05, 0.7, 0.35, 0.8];
        let labels = [2i64, 5, 0];
        let wt = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [d, k]), &device);
        let bt = Tensor::<B, 1>::from_data(TensorData::new(b.clone(), [k]), &device);
        let forward = |images: Tensor<B, 4>| images.reshape([n, d]).matmul(wt.clone()) + bt.clone().unsqueeze();
        let images = Tensor::<B, 4>::from_data(TensorData::new(x.clone(), [n, 1, 2, 2]), &device);

        // By hand: d CE / d x_n = W (softmax(x_n W + b) − onehot(y_n)) / N.
        let expected = |label_of: &dyn Fn(usize, &[f64]) -> usize, eps: f64| -> Vec<f32> {
            let mut out = Vec::new();
            for s in 0..n {
                let z: Vec<f64> = (0..k)
                    .map(|c| {
                        f64::from(b[c]) + (0..d).map(|j| f64::from(x[s * d + j]) * f64::from(w[j * k + c])).sum::<f64>()
                    })
                    .collect();
                let m = z.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                let y = label_of(s, &z);
                for j in 0..d {
                    let g: f64 =
                        (0..k).map(|c| f64::from(w[j * k + c]) * (e[c] / sum - if c == y { 1.0 } else { 0.0 })).sum();
                    assert!(g.abs() > 1e-6, "test data must not sit on a zero gradient");
                    out.push((f64::from(x[s * d + j]) + eps * g.signum()).clamp(0.0, 1.0) as f32);
                }
            }
            out
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let given = Tensor::<B, 1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), &device);
        let adv = perturb(&Attack::fgsm(0.1), forward, images.clone(), Labels::Given(given), &mut rng).expect("ok");
        let want = expected(&|s, _| labels[s] as usize, 0.1);
        for (a, e) in floats(adv).iter().zip(&want) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
        let argmax = |_: usize, z: &[f64]| (0..k).fold(0, |best, c| if z[c] > z[best] { c } else { best });
        let adv = perturb(&Attack::fgsm(0.1), forward, images, Labels::Predicted, &mut rng).expect("ok");
        let want = expected(&argmax, 0.1);
        for (a, e) in floats(adv).iter().zip(&want) {
            assert!((a - e).abs() < 1e-6, "predicted labels: {a} vs {e}");
        }
    }

    #[test]
    fn distribution_labels_follow_the_kl_gradient_on_a_linear_model() {
        let device = Default::default();
        let (n, d, k) = (2usize, 3usize, 4usize);
        let w: Vec<f32> = (0..d * k).map(|i| ((i * 29 % 17) as f32 - 8.0) / 5.0).collect();
        let wt = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [d, k]), &device);
        let forward = |images: Tensor<B, 4>| images.reshape([n, d]).matmul(wt.clone());
        let clean: Vec<f32> = vec![0.2, 0.7, 0.4, 0.9, 0.1, 0.5];
        let moved: Vec<f32> = vec![0.25, 0.6, 0.45, 0.8, 0.2, 0.45];
        let image = |v: &[f32]| Tensor::<B, 4>::from_data(TensorData::new(v.to_vec(), [n, 1, 1, d]), &device);
        let softmax = |x: &[f32], s: usize| -> Vec<f64> {
            let z: Vec<f64> =
                (0..k).map(|c| (0..d).map(|j| f64::from(x[s * d + j]) * f64::from(w[j * k + c])).sum()).collect();
            let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
            e.iter().map(|v| v / e.iter().sum::<f64>()).collect()
        };
        let targets = Targets::<B>::Distribution(forward(image(&clean)).inner());
        // By hand: d KL(q ‖ softmax(x' W)) / d x'_n = W (softmax(x'_n W) − q_n) / N.
        let got = targets.gradient(&forward, image(&moved)).into_data().to_vec::<f32>().expect("floats");
        for s in 0..n {
            let (q, p) = (softmax(&clean, s), softmax(&moved, s));
            for j in 0..d {
                let want: f64 = (0..k).map(|c| f64::from(w[j * k + c]) * (p[c] - q[c])).sum::<f64>() / n as f64;
                let got = f64::from(got[s * d + j]);
                assert!((got - want).abs() < 1e-6 && want.abs() > 1e-4, "face {s} pixel {j}: {got} vs {want}");
            }
        }
        // At the clean image the two distributions agree: nothing to climb, hence the random start.
        let at_clean = targets.gradient(&forward, image(&clean)).into_data().to_vec::<f32>().expect("floats");
        assert!(at_clean.iter().all(|g| g.abs() < 1e-7), "{at_clean:?}");
    }

    #[test]
    fn kl_from_clean_is_the_hand_computed_divergence() {
        let device = Default::default();
        let clean = [[1.0f32, 0.0, -1.0], [0.5, 0.5, 2.0]];
        let attacked = [[0.0f32, 1.0, 0.0], [2.0, -1.0, 0.0]];
        let t = |v: [[f32; 3]; 2]| Tensor::<B, 2>::from_data(TensorData::new(v.concat(), [2, 3]), &device);
        let softmax = |z: &[f32; 3]| -> Vec<f64> {
            let e: Vec<f64> = z.iter().map(|v| f64::from(*v).exp()).collect();
            e.iter().map(|v| v / e.iter().sum::<f64>()).collect()
        };
        let want: f64 = (0..2)
            .map(|s| {
                let (p, q) = (softmax(&clean[s]), softmax(&attacked[s]));
                (0..3).map(|c| p[c] * (p[c] / q[c]).ln()).sum::<f64>()
            })
            .sum::<f64>()
            / 2.0;
        let got: f32 = kl_from_clean(t(clean), t(attacked)).into_scalar();
        assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
        assert!(want > 0.1);
        let same: f32 = kl_from_clean(t(clean), t(clean)).into_scalar();
        assert!(same.abs() < 1e-7, "{same}");
    }

    #[test]
    fn pgd_on_the_clean_distribution_climbs_the_divergence() {
        let device = Default::default();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (n, side, k) = (4usize, 8usize, 7usize);
        // A linear classifier whose answers depend on every pixel (an untrained network's barely do).
        let w: Vec<f32> = (0..side * side * k).map(|_| rng.random_range(-1.0f32..=1.0)).collect();
        let wt = Tensor::<B, 2>::from_data(TensorData::new(w, [side * side, k]), &device);
        let forward = |x: Tensor<B, 4>| x.reshape([n, side * side]).matmul(wt.clone());
        let faces = random_faces(&mut rng, n, side);
        let kl = |x: Tensor<B, 4>| -> f32 { kl_from_clean(forward(faces.clone()), forward(x)).into_scalar() };
        let eps = 0.1;
        // The same generator state for the start measured here and the attack's own start.
        let mut start_rng = ChaCha8Rng::seed_from_u64(10);
        let start = project(random_start(&faces.clone().inner(), eps, &mut start_rng), &faces.clone().inner(), eps);
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        let attacked = perturb(&Attack::pgd(eps, 5), forward, faces.clone(), Labels::Distribution, &mut rng)
            .expect("pgd has a random start");
        let (from, to) = (kl(Tensor::from_inner(start)), kl(attacked.clone()));
        assert!(to > 10.0 * from && to > 0.1, "KL at the random start {from}, after PGD-5 {to}");
        let linf: f32 = (attacked - faces.clone()).abs().max().into_scalar();
        assert!(f64::from(linf) <= eps + 1e-6);
        let fgsm = perturb(&Attack::fgsm(eps), forward, faces, Labels::Distribution, &mut rng);
        assert_eq!(fgsm.err(), Some(AttackError::NeedsRandomStart("fgsm")));
    }

    #[test]
    fn zero_budget_leaves_the_faces_unchanged() {
        let device = Default::default();
        let model = ModelConfig::from_name("vgg-small").expect("known").init::<B>(&device).no_grad();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let faces = random_faces(&mut rng, 2, 48);
        for attack in [
            Attack::fgsm(0.0),
            Attack::fgsm_rs(0.0),
            Attack::n_fgsm(0.0),
            Attack::pgd(0.0, 3),
            Attack::apgd(0.0, 3, ApgdLoss::CeThenDlr),
        ] {
            let adv = perturb(&attack, |x| model.logits_inference(x), faces.clone(), Labels::Predicted, &mut rng)
                .expect("ok");
            assert_eq!(floats(adv), floats(faces.clone()), "{}", attack.label());
        }
    }

    #[test]
    fn budget_range_detachment_and_parameters_hold_on_random_cases() {
        let device = Default::default();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for case in 0..8 {
            let name = if case % 2 == 0 { "vgg-small" } else { "resnet-small" };
            <B as Backend>::seed(&device, case);
            let model: Model<B> = ModelConfig::from_name(name).expect("known").init(&device);
            let before = params(&model);
            let n = rng.random_range(1..=3);
            let side = if rng.random_bool(0.5) { 44 } else { 48 };
            let faces = random_faces(&mut rng, n, side);
            let eps = if case == 0 { 1.0 } else { rng.random_range(0.0..=0.5) };
            let apgd = [ApgdLoss::Ce, ApgdLoss::Dlr, ApgdLoss::CeThenDlr][case as usize % 3];
            let attacks = [Attack::fgsm(eps), Attack::fgsm_rs(eps), Attack::pgd(eps, 2), Attack::apgd(eps, 4, apgd)];
            for attack in attacks {
                let labels = match rng.random_range(0..3) {
                    0 => {
                        let t: Vec<i64> = (0..n).map(|_| rng.random_range(0..7)).collect();
                        Labels::Given(Tensor::from_data(TensorData::new(t, [n]), &device))
                    }
                    1 if attack.check_labels(LabelSource::Distribution).is_ok() => Labels::Distribution,
                    _ => Labels::Predicted,
                };
                // The model is not frozen here: the attack must still leave it alone.
                let adv = perturb(&attack, |x| model.logits_inference(x), faces.clone(), labels, &mut rng).expect("ok");
                assert!(!adv.is_require_grad(), "adversarial images are detached");
                let (a, f) = (floats(adv), floats(faces.clone()));
                let linf = a.iter().zip(&f).map(|(a, f)| (a - f).abs()).fold(0.0, f32::max);
                assert!(f64::from(linf) <= eps + 1e-6, "case {case} {}: ‖δ‖∞ = {linf} > ε = {eps}", attack.label());
                assert!(a.iter().all(|v| (0.0..=1.0).contains(v)), "case {case} {}: pixel left [0, 1]", attack.label());
            }
            assert_eq!(params(&model), before, "case {case}: parameters changed");
        }
    }

    #[test]
    fn n_fgsm_is_noise_then_one_unprojected_signed_step_on_a_linear_model() {
        let device = Default::default();
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let (n, side, k) = (3usize, 6usize, 7usize);
        let d = side * side;
        let w: Vec<f32> = (0..d * k).map(|_| rng.random_range(-1.0f32..=1.0)).collect();
        let wt = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [d, k]), &device);
        let forward = |x: Tensor<B, 4>| x.reshape([n, d]).matmul(wt.clone());
        let faces = random_faces(&mut rng, n, side);
        let clean = floats(faces.clone());
        let labels = [4i64, 0, 6];
        let given = || Labels::Given(Tensor::from_data(TensorData::new(labels.to_vec(), [n]), &device));
        let (eps, noise, alpha) = (0.1, 0.2, 0.1);
        let attack = Attack::n_fgsm(eps);
        assert_eq!(attack, Attack::NFgsm { eps, noise, alpha });

        // By hand: the start clean + U(−noise, noise) from the same generator state, clipped to
        // [0, 1]; then one step of α along sign(W (softmax(x₀ W) − onehot(y))), clipped to [0, 1].
        let mut start_rng = ChaCha8Rng::seed_from_u64(5);
        let start = floats(Tensor::<B, 4>::from_inner(random_start(&faces.clone().inner(), noise, &mut start_rng)));
        let x0: Vec<f64> = start.iter().map(|v| f64::from(*v).clamp(0.0, 1.0)).collect();
        let mut want = Vec::new();
        for s in 0..n {
            let z: Vec<f64> =
                (0..k).map(|c| (0..d).map(|j| x0[s * d + j] * f64::from(w[j * k + c])).sum::<f64>()).collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for j in 0..d {
                let g: f64 = (0..k)
                    .map(|c| f64::from(w[j * k + c]) * (e[c] / sum - if c == labels[s] as usize { 1.0 } else { 0.0 }))
                    .sum();
                assert!(g.abs() > 1e-7, "test data must not sit on a zero gradient");
                want.push((x0[s * d + j] + alpha * g.signum()).clamp(0.0, 1.0));
            }
        }
        let got =
            floats(perturb(&attack, forward, faces.clone(), given(), &mut ChaCha8Rng::seed_from_u64(5)).expect("ok"));
        for (i, (a, e)) in got.iter().zip(&want).enumerate() {
            assert!((f64::from(*a) - e).abs() < 1e-6, "pixel {i}: {a} vs {e}");
        }
        // Not projected: some pixels end farther than ε from the clean face, none beyond noise + α.
        let offsets: Vec<f64> = got.iter().zip(&clean).map(|(a, c)| f64::from((a - c).abs())).collect();
        let beyond = offsets.iter().filter(|o| **o > eps + 1e-6).count();
        assert!(beyond > d / 4, "only {beyond} of {} pixels beyond ε", n * d);
        assert!(offsets.iter().all(|o| *o <= noise + alpha + 1e-6));
        assert!(got.iter().all(|v| (0.0..=1.0).contains(v)));
        // The same generator state gives the same examples; TRADES's labels are allowed (random start).
        let again =
            floats(perturb(&attack, forward, faces.clone(), given(), &mut ChaCha8Rng::seed_from_u64(5)).expect("ok"));
        assert_eq!(again, got);
        assert!(perturb(&attack, forward, faces, Labels::Distribution, &mut rng).is_ok());
    }

    #[test]
    fn no_gradient_leaks_into_the_model() {
        let device = Default::default();
        <B as Backend>::seed(&device, 11);
        let model: Model<B> = ModelConfig::from_name("vgg-small").expect("known").init(&device);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let faces = random_faces(&mut rng, 4, 44);
        let grads = |model: &Model<B>| -> Vec<f32> {
            let loss = model.forward_inference(faces.clone()).powf_scalar(2.0).mean();
            let grads = GradientsParams::from_grads(loss.backward(), model);
            let mut all = Vec::new();
            struct Grads<'a>(&'a GradientsParams, &'a mut Vec<f32>);
            impl<Bk: burn::tensor::backend::AutodiffBackend> ModuleVisitor<Bk> for Grads<'_> {
                fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
                    if let Some(g) = self.0.get::<Bk::InnerBackend, D>(param.id) {
                        self.1.extend(g.into_data().convert::<f32>().to_vec::<f32>().expect("floats"));
                    }
                }
            }
            model.visit(&mut Grads(&grads, &mut all));
            all
        };
        let before = grads(&model);
        for attack in [Attack::fgsm(0.3), Attack::pgd(0.3, 3), Attack::apgd(0.3, 3, ApgdLoss::CeThenDlr)] {
            let _ = perturb(&attack, |x| model.logits_inference(x), faces.clone(), Labels::Predicted, &mut rng)
                .expect("ok");
        }
        assert_eq!(grads(&model), before, "a training step after attacks sees the same gradients");
        assert!(!before.is_empty());
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(Attack::fgsm(-0.1).check(), Err(AttackError::Epsilon { eps: -0.1 }));
        assert_eq!(Attack::fgsm(1.5).check(), Err(AttackError::Epsilon { eps: 1.5 }));
        assert!(Attack::fgsm(f64::NAN).check().is_err());
        assert_eq!(Attack::Pgd { eps: 0.1, alpha: 0.01, steps: 0 }.check(), Err(AttackError::Steps));
        assert_eq!(Attack::FgsmRs { eps: 0.1, alpha: -1.0 }.check(), Err(AttackError::StepSize { alpha: -1.0 }));
        assert!(AttackError::Epsilon { eps: 1.5 }.to_string().contains("1.5"));
        assert_eq!(Attack::from_name("pgd", 0.3, None, Some(10)), Ok(Attack::pgd(0.3, 10)));
        assert_eq!(Attack::from_name("pgd", 0.3, None, Some(0)), Err(AttackError::Steps));
        assert_eq!(Attack::from_name("cw", 0.3, None, Some(1)), Err(AttackError::UnknownMethod("cw".into())));
        assert_eq!(Attack::from_name("pgd", 0.3, None, None), Ok(Attack::pgd(0.3, 10)));
        assert_eq!(Attack::from_name("APGD-CE", 0.3, None, None), Ok(Attack::apgd(0.3, 100, ApgdLoss::Ce)));
        assert_eq!(Attack::from_name("apgd-dlr", 0.1, None, Some(20)), Ok(Attack::apgd(0.1, 20, ApgdLoss::Dlr)));
        let both = Attack::from_name("apgd", 8.0 / 255.0, None, None).expect("known");
        assert_eq!((both.method(), both.gradient_passes()), ("apgd", 200));
        assert_eq!(both.label(), "APGD-CE+DLR-100 ε=0.031");
        assert_eq!(both.with_eps(0.3), Attack::apgd(0.3, 100, ApgdLoss::CeThenDlr));
        assert_eq!(Attack::from_name("apgd-ce", 0.3, None, Some(0)), Err(AttackError::Steps));
        let err = Attack::from_name("apgd-ce", 0.3, Some(0.01), None).expect_err("APGD sets its own step");
        assert!(err.to_string().contains("sets its own step size") && err.to_string().contains("0.01"), "{err}");
        let err = Attack::apgd(0.1, 5, ApgdLoss::Dlr).check_labels(LabelSource::Distribution).expect_err("labels");
        assert!(err.to_string().contains("apgd-dlr") && err.to_string().contains("predicted or true"), "{err}");
        for loss in [ApgdLoss::Dlr, ApgdLoss::CeThenDlr] {
            let two_classes = perturb(
                &Attack::apgd(0.1, 2, loss),
                |x: Tensor<B, 4>| x.reshape([1, 4]).narrow(1, 0, 2),
                Tensor::<B, 4>::zeros([1, 1, 2, 2], &Default::default()),
                Labels::Predicted,
                &mut ChaCha8Rng::seed_from_u64(0),
            );
            assert!(
                two_classes.expect_err("DLR needs 3 classes").to_string().contains("3 classes or more"),
                "{loss:?}"
            );
        }
        assert_eq!(parse_eps("8/255"), Ok(8.0 / 255.0));
        assert_eq!(parse_eps(" 0.3 "), Ok(0.3));
        assert_eq!(parse_eps("2"), Err(AttackError::Epsilon { eps: 2.0 }));
        assert_eq!(parse_eps("1/0"), Err(AttackError::BadEpsilon("1/0".into())));
        assert_eq!(parse_eps("abc"), Err(AttackError::BadEpsilon("abc".into())));
        assert_eq!(parse_eps("-1/255"), Err(AttackError::Epsilon { eps: -1.0 / 255.0 }));
        assert_eq!(parse_step_size("2/255"), Ok(2.0 / 255.0));
        assert_eq!(parse_step_size(" 0.075"), Ok(0.075));
        assert_eq!(parse_step_size("1.5"), Ok(1.5), "a step may exceed 1 (FGSM-RS takes 1.25ε)");
        assert_eq!(parse_step_size("-0.1"), Err(AttackError::StepSize { alpha: -0.1 }));
        assert_eq!(parse_step_size("2/0"), Err(AttackError::BadStepSize("2/0".into())));
        assert!(AttackError::BadStepSize("two".into()).to_string().contains("`two`"));
        assert_eq!(parse_noise("16/255"), Ok(16.0 / 255.0));
        assert_eq!(parse_noise("-0.2"), Err(AttackError::Noise { noise: -0.2 }));
        assert!(
            parse_noise("lots").expect_err("unreadable").to_string().contains("cannot read noise magnitude `lots`")
        );
        assert_eq!("true".parse::<LabelSource>(), Ok(LabelSource::True));
        assert_eq!("distribution".parse::<LabelSource>(), Ok(LabelSource::Distribution));
        assert_eq!(
            Attack::fgsm(0.1).check_labels(LabelSource::Distribution),
            Err(AttackError::NeedsRandomStart("fgsm"))
        );
        assert!(AttackError::NeedsRandomStart("fgsm").to_string().contains("`fgsm`"));
        assert_eq!(Attack::n_fgsm(0.1).check_labels(LabelSource::Distribution), Ok(()));
        assert_eq!(
            Attack::from_name("n-fgsm", 0.3, None, Some(10)),
            Ok(Attack::NFgsm { eps: 0.3, noise: 0.6, alpha: 0.3 })
        );
        assert_eq!(
            Attack::from_name("N-FGSM", 0.1, Some(0.05), Some(1)),
            Ok(Attack::NFgsm { eps: 0.1, noise: 0.2, alpha: 0.05 })
        );
        assert_eq!(Attack::n_fgsm(0.1).with_noise(0.3), Ok(Attack::NFgsm { eps: 0.1, noise: 0.3, alpha: 0.1 }));
        assert_eq!(Attack::n_fgsm(0.1).with_noise(-0.3), Err(AttackError::Noise { noise: -0.3 }));
        assert_eq!(
            Attack::NFgsm { eps: 0.1, noise: f64::INFINITY, alpha: 0.1 }.check(),
            Err(AttackError::Noise { noise: f64::INFINITY })
        );
        assert_eq!(
            Attack::NFgsm { eps: 0.1, noise: 0.2, alpha: -0.1 }.check(),
            Err(AttackError::StepSize { alpha: -0.1 })
        );
        let err = Attack::pgd(0.1, 3).with_noise(0.2).expect_err("PGD has no noise setting");
        assert!(err.to_string().contains("n-fgsm only") && err.to_string().contains("pgd"), "{err}");
        assert!(
            Attack::fgsm(0.1).is_bounded() && Attack::pgd(0.1, 2).is_bounded() && !Attack::n_fgsm(0.1).is_bounded()
        );
        assert!(AttackError::TrainingOnly("n-fgsm").to_string().contains("evaluate with fgsm, fgsm-rs, pgd or apgd"));
        assert_eq!(Attack::fgsm_rs(0.1).check_labels(LabelSource::Distribution), Ok(()));
        assert_eq!(Attack::fgsm(0.1).check_labels(LabelSource::True), Ok(()));
        assert!("gold".parse::<LabelSource>().is_err());
        let images = Tensor::<B, 4>::zeros([1, 1, 48, 48], &Default::default());
        let err = perturb(
            &Attack::fgsm(2.0),
            |x| x.reshape([1, 2304]),
            images,
            Labels::Predicted,
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert_eq!(err.err(), Some(AttackError::Epsilon { eps: 2.0 }));
    }

    #[test]
    fn sweeps_scale_the_step_size() {
        let pgd = Attack::pgd(0.3, 10);
        assert_eq!(pgd.with_eps(0.03), Attack::Pgd { eps: 0.03, alpha: 2.5 * 0.3 / 10.0 * 0.1, steps: 10 });
        assert_eq!(Attack::fgsm_rs(0.2).with_eps(0.1), Attack::FgsmRs { eps: 0.1, alpha: 0.125 });
        assert_eq!(Attack::n_fgsm(0.25).with_eps(0.125), Attack::n_fgsm(0.125));
        assert_eq!(Attack::n_fgsm(0.2).label(), "N-FGSM ε=0.200 noise=0.400");
        assert_eq!(Attack::fgsm(0.2).with_eps(0.0), Attack::fgsm(0.0));
    }
}
