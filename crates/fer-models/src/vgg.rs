//! VGG with batch normalisation, CIFAR-style (as in the reference's `models/vgg.py`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::conv::conv2d;
use crate::mode::{Mode, NormStatistics, batch_norm_relu, dropout};
use crate::model::scale_channels;

/// One entry of a VGG layer list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VggItem {
    /// 3×3 convolution (padding 1, with bias) to this many channels → BatchNorm → ReLU.
    Conv(usize),
    /// 2×2 max-pool, stride 2.
    MaxPool,
}

/// Configuration of a [`Vgg`].
#[derive(Config, Debug, PartialEq)]
pub struct VggConfig {
    /// Feature layers, in order; must start with a convolution.
    pub layers: Vec<VggItem>,
    /// Input channels (1: gray faces).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Output classes.
    #[config(default = 7)]
    pub num_classes: usize,
    /// Dropout probability before the classifier (the reference: 0.5).
    #[config(default = 0.5)]
    pub dropout: f64,
}

impl VggConfig {
    /// VGG19: `[64,64,M,128,128,M,256×4,M,512×4,M,512×4,M]`; 44→22→11→5→2→1 spatially, 512
    /// features → Dropout(0.5) → Linear(512, 7).
    pub fn vgg19() -> VggConfig {
        use VggItem::{Conv, MaxPool};
        let mut layers = vec![Conv(64), Conv(64), MaxPool, Conv(128), Conv(128), MaxPool];
        for width in [256, 512, 512] {
            layers.extend([Conv(width); 4]);
            layers.push(MaxPool);
        }
        VggConfig::new(layers)
    }

    /// A narrow 4-conv VGG (16-16-M-32-32-M-M, dropout 0.1: half of 32 features is too much to
    /// drop) for tests and quick experiments on the CPU.
    pub fn small() -> VggConfig {
        use VggItem::{Conv, MaxPool};
        VggConfig::new(vec![Conv(16), Conv(16), MaxPool, Conv(32), Conv(32), MaxPool, MaxPool]).with_dropout(0.1)
    }

    /// The same network with every convolution's channel count multiplied by `factor` (rounded,
    /// at least 1): `VggConfig::vgg19().scale_width(0.25)` has 16…128 channels instead of 64…512
    /// and about 1/16 of the weights and multiply-adds. [`ModelConfig::scale_width`] checks
    /// `factor`.
    ///
    /// [`ModelConfig::scale_width`]: crate::ModelConfig::scale_width
    pub fn scale_width(&self, factor: f64) -> VggConfig {
        let layers = self
            .layers
            .iter()
            .map(|item| match *item {
                VggItem::Conv(width) => VggItem::Conv(scale_channels(width, factor)),
                VggItem::MaxPool => VggItem::MaxPool,
            })
            .collect();
        VggConfig { layers, ..self.clone() }
    }

    /// The layer list as `16-16-M-32-…` (M: max-pool), for labels and messages.
    pub fn layers_label(&self) -> String {
        let items: Vec<String> = self
            .layers
            .iter()
            .map(|item| match item {
                VggItem::Conv(width) => width.to_string(),
                VggItem::MaxPool => "M".to_string(),
            })
            .collect();
        items.join("-")
    }

    /// Checks the layer list; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self.layers.first() {
            None => Err("VGG layer list is empty".into()),
            Some(VggItem::MaxPool) => Err("VGG layer list must start with a convolution".into()),
            Some(_) if self.layers.contains(&VggItem::Conv(0)) => Err("a convolution has 0 channels".into()),
            Some(_) if !(0.0..1.0).contains(&self.dropout) => Err(format!("dropout {} is not in [0, 1)", self.dropout)),
            Some(_) => Ok(()),
        }
    }

    /// Builds the network on `device`. Panics when [`VggConfig::check`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vgg<B> {
        if let Err(e) = self.check() {
            panic!("invalid VggConfig: {e}");
        }
        let mut blocks: Vec<VggBlock<B>> = Vec::new();
        let mut channels = self.in_channels;
        for item in &self.layers {
            match *item {
                VggItem::Conv(out) => {
                    blocks.push(VggBlock {
                        conv: Conv2dConfig::new([channels, out], [3, 3])
                            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                            .init(device),
                        norm: BatchNormConfig::new(out).init(device),
                        pool: None,
                    });
                    channels = out;
                }
                VggItem::MaxPool => {
                    let last = blocks.last_mut().expect("check() ensures a conv comes first");
                    last.pool = Some(MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init());
                }
            }
        }
        Vgg {
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(channels, self.num_classes).init(device),
        }
    }
}

/// Conv 3×3 → BatchNorm → ReLU, then an optional 2×2 max-pool.
#[derive(Module, Debug)]
pub struct VggBlock<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
    pool: Option<MaxPool2d>,
}

/// VGG for gray faces: conv blocks → adaptive average pool to 1×1 → dropout → linear.
///
/// The reference ends with `AvgPool2d(1)` on a 1×1 map (44×44 input); the adaptive pool does
/// the same there and also accepts 48×48 faces (48→…→3→1 after five pools).
#[derive(Module, Debug)]
pub struct Vgg<B: Backend> {
    blocks: Vec<VggBlock<B>>,
    pool: AdaptiveAvgPool2d,
    dropout: Dropout,
    classifier: Linear<B>,
}

impl<B: Backend> Vgg<B> {
    /// Logits `[N, classes]` for images `[N, C, H, W]`; BatchNorm and dropout as Burn picks them
    /// (training behaviour on autodiff backends).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_in(images, Mode::BURN)
    }

    /// Logits with inference behaviour on every backend (running statistics, no dropout), for
    /// input gradients on an autodiff backend.
    pub fn forward_inference(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_in(images, Mode::Inference)
    }

    /// Logits of a training pass whose BatchNorm layers use `statistics` and whose dropout masks
    /// come from `dropout_seed` (`None`: Burn's generator); [`NormStatistics::BatchUpdate`] with
    /// `None` is [`Self::forward`]. See [`crate::Model::forward_training`].
    pub fn forward_training(
        &self,
        images: Tensor<B, 4>,
        statistics: NormStatistics,
        dropout_seed: Option<u64>,
    ) -> Tensor<B, 2> {
        self.forward_in(images, Mode::training(statistics, dropout_seed))
    }

    fn forward_in(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let mut x = images;
        for block in &self.blocks {
            x = batch_norm_relu(&block.norm, conv2d(&block.conv, x), mode);
            if let Some(pool) = &block.pool {
                x = pool.forward(x);
            }
        }
        let x = self.pool.forward(x).flatten::<2>(1, 3);
        self.classifier.forward(dropout(&self.dropout, x, mode, 0))
    }
}
