//! Histograms of oriented gradients, computed exactly as `skimage.feature.hog` (scikit-image
//! ≥ 0.19 defaults: `block_norm="L2-Hys"`, `transform_sqrt=False`, gray input).
//!
//! Every step follows scikit-image's arithmetic (tested against its output on fixture images, max
//! difference 1.1e-16): gradients by central differences in f64 with zero gradient on the
//! first/last row and column; magnitude `hypot(gx, gy)`; orientation
//! `rad2deg(atan2(gy, gx)) mod 180` with NumPy's `mod` (which can round up to exactly 180, a value
//! no bin takes); hard binning into `[180·i/n, 180·(i+1)/n)`; per-cell sums accumulated in f32 and
//! divided by the cell area in f32 (the Cython kernel's types); L2-Hys with ε = 1e-5 added as ε²
//! and clipping at 0.2; sums over a block in NumPy's pairwise order.
//!
//! Where the last bit differs: `atan2` and `hypot` here are the C library's; NumPy on a CPU with
//! AVX-512 dispatches them to SIMD versions that differ by an ulp on some pixels. On the fixture
//! (made on such a CPU) 94.5 % of the values are bit-identical and the rest differ by ≤ 1.1e-16;
//! no pixel changed orientation bin.
//!
//! Speed without changing a bit: the 48×48 face HOGs ([`sliding_hog`], [`whole_hog`],
//! [`face_hogs`]) compute the face's gradients once for all 49 windows and the whole image (a
//! window differs only on its own border, where one component is zeroed), and look up each pixel's
//! vote (bin and magnitude) in a table of all 511² integer gradients of 8-bit images, filled once
//! by the same code. Tests check both against the general [`hog`] bit for bit.

use fer_dataset::{FACE_SIDE, FaceImage};

/// HOG settings (the block normalisation is always L2-Hys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HogConfig {
    /// Orientation bins over [0°, 180°).
    pub orientations: usize,
    /// Cell size in pixels, `(rows, columns)`.
    pub pixels_per_cell: (usize, usize),
    /// Block size in cells, `(rows, columns)`.
    pub cells_per_block: (usize, usize),
}

impl HogConfig {
    /// The reference project's per-window setting: 8 orientations, 8×8 cells, 1×1 blocks.
    pub const SLIDING_WINDOW: HogConfig =
        HogConfig { orientations: 8, pixels_per_cell: (8, 8), cells_per_block: (1, 1) };
    /// The reference project's whole-image setting: 8 orientations, 16×16 cells, 1×1 blocks.
    pub const WHOLE_IMAGE: HogConfig =
        HogConfig { orientations: 8, pixels_per_cell: (16, 16), cells_per_block: (1, 1) };

    /// Length of the descriptor of a `rows × columns` image, or the error `hog` would give.
    pub fn descriptor_len(&self, rows: usize, columns: usize) -> Result<usize, HogError> {
        self.check()?;
        let (cells_r, cells_c) = (rows / self.pixels_per_cell.0, columns / self.pixels_per_cell.1);
        let (b_r, b_c) = self.cells_per_block;
        if cells_r < b_r || cells_c < b_c {
            return Err(HogError::TooSmall {
                rows,
                columns,
                min_rows: b_r * self.pixels_per_cell.0,
                min_columns: b_c * self.pixels_per_cell.1,
            });
        }
        Ok((cells_r - b_r + 1) * (cells_c - b_c + 1) * b_r * b_c * self.orientations)
    }

    fn check(&self) -> Result<(), HogError> {
        let zero = self.orientations == 0
            || self.pixels_per_cell.0 == 0
            || self.pixels_per_cell.1 == 0
            || self.cells_per_block.0 == 0
            || self.cells_per_block.1 == 0;
        if zero { Err(HogError::Config(*self)) } else { Ok(()) }
    }
}

