//! The training loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fer_adversarial::{
    Labels, RobustnessConfig, evaluate_robustness, kl_from_clean, local_linearity_error, perturb, right_after_attack,
};
use fer_dataset::{Emotion, FaceBatcher, Fer2013, Split, SplitData, View};
use fer_models::{Model, NormStatistics, load_checkpoint, save_checkpoint};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::distill::distillation_loss;
use crate::run::{BEST, EMA, LATEST, OPTIMIZER, read_json, read_optimizer, write_json, write_metrics, write_optimizer};
use crate::{
    AdvSource, AdversarialTraining, BatchStream, EpochMetrics, RunFiles, RunState, Selection, SoftTargets, TrainConfig,
    TrainError, data_parallel_step, ema_decay_at, ema_update, evaluate, read_metrics,
};

/// How to run [`train`] (as opposed to what to train, which is the [`TrainConfig`]).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Continue the run in the directory from its last completed epoch.
    pub resume: bool,
    /// Stop after this many epochs in this call (the run stays resumable).
    pub stop_after: Option<usize>,
    /// Draw progress bars (they hide themselves when stderr is not a terminal).
    pub progress: bool,
    /// Write `report.json` and the PNG plots when the last epoch is done.
    pub write_report: bool,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions { resume: false, stop_after: None, progress: true, write_report: true }
    }
}

/// What a run achieved, by honest selection and by the reference's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// Epochs completed so far.
    pub completed_epochs: usize,
    /// What picked the checkpoint (always measured on PublicTest).
    pub selection: Selection,
    /// 0-based epoch with the best PublicTest selection score (the checkpoint `best.fer`).
    pub selected_epoch: usize,
    /// PublicTest selection score of the selected epoch.
    pub selected_score: f64,
    /// PublicTest accuracy of the selected epoch.
    pub selected_public_acc: f64,
    /// **Headline**: PrivateTest accuracy of the selected epoch.
    pub selected_private_acc: f64,
    /// Adversarial training: PublicTest accuracy under the evaluation attack, selected epoch.
    pub selected_public_adv_acc: Option<f64>,
    /// Adversarial training, **headline**: PrivateTest accuracy under the evaluation attack at
    /// the selected epoch.
    pub selected_private_adv_acc: Option<f64>,
    /// Adversarial training: PublicTest balanced accuracy under the evaluation attack at the
    /// selected epoch (`None` for runs whose metrics.csv lacks it).
    #[serde(default)]
    pub selected_public_adv_balanced_acc: Option<f64>,
    /// The reference's figure: best PrivateTest accuracy over all epochs (selected on the test set).
    pub reference_style_private_acc: f64,
    /// Epoch of `reference_style_private_acc`.
    pub reference_style_epoch: usize,
    /// The reference's adversarial figure: best PrivateTest accuracy under attack over all epochs.
    pub reference_style_private_adv_acc: Option<f64>,
    /// Epochs (0-based) flagged as catastrophic overfitting.
    pub catastrophic_epochs: Vec<usize>,
    /// Epochs (0-based) where one class took more than [`crate::DOMINANT_ANSWER_SHARE`] of
    /// PublicTest's answers under the evaluation attack: their attacked accuracy is largely a
    /// constant answer's, which the catastrophic-overfitting check cannot see (a constant answer
    /// resists PGD as well as FGSM).
    #[serde(default)]
    pub constant_answer_epochs: Vec<usize>,
}

impl RunSummary {
    /// Summarises `metrics.csv` rows under `selection`; `None` when there are none.
    pub fn from_metrics(rows: &[EpochMetrics], selection: Selection) -> Option<RunSummary> {
        // Ties keep the earliest epoch, as the loop does (it replaces best only on improvement).
        let first_best = |key: &dyn Fn(&EpochMetrics) -> f64| {
            rows.iter().fold(None::<&EpochMetrics>, |best, r| match best {
                Some(b) if key(b) >= key(r) => Some(b),
                _ => Some(r),
            })
        };
        let selected = first_best(&|r| r.score(selection))?;
        let by_private = first_best(&|r| r.private_acc)?;
        let best_private_adv = rows.iter().filter_map(|r| r.private_adv_acc).reduce(f64::max);
        Some(RunSummary {
            completed_epochs: rows.len(),
            selection,
            selected_epoch: selected.epoch,
            selected_score: selected.score(selection),
            selected_public_acc: selected.public_acc,
            selected_private_acc: selected.private_acc,
            selected_public_adv_acc: selected.public_adv_acc,
            selected_private_adv_acc: selected.private_adv_acc,
            selected_public_adv_balanced_acc: selected.public_adv_balanced_acc,
            reference_style_private_acc: by_private.private_acc,
            reference_style_epoch: by_private.epoch,
            reference_style_private_adv_acc: best_private_adv,
            catastrophic_epochs: rows.iter().filter(|r| r.catastrophic == Some(true)).map(|r| r.epoch).collect(),
            constant_answer_epochs: rows
                .iter()
                .filter(|r| r.public_adv_top_answer_share.is_some_and(crate::is_dominant_share))
                .map(|r| r.epoch)
                .collect(),
        })
    }
}

/// SplitMix64-style mixing of a seed with a stream number.
fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The positions of a split's faces that a run uses: all when `limit` is `None` or not smaller
/// than `len`; else a random subset of `limit` drawn with `subset_seed` and kept in file order, or
/// the first `limit` when no seed is given. (Image and feature-model runs pass their own seeds.)
pub(crate) fn subset_positions(len: usize, limit: Option<usize>, subset_seed: Option<u64>) -> Vec<usize> {
    let mut positions: Vec<usize> = (0..len).collect();
    if let Some(n) = limit.filter(|&n| n < len) {
        if let Some(seed) = subset_seed {
            positions.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            positions.truncate(n);
            positions.sort_unstable();
        } else {
            positions.truncate(n);
        }
    }
    positions
}

/// The positions in the Training split of a run's training faces: all, or a seeded subset of
/// `limit` faces (in file order).
fn training_positions(data: &Fer2013, config: &TrainConfig) -> Vec<usize> {
    subset_positions(data.split(Split::Training).len(), config.train_limit, Some(mix(config.seed, 0x5EB5E7)))
}

/// The first `limit` faces of a test split (all when `None`).
pub(crate) fn evaluation_faces(data: &Fer2013, split: Split, limit: Option<usize>) -> SplitData {
    let all = data.split(split);
    all.select(&subset_positions(all.len(), limit, None))
}

/// The evaluation view of a run.
pub(crate) fn evaluation_view(config: &TrainConfig) -> View {
    if config.eval_tencrop { View::TenCrop(config.crop) } else { View::CenterCrop(config.crop) }
}

/// The optimiser of every run: SGD (momentum, weight decay, gradient clamp) adapted to the model.
pub(crate) type RunOptimizer<B> =
    burn::optim::adaptor::OptimizerAdaptor<burn::optim::Sgd<<B as AutodiffBackend>::InnerBackend>, Model<B>, B>;

/// The reference's optimiser: SGD with PyTorch-style momentum (no dampening; Nesterov's with
/// `config.nesterov`), L2 weight decay added to the gradient, and each gradient element clamped
/// to `±grad_clip` before both (the reference's `clip_gradient` runs before `optimizer.step()`).
pub(crate) fn build_optimizer<B: AutodiffBackend>(config: &TrainConfig) -> RunOptimizer<B> {
    SgdConfig::new()
        .with_momentum((config.momentum > 0.0).then_some(MomentumConfig {
            momentum: config.momentum,
            dampening: 0.0, // PyTorch semantics; Burn's default is 0.1
            nesterov: config.nesterov,
        }))
        .with_weight_decay((config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32)))
        .with_gradient_clipping(config.grad_clip.map(burn::optim::grad_clipping::GradientClippingConfig::Value))
        .init::<B, Model<B>>()
}

/// Trains `config.model` on FER2013 into the run directory `dir` (see [`RunFiles`]).
///
/// Every epoch: a seeded shuffle, seeded RandomCrop+flip, SGD steps with the scheduled rate,
/// then evaluation of PublicTest and PrivateTest (TenCrop by default), a `metrics.csv` row,
/// `latest.fer` + `latest.optim`, `best.fer` when PublicTest improves, and `state.json` last.
/// Data order, crops and dropout are re-seeded from `(seed, epoch)`, so a resumed run repeats
/// exactly what the uninterrupted run would have done. With `options.resume`, `config` must equal
/// the run's `config.json`.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    data: &Fer2013,
    dir: &Path,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<RunSummary, TrainError> {
    train_on_devices::<B>(config, data, dir, options, std::slice::from_ref(device))
}

