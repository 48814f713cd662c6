//! The training recipe: every knob of the reference, as plain data saved with each run.

use fer_adversarial::{Attack, LabelSource, RobustnessConfig};
use fer_dataset::Augmentation;
use fer_models::{ModelConfig, NormStatistics};

/// How the learning rate moves over training.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The reference: constant through epoch `decay_start`, then
    /// `lr × decay_rate^⌊(epoch − decay_start) / decay_every⌋` (epochs counted from 0).
    Reference {
        /// Last epoch at the base rate (the reference: 80).
        decay_start: usize,
        /// Epochs per decay step (5).
        decay_every: usize,
        /// Factor per decay step (0.9).
        decay_rate: f64,
    },
    /// Linear warm-up over `warmup_epochs`, then cosine annealing to `min_lr` at the last step.
    Cosine {
        /// Warm-up epochs.
        warmup_epochs: usize,
        /// Final learning rate.
        min_lr: f64,
    },
    /// The base rate throughout.
    Constant,
}

impl Schedule {
    /// The reference project's schedule (80 / 5 / 0.9).
    pub const REFERENCE: Schedule = Schedule::Reference { decay_start: 80, decay_every: 5, decay_rate: 0.9 };

    /// Learning rate at `step` (0-based) of `epoch` (0-based), for a run of `epochs` epochs of
    /// `steps_per_epoch` steps from base rate `base`.
    pub fn lr(&self, base: f64, epoch: usize, step: usize, steps_per_epoch: usize, epochs: usize) -> f64 {
        match *self {
            Schedule::Reference { decay_start, decay_every, decay_rate } => {
                if epoch > decay_start {
                    let decays = (epoch - decay_start) / decay_every.max(1);
                    base * decay_rate.powi(decays as i32)
                } else {
                    base
                }
            }
            Schedule::Cosine { warmup_epochs, min_lr } => {
                let steps_per_epoch = steps_per_epoch.max(1);
                let t = (epoch * steps_per_epoch + step) as f64;
                let warmup = (warmup_epochs * steps_per_epoch) as f64;
                let total = (epochs * steps_per_epoch) as f64;
                if t < warmup {
                    base * (t + 1.0) / warmup
                } else {
                    let progress = ((t - warmup) / (total - warmup).max(1.0)).min(1.0);
                    min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
            Schedule::Constant => base,
        }
    }

    /// Checks the schedule for a run from base rate `base`; returns what is wrong.
    pub fn check(&self, base: f64) -> Result<(), String> {
        match *self {
            Schedule::Reference { decay_every, decay_rate, .. } => {
                if decay_every == 0 {
                    return Err("the step schedule's decay interval (decay_every) must be at least 1 epoch".into());
                }
                if !(decay_rate.is_finite() && decay_rate > 0.0) {
                    return Err(format!("the step schedule's decay rate {decay_rate} must be positive"));
                }
            }
            Schedule::Cosine { min_lr, .. } => {
                if !(min_lr.is_finite() && (0.0..=base).contains(&min_lr)) {
                    return Err(format!(
                        "the cosine schedule's final learning rate {min_lr} must be in [0, {base}] (the base rate)"
                    ));
                }
            }
            Schedule::Constant => {}
        }
        Ok(())
    }
}

/// Which model builds the adversarial examples of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvSource {
    /// A frozen copy of the current weights in inference mode (BatchNorm running statistics,
    /// no dropout, no parameter gradients): the reference.
    #[default]
    Frozen,
    /// The model being trained, in training mode (batch statistics, dropout), as most PyTorch
    /// adversarial-training code does when it attacks `model` without `model.eval()`. Its
    /// BatchNorm running statistics also see the attack's forward passes.
    Current,
}

impl AdvSource {
    /// The name `--adv-source` and `config.json` use: `frozen` or `current`.
    pub fn name(self) -> &'static str {
        match self {
            AdvSource::Frozen => "frozen",
            AdvSource::Current => "current",
        }
    }
}

impl std::str::FromStr for AdvSource {
    type Err = String;
    fn from_str(s: &str) -> Result<AdvSource, String> {
        let wanted = s.to_ascii_lowercase();
        [AdvSource::Frozen, AdvSource::Current]
            .into_iter()
            .find(|source| source.name() == wanted)
            .ok_or_else(|| format!("unknown adversarial source `{s}` (expected frozen or current)"))
    }
}

/// What picks `best.fer` (always on PublicTest; PrivateTest is only reported).
///
/// The `-balanced` criteria score balanced accuracy (mean recall per class) instead of accuracy:
/// a model that gives every attacked face one answer keeps that class's share of the faces as
/// accuracy (about 25 % for "happy") but only 1/7 ≈ 14.3 % as balanced accuracy, so these
/// criteria cannot pick a constant answer over a model that still tells faces apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// Clean PublicTest accuracy.
    Clean,
    /// PublicTest accuracy under the evaluation attack.
    Adversarial,
    /// The mean of the two (the default for adversarial training).
    #[default]
    Mean,
    /// PublicTest balanced accuracy under the evaluation attack.
    AdversarialBalanced,
    /// The mean of clean and attacked PublicTest balanced accuracy.
    MeanBalanced,
    /// The share of PublicTest faces right both clean and under the evaluation attack
    /// ([`fer_adversarial::Robustness::robust_accuracy`]): faces the attack moved from a wrong
    /// answer onto the right one, which the attacked accuracy counts, do not score.
    AdversarialRobust,
    /// The mean of clean PublicTest accuracy and that robust accuracy.
    MeanRobust,
}

impl Selection {
    /// What the selected epoch is best at, in words: "the best mean of clean and attacked PublicTest
    /// accuracy", … (for reports and console summaries).
    pub fn criterion(self) -> &'static str {
        match self {
            Selection::Clean => "the best clean PublicTest accuracy",
            Selection::Adversarial => "the best PublicTest accuracy under the evaluation attack",
            Selection::Mean => "the best mean of clean and attacked PublicTest accuracy",
            Selection::AdversarialBalanced => "the best PublicTest balanced accuracy under the evaluation attack",
            Selection::MeanBalanced => "the best mean of clean and attacked PublicTest balanced accuracy",
            Selection::AdversarialRobust => {
                "the most PublicTest faces right both clean and under the evaluation attack"
            }
            Selection::MeanRobust => {
                "the best mean of clean PublicTest accuracy and the share right both clean and under attack"
            }
        }
    }

    /// The name `--select` and `config.json` use (`mean-balanced`, …).
    pub fn name(self) -> &'static str {
        match self {
            Selection::Clean => "clean",
            Selection::Adversarial => "adversarial",
            Selection::Mean => "mean",
            Selection::AdversarialBalanced => "adversarial-balanced",
            Selection::MeanBalanced => "mean-balanced",
            Selection::AdversarialRobust => "adversarial-robust",
            Selection::MeanRobust => "mean-robust",
        }
    }

    /// Every criterion, in declaration order.
    pub const ALL: [Selection; 7] = [
        Selection::Clean,
        Selection::Adversarial,
        Selection::Mean,
        Selection::AdversarialBalanced,
        Selection::MeanBalanced,
        Selection::AdversarialRobust,
        Selection::MeanRobust,
    ];
}

