//! A small model trained on a synthetic task, then attacked through the public API (ndarray).

use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::batcher::Batcher;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use fer_adversarial::{
    ApgdLoss, Attack, AttackError, LabelSource, RobustnessConfig, adversarial_examples, eps_sweep, evaluate_robustness,
};
use fer_dataset::{FaceBatcher, FaceItem, SplitData, View};
use fer_models::{Model, ModelConfig};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

type B = Autodiff<NdArray>;

/// The tests of this file one at a time: NdArray's generator is global, so a model initialised
/// by one test while another trains (seeded, with dropout) would change the trained model.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The reference budget; the synthetic textures (contrast ≈ 0.63) shrug off ε = 0.1.
const EPS: f64 = 0.3;

fn split(n: usize, seed: u64) -> SplitData {
    fer_dataset::synthetic::texture_split(n, seed)
}

/// Trains vgg-small on full 48×48 synthetic faces with Adam.
fn trained_model(train: &SplitData) -> Model<B> {
    let device = Default::default();
    <B as Backend>::seed(&device, 1);
    let mut model: Model<B> = ModelConfig::from_name("vgg-small").expect("known").init(&device);
    let mut optim = AdamConfig::new().init::<B, Model<B>>();
    let batcher = FaceBatcher::new(View::Full, 0, train.len());
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _epoch in 0..4 {
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        for chunk in order.chunks(14) {
            let items: Vec<FaceItem> = chunk
                .iter()
                .map(|&index| FaceItem { index, label: train.label(index), image: train.image(index).clone() })
                .collect();
            let batch: fer_dataset::FaceBatch<B> = batcher.batch(items, &device);
            let loss = loss_fn.forward(model.forward(batch.images), batch.targets);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(3e-3, model, grads);
        }
    }
    model
}

