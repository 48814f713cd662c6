//! How sure an accuracy measured on a finite test split is, and whether one classifier beats
//! another on the same faces.
//!
//! FER2013's PrivateTest holds 3,589 faces: at 70 % accuracy one face is 0.028 points and the
//! 95 % interval about ±1.5 points, so recipes that differ by a point need a paired test on the
//! very same faces ([`compare_answers`]), not two intervals side by side.

use fer_dataset::Emotion;

/// z of a two-sided 95 % interval of the normal distribution.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval of a proportion, `successes` of `trials`, at `z` (e.g. [`Z_95`]):
/// `[low, high]` within [0, 1]. Unlike the normal ("Wald") interval it stays inside [0, 1] and
/// keeps its coverage near 0 % and 100 % (Wilson 1927; Brown, Cai and DasGupta 2001). `None`
/// for no trials, more successes than trials, or a `z` that is not finite and positive.
///
/// ```
/// // 2,567 of PrivateTest's 3,589 faces right (the fourth GPU lease's VGG19 with TenCrop):
/// // 71.52 %, 95 % interval 70.03–72.98 %.
/// let [low, high] = fer_models::wilson_interval(2567, 3589, fer_models::Z_95).unwrap();
/// assert_eq!(format!("{:.2}–{:.2}", 100.0 * low, 100.0 * high), "70.03–72.98");
/// ```
pub fn wilson_interval(successes: u64, trials: u64, z: f64) -> Option<[f64; 2]> {
    if trials == 0 || successes > trials || !(z.is_finite() && z > 0.0) {
        return None;
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let scale = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / scale;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / scale;
    Some([(centre - half).max(0.0), (centre + half).min(1.0)])
}

/// Two-sided p-value of McNemar's exact test: of the faces exactly one of two classifiers gets
/// right, `only_a` are A's and `only_b` B's; under "neither is better" each such face is a fair
/// coin, so the p-value is twice the binomial tail `P(X ≤ min(only_a, only_b))` with
/// `X ~ Bin(only_a + only_b, 1/2)`, at most 1 (1 when no face is discordant). Computed in log
/// space: exact for every count a test split can give.
///
/// ```
/// // 1 face only A gets right, 9 only B: p = 2 · (1 + 10) / 2¹⁰.
/// assert!((fer_models::mcnemar_exact_p(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
/// ```
pub fn mcnemar_exact_p(only_a: u64, only_b: u64) -> f64 {
    let n = only_a + only_b;
    if n == 0 {
        return 1.0;
    }
    let k = only_a.min(only_b);
    // log C(n, i) − n·ln 2 for i = 0..=k, summed as exp of a log-sum-exp.
    let mut log_term = -(n as f64) * std::f64::consts::LN_2;
    let mut logs = Vec::with_capacity(k as usize + 1);
    for i in 0..=k {
        logs.push(log_term);
        log_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = top.exp() * logs.iter().map(|l| (l - top).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

/// One face's answer in an evaluation, what a paired comparison of two classifiers needs
/// ([`crate::evaluate_with_answers`], `fer eval --answers FILE.csv`; `fer attack` writes the
/// answers before and under attack too).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceAnswer {
    /// The face's position in the evaluated faces (the split, or the subset `fer eval --faces` chose).
    pub face: usize,
    /// Its label.
    pub label: Emotion,
    /// The classifier's answer (the arg-max of its crop-averaged logits).
    pub answer: Emotion,
    /// Softmax of the crop-averaged logits, in [`Emotion`] order; `None` where only the answers
    /// were kept (`fer attack`'s answers under attack).
    pub probabilities: Option<[f32; Emotion::COUNT]>,
}

impl FaceAnswer {
    /// Whether the answer is the label.
    pub fn is_right(&self) -> bool {
        self.answer == self.label
    }
}

/// Two classifiers (A and B) on the same faces: their accuracies with 95 % Wilson intervals, the
/// faces only one of them gets right, the difference B − A with its 95 % interval, and McNemar's
/// exact test.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedComparison {
    /// Faces compared.
    pub faces: u64,
    /// A's accuracy.
    pub accuracy_a: f64,
    /// Its 95 % Wilson interval.
    pub accuracy_a_ci95: [f64; 2],
    /// B's accuracy.
    pub accuracy_b: f64,
    /// Its 95 % Wilson interval.
    pub accuracy_b_ci95: [f64; 2],
    /// Faces both get right.
    pub both_right: u64,
    /// Faces only A gets right.
    pub only_a_right: u64,
    /// Faces only B gets right.
    pub only_b_right: u64,
    /// Faces both get wrong.
    pub both_wrong: u64,
    /// B's accuracy minus A's.
    pub difference: f64,
    /// The 95 % interval of the difference: the Wald interval of a paired difference,
    /// `d ± z·√(b + c − (c − b)²/n)/n` with b and c the two discordant counts (close to the exact
    /// one with the hundreds of discordant faces two FER2013 models have).
    pub difference_ci95: [f64; 2],
    /// Two-sided p-value of McNemar's exact test ([`mcnemar_exact_p`]).
    pub mcnemar_p: f64,
}

/// Why two lists of answers cannot be compared.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompareError {
    /// The lists are empty.
    #[error("no faces to compare")]
    Empty,
    /// The lists hold different numbers of faces.
    #[error("A has {a} faces, B {b}: not the same faces")]
    FaceCount {
        /// A's faces.
        a: usize,
        /// B's faces.
        b: usize,
    },
    /// The lists disagree on a face's position or label.
    #[error(
        "row {row}: A has face {face_a} labelled {label_a}, B face {face_b} labelled {label_b}: not the same faces"
    )]
    Mismatch {
        /// Row (from 1) where they disagree.
        row: usize,
        /// A's face.
        face_a: usize,
        /// A's label.
        label_a: Emotion,
        /// B's face.
        face_b: usize,
        /// B's label.
        label_b: Emotion,
    },
}