impl std::str::FromStr for Selection {
    type Err = String;
    fn from_str(s: &str) -> Result<Selection, String> {
        let wanted = s.to_ascii_lowercase();
        Selection::ALL.into_iter().find(|c| c.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = Selection::ALL.iter().map(|c| c.name()).collect();
            format!("unknown selection `{s}` (expected one of {})", names.join(", "))
        })
    }
}

/// Adversarial training: each step also trains on attacked copies of its batch, and every epoch
/// measures robustness on both test splits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdversarialTraining {
    /// The attack that builds the training examples (on the augmented crops of the batch).
    pub attack: Attack,
    /// Which model the training attack differentiates.
    pub source: AdvSource,
    /// Labels of the training attack (default: the true labels).
    pub labels: LabelSource,
    /// Loss = `(1 − weight) · CE(clean) + weight · CE(adversarial)`; the reference: 0.5. Unused
    /// with [`AdversarialTraining::trades_beta`].
    pub weight: f64,
    /// `Some(β)`: the TRADES loss (Zhang et al. 2019) in place of the weighted mix,
    /// `CE(clean) + β · KL(p(clean) ‖ p(attacked))` ([`fer_adversarial::kl_from_clean`], trained
    /// through both passes); TRADES's attack maximises that KL: [`LabelSource::Distribution`] in
    /// [`AdversarialTraining::labels`], with PGD. TRADES's code defaults to β = 6 on CIFAR-10
    /// and 1 on MNIST. `None` (the default, and the reference): the weighted mix.
    #[serde(default)]
    pub trades_beta: Option<f64>,
    /// `Some(λ)`: ELLE (Abad Rocamora et al. 2024) adds `λ ·` the local-linearity error of the
    /// cross-entropy within the training attack's ε-ball ([`fer_adversarial::local_linearity_error`])
    /// to the loss, a regulariser against catastrophic overfitting of single-step training that
    /// costs three more forward and backward passes, and no double backpropagation. Its three
    /// passes use BatchNorm as [`AdversarialTraining::norm_statistics`] says and share one
    /// dropout seed per step (the same masks for a face's three points); with
    /// [`NormStatistics::BatchUpdate`] their batches also enter the running statistics, as the
    /// attacked batch does. The authors' CIFAR-10 scripts: λ = 1,000 up to 8/255, 5,000 from
    /// 10/255 to 20/255, 10,000 beyond; on FER2013 at 0.3, λ = 10 already outweighs the
    /// cross-entropy (docs/RESULTS.md). `None` (the default, and
    /// the reference): no regulariser.
    #[serde(default)]
    pub linearity_weight: Option<f64>,
    /// BatchNorm in the training forward pass on the attacked faces (and, with
    /// [`AdvSource::Current`], in the attack's own passes). The reference:
    /// [`NormStatistics::BatchUpdate`], which lets ε-perturbed batches into the statistics used on
    /// clean test faces; `Batch` and `Running` keep the running statistics to clean batches. A
    /// model without BatchNorm (the GroupNorm VGG) takes only the default here and in
    /// [`AdversarialTraining::clean_norm_statistics`] ([`crate::TrainConfig::check`]).
    #[serde(default)]
    pub norm_statistics: NormStatistics,
    /// BatchNorm in the training forward pass on the clean faces. Default (and the reference):
    /// [`NormStatistics::BatchUpdate`], ordinary training. With `Running` here and in
    /// [`AdversarialTraining::norm_statistics`] the statistics are frozen: both passes normalise
    /// as inference does, with the `--init` checkpoint's running statistics, which never change,
    /// so training optimises exactly the function that inference computes. With `BatchUpdate`
    /// here and `Running` there, only attacked faces are ever seen through the running statistics
    /// in training, while clean batches keep moving them: a model can learn to exploit the lag
    /// between the two (docs/RESULTS.md). A run where no pass updates the statistics needs
    /// [`crate::TrainConfig::init`] (see [`crate::TrainConfig::check`]).
    #[serde(default)]
    pub clean_norm_statistics: NormStatistics,
    /// The per-epoch robustness measure: this attack on the test faces against the model's
    /// predictions, in inference mode (the reference's protocol: FGSM at the training ε, on the
    /// full 48×48 faces; see [`AdversarialTraining::eval_center_crop`]).
    pub eval_attack: Attack,
    /// `None` (the reference): the evaluation and check attacks, here and in `report.json`, show
    /// the model the full 48×48 faces. `Some(side)`: the centred crop of that side, the view the
    /// training crops are centred on and that of the clean figures without TenCrop. A model
    /// adversarially trained on 44×44 crops can answer attacked full faces quite differently from
    /// attacked crops (docs/RESULTS.md).
    #[serde(default)]
    pub eval_center_crop: Option<usize>,
    /// Catastrophic-overfitting check: on the first `check_faces` PublicTest faces, compare the
    /// evaluation attack with this stronger one (PGD-10 at the same ε); 0 faces turns it off.
    pub check_attack: Attack,
    /// Faces of the check.
    pub check_faces: usize,
    /// The epoch is flagged as catastrophic overfitting (FGSM looks robust while PGD breaks the
    /// model: Wong et al. 2020) when, on the check faces, accuracy under the evaluation attack
    /// exceeds accuracy under the check attack by at least this much **and** the check attack's
    /// accuracy is at most [`AdversarialTraining::catastrophic_ratio`] of the evaluation attack's
    /// (see [`AdversarialTraining::is_catastrophic`]).
    pub catastrophic_gap: f64,
    /// See [`AdversarialTraining::catastrophic_gap`]. Runs written before this field existed
    /// read 1 (the gap alone decided).
    #[serde(default = "ratio_of_the_gap_only_rule")]
    pub catastrophic_ratio: f64,
    /// The same check on the check faces right both clean and under attack (the accuracies also
    /// count faces an attack moved from a wrong answer onto the right one): the epoch is also
    /// flagged when the evaluation attack keeps at least this much more of the faces right than
    /// the check attack does **and** the check attack keeps at most
    /// [`AdversarialTraining::collapse_ratio`] of them (see
    /// [`AdversarialTraining::is_robust_collapse`]).
    #[serde(default = "default_collapse_gap")]
    pub collapse_gap: f64,
    /// See [`AdversarialTraining::collapse_gap`].
    #[serde(default = "default_collapse_ratio")]
    pub collapse_ratio: f64,
    /// What picks `best.fer`.
    pub selection: Selection,
    /// Epochs over which the training attack's ε rises linearly from 0 to that of
    /// [`AdversarialTraining::attack`] (its step size in proportion), step by step; fractions are
    /// allowed (0.5: the first half of the first epoch); 0 (the default, and the reference): the
    /// full ε from the first step. Attacks at a large ε on a model that has never seen one give a
    /// loss many times the clean one, whose first steps can knock the model onto a constant
    /// answer. The per-epoch evaluation and check attacks always use the full ε; a ramping
    /// epoch's `train_adv_loss` and `train_adv_acc` mix the budgets of its steps.
    #[serde(default)]
    pub eps_ramp_epochs: f64,
}

