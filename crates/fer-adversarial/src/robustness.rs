//! Clean vs adversarial accuracy of a classifier on a split, ε sweeps, and example images.

use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use fer_dataset::{BatchStream, Emotion, FACE_SIDE, FaceBatcher, SplitData, View};
use fer_models::{Classifier, Evaluation, FaceAnswer, average_crops, center_crops, padded_logits, ten_crops};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::apgd::dlr_needs_three_classes;
use crate::{ApgdLoss, Attack, AttackError, LabelSource, Labels, perturb};

/// How to attack and score a split.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RobustnessConfig {
    /// The attack.
    pub attack: Attack,
    /// Labels the attack pushes away from (the reference: the model's predictions).
    pub labels: LabelSource,
    /// `None` (the reference): the model sees the full 48×48 face. `Some(side)`: the model sees
    /// the TenCrop of side `side`, logits averaged, and the attack perturbs the full face through
    /// the crops (a defence by cropping cannot hide from it).
    pub tencrop: Option<usize>,
    /// `Some(side)`: the model sees the centred crop of side `side` (the view the training crops
    /// are centred on, and `fer eval`'s without TenCrop); the attack perturbs the full face
    /// through it, and pixels outside the crop do not matter. Excludes `tencrop`.
    #[serde(default)]
    pub center_crop: Option<usize>,
    /// Faces per batch.
    pub batch_faces: usize,
    /// Seed of the random starts.
    pub seed: u64,
}

impl RobustnessConfig {
    /// The reference protocol for `attack`: predicted labels, full faces, batches of 64, seed 0.
    pub fn reference(attack: Attack) -> RobustnessConfig {
        RobustnessConfig {
            attack,
            labels: LabelSource::Predicted,
            tencrop: None,
            center_crop: None,
            batch_faces: 64,
            seed: 0,
        }
    }

    /// What the model sees of each full face: [`View::Full`], [`View::CenterCrop`] or
    /// [`View::TenCrop`].
    pub fn view(&self) -> View {
        match (self.tencrop, self.center_crop) {
            (Some(side), _) => View::TenCrop(side),
            (None, Some(side)) => View::CenterCrop(side),
            (None, None) => View::Full,
        }
    }

    /// Checks the attack (with its labels), the crop sides and the batch size.
    pub fn check(&self) -> Result<(), AttackError> {
        self.attack.check()?;
        if !self.attack.is_bounded() {
            return Err(AttackError::TrainingOnly(self.attack.method()));
        }
        self.attack.check_labels(self.labels)?;
        if self.batch_faces == 0 {
            return Err(AttackError::Config("batch size must be positive".into()));
        }
        if let (Some(ten), Some(center)) = (self.tencrop, self.center_crop) {
            return Err(AttackError::Config(format!("choose TenCrop ({ten}) or the centre crop ({center}), not both")));
        }
        for (name, side) in [("TenCrop", self.tencrop), ("centre crop", self.center_crop)] {
            if let Some(side) = side.filter(|&s| s == 0 || s > FACE_SIDE) {
                return Err(AttackError::Config(format!("{name} side {side} is not in 1..={FACE_SIDE}")));
            }
        }
        Ok(())
    }
}

/// Which inputs of the CNN + landmarks + HOG model an attack's gradient flows through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureGradient {
    /// The whole pipeline: the image branch and the HOG ([`fer_models::CnnHog::logits_from_pixels`]).
    #[default]
    Pipeline,
    /// The image branch only, the features held at the clean face's: an attacker who ignores
    /// the HOG (an ablation; what the pipeline's gradient adds is the difference).
    ImageBranch,
}

impl FeatureGradient {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            FeatureGradient::Pipeline => "pipeline",
            FeatureGradient::ImageBranch => "image-branch",
        }
    }
}

