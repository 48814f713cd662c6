//! Stronger training augmentation on top of the random crop and mirror: a random rotation and
//! zoom about the crop's centre (bilinear, edges replicated) and random erasing (torchvision's
//! `RandomErasing`), as FER2013 models that reach the mid-70s train with.
//!
//! The sampling is written here rather than taken from imageproc's `warp` (a workspace
//! dependency of fer-models): `warp` fills what falls outside the image with one constant, where
//! these crops replicate the face's edges (no black corners to mistake for erasing), it works on
//! whole images (a 48×48 warp, then the crop, per face), and fer-dataset stays free of image
//! libraries. No crate in the workspace does random erasing.

use rand::{Rng, RngExt};

use crate::{CropWindow, FACE_SIDE, FaceImage};

/// Random erasing's rectangle area, as a share of the crop: torchvision's `scale=(0.02, 0.33)`.
pub const ERASE_AREA: (f32, f32) = (0.02, 0.33);
/// Random erasing's aspect ratio (height / width) range: torchvision's `ratio=(0.3, 3.3)`.
pub const ERASE_RATIO: (f32, f32) = (0.3, 3.3);
/// Random erasing's draws of a rectangle before it gives up (torchvision: 10).
const ERASE_TRIES: usize = 10;

/// What a training crop goes through after its random placement and mirroring.
///
/// Integer fields keep run configs exact and comparable. [`Augmentation::NONE`] (the default)
/// is the reference's RandomCrop + flip alone; [`Augmentation::STRONG`] adds ±10° rotation,
/// ±10 % zoom and erasing half the crops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Augmentation {
    /// Rotation angle drawn uniformly from ±this many degrees (0: no rotation).
    pub max_rotation_deg: u32,
    /// Zoom factor drawn uniformly from `[1 − p/100, 1 + p/100]` (0: no zoom); above 1 the face
    /// is magnified.
    pub max_zoom_pct: u32,
    /// Chance, in percent, that one random rectangle of the crop (2–33 % of its area, aspect
    /// 0.3–3.3) is set to black, after the geometric part (0: never).
    pub erase_pct: u32,
}

impl Augmentation {
    /// RandomCrop + flip only (the reference).
    pub const NONE: Augmentation = Augmentation { max_rotation_deg: 0, max_zoom_pct: 0, erase_pct: 0 };
    /// ±10° rotation, ±10 % zoom, erasing with probability ½.
    pub const STRONG: Augmentation = Augmentation { max_rotation_deg: 10, max_zoom_pct: 10, erase_pct: 50 };

    /// The named presets: `none` or `strong`.
    pub fn from_name(name: &str) -> Result<Augmentation, String> {
        match name {
            "none" => Ok(Augmentation::NONE),
            "strong" => Ok(Augmentation::STRONG),
            other => Err(format!("unknown augmentation `{other}` (expected none or strong)")),
        }
    }

    /// True when nothing is added to the random crop and mirror.
    pub fn is_none(&self) -> bool {
        *self == Augmentation::NONE
    }

    /// Checks the ranges: rotation at most 180°, zoom below 100 %, erasing at most 100 %.
    pub fn check(&self) -> Result<(), String> {
        if self.max_rotation_deg > 180 {
            return Err(format!("rotation ±{}° is more than ±180°", self.max_rotation_deg));
        }
        if self.max_zoom_pct >= 100 {
            return Err(format!("zoom ±{} % would reach a factor of 0 or less (must be below 100)", self.max_zoom_pct));
        }
        if self.erase_pct > 100 {
            return Err(format!("erasing chance {} % is more than 100 %", self.erase_pct));
        }
        Ok(())
    }

