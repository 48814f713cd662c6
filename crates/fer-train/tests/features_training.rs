//! The CNN+landmarks+HOG model trained on synthetic faces with real dlib landmarks and HOG
//! (ndarray; skipped with a notice when Debian's libdlib-data model is absent).

use std::collections::BTreeMap;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, TensorData};
use fer_features::{FaceFeatures, FeatureSet, LandmarkModel, landmark_model_path};
use fer_models::CnnHogConfig;
use fer_train::{
    FeatureRunOptions, FeatureTrainConfig, TrainError, hyperopt, read_best_trial, reference_space, train_features,
};

mod common;
use common::serial;

type B = Autodiff<NdArray>;

fn config(set: FeatureSet) -> FeatureTrainConfig {
    FeatureTrainConfig {
        epochs: 4,
        batch_size: 14,
        ..FeatureTrainConfig::reference(CnnHogConfig::tiny(set.len()), set)
    }
}

#[test]
fn learns_the_synthetic_task_and_searches_hyper_parameters() {
    let _guard = serial();
    if !landmark_model_path(None).is_file() {
        eprintln!("skipped: {} not found (apt-get install libdlib-data)", landmark_model_path(None).display());
        return;
    }
    let data = fer_dataset::synthetic::texture_data(70, 21, 8);
    let model = LandmarkModel::open(None).expect("model");
    let features = FaceFeatures::compute(&data, &model, |_| {});
    let device = Default::default();

    let dir = tempfile::tempdir().expect("tempdir");
    let summary = train_features::<B>(
        &config(FeatureSet::LandmarksSlidingHog),
        &data,
        &features,
        Some(dir.path()),
        &FeatureRunOptions::quiet(),
        &device,
    )
    .expect("trains");
    assert_eq!(summary.epochs.len(), 4);
    assert!(summary.selected_public_acc > 0.8, "learns: {:?}", summary.epochs);
    assert_eq!(summary.selected_private_acc, summary.epochs[summary.selected_epoch].private_acc);
    assert_eq!(summary.private_test.faces(), 21);
    for file in ["config.json", "metrics.csv", "summary.json", "best.bin"] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    for (png, size) in [("curves.png", (1200, 480)), ("confusion.png", (760, 700))] {
        let plot = image::open(dir.path().join(png)).expect(png).to_rgb8();
        assert_eq!(plot.dimensions(), size, "{png}");
        assert!(plot.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 5_000, "{png} has drawing");
    }

    // Features of other faces are refused.
    let other = fer_dataset::synthetic::texture_data(70, 21, 9);
    let err = train_features::<B>(
        &config(FeatureSet::Landmarks),
        &other,
        &features,
        None,
        &FeatureRunOptions::quiet(),
        &device,
    )
    .expect_err("other data");
    assert!(err.to_string().contains("does not belong"), "{err}");

    // Two TPE trials over the reference's space, each a 1-epoch run on the landmarks-only set.
    let search = tempfile::tempdir().expect("tempdir");
    let trials = hyperopt::<TrainError>(&reference_space(), 2, 1, 0, search.path(), |_, p: &BTreeMap<String, f64>| {
        let mut c = config(FeatureSet::Landmarks);
        c.epochs = 1;
        (c.lr, c.lr_decay, c.momentum) = (p["lr"], p["lr_decay"], p["momentum"]);
        c.model.dropout = 1.0 - p["keep_prob"];
        Ok(train_features::<B>(&c, &data, &features, None, &FeatureRunOptions::quiet(), &device)?.selected_public_acc)
    })
    .expect("search");
    assert_eq!(trials.len(), 2);
    let plot = image::open(search.path().join("trials.png")).expect("trials.png").to_rgb8();
    assert_eq!(plot.dimensions(), (800, 480));
    let best = read_best_trial(search.path()).expect("best.json");
    assert_eq!(best.score, trials.iter().map(|t| t.score).fold(f64::MIN, f64::max));
}

