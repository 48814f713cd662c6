//! Cost of an FGSM step against the model's own forward and forward + backward.
//!
//! An FGSM step is one forward and one backward through a frozen, inference-mode model (input
//! gradient only); it should cost about one training forward + backward. Measured side by side
//! on each compiled backend, batch of `FER_BENCH_BATCH` (16) 48×48 faces, model
//! `FER_BENCH_MODEL` (vgg19). Criterion's "elem/s" is images per second.
//!
//! `cargo bench --bench attack_step` (CPU: flex) · on a GPU machine add `--features cuda` or
//! `--features wgpu`.

use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, TensorData};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fer_rs::adversarial::{Attack, Labels, perturb};
use fer_rs::models::{Classifier, ModelConfig};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

fn settings() -> (String, usize) {
    let model = std::env::var("FER_BENCH_MODEL").unwrap_or_else(|_| "vgg19".into());
    let batch = std::env::var("FER_BENCH_BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(16);
    (model, batch)
}

fn bench_backend<B: AutodiffBackend>(c: &mut Criterion, backend: &str, device: B::Device) {
    let (name, batch) = settings();
    let config = ModelConfig::from_name(&name).expect("FER_BENCH_MODEL names a model");
    let model = config.init::<B>(&device);
    let frozen = model.clone().no_grad();
    let inference = model.valid();
    let images = Tensor::<B, 4>::random([batch, 1, 48, 48], Distribution::Uniform(0.0, 1.0), &device);
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 7).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [batch]), &device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let sync = || B::sync(&device).expect("device sync");

    let mut group = c.benchmark_group(format!("{backend}/{name}/batch{batch}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function("inference_forward", |b| {
        b.iter(|| {
            let _ = inference.forward(images.clone().inner());
            sync();
        })
    });
    group.bench_function("train_forward_backward", |b| {
        b.iter(|| {
            let loss = loss_fn.forward(model.forward(images.clone()), targets.clone());
            let _grads = loss.backward();
            sync();
        })
    });
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    group.bench_function("fgsm_step", |b| {
        b.iter(|| {
            let forward = |x| frozen.logits_inference(x);
            let _ = perturb(&Attack::fgsm(0.3), forward, images.clone(), Labels::Predicted, &mut rng).expect("attack");
            sync();
        })
    });
    group.finish();
}

fn attack_step(c: &mut Criterion) {
    // As the `fer` binary: freed tensors' memory is reused, not unmapped (fer_models docs).
    fer_rs::models::keep_freed_memory();
    #[cfg(feature = "flex")]
    bench_backend::<burn::backend::Autodiff<burn::backend::Flex>>(c, "flex", Default::default());
    #[cfg(feature = "cuda")]
    bench_backend::<burn::backend::Autodiff<burn::backend::Cuda>>(c, "cuda", Default::default());
    #[cfg(feature = "wgpu")]
    bench_backend::<burn::backend::Autodiff<burn::backend::Wgpu>>(c, "wgpu", Default::default());
}

// No HTML plots: criterion's plotters backend finds no font where plotters is built with
// ab_glyph (as fer-train builds it), and the figures that matter are in the terminal output.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = attack_step
}
criterion_main!(benches);
