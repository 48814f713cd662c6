//! Training of the CNN + landmarks + HOG model on face images and their feature vectors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::TensorData;
use burn::tensor::backend::AutodiffBackend;
use fer_dataset::{BatchStream, FaceBatcher, Fer2013, Split, SplitData, View};
use fer_features::{FaceFeatures, FeatureSet};
use fer_models::{CnnHog, CnnHogConfig, Evaluation, scale_feature_row};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::TrainError;
use crate::run::{read_csv, read_json, read_optimizer, write_csv, write_file, write_json, write_optimizer};
use crate::train::subset_positions;

/// The recipe of the reference's `parameters.py`, as plain data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureTrainConfig {
    /// The model.
    pub model: CnnHogConfig,
    /// Which feature vector feeds the feature branch.
    pub feature_set: FeatureSet,
    /// Epochs (the reference: 13).
    pub epochs: usize,
    /// Faces per step (128).
    pub batch_size: usize,
    /// Base learning rate (0.016).
    pub lr: f64,
    /// Learning rate × `lr_decay^(step / decay_steps)` (tflearn's `Momentum`, not staircase): 0.864.
    pub lr_decay: f64,
    /// Steps per decay factor (50).
    pub decay_steps: usize,
    /// Momentum (0.95), no dampening, no weight decay.
    pub momentum: f64,
    /// Seed of weights, order and dropout.
    pub seed: u64,
    /// Train on a seeded subset of this many training faces; `None`: all (the reference's
    /// per-class cap was a debugging value).
    pub train_limit: Option<usize>,
    /// Evaluate on the first this-many faces of each test split; `None`: all.
    pub eval_limit: Option<usize>,
}

impl FeatureTrainConfig {
    /// The reference recipe for `model` on `feature_set`.
    pub fn reference(model: CnnHogConfig, feature_set: FeatureSet) -> FeatureTrainConfig {
        FeatureTrainConfig {
            model,
            feature_set,
            epochs: 13,
            batch_size: 128,
            lr: 0.016,
            lr_decay: 0.864,
            decay_steps: 50,
            momentum: 0.95,
            seed: 0,
            train_limit: None,
            eval_limit: None,
        }
    }

    /// Learning rate at optimiser step `step` (0-based, counted over the whole run).
    pub fn lr_at(&self, step: usize) -> f64 {
        self.lr * self.lr_decay.powf(step as f64 / self.decay_steps.max(1) as f64)
    }

    /// Checks every field; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        self.model.check()?;
        if self.model.feature_len != self.feature_set.len() {
            return Err(format!(
                "the model takes {} features but the set {} has {}",
                self.model.feature_len,
                self.feature_set.name(),
                self.feature_set.len()
            ));
        }
        if self.epochs == 0 || self.batch_size == 0 || self.decay_steps == 0 {
            return Err("epochs, batch size and decay steps must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("learning rate {} must be positive", self.lr));
        }
        if !(self.lr_decay > 0.0 && self.lr_decay <= 1.0) {
            return Err(format!("learning-rate decay {} is not in (0, 1]", self.lr_decay));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("momentum {} is not in [0, 1)", self.momentum));
        }
        if self.train_limit == Some(0) || self.eval_limit == Some(0) {
            return Err("subset limits must be positive".into());
        }
        Ok(())
    }
}

/// One epoch of a feature-model run (a row of its `metrics.csv`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureEpoch {
    /// 0-based epoch.
    pub epoch: usize,
    /// Learning rate at the epoch's first step.
    pub lr: f64,
    /// Mean training loss (dropout on).
    pub train_loss: f64,
    /// Training accuracy (dropout on).
    pub train_acc: f64,
    /// PublicTest accuracy (the selection criterion).
    pub public_acc: f64,
    /// PrivateTest accuracy.
    pub private_acc: f64,
    /// Training images per second.
    pub img_per_s: f64,
}

/// What a feature-model run achieved (honest selection on PublicTest).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureRunSummary {
    /// Every epoch.
    pub epochs: Vec<FeatureEpoch>,
    /// 0-based epoch with the best PublicTest accuracy.
    pub selected_epoch: usize,
    /// Its PublicTest accuracy.
    pub selected_public_acc: f64,
    /// **Headline**: its PrivateTest accuracy.
    pub selected_private_acc: f64,
    /// The reference's way: best PrivateTest accuracy over all epochs (selected on the test set).
    pub reference_style_private_acc: f64,
    /// PrivateTest evaluation of the selected epoch (confusion matrix).
    pub private_test: Evaluation,
}