/// Why a HOG cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HogError {
    /// The image holds less than one block (scikit-image raises `ValueError` here).
    #[error("a {rows}×{columns} image is too small for HOG: at least {min_rows}×{min_columns} pixels are needed")]
    TooSmall {
        /// Image rows.
        rows: usize,
        /// Image columns.
        columns: usize,
        /// Rows of one block.
        min_rows: usize,
        /// Columns of one block.
        min_columns: usize,
    },
    /// A zero in the settings.
    #[error("HOG settings need positive orientations, cell and block sizes: {0:?}")]
    Config(HogConfig),
    /// Pixel count differs from `rows × columns`.
    #[error("{pixels} pixels do not make a {rows}×{columns} image")]
    Shape {
        /// Pixels given.
        pixels: usize,
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        columns: usize,
    },
}

/// HOG of a `rows × columns` gray image (row-major `pixels`), flattened as scikit-image's
/// `feature_vector=True`: blocks row by row, then cells in the block, then orientations.
pub fn hog(pixels: &[u8], rows: usize, columns: usize, config: &HogConfig) -> Result<Vec<f64>, HogError> {
    if pixels.len() != rows * columns {
        return Err(HogError::Shape { pixels: pixels.len(), rows, columns });
    }
    config.descriptor_len(rows, columns)?;
    let g = Gradients::new(pixels, rows, columns);
    let votes: Vec<Vote> = g.g_row.iter().zip(&g.g_col).map(|(&r, &c)| Vote::new(r, c, config.orientations)).collect();
    Ok(normalised_blocks(&cell_histograms(&votes, rows, columns, config), rows, columns, config))
}

/// Central-difference gradients of an image, zero on its first/last row (rows) and column
/// (columns).
struct Gradients {
    g_row: Vec<f64>,
    g_col: Vec<f64>,
}

impl Gradients {
    fn new(pixels: &[u8], rows: usize, columns: usize) -> Gradients {
        let at = |r: usize, c: usize| f64::from(pixels[r * columns + c]);
        let n = rows * columns;
        let mut g = Gradients { g_row: vec![0.0; n], g_col: vec![0.0; n] };
        for r in 0..rows {
            for c in 0..columns {
                let i = r * columns + c;
                g.g_row[i] = if r == 0 || r + 1 == rows { 0.0 } else { at(r + 1, c) - at(r - 1, c) };
                g.g_col[i] = if c == 0 || c + 1 == columns { 0.0 } else { at(r, c + 1) - at(r, c - 1) };
            }
        }
        g
    }
}

/// What one pixel adds to its cell: its gradient magnitude, into one orientation bin.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Vote {
    magnitude: f64,
    /// The bin, or [`Vote::NO_BIN`] when the orientation rounded up to 180° (no bin takes it).
    bin: usize,
}

impl Vote {
    const NO_BIN: usize = usize::MAX;

    /// scikit-image's magnitude `hypot(gx, gy)` and orientation `rad2deg(atan2(gy, gx)) mod 180`,
    /// binned by the Cython kernel's own comparisons: bin `i` takes `180·i/n ≤ o < 180·(i+1)/n`.
    fn new(g_row: f64, g_col: f64, orientations: usize) -> Vote {
        let magnitude = g_col.hypot(g_row);
        let o = numpy_mod(g_row.atan2(g_col).to_degrees(), 180.0);
        let n = orientations;
        let per_bin = 180.0 / n as f64;
        // The division only guesses the bin; the kernel's comparisons decide.
        let mut bin = ((o / per_bin) as usize).min(n - 1);
        if bin > 0 && o < per_bin * bin as f64 {
            bin -= 1;
        } else if o >= per_bin * (bin + 1) as f64 {
            bin += 1;
        }
        let takes = bin < n && o < per_bin * (bin + 1) as f64 && o >= per_bin * bin as f64;
        Vote { magnitude, bin: if takes { bin } else { Vote::NO_BIN } }
    }
}

/// Every vote an 8-bit image can cast with 8 orientations, looked up instead of computed.
///
/// A gradient component of 8-bit pixels is an integer in [-255, 255], so the 511² possible votes
/// are computed once by [`Vote::new`] (the bin of each signed pair, 256 KiB; the magnitude of each
/// absolute pair, 512 KiB: `hypot` takes absolute values first). A test compares every entry with
/// `Vote::new` bit for bit.
struct VoteTable {
    bins: Vec<u8>,
    magnitudes: Vec<f64>,
}

impl VoteTable {
    const ORIENTATIONS: usize = 8;
    const SIDE: usize = 511;

