//! Synthetic FER2013-shaped data with a known answer, for tests, benches and demos.
//!
//! Class `k` of the 7 is a texture (horizontal or vertical stripes of period 4 or 8, checks of
//! period 4 or 8, or flat) at a random phase, on noise. Textures survive random crops,
//! mirroring and global average pooling, so a small CNN learns the task in a few epochs; the
//! contrast between texture levels is about 0.63 on the `[0, 1]` scale, so attacks with
//! ε ≥ 0.3 can erase it. This is not face data: use it to check code, never to report accuracy.

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::{Emotion, FACE_SIDE, FaceImage, Fer2013, SplitData};

/// A synthetic face of class `class` (0–6), drawn from `rng`.
pub fn texture_face(class: usize, rng: &mut ChaCha8Rng) -> FaceImage {
    let (dy, dx) = (rng.random_range(0..8usize), rng.random_range(0..8usize));
    let mut face = FaceImage::filled(0);
    for y in 0..FACE_SIDE {
        for x in 0..FACE_SIDE {
            let (yy, xx) = (y + dy, x + dx);
            let on = match class {
                0 => (yy / 2) % 2 == 0,
                1 => (xx / 2) % 2 == 0,
                2 => (yy / 4) % 2 == 0,
                3 => (xx / 4) % 2 == 0,
                4 => (yy / 2 + xx / 2) % 2 == 0,
                5 => (yy / 4 + xx / 4) % 2 == 0,
                _ => false,
            };
            face.0[y * FACE_SIDE + x] = if on { 200 } else { 40 } + rng.random_range(0..40u8);
        }
    }
    face
}

/// `faces` synthetic faces, classes in turn (face `i` has class `i % 7`), seeded.
pub fn texture_split(faces: usize, seed: u64) -> SplitData {
    texture_faces(faces, &mut ChaCha8Rng::seed_from_u64(seed))
}

/// `faces` synthetic faces, classes in turn, drawn from `rng`.
fn texture_faces(faces: usize, rng: &mut ChaCha8Rng) -> SplitData {
    let mut split = SplitData::with_capacity(faces);
    for i in 0..faces {
        split.push(Emotion::ALL[i % Emotion::COUNT], texture_face(i % Emotion::COUNT, rng));
    }
    split
}

/// A synthetic data set: `train` training faces and `test` faces in each test split, seeded.
pub fn texture_data(train: usize, test: usize, seed: u64) -> Fer2013 {
    // One generator across the three splits, in this order: the faces depend on it.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let training = texture_faces(train, &mut rng);
    let public_test = texture_faces(test, &mut rng);
    let private_test = texture_faces(test, &mut rng);
    Fer2013::from_splits(training, public_test, private_test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_balanced() {
        let a = texture_data(14, 7, 3);
        let b = texture_data(14, 7, 3);
        assert_eq!(a.split(crate::Split::Training).images(), b.split(crate::Split::Training).images());
        assert_eq!(a.split(crate::Split::PublicTest).class_counts(), [1; 7]);
        assert_ne!(texture_split(7, 1).images(), texture_split(7, 2).images());
        // Flat faces (class 6) stay in the dark band; textured ones reach the bright one.
        let s = texture_split(7, 0);
        assert!(s.image(6).pixels().iter().all(|&p| p < 80));
        assert!(s.image(0).pixels().iter().any(|&p| p >= 200));
    }
}