#[test]
fn attacks_hurt_a_trained_model_and_pgd_hurts_at_least_as_much() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Default::default();
    let started = std::time::Instant::now();
    let model = trained_model(&split(98, 10));
    eprintln!("trained in {:.1}s", started.elapsed().as_secs_f64());
    let test = Arc::new(split(28, 20));
    let started = std::time::Instant::now();
    let fgsm = RobustnessConfig { batch_faces: 32, ..RobustnessConfig::reference(Attack::fgsm(EPS)) };
    let result = evaluate_robustness(&model, test.clone(), &fgsm, &device, |_, _| {}).expect("runs");
    let clean = result.clean.accuracy();
    let fgsm_acc = result.adversarial.accuracy();
    let fgsm_balanced = result.adversarial.balanced_accuracy();
    let clean_balanced = result.clean.balanced_accuracy();
    let fgsm_top_share = *result.adversarial.answers().iter().max().expect("7 classes") as f64 / 28.0;
    assert!(clean >= 0.9, "the model learned the task: clean {clean}");
    assert!(fgsm_acc < clean - 0.2, "FGSM ε=0.3 hurts: clean {clean}, adversarial {fgsm_acc}");
    assert!(result.max_perturbation <= EPS + 1e-6);
    assert_eq!(result.clean.faces(), 28);
    assert_eq!(result.predictions.len(), 28);
    eprintln!("trained + FGSM: {:.1}s, clean {clean}, FGSM {fgsm_acc}", started.elapsed().as_secs_f64());
    let flipped = result.predictions.iter().filter(|(a, b)| a != b).count() as u64;
    assert_eq!(flipped, result.flipped);

    // Batches of 12: 12, 12, and 4 faces padded with blank ones to 12 inside the forward; the
    // same attack on the same faces, so the same answers before and after.
    let in_twelves = RobustnessConfig { batch_faces: 12, ..fgsm.clone() };
    let padded = evaluate_robustness(&model, test.clone(), &in_twelves, &device, |_, _| {}).expect("runs");
    assert_eq!(padded.predictions, result.predictions, "the padded last batch changes no answer");
    assert!((padded.clean.loss_sum - result.clean.loss_sum).abs() < 1e-4);
    assert!(padded.max_perturbation <= EPS + 1e-6);

    // With predicted labels the attack never reads the true ones. Label each face as the class the
    // attack sent it to: the same attack now "gets right" every face it flipped (wrong before,
    // right after) and every face it did not flip stays right; the robust accuracy counts only
    // the latter, and a true-label attack on these labels keeps exactly those faces.
    let mut relabelled = SplitData::with_capacity(28);
    for (i, &(_, after)) in result.predictions.iter().enumerate() {
        relabelled.push(after, test.image(i).clone());
    }
    let relabelled = Arc::new(relabelled);
    let moved = evaluate_robustness(&model, relabelled.clone(), &fgsm, &device, |_, _| {}).expect("runs");
    assert_eq!(moved.predictions, result.predictions, "predicted labels: the true labels play no part");
    assert_eq!(moved.adversarial.accuracy(), 1.0);
    assert_eq!((moved.made_right, moved.kept_right), (flipped, 28 - flipped));
    assert_eq!(moved.robust_accuracy(), (28 - flipped) as f64 / 28.0);
    let with_truth = RobustnessConfig { labels: LabelSource::True, ..fgsm.clone() };
    let truth = evaluate_robustness(&model, relabelled, &with_truth, &device, |_, _| {}).expect("runs");
    assert_eq!(truth.kept_right, moved.kept_right, "robust accuracy does not depend on the label source");

    let pgd = RobustnessConfig { attack: Attack::pgd(EPS, 10), ..fgsm.clone() };
    let result = evaluate_robustness(&model, test.clone(), &pgd, &device, |_, _| {}).expect("runs");
    assert_eq!(result.clean.accuracy(), clean, "clean accuracy does not depend on the attack");
    assert!(result.adversarial.accuracy() <= fgsm_acc, "PGD-10 {} vs FGSM {fgsm_acc}", result.adversarial.accuracy());
    eprintln!("PGD-10: {:.1}s, {}", started.elapsed().as_secs_f64(), result.adversarial.accuracy());

    // APGD against PGD-10 with the same 10 passes, at a budget that leaves faces to both: on this
    // seeded model and these faces PGD-10 keeps 13 of the 28 right at 0.15 and APGD-CE 11 (at 0.1
    // both keep 24; APGD-CE then DLR keeps 11 at 0.15 too). A weaker APGD would not get below.
    let at = |attack: Attack| RobustnessConfig { attack, labels: LabelSource::True, ..fgsm.clone() };
    let robust = |attack: Attack| {
        evaluate_robustness(&model, test.clone(), &at(attack), &device, |_, _| {}).expect("runs").robust_accuracy()
    };
    let (by_pgd, by_apgd) = (robust(Attack::pgd(0.15, 10)), robust(Attack::apgd(0.15, 10, ApgdLoss::Ce)));
    assert!(by_apgd < by_pgd && by_pgd < 1.0, "right both: APGD-CE-10 {by_apgd}, PGD-10 {by_pgd}");

    // Right before and after the attack, counted face by face; with true labels the same faces
    // keep their answer (on a face answered right the predicted label is the true one).
    let labels = test.labels();
    let count = |keep: bool| {
        result
            .predictions
            .iter()
            .zip(labels)
            .filter(|((before, after), l)| (before == *l) == keep && after == *l)
            .count()
    };
    assert_eq!((result.kept_right, result.made_right), (count(true) as u64, count(false) as u64));
    assert_eq!(result.kept_right + result.made_right, result.adversarial.correct());
    assert_eq!(result.robust_accuracy(), result.kept_right as f64 / 28.0);
    // The answers before and under attack, face by face: the evaluations' counts, and compared
    // with each other the faces kept right and made right.
    let [clean_answers, attacked_answers] = result.answers(labels);
    assert_eq!((clean_answers.len(), attacked_answers.len()), (28, 28));
    assert!(clean_answers.iter().zip(labels).enumerate().all(|(i, (a, l))| a.face == i && a.label == *l));
    assert_eq!(clean_answers.iter().filter(|a| a.is_right()).count() as u64, result.clean.correct());
    assert_eq!(attacked_answers.iter().filter(|a| a.is_right()).count() as u64, result.adversarial.correct());
    let paired = fer_models::compare_answers(&clean_answers, &attacked_answers).expect("the same faces");
    assert_eq!((paired.both_right, paired.only_b_right), (result.kept_right, result.made_right));
    let with_truth = RobustnessConfig { labels: LabelSource::True, ..pgd.clone() };
    let truth = evaluate_robustness(&model, test.clone(), &with_truth, &device, |_, _| {}).expect("runs");
    assert_eq!(truth.kept_right, result.kept_right, "robust accuracy does not depend on the label source");

    // TenCrop: the model sees 10 crops, the attack perturbs the full face through them.
    let tencrop = RobustnessConfig { tencrop: Some(44), labels: LabelSource::True, ..fgsm.clone() };
    let few = Arc::new(test.select(&(0..7).collect::<Vec<_>>()));
    let result = evaluate_robustness(&model, few.clone(), &tencrop, &device, |_, _| {}).expect("runs");
    assert!(result.clean.accuracy() >= 0.8, "TenCrop clean {}", result.clean.accuracy());
    assert!(result.adversarial.accuracy() < result.clean.accuracy());

    // The centre crop: the clean figures are `evaluate`'s on that view; the attack still hurts and
    // changes no pixel outside the crop (they get no gradient, and FGSM has no random start).
    let center = RobustnessConfig { center_crop: Some(40), ..fgsm.clone() };
    assert_eq!(center.view(), View::CenterCrop(40));
    let result = evaluate_robustness(&model, few.clone(), &center, &device, |_, _| {}).expect("runs");
    let expected = fer_models::evaluate(&model.valid(), few.clone(), View::CenterCrop(40), 3, &device);
    // The same answers; the losses agree to rounding (batches of 7 faces here, of 3 there).
    assert_eq!(result.clean.confusion, expected.confusion, "clean figures through the centre crop");
    assert!((result.clean.loss_sum - expected.loss_sum).abs() < 1e-5, "{:?} vs {expected:?}", result.clean);
    assert!(result.adversarial.accuracy() < result.clean.accuracy(), "{:?}", result.adversarial);
    let example = &adversarial_examples(&model, &few, &[0], &center, &device).expect("runs")[0];
    let (lo, hi) = (4, 44); // CropWindow::center(40) starts at row and column 4
    for (i, (a, b)) in example.clean.iter().zip(&example.adversarial).enumerate() {
        let (row, col) = (i / 48, i % 48);
        if !((lo..hi).contains(&row) && (lo..hi).contains(&col)) {
            assert_eq!(a, b, "pixel ({row}, {col}) outside the crop changed");
        }
    }
    assert!(example.clean != example.adversarial, "the crop was perturbed");

    // A sweep: accuracy at ε = 0 is the clean accuracy and falls as ε grows.
    let points =
        eps_sweep(&model, test.clone(), &[Attack::fgsm(EPS)], &[0.0, EPS], &fgsm, &device, |_| {}).expect("runs");
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].adversarial_acc, clean);
    assert!(points[1].adversarial_acc < points[0].adversarial_acc);
    assert_eq!(points[1].adversarial_acc, fgsm_acc, "the sweep point equals the single run");
    assert_eq!(points[1].adversarial_balanced_acc, fgsm_balanced);
    assert_eq!(points[1].adversarial_top_answer_share, fgsm_top_share);
    assert_eq!(points[0].adversarial_balanced_acc, clean_balanced, "ε = 0: the clean model's");
    assert_eq!(points[0].robust_acc, clean, "ε = 0: every face right clean stays right");
    assert!(points[1].robust_acc <= points[1].adversarial_acc);

    // Examples carry both faces and both probability vectors.
    let examples = adversarial_examples(&model, &test, &[0, 5], &fgsm, &device).expect("runs");
    assert_eq!(examples.len(), 2);
    assert_eq!(examples[1].index, 5);
    assert_eq!(examples[1].label, test.label(5));
    assert_eq!(examples[0].clean.len(), 48 * 48);
    let sum: f32 = examples[0].adversarial_probs.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4);
    let linf = examples[0].clean.iter().zip(&examples[0].adversarial).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(f64::from(linf) <= EPS + 1e-6 && linf > 0.0);

    apgd_runs_dlr_on_the_faces_ce_left_unbroken_gathered_across_batches(&model);
}

