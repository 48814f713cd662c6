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
