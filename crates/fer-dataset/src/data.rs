//! In-memory FER2013: faces and labels per split, and per-class counts.

use std::fmt;

use crate::{Emotion, Split};

/// Side of a FER2013 face in pixels.
pub const FACE_SIDE: usize = 48;
/// Pixels in one FER2013 face (48 × 48).
pub const FACE_PIXELS: usize = FACE_SIDE * FACE_SIDE;

/// One 48×48 8-bit gray face, row-major (pixel `(x, y)` at `y * 48 + x`).
#[derive(Clone, PartialEq, Eq)]
pub struct FaceImage(pub [u8; FACE_PIXELS]);

impl FaceImage {
    /// A face of one gray level.
    pub fn filled(value: u8) -> FaceImage {
        FaceImage([value; FACE_PIXELS])
    }

    /// The face from 2,304 row-major pixels, or `None` when `pixels` has another length.
    pub fn from_slice(pixels: &[u8]) -> Option<FaceImage> {
        pixels.try_into().ok().map(FaceImage)
    }

    /// The gray level at column `x`, row `y` (both `< 48`).
    pub fn get(&self, x: usize, y: usize) -> u8 {
        self.0[y * FACE_SIDE + x]
    }

    /// The 2,304 row-major pixels.
    pub fn pixels(&self) -> &[u8; FACE_PIXELS] {
        &self.0
    }
}

impl fmt::Debug for FaceImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mean = self.0.iter().map(|&p| p as f64).sum::<f64>() / FACE_PIXELS as f64;
        write!(f, "FaceImage(48x48, mean {mean:.1})")
    }
}

/// The faces and labels of one split, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitData {
    labels: Vec<Emotion>,
    images: Vec<FaceImage>,
}

impl SplitData {
    /// An empty split.
    pub fn new() -> SplitData {
        SplitData::default()
    }

    /// An empty split with room for `faces` faces.
    pub fn with_capacity(faces: usize) -> SplitData {
        SplitData { labels: Vec::with_capacity(faces), images: Vec::with_capacity(faces) }
    }

    /// Appends one labelled face.
    pub fn push(&mut self, label: Emotion, image: FaceImage) {
        self.labels.push(label);
        self.images.push(image);
    }

    /// Number of faces.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no face.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Label of face `i` (panics when `i >= len()`, like slice indexing).
    pub fn label(&self, i: usize) -> Emotion {
        self.labels[i]
    }

    /// Face `i` (panics when `i >= len()`, like slice indexing).
    pub fn image(&self, i: usize) -> &FaceImage {
        &self.images[i]
    }

    /// All labels, in file order.
    pub fn labels(&self) -> &[Emotion] {
        &self.labels
    }

    /// All faces, in file order.
    pub fn images(&self) -> &[FaceImage] {
        &self.images
    }

    /// Faces per class, indexed by [`Emotion::index`].
    pub fn class_counts(&self) -> [usize; Emotion::COUNT] {
        let mut counts = [0; Emotion::COUNT];
        for l in &self.labels {
            counts[l.index()] += 1;
        }
        counts
    }

    /// The faces at `indices` (in that order), e.g. a seeded subset for a quick run.
    pub fn select(&self, indices: &[usize]) -> SplitData {
        SplitData {
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            images: indices.iter().map(|&i| self.images[i].clone()).collect(),
        }
    }
}

/// FER2013: the three splits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fer2013 {
    splits: [SplitData; 3],
}

impl Fer2013 {
    /// A dataset from its three splits.
    pub fn from_splits(training: SplitData, public_test: SplitData, private_test: SplitData) -> Fer2013 {
        Fer2013 { splits: [training, public_test, private_test] }
    }

    /// One split.
    pub fn split(&self, split: Split) -> &SplitData {
        &self.splits[split.index()]
    }

    /// One split, mutable (to append faces).
    pub fn split_mut(&mut self, split: Split) -> &mut SplitData {
        &mut self.splits[split.index()]
    }

    /// Takes the dataset apart into `[Training, PublicTest, PrivateTest]`.
    pub fn into_splits(self) -> [SplitData; 3] {
        self.splits
    }

    /// Faces over all splits.
    pub fn len(&self) -> usize {
        self.splits.iter().map(SplitData::len).sum()
    }

    /// True when no split holds a face.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per-split, per-class counts.
    pub fn counts(&self) -> ClassCounts {
        ClassCounts { counts: Split::ALL.map(|s| self.split(s).class_counts()) }
    }
}

/// Faces per split and class; `Display` prints the table `fer stats` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClassCounts {
    /// `counts[split.index()][emotion.index()]`.
    pub counts: [[usize; Emotion::COUNT]; 3],
}

impl ClassCounts {
    /// Faces of `emotion` in `split`.
    pub fn get(&self, split: Split, emotion: Emotion) -> usize {
        self.counts[split.index()][emotion.index()]
    }

    /// Faces in `split`.
    pub fn split_total(&self, split: Split) -> usize {
        self.counts[split.index()].iter().sum()
    }

    /// Faces in all splits.
    pub fn total(&self) -> usize {
        Split::ALL.iter().map(|&s| self.split_total(s)).sum()
    }
}

impl fmt::Display for ClassCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<12} {:>7}", "split", "total")?;
        for e in Emotion::ALL {
            write!(f, " {:>8}", e.name())?;
        }
        writeln!(f)?;
        let mut column_totals = [0usize; Emotion::COUNT];
        for s in Split::ALL {
            write!(f, "{:<12} {:>7}", s.usage(), self.split_total(s))?;
            for e in Emotion::ALL {
                let n = self.get(s, e);
                column_totals[e.index()] += n;
                write!(f, " {n:>8}")?;
            }
            writeln!(f)?;
        }
        write!(f, "{:<12} {:>7}", "all", self.total())?;
        for n in column_totals {
            write!(f, " {n:>8}")?;
        }
        writeln!(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_table() {
        let mut data = Fer2013::default();
        data.split_mut(Split::Training).push(Emotion::Happy, FaceImage::filled(1));
        data.split_mut(Split::Training).push(Emotion::Happy, FaceImage::filled(2));
        data.split_mut(Split::PrivateTest).push(Emotion::Disgust, FaceImage::filled(3));
        let c = data.counts();
        assert_eq!(c.get(Split::Training, Emotion::Happy), 2);
        assert_eq!(c.get(Split::PrivateTest, Emotion::Disgust), 1);
        assert_eq!(c.split_total(Split::PublicTest), 0);
        assert_eq!(c.total(), 3);
        let table = c.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].contains("angry") && lines[0].contains("neutral"));
        assert!(lines[1].starts_with("Training") && lines[1].contains(" 2 "));
        assert!(lines[4].starts_with("all"));
    }

    #[test]
    fn face_image_access() {
        let mut px = [0u8; FACE_PIXELS];
        px[3 * FACE_SIDE + 5] = 200;
        let img = FaceImage::from_slice(&px).expect("2304 pixels");
        assert_eq!(img.get(5, 3), 200);
        assert_eq!(img.get(3, 5), 0);
        assert!(FaceImage::from_slice(&px[1..]).is_none());
    }

    #[test]
    fn select_subset() {
        let mut s = SplitData::new();
        for (i, e) in Emotion::ALL.into_iter().enumerate() {
            s.push(e, FaceImage::filled(i as u8));
        }
        let sub = s.select(&[6, 0]);
        assert_eq!(sub.labels(), &[Emotion::Neutral, Emotion::Angry]);
        assert_eq!(sub.image(0).get(0, 0), 6);
    }
}
