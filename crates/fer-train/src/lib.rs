//! # fer-train
//!
//! Training and honest evaluation of fer-rs image classifiers.
//!
//! * **In**: FER2013 ([`fer_dataset::Fer2013`]), a model config ([`fer_models::ModelConfig`]) and
//!   a recipe ([`TrainConfig`]; [`TrainConfig::reference`] is the reference project's).
//! * **Out**: a run directory (see [`RunFiles`]) with `config.json`, per-epoch `metrics.csv`,
//!   `latest.fer` / `best.fer` checkpoints written atomically and committed together with the
//!   resumable state (a run killed while saving resumes from its last whole epoch), `report.json` and
//!   PNG plots ([`write_report`] rewrites them from `best.fer`, [`write_plots`] redraws the plots
//!   from `metrics.csv` and `report.json` alone); [`evaluate`] for any classifier on any split and
//!   view.
//!
//! **Distillation.** [`Distillation`] (`TrainConfig::distillation`) teaches a run with the class
//! probabilities that other models gave each Training face, read from their answers files
//! ([`write_answers`]), so models whose checkpoints are elsewhere (another GPU lease) can be
//! distilled, one or an ensemble, into one model. FER+'s crowd votes teach the same way
//! ([`ferplus_answers`]: the annotators' distribution over the seven classes as soft targets).
//!
//! **Honest selection.** The checkpoint is chosen on PublicTest accuracy only; the headline figure
//! is PrivateTest accuracy of that checkpoint. The reference project's figure (the best PrivateTest
//! accuracy over all epochs, i.e. selected on the test set) is reported too, labelled as such.
//!
//! **Why a hand-written loop rather than burn-train's `Learner`.** The recipe evaluates two splits
//! with TenCrop averaging every epoch, must resume to bit-identical metrics (data order, crops and
//! dropout are re-seeded per epoch), must stop on a non-finite loss naming the epoch and step, and
//! (in the adversarial issue) builds attacks inside the step. Each of these fights the `Learner`'s
//! fixed epoch/metric/checkpoint machinery; the loop here is ~200 lines and owns all of it.
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use fer_models::ModelConfig;
//! use fer_train::{train, TrainConfig, TrainOptions};
//!
//! let data = fer_dataset::load("data/fer2013.cache")?;
//! let mut config = TrainConfig::reference(ModelConfig::from_name("vgg19").unwrap());
//! config.epochs = 5;
//! let summary = train::<Autodiff<Flex>>(&config, &data, "runs/vgg19".as_ref(), &TrainOptions::default(), &Default::default())?;
//! println!("PrivateTest at the PublicTest-best epoch: {:.2} %", 100.0 * summary.selected_private_acc);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod answers;
mod average;
mod bench;
mod commit;
mod config;
mod distill;
mod ensemble;
mod features_train;
mod ferplus;
mod hyperopt;
mod parallel;
mod plots;
mod recalibrate;
mod report;
mod run;
mod train;

pub use answers::{read_answers, write_answers};
pub use average::{ema_decay_at, ema_update};
pub use bench::{TrainBench, TrainStep, bench_feature_train_steps, bench_train_steps, median};
#[doc(hidden)]
pub use commit::fail_saving_at;
pub use config::{AdvSource, AdversarialTraining, InitCheckpoint, Schedule, Selection, TrainConfig};
pub use distill::{Distillation, SoftTargets, TeacherAnswers, tempered};
pub use ensemble::{EnsembleMember, EnsembleReport, ensemble_answer_files};
pub use features_train::{
    FeatureEpoch, FeatureRunOptions, FeatureRunSummary, FeatureTrainConfig, SAFETENSORS_FEATURE_RUN_KEY,
    evaluate_feature_model, export_feature_run, import_feature_run, load_feature_model, load_feature_run,
    save_feature_model, train_features,
};
pub use fer_adversarial;
pub use fer_dataset::BatchStream;
pub use fer_models::{Evaluation, NormStatistics, evaluate};
pub use ferplus::{FerPlusAgreement, MajorityScore, ferplus_agreement, ferplus_answers, score_on_majority};
pub use hyperopt::{ParamSpec, Trial, best_trial_path, hyperopt, read_best_trial, reference_space};
pub use parallel::{ParallelStep, data_parallel_step, shard_range};
pub use plots::{
    plot_adversarial_examples, plot_conflicts, plot_confusion, plot_curves, plot_feature_curves, plot_robustness,
    plot_trials,
};
pub use recalibrate::recalibrate_batch_norm;
pub use report::{
    AdversarialReport, DOMINANT_ANSWER_SHARE, DominantAnswer, Report, SplitReport, is_dominant_share,
    write_ceiling_csv, write_plots, write_report, write_sweep_csv,
};
pub use run::{EpochMetrics, RunFiles, RunState, TrainError, read_metrics};
pub use train::{RunSummary, TrainOptions, train, train_on_devices};