/// How [`train_features`] runs (not part of the recipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureRunOptions {
    /// Continue the run in the output directory after its last completed epoch (its
    /// `config.json` must equal the configuration given).
    pub resume: bool,
    /// Stop after this many epochs in this call (resume later).
    pub stop_after: Option<usize>,
    /// Draw a progress bar per epoch (hidden when stderr is not a terminal).
    pub progress: bool,
}

impl Default for FeatureRunOptions {
    fn default() -> FeatureRunOptions {
        FeatureRunOptions { resume: false, stop_after: None, progress: true }
    }
}

impl FeatureRunOptions {
    /// No progress bar, no resume: a whole run in one call (searches, tests).
    pub fn quiet() -> FeatureRunOptions {
        FeatureRunOptions { progress: false, ..FeatureRunOptions::default() }
    }
}

/// Progress of a feature-model run (`state.json`, which commits each epoch's files).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct FeatureRunState {
    completed_epochs: usize,
    /// Selected epoch, its PublicTest accuracy and PrivateTest evaluation.
    best: Option<(usize, f64, Evaluation)>,
    /// The staged files of an epoch interrupted after it committed (see `crate::commit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<String>,
}

/// Saves CNN+features weights (Burn's binary record, full precision) atomically, as the
/// `best.bin` / `latest.bin` of a feature-model run.
pub fn save_feature_model<B: Backend>(model: &CnnHog<B>, path: &Path) -> Result<(), TrainError> {
    let bytes = BinBytesRecorder::<FullPrecisionSettings>::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| TrainError::Data(format!("{}: cannot encode the model: {e}", path.display())))?;
    write_file(path, &bytes)
}

/// Loads weights written by [`save_feature_model`] (a feature-model run's `best.bin`) into a
/// model built from `config` (the run's `config.json` holds it as `model`).
pub fn load_feature_model<B: Backend>(
    config: &CnnHogConfig,
    path: &Path,
    device: &B::Device,
) -> Result<CnnHog<B>, TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
    let record =
        Recorder::<B>::load(&BinBytesRecorder::<FullPrecisionSettings>::default(), bytes, device).map_err(|e| {
            TrainError::Data(format!(
                "{}: not the weights of this feature model ({} features, {} convolutions): {e}",
                path.display(),
                config.feature_len,
                config.convs.len()
            ))
        })?;
    let fresh = config.init::<B>(device);
    let expected = param_shapes(&fresh);
    let model = fresh.load_record(record);
    // Burn loads tensors of any shape into a record of the same layout: compare the shapes.
    let found = param_shapes(&model);
    if found != expected {
        let first = expected.iter().zip(&found).position(|(e, f)| e != f).unwrap_or(expected.len().min(found.len()));
        return Err(TrainError::Data(format!(
            "{}: not the weights of this feature model ({} features, {} convolutions): parameter {first} has \
             shape {:?}, the model needs {:?}",
            path.display(),
            config.feature_len,
            config.convs.len(),
            found.get(first),
            expected.get(first)
        )));
    }
    Ok(model)
}

/// The weights of a `fer train-features` run with the run's configuration. `path` is the run
/// directory (its `best.bin`, the PublicTest-selected epoch) or a weights file of a run (`best.bin`,
/// `latest.bin`) with the run's `config.json` beside it. Returns the model, the configuration (its
/// `feature_set` says which features the model reads) and the weights file read.
///
/// ```no_run
/// use burn::backend::Flex;
///
/// let device = Default::default();
/// let (model, config, _) = fer_train::load_feature_run::<Flex>("runs/cnn-hog-b".as_ref(), &device)?;
/// println!("{} features: {}", config.feature_set.name(), model.feature_len());
/// # Ok::<(), fer_train::TrainError>(())
/// ```
pub fn load_feature_run<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(CnnHog<B>, FeatureTrainConfig, PathBuf), TrainError> {
    let weights = if path.is_dir() { path.join("best.bin") } else { path.to_path_buf() };
    let run = weights.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let config_path = run.join("config.json");
    if !weights.is_file() {
        return Err(TrainError::Data(format!(
            "{}: no such weights file (a `fer train-features` run holds best.bin once an epoch has finished)",
            weights.display()
        )));
    }
    if !config_path.is_file() {
        return Err(TrainError::Data(format!(
            "{}: no config.json beside it; the CNN + landmarks + HOG weights need their run's config.json \
             (`fer train-features --out DIR` writes both)",
            weights.display()
        )));
    }
    let config: FeatureTrainConfig = read_json(&config_path)?;
    config.check().map_err(|e| TrainError::Data(format!("{}: {e}", config_path.display())))?;
    let model = load_feature_model(&config.model, &weights, device)?;
    Ok((model, config, weights))
}

