//! VGG with batch normalisation, CIFAR-style (as in the reference's `models/vgg.py`), and the
//! same network with group normalisation ([`VggGroupNorm`], `VggConfig::group_norm`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::prelude::*;
use burn::tensor::activation::relu;

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
    /// The normalisation after each convolution: `None` (VGG19's, the default) BatchNorm;
    /// `Some(G)` GroupNorm with `G` groups in every layer (Wu & He 2018), which normalises each
    /// face on its own, the same way in training and at inference, with no running statistics
    /// ([`VggGroupNorm`]). `G` must divide every convolution's channel count. Checkpoints and
    /// `config.json` files written before this field existed read as `None`.
    pub group_norm: Option<usize>,
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

    /// The same network with GroupNorm of `groups` groups after every convolution (`None`:
    /// BatchNorm); see the `group_norm` field. [`VggConfig::check`] tells whether `groups` fits.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::Tensor;
    /// use fer_models::{Model, ModelConfig, VggConfig};
    ///
    /// // VGG19 at 1/8 width (8…64 channels) with GroupNorm of 8 groups: what `fer train --model
    /// // vgg19 --width 0.125 --group-norm 8` trains.
    /// let config = ModelConfig::Vgg(VggConfig::vgg19().scale_width(0.125).with_group_norm_groups(Some(8)));
    /// assert!(config.check().is_ok() && !config.has_batch_norm());
    /// let model = config.init::<NdArray>(&Default::default());
    /// assert!(matches!(model, Model::VggGroupNorm(_)));
    /// assert_eq!(model.forward(Tensor::zeros([2, 1, 44, 44], &Default::default())).dims(), [2, 7]);
    /// // 16 groups do not divide the first layer's 8 channels.
    /// let err = VggConfig::vgg19().scale_width(0.125).with_group_norm_groups(Some(16)).check();
    /// assert!(err.unwrap_err().contains("convolution 1 of 16 has 8 channels"));
    /// ```
    pub fn with_group_norm_groups(&self, groups: Option<usize>) -> VggConfig {
        VggConfig { group_norm: groups, ..self.clone() }
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
            Some(_) => self.check_group_norm(),
        }
    }

    fn check_group_norm(&self) -> Result<(), String> {
        let Some(groups) = self.group_norm else { return Ok(()) };
        if groups == 0 {
            return Err("GroupNorm with 0 groups".into());
        }
        let convs = self.layers.iter().filter_map(|item| match item {
            VggItem::Conv(width) => Some(*width),
            VggItem::MaxPool => None,
        });
        for (index, width) in convs.enumerate() {
            if width % groups != 0 {
                return Err(format!(
                    "GroupNorm with {groups} groups: convolution {} of {} has {width} channels, not a multiple of \
                     {groups} (layers {})",
                    index + 1,
                    self.layers.iter().filter(|i| matches!(i, VggItem::Conv(_))).count(),
                    self.layers_label()
                ));
            }
        }
        Ok(())
    }

    /// The convolutions in order: (input channels, output channels, followed by a max-pool).
    fn conv_plan(&self) -> Vec<(usize, usize, bool)> {
        let mut plan: Vec<(usize, usize, bool)> = Vec::new();
        let mut channels = self.in_channels;
        for item in &self.layers {
            match *item {
                VggItem::Conv(out) => {
                    plan.push((channels, out, false));
                    channels = out;
                }
                VggItem::MaxPool => {
                    if let Some(last) = plan.last_mut() {
                        last.2 = true;
                    }
                }
            }
        }
        plan
    }

    /// Checks the config, then builds one block per convolution with `block(conv, output
    /// channels, pool)` and the layers after them. Panics when [`VggConfig::check`] fails.
    fn build<B: Backend, T>(
        &self,
        device: &B::Device,
        block: impl Fn(Conv2d<B>, usize, Option<MaxPool2d>) -> T,
    ) -> (Vec<T>, VggHead<B>) {
        if let Err(e) = self.check() {
            panic!("invalid VggConfig: {e}");
        }
        let plan = self.conv_plan();
        let blocks = plan
            .iter()
            .map(|&(input, output, pooled)| {
                let conv = Conv2dConfig::new([input, output], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device);
                let pool = pooled.then(|| MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init());
                block(conv, output, pool)
            })
            .collect();
        let channels = plan.last().map_or(self.in_channels, |p| p.1);
        let head = VggHead {
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(channels, self.num_classes).init(device),
        };
        (blocks, head)
    }

    /// Builds the GroupNorm network on `device` ([`VggGroupNorm`]; `group_norm` must be
    /// `Some`). Panics when [`VggConfig::check`] fails or `group_norm` is `None`.
    pub fn init_group_norm<B: Backend>(&self, device: &B::Device) -> VggGroupNorm<B> {
        let groups = self.group_norm.expect("init_group_norm needs VggConfig::group_norm");
        let (blocks, VggHead { pool, dropout, classifier }) = self.build(device, |conv, channels, pool| {
            VggGroupNormBlock { conv, norm: GroupNormConfig::new(groups, channels).init(device), pool }
        });
        VggGroupNorm { blocks, pool, dropout, classifier }
    }

    /// Builds the BatchNorm network on `device` (whatever `group_norm` says; [`crate::ModelConfig::init`]
    /// picks [`VggConfig::init_group_norm`] when it is `Some`). Panics when [`VggConfig::check`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vgg<B> {
        let (blocks, VggHead { pool, dropout, classifier }) = self.build(device, |conv, channels, pool| VggBlock {
            conv,
            norm: BatchNormConfig::new(channels).init(device),
            pool,
        });
        Vgg { blocks, pool, dropout, classifier }
    }
}