    /// Writes `window`'s crop of `image`, rotated and zoomed about the window's centre by angles
    /// and factors drawn from `rng`, then possibly erased, scaled to `[0, 1]`, into `out`
    /// (`window.size²` values, row-major). With [`Augmentation::NONE`] it equals
    /// [`CropWindow::write_scaled`] and draws nothing.
    ///
    /// Panics when `out.len() != window.size²` or the window leaves the face.
    pub fn write_scaled(&self, image: &FaceImage, window: &CropWindow, rng: &mut impl Rng, out: &mut [f32]) {
        let degrees = match self.max_rotation_deg {
            0 => 0.0,
            m => rng.random_range(-(m as f32)..=m as f32),
        };
        let zoom = match self.max_zoom_pct {
            0 => 1.0,
            p => 1.0 + rng.random_range(-(p as f32)..=p as f32) / 100.0,
        };
        if degrees == 0.0 && zoom == 1.0 {
            window.write_scaled(image, out);
        } else {
            write_transformed(image, window, degrees.to_radians(), zoom, out);
        }
        if self.erase_pct > 0 && rng.random_range(0..100) < self.erase_pct {
            erase_random_rectangle(window.size, rng, out);
        }
    }
}

/// The crop of `window`, turned by `radians` (clockwise on screen for a positive angle) and
/// zoomed by `zoom` about its centre, then mirrored when the window says so: output pixel
/// `(x, y)` at offset `(u, v)` from the centre (`u` negated for a mirrored window) reads the face
/// at `centre + (cos·u + sin·v, −sin·u + cos·v) / zoom`, bilinearly, with coordinates clamped to
/// the face (edges replicated).
fn write_transformed(image: &FaceImage, window: &CropWindow, radians: f32, zoom: f32, out: &mut [f32]) {
    let size = window.size;
    assert!(window.top + size <= FACE_SIDE && window.left + size <= FACE_SIDE, "{window:?} leaves the face");
    assert_eq!(out.len(), size * size, "output buffer size");
    let half = (size as f32 - 1.0) / 2.0;
    let (cy, cx) = (window.top as f32 + half, window.left as f32 + half);
    let (sin, cos) = radians.sin_cos();
    let px = image.pixels();
    let at = |y: usize, x: usize| f32::from(px[y * FACE_SIDE + x]);
    let last = (FACE_SIDE - 1) as f32;
    for (r, out_row) in out.chunks_exact_mut(size).enumerate() {
        for (c, o) in out_row.iter_mut().enumerate() {
            // Offsets from the centre in the output; a mirrored crop reads columns right to left.
            let u = if window.mirrored { half - c as f32 } else { c as f32 - half } / zoom;
            let v = (r as f32 - half) / zoom;
            let x = (cx + cos * u + sin * v).clamp(0.0, last);
            let y = (cy - sin * u + cos * v).clamp(0.0, last);
            let (x0, y0) = (x.floor() as usize, y.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(FACE_SIDE - 1), (y0 + 1).min(FACE_SIDE - 1));
            let (fx, fy) = (x - x0 as f32, y - y0 as f32);
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            *o = (top * (1.0 - fy) + bottom * fy) / 255.0;
        }
    }
}