impl AdversarialTraining {
    /// The reference's defence with `attack` as the training attack: frozen inference-mode copy,
    /// true labels, weight 0.5, batch statistics that also update the running ones, FGSM
    /// evaluation and PGD-10 check at the same ε on 500 faces, flagged at a gap of 0.1 with PGD
    /// at most half of FGSM (or, on the faces right before and after, at 0.05 with PGD at most a
    /// quarter of FGSM), selection on the mean of clean and adversarial PublicTest accuracy.
    pub fn new(attack: Attack) -> AdversarialTraining {
        let eps = attack.eps();
        AdversarialTraining {
            attack,
            source: AdvSource::Frozen,
            labels: LabelSource::True,
            weight: 0.5,
            trades_beta: None,
            linearity_weight: None,
            norm_statistics: NormStatistics::BatchUpdate,
            clean_norm_statistics: NormStatistics::BatchUpdate,
            eval_attack: Attack::fgsm(eps),
            eval_center_crop: None,
            check_attack: Attack::pgd(eps, 10),
            check_faces: 500,
            catastrophic_gap: 0.1,
            catastrophic_ratio: 0.5,
            collapse_gap: default_collapse_gap(),
            collapse_ratio: default_collapse_ratio(),
            selection: Selection::Mean,
            eps_ramp_epochs: 0.0,
        }
    }

    /// The training attack of step `step` (0-based, of `steps_per_epoch`) of epoch `epoch`:
    /// [`AdversarialTraining::attack`] with ε scaled by the ramp of
    /// [`AdversarialTraining::eps_ramp_epochs`]: `min(1, (steps done + 1) / (ramp · steps_per_epoch))`.
    pub fn training_attack(&self, epoch: usize, step: usize, steps_per_epoch: usize) -> Attack {
        let ramp_steps = self.eps_ramp_epochs * steps_per_epoch as f64;
        let done = (epoch * steps_per_epoch + step + 1) as f64;
        if ramp_steps <= done {
            return self.attack;
        }
        self.attack.with_eps(self.attack.eps() * done / ramp_steps)
    }

    /// Whether check-face accuracies `eval_acc` (evaluation attack, FGSM) and `check_acc` (check
    /// attack, PGD) show catastrophic overfitting: `eval_acc − check_acc ≥ catastrophic_gap` and
    /// `check_acc ≤ catastrophic_ratio · eval_acc`. With the defaults, FGSM 31.8 % against PGD-10
    /// 5.2 % is flagged (the FGSM figure is mostly masked gradients), FGSM 45 % against PGD 38 %
    /// is not (a real defence loses a little to the stronger attack), nor is 8 % against 3 % (no
    /// robustness to overstate).
    pub fn is_catastrophic(&self, eval_acc: f64, check_acc: f64) -> bool {
        eval_acc - check_acc >= self.catastrophic_gap && check_acc <= self.catastrophic_ratio * eval_acc
    }

    /// Whether the shares of check faces right both clean and under the evaluation attack
    /// (`eval_robust`) and the check attack (`check_robust`) show the check attack taking almost
    /// all the faces the evaluation attack leaves right: `eval_robust − check_robust ≥
    /// collapse_gap` and `check_robust ≤ collapse_ratio · eval_robust`. Both attacks move about
    /// as many wrong answers onto the right class, so the accuracies' ratio sits nearer 1 than
    /// this one: on the quarter-width VGG19s of docs/RESULTS.md, PGD-10 keeps 42–58 % as many
    /// faces right as FGSM at 8/255 when training holds, 0–9 % when it has collapsed. With the
    /// defaults, FGSM 9.8 % against PGD-10 0.0 % is flagged (accuracies 15.8 % and 7.2 %, which
    /// [`AdversarialTraining::is_catastrophic`] passes), 18.0 % against 7.6 % is not, nor is
    /// 4.4 % against 0.0 % (too little to overstate).
    pub fn is_robust_collapse(&self, eval_robust: f64, check_robust: f64) -> bool {
        eval_robust - check_robust >= self.collapse_gap && check_robust <= self.collapse_ratio * eval_robust
    }

    /// How the evaluation and check attacks run: `attack` in inference mode against the model's
    /// predictions, on the view of [`AdversarialTraining::eval_center_crop`], `batch_faces` faces
    /// per batch, random starts from `seed`.
    pub fn robustness(&self, attack: Attack, batch_faces: usize, seed: u64) -> RobustnessConfig {
        RobustnessConfig {
            batch_faces,
            seed,
            center_crop: self.eval_center_crop,
            ..RobustnessConfig::reference(attack)
        }
    }

    /// The evaluation protocol in words (for `report.json`).
    pub fn protocol(&self) -> String {
        let view = match self.eval_center_crop {
            None => "full 48×48 faces (no TenCrop)".to_string(),
            Some(side) => format!("the centred {side}×{side} crop of each face (the attack perturbs the whole face)"),
        };
        format!("{view}, labels = the model's predictions, inference mode (BatchNorm running statistics, no dropout)")
    }

    /// Checks the attacks (the training attack with its labels), the crop side, the weight or
    /// TRADES's β, ELLE's λ, the gap and the ε ramp.
    pub fn check(&self) -> Result<(), String> {
        for attack in [&self.attack, &self.eval_attack, &self.check_attack] {
            attack.check().map_err(|e| e.to_string())?;
        }
        self.attack.check_labels(self.labels).map_err(|e| format!("training attack: {e}"))?;
        if let Some(beta) = self.trades_beta.filter(|b| !(b.is_finite() && *b >= 0.0)) {
            return Err(format!("TRADES β = {beta} must be a finite number ≥ 0"));
        }
        if let Some(lambda) = self.linearity_weight.filter(|l| !(l.is_finite() && *l > 0.0)) {
            return Err(format!("local-linearity weight λ = {lambda} must be a finite number > 0"));
        }
        for attack in [self.eval_attack, self.check_attack] {
            self.robustness(attack, 1, 0).check().map_err(|e| e.to_string())?;
        }
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(format!("adversarial weight {} is not in [0, 1]", self.weight));
        }
        if !(self.catastrophic_gap.is_finite() && self.catastrophic_gap > 0.0) {
            return Err(format!("catastrophic-overfitting gap {} must be positive", self.catastrophic_gap));
        }
        if !(0.0..=1.0).contains(&self.catastrophic_ratio) {
            return Err(format!("catastrophic-overfitting ratio {} is not in [0, 1]", self.catastrophic_ratio));
        }
        if !(self.collapse_gap.is_finite() && self.collapse_gap > 0.0) {
            return Err(format!("robust-collapse gap {} must be positive", self.collapse_gap));
        }
        if !(0.0..=1.0).contains(&self.collapse_ratio) {
            return Err(format!("robust-collapse ratio {} is not in [0, 1]", self.collapse_ratio));
        }
        if !(self.eps_ramp_epochs.is_finite() && self.eps_ramp_epochs >= 0.0) {
            return Err(format!("ε ramp of {} epochs must be a number ≥ 0", self.eps_ramp_epochs));
        }
        Ok(())
    }
}

