//! FER+ (Barsoum et al. 2016, Microsoft's `fer2013new.csv`, MIT): ten crowd-sourced votes for
//! each FER2013 face, in FER2013's row order.
//!
//! The file's header is `Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,
//! contempt,unknown,NF`; each row holds the face's split, the PNG name FER+ exported it under
//! (blank for 173 of the faces all ten judged not to be faces) and how many of the ten annotators chose each
//! category. Seven of the categories are FER2013's classes; `contempt` (no FER2013 class),
//! `unknown` and `NF` (not a face) are kept but belong to none of them.
//!
//! What the votes are good for: a distribution over FER2013's seven classes for each face
//! ([`FerPlusVotes::distribution`]), to train on as soft targets beside FER2013's own labels, and
//! a second opinion on those labels ([`FerPlusVotes::majority`]). They never replace the labels
//! a figure is reported on.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::csv_reader::read_error;
use crate::{DatasetError, Emotion, Fer2013, Split};

/// FER+'s ten vote columns, in file order.
pub const FERPLUS_CATEGORIES: [&str; 10] =
    ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"];

/// For each FER+ vote column, the FER2013 class it counts for (`None`: contempt, unknown, NF).
const CATEGORY_CLASS: [Option<Emotion>; 10] = [
    Some(Emotion::Neutral),
    Some(Emotion::Happy),
    Some(Emotion::Surprise),
    Some(Emotion::Sad),
    Some(Emotion::Angry),
    Some(Emotion::Disgust),
    Some(Emotion::Fear),
    None,
    None,
    None,
];

/// One face's FER+ votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FerPlusVotes {
    /// How many annotators chose each category of [`FERPLUS_CATEGORIES`].
    pub counts: [u8; 10],
}

impl FerPlusVotes {
    /// The votes for FER2013's seven classes, in [`Emotion`] order (contempt, unknown and NF
    /// left out).
    pub fn class_votes(&self) -> [u32; Emotion::COUNT] {
        let mut votes = [0u32; Emotion::COUNT];
        for (count, class) in self.counts.iter().zip(CATEGORY_CLASS) {
            if let Some(class) = class {
                votes[class.index()] += u32::from(*count);
            }
        }
        votes
    }

    /// The share of each FER2013 class among the votes for the seven classes; `None` where no
    /// annotator chose any of them (the face got only contempt, unknown or not-a-face votes).
    pub fn distribution(&self) -> Option<[f32; Emotion::COUNT]> {
        let votes = self.class_votes();
        let total: u32 = votes.iter().sum();
        (total > 0).then(|| votes.map(|v| v as f32 / total as f32))
    }

    /// The FER2013 class with strictly the most votes; `None` on a tie for the most, or where no
    /// annotator chose any of the seven classes.
    pub fn majority(&self) -> Option<Emotion> {
        let votes = self.class_votes();
        let most = *votes.iter().max()?;
        let mut top = Emotion::ALL.into_iter().filter(|e| votes[e.index()] == most);
        match (top.next(), top.next()) {
            (Some(class), None) if most > 0 => Some(class),
            _ => None,
        }
    }
}

/// The FER+ votes of every FER2013 face, per split in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FerPlus {
    splits: [Vec<FerPlusVotes>; 3],
}

impl FerPlus {
    /// The votes of `split`'s faces, in FER2013's order.
    pub fn split(&self, split: Split) -> &[FerPlusVotes] {
        &self.splits[split.index()]
    }

