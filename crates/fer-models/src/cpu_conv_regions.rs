//! Stride-1 "same" convolutions on small maps without the taps that fall on padding.
//!
//! On a 5×5 map a 3×3 kernel with padding 1 reads padding in 56 of its 225 (pixel, tap) pairs
//! (25 %; 21 % on 6×6), and im2col multiplies those zeros like any other entry.
//! Here the output pixels are split into regions whose pixels all read the same range of kernel
//! rows and the same range of kernel columns (for 3×3 with padding 1: four corners, four edges
//! and the interior), and each region is one product over its own taps only: an im2col matrix
//! with rows `(ky, kx, c)` over the region's taps (no zero rows) times the matching block of the
//! weight, laid out `[O, KH, KW, C]` so that the block is a strided sub-matrix.
//!
//! The input gradient of a stride-1 "same" convolution is the same kind of convolution of the
//! output gradient (kernel flipped, input and output channels swapped), so it runs through the
//! same forward code, with no col2im scatter. The weight gradient sums, per region, the output
//! gradient times the transposed im2col matrix into that region's block of the weight.
//!
//! Work is cut into jobs (a region and a run of images, at least [`MIN_JOB_COLUMNS`] output pixels
//! where the batch allows), each with a single-threaded GEMM; the jobs, the partial weight-gradient
//! sums and their order follow from the shape alone, so results do not depend on the threads.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::cpu_conv::{
    Geometry, MatRef, filled_vec, gemm_into, gemm_strided, sum_parts, weight_grad_parts, with_buffer,
};

/// Output pixels (images × region pixels) of one job at least, where the batch has enough images.
const MIN_JOB_COLUMNS: usize = 256;

/// Output rows (or columns) whose kernel rows (columns) on the map are the same range.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Class {
    members: Vec<usize>,
    taps: Range<usize>,
}

/// The classes of `out` output rows of a stride-1 convolution over `size` input rows, kernel
/// `kernel`, padding `pad`, in the order of their first member.
fn classes(out: usize, size: usize, kernel: usize, pad: usize) -> Vec<Class> {
    let mut classes: Vec<Class> = Vec::new();
    for y in 0..out {
        // Tap k of output row y reads input row y + k − pad: valid when it lies in 0..size.
        let lo = pad.saturating_sub(y).min(kernel);
        let hi = (size + pad).saturating_sub(y).min(kernel).max(lo);
        match classes.iter_mut().find(|c| c.taps == (lo..hi)) {
            Some(class) => class.members.push(y),
            None => classes.push(Class { members: vec![y], taps: lo..hi }),
        }
    }
    classes
}

/// Output pixels that read the same kernel rows `ky` and columns `kx`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Region {
    /// `(output row, output column)` of each pixel, in the order of the region's columns.
    at: Vec<(usize, usize)>,
    ky: Range<usize>,
    kx: Range<usize>,
}

impl Region {
    fn taps(&self) -> usize {
        self.ky.len() * self.kx.len()
    }
    fn pixels(&self) -> usize {
        self.at.len()
    }
    /// The region's taps as blocks of consecutive columns of the `[O, KH·KW·C]` weight (see
    /// [`taps_first`]): `(first weight column, first row of the region's im2col matrix, width)`.
    /// One block when the region spans whole kernel rows, else one per kernel row.
    fn blocks(&self, g: &Geometry) -> Vec<(usize, usize, usize)> {
        let (kw, c) = (g.kernel[1], g.channels);
        let block = self.kx.len() * c;
        if self.kx.len() == kw {
            vec![(self.ky.start * kw * c, 0, self.ky.len() * block)]
        } else {
            self.ky.clone().enumerate().map(|(i, ky)| ((ky * kw + self.kx.start) * c, i * block, block)).collect()
        }
    }

    /// Offsets of the pixels in a map `width` wide.
    fn offsets(&self, width: usize) -> Vec<usize> {
        self.at.iter().map(|&(y, x)| y * width + x).collect()
    }
}

/// The regions of `g`'s output (row classes × column classes).
fn regions(g: &Geometry) -> Vec<Region> {
    let rows = classes(g.out_height, g.height, g.kernel[0], g.padding[0]);
    let columns = classes(g.out_width, g.width, g.kernel[1], g.padding[1]);
    let mut regions = Vec::new();
    for r in &rows {
        for c in &columns {
            let at = r.members.iter().flat_map(|&y| c.members.iter().map(move |&x| (y, x))).collect();
            regions.push(Region { at, ky: r.taps.clone(), kx: c.taps.clone() });
        }
    }
    regions
}

