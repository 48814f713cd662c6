//! One type for "any fer-rs image classifier", its config, and crop averaging.

use burn::prelude::*;

use crate::{NormStatistics, ResNet, ResNetConfig, Vgg, VggConfig, VggGroupNorm};

/// Anything that maps a batch of images `[N, C, H, W]` to logits `[N, classes]`.
///
/// Attacks and evaluation are written against this trait, so they work for every model.
pub trait Classifier<B: Backend> {
    /// Logits `[N, classes]` (not softmaxed), BatchNorm and dropout as the backend picks them:
    /// training behaviour on autodiff backends, inference behaviour otherwise.
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;

    /// Logits with inference behaviour on every backend (BatchNorm running statistics, no
    /// dropout, no statistic update): what an attack differentiates on an autodiff backend.
    /// On an inference backend it equals [`Classifier::logits`].
    fn logits_inference(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
}

/// The architecture of a [`Model`]; saved in every checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "family", content = "config", rename_all = "lowercase")]
pub enum ModelConfig {
    /// A VGG.
    Vgg(VggConfig),
    /// A ResNet.
    ResNet(ResNetConfig),
}

/// Names accepted by [`ModelConfig::from_name`].
pub const MODEL_NAMES: [&str; 4] = ["vgg19", "resnet18", "vgg-small", "resnet-small"];

impl ModelConfig {
    /// `vgg19`, `resnet18`, or the CPU-sized `vgg-small` / `resnet-small`.
    pub fn from_name(name: &str) -> Result<ModelConfig, String> {
        match name.to_ascii_lowercase().as_str() {
            "vgg19" => Ok(ModelConfig::Vgg(VggConfig::vgg19())),
            "resnet18" => Ok(ModelConfig::ResNet(ResNetConfig::resnet18())),
            "vgg-small" => Ok(ModelConfig::Vgg(VggConfig::small())),
            "resnet-small" => Ok(ModelConfig::ResNet(ResNetConfig::small())),
            _ => Err(format!("unknown model `{name}` (expected one of {})", MODEL_NAMES.join(", "))),
        }
    }

    /// The preset name when the config is one (`"vgg19"`, …), else `"vgg"`/`"resnet"` (custom).
    pub fn name(&self) -> &'static str {
        MODEL_NAMES.into_iter().find(|n| ModelConfig::from_name(n).as_ref() == Ok(self)).unwrap_or(match self {
            ModelConfig::Vgg(_) => "vgg",
            ModelConfig::ResNet(_) => "resnet",
        })
    }

    /// The preset name, or for a custom config its layers: `vgg(16-16-M-…)`,
    /// `vgg(16-16-M-…, GroupNorm 8)`, `resnet(blocks 2-2-2-2, widths 16-32-64-128)`. For logs,
    /// reports and bench lines.
    pub fn label(&self) -> String {
        match (self.name(), self) {
            ("vgg", ModelConfig::Vgg(c)) => match c.group_norm {
                None => format!("vgg({})", c.layers_label()),
                Some(groups) => format!("vgg({}, GroupNorm {groups})", c.layers_label()),
            },
            ("resnet", ModelConfig::ResNet(c)) => {
                let join = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
                format!("resnet(blocks {}, widths {})", join(&c.blocks), join(&c.widths))
            }
            (name, _) => name.to_string(),
        }
    }

    /// The same architecture with every layer's channel count multiplied by `factor` (rounded, at
    /// least 1; depth, dropout and classes unchanged): a narrower VGG19 or ResNet18 for a CPU, or a
    /// wider one. Errors when `factor` is not a finite number > 0.
    ///
    /// ```
    /// use fer_models::ModelConfig;
    ///
    /// let quarter = ModelConfig::from_name("vgg19").unwrap().scale_width(0.25).unwrap();
    /// assert_eq!(quarter.label(), "vgg(16-16-M-32-32-M-64-64-64-64-M-128-128-128-128-M-128-128-128-128-M)");
    /// assert!(ModelConfig::from_name("resnet18").unwrap().scale_width(0.0).is_err());
    /// ```
    pub fn scale_width(&self, factor: f64) -> Result<ModelConfig, String> {
        if !factor.is_finite() || factor <= 0.0 {
            return Err(format!("width factor {factor} is not a finite number > 0"));
        }
        Ok(match self {
            ModelConfig::Vgg(c) => ModelConfig::Vgg(c.scale_width(factor)),
            ModelConfig::ResNet(c) => ModelConfig::ResNet(c.scale_width(factor)),
        })
    }