    /// Faces in all splits.
    pub fn len(&self) -> usize {
        self.splits.iter().map(Vec::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses votes that cannot be `data`'s (another number of faces in a split); `path` names
    /// the FER+ file in the error.
    pub fn check_matches(&self, data: &Fer2013, path: &Path) -> Result<(), DatasetError> {
        for split in Split::ALL {
            let (votes, faces) = (self.split(split).len(), data.split(split).len());
            if votes != faces {
                return Err(DatasetError::Mismatch {
                    path: path.to_path_buf(),
                    problem: format!(
                        "{votes} {split} rows, but the FER2013 data holds {faces} {split} faces: FER+ votes \
                         must come from the fer2013new.csv of the same FER2013, in its row order"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Reads FER+'s `fer2013new.csv`: the header, then one row per FER2013 face with its split and
/// ten vote counts. Errors name the file, the 1-based line (the header is line 1), the field and
/// the value.
pub fn read_ferplus(path: impl AsRef<Path>) -> Result<FerPlus, DatasetError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| DatasetError::Open { path: path.to_path_buf(), source })?;
    read_ferplus_from(BufReader::new(file), path)
}

/// Reads FER+ CSV text from any reader; `path` is only used in errors.
pub fn read_ferplus_from(reader: impl BufRead, path: impl AsRef<Path>) -> Result<FerPlus, DatasetError> {
    let path = path.as_ref().to_path_buf();
    let layout = |line: u64, problem: String| DatasetError::Layout { path: path.clone(), line, problem };
    let mut rows = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
    let mut record = csv::StringRecord::new();
    if !rows.read_record(&mut record).map_err(|e| read_error(e, 1, &path))? {
        return Err(DatasetError::Empty { path });
    }
    let header: Vec<&str> = record.iter().map(str::trim).collect();
    let expected: Vec<&str> = ["Usage", "Image name"].into_iter().chain(FERPLUS_CATEGORIES).collect();
    if header.first().map(|f| f.trim_start_matches('\u{feff}')) != Some("Usage")
        || header.get(1..) != Some(&expected[1..])
    {
        return Err(layout(1, format!("header is `{}`, expected `{}`", header.join(","), expected.join(","))));
    }

    let mut ferplus = FerPlus::default();
    let mut line = 1u64;
    let mut last_split = Split::Training;
    loop {
        match rows.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(read_error(e, line + 1, &path)),
        }
        line = record.position().map_or(line + 1, |p| p.line());
        if record.len() == 1 && record[0].trim().is_empty() {
            continue; // a blank line
        }
        if record.len() != expected.len() {
            return Err(layout(line, format!("expected {} fields, found {}", expected.len(), record.len())));
        }
        let field = |field: &'static str, value: &str, problem: String| DatasetError::Field {
            path: path.clone(),
            line,
            field,
            value: value.to_string(),
            problem,
        };
        let usage = record[0].trim();
        let split = Split::from_usage(usage)
            .ok_or_else(|| field("Usage", usage, "expected Training, PublicTest or PrivateTest".into()))?;
        if split < last_split {
            return Err(field(
                "Usage",
                usage,
                format!("a {split} row after {last_split} rows: FER2013's splits are contiguous, in file order"),
            ));
        }
        last_split = split;
        let mut counts = [0u8; 10];
        for (k, (count, name)) in counts.iter_mut().zip(FERPLUS_CATEGORIES).enumerate() {
            let text = record[k + 2].trim();
            *count = text
                .parse::<u8>()
                .map_err(|_| field(name, text, "expected a vote count, an integer in 0-255".into()))?;
        }
        ferplus.splits[split.index()].push(FerPlusVotes { counts });
    }
    if ferplus.is_empty() {
        return Err(DatasetError::NoRows { path });
    }
    Ok(ferplus)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n";

    fn votes(counts: [u8; 10]) -> FerPlusVotes {
        FerPlusVotes { counts }
    }

    fn read(text: &str) -> Result<FerPlus, DatasetError> {
        read_ferplus_from(text.as_bytes(), "fer2013new.csv")
    }

    #[test]
    fn each_vote_column_counts_for_its_fer2013_class() {
        // One vote in each of FER+'s seven emotion columns lands on the class of the same name.
        for (column, class) in [
            (0, Emotion::Neutral),
            (1, Emotion::Happy),
            (2, Emotion::Surprise),
            (3, Emotion::Sad),
            (4, Emotion::Angry),
            (5, Emotion::Disgust),
            (6, Emotion::Fear),
        ] {
            let mut counts = [0; 10];
            counts[column] = 3;
            let mut expected = [0; Emotion::COUNT];
            expected[class.index()] = 3;
            assert_eq!(votes(counts).class_votes(), expected, "column {}", FERPLUS_CATEGORIES[column]);
            assert_eq!(votes(counts).majority(), Some(class));
        }
    }

    #[test]
    fn the_distribution_leaves_out_contempt_unknown_and_not_a_face() {
        // 4 neutral, 2 sadness, 2 contempt, 1 unknown, 1 NF: shares of the 6 class votes.
        let v = votes([4, 0, 0, 2, 0, 0, 0, 2, 1, 1]);
        let p = v.distribution().expect("class votes");
        assert!((p[Emotion::Neutral.index()] - 4.0 / 6.0).abs() < 1e-7);
        assert!((p[Emotion::Sad.index()] - 2.0 / 6.0).abs() < 1e-7);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(v.majority(), Some(Emotion::Neutral));
        // Only contempt, unknown and NF: no distribution, no majority.
        let none = votes([0, 0, 0, 0, 0, 0, 0, 5, 3, 2]);
        assert_eq!(none.distribution(), None);
        assert_eq!(none.majority(), None);
    }

    #[test]
    fn a_tie_for_the_most_votes_has_no_majority() {
        assert_eq!(votes([4, 0, 0, 4, 2, 0, 0, 0, 0, 0]).majority(), None);
        assert_eq!(votes([4, 0, 0, 3, 3, 0, 0, 0, 0, 0]).majority(), Some(Emotion::Neutral));
    }

    #[test]
    fn reads_rows_into_their_splits_in_order() {
        let text = format!(
            "{HEADER}Training,fer0000000.png,4,0,0,1,3,2,0,0,0,0\nTraining,,0,0,0,0,0,0,0,0,0,10\n\
             PublicTest,fer0028709.png,0,10,0,0,0,0,0,0,0,0\nPrivateTest,fer0032298.png,1,0,9,0,0,0,0,0,0,0\n"
        );
        let f = read(&text).expect("valid");
        assert_eq!((f.split(Split::Training).len(), f.split(Split::PublicTest).len(), f.len()), (2, 1, 4));
        assert_eq!(f.split(Split::Training)[0].counts, [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]);
        assert_eq!(f.split(Split::Training)[1].distribution(), None);
        assert_eq!(f.split(Split::PublicTest)[0].majority(), Some(Emotion::Happy));
        assert_eq!(f.split(Split::PrivateTest)[0].majority(), Some(Emotion::Surprise));
    }

    #[test]
    fn bad_files_are_refused_naming_line_field_and_value() {
        let message = |text: &str| read(text).expect_err("invalid").to_string();
        let m = message("emotion,pixels,Usage\n0,1 2,Training\n");
        assert!(m.contains("fer2013new.csv:1: header is `emotion,pixels,Usage`"), "{m}");
        let m = message(&format!("{HEADER}Training,a.png,1,2,3\n"));
        assert!(m.contains(":2: expected 12 fields, found 5"), "{m}");
        let m = message(&format!("{HEADER}Training,a.png,1,0,0,0,0,0,0,0,0,0\nTrain,b.png,1,0,0,0,0,0,0,0,0,0\n"));
        assert!(m.contains(":3: field `Usage`") && m.contains("`Train`"), "{m}");
        let m = message(&format!("{HEADER}Training,a.png,1,0,0,0,0,x7,0,0,0,0\n"));
        assert!(m.contains(":2: field `disgust`") && m.contains("`x7`"), "{m}");
        let m = message(&format!("{HEADER}Training,a.png,1,0,0,0,0,0,0,0,0,-1\n"));
        assert!(m.contains("field `NF`") && m.contains("`-1`"), "{m}");
        let m = message(&format!("{HEADER}PublicTest,a.png,1,0,0,0,0,0,0,0,0,0\nTraining,b.png,1,0,0,0,0,0,0,0,0,0\n"));
        assert!(m.contains(":3: field `Usage`") && m.contains("contiguous"), "{m}");
        assert!(message("").contains("empty"));
        assert!(message(HEADER).contains("no data rows"));
    }

    #[test]
    fn votes_of_other_data_are_refused() {
        use crate::{FaceImage, SplitData};
        let mut training = SplitData::new();
        training.push(Emotion::Happy, FaceImage::filled(0));
        let data = Fer2013::from_splits(training, SplitData::new(), SplitData::new());
        let two = read(&format!("{HEADER}Training,a.png,1,0,0,0,0,0,0,0,0,0\nTraining,b.png,1,0,0,0,0,0,0,0,0,0\n"))
            .expect("valid");
        let m = two.check_matches(&data, Path::new("new.csv")).expect_err("2 rows for 1 face").to_string();
        assert!(m.contains("new.csv") && m.contains("2 Training rows") && m.contains("holds 1 Training faces"), "{m}");
        let one = read(&format!("{HEADER}Training,a.png,1,0,0,0,0,0,0,0,0,0\n")).expect("valid");
        one.check_matches(&data, Path::new("new.csv")).expect("one face each");
    }
}