impl std::str::FromStr for FeatureGradient {
    type Err = AttackError;
    fn from_str(s: &str) -> Result<FeatureGradient, AttackError> {
        [FeatureGradient::Pipeline, FeatureGradient::ImageBranch].into_iter().find(|g| g.name() == s).ok_or_else(|| {
            AttackError::Config(format!("unknown feature gradient `{s}` (expected pipeline or image-branch)"))
        })
    }
}

/// The outcome of [`evaluate_robustness`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Robustness {
    /// What was run.
    pub config: RobustnessConfig,
    /// The model on the clean faces (same view as the attack).
    pub clean: Evaluation,
    /// The model on the adversarial faces.
    pub adversarial: Evaluation,
    /// Faces whose predicted class the attack changed.
    pub flipped: u64,
    /// Faces answered right both clean and under attack: the numerator of
    /// [`Robustness::robust_accuracy`].
    #[serde(default)]
    pub kept_right: u64,
    /// Faces answered wrong clean and right under attack. With [`LabelSource::Predicted`] (the
    /// reference's protocol) the attack pushes a wrong answer away from itself, sometimes onto the
    /// right class: these faces count in `adversarial.accuracy()` without any robustness behind
    /// them.
    #[serde(default)]
    pub made_right: u64,
    /// Largest `|x' − x|` over all pixels (≤ ε; a check, not a setting).
    pub max_perturbation: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// `(clean prediction, adversarial prediction)` per face, in split order.
    #[serde(skip)]
    pub predictions: Vec<(Emotion, Emotion)>,
}

/// Logits of `model` in inference mode on full 48×48 faces seen through `view` (TenCrop: logits
/// averaged over the ten crops). Differentiable in `faces`, so an attack perturbs the full face.
///
/// Panics on [`View::RandomCropFlip`], which is not a fixed function of the face.
pub fn logits_on_faces<B: Backend, M: Classifier<B>>(model: &M, faces: Tensor<B, 4>, view: View) -> Tensor<B, 2> {
    match view {
        View::Full => model.logits_inference(faces),
        View::CenterCrop(side) => model.logits_inference(center_crops(faces, side)),
        View::TenCrop(side) => average_crops(model.logits_inference(ten_crops(faces, side)), 10),
        View::RandomCropFlip(_) => panic!("an attack needs a fixed view of the face, not random crops"),
    }
}

