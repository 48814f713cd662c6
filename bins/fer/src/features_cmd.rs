//! `fer train-features` and `fer hyperopt`: the CNN + landmarks + HOG model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use fer_features::FeatureSet;
use fer_models::CnnHogConfig;
use fer_train::{FeatureRunOptions, FeatureTrainConfig, TrainError};

use crate::backend::{DeviceSpec, with_backend};

/// The model, data and recipe of a feature-model run; defaults are the reference's `parameters.py`.
#[derive(clap::Args)]
pub struct FeatureArgs {
    /// Model: cnn-hog-b (the reference's best), cnn-hog-a, or the CPU-sized cnn-hog-tiny.
    #[arg(long, default_value = "cnn-hog-b")]
    model: String,
    /// Feature vector: landmarks-sliding-hog (2,728), landmarks-whole-hog (208) or landmarks (136).
    #[arg(long, default_value = "landmarks-sliding-hog")]
    feature_set: FeatureSet,
    #[command(flatten)]
    input: FeatureData,
    /// Epochs [default: 13; hyperopt: 2 per trial].
    #[arg(long)]
    epochs: Option<usize>,
    /// Faces per step.
    #[arg(long, default_value_t = 128)]
    bs: usize,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.016)]
    lr: f64,
    /// Learning rate × lr_decay^(step / decay_steps).
    #[arg(long, default_value_t = 0.864)]
    lr_decay: f64,
    /// Steps per decay factor.
    #[arg(long, default_value_t = 50)]
    decay_steps: usize,
    /// Momentum.
    #[arg(long, default_value_t = 0.95)]
    momentum: f64,
    /// Keep probability of dropout.
    #[arg(long, default_value_t = 0.956)]
    keep_prob: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on a seeded subset of this many training faces.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on the first this-many faces of each test split.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// The faces, their `fer features` cache and the device: what training and evaluating read.
#[derive(clap::Args)]
struct FeatureData {
    /// Feature cache written by `fer features` from the same data.
    #[arg(long, default_value = "features.cache")]
    features: PathBuf,
    /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Device: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

impl FeatureData {
    /// The data and its features, the features checked against the data.
    fn load(&self) -> Result<(fer_dataset::Fer2013, fer_features::FaceFeatures)> {
        let features = fer_features::read_feature_cache(&self.features)?;
        let data = crate::load_with_progress(self.data.as_deref())?;
        features.check_matches(&data, &self.features)?;
        Ok((data, features))
    }
}

/// `fer train-features`: the model, data and recipe, and how this call runs.
#[derive(clap::Args)]
pub struct TrainFeatureArgs {
    #[command(flatten)]
    args: FeatureArgs,
    /// Stop after this many epochs in this call (resume later with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Continue the run in --out from its last completed epoch (its config.json is used; the
    /// recipe flags are ignored).
    #[arg(long)]
    resume: bool,
}

/// The feature models by name, for feature vectors of `len` values.
fn feature_models(len: usize) -> [(&'static str, CnnHogConfig); 3] {
    [
        ("cnn-hog-b", CnnHogConfig::model_b(len)),
        ("cnn-hog-a", CnnHogConfig::model_a(len)),
        ("cnn-hog-tiny", CnnHogConfig::tiny(len)),
    ]
}

/// The feature model called `name` (cnn-hog-b, cnn-hog-a, cnn-hog-tiny) for `set`.
pub fn feature_model(name: &str, set: FeatureSet) -> Result<CnnHogConfig> {
    feature_models(set.len())
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, config)| config)
        .ok_or_else(|| anyhow::anyhow!("unknown model `{name}` (expected cnn-hog-b, cnn-hog-a or cnn-hog-tiny)"))
}

/// The name of a feature model's architecture (`cnn-hog-b`, …; dropout, a training setting, aside),
/// or `cnn-hog (custom)`.
#[cfg(feature = "dlib")]
pub fn feature_model_name(config: &CnnHogConfig) -> &'static str {
    feature_models(config.feature_len)
        .into_iter()
        .find(|(_, c)| c.clone().with_dropout(config.dropout) == *config)
        .map_or("cnn-hog (custom)", |(n, _)| n)
}