/// [`train`] with each step's batch split over `devices` (data parallel, see
/// [`crate::data_parallel_step`] for the semantics). The first device holds the model, evaluates
/// and checkpoints; the run directory is the same as a one-device run's, so a run resumes on any
/// number of devices.
pub fn train_on_devices<B: AutodiffBackend>(
    config: &TrainConfig,
    data: &Fer2013,
    dir: &Path,
    options: &TrainOptions,
    devices: &[B::Device],
) -> Result<RunSummary, TrainError> {
    config.check().map_err(TrainError::Config)?;
    let device = devices.first().ok_or_else(|| TrainError::Config("no device given".into()))?;
    if config.mixup_alpha.is_some() && devices.len() > 1 {
        return Err(TrainError::Config(format!(
            "mixup runs on one device, not on {} replicas: train on one device or without mixup",
            devices.len()
        )));
    }

    if config.distillation.is_some() && devices.len() > 1 {
        return Err(TrainError::Config(format!(
            "distillation runs on one device, not on {} replicas: train on one device or without teachers",
            devices.len()
        )));
    }

    let files = RunFiles::new(dir);
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io { path: dir.to_path_buf(), source })?;

    let positions = training_positions(data, config);
    let train_split = Arc::new(data.split(Split::Training).select(&positions));
    // The teachers' tempered answers, one row per face of `train_split`.
    let soft_targets = match &config.distillation {
        Some(distillation) => {
            let soft = SoftTargets::load(distillation, data.split(Split::Training), &positions)?;
            tracing::info!(
                "distilling {} teacher(s) into the run (weight {}, temperature {})",
                distillation.teachers.len(),
                distillation.weight,
                distillation.temperature
            );
            Some(soft)
        }
        None => None,
    };
    let public = Arc::new(evaluation_faces(data, Split::PublicTest, config.eval_limit));
    let private = Arc::new(evaluation_faces(data, Split::PrivateTest, config.eval_limit));
    for (name, split) in [("Training", &train_split), ("PublicTest", &public), ("PrivateTest", &private)] {
        if split.is_empty() {
            return Err(TrainError::Data(format!("the {name} split is empty")));
        }
    }

    B::seed(device, config.seed);
    let mut model: Model<B> = match &config.init {
        Some(init) if !options.resume => initial_weights(init, &config.model, device)?,
        _ => config.model.init(device),
    };
    let mut optim = build_optimizer::<B>(config);
    // The weights' moving average (`config.ema_decay`), from the starting weights.
    let mut average = config.ema_decay.map(|_| model.valid());

    let (mut state, mut rows) = if options.resume {
        if !files.state().exists() {
            return Err(TrainError::NothingToResume { dir: dir.to_path_buf() });
        }
        let stored: TrainConfig = read_json(&files.config())?;
        if &stored != config {
            return Err(TrainError::Config(format!("the configuration differs from {}", files.config().display())));
        }
        let mut state: RunState = read_json(&files.state())?;
        crate::commit::recover(dir, &files.state(), &mut state, |s| &mut s.pending)?;
        let (loaded, _) = load_checkpoint::<B>(files.latest(), device)?;
        model = loaded;
        if config.ema_decay.is_some() {
            average = Some(load_checkpoint::<B::InnerBackend>(files.ema(), device)?.0);
        }
        optim = read_optimizer(&files.optimizer(), optim, device)?;
        let mut rows = read_metrics(&files.metrics())?;
        rows.retain(|r| r.epoch < state.completed_epochs);
        tracing::info!("resuming {} after epoch {}", dir.display(), state.completed_epochs);
        (state, rows)
    } else {
        if files.state().exists() {
            return Err(TrainError::RunExists { dir: dir.to_path_buf() });
        }
        write_json(&files.config(), config)?;
        (RunState { completed_epochs: 0, best_epoch: None, best_score: -1.0, pending: Vec::new() }, Vec::new())
    };

    let loss_fn = training_loss::<B>(config, device);
    let faces = train_split.len();
    let steps_per_epoch = steps_per_epoch(faces, config)?;
    let batcher = FaceBatcher::new(View::RandomCropFlip(config.crop), config.seed, faces)
        .with_augmentation(config.augmentation)
        .with_whole_faces(config.whole_face_pct);
    let view = evaluation_view(config);
    let last_epoch = options.stop_after.map_or(config.epochs, |n| (state.completed_epochs + n).min(config.epochs));

    for epoch in state.completed_epochs..last_epoch {
        let started = Instant::now();
        // On one device: dropout masks from the backend's generator, attack starts from `rng`.
        B::seed(device, mix(config.seed, 1 + epoch as u64));
        let mut order: Vec<usize> = (0..faces).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(config.seed, 0xDA7A_0000 + epoch as u64)));
        order.truncate(steps_per_epoch * config.batch_size);
        // The faces of each step, for the teachers' answers (the stream takes `order`).
        let step_faces: Vec<Vec<usize>> = match &soft_targets {
            Some(_) => order.chunks(config.batch_size).map(<[usize]>::to_vec).collect(),
            None => Vec::new(),
        };
        batcher.set_epoch(epoch as u32);
        let mut rng = ChaCha8Rng::seed_from_u64(mix(config.seed, 0xAD00_0000 + epoch as u64));
        // Mixup's draws have their own stream, so runs without it draw as before.
        let mut mixup_rng = ChaCha8Rng::seed_from_u64(mix(config.seed, 0x313C_0000 + epoch as u64));
        let stream = BatchStream::<B>::new(
            train_split.clone(),
            order,
            config.batch_size,
            batcher.clone(),
            config.prefetch,
            device.clone(),
        );

        let mut progress = EpochProgress::new(options.progress, steps_per_epoch as u64, epoch, config.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0i64, 0usize);
        let attacked = std::sync::Mutex::new(AttackedTally::default());
        let epoch_lr = config.schedule.lr(config.lr, epoch, 0, steps_per_epoch, config.epochs);
        for (step, batch) in stream.enumerate() {
            let lr = config.schedule.lr(config.lr, epoch, step, steps_per_epoch, config.epochs);
            let n = batch.targets.dims()[0];
            // This step's adversarial training: the attack at the ramp's ε.
            let step_adversarial = config.adversarial.as_ref().map(|adv| AdversarialTraining {
                attack: adv.training_attack(epoch, step, steps_per_epoch),
                ..adv.clone()
            });
            let (loss_value, hits, grads) = if devices.len() > 1 {
                // Each shard's dropout masks and attack starts come from its own generator, seeded
                // by (epoch, step, shard), so the draws do not depend on thread timing.
                let forward = |shard: usize, m: &Model<B>, x: Tensor<B, 4>, y: Tensor<B, 1, Int>| {
                    let stream = ((epoch as u64) << 40) ^ ((step as u64) << 8) ^ shard as u64;
                    let mut rng = ChaCha8Rng::seed_from_u64(mix(config.seed, 0xAD01_0000_0000_0000 ^ stream));
                    let batch = adversarial_loss(step_adversarial.as_ref(), m, x, y.clone(), &loss_fn, &mut rng, true)
                        .map_err(|e| e.to_string())?;
                    if let Some(crops) = batch.attacked {
                        attacked.lock().map_err(|e| tally_poisoned(e).to_string())?.add(crops, batch.linearity, y);
                    }
                    Ok((batch.loss, batch.logits))
                };
                let step_out = data_parallel_step(&model, devices, batch.images, batch.targets, &forward)
                    .map_err(TrainError::Data)?;
                (step_out.loss, step_out.hits, step_out.grads)
            } else if let Some(alpha) = config.mixup_alpha {
                let mixed = mixup(batch.images, batch.targets, alpha, &mut mixup_rng)?;
                let logits = model.forward_training(mixed.images.clone(), NormStatistics::BatchUpdate, None);
                let loss = mixed.loss(&loss_fn, logits.clone());
                let loss_value: f32 = loss.clone().into_scalar().elem();
                let hits = correct_predictions(logits, mixed.larger_share_targets());
                (loss_value, hits, GradientsParams::from_grads(loss.backward(), &model))
            } else {
                let out = adversarial_loss(
                    step_adversarial.as_ref(),
                    &model,
                    batch.images,
                    batch.targets.clone(),
                    &loss_fn,
                    &mut rng,
                    false,
                )?;
                if let Some(crops) = out.attacked {
                    attacked.lock().map_err(tally_poisoned)?.add(crops, out.linearity, batch.targets.clone());
                }
                let loss = match (&soft_targets, &config.distillation) {
                    (Some(soft), Some(distillation)) => {
                        let faces = step_faces.get(step).ok_or_else(|| {
                            TrainError::Data(format!("step {step} is past the epoch's {} batches", step_faces.len()))
                        })?;
                        distillation_loss(
                            out.logits.clone(),
                            out.loss,
                            soft.batch(faces, device)?,
                            distillation.weight,
                            distillation.temperature,
                        )
                    }
                    _ => out.loss,
                };
                let loss_value: f32 = loss.clone().into_scalar().elem();
                let hits = correct_predictions(out.logits, batch.targets);
                (loss_value, hits, GradientsParams::from_grads(loss.backward(), &model))
            };
            if !loss_value.is_finite() {
                progress.bar().abandon();
                return Err(TrainError::NonFinite { epoch, step, loss: loss_value });
            }
            model = optim.step(lr, model, grads);
            if let (Some(decay), Some(avg)) = (config.ema_decay, average.take()) {
                let update = (epoch * steps_per_epoch + step) as u64;
                average = Some(ema_update(avg, &model.valid(), ema_decay_at(decay, update)).map_err(TrainError::Data)?);
            }

            loss_sum += f64::from(loss_value) * n as f64;
            correct += hits;
            seen += n;
            let secs = started.elapsed().as_secs_f64();
            let ramping =
                step_adversarial.as_ref().zip(config.adversarial.as_ref()).filter(|(s, a)| s.attack != a.attack);
            let ramp = ramping.map_or(String::new(), |(s, _)| format!(" (ε {:.4})", s.attack.eps()));
            let figures = attacked.lock().ok().map(|t| (t.mean_loss().zip(t.accuracy()), t.mean_linearity()));
            let attacked_figures = match figures {
                Some((Some((loss, acc)), linearity)) => {
                    let linearity = linearity.map_or(String::new(), |error| format!(" lin. error {error:.4}"));
                    format!(" | attacked{ramp} loss {loss:.4} acc {:.2}%{linearity}", 100.0 * acc)
                }
                _ => String::new(),
            };
            progress.step(format!(
                "loss {:.4} acc {:.2}%{attacked_figures} {:.0} img/s lr {lr:.5}",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                seen as f64 / secs.max(1e-9)
            ));
        }
        let train_seconds = started.elapsed().as_secs_f64();
        progress.bar().finish_and_clear();
        let attacked = attacked.into_inner().map_err(tally_poisoned)?;

        // The run's model: the moving average when there is one, else the weights themselves.
        let inference = average.clone().unwrap_or_else(|| model.valid());
        let both_splits = |m: &Model<B::InnerBackend>| {
            let on = |split: &Arc<SplitData>| evaluate(m, split.clone(), view, config.eval_batch_faces, device);
            (on(&public), on(&private))
        };
        let (public_eval, private_eval) = both_splits(&inference);
        // With an average, the raw weights' clean accuracies beside it.
        let raw = average.as_ref().map(|_| {
            let (public_raw, private_raw) = both_splits(&model.valid());
            (public_raw.accuracy(), private_raw.accuracy())
        });
        let robust = match &config.adversarial {
            Some(adv) => {
                let attacked = match &average {
                    Some(avg) => &Model::<B>::from_inner(avg.clone()),
                    None => &model,
                };
                Some(epoch_robustness(attacked, adv, config, epoch, [&public, &private], options.progress, device)?)
            }
            None => None,
        };
        let row = EpochMetrics {
            epoch,
            lr: epoch_lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            public_loss: public_eval.mean_loss(),
            public_acc: public_eval.accuracy(),
            private_loss: private_eval.mean_loss(),
            private_acc: private_eval.accuracy(),
            img_per_s: seen as f64 / train_seconds.max(1e-9),
            seconds: started.elapsed().as_secs_f64(),
            public_adv_acc: robust.map(|r| r.public),
            private_adv_acc: robust.map(|r| r.private),
            check_eval_acc: robust.and_then(|r| r.check.map(|c| c.eval_acc)),
            check_pgd_acc: robust.and_then(|r| r.check.map(|c| c.check_acc)),
            catastrophic: robust.and_then(|r| r.check.map(|c| c.catastrophic)),
            train_adv_loss: attacked.mean_loss(),
            train_adv_acc: attacked.accuracy(),
            public_adv_balanced_acc: robust.map(|r| r.public_balanced),
            public_adv_top_answer_share: robust.map(|r| r.public_top_answer.1),
            public_balanced_acc: Some(public_eval.balanced_accuracy()),
            public_adv_robust_acc: robust.map(|r| r.public_robust),
            check_eval_robust_acc: robust.and_then(|r| r.check.map(|c| c.eval_robust)),
            check_pgd_robust_acc: robust.and_then(|r| r.check.map(|c| c.check_robust)),
            raw_public_acc: raw.map(|r| r.0),
            raw_private_acc: raw.map(|r| r.1),
            train_linearity_error: attacked.mean_linearity(),
        };
        if let (Some(adv), Some(r)) = (&config.adversarial, robust) {
            tracing::info!(
                "epoch {}: attacked training crops: loss {:.4} acc {:.2}%{} | {} PublicTest {:.2}% (balanced {:.2}%, right before and after {:.2}%) | PrivateTest {:.2}%",
                epoch + 1,
                row.train_adv_loss.unwrap_or(f64::NAN),
                100.0 * row.train_adv_acc.unwrap_or(f64::NAN),
                row.train_linearity_error.map_or(String::new(), |e| format!(", local-linearity error {e:.5}")),
                adv.eval_attack.label(),
                100.0 * r.public,
                100.0 * r.public_balanced,
                100.0 * r.public_robust,
                100.0 * r.private
            );
            let (class, share) = r.public_top_answer;
            if crate::is_dominant_share(share) {
                tracing::warn!(
                    "epoch {}: under {} the model answers {} for {:.1}% of the PublicTest faces: its attacked accuracy is largely a constant answer's",
                    epoch + 1,
                    adv.eval_attack.label(),
                    class.name(),
                    100.0 * share
                );
            }
            if let Some(check) = r.check.filter(|c| c.catastrophic) {
                tracing::warn!(
                    "epoch {}: catastrophic overfitting: on the first {} PublicTest faces {} gives {:.2}% but {} gives {:.2}% (right both clean and under attack: {:.2}% and {:.2}%)",
                    epoch + 1,
                    adv.check_faces.min(public.len()),
                    adv.eval_attack.label(),
                    100.0 * check.eval_acc,
                    adv.check_attack.label(),
                    100.0 * check.check_acc,
                    100.0 * check.eval_robust,
                    100.0 * check.check_robust
                );
            }
        }
        let raw_figures = match raw {
            Some((public, private)) => {
                format!(" (weight average; the weights: {:.2}% | {:.2}%)", 100.0 * public, 100.0 * private)
            }
            None => String::new(),
        };
        tracing::info!(
            "epoch {}/{}: lr {:.5} train loss {:.4} acc {:.2}% | PublicTest {:.2}% | PrivateTest {:.2}%{raw_figures} | {:.1} img/s, {:.1}s",
            epoch + 1,
            config.epochs,
            row.lr,
            row.train_loss,
            100.0 * row.train_acc,
            100.0 * row.public_acc,
            100.0 * row.private_acc,
            row.img_per_s,
            row.seconds
        );
        rows.push(row.clone());
        write_metrics(&files.metrics(), &rows)?;

        let meta = serde_json::json!({
            "epoch": epoch,
            "public_acc": row.public_acc,
            "private_acc": row.private_acc,
            "public_adv_acc": row.public_adv_acc,
            "private_adv_acc": row.private_adv_acc,
            "train_config": config,
        });
        // The epoch's files are staged, then committed by state.json (crate::commit).
        let mut staged = crate::commit::EpochFiles::new(dir, epoch);
        save_checkpoint(staged.stage(LATEST)?, &model, &config.model, meta.clone())?;
        write_optimizer(&staged.stage(OPTIMIZER)?, &optim)?;
        if let Some(avg) = &average {
            save_checkpoint(staged.stage(EMA)?, avg, &config.model, meta.clone())?;
        }
        let score = row.score(config.selection());
        if score > state.best_score {
            // The model this epoch evaluated: the average with one, else the weights' inference copy.
            save_checkpoint(staged.stage(BEST)?, &inference, &config.model, meta)?;
            state.best_score = score;
            state.best_epoch = Some(epoch);
        }
        state.completed_epochs = epoch + 1;
        staged.commit(&files.state(), &mut state, |s| &mut s.pending)?;
    }

    if state.completed_epochs == config.epochs && options.write_report {
        crate::write_report::<B>(&files, data, device)?;
    }
    RunSummary::from_metrics(&rows, config.selection()).ok_or_else(|| TrainError::Data("no epoch was run".into()))
}

