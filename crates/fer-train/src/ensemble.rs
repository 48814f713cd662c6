//! Ensembles of saved answers files (`fer ensemble`): each member's `fer eval --answers` file on
//! the split to report, optionally the same members' files on a selection split, and what the
//! average of their probabilities scores, tested face by face against each member.

use std::path::PathBuf;

use fer_models::{
    EnsembleError, EnsembleSelection, FaceAnswer, PairedComparison, average_answers, compare_answers, select_greedy,
};

use crate::{TrainError, read_answers};

/// One member of an [`EnsembleReport`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnsembleMember {
    /// Its answers on the reported split.
    pub answers: PathBuf,
    /// Its answers on the selection split, when the members were selected.
    pub selection_answers: Option<PathBuf>,
    /// Its weight in the ensemble (greedy selection: the times it was chosen; else 1).
    pub weight: f64,
    /// Its accuracy on the reported split.
    pub accuracy: f64,
    /// Its 95 % Wilson interval.
    pub accuracy_ci95: [f64; 2],
    /// Its accuracy on the selection split.
    pub selection_accuracy: Option<f64>,
    /// The ensemble (B) against this member (A) on the reported split, face by face.
    pub ensemble_vs_member: PairedComparison,
}

/// What an ensemble of saved answers scores ([`ensemble_answer_files`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnsembleReport {
    /// Faces of the reported split.
    pub faces: u64,
    /// How the weights were set: `"equal"` or `"greedy"` (chosen on the selection split).
    pub method: String,
    /// The members, in the order given.
    pub members: Vec<EnsembleMember>,
    /// The greedy selection on the selection split (its accuracy there is optimistic).
    pub selection: Option<EnsembleSelection>,
    /// With a selection split: the member with the best accuracy there (from 0; the first on a
    /// tie), the single model an honest comparison sets the ensemble against.
    pub best_selected_member: Option<usize>,
    /// The selection split holds the reported split's faces and labels, row for row: the weights
    /// were chosen on the faces they are scored on, so the accuracy is not an honest figure.
    #[serde(default)]
    pub selected_on_reported_faces: bool,
    /// The ensemble's accuracy on the reported split.
    pub accuracy: f64,
    /// Its 95 % Wilson interval.
    pub accuracy_ci95: [f64; 2],
}

