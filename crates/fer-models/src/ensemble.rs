//! Ensembles built from saved answers: several classifiers' class probabilities on the same faces,
//! averaged ("soft voting"), with the members and their weights either fixed beforehand or chosen
//! on another split by greedy forward selection with replacement (Caruana, Niculescu-Mizil, Crew
//! and Ksikes 2004, "Ensemble selection from libraries of models").
//!
//! Only the answers are needed, not the checkpoints: `fer eval --answers` files of models trained
//! on different machines (a GPU lease's VGG19, which is too large to bring back, leaves its
//! answers) combine here. For an honest figure, choose the members on PublicTest
//! ([`select_greedy`]) and report the ensemble on PrivateTest ([`average_answers`] with those
//! weights), as checkpoints are chosen.

use fer_dataset::Emotion;

use crate::stats::{CompareError, FaceAnswer, same_faces};

/// Why answers cannot be combined.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnsembleError {
    /// No member was given.
    #[error("no members to combine")]
    NoMembers,
    /// The members hold no faces.
    #[error("the members hold no faces")]
    NoFaces,
    /// A member's faces are not the first member's (count, position or label).
    #[error("member {member} against member 1: {source}")]
    NotSameFaces {
        /// The member (from 1).
        member: usize,
        /// What differs.
        source: CompareError,
    },
    /// A member's row carries no class probabilities (e.g. `fer attack`'s answers under attack).
    #[error("member {member}, row {row} (face {face}): no class probabilities to average")]
    NoProbabilities {
        /// The member (from 1).
        member: usize,
        /// The row (from 1).
        row: usize,
        /// Its face.
        face: usize,
    },
    /// A member's probability is not finite or is negative.
    #[error("member {member}, row {row} (face {face}): probability {value} is not a number in [0, 1]")]
    BadProbability {
        /// The member (from 1).
        member: usize,
        /// The row (from 1).
        row: usize,
        /// Its face.
        face: usize,
        /// The value.
        value: f32,
    },
    /// The weights do not match the members.
    #[error("{weights} weights for {members} members")]
    WeightCount {
        /// Weights given.
        weights: usize,
        /// Members given.
        members: usize,
    },
    /// A weight is negative or not finite, or all are zero.
    #[error("weight of member {member} is {value}: weights must be finite and ≥ 0, and not all 0")]
    BadWeight {
        /// The member (from 1).
        member: usize,
        /// The weight.
        value: f64,
    },
    /// Greedy selection was asked for no rounds.
    #[error("greedy selection needs at least one round")]
    NoRounds,
}

/// Checks that every member holds the first member's faces and labels in the same order, each
/// with seven valid probabilities.
fn check_members(members: &[&[FaceAnswer]]) -> Result<(), EnsembleError> {
    let first = members.first().ok_or(EnsembleError::NoMembers)?;
    for (m, member) in members.iter().enumerate() {
        if m > 0 {
            same_faces(first, member).map_err(|source| EnsembleError::NotSameFaces { member: m + 1, source })?;
        } else if member.is_empty() {
            return Err(EnsembleError::NoFaces);
        }
        for (row, answer) in member.iter().enumerate() {
            let (member, row, face) = (m + 1, row + 1, answer.face);
            let p = answer.probabilities.ok_or(EnsembleError::NoProbabilities { member, row, face })?;
            if let Some(&value) = p.iter().find(|v| !(v.is_finite() && (0.0..=1.0).contains(*v))) {
                return Err(EnsembleError::BadProbability { member, row, face, value });
            }
        }
    }
    Ok(())
}

/// The first class of highest probability.
fn arg_max(p: &[f64; Emotion::COUNT]) -> Emotion {
    let best = (1..Emotion::COUNT).fold(0, |best, c| if p[c] > p[best] { c } else { best });
    Emotion::ALL[best]
}