/// The model of `init` (a run's starting weights), after checking that the file is the one the
/// run was configured with and holds `expected`.
fn initial_weights<B: AutodiffBackend>(
    init: &crate::InitCheckpoint,
    expected: &fer_models::ModelConfig,
    device: &B::Device,
) -> Result<Model<B>, TrainError> {
    // One read: the checksum compared is that of the weights loaded.
    let (model, header, checksum) = fer_models::load_checkpoint_with_checksum::<B>(&init.path, device)?;
    if checksum != init.checksum {
        return Err(TrainError::Config(format!(
            "{}: checksum {checksum:08x} differs from the {:08x} recorded in the configuration (the file changed)",
            init.path.display(),
            init.checksum
        )));
    }
    header.ensure_model(expected, &init.path)?;
    tracing::info!("starting from the weights of {} (checksum {checksum:08x})", init.path.display());
    Ok(model)
}

/// One training batch's loss and what the epoch's figures need from it.
pub(crate) struct BatchLoss<B: AutodiffBackend> {
    /// The loss to differentiate.
    pub(crate) loss: Tensor<B, 1>,
    /// Logits of the clean crops.
    logits: Tensor<B, 2>,
    /// Adversarial training only: cross-entropy and logits of the attacked crops.
    attacked: Option<(Tensor<B, 1>, Tensor<B, 2>)>,
    /// With ELLE ([`AdversarialTraining::linearity_weight`]) only: the batch's local-linearity
    /// error, detached.
    linearity: Option<Tensor<B, 1>>,
}

