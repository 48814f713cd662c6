//! The kernels fer-rs spends its time in, on each compiled backend, with FLOP counts.
//!
//! Per backend (group `BACKEND/kernels`, batch `FER_BENCH_BATCH`, default 16):
//! * `conv3x3_64c_44px_fwd`, `conv3x3_128c_22px_fwd`, `conv3x3_256c_11px_fwd`,
//!   `conv3x3_512c_5px_fwd`, `conv3x3_512c_2px_fwd`: the convolution that repeats in each of
//!   VGG19's five stages (3×3, padding 1, bias) through Burn's `Conv2d::forward`;
//!   `…_fwd_bwd`: forward + backward (input and weight gradients); `…_fer`: the same through
//!   `fer_models::conv2d`, what the models run (fer-models' own kernels; flex only, as every
//!   other backend runs Burn's there). Criterion's `elem/s` is **FLOP/s** here (2 per multiply-add; backward counted
//!   as 2× forward).
//! * `batchnorm_64c_44px_train` (Burn's `BatchNorm`) and `batchnorm_64c_44px_train_fer`
//!   (`fer_models::batch_norm_training`, what the models train with), forward in training mode;
//!   `…_fwd_bwd`: forward + backward; `maxpool2x2_64c_44px`: all memory-bound, `elem/s` is tensor
//!   elements per second (of the forward input).
//!
//! Per backend (group `BACKEND/steps`): one reference training step (forward, cross-entropy,
//! backward, clamped SGD with momentum) of VGG19 and ResNet18 on 44×44 crops, and a TenCrop
//! evaluation batch of VGG19 (10 crops per face, logits averaged). `elem/s` is **faces per
//! second**; the FLOPs per step are printed before the group (divide to get FLOP/s). On ndarray
//! only the kernels run (a VGG19 step takes minutes there) unless `FER_BENCH_NDARRAY_STEPS=1`.
//!
//! Once (group `cpu/features`, one thread): sliding-window HOG (2,592 values) and dlib's 68
//! landmarks of a 48×48 face; `elem/s` is faces per second.
//!
//! `cargo bench --bench kernels` (CPU: flex and ndarray) · a subset: `cargo bench --bench kernels
//! -- flex/kernels` · on a GPU machine: `FER_BENCH_BATCH=128 cargo bench --bench kernels
//! --features cuda` (or `wgpu`).

use burn::module::AutodiffModule;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::module::max_pool2d;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use fer_rs::dataset::FaceImage;
#[cfg(feature = "dlib")]
use fer_rs::features::{LandmarkModel, landmark_model_path};
use fer_rs::features::{face_hogs, sliding_hog};
use fer_rs::models::{
    ModelConfig, NormStatistics, average_crops, batch_norm_training, conv2d, conv2d_flops, ten_crops,
};
use fer_rs::train::{TrainConfig, TrainStep};