    fn eight_orientations() -> &'static VoteTable {
        static TABLE: std::sync::OnceLock<VoteTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            let component = |i: usize| i as f64 - 255.0;
            let bins = (0..Self::SIDE * Self::SIDE)
                .map(|i| {
                    let bin = Vote::new(component(i / Self::SIDE), component(i % Self::SIDE), Self::ORIENTATIONS).bin;
                    u8::try_from(bin).unwrap_or(u8::MAX)
                })
                .collect();
            let magnitudes =
                (0..256 * 256).map(|i| Vote::new((i / 256) as f64, (i % 256) as f64, 1).magnitude).collect();
            VoteTable { bins, magnitudes }
        })
    }

    /// The vote of an integer gradient (components in [-255, 255]).
    fn vote(&self, g_row: f64, g_col: f64) -> Vote {
        let (r, c) = (g_row as i32, g_col as i32);
        let bin = self.bins[(r + 255) as usize * Self::SIDE + (c + 255) as usize];
        Vote {
            magnitude: self.magnitudes[r.unsigned_abs() as usize * 256 + c.unsigned_abs() as usize],
            bin: if bin == u8::MAX { Vote::NO_BIN } else { usize::from(bin) },
        }
    }
}

/// Per-cell orientation histograms, `[cells_r][cells_c][orientations]` flattened, of an image
/// whose pixels vote `votes` (row-major).
fn cell_histograms(votes: &[Vote], rows: usize, columns: usize, config: &HogConfig) -> Vec<f64> {
    let (cell_r, cell_c) = config.pixels_per_cell;
    let (cells_r, cells_c) = (rows / cell_r, columns / cell_c);
    let n = config.orientations;
    let area = (cell_r * cell_c) as f32;
    let mut histogram = vec![0.0f64; cells_r * cells_c * n];
    let mut totals = vec![0.0f32; n];
    for cr in 0..cells_r {
        for cc in 0..cells_c {
            totals.iter_mut().for_each(|t| *t = 0.0);
            // Each pixel adds to its one bin in row-major order, as the kernel's per-bin scans do
            // (the order of additions into a bin is the same), in f32 as the kernel's `total`.
            for r in cr * cell_r..(cr + 1) * cell_r {
                for vote in &votes[r * columns + cc * cell_c..r * columns + (cc + 1) * cell_c] {
                    if let Some(total) = totals.get_mut(vote.bin) {
                        *total = (f64::from(*total) + vote.magnitude) as f32;
                    }
                }
            }
            for (bin, total) in totals.iter().enumerate() {
                histogram[(cr * cells_c + cc) * n + bin] = f64::from(total / area);
            }
        }
    }
    histogram
}

/// L2-Hys-normalised blocks of cell histograms, flattened.
fn normalised_blocks(histogram: &[f64], rows: usize, columns: usize, config: &HogConfig) -> Vec<f64> {
    let (cells_r, cells_c, n) =
        (rows / config.pixels_per_cell.0, columns / config.pixels_per_cell.1, config.orientations);
    let (b_r, b_c) = config.cells_per_block;
    let (blocks_r, blocks_c) = (cells_r - b_r + 1, cells_c - b_c + 1);
    let mut out = Vec::with_capacity(blocks_r * blocks_c * b_r * b_c * n);
    let mut block = Vec::with_capacity(b_r * b_c * n);
    for r in 0..blocks_r {
        for c in 0..blocks_c {
            block.clear();
            for br in 0..b_r {
                let start = ((r + br) * cells_c + c) * n;
                block.extend_from_slice(&histogram[start..start + b_c * n]);
            }
            l2_hys(&mut block);
            out.extend_from_slice(&block);
        }
    }
    out
}

/// NumPy's float `a % b` (`npy_divmod`): the sign of `b`, and it may round up to `b` itself.
fn numpy_mod(a: f64, b: f64) -> f64 {
    let m = a % b;
    if m == 0.0 {
        0.0f64.copysign(b)
    } else if (b < 0.0) != (m < 0.0) {
        m + b
    } else {
        m
    }
}