/// The error of an [`AttackedTally`] whose lock a panicking thread left poisoned.
fn tally_poisoned<T>(_: std::sync::PoisonError<T>) -> TrainError {
    TrainError::Data("a thread panicked while counting the attacked training crops".into())
}

/// Sums over an epoch of the attacked training crops' loss and correct answers and, with ELLE,
/// of the local-linearity error.
#[derive(Debug, Default)]
struct AttackedTally {
    loss_sum: f64,
    hits: i64,
    seen: usize,
    /// With ELLE only: the sum over the attacked crops of the local-linearity error.
    linearity_sum: Option<f64>,
}

impl AttackedTally {
    /// Adds one batch (or shard): its attacked crops' mean loss and logits, with ELLE the batch's
    /// mean local-linearity error, and their targets.
    fn add<Bk: Backend>(
        &mut self,
        (loss, logits): (Tensor<Bk, 1>, Tensor<Bk, 2>),
        linearity: Option<Tensor<Bk, 1>>,
        targets: Tensor<Bk, 1, Int>,
    ) {
        let n = targets.dims()[0];
        let value: f32 = loss.into_scalar().elem();
        self.loss_sum += f64::from(value) * n as f64;
        if let Some(error) = linearity {
            let error: f32 = error.into_scalar().elem();
            *self.linearity_sum.get_or_insert(0.0) += f64::from(error) * n as f64;
        }
        self.hits += correct_predictions(logits, targets);
        self.seen += n;
    }

    /// Mean local-linearity error per attacked crop; `None` without ELLE.
    fn mean_linearity(&self) -> Option<f64> {
        self.linearity_sum.filter(|_| self.seen > 0).map(|sum| sum / self.seen as f64)
    }

    /// Mean loss per crop; `None` when nothing was attacked.
    fn mean_loss(&self) -> Option<f64> {
        (self.seen > 0).then(|| self.loss_sum / self.seen as f64)
    }

    /// Accuracy; `None` when nothing was attacked.
    fn accuracy(&self) -> Option<f64> {
        (self.seen > 0).then(|| self.hits as f64 / self.seen as f64)
    }
}

/// The training loss of one batch, its clean logits and (adversarial training) the attacked
/// crops' cross-entropy and logits: cross-entropy, or with adversarial training
/// `(1 − w) · clean + w · adversarial` (TRADES: `clean + β · KL(p(clean) ‖ p(attacked))`) with
/// the examples crafted by `adversarial`'s attack and passed through the model with its
/// [`AdversarialTraining::norm_statistics`] (the clean crops with
/// [`AdversarialTraining::clean_norm_statistics`]). `rng` draws the attack's random start and,
/// with `seed_dropout`, a dropout seed for every pass (else the masks come from the backend's
/// generator, as in runs on one device since the first version: their reruns and resumptions stay
/// bit-identical).
pub(crate) fn adversarial_loss<B: AutodiffBackend>(
    adversarial: Option<&AdversarialTraining>,
    model: &Model<B>,
    images: Tensor<B, 4>,
    targets: Tensor<B, 1, Int>,
    loss_fn: &burn::nn::loss::CrossEntropyLoss<B>,
    rng: &mut ChaCha8Rng,
    seed_dropout: bool,
) -> Result<BatchLoss<B>, fer_adversarial::AttackError> {
    // Drawn only with `seed_dropout`, so that the attack starts' draws stay as they were without.
    let dropout_seed = |rng: &mut ChaCha8Rng| seed_dropout.then(|| rng.random::<u64>());
    let Some(adv) = adversarial else {
        let logits = model.forward_training(images, NormStatistics::BatchUpdate, dropout_seed(rng));
        return Ok(BatchLoss {
            loss: loss_fn.forward(logits.clone(), targets),
            logits,
            attacked: None,
            linearity: None,
        });
    };
    let labels = Labels::from_source(adv.labels, targets.clone());
    let attacked = match adv.source {
        AdvSource::Frozen => {
            let frozen = model.clone().no_grad();
            perturb(&adv.attack, |x| frozen.forward_inference(x), images.clone(), labels, rng)?
        }
        AdvSource::Current => {
            // Each of the attack's passes draws its own dropout masks.
            let (seed, passes) = (dropout_seed(rng), std::cell::Cell::new(0u64));
            let forward = |x| {
                passes.set(passes.get() + 1);
                model.forward_training(x, adv.norm_statistics, seed.map(|s| mix(s, passes.get())))
            };
            perturb(&adv.attack, forward, images.clone(), labels, rng)?
        }
    };
    let faces = adv.linearity_weight.map(|_| images.clone());
    let logits = model.forward_training(images, adv.clean_norm_statistics, dropout_seed(rng));
    let clean = loss_fn.forward(logits.clone(), targets.clone());
    let attacked_logits = model.forward_training(attacked, adv.norm_statistics, dropout_seed(rng));
    let adversarial = loss_fn.forward(attacked_logits.clone(), targets.clone());
    let mut loss = match adv.trades_beta {
        None => clean.mul_scalar(1.0 - adv.weight) + adversarial.clone().mul_scalar(adv.weight),
        Some(beta) => clean + kl_from_clean(logits.clone(), attacked_logits.clone()).mul_scalar(beta),
    };
    let mut linearity = None;
    if let (Some(lambda), Some(faces)) = (adv.linearity_weight, faces) {
        // One dropout seed for the three points: a face's three passes share their masks.
        let seed = rng.random::<u64>();
        let forward = |x| model.forward_training(x, adv.norm_statistics, Some(seed));
        let error = local_linearity_error(forward, faces, targets, adv.attack.eps(), rng)?;
        loss = loss + error.clone().mul_scalar(lambda);
        linearity = Some(error.detach());
    }
    Ok(BatchLoss { loss, logits, attacked: Some((adversarial.detach(), attacked_logits.detach())), linearity })
}

/// The training loss of `config`: cross-entropy, label-smoothed by `config.label_smoothing`.
pub(crate) fn training_loss<B: Backend>(
    config: &TrainConfig,
    device: &B::Device,
) -> burn::nn::loss::CrossEntropyLoss<B> {
    let smoothing = (config.label_smoothing > 0.0).then_some(config.label_smoothing);
    CrossEntropyLossConfig::new().with_smoothing(smoothing).init(device)
}

/// A mixup batch ([`mixup`]).
pub(crate) struct Mixup<B: Backend> {
    /// `λ·x + (1 − λ)·x[π]`.
    pub(crate) images: Tensor<B, 4>,
    /// The labels `y` of the faces.
    pub(crate) targets: Tensor<B, 1, Int>,
    /// The labels `y[π]` of their partners.
    pub(crate) partner_targets: Tensor<B, 1, Int>,
    /// The faces' share `λ`.
    pub(crate) lambda: f32,
}

impl<B: Backend> Mixup<B> {
    /// `λ·loss(logits, y) + (1 − λ)·loss(logits, y[π])`.
    pub(crate) fn loss(&self, loss_fn: &burn::nn::loss::CrossEntropyLoss<B>, logits: Tensor<B, 2>) -> Tensor<B, 1> {
        let own = loss_fn.forward(logits.clone(), self.targets.clone()).mul_scalar(self.lambda);
        own + loss_fn.forward(logits, self.partner_targets.clone()).mul_scalar(1.0 - self.lambda)
    }

    /// The labels of the larger share of each mixed face (`y` when `λ ≥ 0.5`), for accuracy.
    pub(crate) fn larger_share_targets(&self) -> Tensor<B, 1, Int> {
        if self.lambda >= 0.5 { self.targets.clone() } else { self.partner_targets.clone() }
    }
}

