//! The run directory: its files, its state, its per-epoch metrics, and the errors of training.

use std::path::{Path, PathBuf};

use fer_models::ModelError;

/// What can stop training or reporting.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value is not allowed.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// `metrics.csv` could not be parsed or written.
    #[error("{}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The CSV error.
        source: csv::Error,
    },
    /// A row of a CSV file holds a value that is not allowed.
    #[error("{}:{line}: {message}", path.display())]
    BadRow {
        /// The file.
        path: PathBuf,
        /// Its line (from 1, the header being line 1).
        line: usize,
        /// What is wrong, with the value.
        message: String,
    },
    /// A checkpoint could not be saved or loaded.
    #[error(transparent)]
    Checkpoint(#[from] ModelError),
    /// The training loss became NaN or infinite.
    #[error(
        "training loss is {loss} at epoch {epoch}, step {step} (0-based): stopping; lower the learning rate or check the data"
    )]
    NonFinite {
        /// 0-based epoch.
        epoch: usize,
        /// 0-based step within the epoch.
        step: usize,
        /// The loss value.
        loss: f32,
    },
    /// A new run was asked for in a directory that already holds one.
    #[error("{} already holds a run (state.json); pass --resume to continue it or choose another --out", dir.display())]
    RunExists {
        /// The run directory.
        dir: PathBuf,
    },
    /// `--resume` was asked for where there is no run.
    #[error("{} holds no run to resume (no state.json)", dir.display())]
    NothingToResume {
        /// The run directory.
        dir: PathBuf,
    },
    /// An attack of adversarial training or evaluation cannot run.
    #[error("attack: {0}")]
    Attack(#[from] fer_adversarial::AttackError),
    /// The data cannot serve this run (e.g. an empty split).
    #[error("data: {0}")]
    Data(String),
    /// Answers files cannot be combined into an ensemble (the files at fault are named).
    #[error("ensemble: {0}")]
    Ensemble(String),
    /// A plot could not be drawn.
    #[error("plot {}: {message}", path.display())]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// File names of the run files an epoch saves (see [`RunFiles`]).
pub(crate) const LATEST: &str = "latest.fer";
pub(crate) const BEST: &str = "best.fer";
pub(crate) const EMA: &str = "ema.fer";
pub(crate) const OPTIMIZER: &str = "latest.optim";

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// The directory.
    pub dir: PathBuf,
}

impl RunFiles {
    /// The files under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> RunFiles {
        RunFiles { dir: dir.into() }
    }
    /// `config.json`: the [`crate::TrainConfig`].
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// `metrics.csv`: one [`EpochMetrics`] row per completed epoch.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.csv")
    }
    /// `state.json`: the [`RunState`]; writing it commits an epoch's files (see
    /// [`RunState::pending`]).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// `latest.fer`: the model after the last completed epoch.
    pub fn latest(&self) -> PathBuf {
        self.dir.join(LATEST)
    }
    /// `best.fer`: the model of the epoch with the best PublicTest selection score (clean
    /// accuracy; with adversarial training, see [`crate::Selection`]).
    pub fn best(&self) -> PathBuf {
        self.dir.join(BEST)
    }
    /// `ema.fer`: the weights' moving average after the last completed epoch (runs with
    /// [`crate::TrainConfig::ema_decay`]; `best.fer` is then the average of the selected epoch).
    pub fn ema(&self) -> PathBuf {
        self.dir.join(EMA)
    }
    /// `latest.optim`: optimiser state (momentum) after the last completed epoch.
    pub fn optimizer(&self) -> PathBuf {
        self.dir.join(OPTIMIZER)
    }
    /// `report.json`.
    pub fn report(&self) -> PathBuf {
        self.dir.join("report.json")
    }
    /// `curves.png`: loss and accuracy per epoch.
    pub fn curves_png(&self) -> PathBuf {
        self.dir.join("curves.png")
    }
    /// `confusion_private.png`: PrivateTest confusion matrix of the selected checkpoint.
    pub fn confusion_png(&self) -> PathBuf {
        self.dir.join("confusion_private.png")
    }
}

