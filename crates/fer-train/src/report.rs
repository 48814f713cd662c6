//! `report.json`: the selected checkpoint evaluated on both test splits, per class.

use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use fer_adversarial::{Attack, RobustCeiling, SweepPoint, ceiling_sweep, evaluate_robustness};
use fer_dataset::{CopyPartition, Emotion, Fer2013, Split, View};
use fer_models::load_checkpoint;

use crate::run::{read_json, write_csv, write_json};
use crate::train::{RunSummary, evaluation_faces, evaluation_view};
use crate::{Evaluation, RunFiles, TrainConfig, TrainError, evaluate, plot_confusion, plot_curves, read_metrics};

/// One split's evaluation, ready for JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitReport {
    /// The split.
    pub split: Split,
    /// Faces evaluated.
    pub faces: u64,
    /// Overall accuracy.
    pub accuracy: f64,
    /// Its 95 % Wilson interval ([`fer_models::wilson_interval`]): how far the figure can move
    /// with another draw of as many faces (±1.5 points at 70 % on 3,589 faces); `None` for no
    /// faces, and in files written before it was added.
    #[serde(default)]
    pub accuracy_ci95: Option<[f64; 2]>,
    /// Mean per-class recall (1/7 for any constant answer).
    pub balanced_accuracy: f64,
    /// Mean cross-entropy.
    pub mean_loss: f64,
    /// Recall per class, in [`Emotion`] order (`null` for a class absent from the split).
    pub per_class_accuracy: Vec<(Emotion, Option<f64>)>,
    /// Faces answered as each class, in [`Emotion`] order (the confusion matrix's column sums;
    /// empty in files written before it was added).
    #[serde(default)]
    pub answers: Vec<(Emotion, u64)>,
    /// `confusion[true][predicted]`, classes in [`Emotion`] order.
    pub confusion: [[u64; Emotion::COUNT]; Emotion::COUNT],
}

/// Share of all answers above which one class counts as a dominant answer
/// ([`SplitReport::dominant_answer`]). Happy, FER2013's largest class, is 24.5–25.1 % of each
/// split, so a model that answers one class for over half of the faces mostly ignores them; its
/// accuracy is then largely that class's share of the faces, which an attack cannot lower where
/// the answer does not depend on the face.
pub const DOMINANT_ANSWER_SHARE: f64 = 0.5;

/// Whether one class answered for `share_of_answers` of the faces is a dominant answer: more
/// than [`DOMINANT_ANSWER_SHARE`] (exactly half is not).
pub fn is_dominant_share(share_of_answers: f64) -> bool {
    share_of_answers > DOMINANT_ANSWER_SHARE
}

/// One class answered for more than [`DOMINANT_ANSWER_SHARE`] of the faces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DominantAnswer {
    /// The class.
    pub emotion: Emotion,
    /// Its share of the answers.
    pub share_of_answers: f64,
    /// Its share of the faces (how often it is the true class).
    pub share_of_faces: f64,
}

impl SplitReport {
    /// The report of `evaluation` on `split`.
    pub fn new(split: Split, evaluation: &Evaluation) -> SplitReport {
        SplitReport {
            split,
            faces: evaluation.faces(),
            accuracy: evaluation.accuracy(),
            accuracy_ci95: fer_models::wilson_interval(evaluation.correct(), evaluation.faces(), fer_models::Z_95),
            balanced_accuracy: evaluation.balanced_accuracy(),
            mean_loss: evaluation.mean_loss(),
            per_class_accuracy: Emotion::ALL.into_iter().zip(evaluation.per_class_accuracy()).collect(),
            answers: Emotion::ALL.into_iter().zip(evaluation.answers()).collect(),
            confusion: evaluation.confusion,
        }
    }

    /// The class answered for more than [`DOMINANT_ANSWER_SHARE`] of the faces, if any (read from
    /// the confusion matrix, so it also works on files without `answers`).
    pub fn dominant_answer(&self) -> Option<DominantAnswer> {
        let counts = Evaluation { confusion: self.confusion, loss_sum: 0.0 };
        let (emotion, share_of_answers) = counts.top_answer()?;
        is_dominant_share(share_of_answers).then(|| DominantAnswer {
            emotion,
            share_of_answers,
            share_of_faces: self.confusion[emotion.index()].iter().sum::<u64>() as f64 / counts.faces() as f64,
        })
    }
}

