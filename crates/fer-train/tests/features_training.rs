//! The CNN+landmarks+HOG model trained on synthetic faces with real dlib landmarks and HOG
//! (ndarray; skipped with a notice when Debian's libdlib-data model is absent).

use std::collections::BTreeMap;

use burn::backend::{Autodiff, NdArray};
use fer_features::{FaceFeatures, FeatureSet, LandmarkModel, landmark_model_path};
use fer_models::CnnHogConfig;
use fer_train::{FeatureTrainConfig, TrainError, hyperopt, read_best_trial, reference_space, train_features};

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
        false,
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

    // Features of other faces are refused.
    let other = fer_dataset::synthetic::texture_data(70, 21, 9);
    let err = train_features::<B>(&config(FeatureSet::Landmarks), &other, &features, None, false, &device)
        .expect_err("other data");
    assert!(err.to_string().contains("does not belong"), "{err}");

    // Two TPE trials over the reference's space, each a 1-epoch run on the landmarks-only set.
    let search = tempfile::tempdir().expect("tempdir");
    let trials = hyperopt::<TrainError>(&reference_space(), 2, 1, 0, search.path(), |_, p: &BTreeMap<String, f64>| {
        let mut c = config(FeatureSet::Landmarks);
        c.epochs = 1;
        (c.lr, c.lr_decay, c.momentum) = (p["lr"], p["lr_decay"], p["momentum"]);
        c.model.dropout = 1.0 - p["keep_prob"];
        Ok(train_features::<B>(&c, &data, &features, None, false, &device)?.selected_public_acc)
    })
    .expect("search");
    assert_eq!(trials.len(), 2);
    let best = read_best_trial(search.path()).expect("best.json");
    assert_eq!(best.score, trials.iter().map(|t| t.score).fold(f64::MIN, f64::max));
}