#[test]
fn a_resumed_feature_run_equals_the_uninterrupted_run() {
    let _guard = serial();
    if !landmark_model_path(None).is_file() {
        eprintln!("skipped: {} not found (apt-get install libdlib-data)", landmark_model_path(None).display());
        return;
    }
    let data = fer_dataset::synthetic::texture_data(42, 14, 5);
    let model = LandmarkModel::open(None).expect("model");
    let features = FaceFeatures::compute(&data, &model, |_| {});
    let device = Default::default();
    let config = FeatureTrainConfig { epochs: 3, ..config(FeatureSet::LandmarksWholeHog) };
    let quiet = FeatureRunOptions::quiet();

    let straight = tempfile::tempdir().expect("tempdir");
    let a = train_features::<B>(&config, &data, &features, Some(straight.path()), &quiet, &device).expect("straight");

    let resumed = tempfile::tempdir().expect("tempdir");
    let first = FeatureRunOptions { stop_after: Some(1), ..quiet };
    let partial = train_features::<B>(&config, &data, &features, Some(resumed.path()), &first, &device).expect("part");
    assert_eq!(partial.epochs.len(), 1);
    // A new run in the same directory is refused; resuming with another recipe too.
    let again = train_features::<B>(&config, &data, &features, Some(resumed.path()), &quiet, &device);
    assert!(matches!(again, Err(TrainError::RunExists { .. })), "{again:?}");
    let resume = FeatureRunOptions { resume: true, ..quiet };
    let other = FeatureTrainConfig { lr: 0.1, ..config.clone() };
    let err = train_features::<B>(&other, &data, &features, Some(resumed.path()), &resume, &device).expect_err("other");
    assert!(err.to_string().contains("configuration differs"), "{err}");
    let b = train_features::<B>(&config, &data, &features, Some(resumed.path()), &resume, &device).expect("resumed");

    let deterministic = |s: &fer_train::FeatureRunSummary| {
        s.epochs
            .iter()
            .map(|e| (e.epoch, e.lr, e.train_loss, e.train_acc, e.public_acc, e.private_acc))
            .collect::<Vec<_>>()
    };
    assert_eq!(b.epochs.len(), 3);
    assert_eq!(deterministic(&a), deterministic(&b));
    assert_eq!((a.selected_epoch, &a.private_test), (b.selected_epoch, &b.private_test));
    // The PrivateTest inputs as the training loop builds them (pixels / 255, landmarks / 48).
    let private = data.split(fer_dataset::Split::PrivateTest);
    let n = private.len();
    let mut pixels = Vec::new();
    let mut rows = Vec::new();
    for (i, face) in private.images().iter().enumerate() {
        pixels.extend(face.pixels().iter().map(|&p| f32::from(p) / 255.0));
        let start = rows.len();
        features.extend_vector(fer_dataset::Split::PrivateTest, i, config.feature_set, &mut rows);
        rows[start..start + fer_features::LANDMARKS_LEN].iter_mut().for_each(|v| *v /= 48.0);
    }
    let logits = |path: std::path::PathBuf| {
        let model = fer_train::load_feature_model::<NdArray>(&config.model, &path, &device).expect("weights load");
        let images = Tensor::<NdArray, 4>::from_data(TensorData::new(pixels.clone(), [n, 1, 48, 48]), &device);
        let feats =
            Tensor::<NdArray, 2>::from_data(TensorData::new(rows.clone(), [n, config.feature_set.len()]), &device);
        model.forward_inference(images, feats).into_data().to_vec::<f32>().expect("floats")
    };
    // Weights equal (the files differ only in Burn's random parameter ids): same logits.
    for file in ["latest.bin", "best.bin"] {
        let (a, b) = (logits(straight.path().join(file)), logits(resumed.path().join(file)));
        assert!(a == b, "{file}: the resumed run's weights differ");
    }
    // best.bin holds the selected epoch: its PrivateTest accuracy is the recorded headline.
    let best = logits(straight.path().join("best.bin"));
    let hits = best
        .chunks(7)
        .zip(private.labels())
        .filter(|(l, label)| {
            let top = l.iter().enumerate().fold(0, |t, (k, v)| if *v > l[t] { k } else { t });
            top == label.index()
        })
        .count();
    assert_eq!(hits as f64 / n as f64, b.selected_private_acc, "best.bin gives the recorded PrivateTest accuracy");
    let wrong = fer_train::load_feature_model::<NdArray>(
        &CnnHogConfig::tiny(FeatureSet::Landmarks.len()),
        &straight.path().join("best.bin"),
        &device,
    );
    assert!(wrong.is_err(), "weights of another shape are refused");
    let resume_nothing = tempfile::tempdir().expect("tempdir");
    let err = train_features::<B>(&config, &data, &features, Some(resume_nothing.path()), &resume, &device)
        .expect_err("nothing to resume");
    assert!(err.to_string().contains("no run to resume"), "{err}");

    // Killed while saving epoch 1, before and after state.json committed it: the resumed run is
    // the uninterrupted one and leaves no staged file.
    for point in ["stage latest.optim", "commit", "publish latest.bin", "publish summary.json"] {
        let dir = tempfile::tempdir().expect("tempdir");
        fer_train::fail_saving_at(1, point);
        let err = train_features::<B>(&config, &data, &features, Some(dir.path()), &quiet, &device).expect_err(point);
        assert!(err.to_string().contains(point), "{err}");
        let c = train_features::<B>(&config, &data, &features, Some(dir.path()), &resume, &device).expect(point);
        assert_eq!(deterministic(&a), deterministic(&c), "{point}");
        assert_eq!((a.selected_epoch, &a.private_test), (c.selected_epoch, &c.private_test), "{point}");
        for file in ["latest.bin", "best.bin"] {
            assert!(logits(straight.path().join(file)) == logits(dir.path().join(file)), "{point}: {file}");
        }
        let summary = |d: &std::path::Path| std::fs::read(d.join("summary.json")).expect("summary.json");
        assert_eq!(common::staged_files(dir.path()), Vec::<String>::new(), "{point}");
        let (x, y) = (summary(straight.path()), summary(dir.path()));
        let strip = |bytes: &[u8]| {
            let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("json");
            for e in v["epochs"].as_array_mut().expect("epochs") {
                e["img_per_s"] = serde_json::Value::Null;
            }
            v
        };
        assert_eq!(strip(&x), strip(&y), "{point}: summary.json");
    }
}
