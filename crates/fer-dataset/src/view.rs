//! Crops and flips of a 48×48 face, scaled to `[0, 1]`: the training augmentation and the
//! evaluation views (one place for them, shared by training, evaluation and attacks).

use rand::{Rng, RngExt};

use crate::{FACE_SIDE, FaceImage};

/// How faces are turned into network inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum View {
    /// The whole 48×48 face (used by the adversarial evaluation of the reference).
    Full,
    /// The centred `S×S` crop.
    CenterCrop(usize),
    /// Training augmentation: a uniformly placed `S×S` crop, mirrored with probability ½
    /// (torchvision `RandomCrop(S)` + `RandomHorizontalFlip()`).
    RandomCropFlip(usize),
    /// Evaluation: ten `S×S` crops per face, in torchvision `TenCrop(S)` order: top-left,
    /// top-right, bottom-left, bottom-right, centre, then the same five of the mirrored face.
    TenCrop(usize),
}

impl View {
    /// Side of the produced crops.
    pub fn side(self) -> usize {
        match self {
            View::Full => FACE_SIDE,
            View::CenterCrop(s) | View::RandomCropFlip(s) | View::TenCrop(s) => s,
        }
    }

    /// Crops produced per face (10 for [`View::TenCrop`], else 1).
    pub fn crops_per_face(self) -> usize {
        if matches!(self, View::TenCrop(_)) { 10 } else { 1 }
    }

    /// True when the crops depend on a random draw.
    pub fn is_random(self) -> bool {
        matches!(self, View::RandomCropFlip(_))
    }

    /// Checks that the crop side is in `1..=48`.
    pub fn check(self) -> Result<(), String> {
        let s = self.side();
        if (1..=FACE_SIDE).contains(&s) { Ok(()) } else { Err(format!("crop side {s} is not in 1..=48")) }
    }

    /// The crop windows for one face; `rng` is only drawn from by [`View::RandomCropFlip`].
    ///
    /// Panics when [`View::check`] fails.
    pub fn windows(self, rng: &mut impl Rng) -> Vec<CropWindow> {
        if let Err(e) = self.check() {
            panic!("invalid view {self:?}: {e}");
        }
        match self {
            View::Full => vec![CropWindow { top: 0, left: 0, size: FACE_SIDE, mirrored: false }],
            View::CenterCrop(s) => vec![CropWindow::center(s)],
            View::RandomCropFlip(s) => vec![CropWindow::random(s, rng)],
            View::TenCrop(s) => CropWindow::ten(s).to_vec(),
        }
    }
}

/// One square window of a 48×48 face, optionally mirrored left-right.
///
/// `top` and `left` are in the coordinates of the unmirrored face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropWindow {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Side in pixels.
    pub size: usize,
    /// Mirror the crop left-right.
    pub mirrored: bool,
}

impl CropWindow {
    /// The centred window, placed as torchvision's `center_crop` (Python's round-half-to-even).
    pub fn center(size: usize) -> CropWindow {
        let offset = round_half_even_half(FACE_SIDE - size);
        CropWindow { top: offset, left: offset, size, mirrored: false }
    }

    /// A uniformly placed window (every offset in `0..=48-size`), mirrored with probability ½.
    pub fn random(size: usize, rng: &mut impl Rng) -> CropWindow {
        let span = FACE_SIDE - size;
        let top = rng.random_range(0..=span);
        let left = rng.random_range(0..=span);
        let mirrored = rng.random_bool(0.5);
        CropWindow { top, left, size, mirrored }
    }

    /// torchvision's `TenCrop(size)`: four corners and centre, then the same five crops of the
    /// mirrored face (the mirrored face's top-left crop is the original's top-right, mirrored).
    pub fn ten(size: usize) -> [CropWindow; 10] {
        let far = FACE_SIDE - size;
        let c = CropWindow::center(size);
        let five = [(0, 0), (0, far), (far, 0), (far, far), (c.top, c.left)];
        std::array::from_fn(|i| {
            let (top, left) = five[i % 5];
            if i < 5 {
                CropWindow { top, left, size, mirrored: false }
            } else {
                CropWindow { top, left: far - left, size, mirrored: true }
            }
        })
    }