/// Attacks every face of `split` and scores the model before and after.
///
/// Faces go in batches of `config.batch_faces`; the last, smaller one runs padded with blank
/// faces to the others' shape (their logits dropped; no figure changes, since the faces of a
/// batch do not interact in inference mode).
///
/// `apgd` (APGD-CE then APGD-DLR, [`ApgdLoss::CeThenDlr`]) runs as AutoAttack runs it: APGD-CE
/// over the whole split first, then APGD-DLR on the faces it left unbroken (the answer under
/// attack still the attack's label), gathered into full batches; a face broken by either counts
/// as broken. The random starts are drawn in that order from one seeded generator, so a split
/// that fits in one batch gets the faces [`crate::perturb`] gives for the same attack and seed.
///
/// The model is used as a frozen copy (`no_grad`) in inference mode (BatchNorm running
/// statistics, no dropout), as the reference did with `net.eval()`. `on_batch` is called after
/// each batch with the faces attacked so far and the faces to attack in all; the total grows
/// once, by the faces APGD-DLR takes on, when APGD-CE is done with the split.
pub fn evaluate_robustness<B, M>(
    model: &M,
    split: Arc<SplitData>,
    config: &RobustnessConfig,
    device: &B::Device,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Robustness, AttackError>
where
    B: AutodiffBackend,
    M: Classifier<B> + Module<B>,
{
    config.check()?;
    let frozen = model.clone().no_grad();
    // Every forward has one batch shape: the last, smaller batch is padded with blank faces inside
    // the forward (the attack, its random starts and its loss see the real faces only), which
    // spares a GPU backend's autotuning a new batch size (`fer_models::padded_logits`).
    let rows = (split.len() > config.batch_faces).then_some(config.batch_faces);
    let forward = |x: Tensor<B, 4>| padded_logits(x, rows, |x| logits_on_faces(&frozen, x, config.view()));
    let (first, then_dlr) = match config.attack {
        Attack::Apgd { eps, steps, loss: ApgdLoss::CeThenDlr } => {
            (Attack::apgd(eps, steps, ApgdLoss::Ce), Some(Attack::apgd(eps, steps, ApgdLoss::Dlr)))
        }
        attack => (attack, None),
    };
    // One batch under `attack`: the logits under attack and the largest `|x' − x|`.
    let attack_batch = |attack: &Attack, clean: Tensor<B, 4>, labels: Labels<B>, rng: &mut ChaCha8Rng| {
        let attacked = perturb(attack, forward, clean.clone(), labels, rng)?;
        let distance: f64 = (attacked.clone() - clean).abs().max().into_scalar().elem();
        Ok::<_, AttackError>((forward(attacked).detach(), distance))
    };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut tally = Tally::new(split.len());
    let mut held = HeldLogits::default();
    let (mut done, mut total) = (0, split.len());
    let order: Vec<usize> = (0..split.len()).collect();
    let batcher = FaceBatcher::new(View::Full, 0, split.len());
    let stream = |order: Vec<usize>| {
        BatchStream::<B>::new(split.clone(), order, config.batch_faces, batcher.clone(), 2, device.clone())
    };
    for batch in stream(order) {
        let clean_logits = forward(batch.images.clone()).detach();
        if then_dlr.is_some() && clean_logits.dims()[1] < 3 {
            return Err(dlr_needs_three_classes(clean_logits.dims()[1]));
        }
        let labels = Labels::from_source(config.labels, batch.targets.clone());
        let (adversarial_logits, distance) = attack_batch(&first, batch.images, labels, &mut rng)?;
        done += clean_logits.dims()[0];
        if then_dlr.is_some() {
            held.push(clean_logits, adversarial_logits, batch.targets, config.labels, distance);
        } else {
            tally.record(clean_logits, adversarial_logits, batch.targets, distance);
        }
        on_batch(done, total);
    }
    if let Some(dlr) = then_dlr {
        let left = held.unbroken();
        total += left.len();
        on_batch(done, total);
        for (batch, faces) in stream(left.clone()).zip(left.chunks(config.batch_faces)) {
            let labels: Vec<i64> = faces.iter().map(|&i| held.attack_labels[i]).collect();
            let labels = Tensor::from_data(TensorData::new(labels, [faces.len()]), device);
            let (adversarial_logits, distance) = attack_batch(&dlr, batch.images, Labels::Given(labels), &mut rng)?;
            held.replace(faces, adversarial_logits, distance);
            done += faces.len();
            on_batch(done, total);
        }
        held.record::<B>(&mut tally, config.batch_faces, device);
    }
    Ok(tally.finish(config, split.labels()))
}

/// The logits of a split's faces before and after the first of two attacks, kept on the host
/// until the second has run on the faces the first left unbroken.
#[derive(Default)]
struct HeldLogits {
    classes: usize,
    clean: Vec<f32>,
    adversarial: Vec<f32>,
    targets: Vec<i64>,
    /// The label each face's attack pushes away from: the clean answer or the true class.
    attack_labels: Vec<i64>,
    /// The answer under the first attack.
    answers: Vec<i64>,
    distance: f64,
}

impl HeldLogits {
    /// One batch after the first attack.
    fn push<B: Backend>(
        &mut self,
        clean_logits: Tensor<B, 2>,
        adversarial_logits: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
        labels: LabelSource,
        distance: f64,
    ) {
        let [faces, classes] = clean_logits.dims();
        self.classes = classes;
        let truth = ints(targets);
        self.attack_labels.extend(match labels {
            LabelSource::True => truth.clone(),
            _ => ints(clean_logits.clone().argmax(1).reshape([faces])),
        });
        self.answers.extend(ints(adversarial_logits.clone().argmax(1).reshape([faces])));
        self.targets.extend(truth);
        self.clean.extend(floats(clean_logits));
        self.adversarial.extend(floats(adversarial_logits));
        self.distance = self.distance.max(distance);
    }

    /// The faces whose answer under the first attack is still their attack label, in split order.
    fn unbroken(&self) -> Vec<usize> {
        (0..self.answers.len()).filter(|&i| self.answers[i] == self.attack_labels[i]).collect()
    }

    /// The logits under the second attack of the faces at `faces`, in their order.
    fn replace<B: Backend>(&mut self, faces: &[usize], adversarial_logits: Tensor<B, 2>, distance: f64) {
        let classes = self.classes;
        for (&i, row) in faces.iter().zip(floats(adversarial_logits).chunks(classes)) {
            self.adversarial[i * classes..(i + 1) * classes].copy_from_slice(row);
        }
        self.distance = self.distance.max(distance);
    }

    /// Records every face into `tally` in batches of `batch_faces`, as the batches of the first
    /// attack were (the losses are summed batch by batch, so the clean figures are those of a
    /// single attack to the last digit).
    fn record<B: Backend>(self, tally: &mut Tally, batch_faces: usize, device: &B::Device) {
        let classes = self.classes;
        if self.targets.is_empty() {
            return;
        }
        let logits = |values: &[f32]| {
            Tensor::<B, 2>::from_data(TensorData::new(values.to_vec(), [values.len() / classes, classes]), device)
        };
        let width = batch_faces * classes;
        for ((clean, adversarial), targets) in
            self.clean.chunks(width).zip(self.adversarial.chunks(width)).zip(self.targets.chunks(batch_faces))
        {
            let targets = Tensor::from_data(TensorData::new(targets.to_vec(), [targets.len()]), device);
            tally.record(logits(clean), logits(adversarial), targets, self.distance);
        }
    }
}

fn floats<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("floats")
}