/// The weighted average of the members' class probabilities on each face, and its answer (the
/// first class of highest probability). `weights` (one per member, ≥ 0, not all 0; e.g. the
/// counts of a [`select_greedy`] selection) are normalised to sum to 1; equal weights give
/// plain soft voting. Every member must hold the same faces and labels in the same order, each
/// with its probabilities.
///
/// ```
/// use fer_dataset::Emotion::{Happy, Sad};
/// use fer_models::{FaceAnswer, average_answers};
/// let face = |answer, p_happy: f32| {
///     let mut p = [0.0; 7];
///     p[Happy.index()] = p_happy;
///     p[Sad.index()] = 1.0 - p_happy;
///     FaceAnswer { face: 0, label: Happy, answer, probabilities: Some(p) }
/// };
/// // One member is sure of sad, two lean to happy: soft voting answers happy (p = 0.6).
/// let members = [vec![face(Sad, 0.2)], vec![face(Happy, 0.8)], vec![face(Happy, 0.8)]];
/// let members: Vec<&[FaceAnswer]> = members.iter().map(Vec::as_slice).collect();
/// let ensemble = average_answers(&members, &[1.0, 1.0, 1.0]).unwrap();
/// assert_eq!(ensemble[0].answer, Happy);
/// assert!((ensemble[0].probabilities.unwrap()[Happy.index()] - 0.6).abs() < 1e-6);
/// ```
pub fn average_answers(members: &[&[FaceAnswer]], weights: &[f64]) -> Result<Vec<FaceAnswer>, EnsembleError> {
    check_members(members)?;
    if weights.len() != members.len() {
        return Err(EnsembleError::WeightCount { weights: weights.len(), members: members.len() });
    }
    if let Some(m) = weights.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
        return Err(EnsembleError::BadWeight { member: m + 1, value: weights[m] });
    }
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return Err(EnsembleError::BadWeight { member: 1, value: weights[0] });
    }
    let mut sums = vec![[0.0f64; Emotion::COUNT]; members[0].len()];
    for (member, &w) in members.iter().zip(weights) {
        add_probabilities(&mut sums, member, w / total);
    }
    Ok(members[0]
        .iter()
        .zip(&sums)
        .map(|(a, p)| FaceAnswer {
            face: a.face,
            label: a.label,
            answer: arg_max(p),
            probabilities: Some(p.map(|v| v as f32)),
        })
        .collect())
}

/// Adds `weight` × each face's probabilities of `member` to `sums`.
fn add_probabilities(sums: &mut [[f64; Emotion::COUNT]], member: &[FaceAnswer], weight: f64) {
    for (sum, answer) in sums.iter_mut().zip(member) {
        let p = answer.probabilities.unwrap_or([0.0; Emotion::COUNT]);
        for (s, &v) in sum.iter_mut().zip(&p) {
            *s += weight * f64::from(v);
        }
    }
}

/// How well `sums / scale` classifies `faces`: faces right, and the mean negative log
/// probability of the label (probabilities floored at 1e-12).
fn score(sums: &[[f64; Emotion::COUNT]], scale: f64, faces: &[FaceAnswer]) -> (u64, f64) {
    let mut right = 0u64;
    let mut log_loss = 0.0;
    for (p, face) in sums.iter().zip(faces) {
        right += u64::from(arg_max(p) == face.label);
        log_loss -= (p[face.label.index()] / scale).max(1e-12).ln();
    }
    (right, log_loss / faces.len() as f64)
}

/// One round of [`select_greedy`]: the member added and what the ensemble then scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SelectionRound {
    /// The member added (from 0).
    pub member: usize,
    /// Faces the ensemble gets right after adding it.
    pub right: u64,
    /// Its accuracy.
    pub accuracy: f64,
    /// Its mean negative log probability of the label.
    pub log_loss: f64,
}

/// The members a [`select_greedy`] run chose, on the faces it was given.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnsembleSelection {
    /// How many times each member was chosen: the weights for [`average_answers`] (0: left out).
    pub counts: Vec<u32>,
    /// Every round run, in order; the selection is the first `kept_rounds` of them.
    pub rounds: Vec<SelectionRound>,
    /// Rounds kept: the prefix of `rounds` with the most faces right (fewest rounds on a tie).
    pub kept_rounds: usize,
    /// The selected ensemble's accuracy on these faces (optimistic: chosen on them).
    pub accuracy: f64,
}

