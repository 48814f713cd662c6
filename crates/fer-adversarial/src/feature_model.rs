//! Attacks on the CNN + landmarks + HOG model of `fer train-features` (the reference's model B),
//! through its whole pipeline: pixels → landmarks and HOG → model.

use std::sync::Arc;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fer_dataset::{BatchStream, FACE_PIXELS, FaceBatcher, FaceImage, SplitData, View};
use fer_models::fer_features::{FeatureSet, LandmarkModel, feature_vector};
use fer_models::{CnnHog, scale_feature_row};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::robustness::{Tally, sweep_points};
use crate::{Attack, AttackError, Labels, Robustness, RobustnessConfig, SweepPoint, perturb};

/// Attacks every face of `split` through the whole CNN + landmarks + HOG pipeline and scores the
/// model before and after, as [`crate::evaluate_robustness`] does for the image classifiers.
///
/// * **The attack** differentiates [`CnnHog::logits_from_pixels`] of a frozen copy in inference
///   mode: the gradient reaches the pixels through the image branch and through the HOG (binning
///   held at the nearest 8-bit face's); the landmarks, piecewise constant in the pixels, add none.
/// * **The score** runs the real pipeline on 8-bit faces: the adversarial faces are put back on
///   the 8-bit grid (each pixel moved to the 8-bit level next to its attacked value on the side of
///   the clean one, so `‖x' − x‖∞ ≤ ε` still holds: ε = 0.3 allows 76 levels, not 76.5), and their
///   landmarks and HOG are computed anew by [`feature_vector`], exactly as for a photo in
///   `fer predict`. The clean faces are scored the same way.
///
/// Only the full-face view exists for this model: TenCrop and the centre crop are refused, as is a
/// model whose feature length is not `set`'s. `on_batch` gets the number of faces done.
pub fn evaluate_feature_model_robustness<B: AutodiffBackend>(
    model: &CnnHog<B>,
    set: FeatureSet,
    landmarks: &LandmarkModel,
    split: Arc<SplitData>,
    config: &RobustnessConfig,
    device: &B::Device,
    mut on_batch: impl FnMut(usize),
) -> Result<Robustness, AttackError> {
    config.check()?;
    if config.view() != View::Full {
        return Err(AttackError::Config(
            "the CNN + landmarks + HOG model reads whole 48×48 faces: TenCrop and the centre crop do not apply".into(),
        ));
    }
    if model.feature_len() != set.len() {
        return Err(AttackError::Config(format!(
            "the model takes {} features per face, the {} set has {}",
            model.feature_len(),
            set.name(),
            set.len()
        )));
    }
    let frozen = model.clone().no_grad();
    let forward = |x: Tensor<B, 4>| frozen.logits_from_pixels(x, set, landmarks);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut tally = Tally::new(split.len());
    let order: Vec<usize> = (0..split.len()).collect();
    let batcher = FaceBatcher::new(View::Full, 0, split.len());
    for batch in BatchStream::<B>::new(split.clone(), order, config.batch_faces, batcher, 2, device.clone()) {
        let faces = batch.targets.dims()[0];
        let clean: Vec<FaceImage> = (tally.done..tally.done + faces).map(|i| split.image(i).clone()).collect();
        let clean_logits = pipeline_logits(&frozen, &clean, set, landmarks, device);
        let labels = Labels::from_source(config.labels, batch.targets.clone());
        let attacked = perturb(&config.attack, forward, batch.images, labels, &mut rng)?;
        let adversarial = onto_eight_bit_grid(&clean, &attacked);
        let levels = clean
            .iter()
            .zip(&adversarial)
            .flat_map(|(c, a)| c.pixels().iter().zip(a.pixels()).map(|(&c, &a)| c.abs_diff(a)))
            .max()
            .unwrap_or(0);
        let adversarial_logits = pipeline_logits(&frozen, &adversarial, set, landmarks, device);
        tally.record(clean_logits, adversarial_logits, batch.targets, f64::from(levels) / 255.0);
        on_batch(tally.done);
    }
    Ok(tally.finish(config, split.labels()))
}

