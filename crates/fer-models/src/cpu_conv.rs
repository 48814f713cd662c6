//! fer-models' own CPU convolution for burn-flex: im2col + one GEMM per chunk of images, forward
//! and backward (input, weight and bias gradients).
//!
//! Why: burn-flex 0.21 computes a convolution's weight gradient as another convolution whose
//! "kernel" is the whole output-gradient map (44×44 on VGG19's first stage) and its input gradient
//! as a transposed convolution; forward + backward of VGG19's layers ran at 22–88 GFLOP/s that way
//! on a 2-core Zen 4 machine, and at 62–112 GFLOP/s through the kernels here (docs/RESULTS.md,
//! "Convolutions on burn-flex"). Here all three products are GEMMs over an im2col matrix of a few images at a time
//! (small enough to stay in cache, large enough to keep the GEMM efficient on 2×2 maps).
//! Maps with fewer pixels than the kernel has taps (VGG19's 2×2 last stage) skip im2col: there
//! each pass is one GEMM over the convolution unrolled into a dense matrix, which leaves out the
//! taps on padding (5 of 9 on 2×2 maps; [`Geometry::dense`]). Stride-1 "same" convolutions on
//! small maps (6×6 or smaller under 3×3 kernels), where a fifth or more of im2col's entries are
//! padding, run per region of output pixels over that region's taps only (`cpu_conv_regions`).
//!
//! [`conv2d`] is the entry point: for `Flex` and `Autodiff<Flex>` it runs these kernels (groups 1,
//! dilation 1, symmetric padding: every convolution of fer-models' networks), else Burn's own.
//! Results are deterministic and do not depend on the number of threads (chunks and the order of
//! additions follow from the shape alone; tested bit for bit on 1 and 3 threads), and equal Burn's
//! up to float rounding (tested).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::backend_match::{same_backend, same_type};
use crate::cpu_conv_regions;
use crate::flex_bridge::{FlexAd, contiguous, flex_tensor, slice};

/// Columns (images × output pixels) of one im2col chunk at least: 2×2 maps are batched 64 images
/// at a time so the GEMM is not one thin product per image; 44×44 maps run one image at a time.
const MIN_CHUNK_COLUMNS: usize = 256;

/// Weight-gradient partial sums: at most this many, each over a fixed run of chunks, added in order.
const WEIGHT_GRAD_PARTS: usize = 16;

/// …and at most this many bytes of them (but at least 4 sums, for the threads).
const WEIGHT_GRAD_BYTES: usize = 64 << 20;

/// The unrolled matrix of the dense path (see [`Geometry::dense`]) holds at most this many values
/// (64 MB; VGG19's 2×2 stage: 4 M).
const DENSE_MAX_VALUES: usize = 16 << 20;

/// Shape of one convolution: `[N, C, H, W]` input, `[O, C, KH, KW]` weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) batch: usize,
    pub(crate) channels: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) out_channels: usize,
    pub(crate) kernel: [usize; 2],
    pub(crate) stride: [usize; 2],
    pub(crate) padding: [usize; 2],
    pub(crate) out_height: usize,
    pub(crate) out_width: usize,
}

impl Geometry {
    /// `None` when the output would be empty (Burn's own convolution reports that case).
    pub(crate) fn new(
        input: [usize; 4],
        out_channels: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        let [batch, channels, height, width] = input;
        let out = |size: usize, k: usize, s: usize, p: usize| (size + 2 * p).checked_sub(k).map(|d| d / s + 1);
        let out_height = out(height, kernel[0], stride[0], padding[0])?;
        let out_width = out(width, kernel[1], stride[1], padding[1])?;
        (batch > 0 && channels > 0 && out_channels > 0 && stride[0] > 0 && stride[1] > 0).then_some(Self {
            batch,
            channels,
            height,
            width,
            out_channels,
            kernel,
            stride,
            padding,
            out_height,
            out_width,
        })
    }
    pub(crate) fn plane(&self) -> usize {
        self.height * self.width
    }
    pub(crate) fn out_plane(&self) -> usize {
        self.out_height * self.out_width
    }
    /// Rows of the im2col matrix: input channels × kernel taps.
    pub(crate) fn rows(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }
    fn images_per_chunk(&self) -> usize {
        MIN_CHUNK_COLUMNS.div_ceil(self.out_plane()).clamp(1, self.batch)
    }
    fn chunks(&self) -> usize {
        self.batch.div_ceil(self.images_per_chunk())
    }
    /// Kernel taps: `KH·KW`.
    pub(crate) fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
    /// Whether the convolution runs as dense products over its unrolled matrix (see [`unrolled`])
    /// rather than over im2col: when the input map has fewer pixels than the kernel has taps (2×2
    /// maps, VGG19's last stage on 44×44 crops), as the dense products then take fewer
    /// multiply-adds (`C·H·W·O·OH·OW` against `C·KH·KW·O·OH·OW`: 4/9 on 2×2 maps, where 5 of the 9
    /// taps of every output pixel fall on padding), and the batch becomes one axis of the GEMMs.
    fn dense(&self) -> bool {
        self.plane() < self.taps()
            && self.channels * self.plane() * self.out_channels * self.out_plane() <= DENSE_MAX_VALUES
    }
    /// Input row that kernel row `ky` of output row `y` reads, `None` on padding.
    pub(crate) fn source_row(&self, y: usize, ky: usize) -> Option<usize> {
        (y * self.stride[0] + ky).checked_sub(self.padding[0]).filter(|&sy| sy < self.height)
    }
    /// Input column that kernel column `kx` of output column `x` reads, `None` on padding.
    pub(crate) fn source_column(&self, x: usize, kx: usize) -> Option<usize> {
        (x * self.stride[1] + kx).checked_sub(self.padding[1]).filter(|&sx| sx < self.width)
    }
    /// Every `(output pixel, tap, input pixel)` that a tap links (taps on padding left out), in the
    /// order of output pixels, then taps.
    fn links(&self) -> Vec<(usize, usize, usize)> {
        let mut links = Vec::new();
        for (y, x) in (0..self.out_height).flat_map(|y| (0..self.out_width).map(move |x| (y, x))) {
            for (ky, kx) in (0..self.kernel[0]).flat_map(|ky| (0..self.kernel[1]).map(move |kx| (ky, kx))) {
                if let (Some(sy), Some(sx)) = (self.source_row(y, ky), self.source_column(x, kx)) {
                    links.push((y * self.out_width + x, ky * self.kernel[1] + kx, sy * self.width + sx));
                }
            }
        }
        links
    }
    /// The same convolution with input and output channels swapped (that of the input gradient of a
    /// stride-1 "same" convolution, whose input and output maps have one size).
    pub(crate) fn swapped(&self) -> Self {
        Self { channels: self.out_channels, out_channels: self.channels, ..*self }
    }
    /// Chunks in parallel (one GEMM thread each) when there are enough of them; else the chunks in
    /// turn, each GEMM on every thread.
    fn chunks_in_parallel(&self) -> bool {
        self.chunks() >= 2 * rayon::current_num_threads()
    }
}