    /// Writes the window's `size × size` pixels, row-major and scaled by 1/255, into `out`.
    ///
    /// Panics when `out.len() != size²` or the window leaves the face.
    pub fn write_scaled(&self, image: &FaceImage, out: &mut [f32]) {
        assert!(self.top + self.size <= FACE_SIDE && self.left + self.size <= FACE_SIDE, "{self:?} leaves the face");
        assert_eq!(out.len(), self.size * self.size, "output buffer size");
        let px = image.pixels();
        for (r, out_row) in out.chunks_exact_mut(self.size).enumerate() {
            let row = &px[(self.top + r) * FACE_SIDE + self.left..][..self.size];
            if self.mirrored {
                for (o, &p) in out_row.iter_mut().zip(row.iter().rev()) {
                    *o = f32::from(p) / 255.0;
                }
            } else {
                for (o, &p) in out_row.iter_mut().zip(row) {
                    *o = f32::from(p) / 255.0;
                }
            }
        }
    }
}

/// `round(n / 2)` with ties to even, as Python's `round` in torchvision.
fn round_half_even_half(n: usize) -> usize {
    let half = n / 2;
    if n % 2 == 1 && half % 2 == 1 { half + 1 } else { half }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    /// Pixel (x, y) = first + x + 2y (at most first + 141, so first ≤ 114 fits a u8).
    pub(crate) fn ramp_from(first: u8) -> FaceImage {
        let mut img = FaceImage::filled(0);
        for y in 0..FACE_SIDE {
            for x in 0..FACE_SIDE {
                img.0[y * FACE_SIDE + x] = first + (x + 2 * y) as u8;
            }
        }
        img
    }

    fn ramp() -> FaceImage {
        ramp_from(0)
    }

    fn crop(w: CropWindow) -> Vec<f32> {
        let mut out = vec![0.0; w.size * w.size];
        w.write_scaled(&ramp(), &mut out);
        out
    }

    #[test]
    fn center_matches_torchvision() {
        assert_eq!(CropWindow::center(44), CropWindow { top: 2, left: 2, size: 44, mirrored: false });
        assert_eq!(CropWindow::center(43).top, 2); // round(2.5) = 2
        assert_eq!(CropWindow::center(41).top, 4); // round(3.5) = 4
        assert_eq!(CropWindow::center(48).top, 0);
    }

    #[test]
    fn scaled_crop_values() {
        let c = crop(CropWindow { top: 1, left: 3, size: 4, mirrored: false });
        assert_eq!(c[0], (3.0 + 2.0) / 255.0);
        assert_eq!(c[4 + 1], (4.0 + 4.0) / 255.0); // row 1 → y = 2, col 1 → x = 4
        let m = crop(CropWindow { top: 1, left: 3, size: 4, mirrored: true });
        assert_eq!(m[0], (6.0 + 2.0) / 255.0); // mirrored: first output column is x = 6
        assert_eq!(m[3], (3.0 + 2.0) / 255.0);
    }

    #[test]
    fn ten_crop_is_five_crop_of_face_and_of_mirror() {
        let windows = CropWindow::ten(44);
        let expected = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)];
        for (w, &(top, left)) in windows[..5].iter().zip(&expected) {
            assert_eq!((w.top, w.left, w.mirrored), (top, left, false));
        }
        // Each mirrored crop equals the corresponding crop of the mirrored face, done by hand.
        let mut mirrored_face = ramp();
        for y in 0..FACE_SIDE {
            mirrored_face.0[y * FACE_SIDE..(y + 1) * FACE_SIDE].reverse();
        }
        for (w, &(top, left)) in windows[5..].iter().zip(&expected) {
            let mut by_hand = vec![0.0; 44 * 44];
            CropWindow { top, left, size: 44, mirrored: false }.write_scaled(&mirrored_face, &mut by_hand);
            assert!(w.mirrored);
            assert_eq!(crop(*w), by_hand, "{w:?}");
        }
    }

    #[test]
    fn random_crops_cover_every_offset_and_are_seeded() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = [[false; 5]; 5];
        let mut flips = 0;
        for _ in 0..2000 {
            let w = CropWindow::random(44, &mut rng);
            seen[w.top][w.left] = true;
            flips += usize::from(w.mirrored);
        }
        assert!(seen.iter().flatten().all(|&s| s), "all 25 offsets drawn");
        assert!((800..1200).contains(&flips), "about half mirrored: {flips}");
        let a = View::RandomCropFlip(44).windows(&mut ChaCha8Rng::seed_from_u64(1));
        let b = View::RandomCropFlip(44).windows(&mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(a, b);
    }

    #[test]
    fn view_shapes_and_checks() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(View::Full.windows(&mut rng).len(), 1);
        assert_eq!(View::TenCrop(44).windows(&mut rng).len(), 10);
        assert_eq!(View::TenCrop(44).crops_per_face(), 10);
        assert_eq!(View::CenterCrop(44).side(), 44);
        assert!(View::CenterCrop(49).check().is_err());
        assert!(View::TenCrop(0).check().is_err());
    }
}