/// Header metadata key under which [`export_feature_run`] stores the run's [`FeatureTrainConfig`]
/// (its recipe, model and feature set) as JSON.
pub const SAFETENSORS_FEATURE_RUN_KEY: &str = "fer_feature_run_config";

/// Writes the weights of a `fer train-features` run as safetensors (see
/// [`fer_models::export_feature_model_safetensors`] for the tensor names and layouts), with the
/// run's [`FeatureTrainConfig`] in the header metadata under [`SAFETENSORS_FEATURE_RUN_KEY`].
/// `run` is as for [`load_feature_run`] (the directory: its PublicTest-selected `best.bin`).
/// Returns the configuration and the weights file read.
pub fn export_feature_run<B: Backend>(
    run: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<(FeatureTrainConfig, PathBuf), TrainError> {
    let (model, config, weights) = load_feature_run::<B>(run, device)?;
    let json = serde_json::to_string(&config).map_err(|source| TrainError::Json { path: out.to_path_buf(), source })?;
    fer_models::export_feature_model_safetensors(
        &model,
        &config.model,
        config.feature_set,
        &[(SAFETENSORS_FEATURE_RUN_KEY, json)],
        out,
    )?;
    Ok((config, weights))
}

/// Turns a file written by [`export_feature_run`] back into a run directory `out` holding the
/// run's `config.json` and the weights as `best.bin`: what `fer predict`, `fer attack`,
/// `fer eval-features` and [`load_feature_run`] read (it cannot be resumed: the optimiser state
/// and metrics are not exported). Refused: a file without the run's configuration (one written
/// by [`fer_models::export_feature_model_safetensors`] alone; read it with
/// [`fer_models::import_feature_model_safetensors`]), a configuration that disagrees with the
/// file's model or feature set, and an `out` that already holds `config.json` or `best.bin`.
pub fn import_feature_run<B: Backend>(
    safetensors: &Path,
    out: &Path,
    device: &B::Device,
) -> Result<FeatureTrainConfig, TrainError> {
    let imported = fer_models::import_feature_model_safetensors::<B>(safetensors, device)?;
    let json = imported.metadata.get(SAFETENSORS_FEATURE_RUN_KEY).ok_or_else(|| {
        TrainError::Data(format!(
            "{}: no `{SAFETENSORS_FEATURE_RUN_KEY}` in the header metadata: the file holds a model but not the run's \
             configuration (`fer export` of a `fer train-features` run writes it)",
            safetensors.display()
        ))
    })?;
    let config: FeatureTrainConfig = serde_json::from_str(json)
        .map_err(|e| TrainError::Data(format!("{}: {SAFETENSORS_FEATURE_RUN_KEY}: {e}", safetensors.display())))?;
    config
        .check()
        .map_err(|e| TrainError::Data(format!("{}: {SAFETENSORS_FEATURE_RUN_KEY}: {e}", safetensors.display())))?;
    if config.model != imported.config || config.feature_set != imported.set {
        return Err(TrainError::Data(format!(
            "{}: the run's configuration ({} features, set {}) disagrees with the model's ({} features, set {})",
            safetensors.display(),
            config.model.feature_len,
            config.feature_set.name(),
            imported.config.feature_len,
            imported.set.name()
        )));
    }
    for name in ["config.json", "best.bin"] {
        if out.join(name).exists() {
            return Err(TrainError::Data(format!(
                "{} already exists: import into a new directory",
                out.join(name).display()
            )));
        }
    }
    std::fs::create_dir_all(out).map_err(|source| TrainError::Io { path: out.to_path_buf(), source })?;
    save_feature_model(&imported.model, &out.join("best.bin"))?;
    write_json(&out.join("config.json"), &config)?;
    Ok(config)
}

/// Shapes of a module's float parameters in visiting order (without initialising lazy ones).
fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<usize>> {
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            self.0.push(param.lazy_shape().to_vec());
        }
    }
    let mut shapes = Shapes(Vec::new());
    module.visit(&mut shapes);
    shapes.0
}

