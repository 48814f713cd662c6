//! # fer-models
//!
//! The classifiers of fer-rs, generic over the Burn backend:
//!
//! * **In**: image batches from [`fer_dataset`] (`[N, 1, 44|48, 44|48]` in `[0, 1]`) and, for the
//!   CNN+landmarks+HOG model, feature vectors from `fer-features`.
//! * **Out** (planned, see the VGG19/ResNet18 issue): VGG19 and ResNet18 for 44×44 crops and the
//!   CNN+landmarks+HOG models, each with a `Config`, a `forward(images) -> logits` and checkpoints
//!   that carry their config.
//!
//! This crate holds no model yet: nothing here is a stand-in.
#![deny(missing_docs)]

pub use fer_features;
