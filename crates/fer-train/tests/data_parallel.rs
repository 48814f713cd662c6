//! Data-parallel training over two or three CPU "devices" (the same CPU: one replica thread each)
//! on the synthetic texture task (ndarray): same accuracy as one device at the same global batch,
//! the same seed gives the same run (also with three replicas and adversarial training), a run
//! moves between device counts through its checkpoints, and adversarial training works sharded.

use std::sync::{Arc, Mutex};

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use burn::tensor::TensorData;
use fer_adversarial::{Attack, RobustnessConfig, evaluate_robustness};
use fer_dataset::Split;
use fer_dataset::synthetic::texture_data;
use fer_models::{ModelConfig, VggConfig, load_checkpoint};
use fer_train::{AdversarialTraining, RunFiles, TrainConfig, TrainOptions, read_metrics, train_on_devices};

type B = Autodiff<NdArray>;

/// Burn's CPU backends keep one global RNG: runs that seed it must not interleave.
static SERIAL: Mutex<()> = Mutex::new(());

mod common;

/// Global batch 8: 4 faces per replica on two devices.
fn config() -> TrainConfig {
    common::small_config(5)
}

#[test]
fn two_devices_match_one_device_at_the_same_global_batch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = texture_data(49, 21, 5);
    let options = TrainOptions { progress: false, ..TrainOptions::default() };
    let device = burn::backend::ndarray::NdArrayDevice::default();

    let one_dir = tempfile::tempdir().expect("tempdir");
    let one = train_on_devices::<B>(&config(), &data, one_dir.path(), &options, &[device]).expect("one device");
    let two_dir = tempfile::tempdir().expect("tempdir");
    let two = train_on_devices::<B>(&config(), &data, two_dir.path(), &options, &[device, device]).expect("two");
    eprintln!(
        "PublicTest: one device {:.3}, two devices {:.3}; PrivateTest {:.3} vs {:.3}",
        one.selected_public_acc, two.selected_public_acc, one.selected_private_acc, two.selected_private_acc
    );
    // Same global batch and gradient (the sharded gradient equals the whole-batch one, tested in
    // the unit tests); BatchNorm statistics per shard and dropout masks differ, so the
    // curves are close, not equal. Tolerance: both learn the task, within 15 points of each other.
    for d in [&one_dir, &two_dir] {
        for r in read_metrics(&d.path().join("metrics.csv")).expect("metrics") {
            eprintln!("epoch {} loss {:.4} acc {:.3} public {:.3}", r.epoch, r.train_loss, r.train_acc, r.public_acc);
        }
    }
    assert!(one.selected_public_acc > 0.9 && two.selected_public_acc > 0.9, "{one:?}\n{two:?}");
    assert!((one.selected_private_acc - two.selected_private_acc).abs() <= 0.15, "{one:?}\n{two:?}");
    let rows = read_metrics(&two_dir.path().join("metrics.csv")).expect("metrics");
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.train_loss.is_finite() && r.train_acc > 0.0), "{rows:?}");
}

#[test]
fn a_run_resumes_on_another_number_of_devices() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = texture_data(49, 21, 5);
    let device = burn::backend::ndarray::NdArrayDevice::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let first = TrainOptions { progress: false, stop_after: Some(3), ..TrainOptions::default() };
    let part = train_on_devices::<B>(&config(), &data, dir.path(), &first, &[device, device]).expect("2 devices");
    assert_eq!(part.completed_epochs, 3);
    let rest = TrainOptions { progress: false, resume: true, ..TrainOptions::default() };
    let done = train_on_devices::<B>(&config(), &data, dir.path(), &rest, &[device]).expect("1 device");
    assert_eq!(done.completed_epochs, 5);
    assert!(done.selected_public_acc > 0.9, "{done:?}");
}

