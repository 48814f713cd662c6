//! # fer-features
//!
//! Hand-crafted features of FER2013 faces for the CNN+landmarks+HOG model:
//!
//! * **In**: 48×48 gray faces ([`fer_dataset::FaceImage`]).
//! * **Out**: HOG descriptors equal to `skimage.feature.hog` ([`sliding_hog`]: 2,592 values,
//!   [`whole_hog`]: 72, or any [`HogConfig`] through [`hog`]).
//! * **Planned** (see the landmarks/HOG issue): dlib's 68 facial landmarks (136 values), a
//!   versioned feature cache, and the feature vectors the model consumes.
//!
//! It depends only on `fer-dataset`; models, attacks and training depend on it.
//!
//! ```
//! use fer_dataset::FaceImage;
//! use fer_features::{sliding_hog, whole_hog, SLIDING_HOG_LEN};
//!
//! let face = FaceImage::from_slice(&[128u8; 48 * 48]).unwrap();
//! assert_eq!(sliding_hog(&face).len(), SLIDING_HOG_LEN);
//! assert_eq!(whole_hog(&face).len(), 72);
//! ```
#![deny(missing_docs)]

mod hog;

pub use fer_dataset;
pub use hog::{
    HogConfig, HogError, SLIDING_HOG_LEN, WHOLE_HOG_LEN, WINDOW_SIDE, WINDOW_STEP, hog, sliding_hog, whole_hog,
};
