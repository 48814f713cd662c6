//! # fer-adversarial
//!
//! Adversarial attacks on fer-rs classifiers and robustness evaluation.
//!
//! * **In**: a differentiable forward (any `Fn(Tensor<B, 4>) -> Tensor<B, 2>` on an autodiff
//!   backend; for fer-rs models a frozen copy in inference mode, see
//!   [`fer_models::Classifier::logits_inference`]) and image batches in `[0, 1]` from
//!   [`fer_dataset`].
//! * **Out**: adversarial images ([`perturb`]: FGSM, FGSM-RS, PGD-k and APGD (Croce & Hein 2020,
//!   AutoAttack's step-size-free PGD on the cross-entropy or the DLR loss, [`ApgdLoss`]) under an
//!   L∞ budget ε, and N-FGSM, a training attack that leaves the ε-ball on purpose);
//!   clean vs adversarial accuracy with confusion matrices ([`evaluate_robustness`]), and the
//!   faces right both clean and under attack, apart from those the attack moved from a wrong
//!   answer onto the right one ([`Robustness::robust_accuracy`], [`right_after_attack`]); ε sweeps
//!   ([`eps_sweep`]); faces with the model's probabilities for figures ([`adversarial_examples`],
//!   picked by [`example_faces`]); TRADES's robust term ([`kl_from_clean`]; its attack is any
//!   attack with a random start on [`Labels::Distribution`]); ELLE's local-linearity error of the
//!   loss within the ε-ball ([`local_linearity_error`]), a regulariser against catastrophic
//!   overfitting. Plots and adversarial training live in `fer-train`.
//! * **The robustness ceiling of the data** ([`ceiling_sweep`], [`robust_ceiling`]): the best
//!   accuracy under an L∞ attack of budget ε that any classifier can have on a set of faces,
//!   bracketed from the pairs of differently labelled faces within 2ε of each other (on
//!   FER2013's PrivateTest at ε = 0.3: about 73 % on the whole face, 66.5 % on the centred crop).
//! * **The CNN + landmarks + HOG model** (with the `dlib` feature, default):
//!   [`evaluate_feature_model_robustness`] and [`feature_model_eps_sweep`] attack it through its
//!   whole pipeline (the gradient flows through the image branch and a differentiable HOG) and
//!   score the attacked faces as 8-bit images with landmarks and HOG computed anew.
//!
//! Every attack returns `x'` with `‖x' − x‖∞ ≤ ε` and `x' ∈ [0, 1]`, detached from the graph; it
//! differentiates only the input and drops the gradients it makes, so nothing reaches a model's
//! optimiser. Random starts are drawn on the host from a seeded generator, so results do not
//! depend on the backend's random number generator.
//!
//! **Why inference mode matters.** In Burn 0.21, BatchNorm and dropout act in training mode on
//! every autodiff backend; an attack through `forward` would see batch statistics and random
//! dropout, not the deployed model. [`fer_models::Classifier::logits_inference`] uses the running
//! statistics and no dropout on any backend (the reference's `net.eval()`).
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::module::Module;
//! use burn::tensor::{Distribution, Tensor};
//! use fer_adversarial::{Attack, Labels, perturb};
//! use fer_models::{Classifier, ModelConfig};
//! use rand::SeedableRng;
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let model = ModelConfig::from_name("vgg-small").unwrap().init::<B>(&device);
//! let frozen = model.clone().no_grad();
//! let faces = Tensor::<B, 4>::random([2, 1, 48, 48], Distribution::Uniform(0.0, 1.0), &device);
//! let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(0);
//! let adversarial = perturb(&Attack::pgd(8.0 / 255.0, 3), |x| frozen.logits_inference(x), faces.clone(), Labels::Predicted, &mut rng)?;
//! let distance: f32 = (adversarial - faces).abs().max().into_scalar();
//! assert!(distance <= 8.0 / 255.0 + 1e-6);
//! # Ok::<(), fer_adversarial::AttackError>(())
//! ```
#![deny(missing_docs)]

mod apgd;
mod attack;
mod ceiling;
#[cfg(feature = "dlib")]
mod feature_model;
mod linearity;
mod robustness;

pub use apgd::ApgdLoss;
pub use attack::{
    Attack, AttackError, LabelSource, Labels, input_gradient, kl_from_clean, parse_eps, parse_noise, parse_step_size,
    perturb,
};
pub use ceiling::{
    ConflictGraph, RobustCeiling, ceiling_sweep, conflict_examples, conflict_graph, conflict_levels, robust_ceiling,
};
#[cfg(feature = "dlib")]
pub use feature_model::{
    FeatureModel, evaluate_feature_model_robustness, feature_model_adversarial_examples, feature_model_eps_sweep,
};
pub use fer_models;
pub use linearity::local_linearity_error;
pub use robustness::{
    AdversarialExample, FeatureGradient, Robustness, RobustnessConfig, SweepPoint, adversarial_examples, eps_sweep,
    evaluate_robustness, example_faces, logits_on_faces, right_after_attack,
};
