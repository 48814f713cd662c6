//! The HOG features of faces as a differentiable function of their pixels, so that an attack can
//! follow the gradient of the CNN + landmarks + HOG model through its HOG input too.
//!
//! scikit-image's HOG (what [`fer_features`] computes exactly) is, per window: central-difference
//! gradients `g` (one component zeroed on the window's border), magnitudes `‖g‖`, each pixel's
//! magnitude added to one orientation bin of its cell and divided by the cell's area, then L2-Hys
//! per block. The binning is piecewise constant in the pixels; everything else is differentiable
//! almost everywhere. [`face_hog_tensor`] takes the bins of the nearest 8-bit face from
//! [`fer_features::window_orientation_bins`] and computes the rest with tensor operations, so on
//! 8-bit faces it equals [`fer_features::sliding_hog`] / [`fer_features::whole_hog`] up to f32
//! rounding, and its gradient is the HOG's own wherever no pixel sits on a bin boundary.

use burn::prelude::*;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{DType, TensorData};
use fer_dataset::{FACE_SIDE, FaceImage};
use fer_features::{FeatureSet, HogWindow, sliding_windows, window_orientation_bins};

/// Added to `‖g‖²` under the square root (and its root taken off again): the magnitude stays
/// exactly 0 where the gradient is 0 (flat areas), and its derivative there is 0, not NaN.
const MAGNITUDE_FLOOR: f32 = 1e-20;
/// scikit-image's L2-Hys ε (added as ε²).
const L2_HYS_EPS: f32 = 1e-5;
/// L2-Hys's clip.
const L2_HYS_CLIP: f32 = 0.2;

/// The windows whose HOGs the `set` feature vector holds, in its order: the 49 sliding windows,
/// the whole face, or none (landmarks only).
pub fn hog_windows(set: FeatureSet) -> Vec<HogWindow> {
    match set {
        FeatureSet::LandmarksSlidingHog => sliding_windows(),
        FeatureSet::LandmarksWholeHog => vec![HogWindow::WHOLE_FACE],
        FeatureSet::Landmarks => Vec::new(),
    }
}

/// The 8-bit faces nearest to `images` (`[N, 1, 48, 48]` in `[0, 1]`): each pixel rounded to the
/// nearest `k / 255`. Panics on another shape.
pub fn nearest_faces<B: Backend>(images: &Tensor<B, 4>) -> Vec<FaceImage> {
    let [n, channels, rows, columns] = images.dims();
    assert!(
        channels == 1 && rows == FACE_SIDE && columns == FACE_SIDE,
        "faces must be [N, 1, {FACE_SIDE}, {FACE_SIDE}], got {:?}",
        images.dims()
    );
    let values: Vec<f32> = images.clone().into_data().convert::<f32>().to_vec().unwrap_or_default();
    assert_eq!(values.len(), n * FACE_SIDE * FACE_SIDE, "could not read the faces' pixels");
    values
        .chunks_exact(FACE_SIDE * FACE_SIDE)
        .map(|pixels| {
            let eight_bit: Vec<u8> = pixels.iter().map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect();
            FaceImage::from_slice(&eight_bit).unwrap_or_else(|| FaceImage::filled(0))
        })
        .collect()
}

/// The HOG values of the `set` feature vector of `images` (`[N, 1, 48, 48]` in `[0, 1]`), as
/// `[N, len]` (2,592 sliding-window or 72 whole-face values, in [`fer_features`]' order),
/// differentiable in `images`. The orientation bins are those of `faces`, the 8-bit faces the
/// HOG is taken at (normally [`nearest_faces`] of `images`); magnitudes, cell averages and L2-Hys
/// are computed from `images` themselves (in 8-bit units, as the exact HOG). Panics for
/// [`FeatureSet::Landmarks`], which holds no HOG, or when `faces` and `images` differ in number.
pub fn face_hog_tensor<B: Backend>(images: Tensor<B, 4>, faces: &[FaceImage], set: FeatureSet) -> Tensor<B, 2> {
    let windows = hog_windows(set);
    assert!(!windows.is_empty(), "the {} feature set holds no HOG", set.name());
    let [n, _, _, _] = images.dims();
    assert_eq!(faces.len(), n, "one 8-bit face per image");
    let (device, dtype) = (images.device(), images.dtype());
    let bins: Vec<Vec<Vec<Option<u8>>>> = faces.iter().map(|face| window_orientation_bins(face, &windows)).collect();
    let pixels = images.mul_scalar(255.0);
    let parts = windows
        .iter()
        .enumerate()
        .map(|(w, window)| {
            let mask = orientation_mask::<B>(bins.iter().map(|face| face[w].as_slice()), window, &device, dtype);
            window_hog(pixels.clone(), window, mask)
        })
        .collect();
    Tensor::cat(parts, 1)
}

