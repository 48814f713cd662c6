//! Accuracy, per-class accuracy, loss and confusion matrix of a classifier on a split.

use std::sync::Arc;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use fer_dataset::{BatchStream, Emotion, FaceBatcher, SplitData, View};

use crate::{Classifier, FaceAnswer, average_crops};

/// The outcome of evaluating a classifier on a split.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// `confusion[true][predicted]` face counts.
    pub confusion: [[u64; Emotion::COUNT]; Emotion::COUNT],
    /// Sum over faces of the cross-entropy of the (crop-averaged) logits.
    pub loss_sum: f64,
}

impl Default for Evaluation {
    fn default() -> Evaluation {
        Evaluation { confusion: [[0; Emotion::COUNT]; Emotion::COUNT], loss_sum: 0.0 }
    }
}

impl Evaluation {
    /// Adds a batch: `logits` `[N, classes]` (one row per face, crops already averaged) against
    /// `targets` `[N]`.
    pub fn record<B: Backend>(&mut self, logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) {
        self.record_classes(logits, targets);
    }

    /// [`Evaluation::record`], returning each face's `(label, answer)` (the logits' arg-max), in
    /// row order.
    fn record_classes<B: Backend>(
        &mut self,
        logits: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
    ) -> Vec<(Emotion, Emotion)> {
        let faces = targets.dims()[0];
        let loss = CrossEntropyLossConfig::new().init(&logits.device()).forward(logits.clone(), targets.clone());
        let loss: f64 = loss.into_scalar().elem();
        self.loss_sum += loss * faces as f64;
        let predicted = logits.argmax(1).into_data().convert::<i64>();
        let truth = targets.into_data().convert::<i64>();
        let predicted = predicted.as_slice::<i64>().expect("argmax gives ints");
        let truth = truth.as_slice::<i64>().expect("targets are ints");
        let classes: Vec<(Emotion, Emotion)> =
            truth.iter().zip(predicted).map(|(&t, &p)| (Emotion::ALL[t as usize], Emotion::ALL[p as usize])).collect();
        for &(t, p) in &classes {
            self.confusion[t.index()][p.index()] += 1;
        }
        classes
    }

    /// Faces evaluated.
    pub fn faces(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }

    /// Faces classified correctly.
    pub fn correct(&self) -> u64 {
        (0..Emotion::COUNT).map(|i| self.confusion[i][i]).sum()
    }

    /// Fraction of faces classified correctly (0 when there are none).
    pub fn accuracy(&self) -> f64 {
        let faces = self.faces();
        if faces == 0 { 0.0 } else { self.correct() as f64 / faces as f64 }
    }

    /// Recall of each class (`None` for a class absent from the split).
    pub fn per_class_accuracy(&self) -> [Option<f64>; Emotion::COUNT] {
        std::array::from_fn(|i| {
            let n: u64 = self.confusion[i].iter().sum();
            (n > 0).then(|| self.confusion[i][i] as f64 / n as f64)
        })
    }

    /// Faces answered as each class (the confusion matrix's column sums), in [`Emotion`] order.
    pub fn answers(&self) -> [u64; Emotion::COUNT] {
        std::array::from_fn(|p| self.confusion.iter().map(|row| row[p]).sum())
    }

    /// The class answered most often (the last of them on a tie) and its share of the faces;
    /// `None` when nothing was evaluated. A share above one half means the accuracy is largely
    /// that of a constant answer.
    pub fn top_answer(&self) -> Option<(Emotion, f64)> {
        let faces = self.faces();
        let (class, count) = Emotion::ALL.into_iter().zip(self.answers()).max_by_key(|&(_, n)| n)?;
        (faces > 0).then(|| (class, count as f64 / faces as f64))
    }

    /// Mean of the per-class recalls over the classes present: 1/7 for any constant answer,
    /// so it tells learning from predicting the majority class (happy, ~25 % of FER2013).
    pub fn balanced_accuracy(&self) -> f64 {
        let recalls: Vec<f64> = self.per_class_accuracy().into_iter().flatten().collect();
        if recalls.is_empty() { 0.0 } else { recalls.iter().sum::<f64>() / recalls.len() as f64 }
    }

