//! The training recipe: every knob of the reference, as plain data saved with each run.

use fer_models::ModelConfig;

/// How the learning rate moves over training.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// The reference: constant through epoch `decay_start`, then
    /// `lr × decay_rate^⌊(epoch − decay_start) / decay_every⌋` (epochs counted from 0).
    Reference {
        /// Last epoch at the base rate (the reference: 80).
        decay_start: usize,
        /// Epochs per decay step (5).
        decay_every: usize,
        /// Factor per decay step (0.9).
        decay_rate: f64,
    },
    /// Linear warm-up over `warmup_epochs`, then cosine annealing to `min_lr` at the last step.
    Cosine {
        /// Warm-up epochs.
        warmup_epochs: usize,
        /// Final learning rate.
        min_lr: f64,
    },
    /// The base rate throughout.
    Constant,
}

impl Schedule {
    /// The reference project's schedule (80 / 5 / 0.9).
    pub const REFERENCE: Schedule = Schedule::Reference { decay_start: 80, decay_every: 5, decay_rate: 0.9 };

    /// Learning rate at `step` (0-based) of `epoch` (0-based), for a run of `epochs` epochs of
    /// `steps_per_epoch` steps from base rate `base`.
    pub fn lr(&self, base: f64, epoch: usize, step: usize, steps_per_epoch: usize, epochs: usize) -> f64 {
        match *self {
            Schedule::Reference { decay_start, decay_every, decay_rate } => {
                if epoch > decay_start {
                    let decays = (epoch - decay_start) / decay_every.max(1);
                    base * decay_rate.powi(decays as i32)
                } else {
                    base
                }
            }
            Schedule::Cosine { warmup_epochs, min_lr } => {
                let steps_per_epoch = steps_per_epoch.max(1);
                let t = (epoch * steps_per_epoch + step) as f64;
                let warmup = (warmup_epochs * steps_per_epoch) as f64;
                let total = (epochs * steps_per_epoch) as f64;
                if t < warmup {
                    base * (t + 1.0) / warmup
                } else {
                    let progress = ((t - warmup) / (total - warmup).max(1.0)).min(1.0);
                    min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
            Schedule::Constant => base,
        }
    }
}

/// Everything that defines a training run; saved as `config.json` in the run directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelConfig,
    /// Epochs.
    pub epochs: usize,
    /// Faces per optimiser step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum (PyTorch semantics: no dampening).
    pub momentum: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Clamp every gradient element to `[-c, c]` before the step (the reference: 0.1).
    pub grad_clip: Option<f32>,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Side of the random training crops and the TenCrop evaluation crops.
    pub crop: usize,
    /// Evaluate with TenCrop (logits averaged over 10 crops) rather than the centre crop.
    pub eval_tencrop: bool,
    /// Faces per evaluation batch (×10 crops with TenCrop).
    pub eval_batch_faces: usize,
    /// Seed of weights, data order, crops and dropout.
    pub seed: u64,
    /// Train on a seeded subset of this many training faces (quick runs); `None`: all.
    pub train_limit: Option<usize>,
    /// Evaluate on the first this-many faces of each test split; `None`: all.
    pub eval_limit: Option<usize>,
    /// Batches prepared ahead of the device by a loader thread.
    pub prefetch: usize,
}

impl TrainConfig {
    /// The reference recipe (`mainpro_FER.py --bs 128 --lr 0.01`): SGD lr 0.01, momentum 0.9,
    /// weight decay 5e-4, batch 128, 250 epochs, [`Schedule::REFERENCE`], gradients clamped to
    /// ±0.1, RandomCrop(44)+flip for training, TenCrop(44) for evaluation.
    pub fn reference(model: ModelConfig) -> TrainConfig {
        TrainConfig {
            model,
            epochs: 250,
            batch_size: 128,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            grad_clip: Some(0.1),
            schedule: Schedule::REFERENCE,
            crop: 44,
            eval_tencrop: true,
            eval_batch_faces: 64,
            seed: 0,
            train_limit: None,
            eval_limit: None,
            prefetch: 4,
        }
    }

    /// A shorter recipe: the reference with 60 epochs of cosine annealing (2 warm-up epochs)
    /// to 1e-4. Its accuracy/time trade-off is recorded in docs/RESULTS.md once measured.
    pub fn fast(model: ModelConfig) -> TrainConfig {
        TrainConfig {
            epochs: 60,
            schedule: Schedule::Cosine { warmup_epochs: 2, min_lr: 1e-4 },
            ..TrainConfig::reference(model)
        }
    }

    /// Checks every field; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        self.model.check()?;
        let positive = [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("eval_batch_faces", self.eval_batch_faces),
            ("crop", self.crop),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.crop > fer_dataset::FACE_SIDE {
            return Err(format!("crop {} is larger than the 48-pixel face", self.crop));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("learning rate {} must be positive", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("momentum {} is not in [0, 1)", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!("weight decay {} must be >= 0", self.weight_decay));
        }
        if let Some(c) = self.grad_clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(format!("gradient clamp {c} must be positive"));
        }
        if self.train_limit == Some(0) || self.eval_limit == Some(0) {
            return Err("subset limits must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_schedule_values() {
        let s = Schedule::REFERENCE;
        let lr = |epoch| s.lr(0.01, epoch, 0, 225, 250);
        assert_eq!(lr(0), 0.01);
        assert_eq!(lr(80), 0.01);
        assert_eq!(lr(84), 0.01);
        assert!((lr(85) - 0.009).abs() < 1e-12, "{}", lr(85));
        assert!((lr(89) - 0.009).abs() < 1e-12);
        assert!((lr(90) - 0.0081).abs() < 1e-12, "{}", lr(90));
        assert!((lr(249) - 0.01 * 0.9f64.powi(33)).abs() < 1e-15);
    }

    #[test]
    fn cosine_schedule_shape() {
        let s = Schedule::Cosine { warmup_epochs: 2, min_lr: 1e-4 };
        let lr = |epoch, step| s.lr(0.1, epoch, step, 10, 12);
        assert!((lr(0, 0) - 0.1 / 20.0).abs() < 1e-12, "warm-up starts small");
        assert!((lr(1, 9) - 0.1).abs() < 1e-12, "warm-up ends at the base rate");
        assert!((lr(2, 0) - 0.1).abs() < 1e-12);
        assert!((lr(7, 0) - (1e-4 + 0.5 * (0.1 - 1e-4))).abs() < 1e-12, "half-way is the mean");
        assert!(lr(11, 9) < 2e-4, "ends near min_lr: {}", lr(11, 9));
        assert_eq!(Schedule::Constant.lr(0.3, 5, 3, 10, 12), 0.3);
    }

    #[test]
    fn check_names_the_bad_field() {
        let good = TrainConfig::reference(ModelConfig::from_name("vgg-small").expect("known"));
        assert!(good.check().is_ok());
        assert!(TrainConfig { epochs: 0, ..good.clone() }.check().expect_err("epochs").contains("epochs"));
        assert!(TrainConfig { lr: -1.0, ..good.clone() }.check().expect_err("lr").contains("learning rate"));
        assert!(TrainConfig { crop: 50, ..good.clone() }.check().expect_err("crop").contains("crop 50"));
        assert!(TrainConfig { grad_clip: Some(0.0), ..good }.check().expect_err("clip").contains("clamp"));
    }
}