    /// Whether the model has BatchNorm layers: every model but a VGG with `group_norm` set
    /// (see [`Model::has_batch_norm`]).
    pub fn has_batch_norm(&self) -> bool {
        !matches!(self, ModelConfig::Vgg(c) if c.group_norm.is_some())
    }

    /// Output classes.
    pub fn num_classes(&self) -> usize {
        match self {
            ModelConfig::Vgg(c) => c.num_classes,
            ModelConfig::ResNet(c) => c.num_classes,
        }
    }

    /// Checks the config; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self {
            ModelConfig::Vgg(c) => c.check(),
            ModelConfig::ResNet(c) => c.check(),
        }
    }

    /// Builds the model with fresh weights on `device`. Panics when [`ModelConfig::check`] fails.
    ///
    /// Every parameter is materialised here. Burn 0.21 initialises parameters lazily, and a clone
    /// of a not-yet-initialised module draws its own, different weights; materialising at once
    /// makes clones (checkpoints, frozen copies for attacks) equal to the original.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Model<B> {
        let model = match self {
            ModelConfig::Vgg(c) if c.group_norm.is_some() => Model::VggGroupNorm(c.init_group_norm(device)),
            ModelConfig::Vgg(c) => Model::Vgg(c.init(device)),
            ModelConfig::ResNet(c) => Model::ResNet(c.init(device)),
        };
        let _ = model.num_params(); // visits (and so initialises) every parameter
        model
    }
}

/// `channels × factor`, rounded, at least 1 (the width rule of [`ModelConfig::scale_width`]).
pub(crate) fn scale_channels(channels: usize, factor: f64) -> usize {
    ((channels as f64) * factor).round().max(1.0) as usize
}

/// Any fer-rs image classifier (a Burn [`Module`]: train it, save it, move it between devices).
// One model value lives per run; boxing the variants would buy nothing and Burn's derive wants them inline.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Model<B: Backend> {
    /// A VGG.
    Vgg(Vgg<B>),
    /// A ResNet.
    ResNet(ResNet<B>),
    /// A VGG with GroupNorm (a [`VggConfig`] whose `group_norm` is set). The variant comes after
    /// the others, so checkpoints written before it existed read unchanged.
    VggGroupNorm(VggGroupNorm<B>),
}

impl<B: Backend> Model<B> {
    /// Logits `[N, classes]` for images `[N, 1, H, W]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Model::Vgg(m) => m.forward(images),
            Model::ResNet(m) => m.forward(images),
            Model::VggGroupNorm(m) => m.forward(images),
        }
    }

    /// Logits with inference behaviour on every backend (see [`Classifier::logits_inference`]).
    pub fn forward_inference(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Model::Vgg(m) => m.forward_inference(images),
            Model::ResNet(m) => m.forward_inference(images),
            Model::VggGroupNorm(m) => m.forward_inference(images),
        }
    }

    /// Logits of a training pass whose BatchNorm layers use `statistics` (see
    /// [`NormStatistics`]) and whose dropout masks come from `dropout_seed`: `None` draws them
    /// from the backend's generator, as [`Model::forward`] does (with
    /// [`NormStatistics::BatchUpdate`] this is [`Model::forward`]); `Some(seed)` from a ChaCha8
    /// generator seeded with it, so the same seed gives the same masks on any thread. Burn 0.21's
    /// CPU backends share one generator between threads: replicas training side by side need a
    /// seed each to be reproducible, and fer-train gives them one per pass, drawn from the run's seed.
    /// A model without BatchNorm ([`Model::VggGroupNorm`]) ignores `statistics`.
    pub fn forward_training(
        &self,
        images: Tensor<B, 4>,
        statistics: NormStatistics,
        dropout_seed: Option<u64>,
    ) -> Tensor<B, 2> {
        match self {
            Model::Vgg(m) => m.forward_training(images, statistics, dropout_seed),
            Model::ResNet(m) => m.forward_training(images, statistics, dropout_seed),
            Model::VggGroupNorm(m) => m.forward_training(images, dropout_seed),
        }
    }

    /// Whether the model has BatchNorm layers (running statistics, and a training pass that
    /// depends on the other faces of the batch): every model but [`Model::VggGroupNorm`].
    pub fn has_batch_norm(&self) -> bool {
        !matches!(self, Model::VggGroupNorm(_))
    }
}

impl<B: Backend> Classifier<B> for Model<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }

    fn logits_inference(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_inference(images)
    }
}

