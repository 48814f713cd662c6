//! # fer-rs
//!
//! Facial expression recognition on FER2013 with [Burn](https://burn.dev), and its robustness to
//! adversarial attacks. This crate only gathers the workspace's crates under one name (and hosts
//! the workspace's `examples/` and `benches/`); depend on the single crates when you need one job:
//!
//! | module | crate | job |
//! | --- | --- | --- |
//! | [`dataset`] | `fer-dataset` | read FER2013 (CSV, gzip, cache), crops, Burn batches |
//! | [`features`] | `fer-features` | landmarks and HOG features |
//! | [`models`] | `fer-models` | VGG19, ResNet18, CNN+landmarks+HOG |
//! | [`adversarial`] | `fer-adversarial` | FGSM / PGD attacks, robustness evaluation |
//! | [`train`] | `fer-train` | training recipes, honest evaluation, reports |
#![deny(missing_docs)]

pub use fer_adversarial as adversarial;
pub use fer_dataset as dataset;
pub use fer_features as features;
pub use fer_models as models;
pub use fer_train as train;

/// The README's Rust blocks, compiled (not run) as doc tests so that they follow the API.
#[cfg(all(doctest, feature = "flex"))]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
