//! Faces that are copies of other faces: FER2013 holds some photos more than once, within a split
//! and across splits (a test face whose copy is in Training measures memory, not recognition).

use std::fmt;

use crate::{Emotion, FACE_PIXELS, SplitData};

/// The faces of `reference` within `max_levels` grey levels of each face of `faces` on every
/// pixel (`max_levels = 0`: exact copies), in index order.
///
/// Faces are sorted by their sum of levels first: two faces within `t` levels on every pixel have
/// sums within `t·2304`, so each face is compared only with that window, and a comparison stops at
/// the first pixel past `max_levels`. Both test splits against Training take about a second.
///
/// ```
/// use fer_dataset::{Emotion, FaceImage, SplitData, copies_in};
///
/// let mut training = SplitData::new();
/// training.push(Emotion::Happy, FaceImage::filled(100));
/// training.push(Emotion::Sad, FaceImage::filled(103));
/// let mut test = SplitData::new();
/// test.push(Emotion::Happy, FaceImage::filled(100));
/// test.push(Emotion::Fear, FaceImage::filled(200));
/// assert_eq!(copies_in(&test, &training, 0), vec![vec![0], vec![]]);
/// assert_eq!(copies_in(&test, &training, 3), vec![vec![0, 1], vec![]]);
/// ```
pub fn copies_in(faces: &SplitData, reference: &SplitData, max_levels: u8) -> Vec<Vec<usize>> {
    let sum = |pixels: &[u8; FACE_PIXELS]| pixels.iter().map(|&p| p as u32).sum::<u32>();
    let mut by_sum: Vec<(u32, usize)> = reference.images().iter().map(|im| sum(im.pixels())).zip(0..).collect();
    by_sum.sort_unstable();
    let window = max_levels as u32 * FACE_PIXELS as u32;
    faces
        .images()
        .iter()
        .map(|image| {
            let a = image.pixels();
            let s = sum(a);
            let start = by_sum.partition_point(|&(t, _)| t < s.saturating_sub(window));
            let mut found: Vec<usize> = by_sum[start..]
                .iter()
                .take_while(|&&(t, _)| t <= s + window)
                .filter(|&&(_, j)| {
                    let b = reference.image(j).pixels();
                    a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= max_levels)
                })
                .map(|&(_, j)| j)
                .collect();
            found.sort_unstable();
            found
        })
        .collect()
}

/// The positions of a split's faces without and with a copy in another split
/// ([`CopyPartition::new`]), e.g. to evaluate a model on the test faces it cannot have seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyPartition {
    /// Positions of the faces with no copy, in index order.
    pub unseen: Vec<usize>,
    /// Positions of the faces with at least one copy, in index order.
    pub copied: Vec<usize>,
}

impl CopyPartition {
    /// Splits the positions of `faces` by whether [`copies_in`]`(faces, reference, max_levels)`
    /// finds a copy of each in `reference`.
    ///
    /// ```
    /// use fer_dataset::{CopyPartition, Emotion, FaceImage, SplitData};
    ///
    /// let mut training = SplitData::new();
    /// training.push(Emotion::Happy, FaceImage::filled(100));
    /// let mut test = SplitData::new();
    /// test.push(Emotion::Fear, FaceImage::filled(7));
    /// test.push(Emotion::Happy, FaceImage::filled(100));
    /// let parts = CopyPartition::new(&test, &training, 0);
    /// assert_eq!((parts.unseen, parts.copied), (vec![0], vec![1]));
    /// ```
    pub fn new(faces: &SplitData, reference: &SplitData, max_levels: u8) -> CopyPartition {
        let mut parts = CopyPartition::default();
        for (i, found) in copies_in(faces, reference, max_levels).iter().enumerate() {
            if found.is_empty() { parts.unseen.push(i) } else { parts.copied.push(i) }
        }
        parts
    }
}

/// How many faces of a split have copies in another ([`CopyCounts::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CopyCounts {
    /// Faces of the split.
    pub faces: usize,
    /// Faces with at least one copy.
    pub with_copy: usize,
    /// Faces with a copy of the same label.
    pub same_label: usize,
    /// Faces whose copies all have another label.
    pub other_label_only: usize,
    /// Largest difference in levels on any pixel that counted as a copy.
    pub max_levels: u8,
}

impl CopyCounts {
    /// Counts from [`copies_in`]`(faces, reference, max_levels)`'s answer `copies`.
    pub fn new(faces: &SplitData, reference: &SplitData, copies: &[Vec<usize>], max_levels: u8) -> CopyCounts {
        let label_of = |j: usize| -> Emotion { reference.label(j) };
        let with_copy = copies.iter().filter(|c| !c.is_empty()).count();
        let same_label =
            copies.iter().enumerate().filter(|(i, c)| c.iter().any(|&j| label_of(j) == faces.label(*i))).count();
        CopyCounts { faces: faces.len(), with_copy, same_label, other_label_only: with_copy - same_label, max_levels }
    }
}

