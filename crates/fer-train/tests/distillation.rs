//! Knowledge distillation from teachers' answers files, end to end on small synthetic data
//! (ndarray): the student follows its teachers face by face, resumes identically, and bad teacher
//! files are refused by name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use fer_dataset::{Emotion, Fer2013, Split, View};
use fer_models::{FaceAnswer, load_checkpoint};
use fer_train::{
    Distillation, EpochMetrics, RunFiles, TeacherAnswers, TrainConfig, TrainOptions, evaluate, read_metrics, train,
    write_answers,
};

type B = Autodiff<NdArray>;

mod common;
use common::{serial, small_config};

fn quiet() -> TrainOptions {
    TrainOptions { progress: false, ..TrainOptions::default() }
}

/// Metrics without the wall-clock columns.
fn deterministic(rows: &[EpochMetrics]) -> Vec<EpochMetrics> {
    rows.iter().map(|r| EpochMetrics { img_per_s: 0.0, seconds: 0.0, ..r.clone() }).collect()
}

/// The class after `e` in [`Emotion::ALL`]'s order, the last wrapping to the first.
fn next(e: Emotion) -> Emotion {
    Emotion::ALL[(e as usize + 1) % Emotion::COUNT]
}

/// A teacher's answers on every Training face of `data`: 0.88 on `teach(label)`, 0.02 on each
/// other class.
fn write_teacher(path: &Path, data: &Fer2013, teach: impl Fn(Emotion) -> Emotion) -> TeacherAnswers {
    let training = data.split(Split::Training);
    let answers: Vec<FaceAnswer> = (0..training.len())
        .map(|face| {
            let label = training.label(face);
            let answer = teach(label);
            let mut p = [0.02f32; Emotion::COUNT];
            p[answer as usize] = 0.88;
            FaceAnswer { face, label, answer, probabilities: Some(p) }
        })
        .collect();
    write_answers(path, &answers).expect("teacher written");
    TeacherAnswers::from_file(path).expect("teacher named")
}

/// A student taught only by a teacher that answers the *next* class of every label learns that
/// mapping face by face (a misaligned teacher row would give it noise to learn), on a seeded
/// subset of the training faces; the same run with weight 0 is the plain run to the last digit.
#[test]
fn a_student_follows_its_teacher_face_by_face() {
    let _guard = serial();
    let data = fer_dataset::synthetic::texture_data(48, 14, 11);
    let dir = tempfile::tempdir().expect("tempdir");
    let teacher = write_teacher(&dir.path().join("teacher.csv"), &data, next);
    let base = TrainConfig { train_limit: Some(40), ..small_config(8) };
    let taught = TrainConfig {
        distillation: Some(Distillation { weight: 1.0, temperature: 1.0, ..Distillation::new(vec![teacher.clone()]) }),
        ..base.clone()
    };
    let run = dir.path().join("taught");
    train::<B>(&taught, &data, &run, &quiet(), &Default::default()).expect("trains");
    let (model, _) = load_checkpoint::<NdArray>(RunFiles::new(&run).latest(), &Default::default()).expect("latest");
    let training = data.split(Split::Training);
    // The training faces labelled as the teacher answers them.
    let mut shifted = fer_dataset::SplitData::with_capacity(training.len());
    for i in 0..training.len() {
        shifted.push(next(training.label(i)), training.image(i).clone());
    }
    let follows = evaluate(&model, Arc::new(shifted), View::CenterCrop(44), 16, &Default::default()).accuracy();
    let labels = evaluate(&model, Arc::new(training.clone()), View::CenterCrop(44), 16, &Default::default()).accuracy();
    assert!(follows >= 0.9 && labels <= 0.1, "the teacher's classes {follows}, the labels {labels}");

    // Weight 0: the teachers are read, but the run is the plain one.
    let ignored = TrainConfig {
        distillation: Some(Distillation { weight: 0.0, ..Distillation::new(vec![teacher]) }),
        ..small_config(2)
    };
    let metrics = |config: &TrainConfig, name: &str| {
        let out = dir.path().join(name);
        train::<B>(config, &data, &out, &quiet(), &Default::default()).expect("trains");
        deterministic(&read_metrics(&RunFiles::new(&out).metrics()).expect("metrics"))
    };
    assert_eq!(metrics(&ignored, "weight0"), metrics(&small_config(2), "plain"));
}

