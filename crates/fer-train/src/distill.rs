//! Knowledge distillation from saved answers (Hinton, Vinyals and Dean, 2015): a run learns from
//! its labels and from the class probabilities that one or more teachers gave each training face.
//!
//! The teachers are answers files, not checkpoints: `fer eval --split training --tencrop
//! --answers FILE` of each teacher (a few hundred kilobytes gzip'd, where a VGG19 checkpoint is
//! 80 MB), so models trained elsewhere (another GPU lease, another machine) teach a run here.
//! Several files are averaged with equal weights, as `fer ensemble` does without `--select-on`:
//! an ensemble distilled into one model. Each file's checksum is kept in the run's
//! configuration; a resumed run refuses a file that changed.
//!
//! The loss of a batch with labels `y`, logits `z`, teachers' probabilities `p`, weight `α` and
//! temperature `T`: `(1 − α)·CE(z, y) + α·T²·KL(p_T ‖ softmax(z/T))`, where `p_T ∝ p^(1/T)` is
//! the teachers' distribution at temperature `T` (the softmax of their logits divided by `T`,
//! recovered from their probabilities) and both terms are means over the batch. `T²` keeps the
//! soft term's gradient `α·T·(softmax(z/T) − p_T)` on the scale of the hard one's as `T` changes.
//! The probabilities are the teachers' for the whole face (TenCrop's average when evaluated so),
//! whatever crop of it the batch holds. `train_loss` in `metrics.csv` is this loss, divergence
//! included; the training accuracy and the test splits' losses stay against the labels.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use fer_dataset::{Emotion, SplitData};
use fer_models::{FaceAnswer, average_answers};

use crate::TrainError;
use crate::answers::read_answers;

/// One teacher's answers on the Training split, as a run's configuration records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TeacherAnswers {
    /// The answers file (`fer eval --split training --answers`; `.csv` or `.csv.gz`).
    pub path: PathBuf,
    /// CRC-32 of the file's bytes when the run was configured: the run refuses to start or
    /// resume if the file has changed since.
    pub checksum: u32,
}

impl TeacherAnswers {
    /// Names the answers file at `path` and records its checksum (fails when it cannot be read).
    pub fn from_file(path: impl AsRef<Path>) -> Result<TeacherAnswers, TrainError> {
        let path = path.as_ref();
        Ok(TeacherAnswers { path: path.to_path_buf(), checksum: file_checksum(path)? })
    }
}

/// CRC-32 of a file's bytes.
fn file_checksum(path: &Path) -> Result<u32, TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
    Ok(crc32fast::hash(&bytes))
}

/// Distillation of a run ([`crate::TrainConfig::distillation`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Distillation {
    /// The teachers' answers on the whole Training split, averaged with equal weights.
    pub teachers: Vec<TeacherAnswers>,
    /// `α`: the soft term's share of the loss, in [0, 1] (1: the teachers alone).
    pub weight: f32,
    /// `T`: the temperature both distributions are softened by (1: as they are).
    pub temperature: f32,
}

impl Distillation {
    /// Distillation from `teachers` with weight `α` = 0.5 and temperature `T` = 2.
    pub fn new(teachers: Vec<TeacherAnswers>) -> Distillation {
        Distillation { teachers, weight: 0.5, temperature: 2.0 }
    }

    /// Checks the fields; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.teachers.is_empty() {
            return Err("distillation needs at least one teacher's answers file".into());
        }
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(format!("distillation weight {} is not in [0, 1]", self.weight));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!("distillation temperature {} must be positive", self.temperature));
        }
        Ok(())
    }
}

/// The teachers' distribution at temperature `t` from their probabilities `p`: `p^(1/t)`
/// normalised to sum 1 (the softmax of their logits divided by `t`). A face whose probabilities
/// are all zero is refused (`None`).
pub fn tempered(p: &[f32; Emotion::COUNT], t: f32) -> Option<[f32; Emotion::COUNT]> {
    // In f64 and relative to the largest, so that small probabilities raised to 1/t stay finite.
    let max = p.iter().copied().fold(0.0f32, f32::max);
    if !(max > 0.0 && max.is_finite()) {
        return None;
    }
    let powered = p.map(|v| (f64::from(v) / f64::from(max)).powf(1.0 / f64::from(t)));
    let sum: f64 = powered.iter().sum();
    Some(powered.map(|v| (v / sum) as f32))
}