/// Faces and feature rows of one split (a subset keeps the original positions for the features).
struct Part {
    faces: Arc<SplitData>,
    positions: Vec<usize>,
    split: Split,
}

/// The model's feature vectors for `positions` of `split`: landmarks scaled by 1/48 to about
/// [0, 1] (HOG is already in [0, 1]).
fn feature_rows(features: &FaceFeatures, part: &Part, rows: &[usize], set: FeatureSet) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * set.len());
    for &row in rows {
        let start = out.len();
        features.extend_vector(part.split, part.positions[row], set, &mut out);
        scale_feature_row(&mut out[start..]);
    }
    out
}

/// The reference's optimiser: SGD with `config.momentum`, no dampening, no weight decay, no
/// gradient clamp (tflearn's `Momentum`).
pub(crate) fn feature_optimizer<B: AutodiffBackend>(config: &FeatureTrainConfig) -> impl Optimizer<CnnHog<B>, B> {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig { momentum: config.momentum, dampening: 0.0, nesterov: false }))
        .init::<B, CnnHog<B>>()
}

/// Trains `config.model` on full 48×48 faces (no augmentation, as the reference) and their
/// features; every epoch evaluates PublicTest and PrivateTest and selects on PublicTest.
///
/// With `out`, the run directory holds `config.json`, `metrics.csv`, `latest.bin` +
/// `latest.optim` (weights and momentum after the last completed epoch), `best.bin` (the selected
/// epoch's weights, see [`load_feature_model`]), `summary.json`, `curves.png` (loss and accuracy per
/// epoch), `confusion.png` (the selected epoch's PrivateTest confusion matrix), and `state.json`;
/// all atomically but the plots. An epoch's weights, momentum and summary are staged and committed
/// by `state.json` together, so a run killed while saving resumes from its last whole epoch (as
/// [`crate::RunState::pending`] explains). Data order and dropout are seeded
/// from `(seed, epoch)`, so a run resumed with `options.resume` repeats exactly what the
/// uninterrupted run would have done.
pub fn train_features<B: AutodiffBackend>(
    config: &FeatureTrainConfig,
    data: &Fer2013,
    features: &FaceFeatures,
    out: Option<&Path>,
    options: &FeatureRunOptions,
    device: &B::Device,
) -> Result<FeatureRunSummary, TrainError> {
    config.check().map_err(TrainError::Config)?;
    features.check_matches(data, Path::new("the feature cache")).map_err(|e| TrainError::Data(e.to_string()))?;
    let part = |split: Split, limit: Option<usize>, shuffle: bool| -> Part {
        let all = data.split(split);
        // The feature-model runs' own subset seed (kept: recorded results depend on it).
        let positions = subset_positions(all.len(), limit, shuffle.then_some(config.seed ^ 0x5EB5E7));
        Part { faces: Arc::new(all.select(&positions)), positions, split }
    };
    let train_part = part(Split::Training, config.train_limit, true);
    let public = part(Split::PublicTest, config.eval_limit, false);
    let private = part(Split::PrivateTest, config.eval_limit, false);
    if train_part.faces.is_empty() || public.faces.is_empty() || private.faces.is_empty() {
        return Err(TrainError::Data("a split is empty".into()));
    }

    B::seed(device, config.seed);
    let mut model: CnnHog<B> = config.model.init(device);
    let mut optim = feature_optimizer::<B>(config);
    let mut rows: Vec<FeatureEpoch> = Vec::new();
    let mut state = FeatureRunState { completed_epochs: 0, best: None, pending: Vec::new() };
    if let Some(dir) = out {
        let state_path = dir.join("state.json");
        if options.resume {
            if !state_path.exists() {
                return Err(TrainError::NothingToResume { dir: dir.to_path_buf() });
            }
            let stored: FeatureTrainConfig = read_json(&dir.join("config.json"))?;
            if &stored != config {
                return Err(TrainError::Config(format!(
                    "the configuration differs from {}",
                    dir.join("config.json").display()
                )));
            }
            state = read_json(&state_path)?;
            crate::commit::recover(dir, &state_path, &mut state, |s| &mut s.pending)?;
            model = load_feature_model(&config.model, &dir.join("latest.bin"), device)?;
            optim = read_optimizer(&dir.join("latest.optim"), optim, device)?;
            rows = read_csv(&dir.join("metrics.csv"))?;
            rows.retain(|r| r.epoch < state.completed_epochs);
            tracing::info!("resuming {} after epoch {}", dir.display(), state.completed_epochs);
        } else {
            if state_path.exists() {
                return Err(TrainError::RunExists { dir: dir.to_path_buf() });
            }
            std::fs::create_dir_all(dir).map_err(|source| TrainError::Io { path: dir.to_path_buf(), source })?;
            write_json(&dir.join("config.json"), config)?;
        }
    } else if options.resume {
        return Err(TrainError::Config("resuming needs the run directory".into()));
    }

    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let set = config.feature_set;
    let steps_per_epoch = train_part.faces.len().div_ceil(config.batch_size);
    let mut step = state.completed_epochs * steps_per_epoch;
    let last_epoch = options.stop_after.map_or(config.epochs, |n| (state.completed_epochs + n).min(config.epochs));
    for epoch in state.completed_epochs..last_epoch {
        let started = Instant::now();
        B::seed(device, config.seed.wrapping_add(1 + epoch as u64));
        let mut order: Vec<usize> = (0..train_part.faces.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(31).wrapping_add(epoch as u64)));
        let chunks: Vec<Vec<usize>> = order.chunks(config.batch_size).map(<[usize]>::to_vec).collect();
        let batcher = FaceBatcher::new(View::Full, 0, train_part.faces.len());
        let stream =
            BatchStream::<B>::new(train_part.faces.clone(), order, config.batch_size, batcher, 2, device.clone());
        let epoch_lr = config.lr_at(step);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0i64, 0usize);
        let mut progress =
            crate::train::EpochProgress::new(options.progress, chunks.len() as u64, epoch, config.epochs);
        for (batch, chunk) in stream.zip(&chunks) {
            let n = chunk.len();
            let feats = Tensor::<B, 2>::from_data(
                TensorData::new(feature_rows(features, &train_part, chunk, set), [n, set.len()]),
                device,
            );
            let logits = model.forward(batch.images, feats);
            let loss = loss_fn.forward(logits.clone(), batch.targets.clone());
            let loss_value: f32 = loss.clone().into_scalar().elem();
            if !loss_value.is_finite() {
                return Err(TrainError::NonFinite { epoch, step, loss: loss_value });
            }
            let hits = crate::train::correct_predictions(logits, batch.targets);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.lr_at(step), model, grads);
            step += 1;
            loss_sum += f64::from(loss_value) * n as f64;
            correct += hits;
            seen += n;
            progress.step(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                seen as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        }
        progress.bar().finish_and_clear();
        let img_per_s = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let inference = model.valid();
        let public_eval = evaluate_features(&inference, features, &public, set, device);
        let private_eval = evaluate_features(&inference, features, &private, set, device);
        let row = FeatureEpoch {
            epoch,
            lr: epoch_lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            public_acc: public_eval.accuracy(),
            private_acc: private_eval.accuracy(),
            img_per_s,
        };
        tracing::info!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | PublicTest {:.2}% | PrivateTest {:.2}% | {:.1} img/s",
            epoch + 1,
            config.epochs,
            row.train_loss,
            100.0 * row.train_acc,
            100.0 * row.public_acc,
            100.0 * row.private_acc,
            row.img_per_s
        );
        let improved = state.best.as_ref().is_none_or(|(_, acc, _)| row.public_acc > *acc);
        if improved {
            state.best = Some((epoch, row.public_acc, private_eval));
        }
        rows.push(row);
        state.completed_epochs = epoch + 1;
        if let Some(dir) = out {
            write_csv(&dir.join("metrics.csv"), &rows)?;
            // The epoch's files are staged, then committed by state.json (crate::commit).
            let mut staged = crate::commit::EpochFiles::new(dir, epoch);
            save_feature_model(&model, &staged.stage("latest.bin")?)?;
            write_optimizer(&staged.stage("latest.optim")?, &optim)?;
            if improved {
                save_feature_model(&model, &staged.stage("best.bin")?)?;
            }
            let summary = summarise(&rows, &state)?;
            write_json(&staged.stage("summary.json")?, &summary)?;
            staged.commit(&dir.join("state.json"), &mut state, |s| &mut s.pending)?;
            write_feature_plots(dir, config, &summary);
        }
    }
    summarise(&rows, &state)
}