/// [`AdversarialTraining::catastrophic_ratio`] of runs whose config.json predates it.
fn ratio_of_the_gap_only_rule() -> f64 {
    1.0
}

/// [`AdversarialTraining::collapse_gap`]: 5 points (25 of 500 check faces).
fn default_collapse_gap() -> f64 {
    0.05
}

/// [`AdversarialTraining::collapse_ratio`]: a quarter.
fn default_collapse_ratio() -> f64 {
    0.25
}

/// The checkpoint a run's weights start from (see [`TrainConfig::init`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InitCheckpoint {
    /// The `.fer` file.
    pub path: std::path::PathBuf,
    /// Its checksum ([`fer_models::checkpoint_checksum`]) when the run was configured: the run
    /// refuses to start if the file has changed since.
    pub checksum: u32,
}

impl InitCheckpoint {
    /// Names the checkpoint at `path` and records its checksum (fails unless it is a valid
    /// checkpoint).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<InitCheckpoint, fer_models::ModelError> {
        Self::from_file_with_header(path).map(|(init, _)| init)
    }

    /// [`InitCheckpoint::from_file`], also returning the checkpoint's header (its model and
    /// metadata), both from one read of the file.
    pub fn from_file_with_header(
        path: impl AsRef<std::path::Path>,
    ) -> Result<(InitCheckpoint, fer_models::Checkpoint), fer_models::ModelError> {
        let path = path.as_ref();
        let (header, checksum) = fer_models::read_checkpoint_header_with_checksum(path)?;
        Ok((InitCheckpoint { path: path.to_path_buf(), checksum }, header))
    }
}

/// Everything that defines a training run; saved as `config.json` in the run directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelConfig,
    /// Epochs.
    pub epochs: usize,
    /// Faces per optimiser step.
    pub batch_size: usize,
    /// Leave out each epoch's last, smaller batch (the faces past the last multiple of
    /// `batch_size` in that epoch's shuffled order, so other faces each epoch), as PyTorch's
    /// `drop_last`. Every step then has one batch shape, which spares a GPU backend's autotuning a
    /// second round for the odd size (minutes on Burn's CUDA backend). Off in the reference recipe,
    /// which trains on every face each epoch.
    #[serde(default)]
    pub drop_last: bool,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum (PyTorch semantics: no dampening).
    pub momentum: f64,
    /// Nesterov momentum (PyTorch's `nesterov=True`): each step follows `g + μ·v` instead of
    /// the velocity `v` itself. Needs `momentum > 0`. Off in both recipes (the reference's SGD),
    /// and in runs written before it existed.
    #[serde(default)]
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Clamp every gradient element to `[-c, c]` before the step (the reference: 0.1).
    pub grad_clip: Option<f32>,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Side of the random training crops and the TenCrop evaluation crops.
    pub crop: usize,
    /// What the random training crops go through besides placement and mirroring: rotation,
    /// zoom, random erasing ([`Augmentation::STRONG`]); [`Augmentation::NONE`] in both recipes
    /// (the reference's RandomCrop + flip). Runs written before it existed read as `NONE`.
    #[serde(default)]
    pub augmentation: Augmentation,
    /// Percent of the training batches made of whole 48×48 faces (mirrored at random, and
    /// augmented as the crops) instead of random `crop`-sided crops; the draw is seeded per
    /// batch (see [`fer_dataset::FaceBatcher::with_whole_faces`]). A network trained on crops
    /// alone meets a differently framed face in the reference's attack evaluation, which feeds it
    /// whole faces: with VGG19's floor-mode pooling its last 3×3 map keeps only the top-left 2×2
    /// cells. 0 (both recipes, and runs written before it existed): crops only.
    #[serde(default)]
    pub whole_face_pct: u32,
    /// Label smoothing of the training loss: the cross-entropy against `(1 − s)·one-hot + s/7`
    /// (PyTorch's `label_smoothing`), so `train_loss` in metrics.csv is the smoothed loss; the
    /// test splits' losses stay plain cross-entropy. 0 (both recipes, and runs written before it
    /// existed): none.
    #[serde(default)]
    pub label_smoothing: f32,
    /// Mixup (Zhang et al., 2018) with this α: each training batch becomes `λ·x + (1 − λ)·x[π]`
    /// for one `λ ~ Beta(α, α)` and a random pairing `π` of its faces, and the loss
    /// `λ·CE(y) + (1 − λ)·CE(y[π])`; training accuracy counts the label of the larger share.
    /// Seeded per epoch and step, so resumed runs stay identical. Clean training on one device
    /// only. `None` (both recipes, and runs written before it existed): off.
    #[serde(default)]
    pub mixup_alpha: Option<f32>,
    /// An exponential moving average of the weights with this per-step decay (e.g. 0.999; see
    /// [`crate::ema_update`] and [`crate::ema_decay_at`] for the formula and its warm-up): after
    /// each step the average moves towards the model, BatchNorm statistics included. When set,
    /// the *average* is the run's model: it is what each epoch evaluates (`public_acc`,
    /// `private_acc`, the attacks of adversarial training), what selection picks and what
    /// `best.fer` holds, while the raw weights' clean accuracies go to `raw_public_acc` and
    /// `raw_private_acc` and on training from `latest.fer`; the average itself is kept in
    /// `ema.fer` for resuming. The warm-up keeps the decay below this value for the first
    /// `(10·d − 1) / (1 − d)` steps (8,990 for 0.999). `None` (both recipes, and runs written
    /// before it existed): off.
    #[serde(default)]
    pub ema_decay: Option<f64>,
    /// Evaluate with TenCrop (logits averaged over 10 crops) rather than the centre crop.
    pub eval_tencrop: bool,
    /// Faces per evaluation batch (×10 crops with TenCrop).
    pub eval_batch_faces: usize,
    /// Seed of weights, data order, crops and dropout.
    pub seed: u64,
    /// Train on a seeded subset of this many training faces (quick runs); `None`: all.
    pub train_limit: Option<usize>,
    /// Evaluate on the first this-many faces of each test split; `None`: all.
    pub eval_limit: Option<usize>,
    /// Batches prepared ahead of the device by a loader thread.
    pub prefetch: usize,
    /// Adversarial training; `None`: clean training (selection on clean PublicTest accuracy).
    #[serde(default)]
    pub adversarial: Option<AdversarialTraining>,
    /// Start from this checkpoint's weights and BatchNorm statistics (it must hold `model`)
    /// instead of fresh weights drawn from `seed`, e.g. to fine-tune a cleanly trained model
    /// adversarially. The optimiser state and the schedule start afresh; a resumed run continues
    /// from its own `latest.fer` and does not read this file again.
    #[serde(default)]
    pub init: Option<InitCheckpoint>,
    /// Knowledge distillation: learn also from the class probabilities that teachers (their
    /// answers files on the Training split) gave each face ([`crate::Distillation`]). Clean
    /// training on one device. `None` (both recipes, and runs written before it existed): off.
    #[serde(default)]
    pub distillation: Option<crate::Distillation>,
}