/// Whether `g` runs through this module: stride 1, odd kernels with "same" padding, and at least
/// a fifth of the (pixel, tap) pairs on padding (maps of 6×6 or smaller under 3×3 kernels). On
/// 11×11 maps (12 % on padding) the regions' extra passes and thinner products cost as much as
/// they saved (kernel bench, docs/RESULTS.md), so those stay on im2col.
pub(crate) fn applies(g: &Geometry) -> bool {
    let same = |k: usize, p: usize| k % 2 == 1 && p == k / 2;
    if g.stride != [1, 1] || !same(g.kernel[0], g.padding[0]) || !same(g.kernel[1], g.padding[1]) {
        return false;
    }
    // (pixel, tap) pairs that read the map: rows and columns count independently.
    let valid = |out: usize, size: usize, kernel: usize, pad: usize| -> usize {
        classes(out, size, kernel, pad).iter().map(|c| c.members.len() * c.taps.len()).sum()
    };
    let rows = valid(g.out_height, g.height, g.kernel[0], g.padding[0]);
    let columns = valid(g.out_width, g.width, g.kernel[1], g.padding[1]);
    5 * rows * columns < 4 * g.out_plane() * g.taps()
}

/// One job: region `region` over images `first..first + images`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Job {
    region: usize,
    first: usize,
    images: usize,
}

impl Job {
    fn columns(&self, regions: &[Region]) -> usize {
        self.images * regions[self.region].pixels()
    }
}

/// The jobs of a batch: every region (regions without taps included, their output is zero) cut
/// into runs of images of at least [`MIN_JOB_COLUMNS`] output pixels.
fn jobs(batch: usize, regions: &[Region]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (region, r) in regions.iter().enumerate() {
        let per = MIN_JOB_COLUMNS.div_ceil(r.pixels().max(1)).clamp(1, batch);
        for first in (0..batch).step_by(per) {
            jobs.push(Job { region, first, images: per.min(batch - first) });
        }
    }
    jobs
}

/// The region's im2col matrix of images `job.first…` of `x [N, C, H, W]`: rows `(ky, kx, c)`
/// over the region's taps, columns `(image, region pixel)`. Element by element through an index
/// table: on the small maps of this module a region's rows are short (3 pixels on 5×5 maps), and
/// a `memmove` call per row cost more than its copy (kernel bench profile, docs/RESULTS.md).
fn gather(g: &Geometry, region: &Region, job: &Job, x: &[f32], col: &mut [f32]) {
    let (cols, plane, image) = (job.images * region.pixels(), g.plane(), g.channels * g.plane());
    let (kx_len, channels) = (region.kx.len(), g.channels);
    let offsets = region.offsets(g.width);
    // Every pixel of the region reads inside the map, so offset + tap shift ≥ padding shift.
    let pad_shift = g.padding[0] * g.width + g.padding[1];
    for (row, dst) in col[..region.taps() * channels * cols].chunks_mut(cols).enumerate() {
        let (ky, kx, c) =
            (region.ky.start + row / (kx_len * channels), region.kx.start + row / channels % kx_len, row % channels);
        let tap_shift = ky * g.width + kx;
        for (i, dst) in dst.chunks_mut(region.pixels()).enumerate() {
            let plane = &x[(job.first + i) * image + c * plane..][..plane];
            for (d, &o) in dst.iter_mut().zip(&offsets) {
                *d = plane[o + tap_shift - pad_shift];
            }
        }
    }
}

/// `res (O × cols) = W_region · col`, with `weight` laid out `[O, KH·KW·C]` (see [`taps_first`])
/// and `col` from [`gather`].
fn region_product(g: &Geometry, region: &Region, cols: usize, weight: &[f32], col: &[f32], res: &mut [f32]) {
    for (i, (w0, r0, width)) in region.blocks(g).into_iter().enumerate() {
        let w = MatRef { data: &weight[w0..], row_stride: g.rows(), col_stride: 1 };
        let col = MatRef { data: &col[r0 * cols..], row_stride: cols, col_stride: 1 };
        gemm_into(res, i > 0, w, col, [g.out_channels, cols, width], false);
    }
}

/// Every `a×b` block of `src` (row-major, one after the other) transposed to `b×a`.
fn transpose_each(src: &[f32], a: usize, b: usize) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    out.par_chunks_mut(a * b).zip(src.par_chunks(a * b)).for_each(|(dst, src)| {
        for j in 0..b {
            for i in 0..a {
                dst[j * a + i] = src[i * b + j];
            }
        }
    });
    out
}