impl FeatureArgs {
    fn config(&self, default_epochs: usize) -> Result<FeatureTrainConfig> {
        let len = self.feature_set.len();
        let model = feature_model(&self.model, self.feature_set)?;
        anyhow::ensure!((0.0..=1.0).contains(&self.keep_prob) && self.keep_prob > 0.0, "--keep-prob must be in (0, 1]");
        let config = FeatureTrainConfig {
            model: model.with_dropout(1.0 - self.keep_prob),
            epochs: self.epochs.unwrap_or(default_epochs),
            batch_size: self.bs,
            lr: self.lr,
            lr_decay: self.lr_decay,
            decay_steps: self.decay_steps,
            momentum: self.momentum,
            seed: self.seed,
            train_limit: self.train_limit,
            eval_limit: self.eval_limit,
            ..FeatureTrainConfig::reference(CnnHogConfig::tiny(len), self.feature_set)
        };
        config.check().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// `fer eval-features`: the weights of a feature-model run on a split.
#[derive(clap::Args)]
pub struct EvalFeatureArgs {
    /// Run directory of `fer train-features` (its config.json and weights).
    #[arg(long)]
    run: PathBuf,
    /// Weights: best (the PublicTest-selected epoch, `best.bin`) or latest (`latest.bin`).
    #[arg(long, default_value = "best", value_parser = ["best", "latest"])]
    weights: String,
    /// Split: public, private or training.
    #[arg(long, default_value = "private")]
    split: fer_dataset::Split,
    #[command(flatten)]
    input: FeatureData,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `fer eval-features`.
pub fn eval(args: EvalFeatureArgs) -> Result<()> {
    let weights = args.run.join(format!("{}.bin", args.weights));
    let evaluation = with_backend!(args.input.device, |B, device| {
        // The run first: a wrong path fails before the data set is read.
        let (model, config, _) = fer_train::load_feature_run::<B>(&weights, &device)?;
        let (data, features) = args.input.load()?;
        fer_train::evaluate_feature_model(&model, &data, &features, args.split, config.feature_set, &device)?
    });
    crate::print_split_report(
        &weights.display().to_string(),
        args.split,
        "full faces + features",
        &evaluation,
        args.json,
    )
}

/// `fer train-features`.
pub fn train(train: TrainFeatureArgs) -> Result<()> {
    let args = &train.args;
    let config = if train.resume {
        let path = args.out.join("config.json");
        let text = std::fs::read(&path).with_context(|| format!("cannot resume: cannot read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not a feature-model config", path.display()))?
    } else {
        args.config(13)?
    };
    let (data, features) = args.input.load()?;
    let options = FeatureRunOptions { resume: train.resume, stop_after: train.stop_after, progress: true };
    let summary = with_backend!(args.input.device, |B, device| {
        fer_train::train_features::<burn::backend::Autodiff<B>>(
            &config,
            &data,
            &features,
            Some(&args.out),
            &options,
            &device,
        )?
    });
    println!(
        "{} of {} epochs done. Selected epoch {} (best PublicTest {:.2} %): PrivateTest {:.2} % (headline). \
         Reference-style (best PrivateTest over epochs): {:.2} %. Written to {}.",
        summary.epochs.len(),
        config.epochs,
        summary.selected_epoch + 1,
        100.0 * summary.selected_public_acc,
        100.0 * summary.selected_private_acc,
        100.0 * summary.reference_style_private_acc,
        args.out.display()
    );
    Ok(())
}

/// `fer hyperopt`: TPE over the reference's space, maximising PublicTest accuracy.
pub fn hyperopt(args: FeatureArgs, max_evals: usize, startup: usize) -> Result<()> {
    let base = args.config(2)?;
    let (data, features) = args.input.load()?;
    let trials = with_backend!(args.input.device, |B, device| {
        fer_train::hyperopt::<TrainError>(
            &fer_train::reference_space(),
            max_evals,
            startup,
            base.seed,
            &args.out,
            |k, p: &BTreeMap<String, f64>| {
                let mut c = base.clone();
                (c.lr, c.lr_decay, c.momentum) = (p["lr"], p["lr_decay"], p["momentum"]);
                c.model.dropout = 1.0 - p["keep_prob"];
                let s = fer_train::train_features::<burn::backend::Autodiff<B>>(
                    &c,
                    &data,
                    &features,
                    None,
                    &FeatureRunOptions::default(),
                    &device,
                )?;
                println!("trial {k}: {p:?} → PublicTest {:.2} %", 100.0 * s.selected_public_acc);
                Ok(s.selected_public_acc)
            },
        )?
    });
    let best = fer_train::read_best_trial(&args.out).context("best.json")?;
    println!(
        "{} trials in {}; best: trial {} PublicTest {:.2} % with {:?}",
        trials.len(),
        args.out.display(),
        best.trial,
        100.0 * best.score,
        best.params
    );
    Ok(())
}