/// torchvision's `RandomErasing(value=0)` on one `size × size` crop: up to ten draws of a
/// rectangle with area in [`ERASE_AREA`] of the crop and log-uniform aspect in [`ERASE_RATIO`];
/// the first that fits is set to 0, none when no draw fits.
fn erase_random_rectangle(size: usize, rng: &mut impl Rng, out: &mut [f32]) {
    let area = (size * size) as f32;
    let (log_lo, log_hi) = (ERASE_RATIO.0.ln(), ERASE_RATIO.1.ln());
    for _ in 0..ERASE_TRIES {
        let target = area * rng.random_range(ERASE_AREA.0..=ERASE_AREA.1);
        let ratio = rng.random_range(log_lo..=log_hi).exp();
        let h = (target * ratio).sqrt().round() as usize;
        let w = (target / ratio).sqrt().round() as usize;
        if h == 0 || w == 0 || h >= size || w >= size {
            continue;
        }
        let top = rng.random_range(0..=size - h);
        let left = rng.random_range(0..=size - w);
        for row in out.chunks_exact_mut(size).skip(top).take(h) {
            row[left..left + w].fill(0.0);
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    /// Pixel (x, y) = 1 + x + 2y: no zeros, so erased pixels stand out.
    fn ramp() -> FaceImage {
        crate::view::tests::ramp_from(1)
    }

    fn plain(w: &CropWindow) -> Vec<f32> {
        let mut out = vec![0.0; w.size * w.size];
        w.write_scaled(&ramp(), &mut out);
        out
    }

    fn transformed(w: &CropWindow, degrees: f32, zoom: f32) -> Vec<f32> {
        let mut out = vec![0.0; w.size * w.size];
        write_transformed(&ramp(), w, degrees.to_radians(), zoom, &mut out);
        out
    }

    #[test]
    fn identity_transform_equals_the_plain_crop_bit_for_bit() {
        for (top, left, size, mirrored) in [(0, 0, 44, false), (4, 1, 44, true), (2, 2, 44, false), (3, 0, 41, true)] {
            let w = CropWindow { top, left, size, mirrored };
            assert_eq!(transformed(&w, 0.0, 1.0), plain(&w), "{w:?}");
        }
    }

    #[test]
    fn quarter_turn_and_zoom_by_hand() {
        let w = CropWindow { top: 2, left: 2, size: 44, mirrored: false };
        let t = transformed(&w, 90.0, 1.0);
        let p = plain(&w);
        // A +90° turn about the centre: output (x, y) reads crop pixel (c + (y − c), c − (x − c)),
        // with c = 21.5 in crop coordinates.
        for (y, x) in [(0usize, 0usize), (10, 30), (43, 5), (21, 21)] {
            let (sx, sy) = (y, 43 - x);
            let expected = p[sy * 44 + sx];
            assert!((t[y * 44 + x] - expected).abs() < 1e-5, "({x},{y}): {} vs {expected}", t[y * 44 + x]);
        }
        // Zoom 2 about the centre: output (x, y) reads crop coordinates c + (x − c)/2; the ramp
        // is linear inside the face, so bilinear sampling gives 1 + X + 2Y exactly there.
        let z = transformed(&w, 0.0, 2.0);
        for (y, x) in [(0usize, 0usize), (43, 43), (7, 30)] {
            let fx = 2.0 + 21.5 + (x as f32 - 21.5) / 2.0;
            let fy = 2.0 + 21.5 + (y as f32 - 21.5) / 2.0;
            let expected = (1.0 + fx + 2.0 * fy) / 255.0;
            assert!((z[y * 44 + x] - expected).abs() < 1e-5, "({x},{y}): {} vs {expected}", z[y * 44 + x]);
        }
        // Zoom below 1 reaches past the face: edges replicated, values stay those of the face.
        let out = transformed(&CropWindow { top: 0, left: 0, size: 44, mirrored: true }, 7.0, 0.8);
        let (lo, hi) = (1.0 / 255.0, (1.0 + 47.0 + 94.0) / 255.0);
        assert!(out.iter().all(|&v| (lo - 1e-6..=hi + 1e-6).contains(&v)), "inside the face's range");
    }

    #[test]
    fn mirrored_crop_is_the_mirror_image_of_the_unmirrored_one() {
        let a = CropWindow { top: 1, left: 3, size: 44, mirrored: false };
        let t = transformed(&a, 8.0, 1.1);
        let m = transformed(&CropWindow { mirrored: true, ..a }, 8.0, 1.1);
        assert_ne!(t, m);
        for y in 0..44 {
            for x in 0..44 {
                assert_eq!(t[y * 44 + x], m[y * 44 + 43 - x], "({x},{y})");
            }
        }
    }

    #[test]
    fn erasing_blacks_out_one_rectangle_of_the_documented_size() {
        let w = CropWindow::center(44);
        let all = Augmentation { erase_pct: 100, ..Augmentation::NONE };
        let mut sizes = Vec::new();
        for seed in 0..200 {
            let mut out = vec![0.0; 44 * 44];
            all.write_scaled(&ramp(), &w, &mut ChaCha8Rng::seed_from_u64(seed), &mut out);
            let zeros: Vec<(usize, usize)> =
                (0..44 * 44).filter(|&i| out[i] == 0.0).map(|i| (i / 44, i % 44)).collect();
            // Untouched pixels are the plain crop's.
            let p = plain(&w);
            assert!(out.iter().zip(&p).all(|(&o, &q)| o == 0.0 || o == q), "seed {seed}");
            if zeros.is_empty() {
                continue; // no draw fitted: allowed, as in torchvision
            }
            let (r0, r1) = (zeros.iter().map(|z| z.0).min().unwrap(), zeros.iter().map(|z| z.0).max().unwrap());
            let (c0, c1) = (zeros.iter().map(|z| z.1).min().unwrap(), zeros.iter().map(|z| z.1).max().unwrap());
            let (h, wd) = (r1 - r0 + 1, c1 - c0 + 1);
            assert_eq!(zeros.len(), h * wd, "one filled rectangle, seed {seed}");
            let share = (h * wd) as f32 / (44.0 * 44.0);
            // Rounding h and w moves the area a little past the drawn share.
            assert!((0.01..=0.40).contains(&share), "share {share}, seed {seed}");
            let aspect = h as f32 / wd as f32;
            assert!((0.2..=5.0).contains(&aspect), "aspect {aspect}, seed {seed}");
            sizes.push(h * wd);
        }
        assert!(sizes.len() > 150, "most draws fit: {}", sizes.len());
        assert!(sizes.iter().min() < Some(&100) && sizes.iter().max() > Some(&450), "areas spread: {sizes:?}");
        let never = Augmentation { erase_pct: 0, ..all };
        let mut out = vec![0.0; 44 * 44];
        never.write_scaled(&ramp(), &w, &mut ChaCha8Rng::seed_from_u64(1), &mut out);
        assert_eq!(out, plain(&w));
    }

    #[test]
    fn half_the_crops_are_erased_with_strong_and_drawn_angles_cover_the_range() {
        let w = CropWindow::center(44);
        let mut erased = 0;
        let mut changed = 0;
        for seed in 0..400 {
            let mut out = vec![0.0; 44 * 44];
            Augmentation::STRONG.write_scaled(&ramp(), &w, &mut ChaCha8Rng::seed_from_u64(seed), &mut out);
            erased += usize::from(out.contains(&0.0));
            changed += usize::from(out != plain(&w));
        }
        assert!((160..=240).contains(&erased), "erased {erased} of 400");
        assert_eq!(changed, 400, "every crop is rotated or zoomed");
    }

    #[test]
    fn none_draws_nothing_and_equals_the_plain_crop() {
        let w = CropWindow { top: 3, left: 1, size: 44, mirrored: true };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut out = vec![0.0; 44 * 44];
        Augmentation::NONE.write_scaled(&ramp(), &w, &mut rng, &mut out);
        assert_eq!(out, plain(&w));
        let next: u64 = rng.random();
        assert_eq!(next, ChaCha8Rng::seed_from_u64(9).random::<u64>(), "no draw taken");
    }

    #[test]
    fn check_and_names() {
        assert_eq!(Augmentation::from_name("strong"), Ok(Augmentation::STRONG));
        assert_eq!(Augmentation::from_name("none"), Ok(Augmentation::NONE));
        assert!(Augmentation::from_name("heavy").unwrap_err().contains("heavy"));
        assert!(Augmentation::STRONG.check().is_ok());
        let e = Augmentation { max_zoom_pct: 100, ..Augmentation::NONE }.check().unwrap_err();
        assert!(e.contains("100"), "{e}");
        assert!(Augmentation { max_rotation_deg: 181, ..Augmentation::NONE }.check().is_err());
        assert!(Augmentation { erase_pct: 101, ..Augmentation::NONE }.check().is_err());
        assert!(Augmentation::default().is_none() && !Augmentation::STRONG.is_none());
    }
}