/// Greedy forward selection with replacement (Caruana et al. 2004) on one split's answers: start
/// from no member; each round adds the member (again, if it is the best choice) whose addition
/// gives the average with the most faces right, ties broken by the lower mean log loss, then the
/// lower member number; after `rounds` rounds keep the prefix with the most faces right (the
/// fewest rounds on a tie). Its counts are the weights to apply to another split's answers of the
/// same members with [`average_answers`]: its own accuracy here is chosen on these faces and so
/// optimistic.
///
/// Round 1 picks the single best member, so the selection does at least as well as the best
/// member on these faces.
///
/// ```
/// use fer_dataset::Emotion::{Happy, Sad};
/// use fer_models::{FaceAnswer, select_greedy};
/// let face = |face, label, p_happy: f32| {
///     let mut p = [0.0; 7];
///     p[Happy.index()] = p_happy;
///     p[Sad.index()] = 1.0 - p_happy;
///     let answer = if p_happy > 0.5 { Happy } else { Sad };
///     FaceAnswer { face, label, answer, probabilities: Some(p) }
/// };
/// let good = vec![face(0, Happy, 0.9), face(1, Sad, 0.1)];
/// let bad = vec![face(0, Happy, 0.1), face(1, Sad, 0.9)];
/// let s = select_greedy(&[&bad, &good], 4).unwrap();
/// assert_eq!(s.counts, vec![0, 1]); // the good member alone: adding anything only loses
/// assert_eq!(s.accuracy, 1.0);
/// ```
pub fn select_greedy(members: &[&[FaceAnswer]], rounds: usize) -> Result<EnsembleSelection, EnsembleError> {
    check_members(members)?;
    if rounds == 0 {
        return Err(EnsembleError::NoRounds);
    }
    let faces = members[0];
    let mut sums = vec![[0.0f64; Emotion::COUNT]; faces.len()];
    let mut counts = vec![0u32; members.len()];
    let mut history = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let mut best: Option<(usize, u64, f64, Vec<[f64; Emotion::COUNT]>)> = None;
        for (m, member) in members.iter().enumerate() {
            let mut trial = sums.clone();
            add_probabilities(&mut trial, member, 1.0);
            let (right, log_loss) = score(&trial, round as f64, faces);
            let better = match &best {
                None => true,
                Some((_, r, l, _)) => right > *r || (right == *r && log_loss < *l),
            };
            if better {
                best = Some((m, right, log_loss, trial));
            }
        }
        let (member, right, log_loss, trial) = best.expect("at least one member");
        sums = trial;
        counts[member] += 1;
        history.push(SelectionRound { member, right, accuracy: right as f64 / faces.len() as f64, log_loss });
    }
    // The first prefix with the most faces right.
    let kept = history.iter().enumerate().fold(0, |k, (i, r)| if r.right > history[k].right { i } else { k });
    let mut kept_counts = vec![0u32; members.len()];
    for r in &history[..=kept] {
        kept_counts[r.member] += 1;
    }
    Ok(EnsembleSelection {
        counts: kept_counts,
        accuracy: history[kept].accuracy,
        kept_rounds: kept + 1,
        rounds: history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Emotion::{Angry, Fear, Happy, Neutral, Sad};

    /// A face with probability `p` on `first` and the rest on `second`.
    fn face(face: usize, label: Emotion, first: Emotion, p: f32, second: Emotion) -> FaceAnswer {
        let mut probabilities = [0.0f32; Emotion::COUNT];
        probabilities[first.index()] += p;
        probabilities[second.index()] += 1.0 - p;
        let answer = if p >= 0.5 { first } else { second };
        FaceAnswer { face, label, answer, probabilities: Some(probabilities) }
    }

    /// The weighted average by hand, its answers, normalised weights, and equal weights.
    #[test]
    fn average_by_hand() {
        let a = vec![face(0, Happy, Happy, 0.6, Sad), face(1, Sad, Fear, 0.9, Sad)];
        let b = vec![face(0, Happy, Sad, 0.7, Happy), face(1, Sad, Sad, 0.7, Angry)];
        // Equal weights: face 0 happy 0.45 / sad 0.55 → sad; face 1 fear 0.45, sad 0.4, angry 0.15 → fear.
        let e = average_answers(&[&a, &b], &[1.0, 1.0]).unwrap();
        let p0 = e[0].probabilities.unwrap();
        assert!((p0[Happy.index()] - 0.45).abs() < 1e-6 && (p0[Sad.index()] - 0.55).abs() < 1e-6, "{p0:?}");
        assert_eq!((e[0].face, e[0].label, e[0].answer), (0, Happy, Sad));
        let p1 = e[1].probabilities.unwrap();
        assert!((p1[Fear.index()] - 0.45).abs() < 1e-6 && (p1[Angry.index()] - 0.15).abs() < 1e-6, "{p1:?}");
        assert_eq!(e[1].answer, Fear);
        assert!((p1.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // Weights 3 : 1 are normalised: face 0 happy 0.75·0.6 + 0.25·0.3 = 0.525 → happy.
        let e = average_answers(&[&a, &b], &[3.0, 1.0]).unwrap();
        assert!((e[0].probabilities.unwrap()[Happy.index()] - 0.525).abs() < 1e-6);
        assert_eq!(e[0].answer, Happy);
        // Scaled weights give the same ensemble; a zero weight leaves a member out.
        assert_eq!(average_answers(&[&a, &b], &[6.0, 2.0]).unwrap(), e);
        let alone = average_answers(&[&a, &b], &[0.0, 2.0]).unwrap();
        assert_eq!(alone.iter().map(|f| f.answer).collect::<Vec<_>>(), vec![Sad, Sad]);
        assert!((alone[1].probabilities.unwrap()[Sad.index()] - 0.7).abs() < 1e-6);
        // One member: its own answers back.
        let own = average_answers(&[&a], &[1.0]).unwrap();
        assert_eq!(own.iter().map(|f| f.answer).collect::<Vec<_>>(), vec![Happy, Fear]);
        // An exact tie goes to the first class in Emotion order (fear before sad).
        let tie = [face(0, Sad, Sad, 0.5, Fear)];
        assert_eq!(average_answers(&[&tie], &[1.0]).unwrap()[0].answer, Fear);
    }

    /// Refusals name the member, row and face, or the weight at fault.
    #[test]
    fn refusals() {
        let a = vec![face(0, Happy, Happy, 0.6, Sad), face(1, Sad, Sad, 0.9, Fear)];
        let b = vec![face(0, Happy, Sad, 0.7, Happy), face(1, Neutral, Sad, 0.8, Angry)];
        assert_eq!(average_answers(&[], &[]), Err(EnsembleError::NoMembers));
        assert_eq!(
            average_answers(&[&a, &b], &[1.0, 1.0]),
            Err(EnsembleError::NotSameFaces {
                member: 2,
                source: CompareError::Mismatch { row: 2, face_a: 1, label_a: Sad, face_b: 1, label_b: Neutral }
            })
        );
        assert_eq!(
            average_answers(&[&a, &a[..1]], &[1.0, 1.0]),
            Err(EnsembleError::NotSameFaces { member: 2, source: CompareError::FaceCount { a: 2, b: 1 } })
        );
        assert_eq!(average_answers(&[&[], &[]], &[1.0, 1.0]), Err(EnsembleError::NoFaces));
        let mut bare = a.clone();
        bare[1].probabilities = None;
        let err = average_answers(&[&a, &bare], &[1.0, 1.0]).unwrap_err();
        assert_eq!(err, EnsembleError::NoProbabilities { member: 2, row: 2, face: 1 });
        assert!(err.to_string().contains("member 2, row 2 (face 1)"), "{err}");
        let mut nan = a.clone();
        nan[0].probabilities.as_mut().unwrap()[3] = f32::NAN;
        assert!(matches!(
            average_answers(&[&nan], &[1.0]),
            Err(EnsembleError::BadProbability { member: 1, row: 1, face: 0, .. })
        ));
        assert_eq!(average_answers(&[&a, &a], &[1.0]), Err(EnsembleError::WeightCount { weights: 1, members: 2 }));
        assert_eq!(average_answers(&[&a, &a], &[1.0, -1.0]), Err(EnsembleError::BadWeight { member: 2, value: -1.0 }));
        assert!(matches!(average_answers(&[&a, &a], &[0.0, 0.0]), Err(EnsembleError::BadWeight { .. })));
        assert!(matches!(average_answers(&[&a], &[f64::INFINITY]), Err(EnsembleError::BadWeight { .. })));
        assert_eq!(select_greedy(&[&a], 0), Err(EnsembleError::NoRounds));
    }

    /// Greedy selection by hand: three members with two faces right of three each; m0 and m2
    /// are wrong on different faces and together get all three.
    #[test]
    fn greedy_selection_by_hand() {
        // m0: unsure and wrong on face 0; m1: sure and wrong on face 1; m2: unsure and wrong on face 2.
        let m0 = vec![face(0, Happy, Sad, 0.55, Happy), face(1, Sad, Sad, 0.9, Happy), face(2, Fear, Fear, 0.9, Sad)];
        let m1 = vec![face(0, Happy, Happy, 0.9, Sad), face(1, Sad, Happy, 0.95, Sad), face(2, Fear, Fear, 0.9, Sad)];
        let m2 = vec![face(0, Happy, Happy, 0.9, Sad), face(1, Sad, Sad, 0.9, Happy), face(2, Fear, Sad, 0.6, Fear)];
        let s = select_greedy(&[&m0, &m1, &m2], 3).unwrap();
        // Round 1: 2 of 3 each; mean log losses m0 (ln 1/0.45 + 2 ln 1/0.9)/3 = 0.336, m1 1.069,
        // m2 0.376: m0. Round 2: m0 + m0 and m0 + m1 (face 1: sad 0.475 against happy 0.525) get
        // 2, m0 + m2 all 3 (face 0: happy 0.675; face 2: fear 0.65): m2. Round 3: each addition
        // keeps 3 right; log losses + m0 0.309, + m1 0.360, + m2 0.320: m0.
        let members: Vec<usize> = s.rounds.iter().map(|r| r.member).collect();
        assert_eq!(members, vec![0, 2, 0], "{s:?}");
        assert_eq!(s.rounds.iter().map(|r| r.right).collect::<Vec<_>>(), vec![2, 3, 3]);
        assert!((s.rounds[0].log_loss - ((1.0f64 / 0.45).ln() + 2.0 * (1.0f64 / 0.9).ln()) / 3.0).abs() < 1e-6);
        let round3 = -((1.8f64 / 3.0).ln() + (2.7f64 / 3.0).ln() + (2.2f64 / 3.0).ln()) / 3.0;
        assert!((s.rounds[2].log_loss - round3).abs() < 1e-6, "{s:?}");
        // The kept prefix is the first with the most faces right: rounds 1 and 2.
        assert_eq!((s.kept_rounds, s.counts.clone(), s.accuracy), (2, vec![1, 0, 1], 1.0));
        // Its counts, applied with average_answers, give the same answers.
        let e = average_answers(&[&m0, &m1, &m2], &[1.0, 0.0, 1.0]).unwrap();
        assert!(e.iter().all(FaceAnswer::is_right), "{e:?}");
    }

    /// Round 1 is the best single member; a member that helps only together with another is
    /// found in round 2; later rounds that lose are not kept.
    #[test]
    fn greedy_finds_a_complementary_pair() {
        // Four faces. Member 0: right on 0, 1, 2 (3 of 4), wrong but unsure on face 3. Member 1:
        // right on face 3 and sure, wrong on face 0 (unsure), right on 1, 2: 3 of 4 but a higher
        // log loss. Member 2: wrong on all, sure.
        let m0 = vec![
            face(0, Happy, Happy, 0.9, Sad),
            face(1, Sad, Sad, 0.9, Happy),
            face(2, Happy, Happy, 0.9, Sad),
            face(3, Sad, Happy, 0.6, Sad),
        ];
        let m1 = vec![
            face(0, Happy, Sad, 0.6, Happy),
            face(1, Sad, Sad, 0.6, Happy),
            face(2, Happy, Happy, 0.6, Sad),
            face(3, Sad, Sad, 0.9, Happy),
        ];
        let m2 = vec![
            face(0, Happy, Sad, 0.99, Happy),
            face(1, Sad, Happy, 0.99, Sad),
            face(2, Happy, Sad, 0.99, Happy),
            face(3, Sad, Happy, 0.99, Sad),
        ];
        let s = select_greedy(&[&m0, &m1, &m2], 5).unwrap();
        assert_eq!(s.rounds[0].member, 0, "{s:?}");
        assert_eq!(s.rounds[0].right, 3);
        // m0 + m1: face 0 happy (0.9 + 0.4)/2 = 0.65, face 3 sad (0.4 + 0.9)/2 = 0.65: 4 of 4.
        assert_eq!(s.rounds[1].member, 1, "{s:?}");
        assert_eq!(s.rounds[1].right, 4);
        assert_eq!(s.kept_rounds, 2);
        assert_eq!(s.counts, vec![1, 1, 0]);
        assert_eq!(s.accuracy, 1.0);
        assert!(s.rounds.iter().all(|r| r.member != 2), "{s:?}");
    }
}