/// Progress of a run, written after everything else of an epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Epochs completed (the next epoch to run, 0-based).
    pub completed_epochs: usize,
    /// 0-based epoch of `best.fer`.
    pub best_epoch: Option<usize>,
    /// PublicTest selection score of `best.fer` (see [`crate::Selection`]).
    #[serde(alias = "best_public_acc")]
    pub best_score: f64,
    /// The run files of the last epoch that were staged (`NAME.pending`) but not yet renamed into
    /// place when the run stopped; empty once an epoch is fully saved. Writing `state.json` with
    /// this list is what commits an epoch, so a run killed while saving resumes from one
    /// consistent epoch (`--resume` finishes the renames).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// One row of `metrics.csv` (`Default`: every figure 0, every optional column empty).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// 0-based epoch.
    pub epoch: usize,
    /// Learning rate at the epoch's first step.
    pub lr: f64,
    /// Mean training loss (on augmented crops, dropout on).
    pub train_loss: f64,
    /// Training accuracy (on augmented crops, dropout on).
    pub train_acc: f64,
    /// PublicTest mean loss.
    pub public_loss: f64,
    /// PublicTest accuracy (selection criterion).
    pub public_acc: f64,
    /// PrivateTest mean loss.
    pub private_loss: f64,
    /// PrivateTest accuracy.
    pub private_acc: f64,
    /// Training throughput in images per second.
    pub img_per_s: f64,
    /// Wall-clock seconds of the epoch, evaluation included.
    pub seconds: f64,
    /// Adversarial training only: PublicTest accuracy under the evaluation attack.
    #[serde(default)]
    pub public_adv_acc: Option<f64>,
    /// Adversarial training only: PrivateTest accuracy under the evaluation attack.
    #[serde(default)]
    pub private_adv_acc: Option<f64>,
    /// Adversarial training only: accuracy under the evaluation attack on the check faces.
    #[serde(default)]
    pub check_eval_acc: Option<f64>,
    /// Adversarial training only: accuracy under the check attack (PGD) on the check faces.
    #[serde(default)]
    pub check_pgd_acc: Option<f64>,
    /// Adversarial training only: the epoch shows catastrophic overfitting (see
    /// [`crate::AdversarialTraining::catastrophic_gap`] and, from 2026-12-01,
    /// [`crate::AdversarialTraining::collapse_gap`]).
    #[serde(default)]
    pub catastrophic: Option<bool>,
    /// Adversarial training only: mean cross-entropy on the attacked training crops (the
    /// adversarial term of [`EpochMetrics::train_loss`], BatchNorm as
    /// [`crate::AdversarialTraining::norm_statistics`] says, dropout on).
    #[serde(default)]
    pub train_adv_loss: Option<f64>,
    /// Adversarial training only: accuracy on the attacked training crops (as `train_adv_loss`).
    #[serde(default)]
    pub train_adv_acc: Option<f64>,
    /// Adversarial training only: balanced accuracy (mean recall per class) on PublicTest under
    /// the evaluation attack; 1/7 ≈ 14.3 % for a model that gives every attacked face one answer,
    /// whatever its accuracy.
    #[serde(default)]
    pub public_adv_balanced_acc: Option<f64>,
    /// Adversarial training only: the share of PublicTest's attacked faces given the most frequent
    /// answer (above [`crate::DOMINANT_ANSWER_SHARE`], `public_adv_acc` is largely that of a
    /// constant answer, which no attack can lower).
    #[serde(default)]
    pub public_adv_top_answer_share: Option<f64>,
    /// Balanced accuracy (mean recall per class) on clean PublicTest; `None` in files written
    /// before it was added.
    #[serde(default)]
    pub public_balanced_acc: Option<f64>,
    /// Adversarial training only: the share of PublicTest faces right both clean and under the
    /// evaluation attack ([`fer_adversarial::Robustness::robust_accuracy`]). The evaluation attack
    /// pushes against the model's predictions, so `public_adv_acc` also counts faces it moved
    /// from a wrong answer onto the right one; this figure does not.
    #[serde(default)]
    pub public_adv_robust_acc: Option<f64>,
    /// Adversarial training only: the share of the check faces right both clean and under the
    /// evaluation attack (`check_eval_acc` less the faces that attack moved onto the right answer).
    #[serde(default)]
    pub check_eval_robust_acc: Option<f64>,
    /// Adversarial training only: the share of the check faces right both clean and under the
    /// check attack (PGD).
    #[serde(default)]
    pub check_pgd_robust_acc: Option<f64>,
    /// With a weight average ([`crate::TrainConfig::ema_decay`]) only: PublicTest accuracy of the
    /// raw weights (`public_acc` is the average's).
    #[serde(default)]
    pub raw_public_acc: Option<f64>,
    /// With a weight average only: PrivateTest accuracy of the raw weights.
    #[serde(default)]
    pub raw_private_acc: Option<f64>,
    /// With ELLE ([`crate::AdversarialTraining::linearity_weight`]) only: the mean over the
    /// epoch's training faces of the local-linearity error (before the weight λ).
    #[serde(default)]
    pub train_linearity_error: Option<f64>,
}

