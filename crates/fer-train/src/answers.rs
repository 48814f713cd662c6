//! Each face's answer as a CSV file (`fer eval --answers`), read back for paired comparisons of
//! two classifiers on the same faces (`fer compare`, [`fer_models::compare_answers`]).

use std::path::Path;

use fer_dataset::Emotion;
use fer_models::FaceAnswer;

use crate::TrainError;
use crate::run::{read_csv, write_csv};

/// One row of an answers file: `face,label,answer,p_angry,…,p_neutral`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct AnswerRow {
    face: usize,
    label: String,
    answer: String,
    p_angry: Option<f32>,
    p_disgust: Option<f32>,
    p_fear: Option<f32>,
    p_happy: Option<f32>,
    p_sad: Option<f32>,
    p_surprise: Option<f32>,
    p_neutral: Option<f32>,
}

/// Writes `answers` to `path` as CSV (atomically): `face,label,answer,p_angry,…,p_neutral`, one
/// row per face in order, classes by name (`happy`), probabilities as the softmax gave them
/// (empty cells where the answers carry none).
pub fn write_answers(path: &Path, answers: &[FaceAnswer]) -> Result<(), TrainError> {
    let rows: Vec<AnswerRow> = answers
        .iter()
        .map(|a| {
            let [p_angry, p_disgust, p_fear, p_happy, p_sad, p_surprise, p_neutral] =
                a.probabilities.map_or([None; Emotion::COUNT], |p| p.map(Some));
            AnswerRow {
                face: a.face,
                label: a.label.name().to_string(),
                answer: a.answer.name().to_string(),
                p_angry,
                p_disgust,
                p_fear,
                p_happy,
                p_sad,
                p_surprise,
                p_neutral,
            }
        })
        .collect();
    write_csv(path, &rows)
}

/// Reads a file written by [`write_answers`], or its gzip'd copy (a name ending in `.gz`). A row
/// whose class is not one of the seven names (or 0–6), or that gives some probabilities but not
/// all seven, is refused with its file and line.
pub fn read_answers(path: &Path) -> Result<Vec<FaceAnswer>, TrainError> {
    let rows: Vec<AnswerRow> = read_csv(path)?;
    let bad_row = |row: usize, message: String| TrainError::BadRow { path: path.to_path_buf(), line: row + 2, message };
    rows.into_iter()
        .enumerate()
        .map(|(row, r)| {
            let class = |what: &str, value: &str| {
                value.parse::<Emotion>().map_err(|message| bad_row(row, format!("{what}: {message}")))
            };
            let cells = [r.p_angry, r.p_disgust, r.p_fear, r.p_happy, r.p_sad, r.p_surprise, r.p_neutral];
            let probabilities = match cells.iter().filter(|c| c.is_some()).count() {
                0 => None,
                Emotion::COUNT => Some(cells.map(|c| c.unwrap_or_default())),
                n => return Err(bad_row(row, format!("{n} of the 7 probabilities given: all or none"))),
            };
            Ok(FaceAnswer {
                face: r.face,
                label: class("label", &r.label)?,
                answer: class("answer", &r.answer)?,
                probabilities,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round trip keeps every field (from the gzip'd copy too); a bad class and a partial set of
    /// probabilities name the file's line; a file without answers and a missing file are refused.
    #[test]
    fn answers_round_trip_and_refusals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("answers.csv");
        let answers = vec![
            FaceAnswer {
                face: 0,
                label: Emotion::Happy,
                answer: Emotion::Happy,
                probabilities: Some([0.01, 0.02, 0.03, 0.8, 0.05, 0.06, 0.03]),
            },
            FaceAnswer {
                face: 1,
                label: Emotion::Disgust,
                answer: Emotion::Neutral,
                probabilities: Some([0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.3]),
            },
            FaceAnswer { face: 2, label: Emotion::Sad, answer: Emotion::Fear, probabilities: None },
        ];
        write_answers(&path, &answers).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("face,label,answer,p_angry,p_disgust,p_fear,p_happy,p_sad,p_surprise,p_neutral\n"),
            "{text}"
        );
        assert!(text.contains("\n1,disgust,neutral,"), "{text}");
        assert_eq!(read_answers(&path).expect("read back"), answers);
        // The gzip'd copy reads the same.
        let gz = dir.path().join("answers.csv.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, text.as_bytes()).expect("compress");
        std::fs::write(&gz, encoder.finish().expect("compress")).expect("write");
        assert_eq!(read_answers(&gz).expect("read the gzip'd copy"), answers);
        assert!(matches!(read_answers(&dir.path().join("none.csv.gz")), Err(TrainError::Io { .. })));

        std::fs::write(&path, text.replace("1,disgust,neutral", "1,disgusted,neutral")).expect("write");
        let err = read_answers(&path).expect_err("an unknown class").to_string();
        assert!(err.contains("answers.csv:3") && err.contains("label") && err.contains("disgusted"), "{err}");
        // Answers without probabilities: empty cells; some but not all: refused.
        assert!(text.contains("\n2,sad,fear,,,,,,,\n"), "{text}");
        std::fs::write(&path, text.replace("\n2,sad,fear,,,,,,,", "\n2,sad,fear,0.5,,,,,,")).expect("write");
        let err = read_answers(&path).expect_err("one probability of seven").to_string();
        assert!(err.contains("answers.csv:4") && err.contains("1 of the 7"), "{err}");

        // Without the probability columns: answers alone. Without the answer: refused.
        std::fs::write(&path, "face,label,answer\n0,happy,sad\n").expect("write");
        let alone = FaceAnswer { face: 0, label: Emotion::Happy, answer: Emotion::Sad, probabilities: None };
        assert_eq!(read_answers(&path).expect("answers alone"), vec![alone]);
        std::fs::write(&path, "face,label\n0,happy\n").expect("write");
        assert!(matches!(read_answers(&path), Err(TrainError::Csv { .. })));
        assert!(matches!(read_answers(&dir.path().join("none.csv")), Err(TrainError::Csv { .. })));
    }
}
