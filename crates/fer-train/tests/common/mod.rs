//! What the integration tests share: the small training config of the synthetic texture task and
//! the lock that keeps seeded runs apart. Each test crate uses part of it.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use fer_models::ModelConfig;
use fer_train::{Schedule, TrainConfig};

/// vgg-small, batch 8, constant lr 0.05, centre-crop evaluation: learns the texture task in a few
/// epochs on ndarray.
pub fn small_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 8,
        eval_tencrop: false,
        lr: 0.05,
        schedule: Schedule::Constant,
        eval_batch_faces: 16,
        prefetch: 2,
        ..TrainConfig::reference(ModelConfig::from_name("vgg-small").expect("known"))
    }
}

/// Burn's CPU backends keep one global RNG: runs that seed it must not interleave.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the global-RNG lock for the rest of a test.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An adversarial run's training-side figures in `metrics.csv`: present every epoch, in range,
/// not a copy of the mixed loss, and the attacked crops are fitted better at the end than in the
/// first epoch (the synthetic task is learnable under attack).
pub fn assert_attacked_training_figures(rows: &[fer_train::EpochMetrics]) {
    for r in rows {
        let (loss, acc) = (r.train_adv_loss.expect("attacked loss"), r.train_adv_acc.expect("attacked accuracy"));
        eprintln!(
            "epoch {}: train loss {:.4} acc {:.3}; attacked loss {loss:.4} acc {acc:.3}",
            r.epoch, r.train_loss, r.train_acc
        );
        assert!(loss.is_finite() && loss > 0.0 && (0.0..=1.0).contains(&acc), "{r:?}");
        assert!((loss - r.train_loss).abs() > 1e-6, "the attacked loss is its own figure: {r:?}");
    }
    let (first, last) = (rows.first().expect("rows"), rows.last().expect("rows"));
    assert!(
        last.train_adv_acc > first.train_adv_acc,
        "attacked crops: {:?} → {:?}",
        first.train_adv_acc,
        last.train_adv_acc
    );
}

/// The names of the staged files (`*.pending`) in a run directory: none once a save has finished
/// or a resume has recovered it.
pub fn staged_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("run directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pending"))
        .collect()
}
