//! What the integration tests share: the small training config of the synthetic texture task.

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
