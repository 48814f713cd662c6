//! The CNN+features model learns through either branch (ndarray, tiny config).

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::batcher::Batcher;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use fer_dataset::{FaceBatcher, FaceItem, View};
use fer_models::{CnnHog, CnnHogConfig};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

type B = Autodiff<NdArray>;
const FEATURES: usize = 16;

/// Trains on (images, features) → labels and returns training accuracy.
fn fit(images: Tensor<B, 4>, features: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> f64 {
    let device = Default::default();
    <B as Backend>::seed(&device, 3);
    let mut model: CnnHog<B> = CnnHogConfig::tiny(FEATURES).with_dropout(0.0).init(&device);
    let mut optim = AdamConfig::new().init::<B, CnnHog<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    for _ in 0..40 {
        let loss = loss_fn.forward(model.forward(images.clone(), features.clone()), labels.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    // Batch statistics (dropout is 0): the function the loss optimised. With constant images the
    // BatchNorm running statistics are still far from the batch's after 40 steps.
    let logits = model.forward(images, features);
    let hits: i64 = logits.argmax(1).squeeze_dim::<1>(1).equal(labels).int().sum().into_scalar();
    hits as f64 / 28.0
}

#[test]
fn learns_from_the_image_branch_and_from_the_feature_branch() {
    let device = Default::default();
    let split = fer_dataset::synthetic::texture_split(28, 4);
    let items: Vec<FaceItem> =
        (0..28).map(|i| FaceItem { index: i, label: split.label(i), image: split.image(i).clone() }).collect();
    let textured: Tensor<B, 4> = FaceBatcher::new(View::Full, 0, 28).batch(items, &device).images;
    let labels_i64: Vec<i64> = (0..28).map(|i| (i % 7) as i64).collect();
    let labels = Tensor::<B, 1, Int>::from_data(TensorData::new(labels_i64.clone(), [28]), &device);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let noise: Vec<f32> = (0..28 * FEATURES).map(|_| rng.random_range(0.0..1.0)).collect();
    let noise = Tensor::<B, 2>::from_data(TensorData::new(noise, [28, FEATURES]), &device);
    // Informative features: the class as a one-hot code plus noise.
    let coded: Vec<f32> = (0..28 * FEATURES)
        .map(|j| {
            let (face, k) = (j / FEATURES, j % FEATURES);
            f32::from(u8::from(k == face % 7)) + 0.1 * rng.random_range(0.0..1.0f32)
        })
        .collect();
    let coded = Tensor::<B, 2>::from_data(TensorData::new(coded, [28, FEATURES]), &device);
    let blank = Tensor::<B, 4>::full([28, 1, 48, 48], 0.5, &device); // no information in the images

    let through_images = fit(textured, noise, labels.clone());
    assert!(through_images > 0.9, "image branch: {through_images}");
    let through_features = fit(blank, coded, labels);
    assert!(through_features > 0.9, "feature branch: {through_features}");
}
