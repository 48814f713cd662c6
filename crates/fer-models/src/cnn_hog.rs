//! The reference's CNN + landmarks + HOG classifier: an image branch and a feature branch, joined.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use fer_dataset::FACE_SIDE;
use fer_features::LANDMARKS_LEN;

use crate::conv::conv2d;
use crate::mode::{Mode, batch_norm, dropout};

/// Turns a feature vector as a feature cache holds it ([`fer_features::FaceFeatures`], or
/// [`fer_features::feature_vector`] for any face) into the feature input of a [`CnnHog`] model:
/// the landmarks (the first [`LANDMARKS_LEN`] values, pixel coordinates of the 48×48 face) are
/// divided by the face side, so they lie near [0, 1] like the HOG values after them. Training,
/// evaluation and prediction all go through this function.
pub fn scale_feature_row(row: &mut [f32]) {
    for v in row.iter_mut().take(LANDMARKS_LEN) {
        *v /= FACE_SIDE as f32;
    }
}

/// The feature input `[N, set.len()]` of a [`CnnHog`] model for 8-bit faces: each face's
/// [`fer_features::feature_vector`], scaled by [`scale_feature_row`], the values a feature cache
/// gives for the same face. What prediction and the attacks' scoring feed the model.
#[cfg(feature = "dlib")]
pub fn feature_input<B: Backend>(
    faces: &[fer_dataset::FaceImage],
    set: fer_features::FeatureSet,
    landmarks: &fer_features::LandmarkModel,
    device: &B::Device,
) -> Tensor<B, 2> {
    let mut rows = Vec::with_capacity(faces.len() * set.len());
    for face in faces {
        let start = rows.len();
        rows.extend(fer_features::feature_vector(face, landmarks, set));
        scale_feature_row(&mut rows[start..]);
    }
    Tensor::from_data(TensorData::new(rows, [faces.len(), set.len()]), device)
}

/// One convolution of the image branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvSpec {
    /// Output channels.
    pub width: usize,
    /// Square kernel side ("same" padding, stride 1).
    pub kernel: usize,
    /// Follow with max-pool 3×3 stride 2, "same" padding (side → ⌈side / 2⌉).
    pub pool: bool,
}

/// Architecture of a [`CnnHog`] model.
#[derive(Config, Debug, PartialEq)]
pub struct CnnHogConfig {
    /// Image-branch convolutions, each conv → ReLU → BatchNorm (→ max-pool).
    pub convs: Vec<ConvSpec>,
    /// Image-branch fully connected widths (ReLU after each; dropout before all but the last).
    pub image_fc: Vec<usize>,
    /// Feature-branch fully connected widths (ReLU after each).
    pub feature_fc: Vec<usize>,
    /// Length of the feature vector (2,728 landmarks + sliding HOG, 208, or 136).
    pub feature_len: usize,
    /// Side of the square gray input (48: the full FER2013 face).
    #[config(default = 48)]
    pub image_side: usize,
    /// Output classes.
    #[config(default = 7)]
    pub num_classes: usize,
    /// Dropout probability (the reference's `1 − keep_prob`: 1 − 0.956).
    #[config(default = 0.044)]
    pub dropout: f64,
}

impl CnnHogConfig {
    /// The reference's model B: 3 × [conv 3×3 64/128/256 → ReLU → BN → max-pool 3/2] → 6×6×256 →
    /// dropout → FC 4096 → dropout → FC 1024 → FC 128; features → FC 1024 → FC 128; concat → FC 7.
    pub fn model_b(feature_len: usize) -> CnnHogConfig {
        let conv = |width| ConvSpec { width, kernel: 3, pool: true };
        CnnHogConfig::new(vec![conv(64), conv(128), conv(256)], vec![4096, 1024, 128], vec![1024, 128], feature_len)
    }