/// Checks that `b` holds the faces and labels of `a`, row by row: the same count, then the first
/// row that differs.
pub(crate) fn same_faces(a: &[FaceAnswer], b: &[FaceAnswer]) -> Result<(), CompareError> {
    if a.len() != b.len() {
        return Err(CompareError::FaceCount { a: a.len(), b: b.len() });
    }
    match a.iter().zip(b).position(|(x, y)| (x.face, x.label) != (y.face, y.label)) {
        None => Ok(()),
        Some(i) => Err(CompareError::Mismatch {
            row: i + 1,
            face_a: a[i].face,
            label_a: a[i].label,
            face_b: b[i].face,
            label_b: b[i].label,
        }),
    }
}

/// Compares two classifiers' answers on the same faces, row by row (each row must name the same
/// face and label in both). See [`PairedComparison`].
///
/// ```
/// use fer_dataset::Emotion::{Happy, Sad};
/// use fer_models::{FaceAnswer, compare_answers};
/// let face = |face, answer| FaceAnswer { face, label: Happy, answer, probabilities: None };
/// let a = vec![face(0, Happy), face(1, Sad), face(2, Sad)];
/// let b = vec![face(0, Happy), face(1, Happy), face(2, Happy)];
/// let c = compare_answers(&a, &b).unwrap();
/// assert_eq!((c.both_right, c.only_a_right, c.only_b_right, c.both_wrong), (1, 0, 2, 0));
/// assert!((c.difference - 2.0 / 3.0).abs() < 1e-12);
/// assert_eq!(c.mcnemar_p, 0.5); // two discordant faces, both B's: 2 · 1/4
/// ```
pub fn compare_answers(a: &[FaceAnswer], b: &[FaceAnswer]) -> Result<PairedComparison, CompareError> {
    same_faces(a, b)?;
    if a.is_empty() {
        return Err(CompareError::Empty);
    }
    let (mut both_right, mut only_a, mut only_b, mut both_wrong) = (0u64, 0u64, 0u64, 0u64);
    for (x, y) in a.iter().zip(b) {
        match (x.is_right(), y.is_right()) {
            (true, true) => both_right += 1,
            (true, false) => only_a += 1,
            (false, true) => only_b += 1,
            (false, false) => both_wrong += 1,
        }
    }
    let faces = a.len() as u64;
    let n = faces as f64;
    let interval = |right| wilson_interval(right, faces, Z_95).expect("faces > 0 and right ≤ faces");
    let (b_count, c_count) = (only_a as f64, only_b as f64);
    let difference = (c_count - b_count) / n;
    let half = Z_95 * (b_count + c_count - (c_count - b_count).powi(2) / n).max(0.0).sqrt() / n;
    Ok(PairedComparison {
        faces,
        accuracy_a: (both_right + only_a) as f64 / n,
        accuracy_a_ci95: interval(both_right + only_a),
        accuracy_b: (both_right + only_b) as f64 / n,
        accuracy_b_ci95: interval(both_right + only_b),
        both_right,
        only_a_right: only_a,
        only_b_right: only_b,
        both_wrong,
        difference,
        difference_ci95: [difference - half, difference + half],
        mcnemar_p: mcnemar_exact_p(only_a, only_b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wilson's interval against its closed forms: 0 of n has upper bound z²/(n + z²), n of n
    /// lower bound n/(n + z²); symmetric about ½ for k and n − k; inside [0, 1]; narrower with
    /// more trials; refusals.
    #[test]
    fn wilson_interval_closed_forms() {
        let z2 = Z_95 * Z_95;
        let [low, high] = wilson_interval(0, 10, Z_95).unwrap();
        assert!(low.abs() < 1e-12 && low >= 0.0, "{low}");
        assert!((high - z2 / (10.0 + z2)).abs() < 1e-12, "{high}");
        let [low, high] = wilson_interval(10, 10, Z_95).unwrap();
        assert!((low - 10.0 / (10.0 + z2)).abs() < 1e-12, "{low}");
        assert!((high - 1.0).abs() < 1e-12 && high <= 1.0, "{high}");
        let [l1, h1] = wilson_interval(3, 40, Z_95).unwrap();
        let [l2, h2] = wilson_interval(37, 40, Z_95).unwrap();
        assert!((l1 - (1.0 - h2)).abs() < 1e-12 && (h1 - (1.0 - l2)).abs() < 1e-12);
        let narrow = wilson_interval(700, 1000, Z_95).unwrap();
        let wide = wilson_interval(70, 100, Z_95).unwrap();
        assert!(narrow[1] - narrow[0] < wide[1] - wide[0]);
        assert!(narrow[0] < 0.7 && 0.7 < narrow[1]);
        // Large n: close to the normal interval p ± z·√(p(1 − p)/n).
        let [low, high] = wilson_interval(70_000, 100_000, Z_95).unwrap();
        let half = Z_95 * (0.7f64 * 0.3 / 100_000.0).sqrt();
        assert!((low - (0.7 - half)).abs() < 1e-5 && (high - (0.7 + half)).abs() < 1e-5);
        assert_eq!(wilson_interval(0, 0, Z_95), None);
        assert_eq!(wilson_interval(5, 4, Z_95), None);
        assert_eq!(wilson_interval(1, 4, 0.0), None);
        assert_eq!(wilson_interval(1, 4, f64::NAN), None);
    }

    /// McNemar's exact p-value against binomial sums written out: small counts, symmetry, no
    /// discordant faces, and counts too large for 2⁻ⁿ in floats (n = 3,000).
    #[test]
    fn mcnemar_exact_against_binomial_sums() {
        let binomial_tail = |n: u64, k: u64| -> f64 {
            let mut c = 1.0f64;
            let mut sum = 0.0;
            for i in 0..=k {
                sum += c;
                c = c * (n - i) as f64 / (i + 1) as f64;
            }
            sum / 2f64.powi(n as i32)
        };
        for (b, c) in [(0, 5), (2, 8), (7, 13), (20, 31), (45, 45), (60, 40)] {
            let expected = (2.0 * binomial_tail(b + c, b.min(c))).min(1.0);
            assert!((mcnemar_exact_p(b, c) - expected).abs() < 1e-12, "{b}, {c}");
            assert_eq!(mcnemar_exact_p(b, c), mcnemar_exact_p(c, b));
        }
        assert_eq!(mcnemar_exact_p(0, 0), 1.0);
        assert_eq!(mcnemar_exact_p(5, 5), 1.0);
        assert!((mcnemar_exact_p(0, 1) - 1.0).abs() < 1e-12);
        // 1,400 against 1,600 discordant faces: z = 200/√3000 ≈ 3.65, p ≈ 2.6e-4 (normal
        // approximation with continuity correction: 2·Φ(−199/√3000) = 2.8e-4).
        let p = mcnemar_exact_p(1400, 1600);
        assert!(p > 1e-4 && p < 5e-4, "{p}");
        assert!(mcnemar_exact_p(1500, 1500) == 1.0);
    }

    fn answers(labels: &[Emotion], answers: &[Emotion]) -> Vec<FaceAnswer> {
        labels
            .iter()
            .zip(answers)
            .enumerate()
            .map(|(face, (&label, &answer))| FaceAnswer { face, label, answer, probabilities: None })
            .collect()
    }

    /// The four counts, both accuracies, the difference and its interval by hand; refusals name
    /// the row and faces that differ.
    #[test]
    fn comparison_counts_and_refusals() {
        use Emotion::{Angry, Happy, Sad};
        let labels = [Happy, Happy, Sad, Sad, Angry, Angry, Happy, Sad];
        let a = answers(&labels, &[Happy, Sad, Sad, Happy, Angry, Happy, Happy, Happy]); // right: 0, 2, 4, 6
        let b = answers(&labels, &[Happy, Happy, Happy, Sad, Angry, Angry, Sad, Sad]); // right: 0, 1, 3, 4, 5, 7
        let c = compare_answers(&a, &b).unwrap();
        assert_eq!(c.faces, 8);
        assert_eq!((c.both_right, c.only_a_right, c.only_b_right, c.both_wrong), (2, 2, 4, 0));
        assert_eq!((c.accuracy_a, c.accuracy_b), (0.5, 0.75));
        assert_eq!(c.accuracy_a_ci95, wilson_interval(4, 8, Z_95).unwrap());
        assert_eq!(c.accuracy_b_ci95, wilson_interval(6, 8, Z_95).unwrap());
        assert_eq!(c.difference, 0.25);
        let half = Z_95 * (6.0f64 - 4.0 / 8.0).sqrt() / 8.0;
        assert!((c.difference_ci95[0] - (0.25 - half)).abs() < 1e-12);
        assert!((c.difference_ci95[1] - (0.25 + half)).abs() < 1e-12);
        assert_eq!(c.mcnemar_p, mcnemar_exact_p(2, 4));
        // Swapped: the same test, the difference's sign flipped.
        let swapped = compare_answers(&b, &a).unwrap();
        assert_eq!(swapped.difference, -0.25);
        assert_eq!(swapped.mcnemar_p, c.mcnemar_p);
        // The same answers: no difference, p = 1.
        let same = compare_answers(&a, &a).unwrap();
        assert_eq!((same.difference, same.difference_ci95, same.mcnemar_p), (0.0, [0.0, 0.0], 1.0));

        assert_eq!(compare_answers(&a, &b[..7]), Err(CompareError::FaceCount { a: 8, b: 7 }));
        assert_eq!(compare_answers(&[], &[]), Err(CompareError::Empty));
        let mut relabelled = b.clone();
        relabelled[5].label = Sad;
        let err = compare_answers(&a, &relabelled).unwrap_err();
        assert_eq!(err, CompareError::Mismatch { row: 6, face_a: 5, label_a: Angry, face_b: 5, label_b: Sad });
        assert!(err.to_string().contains("row 6"), "{err}");
    }
}
