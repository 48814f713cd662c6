//! # fer-train
//!
//! Training and honest evaluation of fer-rs models:
//!
//! * **In**: FER2013 from `fer-dataset`, models from `fer-models`, attacks from `fer-adversarial`
//!   (for adversarial training).
//! * **Out** (planned, see the VGG19/ResNet18 and adversarial issues): the reference recipe and
//!   faster schedules, checkpoints chosen on PublicTest and reported on PrivateTest, resumable run
//!   directories, `report.json` and PNG plots.
//!
//! This crate holds no training loop yet: nothing here is a stand-in.
#![deny(missing_docs)]

pub use fer_adversarial;
