//! ResNet with basic blocks, CIFAR-style (as in the reference's `models/resnet.py`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::conv::conv2d;
use crate::mode::{Mode, NormStatistics, batch_norm, batch_norm_relu, dropout};
use crate::model::scale_channels;

/// Configuration of a [`ResNet`].
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Basic blocks per stage (ResNet18: `[2, 2, 2, 2]`).
    pub blocks: Vec<usize>,
    /// Channels per stage (ResNet18: `[64, 128, 256, 512]`); the stem has `widths[0]`.
    pub widths: Vec<usize>,
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

impl ResNetConfig {
    /// ResNet18, CIFAR style: 3×3 stride-1 stem (64) + BN + ReLU, no max-pool, basic blocks
    /// `[2,2,2,2]` of widths 64/128/256/512 with strides 1/2/2/2, adaptive average pool over the
    /// whole final map → Dropout(0.5) → Linear(512, 7).
    pub fn resnet18() -> ResNetConfig {
        ResNetConfig::new(vec![2, 2, 2, 2], vec![64, 128, 256, 512])
    }

    /// A two-stage, 16/32-channel ResNet for tests and quick experiments on the CPU.
    pub fn small() -> ResNetConfig {
        ResNetConfig::new(vec![1, 1], vec![16, 32])
    }

    /// The same network with every stage's channel count multiplied by `factor` (rounded, at
    /// least 1): `ResNetConfig::resnet18().scale_width(0.25)` has widths 16/32/64/128.
    /// [`ModelConfig::scale_width`] checks `factor`.
    ///
    /// [`ModelConfig::scale_width`]: crate::ModelConfig::scale_width
    pub fn scale_width(&self, factor: f64) -> ResNetConfig {
        let widths = self.widths.iter().map(|&w| scale_channels(w, factor)).collect();
        ResNetConfig { widths, ..self.clone() }
    }

    /// Checks the stage lists; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.blocks.is_empty() || self.blocks.len() != self.widths.len() {
            return Err(format!("{} block counts for {} widths", self.blocks.len(), self.widths.len()));
        }
        if self.blocks.contains(&0) || self.widths.contains(&0) {
            return Err("block counts and widths must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// Builds the network on `device`. Panics when [`ResNetConfig::check`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResNet<B> {
        if let Err(e) = self.check() {
            panic!("invalid ResNetConfig: {e}");
        }
        let mut blocks = Vec::new();
        let mut channels = self.widths[0];
        for (stage, (&count, &width)) in self.blocks.iter().zip(&self.widths).enumerate() {
            for b in 0..count {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(channels, width, stride, device));
                channels = width;
            }
        }
        ResNet {
            stem_conv: conv3x3(self.in_channels, self.widths[0], 1, device),
            stem_norm: BatchNormConfig::new(self.widths[0]).init(device),
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(channels, self.num_classes).init(device),
        }
    }
}

fn conv3x3<B: Backend>(input: usize, output: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([input, output], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

/// The projection shortcut: 1×1 convolution (with the block's stride) → BatchNorm.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
}

/// Basic residual block (torchvision's `BasicBlock`): conv3×3 → BN → ReLU → conv3×3 → BN, plus
/// the identity (or a 1×1 projection when the stride or width changes), then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    conv1: Conv2d<B>,
    norm1: BatchNorm<B>,
    conv2: Conv2d<B>,
    norm2: BatchNorm<B>,
    shortcut: Option<Projection<B>>,
}

impl<B: Backend> BasicBlock<B> {
    /// A block from `input` to `output` channels, downsampling by `stride`.
    pub fn new(input: usize, output: usize, stride: usize, device: &B::Device) -> BasicBlock<B> {
        let shortcut = (stride != 1 || input != output).then(|| Projection {
            conv: Conv2dConfig::new([input, output], [1, 1])
                .with_stride([stride, stride])
                .with_bias(false)
                .init(device),
            norm: BatchNormConfig::new(output).init(device),
        });
        BasicBlock {
            conv1: conv3x3(input, output, stride, device),
            norm1: BatchNormConfig::new(output).init(device),
            conv2: conv3x3(output, output, 1, device),
            norm2: BatchNormConfig::new(output).init(device),
            shortcut,
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_in(x, Mode::BURN)
    }

    pub(crate) fn forward_in(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let out = batch_norm_relu(&self.norm1, conv2d(&self.conv1, x.clone()), mode);
        let out = batch_norm(&self.norm2, conv2d(&self.conv2, out), mode);
        let skip = match &self.shortcut {
            Some(p) => batch_norm(&p.norm, conv2d(&p.conv, x), mode),
            None => x,
        };
        relu(out + skip)
    }
}

/// ResNet for gray faces.
///
/// Deliberate difference from the reference: its `F.avg_pool2d(out, 4)` on the 6×6 final map of
/// a 44×44 crop averages only the top-left 4×4 (a bug); here the adaptive pool averages the whole
/// map, for 44×44 and 48×48 inputs alike.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    stem_conv: Conv2d<B>,
    stem_norm: BatchNorm<B>,
    blocks: Vec<BasicBlock<B>>,
    pool: AdaptiveAvgPool2d,
    dropout: Dropout,
    classifier: Linear<B>,
}

impl<B: Backend> ResNet<B> {
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
        let mut x = batch_norm_relu(&self.stem_norm, conv2d(&self.stem_conv, images), mode);
        for block in &self.blocks {
            x = block.forward_in(x, mode);
        }
        let x = self.pool.forward(x).flatten::<2>(1, 3);
        self.classifier.forward(dropout(&self.dropout, x, mode, 0))
    }
}
