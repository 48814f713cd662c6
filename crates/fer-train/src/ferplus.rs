//! FER+'s crowd votes ([`fer_dataset::FerPlus`]) as a teacher's answers, and how often they agree
//! with FER2013's labels.
//!
//! Written as an answers file ([`crate::write_answers`], `fer ferplus --answers`), the votes on the
//! Training split teach a run like a model's answers do (`fer train --teacher FILE --temperature
//! 1`): the soft term of [`crate::Distillation`]'s loss is then the cross-entropy against the
//! annotators' distribution over the seven classes, beside FER2013's own labels. Only Training
//! votes can teach (a teacher's answers must cover the Training split, face by face); figures stay
//! on FER2013's labels of PrivateTest.

use fer_dataset::{Emotion, FerPlusVotes, Split, SplitData};
use fer_models::FaceAnswer;

use crate::TrainError;

/// The votes of `split`'s faces as answers, one per face in order: the label is FER2013's; the
/// probabilities are the votes' [`FerPlusVotes::distribution`]; the answer is the class with the
/// most votes (on a tie, the first in [`Emotion`] order). A face that no annotator gave one of the
/// seven classes (178 of FER2013's, 176 of them voted not a face by all ten) answers its FER2013 label
/// with all the probability, so that as a teacher it adds nothing to the label.
pub fn ferplus_answers(votes: &[FerPlusVotes], split: &SplitData) -> Result<Vec<FaceAnswer>, TrainError> {
    same_faces(votes, split)?;
    Ok(votes
        .iter()
        .enumerate()
        .map(|(face, v)| {
            let label = split.label(face);
            let probabilities = v.distribution().unwrap_or_else(|| {
                let mut one_hot = [0.0; Emotion::COUNT];
                one_hot[label.index()] = 1.0;
                one_hot
            });
            let answer = Emotion::ALL
                .into_iter()
                .rev()
                .max_by(|a, b| probabilities[a.index()].total_cmp(&probabilities[b.index()]))
                .unwrap_or(label);
            FaceAnswer { face, label, answer, probabilities: Some(probabilities) }
        })
        .collect())
}

/// Refuses votes of another number of faces than `faces`.
fn same_faces(votes: &[FerPlusVotes], faces: &SplitData) -> Result<(), TrainError> {
    if votes.len() == faces.len() {
        return Ok(());
    }
    Err(TrainError::Data(format!(
        "{} FER+ vote rows for {} faces: the votes must be of the same split, face by face",
        votes.len(),
        faces.len()
    )))
}

/// How FER+'s majority agrees with FER2013's labels on one split.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FerPlusAgreement {
    /// The split.
    pub split: Split,
    /// Its faces.
    pub faces: usize,
    /// Faces whose votes have a strict majority among the seven classes
    /// ([`FerPlusVotes::majority`]).
    pub with_majority: usize,
    /// Of those, the faces whose majority is FER2013's label.
    pub majority_is_label: usize,
    /// Faces no annotator gave one of the seven classes.
    pub no_class_votes: usize,
    /// Faces with a majority by FER2013 label (row) and FER+ majority (column), in [`Emotion`]
    /// order: the diagonal holds the faces where the two agree.
    pub confusion: [[usize; Emotion::COUNT]; Emotion::COUNT],
    /// The mean share of a face's class votes that went to its FER2013 label (faces with class
    /// votes only).
    pub mean_label_share: f64,
}

/// [`FerPlusAgreement`] of `split`'s `faces` and their `votes` (the same faces, in order; votes
/// of another number of faces are refused).
pub fn ferplus_agreement(
    split: Split,
    votes: &[FerPlusVotes],
    faces: &SplitData,
) -> Result<FerPlusAgreement, TrainError> {
    same_faces(votes, faces)?;
    let mut a = FerPlusAgreement {
        split,
        faces: faces.len(),
        with_majority: 0,
        majority_is_label: 0,
        no_class_votes: 0,
        confusion: [[0; Emotion::COUNT]; Emotion::COUNT],
        mean_label_share: 0.0,
    };
    let mut share_sum = 0.0;
    for (face, v) in votes.iter().enumerate() {
        let label = faces.label(face);
        match v.distribution() {
            Some(p) => share_sum += f64::from(p[label.index()]),
            None => a.no_class_votes += 1,
        }
        if let Some(majority) = v.majority() {
            a.with_majority += 1;
            a.majority_is_label += usize::from(majority == label);
            a.confusion[label.index()][majority.index()] += 1;
        }
    }
    let voted = votes.len() - a.no_class_votes;
    a.mean_label_share = if voted > 0 { share_sum / voted as f64 } else { 0.0 };
    Ok(a)
}

/// A classifier's answers on a split scored against FER+'s majority as well as FER2013's labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MajorityScore {
    /// Faces answered (the split's).
    pub faces: usize,
    /// Answers that are FER2013's label.
    pub right_on_label: usize,
    /// Faces whose votes have a strict majority ([`FerPlusVotes::majority`]).
    pub with_majority: usize,
    /// Of those, the answers that are the majority.
    pub right_on_majority: usize,
    /// Of those, the answers that are FER2013's label (the same faces as `right_on_majority`).
    pub right_on_label_with_majority: usize,
}