    /// Mean cross-entropy per face.
    pub fn mean_loss(&self) -> f64 {
        let faces = self.faces();
        if faces == 0 { 0.0 } else { self.loss_sum / faces as f64 }
    }
}

/// Evaluates `model` on every face of `split` seen through `view` (TenCrop: logits averaged over
/// the 10 crops, as the reference). Use an inference backend (or `model.valid()`): BatchNorm
/// then uses its running statistics and dropout is off, so each face's logits do not depend on
/// the others in its batch.
///
/// Every batch has one shape: when the split holds more than `batch_faces` faces, the last,
/// smaller batch is padded with blank images to the size of the others and their logits are
/// dropped. The figures are those of the unpadded batch (to the rounding of a kernel chosen for
/// the batch size); what it spares is a GPU backend's autotuning, which tunes and compiles the
/// kernels of every new batch size anew (minutes on Burn's CUDA backend: docs/RESULTS.md, "Second
/// GPU lease").
pub fn evaluate<B: Backend, M: Classifier<B>>(
    model: &M,
    split: Arc<SplitData>,
    view: View,
    batch_faces: usize,
    device: &B::Device,
) -> Evaluation {
    evaluate_faces(model, split, view, batch_faces, device, None)
}

/// [`evaluate`], and each face's answer and probabilities in the split's order: what
/// [`crate::compare_answers`] pairs with another classifier's answers on the same faces
/// (`fer eval --answers`). The evaluation is the one [`evaluate`] returns.
pub fn evaluate_with_answers<B: Backend, M: Classifier<B>>(
    model: &M,
    split: Arc<SplitData>,
    view: View,
    batch_faces: usize,
    device: &B::Device,
) -> (Evaluation, Vec<FaceAnswer>) {
    let mut answers = Vec::with_capacity(split.len());
    let evaluation = evaluate_faces(model, split, view, batch_faces, device, Some(&mut answers));
    (evaluation, answers)
}

/// [`evaluate`]'s loop; with `answers`, each face's answer is appended to it.
fn evaluate_faces<B: Backend, M: Classifier<B>>(
    model: &M,
    split: Arc<SplitData>,
    view: View,
    batch_faces: usize,
    device: &B::Device,
    mut answers: Option<&mut Vec<FaceAnswer>>,
) -> Evaluation {
    let faces = split.len();
    let order: Vec<usize> = (0..faces).collect();
    let batcher = FaceBatcher::new(view, 0, faces);
    let full_batch = (faces > batch_faces).then_some(batch_faces * view.crops_per_face());
    let mut evaluation = Evaluation::default();
    for batch in BatchStream::<B>::new(split, order, batch_faces, batcher, 2, device.clone()) {
        let logits = average_crops(padded_logits(batch.images, full_batch, |x| model.logits(x)), batch.crops_per_face);
        let probabilities = answers
            .is_some()
            .then(|| burn::tensor::activation::softmax(logits.clone(), 1).into_data().convert::<f32>().to_vec::<f32>());
        let classes = evaluation.record_classes(logits, batch.targets);
        if let (Some(answers), Some(probabilities)) = (answers.as_deref_mut(), probabilities) {
            let probabilities = probabilities.expect("softmax gives floats");
            for ((label, answer), row) in classes.into_iter().zip(probabilities.chunks_exact(Emotion::COUNT)) {
                answers.push(FaceAnswer {
                    face: answers.len(),
                    label,
                    answer,
                    probabilities: Some(row.try_into().expect("seven classes a row")),
                });
            }
        }
    }
    evaluation
}