impl TrainConfig {
    /// The reference recipe (`mainpro_FER.py --bs 128 --lr 0.01`): SGD lr 0.01, momentum 0.9,
    /// weight decay 5e-4, batch 128, 250 epochs, [`Schedule::REFERENCE`], gradients clamped to
    /// ±0.1, RandomCrop(44)+flip for training, TenCrop(44) for evaluation.
    pub fn reference(model: ModelConfig) -> TrainConfig {
        TrainConfig {
            model,
            epochs: 250,
            batch_size: 128,
            drop_last: false,
            lr: 0.01,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            grad_clip: Some(0.1),
            schedule: Schedule::REFERENCE,
            crop: 44,
            augmentation: Augmentation::NONE,
            whole_face_pct: 0,
            label_smoothing: 0.0,
            mixup_alpha: None,
            ema_decay: None,
            eval_tencrop: true,
            eval_batch_faces: 64,
            seed: 0,
            train_limit: None,
            eval_limit: None,
            prefetch: 4,
            adversarial: None,
            init: None,
            distillation: None,
        }
    }

    /// A shorter recipe: the reference with 60 epochs of cosine annealing (2 warm-up epochs)
    /// to 1e-4. Its accuracy/time trade-off is recorded in docs/RESULTS.md once measured.
    pub fn fast(model: ModelConfig) -> TrainConfig {
        TrainConfig {
            epochs: 60,
            schedule: Schedule::Cosine { warmup_epochs: 2, min_lr: 1e-4 },
            ..TrainConfig::reference(model)
        }
    }

    /// How `best.fer` is chosen.
    pub fn selection(&self) -> Selection {
        self.adversarial.as_ref().map_or(Selection::Clean, |a| a.selection)
    }

