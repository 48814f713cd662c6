//! The two label types of FER2013: the expression ([`Emotion`]) and the subset ([`Split`]).

use std::fmt;
use std::str::FromStr;

/// One of FER2013's seven expression classes, in the dataset's index order (0 = angry … 6 = neutral).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Emotion {
    /// Index 0.
    Angry,
    /// Index 1 (the rare class: 436 training faces).
    Disgust,
    /// Index 2.
    Fear,
    /// Index 3.
    Happy,
    /// Index 4.
    Sad,
    /// Index 5.
    Surprise,
    /// Index 6.
    Neutral,
}

impl Emotion {
    /// Number of classes (7).
    pub const COUNT: usize = 7;

    /// All classes in index order.
    pub const ALL: [Emotion; 7] = [
        Emotion::Angry,
        Emotion::Disgust,
        Emotion::Fear,
        Emotion::Happy,
        Emotion::Sad,
        Emotion::Surprise,
        Emotion::Neutral,
    ];

    /// The FER2013 label index (0–6).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class with FER2013 label `index`, or `None` outside 0–6.
    pub fn from_index(index: usize) -> Option<Emotion> {
        Emotion::ALL.get(index).copied()
    }

    /// Lower-case English name, as used in reports (`"angry"`, …, `"neutral"`).
    pub fn name(self) -> &'static str {
        match self {
            Emotion::Angry => "angry",
            Emotion::Disgust => "disgust",
            Emotion::Fear => "fear",
            Emotion::Happy => "happy",
            Emotion::Sad => "sad",
            Emotion::Surprise => "surprise",
            Emotion::Neutral => "neutral",
        }
    }
}

impl fmt::Display for Emotion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Emotion {
    type Err = String;

    /// Parses a class name (case-insensitive) or its index `0`–`6`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Ok(i) = t.parse::<usize>() {
            return Emotion::from_index(i).ok_or_else(|| format!("emotion index {i} is not in 0..=6"));
        }
        Emotion::ALL.into_iter().find(|e| e.name().eq_ignore_ascii_case(t)).ok_or_else(|| {
            format!(
                "unknown emotion `{s}` (expected one of angry, disgust, fear, happy, sad, surprise, neutral or 0-6)"
            )
        })
    }
}

/// One of FER2013's three subsets, named as in its `Usage` column.
///
/// The honest protocol: train on `Training`, pick checkpoints and hyper-parameters on
/// `PublicTest` (validation), report `PrivateTest` (test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Split {
    /// 28,709 faces for training.
    Training,
    /// 3,589 faces, used for validation (model selection).
    PublicTest,
    /// 3,589 faces, used for the headline test figure.
    PrivateTest,
}

impl Split {
    /// All splits in file order.
    pub const ALL: [Split; 3] = [Split::Training, Split::PublicTest, Split::PrivateTest];

    /// Position in [`Split::ALL`] (0, 1, 2).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The exact `Usage` value in fer2013.csv.
    pub fn usage(self) -> &'static str {
        match self {
            Split::Training => "Training",
            Split::PublicTest => "PublicTest",
            Split::PrivateTest => "PrivateTest",
        }
    }

    /// The split whose `Usage` value is exactly `usage`.
    pub fn from_usage(usage: &str) -> Option<Split> {
        Split::ALL.into_iter().find(|s| s.usage() == usage)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.usage())
    }
}

impl FromStr for Split {
    type Err = String;

    /// Parses `Training`/`train`, `PublicTest`/`public`/`val`, `PrivateTest`/`private`/`test`
    /// (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "training" | "train" => Ok(Split::Training),
            "publictest" | "public" | "val" | "validation" => Ok(Split::PublicTest),
            "privatetest" | "private" | "test" => Ok(Split::PrivateTest),
            _ => Err(format!("unknown split `{s}` (expected training, public or private)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emotion_index_round_trip() {
        for (i, e) in Emotion::ALL.into_iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(Emotion::from_index(i), Some(e));
            assert_eq!(e.name().parse::<Emotion>(), Ok(e));
            assert_eq!(i.to_string().parse::<Emotion>(), Ok(e));
        }
        assert_eq!(Emotion::from_index(7), None);
        assert!("joy".parse::<Emotion>().is_err());
        assert_eq!("HAPPY".parse::<Emotion>(), Ok(Emotion::Happy));
    }

    #[test]
    fn split_names() {
        for s in Split::ALL {
            assert_eq!(Split::from_usage(s.usage()), Some(s));
            assert_eq!(s.usage().parse::<Split>(), Ok(s));
        }
        assert_eq!(Split::from_usage("training"), None, "Usage values are case-sensitive");
        assert_eq!("private".parse::<Split>(), Ok(Split::PrivateTest));
        assert!("holdout".parse::<Split>().is_err());
    }
}
