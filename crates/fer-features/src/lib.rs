//! # fer-features
//!
//! Hand-crafted features of FER2013 faces for the CNN+landmarks+HOG model:
//!
//! * **In**: 48×48 gray faces ([`fer_dataset::FaceImage`]) and dlib's 68-point shape predictor
//!   (Debian's `libdlib-data`, [`DEFAULT_LANDMARK_MODEL`]).
//! * **Out**: dlib landmarks in the reference's fixed face box ([`LandmarkModel::face_landmarks`],
//!   136 values); HOG descriptors equal to `skimage.feature.hog` ([`sliding_hog`]: 2,592 values,
//!   [`whole_hog`]: 72, any [`HogConfig`] through [`hog`]); every face's features computed on all
//!   cores ([`FaceFeatures::compute`]) and cached in a checksummed, versioned file tied to its
//!   data ([`write_feature_cache`], [`read_feature_cache`]); the model's input vector for a
//!   [`FeatureSet`] (2,728, 208 or 136 values).
//!
//! * **Photos**: faces found by dlib's HOG frontal detector ([`FaceDetector::detect`], upsampling
//!   small images by [`Upsample`]) and cut out as FER2013-framed 48×48 gray faces ([`crop_face`]).
//!
//! It depends only on `fer-dataset`; models, attacks and training depend on it.
//!
//! ## Cargo features
//!
//! * `dlib` (default): [`LandmarkModel`], [`FaceFeatures::compute`], [`time_features`] and
//!   [`FaceDetector`], through the `dlib-face-recognition` crate, which links the system's dlib
//!   (Debian: `apt-get install libdlib-dev libdlib-data libopenblas-dev liblapack-dev`). With
//!   `default-features = false` the crate needs no C++ library: HOG, face crops, feature vectors
//!   and feature caches written by a dlib build all work; only landmarks and detection are gone.
//!
//! ```
//! use fer_dataset::FaceImage;
//! use fer_features::{sliding_hog, whole_hog, SLIDING_HOG_LEN};
//!
//! let face = FaceImage::from_slice(&[128u8; 48 * 48]).unwrap();
//! assert_eq!(sliding_hog(&face).len(), SLIDING_HOG_LEN);
//! assert_eq!(whole_hog(&face).len(), 72);
//! ```
//!
//! ```no_run
//! # #[cfg(feature = "dlib")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fer_features::{FaceFeatures, FeatureSet, LandmarkModel, write_feature_cache};
//!
//! let data = fer_dataset::load("data/fer2013.cache")?;
//! let model = LandmarkModel::open(None)?; // /usr/share/dlib/shape_predictor_68_face_landmarks.dat
//! let features = FaceFeatures::compute(&data, &model, |done| eprintln!("{done} faces"));
//! write_feature_cache(&features, "data/features.cache".as_ref())?;
//! let mut v = Vec::new();
//! features.extend_vector(fer_dataset::Split::Training, 0, FeatureSet::LandmarksSlidingHog, &mut v);
//! assert_eq!(v.len(), 2728);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "dlib"))]
//! # fn main() {}
//! ```
#![deny(missing_docs)]
// Without the `dlib` feature the docs still name the items it adds, which then do not exist.
#![cfg_attr(not(feature = "dlib"), allow(rustdoc::broken_intra_doc_links))]

mod detect;
mod features;
mod hog;
mod landmarks;

#[cfg(feature = "dlib")]
pub use detect::FaceDetector;
pub use detect::{AUTO_UPSAMPLE_MIN_SIDE, CropSpec, FaceBox, MAX_UPSAMPLE, Upsample, crop_face, crop_gray};
pub use features::{
    FEATURE_CACHE_MAGIC, FEATURE_CACHE_VERSION, FEATURES_PER_FACE, FaceFeatures, FeatureCacheError, FeatureSet,
    FeatureTimings, images_fingerprint, read_feature_cache, write_feature_cache,
};
#[cfg(feature = "dlib")]
pub use features::{feature_vector, time_features};
pub use fer_dataset;
pub use hog::{
    HogConfig, HogError, HogWindow, SLIDING_HOG_LEN, WHOLE_HOG_LEN, WINDOW_SIDE, WINDOW_STEP, face_hogs, hog,
    sliding_hog, sliding_windows, whole_hog, window_orientation_bins,
};
#[cfg(feature = "dlib")]
pub use landmarks::LandmarkModel;
pub use landmarks::{
    DEFAULT_LANDMARK_MODEL, FER_FACE_BOX, LANDMARK_MODEL_ENV, LANDMARK_POINTS, LANDMARKS_LEN, LandmarkError,
    landmark_model_path,
};