/// The weight `[O, C, KH, KW]` as `[O, KH, KW, C]` (every tap's channels consecutive); with `flip`,
/// the kernel flipped and the channels swapped, `[C, KH, KW, O]`: the weight of the input gradient.
fn taps_first(g: &Geometry, weight: &[f32], flip: bool) -> Vec<f32> {
    let (o_len, c_len, taps, [kh, kw]) = (g.out_channels, g.channels, g.taps(), g.kernel);
    if !flip {
        return transpose_each(weight, c_len, taps);
    }
    let mut out = vec![0.0; c_len * taps * o_len];
    out.par_chunks_mut(taps * o_len).enumerate().for_each(|(c, dst)| {
        for t in 0..taps {
            // dx[c] gathers W[o, c, KH−1−ky, KW−1−kx] over o.
            let flipped = (kh - 1 - t / kw) * kw + (kw - 1 - t % kw);
            for o in 0..o_len {
                dst[t * o_len + o] = weight[(o * c_len + c) * taps + flipped];
            }
        }
    });
    out
}

/// The convolution of `x [N, C, H, W]` with `weight` laid out `[O, KH·KW·C]`, as `[N, O, OH, OW]`
/// (no bias).
fn convolve(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let regions = regions(g);
    let jobs = jobs(g.batch, &regions);
    let results: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|job| {
            let (region, cols) = (&regions[job.region], job.columns(&regions));
            let mut res = vec![0.0; g.out_channels * cols];
            if region.taps() > 0 {
                with_buffer(region.taps() * g.channels * cols, |col| {
                    gather(g, region, job, x, col);
                    region_product(g, region, cols, weight, col, &mut res);
                });
            }
            res
        })
        .collect();
    let (out_plane, o_len) = (g.out_plane(), g.out_channels);
    let offsets: Vec<Vec<usize>> = regions.iter().map(|r| r.offsets(g.out_width)).collect();
    let scatter = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(o_len * out_plane).enumerate().for_each(|(n, image)| {
            for (job, res) in jobs.iter().zip(&results) {
                if !(job.first..job.first + job.images).contains(&n) {
                    continue;
                }
                let (region, cols) = (&regions[job.region], job.columns(&regions));
                let at = (n - job.first) * region.pixels();
                for (o, plane) in image.chunks_mut(out_plane).enumerate() {
                    for (&v, &p) in res[o * cols + at..][..region.pixels()].iter().zip(&offsets[job.region]) {
                        plane[p].write(v);
                    }
                }
            }
        });
    };
    // SAFETY: the regions cover every output pixel (tested: `regions_cover_every_pixel_once_with_its_valid_taps`)
    // and the jobs every image of every region, so each value of every plane is written.
    unsafe { filled_vec(g.batch * o_len * out_plane, scatter) }
}

/// Forward: `[N, O, OH, OW]` from `x [N, C, H, W]` and `weight [O, C, KH, KW]` (no bias).
pub(crate) fn forward(g: &Geometry, x: &[f32], weight: &[f32]) -> Vec<f32> {
    convolve(g, x, &taps_first(g, weight, false))
}

/// Input gradient `[N, C, H, W]` from `dy [N, O, OH, OW]`: the convolution of `dy` with the
/// flipped kernel, input and output channels swapped (same geometry otherwise).
pub(crate) fn input_grad(g: &Geometry, weight: &[f32], dy: &[f32]) -> Vec<f32> {
    convolve(&g.swapped(), dy, &taps_first(g, weight, true))
}