    /// Checks every field; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        self.model.check()?;
        let positive = [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_batch_faces", self.eval_batch_faces),
            ("crop", self.crop),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.crop > fer_dataset::FACE_SIDE {
            return Err(format!("crop {} is larger than the 48-pixel face", self.crop));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("learning rate {} must be positive", self.lr));
        }
        self.schedule.check(self.lr)?;
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("momentum {} is not in [0, 1)", self.momentum));
        }
        if self.nesterov && self.momentum <= 0.0 {
            return Err(format!("Nesterov momentum needs a momentum above 0 (momentum is {})", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!("weight decay {} must be >= 0", self.weight_decay));
        }
        if let Some(c) = self.grad_clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(format!("gradient clamp {c} must be positive"));
        }
        self.augmentation.check().map_err(|e| format!("augmentation: {e}"))?;
        if self.whole_face_pct > 100 {
            return Err(format!("whole faces in {} % of the batches: more than 100 %", self.whole_face_pct));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!("label smoothing {} is not in [0, 1)", self.label_smoothing));
        }
        if let Some(alpha) = self.mixup_alpha {
            if !(alpha.is_finite() && alpha > 0.0) {
                return Err(format!("mixup α {alpha} must be positive"));
            }
            if self.adversarial.is_some() {
                return Err("mixup is for clean training: it cannot be combined with adversarial training".into());
            }
        }
        if let Some(d) = self.ema_decay.filter(|d| !(*d > 0.0 && *d < 1.0)) {
            return Err(format!("EMA decay {d} is not in (0, 1)"));
        }
        if let Some(distillation) = &self.distillation {
            distillation.check()?;
            if self.mixup_alpha.is_some() {
                return Err("distillation cannot be combined with mixup (a mixed face has no teacher's answer)".into());
            }
            if self.adversarial.is_some() {
                return Err(
                    "distillation is for clean training: it cannot be combined with adversarial training".into()
                );
            }
        }
        if self.train_limit == Some(0) || self.eval_limit == Some(0) {
            return Err("subset limits must be positive".into());
        }
        if let Some(adversarial) = &self.adversarial {
            adversarial.check()?;
            let statistics = [adversarial.clean_norm_statistics, adversarial.norm_statistics];
            if !self.model.has_batch_norm() && statistics != [NormStatistics::BatchUpdate; 2] {
                return Err(format!(
                    "the model {} has no BatchNorm, so BatchNorm statistics `{}` on clean and `{}` on \
                     attacked faces do not apply: leave --adv-bn and --adv-clean-bn at their default",
                    self.model.label(),
                    adversarial.clean_norm_statistics.name(),
                    adversarial.norm_statistics.name()
                ));
            }
            // Without BatchNorm the statistics are the defaults (above), which update.
            if !statistics.contains(&NormStatistics::BatchUpdate) && self.init.is_none() {
                return Err(format!(
                    "BatchNorm `{}` on clean and `{}` on attacked faces never update the running statistics, \
                     which would stay at their initial mean 0 and variance 1: start from a trained \
                     checkpoint (--init) or let one pass update them (batch-update)",
                    adversarial.clean_norm_statistics.name(),
                    adversarial.norm_statistics.name()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs written before `drop_last` existed (their config.json lacks it) still load, as
    /// keeping every batch.
    #[test]
    fn config_without_drop_last_reads_as_keeping_every_batch() {
        let config = TrainConfig::fast(ModelConfig::from_name("vgg-small").expect("known"));
        let mut json: serde_json::Value = serde_json::to_value(&config).expect("serialises");
        assert_eq!(json["drop_last"], serde_json::Value::Bool(false));
        json.as_object_mut().expect("an object").remove("drop_last");
        let read: TrainConfig = serde_json::from_value(json).expect("reads");
        assert_eq!(read, config);
    }

    /// Runs written before distillation existed still load, without teachers; with teachers the
    /// configuration round-trips.
    #[test]
    fn config_without_distillation_reads_as_none_and_round_trips_with_it() {
        let config = TrainConfig::fast(ModelConfig::from_name("vgg-small").expect("known"));
        let mut json: serde_json::Value = serde_json::to_value(&config).expect("serialises");
        json.as_object_mut().expect("an object").remove("distillation");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).expect("reads").distillation, None);
        let teacher = crate::TeacherAnswers { path: "a.csv.gz".into(), checksum: 7 };
        let taught = TrainConfig { distillation: Some(crate::Distillation::new(vec![teacher])), ..config };
        let text = serde_json::to_string(&taught).expect("serialises");
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).expect("reads"), taught);
    }

    /// Runs written before `whole_face_pct` existed still load, as crops only; a share above
    /// 100 % is named.
    #[test]
    fn whole_faces_default_round_trip_and_are_checked() {
        let config = TrainConfig::fast(ModelConfig::from_name("vgg-small").expect("known"));
        let mut json: serde_json::Value = serde_json::to_value(&config).expect("serialises");
        json.as_object_mut().expect("an object").remove("whole_face_pct");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).expect("reads").whole_face_pct, 0);
        let quarter = TrainConfig { whole_face_pct: 25, ..config.clone() };
        assert!(quarter.check().is_ok());
        let text = serde_json::to_string(&quarter).expect("serialises");
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).expect("reads"), quarter);
        let bad = TrainConfig { whole_face_pct: 101, ..config };
        assert!(bad.check().expect_err("share").contains("whole faces in 101 % of the batches"));
    }

    /// Runs written before `augmentation` existed still load, as the plain crop and mirror; a
    /// strong one round-trips and a bad one is named.
    #[test]
    fn augmentation_defaults_round_trips_and_is_checked() {
        let config = TrainConfig::fast(ModelConfig::from_name("vgg-small").expect("known"));
        let mut json: serde_json::Value = serde_json::to_value(&config).expect("serialises");
        json.as_object_mut().expect("an object").remove("augmentation");
        let read: TrainConfig = serde_json::from_value(json).expect("reads");
        assert_eq!(read.augmentation, Augmentation::NONE);
        let strong = TrainConfig { augmentation: Augmentation::STRONG, ..config.clone() };
        let text = serde_json::to_string(&strong).expect("serialises");
        assert!(text.contains(r#""augmentation":{"max_rotation_deg":10,"max_zoom_pct":10,"erase_pct":50}"#), "{text}");
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).expect("reads"), strong);
        let bad = TrainConfig { augmentation: Augmentation { max_zoom_pct: 120, ..Augmentation::NONE }, ..config };
        assert!(bad.check().expect_err("zoom").contains("augmentation: zoom ±120 %"));
    }

    #[test]
    fn reference_schedule_values() {
        let s = Schedule::REFERENCE;
        let lr = |epoch| s.lr(0.01, epoch, 0, 225, 250);
        assert_eq!(lr(0), 0.01);
        assert_eq!(lr(80), 0.01);
        assert_eq!(lr(84), 0.01);
        assert!((lr(85) - 0.009).abs() < 1e-12, "{}", lr(85));
        assert!((lr(89) - 0.009).abs() < 1e-12);
        assert!((lr(90) - 0.0081).abs() < 1e-12, "{}", lr(90));
        assert!((lr(249) - 0.01 * 0.9f64.powi(33)).abs() < 1e-15);
    }

    #[test]
    fn cosine_schedule_shape() {
        let s = Schedule::Cosine { warmup_epochs: 2, min_lr: 1e-4 };
        let lr = |epoch, step| s.lr(0.1, epoch, step, 10, 12);
        assert!((lr(0, 0) - 0.1 / 20.0).abs() < 1e-12, "warm-up starts small");
        assert!((lr(1, 9) - 0.1).abs() < 1e-12, "warm-up ends at the base rate");
        assert!((lr(2, 0) - 0.1).abs() < 1e-12);
        assert!((lr(7, 0) - (1e-4 + 0.5 * (0.1 - 1e-4))).abs() < 1e-12, "half-way is the mean");
        assert!(lr(11, 9) < 2e-4, "ends near min_lr: {}", lr(11, 9));
        assert_eq!(Schedule::Constant.lr(0.3, 5, 3, 10, 12), 0.3);
    }

    #[test]
    fn check_names_the_bad_field() {
        let good = TrainConfig::reference(ModelConfig::from_name("vgg-small").expect("known"));
        assert!(good.check().is_ok());
        assert!(TrainConfig { epochs: 0, ..good.clone() }.check().expect_err("epochs").contains("epochs"));
        assert!(TrainConfig { lr: -1.0, ..good.clone() }.check().expect_err("lr").contains("learning rate"));
        assert!(TrainConfig { crop: 50, ..good.clone() }.check().expect_err("crop").contains("crop 50"));
        assert!(TrainConfig { grad_clip: Some(0.0), ..good.clone() }.check().expect_err("clip").contains("clamp"));
        assert!(TrainConfig { nesterov: true, ..good.clone() }.check().is_ok());
        assert!(TrainConfig { ema_decay: Some(0.999), ..good.clone() }.check().is_ok());
        for d in [0.0, 1.0, -0.5, f64::NAN] {
            let err = TrainConfig { ema_decay: Some(d), ..good.clone() }.check().expect_err("EMA decay");
            assert!(err.contains(&format!("EMA decay {d} is not in (0, 1)")), "{err}");
        }
        let err = TrainConfig { nesterov: true, momentum: 0.0, ..good.clone() }.check().expect_err("no momentum");
        assert!(err.contains("Nesterov momentum needs a momentum above 0 (momentum is 0)"), "{err}");
        let schedule = |schedule| TrainConfig { schedule, ..good.clone() }.check();
        assert!(schedule(Schedule::Cosine { warmup_epochs: 0, min_lr: 0.0 }).is_ok());
        assert!(schedule(Schedule::Cosine { warmup_epochs: 5, min_lr: 0.01 }).is_ok(), "min_lr may equal the base");
        let err = schedule(Schedule::Cosine { warmup_epochs: 2, min_lr: 0.02 }).expect_err("above base");
        assert!(err.contains("final learning rate 0.02 must be in [0, 0.01]"), "{err}");
        assert!(schedule(Schedule::Cosine { warmup_epochs: 2, min_lr: -1e-4 }).is_err());
        assert!(schedule(Schedule::Cosine { warmup_epochs: 2, min_lr: f64::NAN }).is_err());
        let step = |decay_every, decay_rate| schedule(Schedule::Reference { decay_start: 80, decay_every, decay_rate });
        assert!(step(5, 0.9).is_ok());
        assert!(step(0, 0.9).expect_err("interval").contains("decay_every"));
        assert!(step(5, 0.0).expect_err("rate").contains("decay rate 0"));
        let adversarial = |a: AdversarialTraining| TrainConfig { adversarial: Some(a), ..good.clone() };
        assert!(adversarial(AdversarialTraining::new(Attack::fgsm(0.3))).check().is_ok());
        let bad = adversarial(AdversarialTraining::new(Attack::fgsm(1.3)));
        assert!(bad.check().expect_err("eps").contains("1.3"));
        let trades = |attack, beta| AdversarialTraining {
            labels: LabelSource::Distribution,
            trades_beta: Some(beta),
            ..AdversarialTraining::new(attack)
        };
        assert!(adversarial(trades(Attack::pgd(8.0 / 255.0, 10), 6.0)).check().is_ok());
        let err = adversarial(trades(Attack::fgsm(8.0 / 255.0), 6.0)).check().expect_err("no random start");
        assert!(err.contains("training attack") && err.contains("fgsm-rs, n-fgsm or pgd"), "{err}");
        // N-FGSM trains (TRADES's labels too: it has a random start) but cannot evaluate or check.
        assert!(adversarial(AdversarialTraining::new(Attack::n_fgsm(0.3))).check().is_ok());
        assert!(adversarial(trades(Attack::n_fgsm(8.0 / 255.0), 1.0)).check().is_ok());
        for bad in [
            AdversarialTraining { eval_attack: Attack::n_fgsm(0.3), ..AdversarialTraining::new(Attack::fgsm(0.3)) },
            AdversarialTraining { check_attack: Attack::n_fgsm(0.3), ..AdversarialTraining::new(Attack::fgsm(0.3)) },
        ] {
            assert!(adversarial(bad).check().expect_err("unbounded").contains("`n-fgsm` is a training attack"));
        }
        let err = adversarial(trades(Attack::pgd(0.3, 10), -1.0)).check().expect_err("β < 0");
        assert!(err.contains("TRADES β = -1"), "{err}");
        assert!(adversarial(trades(Attack::pgd(0.3, 10), f64::NAN)).check().is_err());
        let elle = |lambda| AdversarialTraining {
            linearity_weight: Some(lambda),
            ..AdversarialTraining::new(Attack::fgsm(0.3))
        };
        assert!(adversarial(elle(5000.0)).check().is_ok());
        for lambda in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = adversarial(elle(lambda)).check().expect_err("λ");
            assert!(err.contains(&format!("local-linearity weight λ = {lambda} must be a finite number > 0")), "{err}");
        }
        let bad = adversarial(AdversarialTraining { weight: 2.0, ..AdversarialTraining::new(Attack::fgsm(0.3)) });
        assert!(bad.check().expect_err("weight").contains("weight 2"));
        let bad = adversarial(AdversarialTraining::new(Attack::Pgd { eps: 0.1, alpha: 0.01, steps: 0 }));
        assert!(bad.check().expect_err("steps").contains("1 step"));
        let crop =
            |side| AdversarialTraining { eval_center_crop: Some(side), ..AdversarialTraining::new(Attack::fgsm(0.3)) };
        assert!(adversarial(crop(44)).check().is_ok());
        assert!(adversarial(crop(0)).check().expect_err("side").contains("centre crop side 0"));
        assert!(adversarial(crop(49)).check().expect_err("side").contains("centre crop side 49"));
    }

    #[test]
    fn the_evaluation_view_reaches_the_attacks_and_the_protocol() {
        let reference = AdversarialTraining::new(Attack::fgsm(0.3));
        let full = reference.robustness(Attack::pgd(0.3, 10), 32, 9);
        assert_eq!((full.center_crop, full.tencrop, full.batch_faces, full.seed), (None, None, 32, 9));
        assert_eq!(full.attack, Attack::pgd(0.3, 10));
        assert!(reference.protocol().starts_with("full 48×48 faces"), "{}", reference.protocol());
        let cropped = AdversarialTraining { eval_center_crop: Some(44), ..reference };
        assert_eq!(cropped.robustness(Attack::fgsm(0.3), 32, 9).view(), fer_dataset::View::CenterCrop(44));
        assert!(cropped.protocol().starts_with("the centred 44×44 crop"), "{}", cropped.protocol());
    }

    #[test]
    fn catastrophic_overfitting_needs_a_gap_and_a_collapse() {
        let adv = AdversarialTraining::new(Attack::fgsm(0.3));
        // A real run (quarter-width VGG19, epoch 5), 500 check faces: 159 right under FGSM, 26 under PGD-10.
        assert!(adv.is_catastrophic(159.0 / 500.0, 26.0 / 500.0));
        // A defence that loses a little to the stronger attack; a model with nothing to overstate.
        assert!(!adv.is_catastrophic(0.45, 0.38));
        assert!(!adv.is_catastrophic(0.08, 0.03));
        // At the bounds: PGD exactly half of FGSM with a 10-point gap is flagged, just above is not.
        assert!(adv.is_catastrophic(0.2, 0.1));
        assert!(!adv.is_catastrophic(0.2, 0.1001));
        // Runs from before the ratio kept the gap-only rule (their gap: 0.3).
        let mut json =
            serde_json::to_value(AdversarialTraining { catastrophic_gap: 0.3, ..adv.clone() }).expect("json");
        json.as_object_mut().expect("object").remove("catastrophic_ratio");
        let old: AdversarialTraining = serde_json::from_value(json).expect("config.json before the ratio");
        assert_eq!(old.catastrophic_ratio, 1.0);
        assert!(!old.is_catastrophic(159.0 / 500.0, 26.0 / 500.0), "gap 26.6 points < 30");
        assert!(old.is_catastrophic(0.36, 0.05));
        let bad = AdversarialTraining { catastrophic_ratio: 1.5, ..adv };
        assert!(bad.check().expect_err("ratio").contains("ratio 1.5"));
    }

    #[test]
    fn a_robust_collapse_needs_a_gap_and_almost_nothing_left() {
        let adv = AdversarialTraining::new(Attack::pgd(0.3, 3));
        // Check faces right both clean and under FGSM / PGD-10, of 500 (quarter-width VGG19s,
        // docs/RESULTS.md): the collapses.
        assert!(adv.is_robust_collapse(0.098, 0.0), "PGD-3 training at 0.3, epoch 3");
        assert!(adv.is_robust_collapse(0.288, 0.0), "FGSM training at 0.3, epoch 5");
        assert!(adv.is_robust_collapse(0.086, 0.008), "PGD-10 training at 8/255 with `batch`, epoch 3");
        // Defences that hold at 8/255: PGD-10 keeps 42–58 % as many faces right as FGSM.
        for (fgsm, pgd) in [(0.18, 0.076), (0.202, 0.094), (0.166, 0.096), (0.19, 0.092)] {
            assert!(!adv.is_robust_collapse(fgsm, pgd), "{fgsm} / {pgd}");
        }
        // Too little to overstate.
        assert!(!adv.is_robust_collapse(0.044, 0.0));
        // At the bounds: a 5-point gap with PGD at a quarter is flagged, just above a quarter not.
        assert!(adv.is_robust_collapse(0.2, 0.05));
        assert!(!adv.is_robust_collapse(0.2, 0.0501));
        // Config files from before the rule read the defaults.
        let mut json = serde_json::to_value(&adv).expect("json");
        let fields = json.as_object_mut().expect("object");
        fields.remove("collapse_gap");
        fields.remove("collapse_ratio");
        let old: AdversarialTraining = serde_json::from_value(json).expect("config.json before the rule");
        assert_eq!(old, adv);
        let bad = AdversarialTraining { collapse_gap: 0.0, ..adv.clone() };
        assert!(bad.check().expect_err("gap").contains("robust-collapse gap 0"));
        let bad = AdversarialTraining { collapse_ratio: -0.1, ..adv };
        assert!(bad.check().expect_err("ratio").contains("robust-collapse ratio -0.1"));
    }

    #[test]
    fn the_training_budget_ramps_up_step_by_step() {
        let adv = AdversarialTraining::new(Attack::pgd(0.1, 10));
        assert_eq!(adv.training_attack(0, 0, 4), adv.attack, "no ramp: the full ε from the first step");
        let ramped = AdversarialTraining { eps_ramp_epochs: 1.5, ..adv.clone() };
        assert_eq!(ramped.check(), Ok(()));
        // 1.5 epochs of 4 steps: ε rises over 6 steps, reaching 0.1 at the 6th (epoch 1, step 1).
        let eps: Vec<f64> = (0..3)
            .flat_map(|e| (0..4).map(move |s| (e, s)))
            .map(|(e, s)| ramped.training_attack(e, s, 4).eps())
            .collect();
        let expected = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0].map(|k| 0.1 * k / 6.0);
        for (got, want) in eps.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{eps:?}");
        }
        assert_eq!(ramped.training_attack(1, 1, 4), adv.attack, "exactly the configured attack from then on");
        // The step size follows ε (PGD's 2.5ε/steps).
        let Attack::Pgd { alpha, steps, .. } = ramped.training_attack(0, 2, 4) else { panic!("PGD") };
        assert_eq!(steps, 10);
        assert!((alpha - 2.5 * 0.05 / 10.0).abs() < 1e-12, "{alpha}");
        for bad in [-0.5, f64::NAN, f64::INFINITY] {
            let err = AdversarialTraining { eps_ramp_epochs: bad, ..adv.clone() }.check().expect_err("bad ramp");
            assert!(err.contains("ε ramp"), "{err}");
        }
    }

    #[test]
    fn frozen_batch_norm_statistics_need_a_trained_checkpoint() {
        let clean = TrainConfig::reference(ModelConfig::from_name("vgg-small").expect("known"));
        let frozen = AdversarialTraining {
            norm_statistics: NormStatistics::Running,
            clean_norm_statistics: NormStatistics::Running,
            ..AdversarialTraining::new(Attack::fgsm(0.3))
        };
        let fresh = TrainConfig { adversarial: Some(frozen.clone()), ..clean.clone() };
        let err = fresh.check().expect_err("no pass updates the statistics");
        assert!(err.contains("`running` on clean and `running` on attacked") && err.contains("--init"), "{err}");
        let init = InitCheckpoint { path: "runs/a/best.fer".into(), checksum: 1 };
        let tuned = TrainConfig { init: Some(init), ..fresh };
        assert_eq!(tuned.check(), Ok(()));
        // One updating pass is enough: the attacked batches' statistics.
        let attacked_only = AdversarialTraining { norm_statistics: NormStatistics::BatchUpdate, ..frozen };
        assert_eq!(TrainConfig { adversarial: Some(attacked_only), ..clean }.check(), Ok(()));
    }

    #[test]
    fn selections_parse_print_and_serialise_by_one_name() {
        for selection in Selection::ALL {
            assert_eq!(selection.name().parse::<Selection>(), Ok(selection));
            let json = serde_json::to_string(&selection).expect("json");
            assert_eq!(json, format!("\"{}\"", selection.name()), "config.json spells it as --select does");
        }
        assert_eq!("Mean-Balanced".parse::<Selection>(), Ok(Selection::MeanBalanced));
        let err = "balanced".parse::<Selection>().expect_err("unknown");
        assert!(err.contains("`balanced`") && err.contains("mean-balanced"), "{err}");
        // config.json files from before the balanced criteria spell the old ones the same way.
        assert_eq!(serde_json::from_str::<Selection>(r#""adversarial""#).expect("old"), Selection::Adversarial);
    }

    #[test]
    fn configs_without_the_adversarial_field_still_load() {
        let good = TrainConfig::reference(ModelConfig::from_name("vgg-small").expect("known"));
        let mut json = serde_json::to_value(&good).expect("json");
        json.as_object_mut().expect("object").remove("adversarial");
        json.as_object_mut().expect("object").remove("init");
        let back: TrainConfig = serde_json::from_value(json).expect("old config.json");
        assert_eq!(back, good, "runs from before `adversarial` and `init` resume as clean runs from fresh weights");
        let init = InitCheckpoint { path: "runs/a/best.fer".into(), checksum: 0xDEAD_BEEF };
        let tuned = TrainConfig { init: Some(init), ..good.clone() };
        let text = serde_json::to_string(&tuned).expect("json");
        assert!(text.contains(r#""init":{"path":"runs/a/best.fer","checksum":3735928559}"#), "{text}");
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).expect("round trip"), tuned);
        assert_eq!(good.selection(), Selection::Clean);
        let with = TrainConfig { adversarial: Some(AdversarialTraining::new(Attack::fgsm(0.3))), ..good };
        assert_eq!(with.selection(), Selection::Mean);
        let mut json = serde_json::to_value(&with).expect("json");
        json["adversarial"].as_object_mut().expect("object").remove("norm_statistics");
        json["adversarial"].as_object_mut().expect("object").remove("clean_norm_statistics");
        json["adversarial"].as_object_mut().expect("object").remove("eps_ramp_epochs");
        let back: TrainConfig = serde_json::from_value(json).expect("config.json before norm_statistics");
        assert_eq!(back, with, "older adversarial runs resume with the reference's statistics");
        let mut json = serde_json::to_value(&with).expect("json");
        json["adversarial"].as_object_mut().expect("object").remove("eval_center_crop");
        let back: TrainConfig = serde_json::from_value(json).expect("config.json before eval_center_crop");
        assert_eq!(back, with, "older adversarial runs resume with full-face attacks");
        let text = serde_json::to_string(&with).expect("json");
        assert!(text.contains(r#""method":"fgsm""#), "{text}");
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).expect("round trip"), with);
    }
}