fn ints<B: Backend>(t: Tensor<B, 1, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec::<i64>().expect("ints")
}

/// The running totals of an evaluation under attack, batch by batch in split order.
pub(crate) struct Tally {
    started: Instant,
    clean: Evaluation,
    adversarial: Evaluation,
    flipped: u64,
    max_perturbation: f64,
    predictions: Vec<(Emotion, Emotion)>,
    /// Faces recorded so far.
    pub(crate) done: usize,
}

impl Tally {
    pub(crate) fn new(faces: usize) -> Tally {
        Tally {
            started: Instant::now(),
            clean: Evaluation::default(),
            adversarial: Evaluation::default(),
            flipped: 0,
            max_perturbation: 0.0,
            predictions: Vec::with_capacity(faces),
            done: 0,
        }
    }

    /// One batch: the logits on its clean and attacked faces, its labels, and its largest `|x' − x|`.
    pub(crate) fn record<B: Backend>(
        &mut self,
        clean_logits: Tensor<B, 2>,
        adversarial_logits: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
        distance: f64,
    ) {
        self.max_perturbation = self.max_perturbation.max(distance);
        let before = classes(clean_logits.clone());
        let after = classes(adversarial_logits.clone());
        self.flipped += before.iter().zip(&after).filter(|(a, b)| a != b).count() as u64;
        self.done += before.len();
        self.predictions.extend(before.into_iter().zip(after));
        self.clean.record(clean_logits, targets.clone());
        self.adversarial.record(adversarial_logits, targets);
    }

    /// The outcome, `labels` being the true classes of the split.
    pub(crate) fn finish(self, config: &RobustnessConfig, labels: &[Emotion]) -> Robustness {
        let (kept_right, made_right) = right_after_attack(&self.predictions, labels);
        Robustness {
            config: config.clone(),
            clean: self.clean,
            adversarial: self.adversarial,
            flipped: self.flipped,
            kept_right,
            made_right,
            max_perturbation: self.max_perturbation,
            seconds: self.started.elapsed().as_secs_f64(),
            predictions: self.predictions,
        }
    }
}

