//! # fer-models
//!
//! The image classifiers of fer-rs, generic over the Burn backend.
//!
//! * **In**: image batches from [`fer_dataset`]: `[N, 1, H, W]` gray faces in `[0, 1]`
//!   (44×44 crops for training and TenCrop evaluation, 48×48 full faces for the adversarial
//!   evaluation: every model ends in an adaptive average pool, so both work).
//! * **Out**: logits `[N, 7]` in [`fer_dataset::Emotion`] order, through [`Classifier::logits`];
//!   self-describing checkpoints ([`save_checkpoint`] / [`load_checkpoint`]) that carry the model
//!   config, so loading needs only the path.
//! * **Photos**: [`Predictor::predict`] finds the faces of any JPEG/PNG photo (dlib, through
//!   [`fer_features::FaceDetector`]) and gives each a box, seven probabilities and its top
//!   expression ([`FacePrediction`], JSON-serialisable); [`annotate`] draws them.
//! * **On the CPU**: with the `flex` feature (default), every convolution of these networks runs
//!   fer-models' own GEMM kernels on burn-flex, forward and backward ([`conv2d`]: im2col, or on
//!   small maps GEMMs without the taps on padding; Burn's convolution on every other backend),
//!   and BatchNorm with batch statistics runs one kernel of fer-models' own on `Autodiff<Flex>`
//!   ([`batch_norm_training`]). A process that trains calls
//!   [`keep_freed_memory`] once at its start, as the `fer` binary does: glibc then reuses freed
//!   tensors' memory instead of unmapping and faulting it in again.
//! * **On GPUs**: with the `cuda` or `wgpu` feature, BatchNorm with batch statistics on
//!   `Autodiff<Cuda>` / `Autodiff<Wgpu>` is one autodiff operation over the backend's tensor
//!   operations with the closed-form backward step ([`GpuBatchNorm`]), in place of the composed
//!   formula whose every broadcast reduces its own gradient; [`set_gpu_batch_norm`] chooses.
//! * **Data-parallel replicas**: [`collect_running_updates`] keeps a thread's BatchNorm
//!   running-statistic updates aside and [`RunningUpdates::apply_mean`] averages the replicas'
//!   values in a fixed order, so a step on several devices is reproducible (fer-train's
//!   `data_parallel_step` does this).
//!
//! | model | config | parameters (1 input channel, 7 classes) |
//! | --- | --- | --- |
//! | VGG19 (CIFAR-style, BN) | [`VggConfig::vgg19`] | 20,037,831 |
//! | ResNet18 (CIFAR-style) | [`ResNetConfig::resnet18`] | 11,171,271 |
//! | VGG19, every width × 0.25 (16…128 channels) | [`ModelConfig::scale_width`] | 1,256,247 |
//! | ResNet18, every width × 0.25 (16/32/64/128) | [`ModelConfig::scale_width`] | 700,791 |
//! | VGG19 × 0.125 with GroupNorm of 8 groups in place of BatchNorm ([`VggGroupNorm`]: no running statistics) | `VggConfig::group_norm`, [`VggConfig::init_group_norm`] | 315,359 |
//!
//! The reference project feeds the gray face as three identical RGB channels; one channel is the
//! same function with the three first-layer kernels summed, so fer-rs uses one.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use fer_models::{Classifier, ModelConfig};
//!
//! let device = Default::default();
//! let model = ModelConfig::from_name("vgg-small").unwrap().init::<NdArray>(&device);
//! let logits = model.logits(Tensor::zeros([2, 1, 44, 44], &device));
//! assert_eq!(logits.dims(), [2, 7]);
//! ```
#![deny(missing_docs)]
// Without the `dlib` feature the docs still name the items it adds, which then do not exist.
#![cfg_attr(not(feature = "dlib"), allow(rustdoc::broken_intra_doc_links))]

mod allocator;
#[cfg(any(feature = "flex", feature = "cuda", feature = "wgpu", test))]
mod backend_match;
mod checkpoint;
mod cnn_hog;
mod conv;
#[cfg(feature = "flex")]
mod cpu_conv;
#[cfg(feature = "flex")]
mod cpu_conv_regions;
#[cfg(feature = "flex")]
mod cpu_norm;
mod ensemble;
mod evaluate;
mod export;
#[cfg(feature = "flex")]
mod flex_bridge;
mod flops;
#[cfg(any(feature = "cuda", feature = "wgpu", test))]
mod gpu_norm;
mod hog_tensor;
mod mode;
mod model;
mod predict;
mod resnet;
mod running;
mod stats;
mod vgg;

pub use allocator::keep_freed_memory;
pub use checkpoint::{
    CHECKPOINT_MAGIC, Checkpoint, ModelError, checkpoint_checksum, load_checkpoint, load_checkpoint_with_checksum,
    read_checkpoint_header, read_checkpoint_header_with_checksum, save_checkpoint,
};
#[cfg(feature = "dlib")]
pub use cnn_hog::feature_input;
pub use cnn_hog::{CnnHog, CnnHogConfig, ConvBlock, ConvSpec, scale_feature_row};
pub use conv::{WeightGradient, conv2d, conv2d_with_weight_gradient, set_weight_gradient, weight_gradient};
pub use ensemble::{EnsembleError, EnsembleSelection, SelectionRound, average_answers, select_greedy};
pub use evaluate::{Evaluation, evaluate, evaluate_with_answers, padded_logits};
pub use export::{
    ImportedFeatureModel, SAFETENSORS_CONFIG_KEY, SAFETENSORS_FEATURE_MODEL_KEY, SAFETENSORS_FEATURE_SET_KEY,
    export_feature_model_safetensors, export_safetensors, import_feature_model_safetensors, import_safetensors,
    safetensors_metadata,
};
pub use fer_features;
pub use flops::conv2d_flops;
pub use hog_tensor::{face_hog_tensor, hog_windows, nearest_faces};
pub use mode::{GpuBatchNorm, NormStatistics, batch_norm_training, gpu_batch_norm, set_gpu_batch_norm};
pub use model::{Classifier, Model, ModelConfig, average_crops, center_crops, ten_crops};
pub use predict::{
    FONT_PATHS, FacePrediction, PredictError, PredictOptions, Predictor, annotate, emotion_color, face_image,
    font_bytes, label_font, load_image,
};
pub use resnet::{BasicBlock, ResNet, ResNetConfig};
pub use running::{RunningUpdates, collect_running_updates};
pub use stats::{CompareError, FaceAnswer, PairedComparison, Z_95, compare_answers, mcnemar_exact_p, wilson_interval};
pub use vgg::{Vgg, VggConfig, VggGroupNorm, VggItem};