#[test]
fn bad_robustness_settings_are_errors() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = Default::default();
    let model: Model<B> = ModelConfig::from_name("vgg-small").expect("known").init(&device);
    let test = Arc::new(split(7, 3));
    let bad_eps = RobustnessConfig::reference(Attack::fgsm(-0.5));
    let err = evaluate_robustness(&model, test.clone(), &bad_eps, &device, |_, _| {}).expect_err("ε < 0");
    assert_eq!(err, AttackError::Epsilon { eps: -0.5 });
    let bad_batch = RobustnessConfig { batch_faces: 0, ..RobustnessConfig::reference(Attack::fgsm(EPS)) };
    assert!(evaluate_robustness(&model, test.clone(), &bad_batch, &device, |_, _| {}).is_err());
    let bad_crop = RobustnessConfig { tencrop: Some(50), ..RobustnessConfig::reference(Attack::fgsm(EPS)) };
    assert!(
        evaluate_robustness(&model, test.clone(), &bad_crop, &device, |_, _| {})
            .expect_err("crop")
            .to_string()
            .contains("50")
    );
    let both =
        RobustnessConfig { tencrop: Some(44), center_crop: Some(44), ..RobustnessConfig::reference(Attack::fgsm(EPS)) };
    let err = evaluate_robustness(&model, test.clone(), &both, &device, |_, _| {}).expect_err("two views");
    assert!(err.to_string().contains("not both"), "{err}");
    let bad_center = RobustnessConfig { center_crop: Some(0), ..RobustnessConfig::reference(Attack::fgsm(EPS)) };
    let err = evaluate_robustness(&model, test.clone(), &bad_center, &device, |_, _| {}).expect_err("side 0");
    assert!(err.to_string().contains("centre crop side 0"), "{err}");
    let kl_fgsm =
        RobustnessConfig { labels: LabelSource::Distribution, ..RobustnessConfig::reference(Attack::fgsm(EPS)) };
    let err = evaluate_robustness(&model, test.clone(), &kl_fgsm, &device, |_, _| {}).expect_err("no random start");
    assert_eq!(err, AttackError::NeedsRandomStart("fgsm"));
    // N-FGSM's examples leave the ε-ball: it trains, it does not measure.
    let n_fgsm = RobustnessConfig::reference(Attack::n_fgsm(EPS));
    let err = evaluate_robustness(&model, test.clone(), &n_fgsm, &device, |_, _| {}).expect_err("training attack");
    assert_eq!(err, AttackError::TrainingOnly("n-fgsm"));
    let err = adversarial_examples(&model, &test, &[0], &n_fgsm, &device).expect_err("training attack");
    assert_eq!(err, AttackError::TrainingOnly("n-fgsm"));
    let ok = RobustnessConfig::reference(Attack::fgsm(EPS));
    let err = adversarial_examples(&model, &test, &[9], &ok, &device).expect_err("index");
    assert!(err.to_string().contains("face 9"), "{err}");
    // APGD's DLR loss cannot attack a model of 2 classes: refused before any attack step.
    let two: Model<B> = ModelConfig::Vgg(fer_models::VggConfig::small().with_num_classes(2)).init(&device);
    let apgd = RobustnessConfig::reference(Attack::apgd(EPS, 4, ApgdLoss::CeThenDlr));
    let err = evaluate_robustness(&two, test.clone(), &apgd, &device, |_, _| {}).expect_err("2 classes");
    assert!(err.to_string().contains("3 classes or more"), "{err}");
    // No faces (`fer attack --limit 0`): nothing to attack, no figure, no error.
    let none = Arc::new(test.select(&[]));
    for attack in [Attack::fgsm(EPS), Attack::apgd(EPS, 4, ApgdLoss::CeThenDlr)] {
        let result =
            evaluate_robustness(&model, none.clone(), &RobustnessConfig::reference(attack), &device, |_, _| {})
                .expect("no faces");
        assert_eq!((result.clean.faces(), result.predictions.len()), (0, 0));
    }
}