    /// The reference's model A: conv 5×5 64 (pool), conv 5×5 64 (pool), conv 4×4 128 → FC 1024 →
    /// FC 40; features → FC 1024 → FC 40; concat → FC 7.
    pub fn model_a(feature_len: usize) -> CnnHogConfig {
        let convs = vec![
            ConvSpec { width: 64, kernel: 5, pool: true },
            ConvSpec { width: 64, kernel: 5, pool: true },
            ConvSpec { width: 128, kernel: 4, pool: false },
        ];
        CnnHogConfig::new(convs, vec![1024, 40], vec![1024, 40], feature_len)
    }

    /// A CPU-sized variant for tests and demos.
    pub fn tiny(feature_len: usize) -> CnnHogConfig {
        let conv = |width| ConvSpec { width, kernel: 3, pool: true };
        CnnHogConfig::new(vec![conv(8), conv(16), conv(16)], vec![32, 16], vec![32, 16], feature_len)
    }

    /// Side of the image branch's last feature map.
    pub fn final_side(&self) -> usize {
        self.convs.iter().fold(self.image_side, |side, c| if c.pool { side.div_ceil(2) } else { side })
    }

    /// Checks the config; returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.convs.is_empty() || self.image_fc.is_empty() || self.feature_fc.is_empty() {
            return Err("the CNN+features model needs convolutions and FC layers in both branches".into());
        }
        if self.convs.iter().any(|c| c.width == 0 || c.kernel == 0)
            || self.image_fc.contains(&0)
            || self.feature_fc.contains(&0)
            || self.feature_len == 0
            || self.image_side == 0
        {
            return Err("widths, kernels, feature length and image side must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// Builds the model. Panics when [`CnnHogConfig::check`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CnnHog<B> {
        if let Err(e) = self.check() {
            panic!("invalid CnnHogConfig: {e}");
        }
        let mut channels = 1;
        let convs = self
            .convs
            .iter()
            .map(|spec| {
                let block = ConvBlock {
                    conv: Conv2dConfig::new([channels, spec.width], [spec.kernel, spec.kernel])
                        .with_padding(PaddingConfig2d::Same)
                        .init(device),
                    norm: BatchNormConfig::new(spec.width).init(device),
                    // TensorFlow's "same" max-pool 3/2 on an even side pads one row/column after.
                    pool: spec.pool.then(|| {
                        MaxPool2dConfig::new([3, 3])
                            .with_strides([2, 2])
                            .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
                            .init()
                    }),
                };
                channels = spec.width;
                block
            })
            .collect();
        let flat = channels * self.final_side() * self.final_side();
        let chain = |input: usize, widths: &[usize]| -> Vec<Linear<B>> {
            let mut from = input;
            widths
                .iter()
                .map(|&w| {
                    let layer = LinearConfig::new(from, w).init(device);
                    from = w;
                    layer
                })
                .collect()
        };
        let joined = self.image_fc.last().copied().unwrap_or(0) + self.feature_fc.last().copied().unwrap_or(0);
        CnnHog {
            convs,
            image_fc: chain(flat, &self.image_fc),
            feature_fc: chain(self.feature_len, &self.feature_fc),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(joined, self.num_classes).init(device),
        }
    }
}

/// Conv → ReLU → BatchNorm (→ max-pool).
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    conv: Conv2d<B>,
    norm: BatchNorm<B>,
    pool: Option<MaxPool2d>,
}

/// Image + feature-vector classifier (see [`CnnHogConfig`]).
#[derive(Module, Debug)]
pub struct CnnHog<B: Backend> {
    convs: Vec<ConvBlock<B>>,
    image_fc: Vec<Linear<B>>,
    feature_fc: Vec<Linear<B>>,
    dropout: Dropout,
    classifier: Linear<B>,
}

impl<B: Backend> CnnHog<B> {
    /// Logits `[N, classes]` for faces `[N, 1, S, S]` and feature vectors `[N, feature_len]`;
    /// BatchNorm and dropout as Burn picks them (training behaviour on autodiff backends).
    pub fn forward(&self, images: Tensor<B, 4>, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_in(images, features, Mode::BURN)
    }

