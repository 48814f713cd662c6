//! Floating-point operation counts of the models, to put measured throughput next to a device's
//! peak. What is counted: [`conv2d_flops`] (public, so the convention is in the published docs).

use crate::{ModelConfig, ResNetConfig, VggConfig, VggItem};

/// FLOPs of one `k×k` convolution from `input` to `output` channels producing an
/// `out_side × out_side` map, per image.
///
/// The models' counts (`forward_flops` of [`VggConfig`], [`ResNetConfig`], [`ModelConfig`]) add
/// these for the convolutions and the classifier, 2 FLOPs per multiply-add (the convention of
/// GFLOP/s peaks). Not counted: bias, BatchNorm, ReLU, pooling, dropout (together well under 1 % of
/// VGG19's or ResNet18's total). A training step costs about 3× the forward count (the backward
/// pass computes gradients for both inputs and weights).
pub fn conv2d_flops(input: usize, output: usize, kernel: usize, out_side: usize) -> u64 {
    2 * (out_side * out_side * input * output * kernel * kernel) as u64
}

/// Side of a 3×3 / padding 1 (or 1×1 / padding 0) convolution's output at `stride`.
fn strided(side: usize, stride: usize) -> usize {
    (side - 1) / stride + 1
}

impl VggConfig {
    /// Forward FLOPs per `side × side` image (what counts: [`conv2d_flops`]).
    pub fn forward_flops(&self, side: usize) -> u64 {
        let (mut side, mut channels, mut flops) = (side, self.in_channels, 0u64);
        for item in &self.layers {
            match *item {
                VggItem::Conv(width) => {
                    flops += conv2d_flops(channels, width, 3, side);
                    channels = width;
                }
                VggItem::MaxPool => side /= 2,
            }
        }
        flops + 2 * (channels * self.num_classes) as u64
    }
}

impl ResNetConfig {
    /// Forward FLOPs per `side × side` image (what counts: [`conv2d_flops`]).
    pub fn forward_flops(&self, side: usize) -> u64 {
        let mut channels = self.widths[0];
        let mut flops = conv2d_flops(self.in_channels, channels, 3, side);
        let mut side = side;
        for (stage, (&blocks, &width)) in self.blocks.iter().zip(&self.widths).enumerate() {
            for b in 0..blocks {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let out = strided(side, stride);
                flops += conv2d_flops(channels, width, 3, out) + conv2d_flops(width, width, 3, out);
                if stride != 1 || channels != width {
                    flops += conv2d_flops(channels, width, 1, out);
                }
                (side, channels) = (out, width);
            }
        }
        flops + 2 * (channels * self.num_classes) as u64
    }
}

impl ModelConfig {
    /// Forward FLOPs per `side × side` image: 2 × multiply-adds of the convolutions and the
    /// classifier. VGG19 at 44×44: 1.347 GFLOP; ResNet18 at 44×44: 2.192 GFLOP (see the tests).
    pub fn forward_flops(&self, side: usize) -> u64 {
        match self {
            ModelConfig::Vgg(c) => c.forward_flops(side),
            ModelConfig::ResNet(c) => c.forward_flops(side),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vgg19_on_cifar_matches_the_published_count() {
        // VGG19-BN for CIFAR (3 channels, 32×32, 10 classes): 398.13 M multiply-adds in the
        // convolutions, as commonly reported (e.g. by thop), + 5,120 in the classifier.
        let config = VggConfig::vgg19().with_in_channels(3).with_num_classes(10);
        assert_eq!(config.forward_flops(32), 2 * (398_131_200 + 5_120));
    }

    #[test]
    fn resnet18_on_cifar_matches_a_hand_count() {
        // Stem 32²·3·64·9, stage 1: 4 convs 32²·64·64·9, stage 2: 16²·(64·128 + 3·128·128)·9 +
        // 16²·64·128 (projection), and so on; classifier 512·10.
        let macs: u64 = 32 * 32 * 3 * 64 * 9
            + 4 * 32 * 32 * 64 * 64 * 9
            + (16 * 16 * (64 * 128 + 3 * 128 * 128) * 9 + 16 * 16 * 64 * 128)
            + (8 * 8 * (128 * 256 + 3 * 256 * 256) * 9 + 8 * 8 * 128 * 256)
            + (4 * 4 * (256 * 512 + 3 * 512 * 512) * 9 + 4 * 4 * 256 * 512)
            + 512 * 10;
        let config = ResNetConfig::resnet18().with_in_channels(3).with_num_classes(10);
        assert_eq!(config.forward_flops(32), 2 * macs);
        assert!((555_000_000..558_000_000).contains(&macs), "≈ 0.56 G multiply-adds, as published: {macs}");
    }

    #[test]
    fn fer_input_sizes() {
        // 44 → 22 → 11 → 5 → 2 → 1 for VGG; 44 → 22 → 11 → 6 for ResNet.
        let vgg = ModelConfig::from_name("vgg19").expect("known");
        let resnet = ModelConfig::from_name("resnet18").expect("known");
        assert_eq!(vgg.forward_flops(44), 1_347_036_160);
        assert_eq!(resnet.forward_flops(44), 2_192_188_416);
        assert!(vgg.forward_flops(48) > vgg.forward_flops(44));
    }
}