/// `report.json` of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Model: preset name (`vgg19`, …) or, for a custom config, [`fer_models::ModelConfig::label`].
    pub model: String,
    /// How the checkpoint was chosen.
    pub selection: String,
    /// Evaluation view (TenCrop or CenterCrop and its side).
    pub view: View,
    /// Honest figures and the reference-style figure, from `metrics.csv`.
    pub summary: RunSummary,
    /// The selected checkpoint (`best.fer`) on PublicTest.
    pub public_test: SplitReport,
    /// The selected checkpoint (`best.fer`) on PrivateTest: the headline.
    pub private_test: SplitReport,
    /// The same on the PrivateTest faces without an exact copy in Training (FER2013 holds about
    /// 8 % of PrivateTest in Training too, [`fer_dataset::copies_in`]; a model can answer those
    /// from memory); `None` in reports written before it was added.
    #[serde(default)]
    pub private_test_unseen: Option<SplitReport>,
    /// The selected checkpoint on PrivateTest's whole 48×48 faces ([`View::Full`]), the clean
    /// view of the reference's attack protocol: a network trained on crops alone can lose ten
    /// points and more there (see `TrainConfig::whole_face_pct`); `None` in reports written
    /// before it was added.
    #[serde(default)]
    pub private_test_whole_faces: Option<SplitReport>,
    /// Adversarial training runs: the selected checkpoint under attack.
    pub adversarial: Option<AdversarialReport>,
}

/// The selected checkpoint of an adversarial-training run under attack.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdversarialReport {
    /// How the attacks were run.
    pub protocol: String,
    /// The evaluation attack (the reference: FGSM at the training ε).
    pub attack: Attack,
    /// PublicTest under the evaluation attack.
    pub public_test: SplitReport,
    /// PrivateTest under the evaluation attack: the robustness headline.
    pub private_test: SplitReport,
    /// PrivateTest clean, on the view the attacks see (the reference: full faces).
    #[serde(alias = "private_test_clean_full_faces")]
    pub private_test_clean: SplitReport,
    /// The check attack (PGD-10 at the same ε).
    pub check_attack: Attack,
    /// PrivateTest under the check attack.
    pub private_test_check: SplitReport,
    /// Share of the PrivateTest faces right both clean and under the evaluation attack (it pushes
    /// against the model's predictions, so `private_test.accuracy` also counts faces moved from a
    /// wrong answer onto the right one); `None` in reports written before it was added.
    #[serde(default)]
    pub private_test_robust_accuracy: Option<f64>,
    /// The same under the check attack.
    #[serde(default)]
    pub private_test_check_robust_accuracy: Option<f64>,
    /// The robustness ceiling of these PrivateTest faces at the evaluation attack's ε, over the
    /// pixels the attacks' view shows: no classifier keeps more of them right under every attack
    /// of that budget ([`fer_adversarial::robust_ceiling`]); `None` in reports written before it
    /// was added.
    #[serde(default)]
    pub private_test_ceiling: Option<RobustCeiling>,
}

