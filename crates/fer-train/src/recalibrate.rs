//! BatchNorm running statistics recomputed from clean faces.
//!
//! Adversarial training as the reference does it runs the clean and the perturbed batch through
//! the model in training mode, so every BatchNorm layer's running mean and variance (what
//! inference uses) track a mixture of clean and perturbed activations. Recalibrating replaces
//! them with statistics of clean faces only, without touching any trained weight.

use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use fer_dataset::{FaceBatcher, SplitData, View, face_loader};
use fer_models::Model;

/// Runs `batches` training-mode forward passes of `model` over seeded, shuffled batches of
/// `batch_size` faces of `faces` seen through `view` (no loss, no gradient step), so that each
/// BatchNorm running statistic becomes `0.9^batches × old + (1 − 0.9^batches) × (average of
/// the batches' statistics)` with Burn's momentum 0.1: 100 batches leave 2.7e-5 of the old value.
/// Returns the number of faces seen. The loader wraps around when `faces` has fewer batches.
/// A model without BatchNorm ([`Model::has_batch_norm`]: the GroupNorm VGG) is refused: it has
/// no statistics to recompute.
pub fn recalibrate_batch_norm<B: AutodiffBackend>(
    model: &Model<B>,
    faces: Arc<SplitData>,
    view: View,
    batch_size: usize,
    batches: usize,
    seed: u64,
    device: &B::Device,
) -> Result<usize, String> {
    view.check()?;
    if !model.has_batch_norm() {
        return Err("the model has no BatchNorm layers (GroupNorm), so no running statistics to recalibrate".into());
    }
    if batch_size == 0 || batches == 0 {
        return Err(format!("batch size ({batch_size}) and batches ({batches}) must be positive"));
    }
    if faces.is_empty() {
        return Err("no faces to recalibrate on".into());
    }
    let len = faces.len();
    let mut seen = 0;
    let mut pass = 0u64;
    while seen < batches * batch_size {
        let batcher = FaceBatcher::new(view, seed.wrapping_add(pass), len);
        let loader = face_loader::<B>(faces.clone(), batcher, batch_size, Some(seed.wrapping_add(pass)), 0, device);
        for batch in loader.iter() {
            if seen >= batches * batch_size {
                break;
            }
            seen += batch.targets.dims()[0];
            // Training mode on an autodiff backend: BatchNorm uses and records batch statistics.
            drop(model.forward(batch.images));
        }
        pass += 1;
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::module::Module;
    use fer_dataset::{Emotion, FaceImage};
    use fer_models::ModelConfig;

    type B = Autodiff<NdArray>;

    /// `n` synthetic faces whose pixels lie in [lo, hi].
    fn faces(n: usize, lo: u8, hi: u8) -> Arc<SplitData> {
        let mut split = SplitData::new();
        for i in 0..n {
            let span = usize::from(hi - lo) + 1;
            let pixels: Vec<u8> = (0..48 * 48).map(|p| lo + ((p * 7 + i * 13) % span) as u8).collect();
            split.push(Emotion::ALL[i % 7], FaceImage::from_slice(&pixels).expect("48×48 face"));
        }
        Arc::new(split)
    }

    fn inference_logits(model: &Model<B>, faces: &Arc<SplitData>) -> Vec<f32> {
        let device = Default::default();
        let valid = model.valid();
        let loader =
            face_loader::<NdArray>(faces.clone(), FaceBatcher::new(View::CenterCrop(44), 0, 8), 8, None, 0, &device);
        let batch = loader.iter().next().expect("one batch");
        valid.forward(batch.images).into_data().to_vec().expect("f32")
    }

    #[test]
    fn statistics_depend_only_on_the_recalibration_faces() {
        let device = Default::default();
        let config = ModelConfig::from_name("vgg-small").expect("known");
        // Two models with the same weights and their own statistics (`clone` would share them).
        let model_a: Model<B> = config.init(&device);
        let model_b = config.init::<B>(&device).load_record(model_a.clone().into_record());
        assert_eq!(inference_logits(&model_a, &faces(8, 0, 255)), inference_logits(&model_b, &faces(8, 0, 255)));
        let bright = faces(16, 150, 255);
        let view = View::RandomCropFlip(44);
        // b starts from other statistics: those of dark faces.
        recalibrate_batch_norm(&model_b, faces(16, 0, 60), view, 8, 30, 3, &device).expect("runs");
        let before_a = inference_logits(&model_a, &bright);
        let before_b = inference_logits(&model_b, &bright);
        assert!(before_a.iter().zip(&before_b).any(|(a, b)| (a - b).abs() > 1e-3), "the dark pass changed nothing");
        for model in [&model_a, &model_b] {
            assert_eq!(recalibrate_batch_norm(model, bright.clone(), view, 8, 150, 5, &device), Ok(1200));
        }
        let after_a = inference_logits(&model_a, &bright);
        let after_b = inference_logits(&model_b, &bright);
        for (i, (a, b)) in after_a.iter().zip(&after_b).enumerate() {
            assert!((a - b).abs() <= 1e-3 * (1.0 + b.abs()), "logit {i}: {a} vs {b}");
        }
        assert!(after_a.iter().zip(&before_a).any(|(a, b)| (a - b).abs() > 1e-3), "recalibration changed nothing");
    }

    #[test]
    fn a_model_without_batch_norm_is_refused() {
        let device = Default::default();
        let config = ModelConfig::Vgg(fer_models::VggConfig::small().with_group_norm_groups(Some(8)));
        let model: Model<B> = config.init(&device);
        let err = recalibrate_batch_norm(&model, faces(8, 0, 255), View::CenterCrop(44), 8, 1, 0, &device);
        assert!(err.expect_err("refused").contains("no BatchNorm layers"));
    }

    #[test]
    fn bad_arguments_are_named() {
        let device = Default::default();
        let model: Model<B> = ModelConfig::from_name("vgg-small").expect("known").init(&device);
        let view = View::RandomCropFlip(44);
        let err = recalibrate_batch_norm(&model, faces(4, 0, 255), view, 8, 0, 0, &device);
        assert!(err.expect_err("0 batches").contains("batches (0)"));
        let err = recalibrate_batch_norm(&model, Arc::new(SplitData::new()), view, 8, 1, 0, &device);
        assert!(err.expect_err("no faces").contains("no faces"));
    }
}
