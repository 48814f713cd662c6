//! `report.json`: the selected checkpoint evaluated on both test splits, per class.

use std::sync::Arc;

use burn::prelude::Backend;
use fer_dataset::{Emotion, Fer2013, Split, View};
use fer_models::load_checkpoint;

use crate::run::{read_json, write_json};
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
    /// Mean per-class recall (1/7 for any constant answer).
    pub balanced_accuracy: f64,
    /// Mean cross-entropy.
    pub mean_loss: f64,
    /// Recall per class, in [`Emotion`] order (`null` for a class absent from the split).
    pub per_class_accuracy: Vec<(Emotion, Option<f64>)>,
    /// `confusion[true][predicted]`, classes in [`Emotion`] order.
    pub confusion: [[u64; Emotion::COUNT]; Emotion::COUNT],
}

impl SplitReport {
    /// The report of `evaluation` on `split`.
    pub fn new(split: Split, evaluation: &Evaluation) -> SplitReport {
        SplitReport {
            split,
            faces: evaluation.faces(),
            accuracy: evaluation.accuracy(),
            balanced_accuracy: evaluation.balanced_accuracy(),
            mean_loss: evaluation.mean_loss(),
            per_class_accuracy: Emotion::ALL.into_iter().zip(evaluation.per_class_accuracy()).collect(),
            confusion: evaluation.confusion,
        }
    }
}

/// `report.json` of a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Model preset name (`vgg19`, …).
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
}

/// Evaluates `best.fer` of the run on PublicTest and PrivateTest, writes `report.json`,
/// `curves.png` and `confusion_private.png`, and returns the report.
///
/// A plot that cannot be drawn (e.g. no DejaVu font installed) is logged as a warning; the JSON
/// report is written regardless.
pub fn write_report<B: Backend>(files: &RunFiles, data: &Fer2013, device: &B::Device) -> Result<Report, TrainError> {
    let config: TrainConfig = read_json(&files.config())?;
    let rows = read_metrics(&files.metrics())?;
    let summary = RunSummary::from_metrics(&rows).ok_or_else(|| TrainError::Data("metrics.csv has no epoch".into()))?;
    let (model, _) = load_checkpoint::<B>(files.best(), device)?;
    let view = evaluation_view(&config);
    let evaluate_split = |split: Split| {
        let faces = Arc::new(evaluation_faces(data, split, config.eval_limit));
        SplitReport::new(split, &evaluate(&model, faces, view, config.eval_batch_faces, device))
    };
    let report = Report {
        model: config.model.name().to_string(),
        selection: "checkpoint with the best PublicTest accuracy; PrivateTest is the headline. \
                    summary.reference_style_private_acc is the best PrivateTest over all epochs \
                    (the reference project's figure, selected on the test set)"
            .into(),
        view,
        summary,
        public_test: evaluate_split(Split::PublicTest),
        private_test: evaluate_split(Split::PrivateTest),
    };
    write_json(&files.report(), &report)?;
    if let Err(e) = plot_curves(&rows, &files.curves_png()) {
        tracing::warn!("{e}");
    }
    let title = format!("{} PrivateTest (epoch {})", report.model, report.summary.selected_epoch + 1);
    if let Err(e) = plot_confusion(&report.private_test.confusion, &title, &files.confusion_png()) {
        tracing::warn!("{e}");
    }
    Ok(report)
}