/// Evaluates `best.fer` of the run on PublicTest and PrivateTest (and, for adversarial training,
/// under the evaluation and check attacks), writes `report.json`, `curves.png` and
/// `confusion_private.png`, and returns the report. `B` is an autodiff backend because attacks
/// need input gradients; clean evaluation runs on its inner backend.
///
/// A plot that cannot be drawn (e.g. no DejaVu font installed) is logged as a warning; the JSON
/// report is written regardless.
pub fn write_report<B: AutodiffBackend>(
    files: &RunFiles,
    data: &Fer2013,
    device: &B::Device,
) -> Result<Report, TrainError> {
    let config: TrainConfig = read_json(&files.config())?;
    let rows = read_metrics(&files.metrics())?;
    let selection = config.selection();
    let summary = RunSummary::from_metrics(&rows, selection)
        .ok_or_else(|| TrainError::Data("metrics.csv has no epoch".into()))?;
    let (model, _) = load_checkpoint::<B>(files.best(), device)?;
    let inference = model.valid();
    let view = evaluation_view(&config);
    let public_faces = Arc::new(evaluation_faces(data, Split::PublicTest, config.eval_limit));
    let private_faces = Arc::new(evaluation_faces(data, Split::PrivateTest, config.eval_limit));
    let faces = |split: Split| if split == Split::PublicTest { public_faces.clone() } else { private_faces.clone() };
    let evaluate_split = |split: Split| {
        SplitReport::new(split, &evaluate(&inference, faces(split), view, config.eval_batch_faces, device))
    };
    let unseen = {
        let unseen = CopyPartition::new(&private_faces, data.split(Split::Training), 0).unseen;
        let faces = Arc::new(private_faces.select(&unseen));
        SplitReport::new(Split::PrivateTest, &evaluate(&inference, faces, view, config.eval_batch_faces, device))
    };
    let adversarial = match &config.adversarial {
        None => None,
        Some(adv) => {
            let attack_split = |attack: Attack, split: Split| {
                let robustness = adv.robustness(attack, config.eval_batch_faces, config.seed);
                evaluate_robustness(&model, faces(split), &robustness, device, |_, _| {})
            };
            let public = attack_split(adv.eval_attack, Split::PublicTest)?;
            let private = attack_split(adv.eval_attack, Split::PrivateTest)?;
            let check = attack_split(adv.check_attack, Split::PrivateTest)?;
            let view = adv.robustness(adv.eval_attack, 1, 0).view();
            let ceiling = ceiling_sweep(&private_faces, view, &[adv.eval_attack.eps()], |_| {})?.pop();
            Some(AdversarialReport {
                protocol: adv.protocol(),
                attack: adv.eval_attack,
                public_test: SplitReport::new(Split::PublicTest, &public.adversarial),
                private_test: SplitReport::new(Split::PrivateTest, &private.adversarial),
                private_test_clean: SplitReport::new(Split::PrivateTest, &private.clean),
                check_attack: adv.check_attack,
                private_test_check: SplitReport::new(Split::PrivateTest, &check.adversarial),
                private_test_robust_accuracy: Some(private.robust_accuracy()),
                private_test_check_robust_accuracy: Some(check.robust_accuracy()),
                private_test_ceiling: ceiling,
            })
        }
    };
    let criterion = selection.criterion();
    let report = Report {
        model: config.model.label(),
        selection: format!(
            "checkpoint with {criterion}; PrivateTest is the headline. summary.reference_style_* are the best \
             PrivateTest figures over all epochs (the reference project's way, selected on the test set)"
        ),
        view,
        summary,
        public_test: evaluate_split(Split::PublicTest),
        private_test: evaluate_split(Split::PrivateTest),
        private_test_unseen: Some(unseen),
        private_test_whole_faces: Some(SplitReport::new(
            Split::PrivateTest,
            &evaluate(&inference, private_faces.clone(), View::Full, config.eval_batch_faces, device),
        )),
        adversarial,
    };
    write_json(&files.report(), &report)?;
    if let Err(e) = plot_curves(&rows, &files.curves_png()) {
        tracing::warn!("{e}");
    }
    if let Err(e) = plot_confusion(&report.private_test.confusion, &confusion_title(&report), &files.confusion_png()) {
        tracing::warn!("{e}");
    }
    Ok(report)
}

/// Redraws a run's `curves.png` and `confusion_private.png` from its `metrics.csv` and
/// `report.json` alone, without its checkpoints or the data: for a run whose plots could not be
/// drawn where it trained (a machine without the DejaVu font) or whose checkpoints stayed there.
/// Returns the report read. Unlike [`write_report`], a plot that cannot be drawn is an error.
pub fn write_plots(files: &RunFiles) -> Result<Report, TrainError> {
    let report: Report = read_json(&files.report())?;
    let rows = read_metrics(&files.metrics())?;
    plot_curves(&rows, &files.curves_png())?;
    plot_confusion(&report.private_test.confusion, &confusion_title(&report), &files.confusion_png())?;
    Ok(report)
}