impl Robustness {
    /// Each face's answer before and under the attack, `[clean, attacked]`, in the attacked
    /// faces' order and without probabilities: what [`fer_models::compare_answers`] pairs with
    /// another model's or defence's answers on the same faces (`fer attack` writes them as
    /// `answers-clean.csv` and `answers-attacked.csv`). `labels` are the attacked faces' labels
    /// (`SplitData::labels`).
    pub fn answers(&self, labels: &[Emotion]) -> [Vec<FaceAnswer>; 2] {
        let side = |pick: fn(&(Emotion, Emotion)) -> Emotion| {
            self.predictions
                .iter()
                .zip(labels)
                .enumerate()
                .map(|(face, (pair, &label))| FaceAnswer { face, label, answer: pick(pair), probabilities: None })
                .collect()
        };
        [side(|p| p.0), side(|p| p.1)]
    }

    /// Share of the faces answered right both clean and under attack: the robust accuracy in the
    /// usual sense. In inference mode the faces of a batch do not interact, and the attacks step
    /// along the sign of each face's own gradient, so a face's attack depends only on that face
    /// and its label; on a face answered right the predicted label is the true one, so this
    /// figure is the same with predicted or true labels (random starts come from the same seeded
    /// draws either way). `adversarial.accuracy()` is this plus [`Robustness::made_right`]'s
    /// share.
    pub fn robust_accuracy(&self) -> f64 {
        let faces = self.clean.faces();
        if faces == 0 { 0.0 } else { self.kept_right as f64 / faces as f64 }
    }
}

/// Counts the faces answered right under attack, split by their clean answer: `(kept_right,
/// made_right)`, right clean too ([`Robustness::kept_right`]) or wrong clean
/// ([`Robustness::made_right`]). `predictions` holds `(clean, attacked)` answers and `labels` the
/// true classes, face by face in the same order; faces past the shorter of the two are not
/// counted, so a prefix of [`Robustness::predictions`] with its split's labels gives the figures
/// of the first faces.
pub fn right_after_attack(predictions: &[(Emotion, Emotion)], labels: &[Emotion]) -> (u64, u64) {
    let (mut kept_right, mut made_right) = (0u64, 0u64);
    for (&(before, after), &label) in predictions.iter().zip(labels) {
        kept_right += u64::from(before == label && after == label);
        made_right += u64::from(before != label && after == label);
    }
    (kept_right, made_right)
}

/// Up to `count` faces to draw for an attack's figure (see [`adversarial_examples`]): first those
/// the attack turned from right to wrong, then the others, each group in split order.
/// `predictions` and `labels` are as in [`right_after_attack`].
pub fn example_faces(predictions: &[(Emotion, Emotion)], labels: &[Emotion], count: usize) -> Vec<usize> {
    let broken = |i: usize| predictions[i].0 == labels[i] && predictions[i].1 != labels[i];
    let faces = predictions.len().min(labels.len());
    let mut picked: Vec<usize> = (0..faces).filter(|&i| broken(i)).take(count).collect();
    let others: Vec<usize> = (0..faces).filter(|&i| !broken(i)).take(count - picked.len()).collect();
    picked.extend(others);
    picked
}

fn classes<B: Backend>(logits: Tensor<B, 2>) -> Vec<Emotion> {
    let data = logits.argmax(1).into_data().convert::<i64>();
    data.as_slice::<i64>().expect("argmax gives ints").iter().map(|&c| Emotion::ALL[c as usize]).collect()
}

/// One point of an ε sweep.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepPoint {
    /// `fgsm`, `fgsm-rs` or `pgd`.
    pub method: String,
    /// The attack's label, e.g. `PGD-10 ε=0.031`.
    pub attack: String,
    /// L∞ budget.
    pub eps: f64,
    /// Clean accuracy (the same for every point; repeated so each CSV row stands alone).
    pub clean_acc: f64,
    /// Accuracy under attack.
    pub adversarial_acc: f64,
    /// Seconds for this point.
    pub seconds: f64,
    /// Balanced accuracy (mean recall per class) under attack: 1/7 for a model that gives every
    /// attacked face one answer, whatever [`SweepPoint::adversarial_acc`] says.
    #[serde(default)]
    pub adversarial_balanced_acc: f64,
    /// Share of the attacked faces given the most frequent answer.
    #[serde(default)]
    pub adversarial_top_answer_share: f64,
    /// [`Robustness::robust_accuracy`]: faces right both clean and under attack.
    #[serde(default)]
    pub robust_acc: f64,
}