/// [`crate::eps_sweep`] for the CNN + landmarks + HOG model: each attack of `attacks` at each
/// budget of `eps`, scored by [`evaluate_feature_model_robustness`].
#[allow(clippy::too_many_arguments)]
pub fn feature_model_eps_sweep<B: AutodiffBackend>(
    model: &CnnHog<B>,
    set: FeatureSet,
    landmarks: &LandmarkModel,
    split: Arc<SplitData>,
    attacks: &[Attack],
    eps: &[f64],
    base: &RobustnessConfig,
    device: &B::Device,
    on_point: impl FnMut(&SweepPoint),
) -> Result<Vec<SweepPoint>, AttackError> {
    sweep_points(
        attacks,
        eps,
        base,
        |config| evaluate_feature_model_robustness(model, set, landmarks, split.clone(), config, device, |_| {}),
        on_point,
    )
}

/// The model's logits in inference mode on 8-bit faces, with their features as
/// [`feature_vector`] computes them (the pipeline of `fer predict` and `fer eval-features`).
fn pipeline_logits<B: Backend>(
    model: &CnnHog<B>,
    faces: &[FaceImage],
    set: FeatureSet,
    landmarks: &LandmarkModel,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut pixels = Vec::with_capacity(faces.len() * FACE_PIXELS);
    let mut rows = Vec::with_capacity(faces.len() * set.len());
    for face in faces {
        pixels.extend(face.pixels().iter().map(|&p| f32::from(p) / 255.0));
        let mut row = feature_vector(face, landmarks, set);
        scale_feature_row(&mut row);
        rows.extend(row);
    }
    let side = fer_dataset::FACE_SIDE;
    let images = Tensor::from_data(TensorData::new(pixels, [faces.len(), 1, side, side]), device);
    let features = Tensor::from_data(TensorData::new(rows, [faces.len(), set.len()]), device);
    model.forward_inference(images, features).detach()
}