/// Mixup of a batch (Zhang et al., 2018): one `λ ~ Beta(α, α)` and a random pairing `π` of the
/// faces drawn from `rng`, the images mixed as `λ·x + (1 − λ)·x[π]`.
pub(crate) fn mixup<B: Backend>(
    images: Tensor<B, 4>,
    targets: Tensor<B, 1, Int>,
    alpha: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Mixup<B>, TrainError> {
    use rand_distr::Distribution as _;
    let beta = rand_distr::Beta::new(alpha, alpha).map_err(|e| TrainError::Config(format!("mixup α {alpha}: {e}")))?;
    let lambda: f32 = beta.sample(rng);
    let n = images.dims()[0];
    let mut partners: Vec<usize> = (0..n).collect();
    partners.shuffle(rng);
    let device = images.device();
    let index = Tensor::<B, 1, Int>::from_data(
        TensorData::new(partners.iter().map(|&j| j as i64).collect::<Vec<_>>(), [n]),
        &device,
    );
    let mixed = images.clone().mul_scalar(lambda) + images.select(0, index.clone()).mul_scalar(1.0 - lambda);
    let partner_targets = targets.clone().select(0, index);
    Ok(Mixup { images: mixed, targets, partner_targets, lambda })
}

/// Correct top-1 predictions of a batch.
pub(crate) fn correct_predictions<Bk: Backend>(logits: Tensor<Bk, 2>, targets: Tensor<Bk, 1, Int>) -> i64 {
    logits.argmax(1).squeeze_dim::<1>(1).equal(targets).int().sum().into_scalar().elem()
}

/// Robustness figures of one epoch.
#[derive(Debug, Clone, Copy)]
struct EpochRobustness {
    /// PublicTest accuracy under the evaluation attack.
    public: f64,
    /// PrivateTest accuracy under the evaluation attack.
    private: f64,
    /// PublicTest under the evaluation attack: balanced accuracy, and the most frequent answer
    /// with its share of the faces.
    public_balanced: f64,
    public_top_answer: (Emotion, f64),
    /// PublicTest: the share of faces right both clean and under the evaluation attack.
    public_robust: f64,
    /// The catastrophic-overfitting check, when on.
    check: Option<OverfittingCheck>,
}

/// The catastrophic-overfitting check of one epoch: the evaluation attack (FGSM) against the
/// check attack (PGD) on the first PublicTest faces, inference mode, predicted labels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OverfittingCheck {
    /// Accuracy under the evaluation attack.
    eval_acc: f64,
    /// Accuracy under the check attack.
    check_acc: f64,
    /// Faces right both clean and under the evaluation attack.
    eval_robust: f64,
    /// Faces right both clean and under the check attack.
    check_robust: f64,
    /// [`AdversarialTraining::is_catastrophic`] on the two accuracies or
    /// [`AdversarialTraining::is_robust_collapse`] on the two robust figures.
    catastrophic: bool,
}

/// Attacks both test splits with the evaluation attack (predicted labels, inference mode, full
/// faces or the centred crop: [`AdversarialTraining::robustness`]) and runs the
/// catastrophic-overfitting check.
fn epoch_robustness<B: AutodiffBackend>(
    model: &Model<B>,
    adv: &AdversarialTraining,
    config: &TrainConfig,
    epoch: usize,
    [public, private]: [&Arc<SplitData>; 2],
    progress: bool,
    device: &B::Device,
) -> Result<EpochRobustness, TrainError> {
    let robustness =
        |attack, stream: u64| adv.robustness(attack, config.eval_batch_faces, mix(config.seed, stream + epoch as u64));
    let run = |split: &Arc<SplitData>, attack_config: &RobustnessConfig, name: &str| {
        let bar = progress_bar(progress, split.len() as u64, epoch, config.epochs);
        bar.set_prefix(format!("{} {name}", attack_config.attack.label()));
        let result = evaluate_robustness(model, split.clone(), attack_config, device, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64)
        });
        bar.finish_and_clear();
        result
    };
    let public_result = run(public, &robustness(adv.eval_attack, 0xE1_0000), "PublicTest")?;
    let private_result = run(private, &robustness(adv.eval_attack, 0xE2_0000), "PrivateTest")?;
    let check = if adv.check_faces > 0 {
        let faces = adv.check_faces.min(public.len());
        let (kept, made) = right_after_attack(&public_result.predictions[..faces], public.labels());
        let share = |count: u64| count as f64 / faces as f64;
        let subset = Arc::new(public.select(&(0..faces).collect::<Vec<_>>()));
        let checked = run(&subset, &robustness(adv.check_attack, 0xE3_0000), "check")?;
        let (eval_acc, check_acc) = (share(kept + made), checked.adversarial.accuracy());
        let (eval_robust, check_robust) = (share(kept), checked.robust_accuracy());
        Some(OverfittingCheck {
            eval_acc,
            check_acc,
            eval_robust,
            check_robust,
            catastrophic: adv.is_catastrophic(eval_acc, check_acc) || adv.is_robust_collapse(eval_robust, check_robust),
        })
    } else {
        None
    };
    let attacked = &public_result.adversarial;
    let public_top_answer = attacked.top_answer().unwrap_or((Emotion::Neutral, 0.0));
    Ok(EpochRobustness {
        public: attacked.accuracy(),
        private: private_result.adversarial.accuracy(),
        public_balanced: attacked.balanced_accuracy(),
        public_top_answer,
        public_robust: public_result.robust_accuracy(),
        check,
    })
}

pub(crate) fn progress_bar(visible: bool, steps: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    bar
}

/// Optimiser steps per epoch over `faces` training faces: one per batch, the last smaller one
/// included unless `config.drop_last`; an error when that leaves none.
fn steps_per_epoch(faces: usize, config: &TrainConfig) -> Result<usize, TrainError> {
    let steps = if config.drop_last { faces / config.batch_size } else { faces.div_ceil(config.batch_size) };
    if steps == 0 {
        let why = if config.drop_last { " (drop_last leaves out a smaller one)" } else { "" };
        return Err(TrainError::Config(format!("{faces} training faces make no batch of {}{why}", config.batch_size)));
    }
    Ok(steps)
}

/// Progress of an epoch's training steps: a bar on a terminal; where stderr is not a terminal
/// (a background run writing a log) the bar draws nothing, so a log line after the first step and
/// then every [`EpochProgress::LOG_EVERY`] says how far the epoch is.
pub(crate) struct EpochProgress {
    bar: ProgressBar,
    log_every: Option<std::time::Duration>,
    last_log: Option<Instant>,
}

impl EpochProgress {
    /// Interval of the log lines of runs without a terminal.
    pub(crate) const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    pub(crate) fn new(visible: bool, steps: u64, epoch: usize, epochs: usize) -> EpochProgress {
        use std::io::IsTerminal;
        let log_every = (visible && !std::io::stderr().is_terminal()).then_some(Self::LOG_EVERY);
        EpochProgress { bar: progress_bar(visible, steps, epoch, epochs), log_every, last_log: None }
    }

    /// One more step done; `message` holds the running figures (loss, accuracy, img/s).
    pub(crate) fn step(&mut self, message: String) {
        self.bar.inc(1);
        let due = |every| self.last_log.is_none_or(|last: Instant| last.elapsed() >= every);
        if self.log_every.is_some_and(due) {
            self.last_log = Some(Instant::now());
            let len = self.bar.length().unwrap_or(0);
            tracing::info!("{} step {}/{len}: {message}", self.bar.prefix(), self.bar.position());
        }
        self.bar.set_message(message);
    }

    /// The bar (to finish or abandon it).
    pub(crate) fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{ModuleVisitor, Param};
    use fer_models::ModelConfig;

    type B = Autodiff<NdArray>;

    /// A clean run's `metrics.csv` row of `epoch` with round figures, for the summary tests to
    /// override.
    fn clean_row(epoch: usize) -> EpochMetrics {
        EpochMetrics {
            epoch,
            lr: 0.01,
            train_loss: 1.0,
            train_acc: 0.5,
            public_loss: 1.0,
            public_acc: 0.5,
            private_loss: 1.0,
            private_acc: 0.5,
            img_per_s: 1.0,
            seconds: 1.0,
            public_balanced_acc: Some(0.45),
            ..EpochMetrics::default()
        }
    }

    #[test]
    fn the_summary_lists_constant_answer_epochs() {
        let row = |epoch: usize, share: Option<f64>| EpochMetrics {
            public_adv_acc: share.map(|_| 0.25),
            private_adv_acc: share.map(|_| 0.25),
            catastrophic: share.map(|_| false),
            public_adv_balanced_acc: share.map(|_| 0.2),
            public_adv_top_answer_share: share,
            ..clean_row(epoch)
        };
        let rows = [row(0, Some(0.3)), row(1, Some(0.5)), row(2, Some(0.51)), row(3, Some(1.0))];
        let summary = RunSummary::from_metrics(&rows, Selection::Mean).expect("rows");
        assert_eq!(summary.constant_answer_epochs, vec![2, 3], "more than half, not half");
        let clean = RunSummary::from_metrics(&[row(0, None)], Selection::Clean).expect("rows");
        assert!(clean.constant_answer_epochs.is_empty());
        // report.json summaries from before the field still read.
        let mut json = serde_json::to_value(&summary).expect("json");
        json.as_object_mut().expect("object").remove("constant_answer_epochs");
        let old: RunSummary = serde_json::from_value(json).expect("old summary");
        assert!(old.constant_answer_epochs.is_empty());
    }