/// Runs each attack of `attacks` at each budget of `eps` ([`Attack::with_eps`]: PGD keeps its
/// steps and scales its step size) and returns one point per pair, attacks in the outer loop.
pub fn eps_sweep<B, M>(
    model: &M,
    split: Arc<SplitData>,
    attacks: &[Attack],
    eps: &[f64],
    base: &RobustnessConfig,
    device: &B::Device,
    on_point: impl FnMut(&SweepPoint),
) -> Result<Vec<SweepPoint>, AttackError>
where
    B: AutodiffBackend,
    M: Classifier<B> + Module<B>,
{
    sweep_points(
        attacks,
        eps,
        base,
        |config| evaluate_robustness(model, split.clone(), config, device, |_, _| {}),
        on_point,
    )
}

/// The points of an ε sweep, `evaluate` scoring one attack.
pub(crate) fn sweep_points(
    attacks: &[Attack],
    eps: &[f64],
    base: &RobustnessConfig,
    mut evaluate: impl FnMut(&RobustnessConfig) -> Result<Robustness, AttackError>,
    mut on_point: impl FnMut(&SweepPoint),
) -> Result<Vec<SweepPoint>, AttackError> {
    let mut points = Vec::new();
    for attack in attacks {
        for &e in eps {
            let config = RobustnessConfig { attack: attack.with_eps(e), ..base.clone() };
            let result = evaluate(&config)?;
            let point = SweepPoint {
                method: attack.method().to_string(),
                attack: config.attack.label(),
                eps: e,
                clean_acc: result.clean.accuracy(),
                adversarial_acc: result.adversarial.accuracy(),
                seconds: result.seconds,
                adversarial_balanced_acc: result.adversarial.balanced_accuracy(),
                adversarial_top_answer_share: result.adversarial.top_answer().map_or(0.0, |(_, share)| share),
                robust_acc: result.robust_accuracy(),
            };
            on_point(&point);
            points.push(point);
        }
    }
    Ok(points)
}

/// A face before and after an attack, with the model's probabilities on both.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdversarialExample {
    /// Position in the split.
    pub index: usize,
    /// The true label.
    pub label: Emotion,
    /// The clean face, `48 × 48` row-major in `[0, 1]`.
    pub clean: Vec<f32>,
    /// The adversarial face, same layout.
    pub adversarial: Vec<f32>,
    /// Class probabilities on the clean face.
    pub clean_probs: Vec<f32>,
    /// Class probabilities on the adversarial face.
    pub adversarial_probs: Vec<f32>,
}

impl AdversarialExample {
    /// The most probable class and its probability on the clean face.
    pub fn clean_top(&self) -> (Emotion, f32) {
        top(&self.clean_probs)
    }

    /// The most probable class and its probability on the adversarial face.
    pub fn adversarial_top(&self) -> (Emotion, f32) {
        top(&self.adversarial_probs)
    }
}

fn top(probs: &[f32]) -> (Emotion, f32) {
    let (i, p) = probs.iter().enumerate().fold((0, f32::MIN), |b, (i, &p)| if p > b.1 { (i, p) } else { b });
    (Emotion::ALL[i], p)
}