/// The confusion plot's title: the model and the selected epoch (1-based).
fn confusion_title(report: &Report) -> String {
    format!("{} PrivateTest (epoch {})", report.model, report.summary.selected_epoch + 1)
}

/// Writes an ε sweep as CSV (`method,attack,eps,clean_acc,adversarial_acc,seconds`), atomically.
pub fn write_sweep_csv(points: &[SweepPoint], path: &std::path::Path) -> Result<(), TrainError> {
    write_csv(path, points)
}

/// Writes robustness ceilings as CSV (the fields of
/// [`RobustCeiling`](fer_adversarial::RobustCeiling), one row per ε), atomically.
pub fn write_ceiling_csv(points: &[fer_adversarial::RobustCeiling], path: &std::path::Path) -> Result<(), TrainError> {
    write_csv(path, points)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 faces, 2 of each of the first five classes, answered as `answers[i]` in order.
    fn report(answers: [usize; 10]) -> SplitReport {
        let mut confusion = [[0u64; Emotion::COUNT]; Emotion::COUNT];
        for (i, &p) in answers.iter().enumerate() {
            confusion[i / 2][p] += 1;
        }
        SplitReport::new(Split::PrivateTest, &Evaluation { confusion, loss_sum: 0.0 })
    }

    #[test]
    fn a_dominant_answer_needs_more_than_half_of_the_answers() {
        let spread = report([0, 1, 1, 2, 2, 3, 3, 4, 4, 0]);
        assert_eq!(spread.dominant_answer(), None);
        assert_eq!(spread.answers[0], (Emotion::Angry, 2));
        // Exactly half is not more than half.
        assert_eq!(report([4, 4, 4, 4, 4, 0, 1, 2, 3, 0]).dominant_answer(), None);
        let sad = report([4, 4, 4, 4, 4, 4, 1, 2, 3, 4]);
        let dominant = sad.dominant_answer().expect("7 of 10 answers are sad");
        assert_eq!(dominant.emotion, Emotion::Sad);
        assert_eq!(dominant.share_of_answers, 0.7);
        assert_eq!(dominant.share_of_faces, 0.2);
        assert_eq!(sad.answers[4], (Emotion::Sad, 7));
        let empty = SplitReport::new(Split::PublicTest, &Evaluation::default());
        assert_eq!(empty.dominant_answer(), None);
    }

    #[test]
    fn reports_written_before_answers_still_read() {
        let sad = report([4, 4, 4, 4, 4, 4, 1, 2, 3, 4]);
        let mut json = serde_json::to_value(&sad).expect("serialises");
        json.as_object_mut().expect("an object").remove("answers");
        let old: SplitReport = serde_json::from_value(json).expect("parses without answers");
        assert!(old.answers.is_empty());
        assert_eq!(old.dominant_answer(), sad.dominant_answer());
        // Nor the accuracy's interval (added later still).
        let mut json = serde_json::to_value(&sad).expect("serialises");
        json.as_object_mut().expect("an object").remove("accuracy_ci95");
        let old: SplitReport = serde_json::from_value(json).expect("parses without accuracy_ci95");
        assert_eq!(old.accuracy_ci95, None);
    }

    /// The accuracy's 95 % interval is Wilson's on the right answers of the confusion matrix.
    #[test]
    fn accuracy_interval_is_wilsons() {
        let spread = report([0, 1, 1, 2, 2, 3, 3, 4, 4, 0]); // right: faces 0, 2, 4, 6, 8
        assert_eq!(spread.accuracy, 0.5);
        assert_eq!(spread.accuracy_ci95, fer_models::wilson_interval(5, 10, fer_models::Z_95));
        let [low, high] = spread.accuracy_ci95.expect("10 faces");
        assert!(low < 0.5 && 0.5 < high && (0.5 - low - (high - 0.5)).abs() < 1e-12, "symmetric at ½");
        assert_eq!(SplitReport::new(Split::PublicTest, &Evaluation::default()).accuracy_ci95, None);
    }
}
