//! # fer-adversarial
//!
//! Adversarial attacks on fer-rs models and robustness evaluation:
//!
//! * **In**: a model from `fer-models` and image batches from `fer-dataset`.
//! * **Out** (planned, see the adversarial issue): FGSM, FGSM-RS and PGD-k under an L∞ budget,
//!   clean-vs-adversarial accuracy, ε sweeps and example figures.
//!
//! This crate holds no attack yet: nothing here is a stand-in.
#![deny(missing_docs)]

pub use fer_models;