/// Attacks the faces at `indices` of `split` (as [`evaluate_robustness`] would, in one batch)
/// and returns them with the model's probabilities, for figures.
pub fn adversarial_examples<B, M>(
    model: &M,
    split: &SplitData,
    indices: &[usize],
    config: &RobustnessConfig,
    device: &B::Device,
) -> Result<Vec<AdversarialExample>, AttackError>
where
    B: AutodiffBackend,
    M: Classifier<B> + Module<B>,
{
    config.check()?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= split.len()) {
        return Err(AttackError::Config(format!("face {bad} is past the split's {} faces", split.len())));
    }
    if indices.is_empty() {
        return Ok(Vec::new());
    }
    let frozen = model.clone().no_grad();
    let forward = |x: Tensor<B, 4>| logits_on_faces(&frozen, x, config.view());
    let subset = split.select(indices);
    let batcher = FaceBatcher::new(View::Full, 0, subset.len());
    let order: Vec<usize> = (0..subset.len()).collect();
    let mut stream = BatchStream::<B>::new(Arc::new(subset), order, indices.len(), batcher, 1, device.clone());
    let batch = stream.next().expect("a non-empty subset gives one batch");
    let labels = Labels::from_source(config.labels, batch.targets.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let attacked = perturb(&config.attack, forward, batch.images.clone(), labels, &mut rng)?;
    let rows = |t: Tensor<B, 4>| -> Vec<Vec<f32>> {
        let v = t.into_data().convert::<f32>().to_vec::<f32>().expect("floats");
        v.chunks(FACE_SIDE * FACE_SIDE).map(<[f32]>::to_vec).collect()
    };
    let probs = |t: Tensor<B, 4>| -> Vec<Vec<f32>> {
        let p = softmax(forward(t).detach(), 1).into_data().convert::<f32>().to_vec::<f32>().expect("floats");
        p.chunks(Emotion::COUNT).map(<[f32]>::to_vec).collect()
    };
    let (clean_probs, adversarial_probs) = (probs(batch.images.clone()), probs(attacked.clone()));
    Ok(indices
        .iter()
        .zip(rows(batch.images))
        .zip(rows(attacked))
        .zip(clean_probs.into_iter().zip(adversarial_probs))
        .map(|(((&index, clean), adversarial), (clean_probs, adversarial_probs))| AdversarialExample {
            index,
            label: split.label(index),
            clean,
            adversarial,
            clean_probs,
            adversarial_probs,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Emotion::{Angry, Happy, Neutral, Sad};

    #[test]
    fn right_after_attack_splits_the_faces_right_under_attack_by_their_clean_answer() {
        let predictions = [
            (Happy, Happy),   // kept right
            (Happy, Sad),     // right, then broken
            (Sad, Angry),     // wrong, moved onto the right class
            (Sad, Sad),       // wrong both times
            (Neutral, Angry), // wrong, moved onto another wrong class
            (Angry, Angry),   // kept right: past the prefix below
        ];
        let labels = [Happy, Happy, Angry, Happy, Sad, Angry];
        assert_eq!(right_after_attack(&predictions, &labels), (2, 1));
        assert_eq!(right_after_attack(&predictions[..5], &labels), (1, 1), "a prefix counts its faces only");
        assert_eq!(right_after_attack(&predictions, &labels[..3]), (1, 1), "so do fewer labels");
        assert_eq!(right_after_attack(&[], &labels), (0, 0));
    }

    #[test]
    fn example_faces_put_the_broken_ones_first() {
        let predictions = [(Sad, Sad), (Happy, Sad), (Angry, Angry), (Happy, Angry), (Sad, Happy)];
        let labels = [Sad, Happy, Happy, Happy, Sad];
        // Broken (right, then wrong): faces 1, 3 and 4; the others: 0 and 2.
        assert_eq!(example_faces(&predictions, &labels, 2), vec![1, 3]);
        assert_eq!(example_faces(&predictions, &labels, 4), vec![1, 3, 4, 0]);
        assert_eq!(example_faces(&predictions, &labels, 9), vec![1, 3, 4, 0, 2], "no face twice");
        assert_eq!(example_faces(&predictions, &labels[..2], 9), vec![1, 0], "only faces with a label");
        assert!(example_faces(&predictions, &labels, 0).is_empty());
    }
}
