//! # fer-features
//!
//! Hand-crafted features of FER2013 faces for the CNN+landmarks+HOG model:
//!
//! * **In**: 48×48 gray faces ([`fer_dataset::FaceImage`]).
//! * **Out** (planned, see the landmarks/HOG issue): dlib's 68 facial landmarks (136 values) and
//!   HOG descriptors bit-identical to `skimage.feature.hog` (sliding 2,592 values, whole-image 72),
//!   a versioned feature cache, and the feature vectors the model consumes.
//!
//! It depends only on `fer-dataset`; models, attacks and training depend on it.
//! This crate holds no features yet: nothing here is a stand-in.
#![deny(missing_docs)]

pub use fer_dataset;