/// The teachers' tempered distributions of a run's training faces, one row per face of the run
/// (in the run's face order).
#[derive(Debug, Clone, PartialEq)]
pub struct SoftTargets {
    rows: Vec<[f32; Emotion::COUNT]>,
    /// Per face: `Σ p log p` of its row (0 log 0 = 0), so that the loss is the divergence itself.
    neg_entropy: Vec<f64>,
}

impl SoftTargets {
    /// Reads `distillation`'s files and keeps the rows of `positions` (the run's faces, as
    /// positions in `training`, the whole Training split): every file must hold one answer with
    /// probabilities for each face of `training`, in order and with its label, and be unchanged
    /// since the run was configured. The files' probabilities are averaged with equal weights,
    /// then tempered ([`tempered`]).
    pub fn load(
        distillation: &Distillation,
        training: &SplitData,
        positions: &[usize],
    ) -> Result<SoftTargets, TrainError> {
        distillation.check().map_err(TrainError::Config)?;
        let mut members = Vec::with_capacity(distillation.teachers.len());
        for teacher in &distillation.teachers {
            let path = &teacher.path;
            let checksum = file_checksum(path)?;
            if checksum != teacher.checksum {
                return Err(TrainError::Config(format!(
                    "{}: checksum {checksum:08x} differs from the {:08x} recorded in the configuration (the file changed)",
                    path.display(),
                    teacher.checksum
                )));
            }
            let answers = read_answers(path)?;
            check_teacher(path, &answers, training)?;
            members.push(answers);
        }
        // Soft voting with equal weights, as `fer ensemble` without a selection split.
        let members: Vec<&[FaceAnswer]> = members.iter().map(Vec::as_slice).collect();
        let mean = average_answers(&members, &vec![1.0; members.len()])
            .map_err(|e| TrainError::Data(format!("averaging the teachers: {e}")))?;
        let mut rows = Vec::with_capacity(positions.len());
        for &position in positions {
            let p = mean.get(position).and_then(|a| a.probabilities).ok_or_else(|| {
                TrainError::Data(format!("training face {position} is past the {} faces of the split", training.len()))
            })?;
            let row = tempered(&p, distillation.temperature).ok_or_else(|| {
                TrainError::Data(format!("the teachers give training face {position} no probability above 0"))
            })?;
            rows.push(row);
        }
        let neg_entropy = rows
            .iter()
            .map(|row| row.iter().filter(|&&p| p > 0.0).map(|&p| f64::from(p) * f64::from(p).ln()).sum())
            .collect();
        Ok(SoftTargets { rows, neg_entropy })
    }

    /// Faces.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The tempered distribution of the run's face `face`.
    pub fn row(&self, face: usize) -> Option<&[f32; Emotion::COUNT]> {
        self.rows.get(face)
    }

    /// The rows of `faces` as a `[faces, 7]` tensor, and the mean of their `Σ p log p`.
    pub(crate) fn batch<B: Backend>(
        &self,
        faces: &[usize],
        device: &B::Device,
    ) -> Result<(Tensor<B, 2>, f64), TrainError> {
        let mut values = Vec::with_capacity(faces.len() * Emotion::COUNT);
        let mut neg_entropy = 0.0;
        for &face in faces {
            let row = self
                .rows
                .get(face)
                .ok_or_else(|| TrainError::Data(format!("no soft target for training face {face}")))?;
            values.extend_from_slice(row);
            neg_entropy += self.neg_entropy[face];
        }
        let tensor = Tensor::from_data(TensorData::new(values, [faces.len(), Emotion::COUNT]), device);
        Ok((tensor, neg_entropy / faces.len().max(1) as f64))
    }
}