    /// Length of the feature vectors the model takes (the input width of its feature branch).
    pub fn feature_len(&self) -> usize {
        self.feature_fc.first().map_or(0, |layer| layer.weight.lazy_shape().dims::<2>()[0])
    }

    /// Logits with inference behaviour on every backend (running statistics, no dropout).
    pub fn forward_inference(&self, images: Tensor<B, 4>, features: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_in(images, features, Mode::Inference)
    }

    /// Logits in inference mode of faces `[N, 1, 48, 48]` in `[0, 1]`, with the `set` features
    /// computed from the faces themselves: the whole pipeline of [`fer_features::feature_vector`]
    /// and [`CnnHog::forward_inference`] as one function of the pixels, for attacks.
    ///
    /// Differentiable in `images` through the image branch and the HOG ([`crate::face_hog_tensor`],
    /// binned as the nearest 8-bit face). The landmarks are dlib's (`landmarks`) on the nearest
    /// 8-bit faces, held constant: its regression trees compare pixel intensities, so they are
    /// piecewise constant in the pixels and their gradient is 0 almost everywhere. On 8-bit faces
    /// the features equal `feature_vector`'s up to f32 rounding (the HOG is summed in another
    /// order). Panics when the model does not take `set`'s feature length (check
    /// [`CnnHog::feature_len`] first).
    #[cfg(feature = "dlib")]
    pub fn logits_from_pixels(
        &self,
        images: Tensor<B, 4>,
        set: fer_features::FeatureSet,
        landmarks: &fer_features::LandmarkModel,
    ) -> Tensor<B, 2> {
        assert_eq!(
            self.feature_len(),
            set.len(),
            "the model takes {} features, the {} set has {}",
            self.feature_len(),
            set.name(),
            set.len()
        );
        let faces = crate::nearest_faces(&images);
        let device = images.device();
        let mut points = Vec::with_capacity(faces.len() * LANDMARKS_LEN);
        for face in &faces {
            let mut row = landmarks.face_landmarks(face).to_vec();
            scale_feature_row(&mut row);
            points.extend(row);
        }
        let shape = [faces.len(), LANDMARKS_LEN];
        let points = Tensor::from_data(TensorData::new(points, shape), (&device, images.dtype()));
        let features = match set {
            fer_features::FeatureSet::Landmarks => points,
            _ => Tensor::cat(vec![points, crate::face_hog_tensor(images.clone(), &faces, set)], 1),
        };
        self.forward_inference(images, features)
    }