fn batch() -> usize {
    std::env::var("FER_BENCH_BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(16)
}

fn gflop(flops: u64) -> String {
    format!("{:.3} GFLOP", flops as f64 / 1e9)
}

/// Conv forward and forward + backward at `channels` → `channels`, `side` px; `with_fer`: also
/// through `fer_models::conv2d`.
fn conv<B: AutodiffBackend>(
    group: &mut BenchmarkGroup<WallTime>,
    device: &B::Device,
    (channels, side): (usize, usize),
    with_fer: bool,
) {
    let n = batch();
    let conv = Conv2dConfig::new([channels, channels], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init::<B>(device);
    let inner = conv.valid();
    let x = Tensor::<B, 4>::random([n, channels, side, side], Distribution::Uniform(0.0, 1.0), device);
    let flops = n as u64 * conv2d_flops(channels, channels, 3, side);
    let sync = || B::sync(device).expect("device sync");
    eprintln!(
        "conv3x3 {channels}c {side}px, batch {n}: forward {}, forward + backward {}",
        gflop(flops),
        gflop(3 * flops)
    );
    // `…_fer`: the same convolution through `fer_models::conv2d`, what the models run: on flex
    // fer-models' im2col + GEMM kernels; elsewhere Burn's, the rows above (not timed twice).
    let x_inner = x.clone().inner();
    let x = x.require_grad();
    let variants: &[(&str, bool)] = if with_fer { &[("", false), ("_fer", true)] } else { &[("", false)] };
    for &(suffix, ours) in variants {
        group.throughput(Throughput::Elements(flops));
        group.bench_function(format!("conv3x3_{channels}c_{side}px_fwd{suffix}"), |b| {
            b.iter(|| {
                let _ = if ours { conv2d(&inner, x_inner.clone()) } else { inner.forward(x_inner.clone()) };
                sync();
            })
        });
        group.throughput(Throughput::Elements(3 * flops));
        group.bench_function(format!("conv3x3_{channels}c_{side}px_fwd_bwd{suffix}"), |b| {
            b.iter(|| {
                let out = if ours { conv2d(&conv, x.clone()) } else { conv.forward(x.clone()) };
                let _grads = out.sum().backward();
                sync();
            })
        });
    }
}

fn kernels<B: AutodiffBackend>(c: &mut Criterion, backend: &str, device: &B::Device) {
    let n = batch();
    let mut group = c.benchmark_group(format!("{backend}/kernels"));
    group.sample_size(10);
    for layer in [(64, 44), (128, 22), (256, 11), (512, 5), (512, 2)] {
        conv::<B>(&mut group, device, layer, backend == "flex");
    }

    let sync = || B::sync(device).expect("device sync");
    let x = Tensor::<B, 4>::random([n, 64, 44, 44], Distribution::Uniform(0.0, 1.0), device);
    group.throughput(Throughput::Elements((n * 64 * 44 * 44) as u64));
    // On an autodiff backend Burn's BatchNorm uses batch statistics and updates running ones.
    // `…_train`: Burn's `BatchNorm::forward`; `…_train_fer`: fer-models' formulation, the one its
    // models train with (same results; faster on burn-flex, to be seen on the GPU backends).
    // The forward rows use a copy whose parameters take no gradient: with them tracked, each
    // forward without a backward leaves its graph to the autodiff backend, and the rows then time
    // that bookkeeping as well (on flex, fer-models' forward then took longer than its forward +
    // backward).
    let bn = BatchNormConfig::new(64).init::<B>(device);
    let bn_forward = bn.clone().no_grad();
    group.bench_function("batchnorm_64c_44px_train", |b| {
        b.iter(|| {
            let _ = bn_forward.forward(x.clone());
            sync();
        })
    });
    group.bench_function("batchnorm_64c_44px_train_fer", |b| {
        b.iter(|| {
            let _ = batch_norm_training(&bn_forward, x.clone(), NormStatistics::BatchUpdate);
            sync();
        })
    });
    let x_grad = x.clone().require_grad();
    group.bench_function("batchnorm_64c_44px_train_fwd_bwd", |b| {
        b.iter(|| {
            let _grads = bn.forward(x_grad.clone()).sum().backward();
            sync();
        })
    });
    group.bench_function("batchnorm_64c_44px_train_fer_fwd_bwd", |b| {
        b.iter(|| {
            let _grads = batch_norm_training(&bn, x_grad.clone(), NormStatistics::BatchUpdate).sum().backward();
            sync();
        })
    });
    let x_inner = x.inner();
    group.bench_function("maxpool2x2_64c_44px", |b| {
        b.iter(|| {
            let _ = max_pool2d(x_inner.clone(), [2, 2], [2, 2], [0, 0], [1, 1], false);
            sync();
        })
    });
    group.finish();
}

fn steps<B: AutodiffBackend>(c: &mut Criterion, backend: &str, device: &B::Device) {
    let n = batch();
    let mut group = c.benchmark_group(format!("{backend}/steps"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    for name in ["vgg19", "resnet18"] {
        let model = ModelConfig::from_name(name).expect("known model");
        eprintln!(
            "{name} training step, batch {n} at 44×44: {} (3 × forward)",
            gflop(3 * n as u64 * model.forward_flops(44))
        );
        let config = TrainConfig { batch_size: n, ..TrainConfig::reference(model) };
        let mut step = TrainStep::<B>::new(&config, device).expect("valid config");
        group.bench_function(format!("{name}_train_step"), |b| b.iter(|| step.run().expect("step")));
    }
    let config = ModelConfig::from_name("vgg19").expect("known model");
    eprintln!(
        "vgg19 TenCrop evaluation, {n} faces: {} (10 crops × forward)",
        gflop(10 * n as u64 * config.forward_flops(44))
    );
    let model = config.init::<B::InnerBackend>(device);
    let faces = Tensor::<B::InnerBackend, 4>::random([n, 1, 48, 48], Distribution::Uniform(0.0, 1.0), device);
    group.bench_function("vgg19_tencrop_eval", |b| {
        b.iter(|| {
            let _ = average_crops(model.forward_inference(ten_crops(faces.clone(), 44)), 10);
            B::sync(device).expect("device sync");
        })
    });
    group.finish();
}

fn features(c: &mut Criterion) {
    let face = FaceImage::from_slice(&(0..48 * 48).map(|i| ((i * 37 + i / 48 * 11) % 256) as u8).collect::<Vec<_>>())
        .expect("48×48");
    let mut group = c.benchmark_group("cpu/features");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sliding_hog_face", |b| b.iter(|| sliding_hog(std::hint::black_box(&face))));
    group.bench_function("both_hogs_face", |b| b.iter(|| face_hogs(std::hint::black_box(&face))));
    #[cfg(feature = "dlib")]
    match LandmarkModel::open(None) {
        Ok(model) => {
            group.bench_function("landmarks_face", |b| b.iter(|| model.face_landmarks(std::hint::black_box(&face))));
        }
        Err(e) => eprintln!("landmarks skipped: {e} ({})", landmark_model_path(None).display()),
    }
    #[cfg(not(feature = "dlib"))]
    eprintln!("landmarks skipped: built without the dlib feature");
    group.finish();
}

/// Kernels and, when `with_steps`, whole-model steps on one backend.
fn backend<B: AutodiffBackend>(c: &mut Criterion, name: &str, with_steps: bool) {
    let device = Default::default();
    kernels::<B>(c, name, &device);
    if with_steps {
        steps::<B>(c, name, &device);
    }
}

fn all(c: &mut Criterion) {
    use burn::backend::Autodiff;
    // As the `fer` binary: freed tensors' memory is reused, not unmapped (fer_models docs).
    fer_rs::models::keep_freed_memory();
    #[cfg(feature = "flex")]
    backend::<Autodiff<burn::backend::Flex>>(c, "flex", true);
    #[cfg(feature = "ndarray")]
    backend::<Autodiff<burn::backend::NdArray>>(
        c,
        "ndarray",
        std::env::var("FER_BENCH_NDARRAY_STEPS").is_ok_and(|v| v == "1"),
    );
    #[cfg(feature = "cuda")]
    backend::<Autodiff<burn::backend::Cuda>>(c, "cuda", true);
    #[cfg(feature = "wgpu")]
    backend::<Autodiff<burn::backend::Wgpu>>(c, "wgpu", true);
    features(c);
}

// No HTML plots (see attack_step.rs): read the terminal or target/criterion/*/new/estimates.json.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = all
}
criterion_main!(benches);