/// Reads each member's answers on the reported split (`answers`, one file per member) and,
/// optionally, on a selection split (`select_on`, the same members in the same order); sets the
/// weights (greedy forward selection on the selection split over `rounds` rounds, else equal) and
/// returns the report and the ensemble's answers on the reported split. Selection files that
/// hold the reported faces themselves are flagged ([`EnsembleReport::selected_on_reported_faces`]).
///
/// Errors name the file at fault: a file that cannot be read, a member whose faces or labels
/// differ from the first member's, a row without probabilities, or `select_on` with another
/// number of files.
pub fn ensemble_answer_files(
    answers: &[PathBuf],
    select_on: Option<&[PathBuf]>,
    rounds: usize,
) -> Result<(EnsembleReport, Vec<FaceAnswer>), TrainError> {
    let reported = read_all(answers)?;
    let reported_refs: Vec<&[FaceAnswer]> = reported.iter().map(Vec::as_slice).collect();
    let mut selected_on_reported_faces = false;
    let (selection, selection_accuracies) = match select_on {
        Some(files) => {
            if files.len() != answers.len() {
                return Err(TrainError::Ensemble(format!(
                    "{} answers files to select on for {} members: give each member's, in the same order",
                    files.len(),
                    answers.len()
                )));
            }
            let selecting = read_all(files)?;
            let key = |a: &FaceAnswer| (a.face, a.label);
            selected_on_reported_faces = selecting[0].iter().map(key).eq(reported[0].iter().map(key));
            let refs: Vec<&[FaceAnswer]> = selecting.iter().map(Vec::as_slice).collect();
            let selection = select_greedy(&refs, rounds).map_err(|e| ensemble_error(files, e))?;
            let accuracies: Vec<f64> = selecting.iter().map(|m| accuracy(m)).collect();
            (Some(selection), Some(accuracies))
        }
        None => (None, None),
    };
    let weights: Vec<f64> = match &selection {
        Some(s) => s.counts.iter().map(|&c| f64::from(c)).collect(),
        None => vec![1.0; answers.len()],
    };
    let ensemble = average_answers(&reported_refs, &weights).map_err(|e| ensemble_error(answers, e))?;
    let members = answers
        .iter()
        .zip(&reported)
        .enumerate()
        .map(|(m, (path, member))| {
            let ensemble_vs_member = compare_answers(member, &ensemble)
                .map_err(|e| TrainError::Ensemble(format!("{}: {e}", path.display())))?;
            Ok(EnsembleMember {
                answers: path.clone(),
                selection_answers: select_on.map(|files| files[m].clone()),
                weight: weights[m],
                accuracy: ensemble_vs_member.accuracy_a,
                accuracy_ci95: ensemble_vs_member.accuracy_a_ci95,
                selection_accuracy: selection_accuracies.as_ref().map(|a| a[m]),
                ensemble_vs_member,
            })
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    let best_selected_member =
        selection_accuracies.as_ref().map(|a| (0..a.len()).fold(0, |best, m| if a[m] > a[best] { m } else { best }));
    // Every member's paired comparison holds the ensemble's accuracy and interval as B.
    let ensemble_side = members[0].ensemble_vs_member.clone();
    let report = EnsembleReport {
        faces: ensemble_side.faces,
        method: if selection.is_some() { "greedy" } else { "equal" }.to_string(),
        members,
        selection,
        best_selected_member,
        selected_on_reported_faces,
        accuracy: ensemble_side.accuracy_b,
        accuracy_ci95: ensemble_side.accuracy_b_ci95,
    };
    Ok((report, ensemble))
}

/// Reads every file, naming the one that fails.
fn read_all(files: &[PathBuf]) -> Result<Vec<Vec<FaceAnswer>>, TrainError> {
    if files.is_empty() {
        return Err(TrainError::Ensemble("no answers files to combine".into()));
    }
    files.iter().map(|f| read_answers(f)).collect()
}

/// An [`EnsembleError`] with the members' files named.
fn ensemble_error(files: &[PathBuf], e: EnsembleError) -> TrainError {
    let name = |member: usize| files.get(member.wrapping_sub(1)).map_or_else(String::new, |p| p.display().to_string());
    let message = match &e {
        EnsembleError::NotSameFaces { member, .. } => {
            format!("{} and {}: {e}", name(*member), name(1))
        }
        EnsembleError::NoProbabilities { member, .. } | EnsembleError::BadProbability { member, .. } => {
            format!("{}: {e} (write it with `fer eval --answers`)", name(*member))
        }
        _ => e.to_string(),
    };
    TrainError::Ensemble(message)
}

/// Share of the answers that are right.
fn accuracy(answers: &[FaceAnswer]) -> f64 {
    answers.iter().filter(|a| a.is_right()).count() as f64 / answers.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write_answers;
    use fer_dataset::Emotion::{self, Fear, Happy, Sad};
    use fer_models::{Z_95, wilson_interval};

    fn face(face: usize, label: Emotion, first: Emotion, p: f32, second: Emotion) -> FaceAnswer {
        let mut probabilities = [0.0f32; Emotion::COUNT];
        probabilities[first.index()] += p;
        probabilities[second.index()] += 1.0 - p;
        let answer = if p >= 0.5 { first } else { second };
        FaceAnswer { face, label, answer, probabilities: Some(probabilities) }
    }

    /// Equal weights and greedy selection from files: the weights, each member's accuracy and
    /// paired test, the member best on the selection split, and the ensemble's answers; refusals
    /// name the files.
    #[test]
    fn ensemble_of_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, answers: &[FaceAnswer]| {
            let path = dir.path().join(name);
            write_answers(&path, answers).expect("write");
            path
        };
        // Reported split: m0 right on faces 0, 1; m1 on 1, 2; m2 on 0, 2 (sure when wrong on 2).
        let m0 = [face(0, Happy, Happy, 0.9, Sad), face(1, Sad, Sad, 0.9, Happy), face(2, Fear, Sad, 0.6, Fear)];
        let m1 = [face(0, Happy, Sad, 0.6, Happy), face(1, Sad, Sad, 0.9, Happy), face(2, Fear, Fear, 0.9, Sad)];
        let m2 = [face(0, Happy, Happy, 0.9, Sad), face(1, Sad, Happy, 0.99, Sad), face(2, Fear, Fear, 0.9, Sad)];
        let files = [write("m0.csv", &m0), write("m1.csv", &m1), write("m2.csv", &m2)];
        // Equal weights: face 0 happy (0.9 + 0.4 + 0.9)/3, face 1 sad (0.9 + 0.9 + 0.01)/3 = 0.603,
        // face 2 fear (0.4 + 0.9 + 0.9)/3: all right.
        let (report, ensemble) = ensemble_answer_files(&files, None, 10).expect("ensemble");
        assert_eq!((report.method.as_str(), report.faces, report.accuracy), ("equal", 3, 1.0));
        assert_eq!(report.members.iter().map(|m| m.weight).collect::<Vec<_>>(), vec![1.0; 3]);
        assert!(report.members.iter().all(|m| (m.accuracy - 2.0 / 3.0).abs() < 1e-12));
        assert_eq!(report.members[0].ensemble_vs_member.only_b_right, 1);
        assert_eq!(report.selection, None);
        assert_eq!(report.best_selected_member, None);
        assert!(!report.selected_on_reported_faces);
        assert_eq!(report.accuracy_ci95, wilson_interval(3, 3, Z_95).unwrap());
        assert_eq!(ensemble.iter().map(|a| a.answer).collect::<Vec<_>>(), vec![Happy, Sad, Fear]);

        // Selection split: m1 alone is right on both faces, the others on one: greedy keeps m1
        // alone, best_selected_member is m1, and the reported ensemble is m1's answers.
        let s0 = [face(0, Happy, Happy, 0.9, Sad), face(1, Sad, Happy, 0.9, Sad)];
        let s1 = [face(0, Happy, Happy, 0.9, Sad), face(1, Sad, Sad, 0.9, Happy)];
        let s2 = [face(0, Happy, Sad, 0.9, Happy), face(1, Sad, Sad, 0.9, Happy)];
        let select = [write("s0.csv", &s0), write("s1.csv", &s1), write("s2.csv", &s2)];
        let (report, ensemble) = ensemble_answer_files(&files, Some(&select), 5).expect("greedy");
        assert_eq!(report.method, "greedy");
        assert_eq!(report.selection.as_ref().map(|s| s.counts.clone()), Some(vec![0, 1, 0]));
        assert_eq!(report.members.iter().map(|m| m.weight).collect::<Vec<_>>(), vec![0.0, 1.0, 0.0]);
        assert_eq!(
            report.members.iter().map(|m| m.selection_accuracy).collect::<Vec<_>>(),
            [Some(0.5), Some(1.0), Some(0.5)]
        );
        assert_eq!(report.best_selected_member, Some(1));
        assert_eq!(report.members[1].selection_answers.as_deref(), Some(select[1].as_path()));
        assert_eq!(ensemble.iter().map(|a| a.answer).collect::<Vec<_>>(), m1.map(|a| a.answer).to_vec());
        assert_eq!(report.members[1].ensemble_vs_member.mcnemar_p, 1.0);
        assert!(!report.selected_on_reported_faces);
        // Selected on the reported files themselves: flagged.
        let (report, _) = ensemble_answer_files(&files, Some(&files), 5).expect("greedy on itself");
        assert!(report.selected_on_reported_faces);

        // Refusals: files of other faces, missing probabilities, mismatched counts, no files.
        let other = write("other.csv", &[face(0, Happy, Happy, 0.9, Sad)]);
        let err = ensemble_answer_files(&[files[0].clone(), other.clone()], None, 5).unwrap_err().to_string();
        assert!(err.contains("other.csv") && err.contains("m0.csv") && err.contains("3 faces, B 1"), "{err}");
        let mut bare = m2.to_vec();
        bare[2].probabilities = None;
        let bare = write("bare.csv", &bare);
        let err = ensemble_answer_files(&[files[0].clone(), bare], None, 5).unwrap_err().to_string();
        assert!(err.contains("bare.csv") && err.contains("row 3 (face 2)"), "{err}");
        let err = ensemble_answer_files(&files, Some(&select[..2]), 5).unwrap_err().to_string();
        assert!(err.contains("2 answers files to select on for 3 members"), "{err}");
        assert!(ensemble_answer_files(&[], None, 5).is_err());
        let err = ensemble_answer_files(&[dir.path().join("none.csv")], None, 5).unwrap_err().to_string();
        assert!(err.contains("none.csv"), "{err}");
    }
}