    fn forward_in(&self, images: Tensor<B, 4>, features: Tensor<B, 2>, mode: Mode) -> Tensor<B, 2> {
        let mut x = images;
        for block in &self.convs {
            x = batch_norm(&block.norm, relu(conv2d(&block.conv, x)), mode);
            if let Some(pool) = &block.pool {
                x = pool.forward(x);
            }
        }
        let mut x = x.flatten::<2>(1, 3);
        let last = self.image_fc.len() - 1;
        for (i, layer) in self.image_fc.iter().enumerate() {
            if i < last {
                x = dropout(&self.dropout, x, mode, i as u64);
            }
            x = relu(layer.forward(x));
        }
        let mut f = features;
        for layer in &self.feature_fc {
            f = relu(layer.forward(f));
        }
        self.classifier.forward(Tensor::cat(vec![x, f], 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray;

    #[test]
    fn shapes_for_every_feature_set() {
        let device = Default::default();
        for len in [2728, 208, 136] {
            for config in [CnnHogConfig::tiny(len), CnnHogConfig::model_a(len)] {
                let model = config.init::<B>(&device);
                let out = model.forward(Tensor::zeros([2, 1, 48, 48], &device), Tensor::zeros([2, len], &device));
                assert_eq!(out.dims(), [2, 7]);
                assert_eq!(model.feature_len(), len);
            }
        }
        assert_eq!(CnnHogConfig::model_b(2728).final_side(), 6, "48 → 24 → 12 → 6");
        assert_eq!(CnnHogConfig::model_a(2728).final_side(), 12);
    }

    /// `logits_from_pixels` is the pipeline `fer predict` runs on a face (exact features from
    /// `feature_vector`, scaled, then `forward_inference`), up to the f32 rounding of its HOG, for
    /// every feature set.
    #[cfg(feature = "dlib")]
    #[test]
    fn logits_from_pixels_are_those_of_the_exact_features() {
        use fer_features::{FeatureSet, LandmarkModel, feature_vector};
        let path = fer_features::landmark_model_path(None);
        if !path.is_file() {
            eprintln!("skipped: {} not found (apt-get install libdlib-data)", path.display());
            return;
        }
        let landmarks = LandmarkModel::open(None).expect("the Debian model loads");
        let device = Default::default();
        let faces: Vec<fer_dataset::FaceImage> = (0..3)
            .map(|i| {
                let pixels: Vec<u8> =
                    (0..48 * 48).map(|p| ((p % 48) * (3 + i) + p / 48 * 2 + (p * 7919 % 23)) as u8).collect();
                fer_dataset::FaceImage::from_slice(&pixels).expect("48×48")
            })
            .collect();
        let pixels: Vec<f32> = faces.iter().flat_map(|f| f.pixels().iter().map(|&p| f32::from(p) / 255.0)).collect();
        let images = Tensor::<B, 4>::from_data(TensorData::new(pixels, [3, 1, 48, 48]), &device);
        for set in [FeatureSet::LandmarksSlidingHog, FeatureSet::LandmarksWholeHog, FeatureSet::Landmarks] {
            let model = CnnHogConfig::tiny(set.len()).init::<B>(&device);
            let mut rows = Vec::new();
            for face in &faces {
                let mut row = feature_vector(face, &landmarks, set);
                scale_feature_row(&mut row);
                rows.extend(row);
            }
            let exact = model.forward_inference(
                images.clone(),
                Tensor::<B, 2>::from_data(TensorData::new(rows, [3, set.len()]), &device),
            );
            let exact: Vec<f32> = exact.into_data().convert::<f32>().to_vec().expect("f32");
            let from_pixels: Vec<f32> = model
                .logits_from_pixels(images.clone(), set, &landmarks)
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32");
            let worst = exact.iter().zip(&from_pixels).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{set:?}: max |difference| of the logits {worst}");
            assert_ne!(exact[..7], exact[7..14], "other faces, other logits");
        }
    }

    #[test]
    fn model_b_parameter_count() {
        // By hand: convs 640 + 73,856 + 295,168; BN 2 × 448; image FC 9,216·4,096+4,096,
        // 4,096·1,024+1,024, 1,024·128+128; feature FC 2,728·1,024+1,024, 1,024·128+128; 256·7+7.
        let expected = 640 + 73_856 + 295_168 + 896 + 37_752_832 + 4_195_328 + 131_200 + 2_794_496 + 131_200 + 1_799;
        let model = CnnHogConfig::model_b(2728).init::<B>(&Default::default());
        // Burn also counts BatchNorm running mean and variance (2 × 448).
        assert_eq!(model.num_params(), expected + 896);
    }

    #[test]
    fn bad_configs_are_named() {
        assert!(CnnHogConfig { feature_len: 0, ..CnnHogConfig::tiny(1) }.check().is_err());
        assert!(
            CnnHogConfig { dropout: 1.0, ..CnnHogConfig::tiny(8) }.check().expect_err("dropout").contains("dropout")
        );
        assert!(CnnHogConfig { convs: vec![], ..CnnHogConfig::tiny(8) }.check().is_err());
    }
}