/// The faces of `split` as one batch of full faces.
fn all_faces(split: &SplitData) -> fer_dataset::FaceBatch<B> {
    let items: Vec<FaceItem> = (0..split.len())
        .map(|index| FaceItem { index, label: split.label(index), image: split.image(index).clone() })
        .collect();
    FaceBatcher::new(View::Full, 0, split.len()).batch(items, &Default::default())
}

/// `apgd` on `model` (the trained one: an untrained model gives every face one answer, which no
/// budget moves): DLR runs on the faces APGD-CE left unbroken, gathered across batches.
fn apgd_runs_dlr_on_the_faces_ce_left_unbroken_gathered_across_batches(model: &Model<B>) {
    let device = Default::default();
    let test = Arc::new(split(20, 30));
    // A budget at which APGD-CE-4 breaks 11 of these 20 faces and leaves 9.
    let (eps, steps) = (0.15, 4);
    let at = |loss: ApgdLoss, batch_faces: usize| RobustnessConfig {
        batch_faces,
        ..RobustnessConfig::reference(Attack::apgd(eps, steps, loss))
    };
    let run = |config: &RobustnessConfig| {
        let mut progress = Vec::new();
        let result =
            evaluate_robustness(model, test.clone(), config, &device, |done, total| progress.push((done, total)))
                .expect("runs");
        (result, progress)
    };

    // One batch: the same random draws as `perturb`'s, which runs both halves inside the batch.
    let (both, progress) = run(&at(ApgdLoss::CeThenDlr, 32));
    let (ce, _) = run(&at(ApgdLoss::Ce, 32));
    let unbroken = ce.predictions.iter().filter(|(before, after)| before == after).count();
    assert!(unbroken > 0 && unbroken < 20, "APGD-CE leaves {unbroken} of 20 faces: choose another budget");
    assert_eq!(progress, vec![(20, 20), (20, 20 + unbroken), (20 + unbroken, 20 + unbroken)]);
    let frozen = model.clone().no_grad();
    let forward = |x: Tensor<B, 4>| fer_adversarial::logits_on_faces(&frozen, x, View::Full);
    let faces = all_faces(&test).images;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let attack = Attack::apgd(eps, steps, ApgdLoss::CeThenDlr);
    let attacked =
        fer_adversarial::perturb(&attack, forward, faces.clone(), fer_adversarial::Labels::Predicted, &mut rng)
            .expect("runs");
    let answers = |x: Tensor<B, 4>| -> Vec<i64> {
        forward(x).argmax(1).into_data().convert::<i64>().to_vec::<i64>().expect("ints")
    };
    let expected: Vec<(i64, i64)> = answers(faces).into_iter().zip(answers(attacked)).collect();
    let got: Vec<(i64, i64)> =
        both.predictions.iter().map(|(before, after)| (before.index() as i64, after.index() as i64)).collect();
    assert_eq!(got, expected, "one batch: the evaluation's answers are perturb's");

    // Batches of 6 (6, 6, 6 and 2 faces): APGD-CE runs over all of them first with the random
    // draws of an `apgd-ce` run, so every face it breaks gets the same answer; DLR only adds.
    let (both, progress) = run(&at(ApgdLoss::CeThenDlr, 6));
    let (ce, ce_progress) = run(&at(ApgdLoss::Ce, 6));
    assert_eq!(ce_progress, vec![(6, 20), (12, 20), (18, 20), (20, 20)]);
    let broken_by_ce: Vec<usize> = (0..20).filter(|&i| ce.predictions[i].0 != ce.predictions[i].1).collect();
    let left = 20 - broken_by_ce.len();
    assert!(left > 6, "{left} faces left to DLR: more than one of its batches wanted");
    for &i in &broken_by_ce {
        assert_eq!(both.predictions[i], ce.predictions[i], "face {i}, broken by APGD-CE");
    }
    assert!(both.flipped >= ce.flipped && both.kept_right <= ce.kept_right);
    assert_eq!(both.clean, ce.clean, "the clean figures do not depend on the attack");
    assert!(both.max_perturbation <= eps + 1e-6);
    let mut expected = vec![(6, 20), (12, 20), (18, 20), (20, 20), (20, 20 + left)];
    expected.extend((1..=left.div_ceil(6)).map(|k| (20 + (6 * k).min(left), 20 + left)));
    assert_eq!(progress, expected, "APGD-DLR gathers the {left} faces left into batches of 6");
}