impl EpochMetrics {
    /// The PublicTest selection score of this epoch under `selection` (clean accuracy when the
    /// epoch has no adversarial figure). The `-balanced` and `-robust` criteria fall back to plain
    /// accuracy where a row lacks their figure (files written before it was added).
    pub fn score(&self, selection: crate::Selection) -> f64 {
        use crate::Selection::*;
        let Some(adv) = self.public_adv_acc else { return self.public_acc };
        let adv_balanced = self.public_adv_balanced_acc.unwrap_or(adv);
        let robust = self.public_adv_robust_acc.unwrap_or(adv);
        match selection {
            Clean => self.public_acc,
            Adversarial => adv,
            Mean => 0.5 * (self.public_acc + adv),
            AdversarialBalanced => adv_balanced,
            MeanBalanced => 0.5 * (self.public_balanced_acc.unwrap_or(self.public_acc) + adv_balanced),
            AdversarialRobust => robust,
            MeanRobust => 0.5 * (self.public_acc + robust),
        }
    }
}

/// Reads `metrics.csv`.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>, TrainError> {
    read_csv(path)
}

/// Reads the rows of a CSV file written by [`write_csv`], or of its gzip'd copy (a name ending in
/// `.gz`).
pub(crate) fn read_csv<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, TrainError> {
    let csv_error = |source| TrainError::Csv { path: path.to_path_buf(), source };
    let reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
        let file = std::fs::File::open(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| csv_error(e.into()))?)
    };
    csv::Reader::from_reader(reader).deserialize().collect::<Result<Vec<T>, _>>().map_err(csv_error)
}

/// Rewrites `metrics.csv` with `rows` (atomically).
pub(crate) fn write_metrics(path: &Path, rows: &[EpochMetrics]) -> Result<(), TrainError> {
    write_csv(path, rows)
}

/// Writes `rows` as CSV with a header (atomically).
pub(crate) fn write_csv<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<(), TrainError> {
    let csv_error = |source| TrainError::Csv { path: path.to_path_buf(), source };
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row).map_err(csv_error)?;
    }
    let bytes = writer.into_inner().map_err(|e| csv_error(e.into_error().into()))?;
    write_file(path, &bytes)
}

/// Writes `value` as pretty JSON (atomically).
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), TrainError> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|source| TrainError::Json { path: path.to_path_buf(), source })?;
    write_file(path, &bytes)
}

/// Reads JSON.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| TrainError::Json { path: path.to_path_buf(), source })
}

/// Writes an optimiser's state (momentum) atomically, as a run's `latest.optim`.
pub(crate) fn write_optimizer<B, M, O>(path: &Path, optim: &O) -> Result<(), TrainError>
where
    B: burn::tensor::backend::AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
    O: burn::optim::Optimizer<M, B>,
{
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    let bytes = Recorder::<B>::record(&BinBytesRecorder::<FullPrecisionSettings>::default(), optim.to_record(), ())
        .map_err(|e| TrainError::Data(format!("cannot encode the optimiser state: {e}")))?;
    write_file(path, &bytes)
}