/// The layers after the convolutions, built once for both networks.
struct VggHead<B: Backend> {
    pool: AdaptiveAvgPool2d,
    dropout: Dropout,
    classifier: Linear<B>,
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
            x = pooled(&block.pool, batch_norm_relu(&block.norm, conv2d(&block.conv, x), mode));
        }
        classify(&self.pool, &self.dropout, &self.classifier, x, mode)
    }
}

/// `x` max-pooled when the block has a pool.
fn pooled<B: Backend>(pool: &Option<MaxPool2d>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match pool {
        Some(pool) => pool.forward(x),
        None => x,
    }
}

/// Adaptive average pool to 1×1 → dropout (as `mode` says) → linear.
fn classify<B: Backend>(
    pool: &AdaptiveAvgPool2d,
    drop: &Dropout,
    classifier: &Linear<B>,
    x: Tensor<B, 4>,
    mode: Mode,
) -> Tensor<B, 2> {
    let x = pool.forward(x).flatten::<2>(1, 3);
    classifier.forward(dropout(drop, x, mode, 0))
}

/// Conv 3×3 → GroupNorm → ReLU, then an optional 2×2 max-pool.
#[derive(Module, Debug)]
pub struct VggGroupNormBlock<B: Backend> {
    conv: Conv2d<B>,
    norm: GroupNorm<B>,
    pool: Option<MaxPool2d>,
}

/// [`Vgg`] with GroupNorm in place of BatchNorm ([`VggConfig::init_group_norm`]): each face is
/// normalised over groups of its own channels, so a face's logits never depend on the other faces
/// of its batch or on running statistics, and training and inference normalise alike (only
/// dropout differs). What fer-train's `--adv-bn` / `--adv-clean-bn` choose does not apply to it.
///
/// Burn's GroupNorm runs as composed tensor operations on every backend (no fused kernel of
/// fer-models' own, as BatchNorm has on burn-flex and the GPUs).
#[derive(Module, Debug)]
pub struct VggGroupNorm<B: Backend> {
    blocks: Vec<VggGroupNormBlock<B>>,
    pool: AdaptiveAvgPool2d,
    dropout: Dropout,
    classifier: Linear<B>,
}