    #[test]
    fn balanced_criteria_do_not_pick_a_constant_answer() {
        // Epoch 0 tells attacked faces apart (27 %, balanced 24 %); epoch 1 answers "happy" for
        // every attacked face: 25 % accuracy, balanced 1/7, and a little more clean accuracy.
        let row = |epoch: usize, clean: f64, clean_balanced: f64, adv: f64, adv_balanced: f64| EpochMetrics {
            public_acc: clean,
            private_acc: clean,
            public_adv_acc: Some(adv),
            private_adv_acc: Some(adv),
            catastrophic: Some(false),
            public_adv_balanced_acc: Some(adv_balanced),
            public_adv_top_answer_share: Some(if adv_balanced < 0.15 { 1.0 } else { 0.3 }),
            public_balanced_acc: Some(clean_balanced),
            ..clean_row(epoch)
        };
        let rows = [row(0, 0.55, 0.50, 0.27, 0.24), row(1, 0.60, 0.52, 0.25, 1.0 / 7.0)];
        let pick = |selection| RunSummary::from_metrics(&rows, selection).expect("rows").selected_epoch;
        assert_eq!(pick(Selection::Mean), 1, "accuracy cannot tell the constant answer apart");
        assert_eq!(pick(Selection::Clean), 1);
        assert_eq!(pick(Selection::Adversarial), 0);
        assert_eq!(pick(Selection::MeanBalanced), 0);
        assert_eq!(pick(Selection::AdversarialBalanced), 0);
        let summary = RunSummary::from_metrics(&rows, Selection::MeanBalanced).expect("rows");
        assert!((summary.selected_score - 0.5 * (0.50 + 0.24)).abs() < 1e-12, "{}", summary.selected_score);
        assert_eq!(summary.selected_public_adv_balanced_acc, Some(0.24));
        // Rows without balanced figures (older files) fall back to accuracy.
        let old: Vec<EpochMetrics> = rows
            .iter()
            .map(|r| EpochMetrics { public_balanced_acc: None, public_adv_balanced_acc: None, ..r.clone() })
            .collect();
        assert_eq!(old[1].score(Selection::MeanBalanced), old[1].score(Selection::Mean));
        assert_eq!(old[0].score(Selection::AdversarialBalanced), 0.27);
        // A clean run's rows score clean accuracy whatever the criterion.
        let clean = EpochMetrics { public_adv_acc: None, ..rows[0].clone() };
        for selection in Selection::ALL {
            assert_eq!(clean.score(selection), 0.55, "{selection:?}");
        }
    }

    #[test]
    fn robust_criteria_do_not_score_faces_the_attack_moved_onto_the_right_answer() {
        // Both epochs have 22 % of the attacked faces right; at epoch 0, 12 % were right clean
        // too, at epoch 1 only 2 % (the rest were wrong clean and moved by the attack), and epoch 1
        // has a little more clean accuracy.
        let row = |epoch: usize, clean: f64, robust: f64| EpochMetrics {
            public_acc: clean,
            public_adv_acc: Some(0.22),
            private_adv_acc: Some(0.22),
            catastrophic: Some(false),
            public_adv_balanced_acc: Some(0.2),
            public_adv_top_answer_share: Some(0.3),
            public_adv_robust_acc: Some(robust),
            ..clean_row(epoch)
        };
        let rows = [row(0, 0.50, 0.12), row(1, 0.55, 0.02)];
        let pick = |selection| RunSummary::from_metrics(&rows, selection).expect("rows").selected_epoch;
        assert_eq!(pick(Selection::Mean), 1, "attacked accuracy cannot tell the two apart");
        assert_eq!(pick(Selection::MeanRobust), 0);
        assert_eq!(pick(Selection::AdversarialRobust), 0);
        assert_eq!(rows[0].score(Selection::MeanRobust), 0.5 * (0.50 + 0.12));
        // Rows without the figure (older files) fall back to the attacked accuracy.
        let old = EpochMetrics { public_adv_robust_acc: None, ..rows[1].clone() };
        assert_eq!(old.score(Selection::MeanRobust), old.score(Selection::Mean));
        assert_eq!("mean-robust".parse::<Selection>(), Ok(Selection::MeanRobust));
    }