/// One-hot orientation masks `[N, orientations, used rows, used columns]` of one window (the
/// pixels of its whole cells only), from each face's bins of that window, as `dtype` (the faces').
fn orientation_mask<'a, B: Backend>(
    bins: impl Iterator<Item = &'a [Option<u8>]>,
    window: &HogWindow,
    device: &B::Device,
    dtype: DType,
) -> Tensor<B, 4> {
    let (cells_r, cells_c) = window.cells();
    let (used_r, used_c) = (cells_r * window.config.pixels_per_cell.0, cells_c * window.config.pixels_per_cell.1);
    let orientations = window.config.orientations;
    let plane = used_r * used_c;
    let mut mask = Vec::new();
    let mut faces = 0;
    for face_bins in bins {
        let start = mask.len();
        mask.resize(start + orientations * plane, 0.0f32);
        for r in 0..used_r {
            for c in 0..used_c {
                if let Some(bin) = face_bins[r * window.columns + c] {
                    mask[start + usize::from(bin) * plane + r * used_c + c] = 1.0;
                }
            }
        }
        faces += 1;
    }
    Tensor::from_data(TensorData::new(mask, [faces, orientations, used_r, used_c]), (device, dtype))
}

/// The HOG of one window of `pixels` (`[N, 1, 48, 48]` in 8-bit units) with the bins `mask`,
/// flattened as scikit-image does (cells row by row, then orientations). Blocks of one cell (the
/// reference's settings).
fn window_hog<B: Backend>(pixels: Tensor<B, 4>, window: &HogWindow, mask: Tensor<B, 4>) -> Tensor<B, 2> {
    assert_eq!(window.config.cells_per_block, (1, 1), "only 1×1-cell blocks (the reference's settings)");
    let [n, orientations, used_r, used_c] = mask.dims();
    let (rows, columns) = (window.rows, window.columns);
    let (device, dtype) = (pixels.device(), pixels.dtype());
    let region = pixels.slice([0..n, 0..1, window.top..window.top + rows, window.left..window.left + columns]);
    // Central differences inside the window; zero on its first/last row (row component) and
    // first/last column (column component), as scikit-image computes a window on its own.
    let zero_row = || Tensor::<B, 4>::zeros([n, 1, 1, columns], (&device, dtype));
    let zero_column = || Tensor::<B, 4>::zeros([n, 1, rows, 1], (&device, dtype));
    let g_row = Tensor::cat(
        vec![
            zero_row(),
            region.clone().slice([0..n, 0..1, 2..rows, 0..columns])
                - region.clone().slice([0..n, 0..1, 0..rows - 2, 0..columns]),
            zero_row(),
        ],
        2,
    );
    let g_col = Tensor::cat(
        vec![
            zero_column(),
            region.clone().slice([0..n, 0..1, 0..rows, 2..columns])
                - region.slice([0..n, 0..1, 0..rows, 0..columns - 2]),
            zero_column(),
        ],
        3,
    );
    let squared = (g_row.clone() * g_row + g_col.clone() * g_col).slice([0..n, 0..1, 0..used_r, 0..used_c]);
    let magnitude = squared.add_scalar(MAGNITUDE_FLOOR).sqrt().sub_scalar(MAGNITUDE_FLOOR.sqrt());
    let votes = mask * magnitude.expand([n, orientations, used_r, used_c]);
    let cell = [window.config.pixels_per_cell.0, window.config.pixels_per_cell.1];
    let histogram = avg_pool2d(votes, cell, cell, [0, 0], true, false);
    let normalised = l2_hys(histogram);
    let [_, _, cells_r, cells_c] = normalised.dims();
    normalised.permute([0, 2, 3, 1]).reshape([n, cells_r * cells_c * orientations])
}