/// Loads the state written by [`write_optimizer`] into `optim`.
pub(crate) fn read_optimizer<B, M, O>(path: &Path, optim: O, device: &B::Device) -> Result<O, TrainError>
where
    B: burn::tensor::backend::AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
    O: burn::optim::Optimizer<M, B>,
{
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
    let record = Recorder::<B>::load(&BinBytesRecorder::<FullPrecisionSettings>::default(), bytes, device)
        .map_err(|e| TrainError::Data(format!("{}: cannot decode the optimiser state: {e}", path.display())))?;
    Ok(optim.load_record(record))
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    fer_dataset::write_atomically(path, bytes).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metrics.csv");
        let row = EpochMetrics {
            epoch: 3,
            lr: 0.01,
            train_loss: 1.5,
            train_acc: 0.4,
            public_loss: 1.6,
            public_acc: 0.38,
            private_loss: 1.55,
            private_acc: 0.39,
            img_per_s: 123.4,
            seconds: 9.5,
            public_balanced_acc: Some(0.3125),
            ..EpochMetrics::default()
        };
        let adversarial = EpochMetrics {
            epoch: 4,
            public_adv_acc: Some(0.3),
            private_adv_acc: Some(0.31),
            check_eval_acc: Some(0.32),
            check_pgd_acc: Some(0.01),
            catastrophic: Some(true),
            train_adv_loss: Some(2.25),
            train_adv_acc: Some(0.125),
            public_adv_balanced_acc: Some(0.25),
            public_adv_top_answer_share: Some(0.5),
            public_adv_robust_acc: Some(0.1875),
            check_eval_robust_acc: Some(0.25),
            check_pgd_robust_acc: Some(0.0),
            train_linearity_error: Some(0.03125),
            ..row.clone()
        };
        let averaged =
            EpochMetrics { epoch: 5, raw_public_acc: Some(0.375), raw_private_acc: Some(0.25), ..row.clone() };
        write_metrics(&path, &[row.clone(), adversarial.clone(), averaged.clone()]).expect("write");
        let back = read_metrics(&path).expect("read");
        assert_eq!(back, vec![row.clone(), adversarial.clone(), averaged]);
        let text = std::fs::read_to_string(&path).expect("text");
        assert!(text.starts_with(
            "epoch,lr,train_loss,train_acc,public_loss,public_acc,private_loss,private_acc,img_per_s,seconds,\
             public_adv_acc,private_adv_acc,check_eval_acc,check_pgd_acc,catastrophic,train_adv_loss,train_adv_acc,\
             public_adv_balanced_acc,public_adv_top_answer_share,public_balanced_acc,public_adv_robust_acc,\
             check_eval_robust_acc,check_pgd_robust_acc,raw_public_acc,raw_private_acc,train_linearity_error\n"
        ));
        // metrics.csv files written before the adversarial columns existed still read.
        let old = "epoch,lr,train_loss,train_acc,public_loss,public_acc,private_loss,private_acc,img_per_s,seconds\n\
                   3,0.01,1.5,0.4,1.6,0.38,1.55,0.39,123.4,9.5\n";
        std::fs::write(&path, old).expect("write");
        let expected = EpochMetrics { public_balanced_acc: None, ..row.clone() };
        assert_eq!(read_metrics(&path).expect("old file"), vec![expected]);
        // So do adversarial runs' files from before the training-side attacked columns.
        let old_adversarial = "epoch,lr,train_loss,train_acc,public_loss,public_acc,private_loss,private_acc,img_per_s,seconds,\
                               public_adv_acc,private_adv_acc,check_eval_acc,check_pgd_acc,catastrophic\n\
                               4,0.01,1.5,0.4,1.6,0.38,1.55,0.39,123.4,9.5,0.3,0.31,0.32,0.01,true\n";
        std::fs::write(&path, old_adversarial).expect("write");
        let expected = EpochMetrics {
            train_adv_loss: None,
            train_adv_acc: None,
            public_adv_balanced_acc: None,
            public_adv_top_answer_share: None,
            public_balanced_acc: None,
            public_adv_robust_acc: None,
            check_eval_robust_acc: None,
            check_pgd_robust_acc: None,
            train_linearity_error: None,
            ..adversarial
        };
        assert_eq!(read_metrics(&path).expect("old adversarial file"), vec![expected]);
    }

    #[test]
    fn json_files_read_back_every_float_exactly() {
        // 0.9225890320405817 is a real search's momentum that serde_json's default (fast, not
        // round-trip) parser read back one ulp off; the others probe more awkward digits.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("values.json");
        let mut values = vec![0.9225890320405817, 0.02209338044279697, 0.1 + 0.2, 1e-300, 5e-324, f64::MAX];
        let mut x = 0.123_456_789_f64;
        for _ in 0..2_000 {
            x = (x * 3.987_654_321 + 0.5).fract();
            values.push(x);
        }
        write_json(&path, &values).expect("write");
        let back: Vec<f64> = read_json(&path).expect("read");
        let differ: Vec<(f64, f64)> =
            values.iter().zip(&back).filter(|(a, b)| a.to_bits() != b.to_bits()).map(|(a, b)| (*a, *b)).collect();
        assert!(differ.is_empty(), "{} values changed, e.g. {:?}", differ.len(), differ.first());
    }
}