/// `curves.png` and `confusion.png` (PrivateTest of the selected epoch) of a run so far; a plot
/// that cannot be drawn is logged, not fatal (the figures are in the JSON and CSV files).
fn write_feature_plots(dir: &Path, config: &FeatureTrainConfig, summary: &FeatureRunSummary) {
    if let Err(e) = crate::plots::plot_feature_curves(&summary.epochs, &dir.join("curves.png")) {
        tracing::warn!("{e}");
    }
    let title = format!("CNN + {}: PrivateTest (epoch {})", config.feature_set.name(), summary.selected_epoch + 1);
    if let Err(e) = crate::plots::plot_confusion(&summary.private_test.confusion, &title, &dir.join("confusion.png")) {
        tracing::warn!("{e}");
    }
}

/// The run so far: the selected epoch's figures and every epoch.
fn summarise(rows: &[FeatureEpoch], state: &FeatureRunState) -> Result<FeatureRunSummary, TrainError> {
    let (selected_epoch, selected_public_acc, private_test) =
        state.best.clone().ok_or_else(|| TrainError::Data("no epoch was run".into()))?;
    let selected_private_acc = rows
        .iter()
        .find(|r| r.epoch == selected_epoch)
        .map(|r| r.private_acc)
        .ok_or_else(|| TrainError::Data(format!("metrics.csv lacks the selected epoch {selected_epoch}")))?;
    Ok(FeatureRunSummary {
        selected_epoch,
        selected_public_acc,
        selected_private_acc,
        reference_style_private_acc: rows.iter().map(|r| r.private_acc).fold(f64::MIN, f64::max),
        private_test,
        epochs: rows.to_vec(),
    })
}