/// Scores `answers` (a classifier's on a whole split, in order: `fer eval --answers`) against
/// the split's FER+ `votes` and FER2013 labels; answers of another number of faces are refused.
pub fn score_on_majority(answers: &[FaceAnswer], votes: &[FerPlusVotes]) -> Result<MajorityScore, TrainError> {
    if answers.len() != votes.len() {
        return Err(TrainError::Data(format!(
            "{} answers for {} faces with FER+ votes: score the answers of the whole split",
            answers.len(),
            votes.len()
        )));
    }
    let mut s = MajorityScore {
        faces: answers.len(),
        right_on_label: 0,
        with_majority: 0,
        right_on_majority: 0,
        right_on_label_with_majority: 0,
    };
    for (a, v) in answers.iter().zip(votes) {
        s.right_on_label += usize::from(a.is_right());
        if let Some(majority) = v.majority() {
            s.with_majority += 1;
            s.right_on_majority += usize::from(a.answer == majority);
            s.right_on_label_with_majority += usize::from(a.is_right());
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fer_dataset::FaceImage;

    fn split(labels: &[Emotion]) -> SplitData {
        let mut s = SplitData::new();
        for &l in labels {
            s.push(l, FaceImage::filled(0));
        }
        s
    }

    // FER+ columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF.
    const HAPPY_8_NEUTRAL_2: [u8; 10] = [2, 8, 0, 0, 0, 0, 0, 0, 0, 0];
    const SAD_5_ANGER_5: [u8; 10] = [0, 0, 0, 5, 5, 0, 0, 0, 0, 0];
    const NOT_A_FACE: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 10];

    #[test]
    fn answers_carry_the_vote_shares_and_the_label() {
        let faces = split(&[Emotion::Happy, Emotion::Angry, Emotion::Fear]);
        let votes = [HAPPY_8_NEUTRAL_2, SAD_5_ANGER_5, NOT_A_FACE].map(|counts| FerPlusVotes { counts });
        let answers = ferplus_answers(&votes, &faces).expect("same faces");
        let p0 = answers[0].probabilities.expect("all answers have probabilities");
        assert!((p0[Emotion::Happy.index()] - 0.8).abs() < 1e-7 && (p0[Emotion::Neutral.index()] - 0.2).abs() < 1e-7);
        assert_eq!((answers[0].face, answers[0].label, answers[0].answer), (0, Emotion::Happy, Emotion::Happy));
        // A tie answers the first class in Emotion order (angry before sad), whatever the label.
        assert_eq!(answers[1].answer, Emotion::Angry);
        // No class votes: the label, with all the probability.
        let mut one_hot = [0.0; Emotion::COUNT];
        one_hot[Emotion::Fear.index()] = 1.0;
        assert_eq!((answers[2].answer, answers[2].probabilities), (Emotion::Fear, Some(one_hot)));
        // Votes of another number of faces are refused.
        let m = ferplus_answers(&votes[..2], &faces).expect_err("2 rows for 3 faces").to_string();
        assert!(m.contains("2 FER+ vote rows for 3 faces"), "{m}");
    }

    /// Happy, sad, fear and neutral faces: a happy majority, a sad–angry tie, not a face, and a
    /// happy majority again.
    fn four_faces() -> (SplitData, [FerPlusVotes; 4]) {
        let faces = split(&[Emotion::Happy, Emotion::Sad, Emotion::Fear, Emotion::Neutral]);
        (faces, [HAPPY_8_NEUTRAL_2, SAD_5_ANGER_5, NOT_A_FACE, HAPPY_8_NEUTRAL_2].map(|counts| FerPlusVotes { counts }))
    }

    #[test]
    fn agreement_counts_majorities_that_are_the_label() {
        let (faces, votes) = four_faces();
        let a = ferplus_agreement(Split::PrivateTest, &votes, &faces).expect("same faces");
        // Majorities: face 0 (happy = label), face 3 (happy ≠ neutral); face 1 ties, face 2 has none.
        assert_eq!((a.faces, a.with_majority, a.majority_is_label, a.no_class_votes), (4, 2, 1, 1));
        let mut confusion = [[0; Emotion::COUNT]; Emotion::COUNT];
        confusion[Emotion::Happy.index()][Emotion::Happy.index()] = 1;
        confusion[Emotion::Neutral.index()][Emotion::Happy.index()] = 1;
        assert_eq!(a.confusion, confusion);
        // Label shares of the three faces with class votes: 0.8, 0.5, 0.2.
        assert!((a.mean_label_share - 0.5).abs() < 1e-7, "{}", a.mean_label_share);
        let m = ferplus_agreement(Split::PrivateTest, &votes[..3], &faces).expect_err("3 rows, 4 faces").to_string();
        assert!(m.contains("3 FER+ vote rows for 4 faces"), "{m}");
    }

    #[test]
    fn answers_are_scored_on_the_majority_and_on_the_label() {
        let (faces, votes) = four_faces();
        let answer =
            |face: usize, answer: Emotion| FaceAnswer { face, label: faces.label(face), answer, probabilities: None };
        // Face 0 right on both; face 1 (a tie) right on its label; face 2 (no votes) wrong;
        // face 3 answers the majority (happy), not its label (neutral).
        let answers =
            [answer(0, Emotion::Happy), answer(1, Emotion::Sad), answer(2, Emotion::Angry), answer(3, Emotion::Happy)];
        let s = score_on_majority(&answers, &votes).expect("same faces");
        assert_eq!(
            (s.faces, s.right_on_label, s.with_majority, s.right_on_majority, s.right_on_label_with_majority),
            (4, 2, 2, 2, 1)
        );
        let m = score_on_majority(&answers[..3], &votes).expect_err("3 answers, 4 faces").to_string();
        assert!(m.contains("3 answers for 4 faces"), "{m}");
    }
}