/// L2-Hys over the orientations (dim 1) of each one-cell block.
fn l2_hys<B: Backend>(histogram: Tensor<B, 4>) -> Tensor<B, 4> {
    let norm = |v: &Tensor<B, 4>| (v.clone() * v.clone()).sum_dim(1).add_scalar(L2_HYS_EPS * L2_HYS_EPS).sqrt();
    let first = norm(&histogram);
    let clipped = (histogram / first).clamp_max(L2_HYS_CLIP);
    let second = norm(&clipped);
    clipped / second
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use fer_features::{sliding_hog, whole_hog};

    /// Noise, a checkerboard (full-range gradients), a ramp and a flat face with a bright square.
    fn faces() -> Vec<FaceImage> {
        let mut state = 0x9E3779B97F4A7C15u64;
        let mut noise = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        let face = |f: &mut dyn FnMut(usize, usize) -> u8| {
            FaceImage::from_slice(
                &(0..FACE_SIDE * FACE_SIDE).map(|i| f(i / FACE_SIDE, i % FACE_SIDE)).collect::<Vec<_>>(),
            )
            .expect("48×48")
        };
        vec![
            face(&mut |_, _| noise()),
            face(&mut |r, c| if (r + c) % 2 == 0 { 0 } else { 255 }),
            face(&mut |r, c| (r * 3 + c * 2) as u8),
            face(&mut |r, c| if (10..30).contains(&r) && (5..20).contains(&c) { 220 } else { 40 }),
        ]
    }

    /// The faces in `[0, 1]` as `dtype`, whatever the device's default float type (tests of f32 and
    /// f64 backends share the ndarray device, and its settings, in one process).
    fn to_tensor<B: Backend>(faces: &[FaceImage], device: &B::Device, dtype: DType) -> Tensor<B, 4> {
        let values: Vec<f64> = faces.iter().flat_map(|f| f.pixels().iter().map(|&p| f64::from(p) / 255.0)).collect();
        Tensor::from_data(TensorData::new(values, [faces.len(), 1, FACE_SIDE, FACE_SIDE]), (device, dtype))
    }

    #[test]
    fn on_eight_bit_faces_it_equals_the_exact_hog() {
        let device = Default::default();
        let faces = faces();
        let images = to_tensor::<NdArray>(&faces, &device, DType::F32);
        assert_eq!(nearest_faces(&images), faces);
        for (set, exact) in [
            (FeatureSet::LandmarksSlidingHog, sliding_hog as fn(&FaceImage) -> Vec<f64>),
            (FeatureSet::LandmarksWholeHog, whole_hog),
        ] {
            let hog = face_hog_tensor(images.clone(), &faces, set);
            assert_eq!(hog.dims(), [faces.len(), set.len() - fer_features::LANDMARKS_LEN]);
            let values: Vec<f32> = hog.into_data().convert::<f32>().to_vec().expect("f32");
            for (k, face) in faces.iter().enumerate() {
                let expected = exact(face);
                let got = &values[k * expected.len()..(k + 1) * expected.len()];
                let worst = expected.iter().zip(got).map(|(e, g)| (e - f64::from(*g)).abs()).fold(0.0, f64::max);
                assert!(worst < 2e-6, "{set:?}, face {k}: max |difference| {worst}");
            }
        }
    }

    /// The gradient autodiff gives equals central finite differences of `Σ w·hog(x)` along single
    /// pixels, at points off the 8-bit grid (within a quarter level, so the bins stay those of the
    /// nearest 8-bit face). f64 for exact enough differences.
    #[test]
    fn its_gradient_is_the_finite_difference_one() {
        type B = Autodiff<NdArray<f64>>;
        let device = Default::default();
        let faces = faces();
        let f64 = (&device, DType::F64);
        let base = to_tensor::<B>(&faces, &device, DType::F64);
        // A fixed sub-level offset pattern, so the point lies off the grid but rounds to `faces`.
        let offsets: Vec<f32> =
            (0..faces.len() * FACE_SIDE * FACE_SIDE).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.02 / 255.0).collect();
        let x = (base + Tensor::from_data(TensorData::new(offsets, [faces.len(), 1, FACE_SIDE, FACE_SIDE]), f64))
            .clamp(0.0, 1.0);
        assert_eq!(x.dtype(), DType::F64);
        for set in [FeatureSet::LandmarksSlidingHog, FeatureSet::LandmarksWholeHog] {
            let len = set.len() - fer_features::LANDMARKS_LEN;
            let weights: Vec<f32> = (0..faces.len() * len).map(|i| ((i * 7919 % 13) as f32 - 6.0) / 6.0).collect();
            let weights = Tensor::<B, 2>::from_data(TensorData::new(weights, [faces.len(), len]), f64);
            let objective = |images: Tensor<B, 4>| (face_hog_tensor(images, &faces, set) * weights.clone()).sum();
            let input = x.clone().detach().require_grad();
            let gradient = input.grad(&objective(input.clone()).backward()).expect("a gradient");
            let gradient: Vec<f64> = gradient.into_data().convert::<f64>().to_vec().expect("f64");
            let h = 0.05 / 255.0;
            // Pixels in the noise face (interior, border, corner) and on the square's edge.
            for &(face, r, c) in
                &[(0usize, 20usize, 20usize), (0, 0, 7), (0, 47, 47), (0, 23, 24), (3, 10, 5), (3, 29, 19), (2, 8, 8)]
            {
                let index = face * FACE_SIDE * FACE_SIDE + r * FACE_SIDE + c;
                let mut bump = vec![0.0f32; faces.len() * FACE_SIDE * FACE_SIDE];
                bump[index] = h;
                let bump =
                    Tensor::<B, 4>::from_data(TensorData::new(bump, [faces.len(), 1, FACE_SIDE, FACE_SIDE]), f64);
                let at = |x: Tensor<B, 4>| -> f64 { objective(x.detach()).into_scalar().elem() };
                let numeric = (at(x.clone() + bump.clone()) - at(x.clone() - bump)) / (2.0 * f64::from(h));
                let analytic = gradient[index];
                assert!(
                    (numeric - analytic).abs() <= 1e-4 * (1.0 + analytic.abs()),
                    "{set:?}, face {face} pixel ({r}, {c}): autodiff {analytic}, finite difference {numeric}"
                );
            }
            assert!(gradient.iter().any(|g| g.abs() > 1e-3), "{set:?}: the HOG gradient is not all zero");
        }
    }
}