/// Accuracy, loss and confusion matrix of a CNN+features model on a whole split of `data`, with the
/// inputs built as in training (full 48×48 faces in [0, 1]; `features`' `set` vectors, landmarks
/// scaled by 1/48). `features` must have been computed from `data`.
pub fn evaluate_feature_model<B: Backend>(
    model: &CnnHog<B>,
    data: &Fer2013,
    features: &FaceFeatures,
    split: Split,
    set: FeatureSet,
    device: &B::Device,
) -> Result<Evaluation, TrainError> {
    features.check_matches(data, Path::new("the feature cache")).map_err(|e| TrainError::Data(e.to_string()))?;
    if model.feature_len() != set.len() {
        return Err(TrainError::Config(format!(
            "the model takes {} features but the set {} has {}",
            model.feature_len(),
            set.name(),
            set.len()
        )));
    }
    let all = data.split(split);
    let positions: Vec<usize> = (0..all.len()).collect();
    let part = Part { faces: Arc::new(all.clone()), positions, split };
    Ok(evaluate_features(model, features, &part, set, device))
}

/// Accuracy and confusion matrix of a CNN+features model on a split part (inference backend).
fn evaluate_features<B: Backend>(
    model: &CnnHog<B>,
    features: &FaceFeatures,
    part: &Part,
    set: FeatureSet,
    device: &B::Device,
) -> Evaluation {
    let order: Vec<usize> = (0..part.faces.len()).collect();
    let chunks: Vec<Vec<usize>> = order.chunks(64).map(<[usize]>::to_vec).collect();
    let batcher = FaceBatcher::new(View::Full, 0, part.faces.len());
    let mut evaluation = Evaluation::default();
    for (batch, chunk) in BatchStream::<B>::new(part.faces.clone(), order, 64, batcher, 2, device.clone()).zip(&chunks)
    {
        let feats = Tensor::<B, 2>::from_data(
            TensorData::new(feature_rows(features, part, chunk, set), [chunk.len(), set.len()]),
            device,
        );
        evaluation.record(model.forward_inference(batch.images, feats), batch.targets);
    }
    debug_assert_eq!(evaluation.faces() as usize, part.faces.len());
    evaluation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_decays_like_tflearn_momentum() {
        let c = FeatureTrainConfig::reference(CnnHogConfig::model_b(2728), FeatureSet::LandmarksSlidingHog);
        assert_eq!(c.lr_at(0), 0.016);
        assert!((c.lr_at(50) - 0.016 * 0.864).abs() < 1e-15);
        assert!((c.lr_at(25) - 0.016 * 0.864f64.sqrt()).abs() < 1e-15, "continuous, not staircase");
        assert!(c.check().is_ok());
        let wrong = FeatureTrainConfig { feature_set: FeatureSet::Landmarks, ..c.clone() };
        assert!(wrong.check().expect_err("mismatch").contains("2728 features"));
        assert!(FeatureTrainConfig { momentum: 1.0, ..c }.check().is_err());
    }

    #[test]
    fn a_run_exported_as_safetensors_imports_as_the_same_run() {
        use burn::backend::NdArray;
        use burn::tensor::Distribution;
        type B = NdArray;
        let device = Default::default();
        let set = FeatureSet::LandmarksWholeHog;
        let config = FeatureTrainConfig {
            epochs: 5,
            seed: 11,
            ..FeatureTrainConfig::reference(CnnHogConfig::tiny(set.len()), set)
        };
        let run = tempfile::tempdir().expect("tempdir");
        let model = config.model.init::<B>(&device);
        assert!(model.num_params() > 0, "parameters initialised before saving");
        save_feature_model(&model, &run.path().join("best.bin")).expect("save");
        write_json(&run.path().join("config.json"), &config).expect("config");

        let out = tempfile::tempdir().expect("tempdir");
        let file = out.path().join("b.safetensors");
        let (exported, weights) = export_feature_run::<B>(run.path(), &file, &device).expect("export");
        assert_eq!((exported, weights), (config.clone(), run.path().join("best.bin")));
        let imported = fer_models::import_feature_model_safetensors::<B>(&file, &device).expect("a model file");
        let recipe: FeatureTrainConfig =
            serde_json::from_str(&imported.metadata[SAFETENSORS_FEATURE_RUN_KEY]).expect("recipe JSON");
        assert_eq!(recipe, config);

        let copy = out.path().join("run");
        assert_eq!(import_feature_run::<B>(&file, &copy, &device).expect("import"), config);
        let (loaded, loaded_config, _) = load_feature_run::<B>(&copy, &device).expect("the imported run loads");
        assert_eq!(loaded_config, config);
        let images = Tensor::<B, 4>::random([2, 1, 48, 48], Distribution::Uniform(0.0, 1.0), &device);
        let features = Tensor::<B, 2>::random([2, set.len()], Distribution::Uniform(0.0, 1.0), &device);
        assert_eq!(
            model.forward_inference(images.clone(), features.clone()).into_data(),
            loaded.forward_inference(images, features).into_data()
        );

        // No overwriting, no run without its recipe, no run without weights.
        let e = import_feature_run::<B>(&file, &copy, &device).expect_err("exists").to_string();
        assert!(e.contains("already exists"), "{e}");
        let bare = out.path().join("bare.safetensors");
        fer_models::export_feature_model_safetensors(&model, &config.model, set, &[], &bare).expect("export");
        let e = import_feature_run::<B>(&bare, &out.path().join("r2"), &device).expect_err("no recipe").to_string();
        assert!(e.contains("bare.safetensors") && e.contains(SAFETENSORS_FEATURE_RUN_KEY), "{e}");
        assert!(!out.path().join("r2").exists(), "nothing written on a refused import");
        let empty = tempfile::tempdir().expect("tempdir");
        let e = export_feature_run::<B>(empty.path(), &file, &device).expect_err("no weights").to_string();
        assert!(e.contains("best.bin"), "{e}");
    }
}