impl<B: Backend> Classifier<B> for Vgg<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }

    fn logits_inference(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_inference(images)
    }
}

impl<B: Backend> Classifier<B> for VggGroupNorm<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }

    fn logits_inference(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_inference(images)
    }
}

impl<B: Backend> Classifier<B> for ResNet<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }

    fn logits_inference(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_inference(images)
    }
}

/// Averages the logits of consecutive groups of `crops_per_face` rows (TenCrop: 10), giving one
/// row per face: `[N × crops, classes]` → `[N, classes]`, as the reference's
/// `outputs.view(bs, ncrops, -1).mean(1)`.
pub fn average_crops<B: Backend>(logits: Tensor<B, 2>, crops_per_face: usize) -> Tensor<B, 2> {
    if crops_per_face == 1 {
        return logits;
    }
    let [rows, classes] = logits.dims();
    assert_eq!(rows % crops_per_face, 0, "{rows} rows are not groups of {crops_per_face} crops");
    logits.reshape([rows / crops_per_face, crops_per_face, classes]).mean_dim(1).squeeze_dim::<2>(1)
}

/// torchvision's `TenCrop(side)` of full faces as a differentiable tensor operation:
/// `[N, C, 48, 48]` → `[N × 10, C, side, side]`, the crops of face `i` at rows `i × 10 ..`, in the
/// order of [`fer_dataset::CropWindow::ten`] (so the same crops as [`fer_dataset::View::TenCrop`]).
/// An attack on a TenCrop-evaluated model perturbs the full face through this function.
///
/// Panics unless the faces are 48×48 and `side` is in `1..=48`.
pub fn ten_crops<B: Backend>(images: Tensor<B, 4>, side: usize) -> Tensor<B, 4> {
    check_side(side);
    let crops: Vec<Tensor<B, 4>> =
        fer_dataset::CropWindow::ten(side).iter().map(|&w| window_of(images.clone(), w)).collect();
    let [faces, channels, ..] = images.dims();
    Tensor::stack::<5>(crops, 1).reshape([faces * 10, channels, side, side])
}

/// torchvision's `CenterCrop(side)` of full faces as a differentiable tensor operation:
/// `[N, C, 48, 48]` → `[N, C, side, side]`, the window of [`fer_dataset::CropWindow::center`] (so
/// the same crops as [`fer_dataset::View::CenterCrop`]). An attack on a model that sees the centre
/// crop perturbs the full face through this function (pixels outside the crop get no gradient).
///
/// Panics unless the faces are 48×48 and `side` is in `1..=48`.
pub fn center_crops<B: Backend>(images: Tensor<B, 4>, side: usize) -> Tensor<B, 4> {
    check_side(side);
    window_of(images, fer_dataset::CropWindow::center(side))
}

fn check_side(side: usize) {
    assert!((1..=fer_dataset::FACE_SIDE).contains(&side), "crop side {side} is not in 1..={}", fer_dataset::FACE_SIDE);
}