/// Weight gradient `[O, C, KH, KW]`: per job, `dy_region (O × cols) · colᵀ` added into the
/// region's block of a `[O, KH, KW, C]` sum; the jobs split into partial sums of about equal work
/// (fixed by the shape), added in a fixed order.
pub(crate) fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let regions = regions(g);
    let jobs: Vec<Job> = jobs(g.batch, &regions).into_iter().filter(|j| regions[j.region].taps() > 0).collect();
    let (o_len, c_len, rows) = (g.out_channels, g.channels, g.rows());
    if jobs.is_empty() {
        return vec![0.0; o_len * rows];
    }
    let cost = |j: &Job| j.columns(&regions) * regions[j.region].taps();
    let total: usize = jobs.iter().map(cost).sum();
    let parts = weight_grad_parts(jobs.len(), o_len * rows);
    // Part p holds the jobs whose cumulative cost starts in [p·total/parts, (p+1)·total/parts).
    let mut bounds = vec![0; parts + 1];
    let mut done = 0;
    for (i, job) in jobs.iter().enumerate() {
        let p = (done * parts / total).min(parts - 1);
        bounds[p + 1] = i + 1;
        done += cost(job);
    }
    for p in 1..=parts {
        bounds[p] = bounds[p].max(bounds[p - 1]);
    }
    let out_plane = g.out_plane();
    let part = |p: usize| {
        let mut acc = vec![0.0; o_len * rows];
        for job in &jobs[bounds[p]..bounds[p + 1]] {
            let (region, cols) = (&regions[job.region], job.columns(&regions));
            let col_len = region.taps() * c_len * cols;
            with_buffer(col_len + o_len * cols, |buffer| {
                let (col, dyr) = buffer.split_at_mut(col_len);
                gather(g, region, job, x, col);
                // dy of the region's pixels: O × (image, pixel).
                let offsets = region.offsets(g.out_width);
                for (o, row) in dyr.chunks_mut(cols).enumerate() {
                    for (i, dst) in row.chunks_mut(region.pixels()).enumerate() {
                        let plane = &dy[((job.first + i) * o_len + o) * out_plane..][..out_plane];
                        dst.iter_mut().zip(&offsets).for_each(|(d, &p)| *d = plane[p]);
                    }
                }
                let dyr = MatRef { data: dyr, row_stride: cols, col_stride: 1 };
                for (w0, r0, width) in region.blocks(g) {
                    let colt = MatRef { data: &col[r0 * cols..], row_stride: 1, col_stride: cols };
                    gemm_strided(&mut acc[w0..], rows, true, dyr, colt, [o_len, width, cols], false);
                }
            });
        }
        acc
    };
    // [O, KH, KW, C] → [O, C, KH, KW]
    transpose_each(&sum_parts(0..parts, &part, true), g.taps(), c_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(side: usize, kernel: usize, stride: usize) -> Geometry {
        Geometry::new([2, 3, side, side], 4, [kernel, kernel], [stride, stride], [kernel / 2, kernel / 2])
            .expect("geometry")
    }

    #[test]
    fn classes_of_a_3x3_kernel_on_5_rows() {
        let c = classes(5, 5, 3, 1);
        assert_eq!(
            c,
            [
                Class { members: vec![0], taps: 1..3 },
                Class { members: vec![1, 2, 3], taps: 0..3 },
                Class { members: vec![4], taps: 0..2 },
            ]
        );
        // A 5×5 kernel on 3 rows: every row misses some taps, each in its own way.
        let c = classes(3, 3, 5, 2);
        assert_eq!(c.iter().map(|c| c.taps.clone()).collect::<Vec<_>>(), [2..5, 1..4, 0..3]);
    }

    #[test]
    fn regions_cover_every_pixel_once_with_its_valid_taps() {
        for (side, kernel) in [(5, 3), (6, 3), (11, 3), (8, 5), (3, 5)] {
            let g = geometry(side, kernel, 1);
            let regions = regions(&g);
            let mut seen = vec![0; g.out_plane()];
            let mut pairs = 0;
            for r in &regions {
                for &(y, x) in &r.at {
                    seen[y * g.out_width + x] += 1;
                    // Exactly the region's taps read the map.
                    for (ky, kx) in (0..kernel).flat_map(|ky| (0..kernel).map(move |kx| (ky, kx))) {
                        let valid = g.source_row(y, ky).is_some() && g.source_column(x, kx).is_some();
                        assert_eq!(
                            valid,
                            r.ky.contains(&ky) && r.kx.contains(&kx),
                            "{side}/{kernel} ({y},{x}) tap ({ky},{kx})"
                        );
                    }
                }
                assert!(r.pixels() > 0, "{side}/{kernel}: an empty region");
                pairs += r.pixels() * r.taps();
            }
            assert!(seen.iter().all(|&s| s == 1), "{side}/{kernel}: {seen:?}");
            if (side, kernel) == (5, 3) {
                assert_eq!((regions.len(), pairs), (9, 169));
            }
        }
    }

    #[test]
    fn applies_to_small_same_convolutions_only() {
        assert!(applies(&geometry(5, 3, 1)));
        assert!(applies(&geometry(6, 3, 1)));
        assert!(applies(&geometry(4, 3, 1)));
        assert!(!applies(&geometry(7, 3, 1)), "18 % of the pairs on padding");
        assert!(!applies(&geometry(11, 3, 1)));
        assert!(!applies(&geometry(44, 3, 1)));
        assert!(!applies(&geometry(6, 3, 2)), "stride 2");
        let valid = Geometry::new([2, 3, 5, 5], 4, [3, 3], [1, 1], [0, 0]).expect("geometry");
        assert!(!applies(&valid), "no padding");
    }

    #[test]
    fn jobs_cover_every_image_of_every_region_once() {
        let g = Geometry::new([130, 3, 5, 5], 4, [3, 3], [1, 1], [1, 1]).expect("geometry");
        let regions = regions(&g);
        let jobs = jobs(g.batch, &regions);
        for r in 0..regions.len() {
            let mut images: Vec<usize> =
                jobs.iter().filter(|j| j.region == r).flat_map(|j| j.first..j.first + j.images).collect();
            images.sort_unstable();
            assert_eq!(images, (0..130).collect::<Vec<_>>());
        }
        // The interior (9 pixels) runs 29 images at a time; a corner (1 pixel) 130 at once.
        assert!(jobs.iter().any(|j| regions[j.region].pixels() == 9 && j.images == 29));
        assert!(jobs.iter().any(|j| regions[j.region].pixels() == 1 && j.images == 130));
    }
}