impl<B: Backend> VggGroupNorm<B> {
    /// Logits `[N, classes]` for images `[N, C, H, W]`; dropout as Burn picks it (on in training
    /// behaviour, that is on autodiff backends).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_in(images, Mode::BURN)
    }

    /// Logits with inference behaviour on every backend (no dropout), for input gradients on an
    /// autodiff backend.
    pub fn forward_inference(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_in(images, Mode::Inference)
    }

    /// Logits of a training pass whose dropout masks come from `dropout_seed` (`None`: Burn's
    /// generator). There are no batch statistics, so the [`NormStatistics`] choice of
    /// [`Vgg::forward_training`] has nothing to act on and is not taken.
    pub fn forward_training(&self, images: Tensor<B, 4>, dropout_seed: Option<u64>) -> Tensor<B, 2> {
        self.forward_in(images, Mode::training(NormStatistics::BatchUpdate, dropout_seed))
    }

    fn forward_in(&self, images: Tensor<B, 4>, mode: Mode) -> Tensor<B, 2> {
        let mut x = images;
        for block in &self.blocks {
            x = pooled(&block.pool, relu(block.norm.forward(conv2d(&block.conv, x))));
        }
        classify(&self.pool, &self.dropout, &self.classifier, x, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelConfig;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::Distribution;

    type B = NdArray;
    type A = Autodiff<NdArray>;

    fn max_abs_diff<Bk: Backend>(a: Tensor<Bk, 2>, b: Tensor<Bk, 2>) -> f32 {
        (a - b).abs().max().into_scalar().elem()
    }

    #[test]
    fn group_norm_vgg19_has_the_hand_counted_parameters_at_44_and_48() {
        // VGG19 at 1/8 width: convs 1→8, 8→8, 8→16, 16→16, 16→32, 3 × 32→32, 32→64, 7 × 64→64
        // (9·in·out + out each: 313,528), GroupNorm γ and β (2·out: 1,376), Linear(64, 7) (455);
        // no running statistics, which the BatchNorm network adds (2·out again).
        let device = Default::default();
        let eighth = VggConfig::vgg19().scale_width(0.125);
        let gn = ModelConfig::Vgg(eighth.with_group_norm_groups(Some(8)));
        assert_eq!(gn.label(), "vgg(8-8-M-16-16-M-32-32-32-32-M-64-64-64-64-M-64-64-64-64-M, GroupNorm 8)");
        assert!(!gn.has_batch_norm());
        let model = gn.init::<B>(&device);
        assert!(matches!(model, crate::Model::VggGroupNorm(_)) && !model.has_batch_norm());
        assert_eq!(model.num_params(), 315_359);
        assert_eq!(ModelConfig::Vgg(eighth).init::<B>(&device).num_params(), 315_359 + 1_376);
        for side in [44, 48] {
            assert_eq!(model.forward(Tensor::zeros([2, 1, side, side], &device)).dims(), [2, 7], "{side}");
        }
    }

    #[test]
    fn group_norm_logits_of_a_face_ignore_its_batch_even_in_training() {
        let device = Default::default();
        <A as Backend>::seed(&device, 11);
        let faces = Tensor::<A, 4>::random([4, 1, 44, 44], Distribution::Uniform(0.0, 1.0), &device);
        let others = faces.clone().narrow(0, 1, 3).mul_scalar(3.0).add_scalar(0.5);
        let with_others = Tensor::cat(vec![faces.clone().narrow(0, 0, 1), others], 0);
        for groups in [Some(8), None] {
            let model = ModelConfig::Vgg(VggConfig::small().with_dropout(0.0).with_group_norm_groups(groups))
                .init::<A>(&device);
            let first = |x: Tensor<A, 4>| model.forward_training(x, NormStatistics::Batch, None).narrow(0, 0, 1);
            let diff = max_abs_diff(first(faces.clone()), first(with_others.clone()));
            match groups {
                // GroupNorm: the first face's logits are the same whatever else is in the batch,
                // and training computes what inference does (no dropout here).
                Some(_) => {
                    assert!(diff < 1e-5, "GroupNorm: {diff}");
                    let inference = model.forward_inference(faces.clone());
                    let training = model.forward_training(faces.clone(), NormStatistics::Running, None);
                    assert!(max_abs_diff(inference, training) < 1e-5);
                }
                // BatchNorm with batch statistics: the other faces shift the first one's logits.
                None => assert!(diff > 1e-3, "BatchNorm: {diff}"),
            }
        }
    }

    #[test]
    fn group_counts_that_do_not_divide_a_layer_are_named() {
        let small = VggConfig::small(); // 16-16-M-32-32-M-M
        assert_eq!(small.with_group_norm_groups(Some(16)).check(), Ok(()));
        let err = small.with_group_norm_groups(Some(3)).check().expect_err("3 does not divide 16");
        assert!(err.contains("3 groups: convolution 1 of 4 has 16 channels"), "{err}");
        let err = small.with_group_norm_groups(Some(32)).check().expect_err("32 does not divide 16");
        assert!(err.contains("convolution 1 of 4 has 16 channels"), "{err}");
        let err =
            VggConfig::vgg19().scale_width(0.125).with_group_norm_groups(Some(16)).check().expect_err("8 channels");
        assert!(err.contains("convolution 1 of 16 has 8 channels"), "{err}");
        assert!(small.with_group_norm_groups(Some(0)).check().expect_err("0").contains("0 groups"));
    }

    #[test]
    fn configs_written_before_group_norm_read_as_batch_norm() {
        let mut json = serde_json::to_value(VggConfig::vgg19()).expect("serialises");
        assert_eq!(json["group_norm"], serde_json::Value::Null);
        json.as_object_mut().expect("an object").remove("group_norm");
        let read: VggConfig = serde_json::from_value(json).expect("reads without the field");
        assert_eq!(read, VggConfig::vgg19());
        let gn = VggConfig::vgg19().with_group_norm_groups(Some(32));
        let back: VggConfig = serde_json::from_str(&serde_json::to_string(&gn).expect("json")).expect("reads");
        assert_eq!(back.group_norm, Some(32));
    }
}