impl fmt::Display for CopyCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = 100.0 * self.with_copy as f64 / self.faces.max(1) as f64;
        let within = match self.max_levels {
            0 => "an exact copy".to_string(),
            t => format!("a copy within {t} levels"),
        };
        write!(
            f,
            "{} of {} faces ({share:.2} %) have {within}: {} with the same label, {} only with another",
            self.with_copy, self.faces, self.same_label, self.other_label_only
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaceImage;

    fn split(faces: &[(Emotion, FaceImage)]) -> SplitData {
        let mut s = SplitData::new();
        for (label, image) in faces {
            s.push(*label, image.clone());
        }
        s
    }

    /// A face with a gradient, so that two faces can have equal sums and still differ.
    fn ramp(offset: u8) -> FaceImage {
        let mut pixels = [0u8; FACE_PIXELS];
        for (k, p) in pixels.iter_mut().enumerate() {
            *p = ((k % 200) as u8).saturating_add(offset);
        }
        FaceImage(pixels)
    }

    #[test]
    fn exact_and_near_copies_are_found_and_counted_by_label() {
        let mut moved = ramp(10);
        // The same sum as ramp(10), but two pixels 40 levels off: not a copy within 39 levels.
        moved.0[0] += 40; // 10 → 50
        moved.0[50] -= 40; // 60 → 20
        let reference = split(&[
            (Emotion::Happy, ramp(10)),
            (Emotion::Sad, ramp(12)),
            (Emotion::Angry, moved),
            (Emotion::Happy, ramp(10)),
        ]);
        let faces = split(&[(Emotion::Happy, ramp(10)), (Emotion::Fear, ramp(13)), (Emotion::Neutral, ramp(100))]);
        let exact = copies_in(&faces, &reference, 0);
        assert_eq!(exact, vec![vec![0, 3], vec![], vec![]]);
        let near = copies_in(&faces, &reference, 3);
        assert_eq!(near, vec![vec![0, 1, 3], vec![0, 1, 3], vec![]]);
        assert_eq!(copies_in(&faces, &reference, 39)[0], vec![0, 1, 3]);
        assert_eq!(copies_in(&faces, &reference, 40)[0], vec![0, 1, 2, 3]);
        let counts = CopyCounts::new(&faces, &reference, &near, 3);
        assert_eq!(counts, CopyCounts { faces: 3, with_copy: 2, same_label: 1, other_label_only: 1, max_levels: 3 });
        assert_eq!(
            counts.to_string(),
            "2 of 3 faces (66.67 %) have a copy within 3 levels: 1 with the same label, 1 only with another"
        );
        assert!(
            CopyCounts::new(&faces, &reference, &exact, 0)
                .to_string()
                .starts_with("1 of 3 faces (33.33 %) have an exact copy")
        );
    }

    #[test]
    fn the_sum_window_misses_nothing_brute_force_finds() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(3);
        let mut face = |base: u8| {
            let mut pixels = [0u8; FACE_PIXELS];
            for p in pixels.iter_mut() {
                *p = base.saturating_add(rng.random_range(0..6u8));
            }
            FaceImage(pixels)
        };
        let reference = split(&(0..40).map(|i| (Emotion::ALL[i % 7], face((i * 5) as u8))).collect::<Vec<_>>());
        let faces = split(&(0..20).map(|i| (Emotion::ALL[i % 7], face((i * 9) as u8))).collect::<Vec<_>>());
        for max_levels in [0u8, 3, 5, 8, 12] {
            let brute: Vec<Vec<usize>> = faces
                .images()
                .iter()
                .map(|a| {
                    (0..reference.len())
                        .filter(|&j| {
                            a.pixels()
                                .iter()
                                .zip(reference.image(j).pixels())
                                .all(|(x, y)| x.abs_diff(*y) <= max_levels)
                        })
                        .collect()
                })
                .collect();
            assert_eq!(copies_in(&faces, &reference, max_levels), brute, "max_levels {max_levels}");
            let parts = CopyPartition::new(&faces, &reference, max_levels);
            let unseen: Vec<usize> = (0..faces.len()).filter(|&i| brute[i].is_empty()).collect();
            let copied: Vec<usize> = (0..faces.len()).filter(|&i| !brute[i].is_empty()).collect();
            assert_eq!((parts.unseen, parts.copied), (unseen, copied), "max_levels {max_levels}");
        }
    }
}