/// Refuses a teacher's answers that are not one per face of `training`, in order, with its label
/// and with probabilities; names the file and line.
fn check_teacher(path: &Path, answers: &[FaceAnswer], training: &SplitData) -> Result<(), TrainError> {
    if answers.len() != training.len() {
        return Err(TrainError::Data(format!(
            "{}: {} answers, but the Training split holds {} faces: give each teacher's answers on the whole \
             Training split (fer eval --split training --answers FILE)",
            path.display(),
            answers.len(),
            training.len()
        )));
    }
    let bad_row = |row: usize, message: String| TrainError::BadRow { path: path.to_path_buf(), line: row + 2, message };
    for (row, answer) in answers.iter().enumerate() {
        if answer.face != row {
            return Err(bad_row(
                row,
                format!("face {} where face {row} of the Training split was expected", answer.face),
            ));
        }
        let label = training.label(row);
        if answer.label != label {
            return Err(bad_row(
                row,
                format!(
                    "label {} but Training face {row} is {}: the answers are of other data",
                    answer.label.name(),
                    label.name()
                ),
            ));
        }
        match answer.probabilities {
            None => return Err(bad_row(row, "no class probabilities: a teacher's answers need all seven".into())),
            Some(p) if p.iter().any(|v| !(v.is_finite() && *v >= 0.0)) => {
                return Err(bad_row(row, format!("probabilities {p:?} are not all finite and >= 0")));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The distillation loss of a batch: `(1 − α)·hard + α·T²·KL(p_T ‖ softmax(z/T))`, the
/// divergence the mean over the batch. `hard` is the batch's (label-smoothed) cross-entropy,
/// `soft` the teachers' tempered rows ([`SoftTargets::batch`]) with the mean of their `Σ p log p`.
pub(crate) fn distillation_loss<B: Backend>(
    logits: Tensor<B, 2>,
    hard: Tensor<B, 1>,
    (soft, neg_entropy): (Tensor<B, 2>, f64),
    weight: f32,
    temperature: f32,
) -> Tensor<B, 1> {
    let [faces, _] = logits.dims();
    let log_q = log_softmax(logits.div_scalar(temperature), 1);
    // Σ_faces Σ_k p log q, then KL = Σ p log p − Σ p log q as a mean over the faces.
    let cross = (soft * log_q).sum().div_scalar(faces as f32);
    let divergence = cross.neg().add_scalar(neg_entropy);
    hard.mul_scalar(1.0 - weight) + divergence.mul_scalar(weight * temperature * temperature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = NdArray;
    type AB = Autodiff<NdArray>;

    /// At T = 1 the probabilities come back (normalised); higher temperatures flatten them by the
    /// power 1/T; zeros stay zero; all-zero rows are refused.
    #[test]
    fn tempering_raises_probabilities_to_one_over_t() {
        let p = [0.5, 0.25, 0.125, 0.125, 0.0, 0.0, 0.0];
        let one = tempered(&p, 1.0).expect("tempered");
        for (a, b) in one.iter().zip(p) {
            assert!((a - b).abs() < 1e-7, "{one:?}");
        }
        // T = 2: square roots (0.7071, 0.5, 0.3536, 0.3536) over their sum 1.9142.
        let two = tempered(&p, 2.0).expect("tempered");
        let roots = [0.5f64.sqrt(), 0.5, 0.125f64.sqrt(), 0.125f64.sqrt()];
        let sum: f64 = roots.iter().sum();
        for (k, r) in roots.iter().enumerate() {
            assert!((f64::from(two[k]) - r / sum).abs() < 1e-6, "{two:?}");
        }
        assert_eq!(&two[4..], &[0.0; 3]);
        assert!(two[0] < p[0] && two[3] > p[3], "flatter: {two:?}");
        // Tiny probabilities at a high temperature stay finite.
        let tiny = tempered(&[1e-30, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], 20.0).expect("tempered");
        assert!(tiny.iter().all(|v| v.is_finite()) && tiny[0] > 0.0, "{tiny:?}");
        assert_eq!(tempered(&[0.0; 7], 2.0), None);
        assert_eq!(tempered(&[f32::NAN; 7], 2.0), None);
    }

    /// The loss of two faces over three classes, by hand: the soft term is T²·KL(p ‖ softmax(z/T)),
    /// the hard term is weighted by 1 − α, and the divergence of identical distributions is 0.
    #[test]
    fn loss_is_the_weighted_sum_of_cross_entropy_and_divergence() {
        let device = Default::default();
        let z = [[2.0f32, 0.0, -2.0], [0.0, 1.0, 0.0]];
        let p = [[0.7f32, 0.2, 0.1], [0.3, 0.4, 0.3]];
        let t = 2.0f32;
        let logits = Tensor::<B, 2>::from_data(z, &device);
        let soft = Tensor::<B, 2>::from_data(p, &device);
        let neg_entropy: f64 =
            p.iter().map(|r| r.iter().map(|&v| f64::from(v) * f64::from(v).ln()).sum::<f64>()).sum::<f64>() / 2.0;
        let kl: f64 = z
            .iter()
            .zip(&p)
            .map(|(zr, pr)| {
                let e: Vec<f64> = zr.iter().map(|&v| (f64::from(v) / f64::from(t)).exp()).collect();
                let s: f64 = e.iter().sum();
                pr.iter().zip(&e).map(|(&pk, &ek)| f64::from(pk) * (f64::from(pk) / (ek / s)).ln()).sum::<f64>()
            })
            .sum::<f64>()
            / 2.0;
        let hard = Tensor::<B, 1>::from_data([1.5f32], &device);
        for (alpha, expected) in [(0.0f32, 1.5), (1.0, 4.0 * kl), (0.25, 0.75 * 1.5 + 0.25 * 4.0 * kl)] {
            let loss: f32 =
                distillation_loss(logits.clone(), hard.clone(), (soft.clone(), neg_entropy), alpha, t).into_scalar();
            assert!((f64::from(loss) - expected).abs() < 1e-5, "α {alpha}: {loss} against {expected}");
        }
        // The teacher's own distribution has no divergence from itself.
        let same = log_softmax(logits.clone().div_scalar(t), 1).exp();
        let rows: Vec<f32> = same.to_data().to_vec().expect("f32");
        let own: f64 =
            rows.chunks(3).map(|r| r.iter().map(|&v| f64::from(v) * f64::from(v).ln()).sum::<f64>()).sum::<f64>() / 2.0;
        let loss: f32 = distillation_loss(logits, hard, (same, own), 1.0, t).into_scalar();
        assert!(loss.abs() < 1e-5, "{loss}");
    }

    /// The soft term's gradient with respect to the logits is `α·T·(softmax(z/T) − p) / faces`.
    #[test]
    fn soft_gradient_is_t_times_the_difference_of_the_distributions() {
        let device = Default::default();
        let z = [[1.0f32, -0.5, 0.25, 2.0], [0.0, 0.0, 3.0, -1.0]];
        let p = [[0.1f32, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]];
        let (alpha, t) = (0.6f32, 3.0f32);
        let logits = Tensor::<AB, 2>::from_data(z, &device).require_grad();
        let soft = Tensor::<AB, 2>::from_data(p, &device);
        let hard = Tensor::<AB, 1>::from_data([0.0f32], &device);
        let loss = distillation_loss(logits.clone(), hard, (soft, 0.0), alpha, t);
        let grads = loss.backward();
        let gradient: Vec<f32> = logits.grad(&grads).expect("a gradient").to_data().to_vec().expect("f32");
        for (face, (zr, pr)) in z.iter().zip(&p).enumerate() {
            let e: Vec<f64> = zr.iter().map(|&v| (f64::from(v) / f64::from(t)).exp()).collect();
            let s: f64 = e.iter().sum();
            for k in 0..4 {
                let expected = f64::from(alpha) * f64::from(t) * (e[k] / s - f64::from(pr[k])) / 2.0;
                let got = f64::from(gradient[face * 4 + k]);
                assert!((got - expected).abs() < 1e-6, "face {face} class {k}: {got} against {expected}");
            }
        }
    }

    /// Bad settings are named.
    #[test]
    fn settings_are_checked() {
        let teacher = TeacherAnswers { path: "a.csv".into(), checksum: 1 };
        let good = Distillation::new(vec![teacher]);
        assert_eq!(good.check(), Ok(()));
        for (bad, words) in [
            (Distillation { teachers: vec![], ..good.clone() }, "at least one teacher"),
            (Distillation { weight: 1.5, ..good.clone() }, "weight 1.5 is not in [0, 1]"),
            (Distillation { weight: -0.1, ..good.clone() }, "weight -0.1"),
            (Distillation { temperature: 0.0, ..good.clone() }, "temperature 0 must be positive"),
            (Distillation { temperature: f32::INFINITY, ..good.clone() }, "temperature inf"),
        ] {
            let err = bad.check().expect_err("refused");
            assert!(err.contains(words), "{err}");
        }
    }
}