/// A strided read-only matrix: element `(i, j)` at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

/// `dst (m×n, row-major) = [dst +] lhs (m×k) · rhs (k×n)`, through `gemm`.
pub(crate) fn gemm_into(dst: &mut [f32], accumulate: bool, lhs: MatRef, rhs: MatRef, mnk: [usize; 3], threads: bool) {
    gemm_strided(dst, mnk[1], accumulate, lhs, rhs, mnk, threads);
}

/// [`gemm_into`] with rows of `dst` `dst_row_stride` apart (`≥ n`).
///
/// `dst` is always initialised memory: even without accumulation gemm's edge tiles copy the
/// destination's values into a scratch tile (and then overwrite them), so results that are not to
/// be zeroed first go through a scratch matrix (see [`filled_vec`]).
pub(crate) fn gemm_strided(
    dst: &mut [f32],
    dst_row_stride: usize,
    accumulate: bool,
    lhs: MatRef,
    rhs: MatRef,
    [m, n, k]: [usize; 3],
    threads: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |mat: MatRef, rows: usize, cols: usize| (rows - 1) * mat.row_stride + (cols.max(1) - 1) * mat.col_stride;
    assert!(dst_row_stride >= n && dst.len() >= (m - 1) * dst_row_stride + n, "gemm_into: destination too small");
    if k > 0 {
        assert!(last(lhs, m, k) < lhs.data.len(), "gemm_into: lhs too small");
        assert!(last(rhs, k, n) < rhs.data.len(), "gemm_into: rhs too small");
    } else if !accumulate {
        dst.chunks_mut(dst_row_stride).take(m).for_each(|row| row[..n].fill(0.0));
        return;
    }
    let parallelism = if threads { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: the assertions above keep every element gemm reads or writes inside the slices
    // (m×n destination with row stride `dst_row_stride ≥ n`, lhs/rhs extents from their strides); `dst` is borrowed
    // mutably, so it does not alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// What [`filled_vec`] puts in its buffer before `write` runs, in fer-models' unit tests: a NaN
/// whose payload arithmetic on finite inputs never produces (x86 makes `0xffc0_0000`), so a value
/// left unwritten shows.
#[cfg(test)]
const UNWRITTEN: f32 = f32::from_bits(0x7fc0_dead);

/// A vector of `len` values written by `write`, without zeroing them first: `vec![0.0; len]`
/// clears memory that a copy then overwrites whole (memset was 4.3 % of a ResNet18 training step,
/// docs/RESULTS.md). `write` may only store into the slice (`MaybeUninit::write`), never hand it to
/// gemm, which reads its destination (see [`gemm_strided`]). In fer-models' unit tests every value
/// starts as a marked NaN and is checked after `write`.
///
/// # Safety
/// `write` writes every value of the slice it is given.
pub(crate) unsafe fn filled_vec(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    let spare = &mut values.spare_capacity_mut()[..len];
    #[cfg(test)]
    spare.fill(MaybeUninit::new(UNWRITTEN));
    write(spare);
    // SAFETY: capacity ≥ len, and the caller vouches that `write` initialised all `len` values.
    unsafe { values.set_len(len) };
    #[cfg(test)]
    assert!(values.iter().all(|v| v.to_bits() != UNWRITTEN.to_bits()), "filled_vec: `write` left a value unwritten");
    values
}

/// Output columns `lo..hi` of a kernel row at tap offset `kx` read input columns `lo*s+kx-p…`.
fn valid_columns(g: &Geometry, kx: usize) -> (usize, usize) {
    let (s, p, w) = (g.stride[1], g.padding[1], g.width);
    // x valid when 0 <= x*s + kx - p < w
    let lo = p.saturating_sub(kx).div_ceil(s);
    let hi = if w + p > kx { ((w + p - kx - 1) / s + 1).min(g.out_width) } else { 0 };
    (lo.min(hi), hi)
}

/// im2col of one image `x (C, H, W)` into `col (C·KH·KW, OH·OW)`, written at column offset
/// `offset` of rows `row_len` long (several images side by side).
fn im2col(g: &Geometry, x: &[f32], col: &mut [f32], row_len: usize, offset: usize) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (ow, ohw) = (g.out_width, g.out_plane());
    for c in 0..g.channels {
        let plane = &x[c * g.plane()..(c + 1) * g.plane()];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (c * kh + ky) * kw + kx;
                let dst = &mut col[row * row_len + offset..row * row_len + offset + ohw];
                let (lo, hi) = valid_columns(g, kx);
                for y in 0..g.out_height {
                    let out = &mut dst[y * ow..(y + 1) * ow];
                    let Some(sy) = g.source_row(y, ky).filter(|_| lo < hi) else {
                        out.fill(0.0);
                        continue;
                    };
                    let src = &plane[sy * g.width..(sy + 1) * g.width];
                    out[..lo].fill(0.0);
                    out[hi..].fill(0.0);
                    let first = lo * g.stride[1] + kx - g.padding[1];
                    if g.stride[1] == 1 {
                        out[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                    } else {
                        for (i, o) in out[lo..hi].iter_mut().enumerate() {
                            *o = src[first + i * g.stride[1]];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `col`'s columns `offset…` back into one image `dx (C, H, W)`.
fn col2im(g: &Geometry, col: &[f32], row_len: usize, offset: usize, dx: &mut [f32]) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let ow = g.out_width;
    for c in 0..g.channels {
        let plane = &mut dx[c * g.plane()..(c + 1) * g.plane()];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = (c * kh + ky) * kw + kx;
                let src = &col[row * row_len + offset..row * row_len + offset + g.out_plane()];
                let (lo, hi) = valid_columns(g, kx);
                if lo >= hi {
                    continue;
                }
                for y in 0..g.out_height {
                    let Some(sy) = g.source_row(y, ky) else {
                        continue;
                    };
                    let dst = &mut plane[sy * g.width..(sy + 1) * g.width];
                    let first = lo * g.stride[1] + kx - g.padding[1];
                    let values = &src[y * ow + lo..y * ow + hi];
                    if g.stride[1] == 1 {
                        dst[first..first + hi - lo].iter_mut().zip(values).for_each(|(d, v)| *d += v);
                    } else {
                        for (i, v) in values.iter().enumerate() {
                            dst[first + i * g.stride[1]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Scratch buffers of one worker: the chunk's im2col matrix and a chunk-wide `[O, n·OH·OW]` matrix.
struct Scratch<'a> {
    col: &'a mut [f32],
    wide: &'a mut [f32],
}

thread_local! {
    /// Each thread's scratch memory, kept between calls: fresh multi-megabyte buffers per chunk
    /// cost page faults that took as long as the arithmetic on 44×44 maps.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `len` values of this thread's scratch memory (a fresh buffer if the thread's is
/// in use, as when a GEMM waiting on its rayon workers runs another convolution's chunk). The
/// values are left over from earlier calls: `f` must write before it reads.
pub(crate) fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Runs `f` with this thread's [`Scratch`] sized for `g` (see [`with_buffer`]).
fn with_scratch<R>(g: &Geometry, f: impl FnOnce(&mut Scratch) -> R) -> R {
    let per = g.images_per_chunk();
    let cols = per * g.out_plane();
    let (col, wide) = (g.rows() * cols, g.out_channels * cols);
    with_buffer(col + wide, |buffer| {
        let (col, wide) = buffer.split_at_mut(col);
        f(&mut Scratch { col, wide })
    })
}

/// Runs `body(chunk index, output slice of that chunk, scratch)` over every chunk of images, in
/// parallel or in turn (see [`Geometry::chunks_in_parallel`]).
fn for_each_chunk<T: Send>(
    g: &Geometry,
    out: &mut [T],
    per_image: usize,
    body: impl Fn(usize, &mut [T], &mut Scratch) + Sync,
) {
    let len = g.images_per_chunk() * per_image;
    if g.chunks_in_parallel() {
        out.par_chunks_mut(len).enumerate().for_each(|(i, o)| with_scratch(g, |s| body(i, o, s)));
    } else {
        with_scratch(g, |s| out.chunks_mut(len).enumerate().for_each(|(i, o)| body(i, o, s)));
    }
}

/// Copies images `first..first+n` of an NCHW-like `[N, O, P]` array into `[O, n·P]`.
fn to_wide(nchw: &[f32], wide: &mut [f32], n: usize, o: usize, p: usize) {
    for i in 0..n {
        for r in 0..o {
            wide[r * n * p + i * p..r * n * p + (i + 1) * p]
                .copy_from_slice(&nchw[(i * o + r) * p..(i * o + r + 1) * p]);
        }
    }
}
/// …and back, adding `bias[r]` to row `r` when given: writes every value of `nchw` (`n·o·p`).
fn from_wide(wide: &[f32], nchw: &mut [MaybeUninit<f32>], n: usize, o: usize, p: usize, bias: Option<&[f32]>) {
    for i in 0..n {
        for r in 0..o {
            let src = &wide[r * n * p + i * p..r * n * p + (i + 1) * p];
            let dst = &mut nchw[(i * o + r) * p..(i * o + r + 1) * p];
            match bias {
                Some(bias) => dst.iter_mut().zip(src).for_each(|(d, &v)| {
                    d.write(v + bias[r]);
                }),
                None => dst.iter_mut().zip(src).for_each(|(d, &v)| {
                    d.write(v);
                }),
            }
        }
    }
}

/// im2col of images `first..first + n` of `x`, side by side in `col` (`[C·KH·KW, n·OH·OW]`).
fn load_images(g: &Geometry, x: &[f32], first: usize, n: usize, col: &mut [f32]) {
    let image = g.channels * g.plane();
    for i in 0..n {
        im2col(g, &x[(first + i) * image..][..image], col, n * g.out_plane(), i * g.out_plane());
    }
}

/// Images `first..first + n` of an output-shaped `dy` as an `[O, n·OH·OW]` matrix: borrowed for
/// one image, gathered into `wide` for several.
fn output_matrix<'a>(g: &Geometry, dy: &'a [f32], first: usize, n: usize, wide: &'a mut [f32]) -> MatRef<'a> {
    let (ohw, cols) = (g.out_plane(), n * g.out_plane());
    let dy = &dy[first * g.out_channels * ohw..(first + n) * g.out_channels * ohw];
    if n == 1 {
        return MatRef { data: dy, row_stride: cols, col_stride: 1 };
    }
    to_wide(dy, wide, n, g.out_channels, ohw);
    MatRef { data: wide, row_stride: cols, col_stride: 1 }
}

/// The convolution as a `[C·H·W, O·OH·OW]` matrix `M` (row-major): `out[n] = x[n] · M` with images
/// flattened to rows, so that `M[c·H·W + q, o·OH·OW + p]` is the weight of input pixel `q` of
/// channel `c` in output pixel `p` of channel `o` (zero where no tap links them).
fn unrolled(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let (plane, out_plane, wide) = (g.plane(), g.out_plane(), g.out_channels * g.out_plane());
    let links = g.links();
    let mut m = vec![0.0; g.channels * plane * wide];
    m.par_chunks_mut(plane * wide).enumerate().for_each(|(c, rows)| {
        for o in 0..g.out_channels {
            let taps = &weight[(o * g.channels + c) * g.taps()..][..g.taps()];
            for &(p, t, q) in &links {
                rows[q * wide + o * out_plane + p] = taps[t];
            }
        }
    });
    m
}

/// [`unrolled`] when the convolution takes the dense path, built once per forward pass and kept
/// for the backward one.
fn dense_matrix(g: &Geometry, weight: &[f32]) -> Option<Vec<f32>> {
    g.dense().then(|| unrolled(g, weight))
}

/// Dense forward (see [`Geometry::dense`]): `out [N, O·OH·OW] = x [N, C·H·W] · M`.
fn dense_forward(g: &Geometry, x: &[f32], m: &[f32], out: &mut [f32]) {
    let (k, n) = (g.channels * g.plane(), g.out_channels * g.out_plane());
    let x = MatRef { data: x, row_stride: k, col_stride: 1 };
    gemm_into(out, false, x, MatRef { data: m, row_stride: n, col_stride: 1 }, [g.batch, n, k], true);
}

/// Dense input gradient: `dx [N, C·H·W] = dy [N, O·OH·OW] · Mᵀ`.
fn dense_input_grad(g: &Geometry, m: &[f32], dy: &[f32]) -> Vec<f32> {
    let (inner, outer) = (g.channels * g.plane(), g.out_channels * g.out_plane());
    let mut dx = vec![0.0; g.batch * inner];
    let dy = MatRef { data: dy, row_stride: outer, col_stride: 1 };
    let mt = MatRef { data: m, row_stride: 1, col_stride: outer };
    gemm_into(&mut dx, false, dy, mt, [g.batch, inner, outer], true);
    dx
}

/// Dense weight gradient: `dM [C·H·W, O·OH·OW] = xᵀ · dy`, then each weight tap gathers the entries
/// of `M` it was copied to (output pixels in order).
fn dense_weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (inner, outer, out_plane) = (g.channels * g.plane(), g.out_channels * g.out_plane(), g.out_plane());
    let mut dm = vec![0.0; inner * outer];
    let xt = MatRef { data: x, row_stride: 1, col_stride: inner };
    let dy = MatRef { data: dy, row_stride: outer, col_stride: 1 };
    gemm_into(&mut dm, false, xt, dy, [inner, outer, g.batch], true);
    // Blocks of 16 output channels, so that each block reads whole cache lines of `dM`.
    let (links, block) = (g.links(), 16);
    let mut dw = vec![0.0; g.out_channels * g.rows()];
    dw.par_chunks_mut(block * g.rows()).enumerate().for_each(|(b, rows)| {
        for c in 0..g.channels {
            let dm = &dm[c * g.plane() * outer..][..g.plane() * outer];
            for (i, taps) in rows.chunks_mut(g.rows()).enumerate() {
                let (o, taps) = (b * block + i, &mut taps[c * g.taps()..][..g.taps()]);
                for &(p, t, q) in &links {
                    taps[t] += dm[q * outer + o * out_plane + p];
                }
            }
        }
    });
    dw
}

/// Forward: `out [N, O, OH, OW] = conv(x [N, C, H, W], weight [O, C·KH·KW]) (+ bias [O])`;
/// `unrolled`: [`dense_matrix`] of `weight`.
fn forward(g: &Geometry, x: &[f32], weight: &[f32], unrolled: Option<&[f32]>, bias: Option<&[f32]>) -> Vec<f32> {
    let (per, ohw, rows) = (g.images_per_chunk(), g.out_plane(), g.rows());
    let threads = !g.chunks_in_parallel();
    debug_assert_eq!(unrolled.is_some(), g.dense(), "the dense path needs its matrix");
    let with_bias = |mut out: Vec<f32>| {
        if let Some(bias) = bias {
            add_bias(&mut out, bias, ohw);
        }
        out
    };
    if let Some(m) = unrolled {
        let mut out = vec![0.0; g.batch * g.out_channels * ohw];
        dense_forward(g, x, m, &mut out);
        return with_bias(out);
    }
    if cpu_conv_regions::applies(g) {
        return with_bias(cpu_conv_regions::forward(g, x, weight));
    }
    let fill = |out: &mut [MaybeUninit<f32>]| {
        for_each_chunk(g, out, g.out_channels * ohw, |chunk, out, s| {
            let (first, n) = (chunk * per, out.len() / (g.out_channels * ohw));
            let cols = n * ohw;
            load_images(g, x, first, n, s.col);
            let w = MatRef { data: weight, row_stride: rows, col_stride: 1 };
            let col = MatRef { data: s.col, row_stride: cols, col_stride: 1 };
            // The product goes to the scratch matrix (in cache) and is copied out with the bias: an
            // output buffer handed to gemm would have to be zeroed first (see `filled_vec`).
            gemm_into(s.wide, false, w, col, [g.out_channels, cols, rows], threads);
            from_wide(s.wide, out, n, g.out_channels, ohw, bias);
        });
    };
    // SAFETY: the chunks cover the output, and `from_wide` writes each of them whole.
    unsafe { filled_vec(g.batch * g.out_channels * ohw, fill) }
}

/// Adds `bias[o]` to every plane of channel `o` of an `[n, O, P]` array (`P = plane`).
fn add_bias(out: &mut [f32], bias: &[f32], plane: usize) {
    for (plane, b) in out.chunks_mut(plane).zip(bias.iter().cycle()) {
        plane.iter_mut().for_each(|v| *v += b);
    }
}

/// Input gradient: `dx [N, C, H, W]` from `dy [N, O, OH, OW]` (`unrolled` as in [`forward`]).
fn input_grad(g: &Geometry, weight: &[f32], unrolled: Option<&[f32]>, dy: &[f32]) -> Vec<f32> {
    if let Some(m) = unrolled {
        return dense_input_grad(g, m, dy);
    }
    if cpu_conv_regions::applies(g) {
        return cpu_conv_regions::input_grad(g, weight, dy);
    }
    let (per, ohw, rows) = (g.images_per_chunk(), g.out_plane(), g.rows());
    let threads = !g.chunks_in_parallel();
    let mut dx = vec![0.0; g.batch * g.channels * g.plane()];
    for_each_chunk(g, &mut dx, g.channels * g.plane(), |chunk, dx, s| {
        let (first, n) = (chunk * per, dx.len() / (g.channels * g.plane()));
        let cols = n * ohw;
        let dy = output_matrix(g, dy, first, n, s.wide);
        // dcol (rows × cols) = weightᵀ (rows × O) · dy (O × cols)
        let wt = MatRef { data: weight, row_stride: 1, col_stride: rows };
        gemm_into(s.col, false, wt, dy, [rows, cols, g.out_channels], threads);
        for i in 0..n {
            col2im(g, s.col, cols, i * ohw, &mut dx[i * g.channels * g.plane()..][..g.channels * g.plane()]);
        }
    });
    dx
}

/// Weight gradient `[O, C·KH·KW]`: the sum over images of `dy (O × OH·OW) · colᵀ`.
fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if g.dense() {
        return dense_weight_grad(g, x, dy);
    }
    if cpu_conv_regions::applies(g) {
        return cpu_conv_regions::weight_grad(g, x, dy);
    }
    let (per, ohw, rows) = (g.images_per_chunk(), g.out_plane(), g.rows());
    let chunks = g.chunks();
    let parallel = g.chunks_in_parallel();
    let parts = weight_grad_parts(chunks, g.out_channels * rows);
    let part = |p: usize| {
        let mut acc = vec![0.0; g.out_channels * rows];
        with_scratch(g, |s| {
            let range = (p * chunks / parts)..((p + 1) * chunks / parts);
            for (k, chunk) in range.enumerate() {
                let first = chunk * per;
                let n = per.min(g.batch - first);
                let cols = n * ohw;
                load_images(g, x, first, n, s.col);
                let dy = output_matrix(g, dy, first, n, s.wide);
                let colt = MatRef { data: s.col, row_stride: 1, col_stride: cols };
                gemm_into(&mut acc, k > 0, dy, colt, [g.out_channels, rows, cols], !parallel);
            }
        });
        acc
    };
    sum_parts(0..parts, &part, parallel)
}

/// How many partial sums of `values` weights a weight gradient over `jobs` runs of work adds up.
/// They depend on the shape only (not on the threads), so the sum's rounding does not either;
/// fewer when each is large (512×4,608 weights: 9.4 MB).
pub(crate) fn weight_grad_parts(jobs: usize, values: usize) -> usize {
    jobs.min(WEIGHT_GRAD_PARTS).min((WEIGHT_GRAD_BYTES / (4 * values)).max(4)).max(1)
}

/// The sum of `part(p)` over `parts`, as a fixed binary tree (halves computed in parallel or in
/// turn), so the order of additions never changes and at most a few partial sums are alive at once.
pub(crate) fn sum_parts(
    parts: std::ops::Range<usize>,
    part: &(impl Fn(usize) -> Vec<f32> + Sync),
    parallel: bool,
) -> Vec<f32> {
    if parts.len() == 1 {
        return part(parts.start);
    }
    let mid = parts.start + parts.len() / 2;
    let left = || sum_parts(parts.start..mid, part, parallel);
    let right = || sum_parts(mid..parts.end, part, parallel);
    let (mut left, right) = if parallel { rayon::join(left, right) } else { (left(), right()) };
    left.iter_mut().zip(&right).for_each(|(l, r)| *l += r);
    left
}

/// Bias gradient `[O]`: `dy` summed over images and pixels, in a fixed order.
fn bias_grad(g: &Geometry, dy: &[f32]) -> Vec<f32> {
    let ohw = g.out_plane();
    (0..g.out_channels)
        .into_par_iter()
        .map(|o| (0..g.batch).map(|n| dy[(n * g.out_channels + o) * ohw..][..ohw].iter().sum::<f32>()).sum())
        .collect()
}

/// The backward step of [`conv_autodiff`]: parents are input, weight and (when present) bias.
#[derive(Debug)]
struct ConvBackward;

/// What the backward step keeps: the input and the `[O, C·KH·KW]` weight, contiguous, and on the
/// dense path the weight's [`unrolled`] matrix.
#[derive(Clone, Debug)]
struct ConvState {
    geometry: Geometry,
    has_bias: bool,
    x: FlexTensor,
    weight: FlexTensor,
    unrolled: Option<Arc<Vec<f32>>>,
}

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let dy = contiguous(grads.consume::<Flex>(&ops.node));
        let ConvState { geometry: g, has_bias, x, weight, unrolled } = ops.state;
        if let Some(node) = node_x {
            let dx = input_grad(&g, slice(&weight), unrolled.as_deref().map(Vec::as_slice), slice(&dy));
            grads.register::<Flex>(node.id, flex_tensor(dx, [g.batch, g.channels, g.height, g.width]));
        }
        if let Some(node) = node_weight {
            let dw = weight_grad(&g, slice(&x), slice(&dy));
            grads.register::<Flex>(node.id, flex_tensor(dw, [g.out_channels, g.channels, g.kernel[0], g.kernel[1]]));
        }
        if let Some(node) = node_bias.filter(|_| has_bias) {
            grads.register::<Flex>(node.id, flex_tensor(bias_grad(&g, slice(&dy)), [g.out_channels]));
        }
    }
}

/// [`forward`] on contiguous Flex tensors, as a `[N, O, OH, OW]` Flex tensor.
fn forward_tensors(
    g: &Geometry,
    x: &FlexTensor,
    weight: &FlexTensor,
    unrolled: Option<&[f32]>,
    bias: Option<&FlexTensor>,
) -> FlexTensor {
    let out = forward(g, slice(x), slice(weight), unrolled, bias.map(slice));
    flex_tensor(out, [g.batch, g.out_channels, g.out_height, g.out_width])
}

/// The convolution on `Flex` tensors (no autodiff).
fn conv_flex(
    g: &Geometry,
    x: Tensor<Flex, 4>,
    weight: Tensor<Flex, 4>,
    bias: Option<Tensor<Flex, 1>>,
) -> Tensor<Flex, 4> {
    let x = contiguous(x.into_primitive().tensor());
    let weight = contiguous(weight.into_primitive().tensor());
    let bias = bias.map(|b| contiguous(b.into_primitive().tensor()));
    let unrolled = dense_matrix(g, slice(&weight));
    Tensor::from_primitive(TensorPrimitive::Float(forward_tensors(g, &x, &weight, unrolled.as_deref(), bias.as_ref())))
}

/// The convolution on `Autodiff<Flex>` tensors, with [`ConvBackward`] as its gradient.
fn conv_autodiff(
    g: &Geometry,
    x: Tensor<FlexAd, 4>,
    weight: Tensor<FlexAd, 4>,
    bias: Option<Tensor<FlexAd, 1>>,
) -> Tensor<FlexAd, 4> {
    let x = x.into_primitive().tensor();
    let weight = weight.into_primitive().tensor();
    let bias = bias.map(|b| b.into_primitive().tensor());
    let xs = contiguous(x.primitive.clone());
    let ws = contiguous(weight.primitive.clone());
    let bs = bias.as_ref().map(|b| contiguous(b.primitive.clone()));
    let unrolled = dense_matrix(g, slice(&ws)).map(Arc::new);
    let out = forward_tensors(g, &xs, &ws, unrolled.as_deref().map(Vec::as_slice), bs.as_ref());
    // Without a bias the third parent is the weight again and `has_bias` keeps the backward step
    // from registering a gradient through it (as `x * x` lists `x` twice).
    let nodes = match &bias {
        Some(b) => [x.node.clone(), weight.node.clone(), b.node.clone()],
        None => [x.node.clone(), weight.node.clone(), weight.node.clone()],
    };
    let out = match ConvBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            prep.finish(ConvState { geometry: *g, has_bias: bias.is_some(), x: xs, weight: ws, unrolled }, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The convolution's geometry when fer-models' kernels cover it (groups 1, dilation 1, symmetric
/// padding, or `Same` at stride 1 with odd kernels).
fn geometry<B: Backend>(conv: &Conv2d<B>, input: [usize; 4]) -> Option<Geometry> {
    let [out_channels, channels, kh, kw] = conv.weight.dims();
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [0, 0],
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => [top, left],
        // Burn pads `Same` symmetrically for stride 1 and odd kernels (model B's convolutions).
        PaddingConfig2d::Same if conv.stride == [1, 1] && kh % 2 == 1 && kw % 2 == 1 => [kh / 2, kw / 2],
        _ => return None,
    };
    (conv.groups == 1 && conv.dilation == [1, 1] && channels == input[1])
        .then(|| Geometry::new(input, out_channels, [kh, kw], conv.stride, padding))
        .flatten()
}

/// fer-models' kernels for `conv` on `x` when the backend is burn-flex and the convolution is one
/// they cover; `x` back otherwise.
pub(crate) fn try_conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let Some(g) = geometry(conv, x.dims()) else {
        return Err(x);
    };
    let (weight, bias) = (conv.weight.val(), conv.bias.as_ref().map(|b| b.val()));
    let x = match same_type::<Tensor<B, 4>, Tensor<FlexAd, 4>>(x) {
        Ok(x) => return Ok(same_backend(conv_autodiff(&g, x, same_backend(weight), bias.map(same_backend)))),
        Err(x) => x,
    };
    let x = same_type::<Tensor<B, 4>, Tensor<Flex, 4>>(x)?;
    Ok(same_backend(conv_flex(&g, x, same_backend(weight), bias.map(same_backend))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::module::AutodiffModule;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    type Ad = burn::backend::Autodiff<Flex>;

    /// Input channels, output channels, kernel, stride, padding, bias, batch, side.
    type Case = (usize, usize, usize, usize, PaddingConfig2d, bool, usize, usize);

    const CASES: [Case; 12] = [
        (3, 8, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), true, 3, 11),
        // 5×5, 6×6 and (below) 4×4 maps at stride 1: the regions path (cpu_conv_regions); 40
        // images of 5×5: the interior in two jobs, a corner in one.
        (6, 9, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), true, 40, 5),
        (3, 4, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), false, 3, 6),
        (4, 6, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), false, 2, 9),
        (4, 6, 1, 2, PaddingConfig2d::Valid, false, 2, 9),
        // A 5×5 kernel (Same) on 8×8 maps: 28 % of the pairs on padding, the regions path with
        // five classes of rows and of columns.
        (2, 5, 5, 1, PaddingConfig2d::Same, true, 2, 8),
        (3, 4, 3, 1, PaddingConfig2d::Valid, true, 2, 7),
        (5, 7, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), true, 20, 4),
        // 4×4 output maps on im2col (stride 2): 16 images per chunk, 20 images = one full and one
        // partial chunk.
        (5, 7, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), true, 20, 8),
        // 20×20 maps, 9 images: one image per chunk, chunks in parallel.
        (3, 4, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), true, 9, 20),
        // 2×2 maps: the dense path (VGG19's last stage), and at stride 2 (1×1 output).
        (6, 5, 3, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), true, 10, 2),
        (4, 6, 3, 2, PaddingConfig2d::Explicit(1, 1, 1, 1), false, 3, 2),
    ];

    fn max_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
        let scale = b.clone().abs().max().into_scalar().max(1.0);
        (a - b).abs().max().into_scalar() / scale
    }

    #[test]
    fn values_and_gradients_equal_burns_convolution() {
        let device = Default::default();
        for (i, (cin, cout, k, stride, padding, bias, batch, side)) in CASES.into_iter().enumerate() {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(padding)
                .with_bias(bias)
                .init::<Ad>(&device);
            assert!(geometry(&conv, [batch, cin, side, side]).is_some(), "case {i} takes fer-models' path");
            let x = Tensor::<Ad, 4>::random([batch, cin, side, side], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let ours = conv2d_or_panic(&conv, x.clone());
            let burns = conv.forward(x.clone());
            assert_eq!(ours.dims(), burns.dims(), "case {i}");
            assert!(max_diff(ours.clone().inner(), burns.clone().inner()) < 1e-5, "case {i}: values");
            // A non-uniform output gradient, so that every weight tap gets a different gradient.
            let upstream = Tensor::<Ad, 4>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let g_ours = (ours * upstream.clone()).sum().backward();
            let g_burn = (burns * upstream).sum().backward();
            let dx = |g| x.grad(g).expect("x grad");
            assert!(max_diff(dx(&g_ours), dx(&g_burn)) < 1e-5, "case {i}: input gradient");
            let dw = |g| conv.weight.grad(g).expect("weight grad");
            assert!(max_diff(dw(&g_ours), dw(&g_burn)) < 1e-5, "case {i}: weight gradient");
            if let Some(b) = &conv.bias {
                let db = |g| b.grad(g).expect("bias grad");
                assert!(max_diff(db(&g_ours), db(&g_burn)) < 1e-5, "case {i}: bias gradient");
            }
            // Inference backend (no autodiff) too.
            let valid = conv.valid();
            let x = x.inner();
            assert!(max_diff(conv2d_or_panic(&valid, x.clone()), valid.forward(x)) < 1e-5, "case {i}: Flex");
        }
    }

    fn conv2d_or_panic<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
        try_conv2d(conv, x).unwrap_or_else(|_| panic!("fer-models' kernels should cover this convolution"))
    }

    #[test]
    fn dense_path_runs_on_maps_smaller_than_the_kernel() {
        let g = |side: usize, kernel: usize| {
            Geometry::new([128, 512, side, side], 512, [kernel, kernel], [1, 1], [kernel / 2, kernel / 2])
                .expect("geometry")
        };
        assert!(g(2, 3).dense(), "VGG19's 2×2 stage");
        assert!(g(1, 3).dense());
        assert!(!g(3, 3).dense(), "as many pixels as taps: im2col");
        assert!(!g(5, 3).dense());
        assert!(!g(2, 1).dense(), "1×1 kernels: im2col");
        // Too large an unrolled matrix: im2col.
        assert!(!Geometry::new([1, 4096, 4, 4], 4096, [5, 5], [1, 1], [2, 2]).expect("geometry").dense());
        // Output pixel 2 (bottom left) of a 2×2 map: its taps 1, 2, 4, 5 (top middle, top right,
        // centre, right) read input pixels 0…3; 16 links in all, 4 per output pixel.
        let links = g(2, 3).links();
        assert_eq!(links.len(), 16);
        let pixel2 = links.iter().filter(|l| l.0 == 2).map(|&(_, t, q)| (t, q)).collect::<Vec<_>>();
        assert_eq!(pixel2, [(1, 0), (2, 1), (4, 2), (5, 3)]);
    }

    #[test]
    fn input_without_gradient_gives_weight_gradients_only() {
        let device = Default::default();
        let conv =
            Conv2dConfig::new([1, 4], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init::<Ad>(&device);
        let x = Tensor::<Ad, 4>::random([2, 1, 6, 6], Distribution::Normal(0.0, 1.0), &device);
        let grads = conv2d_or_panic(&conv, x.clone()).sum().backward();
        assert!(x.grad(&grads).is_none());
        let burns = conv.forward(x).sum().backward();
        let dw = |g| conv.weight.grad(g).expect("weight grad");
        assert!(max_diff(dw(&grads), dw(&burns)) < 1e-5);
    }

    #[test]
    fn gradients_are_bitwise_reproducible() {
        let device = Default::default();
        // 64 images of 6×6 (the regions path): jobs in parallel, partial weight sums added in order.
        let conv =
            Conv2dConfig::new([8, 16], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init::<Ad>(&device);
        let x = Tensor::<Ad, 4>::random([64, 8, 6, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let run = || {
            let grads = conv2d_or_panic(&conv, x.clone()).powi_scalar(2).sum().backward();
            (x.grad(&grads).expect("x").into_data(), conv.weight.grad(&grads).expect("w").into_data())
        };
        let first = run();
        for _ in 0..3 {
            assert_eq!(run(), first);
        }
    }

    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        let device = Default::default();
        // 4×4 output maps (8×8 at stride 2), 24 images: 16 per chunk, 2 chunks, in parallel on 1
        // thread and in turn on 3; 20×20 maps, 8 images: one per chunk, in parallel on both; 2×2
        // maps: the dense path; 5×5 maps: the regions path.
        for (side, batch, stride) in [(8, 24, 2), (20, 8, 1), (2, 24, 1), (5, 40, 1)] {
            let conv = Conv2dConfig::new([6, 10], [3, 3])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init::<Ad>(&device);
            let x =
                Tensor::<Ad, 4>::random([batch, 6, side, side], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
                pool.install(|| {
                    let out = conv2d_or_panic(&conv, x.clone());
                    let grads = out.clone().powi_scalar(2).sum().backward();
                    let dx = x.grad(&grads).expect("x").into_data();
                    let dw = conv.weight.grad(&grads).expect("w").into_data();
                    (out.into_data(), dx, dw)
                })
            };
            assert_eq!(run(1), run(3), "{side}×{side} maps, stride {stride}");
        }
    }

    #[test]
    fn other_backends_and_unsupported_convolutions_go_through_burn() {
        let device = Default::default();
        let conv = Conv2dConfig::new([2, 3], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<NdArray>(&device);
        let x = Tensor::<NdArray, 4>::random([2, 2, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        assert!(try_conv2d(&conv, x.clone()).is_err());
        assert_eq!(crate::conv2d(&conv, x.clone()).into_data(), conv.forward(x).into_data());
        // Dilation 2 and groups 2 on Flex: Burn's.
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random([1, 2, 7, 7], Distribution::Normal(0.0, 1.0), &device);
        let dilated = Conv2dConfig::new([2, 2], [3, 3]).with_dilation([2, 2]).init::<Flex>(&device);
        let grouped = Conv2dConfig::new([2, 2], [3, 3]).with_groups(2).init::<Flex>(&device);
        assert!(try_conv2d(&dilated, x.clone()).is_err());
        assert!(try_conv2d(&grouped, x.clone()).is_err());
        assert_eq!(crate::conv2d(&dilated, x.clone()).into_data(), dilated.forward(x).into_data());
    }
}