    #[test]
    fn subsets_are_seeded_sorted_and_sized() {
        assert_eq!(subset_positions(5, None, Some(1)), vec![0, 1, 2, 3, 4]);
        assert_eq!(subset_positions(5, Some(9), Some(1)), vec![0, 1, 2, 3, 4]);
        assert_eq!(subset_positions(5, Some(2), None), vec![0, 1]);
        let a = subset_positions(100, Some(10), Some(7));
        assert_eq!(a, subset_positions(100, Some(10), Some(7)), "same seed, same subset");
        assert_ne!(a, subset_positions(100, Some(10), Some(8)));
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "file order: {a:?}");
    }

    /// Float parameters, flattened in visiting order: all of them, or only the trainable ones
    /// (no BatchNorm running statistics).
    struct Flatten {
        values: Vec<f32>,
        trainable_only: bool,
    }
    impl<Bk: Backend> ModuleVisitor<Bk> for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            let value = param.val();
            if !self.trainable_only || value.is_require_grad() {
                self.values.extend(value.into_data().convert::<f32>().to_vec::<f32>().expect("floats"));
            }
        }
    }

    fn flatten<Bk: Backend>(model: &Model<Bk>, trainable_only: bool) -> Vec<f32> {
        let mut v = Flatten { values: Vec::new(), trainable_only };
        model.visit(&mut v);
        v.values
    }

    fn flat(model: &Model<B>) -> Vec<f32> {
        flatten(model, false)
    }

    fn trainable(model: &Model<B>) -> Vec<f32> {
        flatten(model, true)
    }

    /// One SGD step (lr 1, no momentum, no decay) on a loss scaled to give huge gradients.
    fn largest_update(clip: Option<f32>) -> f32 {
        let device = Default::default();
        let mut config = TrainConfig::reference(ModelConfig::from_name("vgg-small").expect("known"));
        (config.momentum, config.weight_decay, config.grad_clip) = (0.0, 0.0, clip);
        B::seed(&device, 5);
        let model: Model<B> = config.model.init(&device);
        let before = flat(&model);
        let images = Tensor::<B, 4>::random([4, 1, 44, 44], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
        let loss = model.forward(images).sum().mul_scalar(1e4);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let after = flat(&build_optimizer::<B>(&config).step(1.0, model, grads));
        before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    /// Two SGD steps (lr 0.1, momentum 0.5, no decay or clamp) with the same gradient `g` both
    /// times move each weight by `(2 + μ)·lr·g` with PyTorch's momentum and by
    /// `(2 + 2μ + μ²)·lr·g` with Nesterov's (`v₁ = g`, step `g + μv₁`; `v₂ = (1 + μ)g`, step
    /// `g + μv₂`).
    #[test]
    fn nesterov_momentum_steps_as_pytorch_does() {
        let device = Default::default();
        let (lr, mu) = (0.1f32, 0.5f32);
        let mut config = TrainConfig::reference(ModelConfig::from_name("vgg-small").expect("known"));
        (config.momentum, config.weight_decay, config.grad_clip) = (f64::from(mu), 0.0, None);
        B::seed(&device, 11);
        let model: Model<B> = config.model.init(&device);
        let images = Tensor::<B, 4>::random([4, 1, 44, 44], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
        // The gradient of the starting weights, once as a flat vector and once per step.
        let grads = || {
            let loss = model.forward_training(images.clone(), NormStatistics::BatchUpdate, Some(7)).sum();
            GradientsParams::from_grads(loss.backward(), &model)
        };
        let g: Vec<f32> = {
            let before = trainable(&model);
            let stepped = build_optimizer::<B>(&TrainConfig { momentum: 0.0, ..config.clone() }).step(
                1.0,
                model.clone(),
                grads(),
            );
            before.iter().zip(trainable(&stepped)).map(|(a, b)| a - b).collect()
        };
        assert!(g.iter().any(|v| v.abs() > 1e-3), "a gradient to follow");
        for (nesterov, factor) in [(false, 2.0 + mu), (true, 2.0 + 2.0 * mu + mu * mu)] {
            let config = TrainConfig { nesterov, ..config.clone() };
            let mut optimizer = build_optimizer::<B>(&config);
            let once = optimizer.step(f64::from(lr), model.clone(), grads());
            let twice = optimizer.step(f64::from(lr), once, grads());
            let moved: Vec<f32> = trainable(&model).iter().zip(trainable(&twice)).map(|(a, b)| a - b).collect();
            let worst = moved.iter().zip(&g).map(|(m, g)| (m - factor * lr * g).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-5, "nesterov {nesterov}: off the hand formula by {worst}");
        }
    }

    #[test]
    fn gradient_clamp_bounds_every_update() {
        let clamped = largest_update(Some(0.1));
        assert!(clamped <= 0.1 + 1e-6, "lr 1 × clamp 0.1 bounds each element's step: {clamped}");
        assert!(clamped > 0.09, "the clamp is reached: {clamped}");
        let free = largest_update(None);
        assert!(free > 1.0, "without the clamp the same step is large: {free}");
    }

    /// Every float of `model`'s inference copy: the weights and the BatchNorm running statistics
    /// with pending updates applied. Without an optimiser step only the statistics can differ.
    fn running_statistics(model: &Model<B>) -> Vec<f32> {
        flatten(&model.valid(), false)
    }

    /// A fresh copy of `template` (weights and statistics) and its [`adversarial_loss`] on one
    /// batch: the shared step of the adversarial-step tests.
    fn loss_on_copy(
        config: &ModelConfig,
        template: &Model<B>,
        adversarial: Option<AdversarialTraining>,
        images: &Tensor<B, 4>,
        targets: &Tensor<B, 1, Int>,
    ) -> (Model<B>, BatchLoss<B>) {
        let device = Default::default();
        let model = config.init::<B>(&device).load_record(template.clone().into_record());
        let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let out =
            adversarial_loss(adversarial.as_ref(), &model, images.clone(), targets.clone(), &loss_fn, &mut rng, false)
                .expect("loss");
        (model, out)
    }

    /// vgg-small without dropout (two passes would draw different masks), plain SGD (no momentum,
    /// weight decay or gradient clamp) and one batch of 6 random crops, seeded: the set-up of the
    /// tests that compare an adversarial-training step with the clean one.
    struct PlainStep {
        model_config: ModelConfig,
        config: TrainConfig,
        template: Model<B>,
        images: Tensor<B, 4>,
        targets: Tensor<B, 1, Int>,
    }

    impl PlainStep {
        fn new(seed: u64) -> PlainStep {
            let device = Default::default();
            let mut model_config = ModelConfig::from_name("vgg-small").expect("known");
            if let ModelConfig::Vgg(vgg) = &mut model_config {
                vgg.dropout = 0.0;
            }
            let mut config = TrainConfig::reference(model_config.clone());
            (config.momentum, config.weight_decay, config.grad_clip) = (0.0, 0.0, None);
            B::seed(&device, seed);
            let template: Model<B> = model_config.init(&device);
            let images = Tensor::<B, 4>::random([6, 1, 44, 44], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
            let targets = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 3, 4, 6], &device);
            PlainStep { model_config, config, template, images, targets }
        }

        /// [`loss_on_copy`] on this set-up.
        fn loss(&self, adversarial: Option<AdversarialTraining>) -> (Model<B>, BatchLoss<B>) {
            loss_on_copy(&self.model_config, &self.template, adversarial, &self.images, &self.targets)
        }

        /// (loss, trainable weights after one SGD step with lr 1, running statistics, attacked
        /// crops' loss).
        fn step(&self, adversarial: Option<AdversarialTraining>) -> (f32, Vec<f32>, Vec<f32>, Option<f32>) {
            let (model, out) = self.loss(adversarial);
            let value: f32 = out.loss.clone().into_scalar().elem();
            let attacked = out.attacked.map(|(loss, _)| loss.into_scalar().elem::<f32>());
            let statistics = running_statistics(&model);
            let grads = GradientsParams::from_grads(out.loss.backward(), &model);
            (value, trainable(&build_optimizer::<B>(&self.config).step(1.0, model, grads)), statistics, attacked)
        }
    }

    /// The largest element-wise difference of two equally long vectors.
    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn adversarial_passes_enter_the_running_statistics_only_with_batch_update() {
        use fer_adversarial::Attack;
        let device = Default::default();
        let config = ModelConfig::from_name("vgg-small").expect("known");
        B::seed(&device, 21);
        let template: Model<B> = config.init(&device);
        let images = Tensor::<B, 4>::random([6, 1, 44, 44], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
        let targets = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 3, 4, 5], &device);
        // A model with the template's weights and statistics after `adversarial`'s loss.
        let after = |adversarial: Option<AdversarialTraining>| {
            running_statistics(&loss_on_copy(&config, &template, adversarial, &images, &targets).0)
        };
        let clean_only = after(None);
        assert_ne!(clean_only, running_statistics(&template), "the clean pass moves the statistics");
        for source in [AdvSource::Frozen, AdvSource::Current] {
            let with = |norm_statistics| {
                after(Some(AdversarialTraining {
                    source,
                    norm_statistics,
                    ..AdversarialTraining::new(Attack::fgsm(0.3))
                }))
            };
            assert_ne!(with(NormStatistics::BatchUpdate), clean_only, "{source:?}: reference lets attacked faces in");
            for kept in [NormStatistics::Batch, NormStatistics::Running] {
                assert_eq!(with(kept), clean_only, "{source:?}, {kept:?}: statistics of the clean pass only");
            }
            // Frozen: neither pass moves them; a clean pass on running statistics leaves them to
            // the attacked pass.
            let passes = |clean_norm_statistics, norm_statistics| {
                after(Some(AdversarialTraining {
                    source,
                    norm_statistics,
                    clean_norm_statistics,
                    ..AdversarialTraining::new(Attack::fgsm(0.3))
                }))
            };
            let frozen = passes(NormStatistics::Running, NormStatistics::Running);
            assert_eq!(frozen, running_statistics(&template), "{source:?}: frozen statistics");
            let attacked_only = passes(NormStatistics::Running, NormStatistics::BatchUpdate);
            assert_ne!(attacked_only, running_statistics(&template), "{source:?}");
            assert_ne!(attacked_only, clean_only, "{source:?}: the attacked batch's statistics, not the clean one's");
        }
    }

    /// With ε = 0 the "attacked" faces are the clean faces, so adversarial training must train
    /// exactly as clean training does whenever the second pass normalises as the clean pass
    /// (batch statistics): same loss, same SGD step. A control for the training machinery.
    #[test]
    fn adversarial_training_with_zero_budget_steps_as_clean_training() {
        use fer_adversarial::Attack;
        let device = Default::default();
        let setup = PlainStep::new(8);
        let (template, images, targets) = (&setup.template, &setup.images, &setup.targets);
        let (clean_loss, clean_weights, clean_statistics, none) = setup.step(None);
        assert_eq!(none, None, "clean training has no attacked crops");
        let moved = max_abs_diff(&clean_weights, &trainable(template));
        assert!(moved > 1e-3, "the clean step moves the weights: {moved}");
        for source in [AdvSource::Frozen, AdvSource::Current] {
            let with = |norm_statistics| {
                setup.step(Some(AdversarialTraining {
                    source,
                    norm_statistics,
                    ..AdversarialTraining::new(Attack::fgsm(0.0))
                }))
            };
            for same in [NormStatistics::BatchUpdate, NormStatistics::Batch] {
                let (loss, weights, statistics, attacked) = with(same);
                assert!((loss - clean_loss).abs() < 1e-5, "{source:?}, {same:?}: loss {loss} vs clean {clean_loss}");
                let attacked = attacked.expect("adversarial training reports the attacked crops' loss");
                assert!((attacked - clean_loss).abs() < 1e-5, "{source:?}, {same:?}: attacked loss {attacked}");
                let diff = max_abs_diff(&weights, &clean_weights);
                assert!(diff < 1e-5, "{source:?}, {same:?}: the step differs from the clean one by {diff}");
                // batch-update folds the same batch into the running statistics a second time.
                let twice = max_abs_diff(&statistics, &clean_statistics) > 1e-6;
                assert_eq!(twice, same == NormStatistics::BatchUpdate, "{source:?}, {same:?}: statistics");
            }
            // Normalising the second pass with the (initial) running statistics is another loss.
            let (loss, _, _, _) = with(NormStatistics::Running);
            assert!((loss - clean_loss).abs() > 1e-3, "{source:?}, running: {loss} vs clean {clean_loss}");
            // Frozen statistics: both passes compute the inference function, so the loss is the
            // inference-mode cross-entropy of the clean crops, and the statistics stay.
            let (frozen_loss, _, statistics, attacked) = setup.step(Some(AdversarialTraining {
                source,
                norm_statistics: NormStatistics::Running,
                clean_norm_statistics: NormStatistics::Running,
                ..AdversarialTraining::new(Attack::fgsm(0.0))
            }));
            let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
            let inference = loss_fn.forward(template.forward_inference(images.clone()), targets.clone());
            let inference: f32 = inference.into_scalar().elem();
            assert!(
                (frozen_loss - inference).abs() < 1e-5,
                "{source:?}: frozen {frozen_loss} vs inference {inference}"
            );
            assert!((attacked.expect("attacked loss") - inference).abs() < 1e-5, "{source:?}");
            assert_eq!(statistics, running_statistics(template), "{source:?}: frozen statistics");
        }
    }

    /// TRADES: `CE(clean) + β · KL(p(clean) ‖ p(attacked))` on the same batch, the attack driven
    /// by the clean answer distribution; with ε = 0 (and both passes normalising alike) the KL
    /// term vanishes and the step is the clean one.
    #[test]
    fn trades_loss_is_clean_cross_entropy_plus_beta_kl() {
        use fer_adversarial::{Attack, LabelSource};
        let device = Default::default();
        let setup = PlainStep::new(12);
        let targets = &setup.targets;
        let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
        let trades = |eps: f64, beta: f64| AdversarialTraining {
            labels: LabelSource::Distribution,
            trades_beta: Some(beta),
            norm_statistics: NormStatistics::Batch,
            ..AdversarialTraining::new(Attack::pgd(eps, 3))
        };
        for beta in [0.0, 1.0, 6.0] {
            let (_, out) = setup.loss(Some(trades(8.0 / 255.0, beta)));
            let (_, attacked_logits) = out.attacked.expect("attacked crops");
            let logits = out.logits.clone().detach();
            let clean: f32 = loss_fn.forward(logits.clone(), targets.clone()).into_scalar().elem();
            let kl: f32 = kl_from_clean(logits, attacked_logits).into_scalar().elem();
            let loss: f32 = out.loss.into_scalar().elem();
            assert!(kl > 1e-5, "β = {beta}: the attack moved the answers (KL {kl})");
            let want = clean + beta as f32 * kl;
            assert!((loss - want).abs() < 1e-5 * want.max(1.0), "β = {beta}: loss {loss} vs {clean} + β·{kl}");
        }
        // ε = 0: the attack cannot move the crops, the KL term is 0 and the step is the clean one.
        let (clean_loss, clean_weights, _, _) = setup.step(None);
        let (loss, weights, _, _) = setup.step(Some(trades(0.0, 6.0)));
        assert!((loss - clean_loss).abs() < 1e-5, "loss {loss} vs clean {clean_loss}");
        let diff = max_abs_diff(&weights, &clean_weights);
        assert!(diff < 1e-5, "the step differs from the clean one by {diff}");
    }

    /// ELLE: the loss is the weighted mix plus λ times the local-linearity error, whose three
    /// passes share their dropout masks (at ε = 0 the three points are the face, so the error
    /// is 0, up to rounding, only if they do).
    #[test]
    fn elle_adds_lambda_times_the_local_linearity_error() {
        use fer_adversarial::Attack;
        let setup = PlainStep::new(14);
        let adv = |eps: f64, linearity_weight| AdversarialTraining {
            linearity_weight,
            norm_statistics: NormStatistics::Batch,
            ..AdversarialTraining::new(Attack::fgsm(eps))
        };
        let (_, plain) = setup.loss(Some(adv(0.3, None)));
        assert!(plain.linearity.is_none(), "no error without ELLE");
        let plain: f32 = plain.loss.into_scalar().elem();
        for lambda in [1.0, 250.0] {
            let (_, out) = setup.loss(Some(adv(0.3, Some(lambda))));
            let error: f32 = out.linearity.expect("the error is reported").into_scalar().elem();
            assert!(error > 1e-6, "λ = {lambda}: the loss curves within 0.3 of the faces ({error})");
            let loss: f32 = out.loss.into_scalar().elem();
            let want = plain + lambda as f32 * error;
            assert!((loss - want).abs() <= 1e-5 * want.max(1.0), "λ = {lambda}: {loss} vs {plain} + λ·{error}");
        }
        // With dropout, ε = 0: all three passes see the faces through the same masks. x_c =
        // α·x + (1 − α)·x can differ from x in the last bit, which leaves an error of the order of
        // 1e-15 (seen: 2.4e-15, with weights drawn from the generator the tests share); passes
        // with masks of their own give 7e-3 to 6e-2 here.
        let Ok(ModelConfig::Vgg(vgg)) = ModelConfig::from_name("vgg-small") else { panic!("a VGG") };
        assert!(vgg.dropout > 0.0, "vgg-small has dropout");
        let net = ModelConfig::Vgg(vgg);
        let template: Model<B> = net.init(&Default::default());
        let (_, out) = loss_on_copy(&net, &template, Some(adv(0.0, Some(100.0))), &setup.images, &setup.targets);
        let error: f32 = out.linearity.expect("the error").into_scalar().elem();
        assert!(error < 1e-9, "the three passes must share their dropout masks ({error})");
    }

    /// Label smoothing s: the loss is (1 − s)·CE(y) + s·mean over the classes of −log p, by hand.
    #[test]
    fn label_smoothing_mixes_the_label_with_the_uniform_distribution() {
        let device = Default::default();
        let logits = [[2.0f32, 0.5, -1.0, 0.0, 1.0, 0.25, -0.5], [0.0, 0.0, 3.0, 0.0, 0.0, 0.0, -2.0]];
        let targets = [0usize, 6];
        let log_p = |row: &[f32; 7]| {
            let z = row.iter().map(|v| v.exp()).sum::<f32>().ln();
            row.map(|v| v - z)
        };
        let config = TrainConfig::fast(fer_models::ModelConfig::from_name("vgg-small").expect("known"));
        for s in [0.0f32, 0.1, 0.3] {
            let smoothed = TrainConfig { label_smoothing: s, ..config.clone() };
            let loss_fn = training_loss::<B>(&smoothed, &device);
            let got: f32 = loss_fn
                .forward(Tensor::from_data(logits, &device), Tensor::from_data(targets.map(|t| t as i64), &device))
                .into_scalar()
                .elem();
            let want = logits
                .iter()
                .zip(targets)
                .map(|(row, t)| {
                    let lp = log_p(row);
                    -(1.0 - s) * lp[t] - s * lp.iter().sum::<f32>() / 7.0
                })
                .sum::<f32>()
                / 2.0;
            assert!((got - want).abs() < 1e-5, "s = {s}: {got} vs {want}");
        }
    }

    /// Mixup pairs every face with one other (a permutation), mixes the images with the drawn λ,
    /// carries the partners' labels, and weighs the two losses by λ; the draws repeat with the
    /// seed.
    #[test]
    fn mixup_mixes_each_face_with_its_partner_by_lambda() {
        let device = Default::default();
        let n = 16;
        // Face i: every pixel 10·i, so a mixed value says which partner it was mixed with.
        let images = Tensor::<B, 1>::from_data(
            TensorData::new((0..n).flat_map(|i| vec![10.0 * i as f32; 4]).collect::<Vec<_>>(), [n * 4]),
            &device,
        )
        .reshape([n, 1, 2, 2]);
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 7).collect();
        let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(labels.clone(), [n]), &device);
        let draw = |seed: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            mixup(images.clone(), targets.clone(), 0.4, &mut rng).expect("mixup")
        };
        let mixed = draw(5);
        let lambda = mixed.lambda;
        assert!((0.0..=1.0).contains(&lambda) && lambda != 0.5, "λ {lambda}");
        let values: Vec<f32> = mixed.images.clone().into_data().to_vec().expect("f32");
        let partner_labels: Vec<i64> = mixed.partner_targets.clone().into_data().to_vec().expect("i64");
        let mut seen = vec![false; n];
        for i in 0..n {
            let v = values[4 * i];
            assert!(values[4 * i..4 * i + 4].iter().all(|&w| w == v), "face {i} is not uniform");
            // v = λ·10i + (1 − λ)·10j  ⇒  j = (v − 10λi) / (10(1 − λ)).
            let j = ((v - 10.0 * lambda * i as f32) / (10.0 * (1.0 - lambda))).round() as usize;
            let back = lambda * 10.0 * i as f32 + (1.0 - lambda) * 10.0 * j as f32;
            assert!(j < n && (back - v).abs() < 1e-3, "face {i}: {v} is no mix with a face of the batch");
            assert!(!seen[j], "face {j} is the partner of two faces");
            seen[j] = true;
            assert_eq!(partner_labels[i], labels[j], "face {i}'s partner label");
        }
        assert!(seen.iter().all(|&s| s), "a permutation");
        let again = draw(5);
        assert_eq!(again.lambda, lambda);
        assert_eq!(again.images.into_data().to_vec::<f32>().expect("f32"), values);
        assert_ne!(draw(6).lambda, lambda, "another seed, another λ");

        // The loss: λ·CE(y) + (1 − λ)·CE(y[π]); accuracy counts the larger share's labels.
        let loss_fn = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
        let logits = Tensor::<B, 2>::random([n, 7], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let ce = |t: Tensor<B, 1, Int>| -> f32 { loss_fn.forward(logits.clone(), t).into_scalar().elem() };
        let got: f32 = mixed.loss(&loss_fn, logits.clone()).into_scalar().elem();
        let want = lambda * ce(targets.clone()) + (1.0 - lambda) * ce(mixed.partner_targets.clone());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let larger: Vec<i64> = mixed.larger_share_targets().into_data().to_vec().expect("i64");
        assert_eq!(larger, if lambda >= 0.5 { labels } else { partner_labels });
    }
}