/// `logits(images)`, with a batch of fewer than `rows` images (when `rows` is `Some`) padded with
/// blank images to `rows` first and their logits dropped, so that every batch a GPU backend sees
/// has one shape (each new batch size is autotuned anew). For inference-mode models only, where
/// each image's logits do not depend on the rest of the batch; gradients flow to `images` alone.
/// [`evaluate`] and fer-adversarial's attacks pad their last batch with it.
pub fn padded_logits<B: Backend>(
    images: Tensor<B, 4>,
    rows: Option<usize>,
    logits: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [n, channels, height, width] = images.dims();
    match rows {
        Some(rows) if n < rows => {
            let blank = Tensor::zeros([rows - n, channels, height, width], &images.device());
            logits(Tensor::cat(vec![images, blank], 0)).slice(0..n)
        }
        _ => logits(images),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_confusion() {
        let mut confusion = [[0u64; 7]; 7];
        confusion[0][0] = 3;
        confusion[0][3] = 1;
        confusion[3][3] = 4;
        let e = Evaluation { confusion, loss_sum: 8.0 };
        assert_eq!(e.faces(), 8);
        assert_eq!(e.accuracy(), 7.0 / 8.0);
        assert_eq!(e.per_class_accuracy()[0], Some(0.75));
        assert_eq!(e.per_class_accuracy()[3], Some(1.0));
        assert_eq!(e.per_class_accuracy()[1], None);
        assert_eq!(e.mean_loss(), 1.0);
        assert_eq!(e.balanced_accuracy(), (0.75 + 1.0) / 2.0);
        // Columns, not rows: 3 faces answered angry, 1 + 4 answered happy.
        assert_eq!(e.answers(), [3, 0, 0, 5, 0, 0, 0]);
        assert_eq!(e.top_answer(), Some((Emotion::Happy, 5.0 / 8.0)));
        assert_eq!(Evaluation::default().top_answer(), None);
    }

    /// The last batch padded to the others' shape gives the figures of unpadded batches: the same
    /// answers, the same loss to rounding.
    #[test]
    fn padded_last_batch_changes_no_figure() {
        use burn::backend::NdArray;
        let device = Default::default();
        let model = crate::ModelConfig::from_name("vgg-small").expect("known").init::<NdArray>(&device);
        let split = Arc::new(fer_dataset::synthetic::texture_split(11, 3));
        for view in [View::CenterCrop(44), View::TenCrop(44)] {
            // 11 faces in batches of 4: 4, 4 and 3 padded to 4; against one batch of all 11.
            let padded = evaluate(&model, split.clone(), view, 4, &device);
            let whole = evaluate(&model, split.clone(), view, 11, &device);
            assert_eq!(padded.faces(), 11);
            assert_eq!(padded.confusion, whole.confusion, "{view:?}");
            assert!((padded.loss_sum - whole.loss_sum).abs() < 1e-4, "{view:?}: {padded:?} vs {whole:?}");
            // Each face's answer, in order: they add up to the same evaluation.
            let (with_answers, answers) = evaluate_with_answers(&model, split.clone(), view, 4, &device);
            assert_eq!(with_answers, padded);
            assert_eq!(answers.len(), 11);
            let mut counted = [[0u64; Emotion::COUNT]; Emotion::COUNT];
            for (i, a) in answers.iter().enumerate() {
                assert_eq!((a.face, a.label), (i, split.label(i)), "{view:?}");
                let p = a.probabilities.expect("evaluate_with_answers keeps the probabilities");
                assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                let top = (0..Emotion::COUNT).max_by(|&x, &y| p[x].total_cmp(&p[y]));
                assert_eq!(top, Some(a.answer.index()), "the answer has the highest probability");
                counted[a.label.index()][a.answer.index()] += 1;
            }
            assert_eq!(counted, padded.confusion, "{view:?}");
        }
        // The padding itself: the real rows' logits are those of the batch alone.
        let images = Tensor::<NdArray, 4>::random([3, 1, 44, 44], burn::tensor::Distribution::Default, &device);
        let alone = model.logits(images.clone());
        let padded = padded_logits(images.clone(), Some(8), |x| model.logits(x));
        assert_eq!(padded.dims(), [3, 7]);
        assert!((alone - padded).abs().max().into_scalar() < 1e-5);
        assert_eq!(padded_logits(images, Some(2), |x| model.logits(x)).dims(), [3, 7], "never cut");
    }
}