/// Two teachers are averaged, the run resumes to the same metrics as the straight run, and a
/// teacher file that changes after the run was configured stops the resumption by name.
#[test]
fn two_teachers_resume_identically_and_a_changed_file_is_refused() {
    let _guard = serial();
    let data = fer_dataset::synthetic::texture_data(48, 14, 12);
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write_teacher(&dir.path().join("a.csv"), &data, |e| e);
    let b = write_teacher(&dir.path().join("b.csv"), &data, next);
    let config = TrainConfig { distillation: Some(Distillation::new(vec![a, b.clone()])), ..small_config(2) };
    let straight = dir.path().join("straight");
    train::<B>(&config, &data, &straight, &quiet(), &Default::default()).expect("straight");
    let resumed = dir.path().join("resumed");
    train::<B>(&config, &data, &resumed, &TrainOptions { stop_after: Some(1), ..quiet() }, &Default::default())
        .expect("first epoch");
    train::<B>(&config, &data, &resumed, &TrainOptions { resume: true, ..quiet() }, &Default::default())
        .expect("resumed");
    let rows = |dir: &PathBuf| deterministic(&read_metrics(&RunFiles::new(dir).metrics()).expect("metrics"));
    assert_eq!(rows(&straight).len(), 2);
    assert_eq!(rows(&straight), rows(&resumed));
    // The loss is not the plain cross-entropy: the teachers move it.
    let plain = dir.path().join("plain");
    train::<B>(&small_config(2), &data, &plain, &quiet(), &Default::default()).expect("plain");
    assert_ne!(rows(&plain)[0].train_loss, rows(&straight)[0].train_loss);

    let dirty = dir.path().join("dirty");
    train::<B>(&config, &data, &dirty, &TrainOptions { stop_after: Some(1), ..quiet() }, &Default::default())
        .expect("first epoch");
    write_teacher(&b.path, &data, |e| next(next(e)));
    let err = train::<B>(&config, &data, &dirty, &TrainOptions { resume: true, ..quiet() }, &Default::default())
        .expect_err("b.csv changed")
        .to_string();
    assert!(err.contains("b.csv") && err.contains("checksum") && err.contains("changed"), "{err}");
}

/// Teacher files of other data, without probabilities or of the wrong length, and distillation
/// with mixup, adversarial training or several replicas, are refused with the file, line or
/// setting at fault.
#[test]
fn bad_teachers_and_combinations_are_refused() {
    let _guard = serial();
    let data = fer_dataset::synthetic::texture_data(21, 7, 13);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("teacher.csv");
    let good = write_teacher(&path, &data, |e| e);
    let text = std::fs::read_to_string(&path).expect("read");
    let run = |name: &str, body: String| {
        let file = dir.path().join(format!("{name}.csv"));
        std::fs::write(&file, body).expect("write");
        let config = TrainConfig {
            distillation: Some(Distillation::new(vec![TeacherAnswers::from_file(&file).expect("named")])),
            ..small_config(1)
        };
        train::<B>(&config, &data, &dir.path().join(format!("run-{name}")), &quiet(), &Default::default())
            .expect_err("refused")
            .to_string()
    };
    // 20 answers for 21 faces.
    let short: String = text.lines().take(21).map(|l| format!("{l}\n")).collect();
    let err = run("short", short);
    assert!(err.contains("short.csv") && err.contains("20 answers") && err.contains("21 faces"), "{err}");
    // Face 3 is "happy" in the data (classes in turn); a teacher of other data calls it sad.
    let other = text.replacen("\n3,happy,happy,", "\n3,sad,happy,", 1);
    assert_ne!(other, text, "the fixture has face 3 as happy");
    let err = run("other", other);
    assert!(err.contains("other.csv:5") && err.contains("label sad") && err.contains("happy"), "{err}");
    // Answers without probabilities (as `fer attack` writes under attack).
    let bare: String =
        text.lines().map(|l| l.split(',').take(3).collect::<Vec<_>>().join(",")).map(|l| format!("{l}\n")).collect();
    let err = run("bare", bare);
    assert!(err.contains("bare.csv:2") && err.contains("no class probabilities"), "{err}");
    // Faces out of order.
    let swapped = text.replacen("\n0,angry,", "\n1,angry,", 1);
    let err = run("swapped", swapped);
    assert!(err.contains("swapped.csv:2") && err.contains("face 1 where face 0"), "{err}");
    let err = TeacherAnswers::from_file(dir.path().join("none.csv")).expect_err("no file").to_string();
    assert!(err.contains("none.csv"), "{err}");

    let distillation = Some(Distillation::new(vec![good]));
    let with = |c: TrainConfig| TrainConfig { distillation: distillation.clone(), ..c };
    let mixed = with(TrainConfig { mixup_alpha: Some(0.4), ..small_config(1) });
    assert!(mixed.check().expect_err("mixup").contains("mixup"));
    let adversarial = with(TrainConfig {
        adversarial: Some(fer_train::AdversarialTraining::new(fer_adversarial::Attack::fgsm(0.1))),
        ..small_config(1)
    });
    assert!(adversarial.check().expect_err("adversarial").contains("distillation is for clean training"));
    let devices = [Default::default(), Default::default()];
    let err =
        fer_train::train_on_devices::<B>(&with(small_config(1)), &data, &dir.path().join("two"), &quiet(), &devices)
            .expect_err("2 replicas");
    assert!(err.to_string().contains("distillation runs on one device, not on 2 replicas"), "{err}");
}
