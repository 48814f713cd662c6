//! One type for "any fer-rs image classifier", its config, and crop averaging.

use burn::prelude::*;

use crate::{ResNet, ResNetConfig, Vgg, VggConfig};

/// Anything that maps a batch of images `[N, C, H, W]` to logits `[N, classes]`.
///
/// Attacks and evaluation are written against this trait, so they work for every model.
pub trait Classifier<B: Backend> {
    /// Logits `[N, classes]` (not softmaxed).
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
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
            ModelConfig::Vgg(c) => Model::Vgg(c.init(device)),
            ModelConfig::ResNet(c) => Model::ResNet(c.init(device)),
        };
        let _ = model.num_params(); // visits (and so initialises) every parameter
        model
    }
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
}

impl<B: Backend> Model<B> {
    /// Logits `[N, classes]` for images `[N, 1, H, W]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        match self {
            Model::Vgg(m) => m.forward(images),
            Model::ResNet(m) => m.forward(images),
        }
    }
}

impl<B: Backend> Classifier<B> for Model<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

impl<B: Backend> Classifier<B> for Vgg<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }
}

impl<B: Backend> Classifier<B> for ResNet<B> {
    fn logits(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
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
}