/// One window of every face of `[N, C, 48, 48]` faces, mirrored when the window says so.
fn window_of<B: Backend>(images: Tensor<B, 4>, w: fer_dataset::CropWindow) -> Tensor<B, 4> {
    let [faces, channels, height, width] = images.dims();
    assert!(
        height == fer_dataset::FACE_SIDE && width == fer_dataset::FACE_SIDE,
        "crops are taken from full {0}×{0} faces, got {height}×{width}",
        fer_dataset::FACE_SIDE
    );
    let crop = images.slice([0..faces, 0..channels, w.top..w.top + w.size, w.left..w.left + w.size]);
    if w.mirrored { crop.flip([3]) } else { crop }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray;

    #[test]
    fn shapes_at_44_and_48() {
        let device = Default::default();
        for name in MODEL_NAMES {
            let model = ModelConfig::from_name(name).expect("known").init::<B>(&device);
            for side in [44, 48] {
                let out = model.forward(Tensor::zeros([2, 1, side, side], &device));
                assert_eq!(out.dims(), [2, 7], "{name} at {side}");
            }
        }
    }

    #[test]
    fn full_size_parameter_counts() {
        // Hand counts (see the crate docs): conv weights + biases, BN scale + shift, linear.
        let device = Default::default();
        let vgg = ModelConfig::from_name("vgg19").expect("known").init::<B>(&device);
        // Burn's num_params also counts BatchNorm running mean and variance (2 × 5,504 for VGG19).
        assert_eq!(vgg.num_params(), 20_037_831 + 11_008);
        let resnet = ModelConfig::from_name("resnet18").expect("known").init::<B>(&device);
        // ResNet18 has 2 × 4,800 BatchNorm running statistics (20 BNs: stem, blocks, shortcuts).
        assert_eq!(resnet.num_params(), 11_171_271 + 9_600);
    }

    #[test]
    fn width_scaled_presets_have_the_hand_counted_parameters() {
        // Same hand count as above with every width divided by 4: VGG19 convs 1→16, 16→16, 16→32,
        // 32→32, 32→64, 3 × 64→64, 64→128, 7 × 128→128 (9·in·out + out, BN 2·out), Linear(128, 7);
        // ResNet18 stem 16, stages 16/32/64/128 (bias-free convs, projection shortcuts), Linear(128, 7).
        let device = Default::default();
        let vgg = ModelConfig::from_name("vgg19").expect("known").scale_width(0.25).expect("valid");
        assert_eq!(vgg.init::<B>(&device).num_params(), 1_256_247 + 2 * 1_376);
        let resnet = ModelConfig::from_name("resnet18").expect("known").scale_width(0.25).expect("valid");
        assert_eq!(resnet.label(), "resnet(blocks 2-2-2-2, widths 16-32-64-128)");
        assert_eq!(resnet.init::<B>(&device).num_params(), 700_791 + 2 * 1_200);
        for side in [44, 48] {
            for config in [&vgg, &resnet] {
                let out = config.init::<B>(&device).forward(Tensor::zeros([2, 1, side, side], &device));
                assert_eq!(out.dims(), [2, 7], "{} at {side}", config.label());
            }
        }
    }

    #[test]
    fn width_factor_one_is_the_preset_and_bad_factors_are_refused() {
        for name in MODEL_NAMES {
            let preset = ModelConfig::from_name(name).expect("known");
            let same = preset.scale_width(1.0).expect("valid");
            assert_eq!(same, preset);
            assert_eq!(same.label(), name);
        }
        // Rounding, and never fewer than one channel.
        let tiny = ModelConfig::from_name("vgg-small").expect("known").scale_width(0.03).expect("valid");
        assert_eq!(tiny.label(), "vgg(1-1-M-1-1-M-M)");
        let wide = ModelConfig::from_name("vgg-small").expect("known").scale_width(1.5).expect("valid");
        assert_eq!(wide.label(), "vgg(24-24-M-48-48-M-M)");
        for bad in [0.0, -0.5, f64::NAN, f64::INFINITY] {
            let err = ModelConfig::from_name("vgg19").expect("known").scale_width(bad).expect_err("refused");
            assert!(err.contains("width factor"), "{err}");
        }
    }

    #[test]
    fn names_round_trip_and_bad_configs_are_named() {
        for name in MODEL_NAMES {
            assert_eq!(ModelConfig::from_name(name).expect("known").name(), name);
        }
        assert!(ModelConfig::from_name("alexnet").expect_err("unknown").contains("vgg19, resnet18"));
        let bad = ModelConfig::Vgg(VggConfig::new(vec![crate::VggItem::MaxPool]));
        assert!(bad.check().is_err());
        let bad = ModelConfig::ResNet(ResNetConfig::new(vec![2], vec![64, 128]));
        assert!(bad.check().is_err());
    }

    #[test]
    fn crop_average_equals_hand_computation() {
        let device = Default::default();
        // Two faces × 3 crops × 2 classes.
        let logits =
            Tensor::<B, 2>::from_floats([[1., 2.], [3., 4.], [5., 9.], [0., -3.], [6., 3.], [9., 0.]], &device);
        let avg = average_crops(logits, 3).into_data().to_vec::<f32>().expect("floats");
        assert_eq!(avg, vec![3.0, 5.0, 5.0, 0.0]);
    }

    fn max_abs_diff<Bk: Backend>(a: Tensor<Bk, 2>, b: Tensor<Bk, 2>) -> f32 {
        (a - b).abs().max().into_scalar().elem()
    }

    #[test]
    fn inference_forward_on_autodiff_equals_the_inference_backend() {
        use burn::backend::Autodiff;
        use burn::module::AutodiffModule;
        use burn::tensor::Distribution;
        type A = Autodiff<NdArray>;
        let device = Default::default();
        for name in ["vgg-small", "resnet-small"] {
            <A as Backend>::seed(&device, 3);
            let model = ModelConfig::from_name(name).expect("known").init::<A>(&device);
            let x = Tensor::<A, 4>::random([6, 1, 44, 44], Distribution::Uniform(0.0, 1.0), &device);
            // Training-mode passes move the running statistics away from their initial 0 / 1.
            for _ in 0..3 {
                let _ = model.forward(x.clone().mul_scalar(2.0).add_scalar(0.3));
            }
            let reference = model.valid().forward(x.clone().inner());
            let inference = model.forward_inference(x.clone());
            assert!(max_abs_diff(inference.clone().inner(), reference.clone()) < 1e-5, "{name}");
            // Inference passes leave the running statistics alone.
            let again = model.forward_inference(x.clone());
            assert_eq!(max_abs_diff(again.inner(), inference.clone().inner()), 0.0, "{name}");
            assert!(max_abs_diff(model.valid().forward(x.clone().inner()), reference) == 0.0, "{name}");
            // And the backend's default on autodiff is training behaviour, which differs.
            assert!(max_abs_diff(model.forward(x).inner(), inference.inner()) > 1e-4, "{name}");
        }
    }

    #[test]
    fn training_passes_touch_the_running_statistics_only_when_asked() {
        use burn::backend::Autodiff;
        use burn::module::AutodiffModule;
        use burn::tensor::Distribution;
        type A = Autodiff<NdArray>;
        let device = Default::default();
        // Without dropout, so that two training passes compare BatchNorm alone: equal dropout masks
        // would need equal draws from the backend's one random generator, which the tests running
        // beside this one also draw from.
        let vgg = ModelConfig::Vgg(VggConfig::small().with_dropout(0.0));
        let resnet = ModelConfig::ResNet(ResNetConfig::small().with_dropout(0.0));
        for (name, config) in [("vgg-small", vgg), ("resnet-small", resnet)] {
            <A as Backend>::seed(&device, 5);
            let model = config.init::<A>(&device);
            let x = Tensor::<A, 4>::random([6, 1, 44, 44], Distribution::Uniform(0.0, 1.0), &device);
            let shifted = || x.clone().mul_scalar(3.0).add_scalar(0.5);
            // The running statistics show through the inference model (`valid` applies pending updates).
            let inference = || model.valid().forward(x.clone().inner());
            let before = inference();
            let batch = model.forward_training(shifted(), NormStatistics::Batch, None);
            let running = model.forward_training(shifted(), NormStatistics::Running, None);
            assert_eq!(max_abs_diff(inference(), before.clone()), 0.0, "{name}: statistics moved");
            let burns = model.forward(shifted());
            assert!(max_abs_diff(batch.inner(), burns.clone().inner()) < 1e-5, "{name}: batch ≠ Burn's pass");
            assert!(max_abs_diff(running.inner(), burns.inner()) > 1e-3, "{name}: running used batch statistics");
            assert!(max_abs_diff(inference(), before) > 1e-4, "{name}: Burn's pass left the statistics");
        }
    }

    #[test]
    fn ten_and_center_crops_equal_the_dataset_views() {
        use burn::data::dataloader::batcher::Batcher;
        use fer_dataset::{Emotion, FaceBatcher, FaceImage, FaceItem, View};
        let device = Default::default();
        let images: Vec<FaceImage> = (0..2u32)
            .map(|f| {
                let px: Vec<u8> = (0..48 * 48u32).map(|i| ((i * 7 + f * 13 + i / 48 * 5) % 256) as u8).collect();
                FaceImage::from_slice(&px).expect("2304 pixels")
            })
            .collect();
        let items: Vec<FaceItem> = images
            .iter()
            .enumerate()
            .map(|(index, image)| FaceItem { index, label: Emotion::Happy, image: image.clone() })
            .collect();
        let view = |view: View| -> Tensor<B, 4> { FaceBatcher::new(view, 0, 2).batch(items.clone(), &device).images };
        let full = view(View::Full);
        let crops = ten_crops::<B>(full.clone(), 44);
        assert_eq!(crops.dims(), [20, 1, 44, 44]);
        assert_eq!(crops.into_data(), view(View::TenCrop(44)).into_data());
        for side in [44, 41] {
            let crop = center_crops::<B>(full.clone(), side);
            assert_eq!(crop.dims(), [2, 1, side, side]);
            assert_eq!(crop.into_data(), view(View::CenterCrop(side)).into_data(), "side {side}");
        }
        let too_big = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| center_crops::<B>(full.clone(), 50)))
            .expect_err("side 50");
        let message = too_big.downcast_ref::<String>().map(String::as_str).unwrap_or_default();
        assert!(message.contains("crop side 50 is not in 1..=48"), "{message}");
    }
}