/// L2-Hys in place: `v / sqrt(Σv² + ε²)`, clip at 0.2, again `v / sqrt(Σv² + ε²)`; ε = 1e-5.
fn l2_hys(block: &mut [f64]) {
    const EPS: f64 = 1e-5;
    let norm = |v: &[f64]| (pairwise_sum(&v.iter().map(|x| x * x).collect::<Vec<_>>()) + EPS * EPS).sqrt();
    let first = norm(block);
    for v in block.iter_mut() {
        *v = (*v / first).min(0.2);
    }
    let second = norm(block);
    for v in block.iter_mut() {
        *v /= second;
    }
}

/// NumPy's pairwise summation (`pairwise_sum` in its loops): plain below 8 values, 8 interleaved
/// partial sums up to 128, halves above.
fn pairwise_sum(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 8 {
        v.iter().fold(0.0, |s, x| s + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&v[..8]);
        let whole = n - n % 8;
        for chunk in v[8..whole].chunks_exact(8) {
            for (acc, x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &v[whole..] {
            res += x;
        }
        res
    } else {
        let half = (n / 2) - (n / 2) % 8;
        pairwise_sum(&v[..half]) + pairwise_sum(&v[half..])
    }
}

/// Stride of the reference's sliding windows.
pub const WINDOW_STEP: usize = 6;
/// Side of the reference's sliding windows (clipped at the border).
pub const WINDOW_SIDE: usize = 24;
/// Length of [`sliding_hog`]: 18 × 18 cells × 8 orientations.
pub const SLIDING_HOG_LEN: usize = 2592;
/// Length of [`whole_hog`]: 3 × 3 cells × 8 orientations.
pub const WHOLE_HOG_LEN: usize = 72;

/// The reference's sliding-window HOG of a 48×48 face: for `y` and then `x` in 0, 6, …, 42, HOG
/// ([`HogConfig::SLIDING_WINDOW`]) of `face[y..y+24, x..x+24]` clipped at the border, windows too
/// small for one cell (a 6-pixel side) skipped as scikit-image rejects them, all concatenated:
/// 2,592 values.
pub fn sliding_hog(face: &FaceImage) -> Vec<f64> {
    FaceVotes::new(face).sliding()
}

/// The reference's whole-image HOG of a 48×48 face ([`HogConfig::WHOLE_IMAGE`]): 72 values.
pub fn whole_hog(face: &FaceImage) -> Vec<f64> {
    FaceVotes::new(face).whole()
}

/// [`sliding_hog`] and [`whole_hog`] of one face, computing its gradients once (what
/// [`crate::FaceFeatures::compute`] uses; equal to the two calls).
pub fn face_hogs(face: &FaceImage) -> (Vec<f64>, Vec<f64>) {
    let votes = FaceVotes::new(face);
    (votes.sliding(), votes.whole())
}

/// One region of a 48×48 face that gets its own HOG: a window of [`sliding_hog`] or the whole face
/// of [`whole_hog`]. A differentiable HOG (fer-models' `face_hog_tensor`) walks the same windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HogWindow {
    /// First row in the face.
    pub top: usize,
    /// First column in the face.
    pub left: usize,
    /// Rows (clipped at the face's border).
    pub rows: usize,
    /// Columns (clipped at the face's border).
    pub columns: usize,
    /// The HOG setting of this window.
    pub config: HogConfig,
}

impl HogWindow {
    /// The whole face, as [`whole_hog`] reads it.
    pub const WHOLE_FACE: HogWindow =
        HogWindow { top: 0, left: 0, rows: FACE_SIDE, columns: FACE_SIDE, config: HogConfig::WHOLE_IMAGE };

    /// Cells `(rows, columns)` of the window (pixels past the last whole cell are not read).
    pub fn cells(&self) -> (usize, usize) {
        (self.rows / self.config.pixels_per_cell.0, self.columns / self.config.pixels_per_cell.1)
    }
}

/// The windows of [`sliding_hog`] in its output order: for `y` and then `x` in 0, 6, …, 42,
/// `face[y..y+24, x..x+24]` clipped at the border, without the windows too small for one cell.
/// 49 windows, 324 cells.
pub fn sliding_windows() -> Vec<HogWindow> {
    let config = HogConfig::SLIDING_WINDOW;
    let mut windows = Vec::with_capacity(49);
    for top in (0..FACE_SIDE).step_by(WINDOW_STEP) {
        for left in (0..FACE_SIDE).step_by(WINDOW_STEP) {
            let (rows, columns) = ((FACE_SIDE - top).min(WINDOW_SIDE), (FACE_SIDE - left).min(WINDOW_SIDE));
            // A window with a 6-pixel side holds no 8-pixel cell: skipped, as the reference does.
            if config.descriptor_len(rows, columns).is_ok() {
                windows.push(HogWindow { top, left, rows, columns, config });
            }
        }
    }
    windows
}

/// The orientation bin each pixel of each window votes into, for `windows` of `face`
/// (row-major per window; `None` where no bin takes the pixel, as for an orientation that rounds up
/// to 180°). These are the bins of [`sliding_hog`] and [`whole_hog`] exactly; with the pixels'
/// gradient magnitudes they give the HOG, so a HOG computed elsewhere (on a GPU, or
/// differentiably) can hold the binning fixed, as it is piecewise constant in the pixels.
pub fn window_orientation_bins(face: &FaceImage, windows: &[HogWindow]) -> Vec<Vec<Option<u8>>> {
    let votes = FaceVotes::new(face);
    let mut window = Vec::with_capacity(FACE_SIDE * FACE_SIDE);
    windows
        .iter()
        .map(|w| {
            votes.window_votes(w, &mut window);
            window
                .iter()
                .map(|v| u8::try_from(v.bin).ok().filter(|&b| usize::from(b) < w.config.orientations))
                .collect()
        })
        .collect()
}

/// Every vote a pixel of a 48×48 face can cast, by where it lies in a window.
///
/// A window's gradient equals the face's except on the window's own border, where scikit-image
/// zeroes one component: the row component on its first/last row, the column component on its
/// first/last column, both in its corners. Both HOG settings have 8 orientations, so the votes
/// serve the windows and the whole face alike.
struct FaceVotes {
    /// The face's own gradient (also what the whole-face HOG sees, its border included).
    inner: Vec<Vote>,
    /// Row component zeroed.
    row_edge: Vec<Vote>,
    /// Column component zeroed.
    column_edge: Vec<Vote>,
}

impl FaceVotes {
    fn new(face: &FaceImage) -> FaceVotes {
        const N: usize = HogConfig::SLIDING_WINDOW.orientations;
        const _: () = assert!(HogConfig::WHOLE_IMAGE.orientations == N);
        let g = Gradients::new(face.pixels(), FACE_SIDE, FACE_SIDE);
        let table = VoteTable::eight_orientations();
        let mut votes = FaceVotes { inner: Vec::new(), row_edge: Vec::new(), column_edge: Vec::new() };
        for (&g_row, &g_col) in g.g_row.iter().zip(&g.g_col) {
            votes.inner.push(table.vote(g_row, g_col));
            votes.row_edge.push(table.vote(0.0, g_col));
            votes.column_edge.push(table.vote(g_row, 0.0));
        }
        votes
    }

    /// The votes of the pixels of `window` (row-major) as scikit-image's HOG of that window alone
    /// sees them: the face's own gradient, with one component zeroed on the window's border
    /// (none for the whole face, whose border is the image's).
    fn window_votes(&self, window: &HogWindow, out: &mut Vec<Vote>) {
        let corner = Vote::new(0.0, 0.0, window.config.orientations);
        let (rows, columns) = (window.rows, window.columns);
        out.clear();
        for r in 0..rows {
            let row_edge = r == 0 || r + 1 == rows;
            for c in 0..columns {
                let i = (window.top + r) * FACE_SIDE + window.left + c;
                out.push(match (row_edge, c == 0 || c + 1 == columns) {
                    (false, false) => self.inner[i],
                    (true, false) => self.row_edge[i],
                    (false, true) => self.column_edge[i],
                    (true, true) => corner,
                });
            }
        }
    }

    fn sliding(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(SLIDING_HOG_LEN);
        let mut votes = Vec::with_capacity(WINDOW_SIDE * WINDOW_SIDE);
        for window in sliding_windows() {
            self.window_votes(&window, &mut votes);
            let histogram = cell_histograms(&votes, window.rows, window.columns, &window.config);
            out.extend(normalised_blocks(&histogram, window.rows, window.columns, &window.config));
        }
        debug_assert_eq!(out.len(), SLIDING_HOG_LEN);
        out
    }

    fn whole(&self) -> Vec<f64> {
        let config = HogConfig::WHOLE_IMAGE;
        normalised_blocks(&cell_histograms(&self.inner, FACE_SIDE, FACE_SIDE, &config), FACE_SIDE, FACE_SIDE, &config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_mod_matches_python() {
        assert_eq!(numpy_mod(-90.0, 180.0), 90.0);
        assert_eq!(numpy_mod(270.0, 180.0), 90.0);
        assert_eq!(numpy_mod(-0.0, 180.0).to_bits(), 0.0f64.to_bits());
        // Python: -1e-15 % 180 == 180.0 (the rounding that puts a pixel in no bin).
        assert_eq!(numpy_mod(-1e-15, 180.0), 180.0);
    }

    #[test]
    fn pairwise_sum_orders_like_numpy() {
        let v: Vec<f64> = (0..8).map(|i| 0.1 * f64::from(i)).collect();
        assert_eq!(
            pairwise_sum(&v),
            ((0.0 + 0.1) + (0.2 + 0.30000000000000004)) + ((0.4 + 0.5) + (0.6000000000000001 + 0.7000000000000001))
        );
        let long: Vec<f64> = (0..300).map(f64::from).collect();
        assert_eq!(pairwise_sum(&long), 44850.0);
        assert_eq!(pairwise_sum(&[1.0, 2.0, 3.0]), 6.0);
    }

    #[test]
    fn lengths_and_errors() {
        let face = FaceImage::filled(7);
        assert_eq!(sliding_hog(&face).len(), SLIDING_HOG_LEN);
        assert_eq!(whole_hog(&face).len(), WHOLE_HOG_LEN);
        assert!(whole_hog(&face).iter().all(|&v| v == 0.0), "a flat face has no gradient");
        assert_eq!(
            hog(&[0; 36], 6, 6, &HogConfig::SLIDING_WINDOW),
            Err(HogError::TooSmall { rows: 6, columns: 6, min_rows: 8, min_columns: 8 })
        );
        assert!(matches!(hog(&[0; 10], 6, 6, &HogConfig::SLIDING_WINDOW), Err(HogError::Shape { .. })));
        let bad = HogConfig { orientations: 0, ..HogConfig::SLIDING_WINDOW };
        assert_eq!(hog(&[0; 64], 8, 8, &bad), Err(HogError::Config(bad)));
        assert_eq!(HogConfig::SLIDING_WINDOW.descriptor_len(24, 18), Ok(3 * 2 * 8));
    }

    /// The definition: crop each window, run the general [`hog`] on it, concatenate.
    fn sliding_by_definition(face: &FaceImage) -> Vec<f64> {
        let mut out = Vec::new();
        for y in (0..FACE_SIDE).step_by(WINDOW_STEP) {
            for x in (0..FACE_SIDE).step_by(WINDOW_STEP) {
                let (rows, columns) = ((FACE_SIDE - y).min(WINDOW_SIDE), (FACE_SIDE - x).min(WINDOW_SIDE));
                let window: Vec<u8> = (y..y + rows)
                    .flat_map(|r| face.pixels()[r * FACE_SIDE + x..r * FACE_SIDE + x + columns].to_vec())
                    .collect();
                match hog(&window, rows, columns, &HogConfig::SLIDING_WINDOW) {
                    Ok(v) => out.extend(v),
                    Err(HogError::TooSmall { .. }) => assert!(rows == 6 || columns == 6, "{rows}×{columns} skipped"),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        out
    }

    /// Random noise, full-range steps (every ±255 gradient), smooth ramps and flat areas.
    fn test_faces() -> Vec<FaceImage> {
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        vec![
            FaceImage::from_slice(&(0..2304).map(|_| noise() as u8).collect::<Vec<_>>()).expect("48×48"),
            FaceImage::from_slice(
                &(0..2304).map(|i| if (i / 48 + i % 48) % 2 == 0 { 0 } else { 255 }).collect::<Vec<_>>(),
            )
            .expect("48×48"),
            FaceImage::from_slice(&(0..2304).map(|i| ((i % 48) * 5 + (i / 48) * 3) as u8).collect::<Vec<_>>())
                .expect("48×48"),
            FaceImage::from_slice(
                &(0..2304).map(|i| if i % 48 < 20 { 90 } else { (noise() % 7) as u8 }).collect::<Vec<_>>(),
            )
            .expect("48×48"),
            FaceImage::filled(200),
        ]
    }

    #[test]
    fn window_bins_are_the_bins_of_each_cut_out_window() {
        let windows: Vec<HogWindow> = sliding_windows().into_iter().chain([HogWindow::WHOLE_FACE]).collect();
        assert_eq!(windows.len(), 50);
        let sliding_cells: usize = windows[..49].iter().map(|w| w.cells().0 * w.cells().1).sum();
        assert_eq!(sliding_cells * 8, SLIDING_HOG_LEN);
        let mut binless = 0;
        for (k, face) in test_faces().iter().enumerate() {
            let bins = window_orientation_bins(face, &windows);
            for (window, bins) in windows.iter().zip(&bins) {
                // The definition: the window cut out, its own gradients, each pixel's vote.
                let pixels: Vec<u8> = (window.top..window.top + window.rows)
                    .flat_map(|r| {
                        face.pixels()[r * FACE_SIDE + window.left..r * FACE_SIDE + window.left + window.columns]
                            .to_vec()
                    })
                    .collect();
                let g = Gradients::new(&pixels, window.rows, window.columns);
                let expected: Vec<Option<u8>> = g
                    .g_row
                    .iter()
                    .zip(&g.g_col)
                    .map(|(&r, &c)| {
                        let bin = Vote::new(r, c, 8).bin;
                        (bin < 8).then_some(bin as u8)
                    })
                    .collect();
                assert_eq!(bins, &expected, "face {k}, window {window:?}");
                binless += bins.iter().filter(|b| b.is_none()).count();
            }
        }
        // Flat areas vote 0° into bin 0, so a pixel without a bin is rare (none in these faces).
        assert_eq!(binless, 0);
    }

    #[test]
    fn shared_gradients_give_exactly_the_per_window_and_whole_image_definitions() {
        for (k, face) in test_faces().iter().enumerate() {
            let (sliding, whole) = face_hogs(face);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&sliding), bits(&sliding_by_definition(face)), "face {k}: sliding");
            let by_definition = hog(face.pixels(), FACE_SIDE, FACE_SIDE, &HogConfig::WHOLE_IMAGE).expect("48×48");
            assert_eq!(bits(&whole), bits(&by_definition), "face {k}: whole");
            assert_eq!(bits(&sliding_hog(face)), bits(&sliding));
            assert_eq!(bits(&whole_hog(face)), bits(&whole));
        }
    }

    #[test]
    fn the_vote_table_holds_exactly_what_vote_new_computes() {
        let table = VoteTable::eight_orientations();
        for r in -255..=255 {
            for c in -255..=255 {
                let (g_row, g_col) = (f64::from(r), f64::from(c));
                let (looked_up, computed) = (table.vote(g_row, g_col), Vote::new(g_row, g_col, 8));
                assert_eq!(looked_up.bin, computed.bin, "({r}, {c})");
                assert_eq!(looked_up.magnitude.to_bits(), computed.magnitude.to_bits(), "({r}, {c})");
            }
        }
    }

    #[test]
    fn a_vertical_edge_votes_into_the_horizontal_gradient_bin() {
        // Left half dark, right half bright: gradient along columns, orientation 0°, bin 0.
        let pixels: Vec<u8> = (0..64).map(|i| if i % 8 < 4 { 10 } else { 200 }).collect();
        let v = hog(&pixels, 8, 8, &HogConfig::SLIDING_WINDOW).expect("8×8");
        assert!(v[0] > 0.0 && v[1..].iter().all(|&x| x == 0.0), "{v:?}");
        // One non-zero bin normalises to 1 before the clip, 0.2 after, then back to ~1 (ε² shaves 1e-9).
        assert!((v[0] - 1.0).abs() < 1e-8, "{}", v[0]);
    }
}