/// Trains `config` twice from its seed on `replicas` replica threads for two epochs; asserts that
/// both runs give the same per-epoch figures and the same logits from `latest.fer` (the weights
/// and the BatchNorm statistics) on fixed faces.
fn assert_reproducible(config: &TrainConfig, replicas: usize) {
    let data = texture_data(49, 21, 5);
    let device = burn::backend::ndarray::NdArrayDevice::default();
    let devices = vec![device; replicas];
    let options = TrainOptions { progress: false, stop_after: Some(2), ..TrainOptions::default() };
    let probe: Vec<f32> = (0..4 * 44 * 44).map(|i| ((i * 37) % 256) as f32 / 255.0).collect();
    let run = || {
        let dir = tempfile::tempdir().expect("tempdir");
        train_on_devices::<B>(config, &data, dir.path(), &options, &devices).expect("replicas");
        let files = RunFiles::new(dir.path());
        let rows = read_metrics(&files.metrics()).expect("metrics");
        let figures: Vec<_> = rows
            .iter()
            .map(|r| (r.train_loss, r.train_acc, r.public_loss, r.public_acc, r.private_loss, r.public_adv_acc))
            .collect();
        // Logits of the last weights and BatchNorm statistics on fixed faces (the `.fer` bytes hold
        // Burn's parameter ids, which differ between two models of one process).
        let (model, _) = load_checkpoint::<B>(files.latest(), &device).expect("latest.fer");
        let faces = Tensor::<B, 4>::from_data(TensorData::new(probe.clone(), [4, 1, 44, 44]), &device);
        (figures, model.forward_inference(faces).into_data())
    };
    let (first, first_logits) = run();
    let (second, second_logits) = run();
    eprintln!("{first:?}");
    assert_eq!(first.len(), 2);
    assert_eq!(first, second, "per-epoch figures differ between two runs from one seed");
    assert_eq!(first_logits, second_logits, "the weights or statistics differ between two runs from one seed");
}

#[test]
fn plain_training_on_two_replicas_is_reproducible() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // With dropout (VGG's 0.5) and BatchNorm: the threads interleave differently each time.
    assert_reproducible(&config(), 2);
}

/// Three replicas (Burn's `RunningState` would sum their BatchNorm updates in a hash map's order)
/// and adversarial training whose clean and attacked passes both update the statistics (a
/// replica's second update would fold in whichever of the others' had arrived). Both made two runs
/// from one seed differ before each replica's updates were kept on its thread (2 runs out of 2).
#[test]
fn adversarial_training_on_three_replicas_is_reproducible() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = TrainConfig {
        adversarial: Some(AdversarialTraining { check_faces: 0, ..AdversarialTraining::new(Attack::fgsm(0.3)) }),
        ..config()
    };
    assert_eq!(config.adversarial.as_ref().map(|a| a.norm_statistics), Some(fer_models::NormStatistics::BatchUpdate));
    assert_reproducible(&config, 3);
}

/// [`config`] without dropout. This test's FGSM gain once varied from run to run (a CI run saw
/// 0.19 of the 0.2 asked) while the replica threads drew their dropout masks from Burn's one
/// global RNG in whichever order they ran; without dropout two runs gained 0.57 and 0.48. The masks
/// are now seeded per shard, and each replica's BatchNorm updates are kept on its thread (see
/// fer-train's `parallel` module): the run no longer depends on thread timing.
fn config_without_dropout() -> TrainConfig {
    TrainConfig { model: ModelConfig::Vgg(VggConfig::small().with_dropout(0.0)), ..config() }
}

#[test]
fn adversarial_training_on_two_replicas_buys_robustness() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let data = texture_data(49, 21, 5);
    let device = burn::backend::ndarray::NdArrayDevice::default();
    let options = TrainOptions { progress: false, ..TrainOptions::default() };
    let fgsm = Attack::fgsm(0.3);
    let clean_dir = tempfile::tempdir().expect("tempdir");
    train_on_devices::<B>(&config_without_dropout(), &data, clean_dir.path(), &options, &[device, device])
        .expect("clean run");
    let (model, _) = load_checkpoint::<B>(RunFiles::new(clean_dir.path()).best(), &device).expect("best.fer");
    let public = Arc::new(data.split(Split::PublicTest).clone());
    let clean_fgsm = evaluate_robustness(&model, public, &RobustnessConfig::reference(fgsm), &device, |_, _| {})
        .expect("attack")
        .adversarial
        .accuracy();

    let adversarial = TrainConfig {
        adversarial: Some(AdversarialTraining { check_faces: 7, ..AdversarialTraining::new(fgsm) }),
        ..config_without_dropout()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let adv = train_on_devices::<B>(&adversarial, &data, dir.path(), &options, &[device, device]).expect("adversarial");
    let adv_fgsm = adv.selected_public_adv_acc.expect("measured");
    eprintln!(
        "two replicas: clean training FGSM {clean_fgsm:.3}; adversarial training clean {:.3}, FGSM {adv_fgsm:.3}",
        adv.selected_public_acc
    );
    assert!(adv.selected_public_acc > 0.7, "{adv:?}");
    assert!(adv_fgsm > clean_fgsm + 0.2, "FGSM accuracy {adv_fgsm:.3} vs {clean_fgsm:.3} after clean training");
    // Both replicas' attacked crops are counted.
    common::assert_attacked_training_figures(&read_metrics(&RunFiles::new(dir.path()).metrics()).expect("metrics"));
}