/// The attacked faces (`[N, 1, 48, 48]` in `[0, 1]`) as 8-bit faces no further from `clean` than
/// they are: each pixel's change in 8-bit levels rounded toward zero (within 1e-3 of a level, up,
/// so float error does not cost a level).
fn onto_eight_bit_grid<B: Backend>(clean: &[FaceImage], attacked: &Tensor<B, 4>) -> Vec<FaceImage> {
    let values: Vec<f32> = attacked.clone().into_data().convert::<f32>().to_vec().unwrap_or_default();
    clean
        .iter()
        .zip(values.chunks_exact(FACE_PIXELS))
        .map(|(face, attacked)| {
            let pixels: Vec<u8> = face
                .pixels()
                .iter()
                .zip(attacked)
                .map(|(&c, &a)| {
                    let change = f64::from(a) * 255.0 - f64::from(c);
                    let levels = if change >= 0.0 { (change + 1e-3).floor() } else { (change - 1e-3).ceil() };
                    (f64::from(c) + levels).clamp(0.0, 255.0) as u8
                })
                .collect();
            FaceImage::from_slice(&pixels).unwrap_or_else(|| face.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use fer_dataset::Emotion;
    use fer_models::CnnHogConfig;

    type B = Autodiff<NdArray>;

    #[test]
    fn attacked_faces_go_onto_the_grid_without_leaving_the_budget() {
        let clean = vec![FaceImage::filled(100), FaceImage::filled(200)];
        let device = Default::default();
        let mut values = vec![0.0f32; 2 * FACE_PIXELS];
        // +76.5 levels, −76.5 levels, a float-noisy +3, the top of the range, no change.
        values[0] = (100.0 + 76.5) / 255.0;
        values[1] = (100.0 - 76.5) / 255.0;
        values[2] = 100.0 / 255.0 + 3.0 / 255.0;
        values[3] = 1.0;
        values[4..FACE_PIXELS].iter_mut().for_each(|v| *v = 100.0 / 255.0);
        values[FACE_PIXELS] = 1.0;
        values[FACE_PIXELS + 1..].iter_mut().for_each(|v| *v = 200.0 / 255.0);
        let attacked = Tensor::<B, 4>::from_data(TensorData::new(values, [2, 1, 48, 48]), &device);
        let faces = onto_eight_bit_grid(&clean, &attacked);
        assert_eq!(faces[0].pixels()[..5], [176, 24, 103, 255, 100]);
        assert!(faces[0].pixels()[5..].iter().all(|&p| p == 100));
        assert_eq!(faces[1].pixels()[0], 255);
        assert!(faces[1].pixels()[1..].iter().all(|&p| p == 200));
    }

    /// Faces with structure (so landmarks and HOG vary), labels spread over the classes.
    fn split(faces: usize) -> Arc<SplitData> {
        let mut split = SplitData::new();
        for i in 0..faces {
            let pixels: Vec<u8> = (0..FACE_PIXELS)
                .map(|p| ((p % 48) * (2 + i % 5) + (p / 48) * (1 + i % 3) + (p * 31 + i) % 17) as u8)
                .collect();
            split.push(Emotion::ALL[i % 7], FaceImage::from_slice(&pixels).expect("48×48"));
        }
        Arc::new(split)
    }

    fn landmarks() -> Option<LandmarkModel> {
        let path = fer_models::fer_features::landmark_model_path(None);
        if !path.is_file() {
            eprintln!("skipped: {} not found (apt-get install libdlib-data)", path.display());
            return None;
        }
        Some(LandmarkModel::open(None).expect("the Debian model loads"))
    }

    #[test]
    fn the_attack_raises_the_pipeline_loss_within_the_budget_and_eps_zero_changes_nothing() {
        let Some(landmarks) = landmarks() else { return };
        let device = Default::default();
        let set = FeatureSet::LandmarksSlidingHog;
        let model = CnnHogConfig::tiny(set.len()).init::<B>(&device);
        // Burn initialises parameters lazily, each clone on its own: materialise them once, so
        // every run below attacks the same weights.
        let _ = model.num_params();
        let split = split(12);
        let run = |attack: Attack| {
            let config = RobustnessConfig {
                labels: crate::LabelSource::True,
                batch_faces: 5,
                ..RobustnessConfig::reference(attack)
            };
            evaluate_feature_model_robustness(&model, set, &landmarks, split.clone(), &config, &device, |_| {})
                .expect("valid")
        };
        let none = run(Attack::fgsm(0.0));
        assert_eq!((none.flipped, none.max_perturbation), (0, 0.0));
        assert_eq!(none.clean, none.adversarial);
        assert_eq!(none.clean.faces(), 12);

        for attack in [Attack::fgsm(8.0 / 255.0), Attack::pgd(8.0 / 255.0, 3)] {
            let result = run(attack);
            assert_eq!(result.clean, none.clean, "the clean score does not depend on the attack");
            assert!(
                result.max_perturbation > 0.0 && result.max_perturbation <= 8.0 / 255.0 + 1e-9,
                "{attack:?}: {}",
                result.max_perturbation
            );
            // On the real pipeline (8-bit faces, landmarks and HOG computed anew) the loss rises.
            assert!(
                result.adversarial.mean_loss() > result.clean.mean_loss() + 1e-3,
                "{attack:?}: loss {} clean → {} attacked",
                result.clean.mean_loss(),
                result.adversarial.mean_loss()
            );
        }
    }

    #[test]
    fn crops_and_a_model_of_another_feature_length_are_refused() {
        let Some(landmarks) = landmarks() else { return };
        let device = Default::default();
        let model = CnnHogConfig::tiny(FeatureSet::LandmarksWholeHog.len()).init::<B>(&device);
        let tencrop = RobustnessConfig { tencrop: Some(44), ..RobustnessConfig::reference(Attack::fgsm(0.1)) };
        let set = FeatureSet::LandmarksWholeHog;
        let error = evaluate_feature_model_robustness(&model, set, &landmarks, split(2), &tencrop, &device, |_| {})
            .expect_err("TenCrop");
        assert!(error.to_string().contains("whole 48×48 faces"), "{error}");
        let reference = RobustnessConfig::reference(Attack::fgsm(0.1));
        let other = FeatureSet::LandmarksSlidingHog;
        let error = evaluate_feature_model_robustness(&model, other, &landmarks, split(2), &reference, &device, |_| {})
            .expect_err("another feature length");
        assert!(error.to_string().contains("takes 208 features"), "{error}");
    }
}
