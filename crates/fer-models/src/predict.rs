//! Expressions of the faces in any photo: dlib finds the faces, each is cut out as a FER2013-framed
//! 48×48 gray face and classified by a trained model; [`annotate`] draws the result.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use fer_models::{Predictor, load_image};
//!
//! let predictor = Predictor::<Flex>::from_checkpoint("runs/vgg19/best.fer", &Default::default())?;
//! let photo = load_image("photo.jpg")?;
//! for face in predictor.predict(&photo) {
//!     println!("{:?}: {} ({:.0} %)", face.face, face.emotion.name(), 100.0 * face.confidence);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use ab_glyph::{FontVec, PxScale};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use fer_dataset::{Emotion, FACE_SIDE, FaceImage, View};
use fer_features::{CropSpec, FaceBox, Upsample, crop_face};
#[cfg(feature = "dlib")]
use fer_features::{FaceDetector, FeatureSet, LandmarkModel};
use image::{DynamicImage, Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use serde::ser::{SerializeMap, SerializeStruct};

#[cfg(feature = "dlib")]
use crate::{CnnHog, CnnHogConfig};
use crate::{Model, ModelError, average_crops, load_checkpoint};

/// Where a text font is looked for (Debian's `fonts-dejavu-core`, which the README's commands
/// install), for [`label_font`] and fer-train's plots.
pub const FONT_PATHS: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"];

/// Faces classified per forward pass.
const BATCH_FACES: usize = 64;

/// Why a prediction could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// The image file could not be read or decoded.
    #[error("cannot read image {}: {source}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// The checkpoint could not be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No text font was found for the labels.
    #[error("no text font found at {} (install Debian's fonts-dejavu-core)", FONT_PATHS.join(" or "))]
    Font,
    /// An option is out of range.
    #[error("bad predict option: {0}")]
    Option(String),
}

/// How [`Predictor::predict`] finds and reads faces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictOptions {
    /// Upsampling before detection (small images need it; see [`Upsample`]).
    pub upsample: Upsample,
    /// How a detected box becomes a 48×48 face.
    pub crop: CropSpec,
    /// The network input taken from each 48×48 face: the centred 44×44 crop by default,
    /// `View::TenCrop(44)` averages the logits of ten crops as the reference's evaluation does.
    pub view: View,
    /// `false`: skip detection and classify the whole image as one face (for images that already
    /// are face crops, such as FER2013's). Detection is dlib's: without fer-models' `dlib` feature
    /// the default is `false`, and `true` is refused by [`PredictOptions::check`].
    pub detect: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            upsample: Upsample::Auto,
            crop: CropSpec::default(),
            view: View::CenterCrop(44),
            detect: cfg!(feature = "dlib"),
        }
    }
}

impl PredictOptions {
    /// Checks the view (a deterministic crop of side 1..=48), the crop, and that detection, when
    /// asked for, was built in (the `dlib` feature).
    pub fn check(&self) -> Result<(), PredictError> {
        if self.detect && !cfg!(feature = "dlib") {
            return Err(PredictError::Option(
                "face detection needs dlib, and this build has no `dlib` feature (fer-models/dlib): \
                 classify face crops without detection (detect: false, `fer predict --no-detect`)"
                    .into(),
            ));
        }
        self.view.check().map_err(PredictError::Option)?;
        if self.view.is_random() {
            return Err(PredictError::Option(format!("view {:?} is random; predict needs a fixed view", self.view)));
        }
        if !(self.crop.scale > 0.0 && self.crop.scale.is_finite() && self.crop.shift_up.is_finite()) {
            return Err(PredictError::Option(format!("crop {:?} needs a positive, finite scale", self.crop)));
        }
        Ok(())
    }
}

/// One face of a photo and its expression.
#[derive(Debug, Clone, PartialEq)]
pub struct FacePrediction {
    /// Where the face is, in the photo's pixels.
    pub face: FaceBox,
    /// The most probable expression.
    pub emotion: Emotion,
    /// Its probability.
    pub confidence: f32,
    /// Probability of each expression, in [`Emotion::ALL`] order (sums to 1).
    pub probabilities: [f32; Emotion::COUNT],
}

impl FacePrediction {
    fn new(face: FaceBox, probabilities: [f32; Emotion::COUNT]) -> FacePrediction {
        let (best, &confidence) =
            probabilities.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).expect("seven classes");
        let emotion = Emotion::from_index(best).expect("index below seven");
        FacePrediction { face, emotion, confidence, probabilities }
    }
}

/// JSON: `{"box": {"left", "top", "width", "height"}, "emotion": "happy", "confidence": 0.87,
/// "probabilities": {"angry": …, …, "neutral": …}}` (classes in dataset order).
impl serde::Serialize for FacePrediction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Probabilities<'a>(&'a [f32; Emotion::COUNT]);
        impl serde::Serialize for Probabilities<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(Emotion::COUNT))?;
                for (emotion, p) in Emotion::ALL.iter().zip(self.0) {
                    map.serialize_entry(emotion.name(), p)?;
                }
                map.end()
            }
        }
        let mut s = serializer.serialize_struct("FacePrediction", 4)?;
        s.serialize_field("box", &self.face)?;
        s.serialize_field("emotion", self.emotion.name())?;
        s.serialize_field("confidence", &self.confidence)?;
        s.serialize_field("probabilities", &Probabilities(&self.probabilities))?;
        s.end()
    }
}

/// Reads a JPEG or PNG photo (the format is guessed from the bytes, not the file name).
pub fn load_image(path: impl AsRef<Path>) -> Result<DynamicImage, PredictError> {
    let path = path.as_ref();
    let error = |source| PredictError::Image { path: path.to_path_buf(), source };
    image::ImageReader::open(path)
        .map_err(|e| error(image::ImageError::IoError(e)))?
        .with_guessed_format()
        .map_err(|e| error(image::ImageError::IoError(e)))?
        .decode()
        .map_err(error)
}

/// What classifies the faces of a [`Predictor`].
#[derive(Debug)]
enum Network<B: Backend> {
    /// A [`Model`] (VGG, ResNet, …): the face's pixels alone, through the options' view.
    Images(Box<Model<B>>),
    /// The CNN + landmarks + HOG model: the whole 48×48 face and its feature vector, computed
    /// from the face as a feature cache holds it ([`fer_features::feature_vector`]).
    #[cfg(feature = "dlib")]
    WithFeatures { model: Box<CnnHog<B>>, set: FeatureSet, landmarks: LandmarkModel },
}

/// A face detector and a trained classifier: the expressions of the faces in any photo.
#[derive(Debug)]
pub struct Predictor<B: Backend> {
    network: Network<B>,
    device: B::Device,
    #[cfg(feature = "dlib")]
    detector: FaceDetector,
    options: PredictOptions,
}

impl<B: Backend> Predictor<B> {
    /// Wraps a model (in inference use: pass a non-autodiff backend, or `model.valid()`).
    pub fn new(model: Model<B>, device: &B::Device) -> Predictor<B> {
        Predictor {
            network: Network::Images(Box::new(model)),
            device: device.clone(),
            #[cfg(feature = "dlib")]
            detector: FaceDetector::new(),
            options: PredictOptions::default(),
        }
    }

    /// Loads a fer-rs checkpoint (`.fer`: the model config travels with the weights).
    pub fn from_checkpoint(path: impl AsRef<Path>, device: &B::Device) -> Result<Predictor<B>, PredictError> {
        let (model, _) = load_checkpoint::<B>(path, device)?;
        Ok(Predictor::new(model, device))
    }

    /// Wraps a CNN + landmarks + HOG model (built from `config`, trained on `set` features; a
    /// `fer train-features` run's weights load with fer-train's `load_feature_run`). Each face is
    /// read whole (48×48, [`View::Full`], the model's input) and its features come from
    /// `landmarks` and the HOG code that filled the training cache, so a FER2013 face gets the
    /// answer `fer eval-features` gives it.
    ///
    /// ```no_run
    /// use burn::backend::Flex;
    /// use fer_models::{CnnHogConfig, Predictor, load_image};
    /// use fer_models::fer_features::{FeatureSet, LandmarkModel};
    ///
    /// let device = Default::default();
    /// let config = CnnHogConfig::model_b(FeatureSet::LandmarksSlidingHog.len());
    /// let model = config.init::<Flex>(&device); // or trained weights: fer_train::load_feature_run
    /// let landmarks = LandmarkModel::open(None)?; // Debian's libdlib-data
    /// let predictor =
    ///     Predictor::with_features(model, &config, FeatureSet::LandmarksSlidingHog, landmarks, &device)?;
    /// let faces = predictor.predict(&load_image("photo.jpg")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "dlib")]
    pub fn with_features(
        model: CnnHog<B>,
        config: &CnnHogConfig,
        set: FeatureSet,
        landmarks: LandmarkModel,
        device: &B::Device,
    ) -> Result<Predictor<B>, PredictError> {
        if config.image_side != FACE_SIDE {
            return Err(PredictError::Option(format!(
                "the CNN + landmarks + HOG model reads {0}×{0} images; predict cuts {FACE_SIDE}×{FACE_SIDE} faces",
                config.image_side
            )));
        }
        if model.feature_len() != set.len() || config.feature_len != set.len() {
            return Err(PredictError::Option(format!(
                "the model reads {} features, the `{}` set has {}",
                model.feature_len(),
                set.name(),
                set.len()
            )));
        }
        let options = PredictOptions { view: View::Full, ..PredictOptions::default() };
        Ok(Predictor {
            network: Network::WithFeatures { model: Box::new(model), set, landmarks },
            device: device.clone(),
            detector: FaceDetector::new(),
            options,
        })
    }

    /// Sets the options, after checking them. The CNN + landmarks + HOG model takes
    /// [`View::Full`] only (it reads the whole face).
    pub fn with_options(mut self, options: PredictOptions) -> Result<Predictor<B>, PredictError> {
        options.check()?;
        #[cfg(feature = "dlib")]
        if matches!(self.network, Network::WithFeatures { .. }) && options.view != View::Full {
            return Err(PredictError::Option(format!(
                "the CNN + landmarks + HOG model reads the whole {FACE_SIDE}×{FACE_SIDE} face (View::Full), not \
                 {:?}: crops and TenCrop are for VGG/ResNet checkpoints",
                options.view
            )));
        }
        self.options = options;
        Ok(self)
    }

    /// The options in use.
    pub fn options(&self) -> &PredictOptions {
        &self.options
    }

    /// The faces of `image` (in reading order) and their expressions; empty when no face is found.
    pub fn predict(&self, image: &DynamicImage) -> Vec<FacePrediction> {
        let boxes =
            if self.options.detect { self.detect(image) } else { vec![FaceBox::whole(image.width(), image.height())] };
        let crop = if self.options.detect { self.options.crop } else { CropSpec { scale: 1.0, shift_up: 0.0 } };
        let faces: Vec<FaceImage> = boxes.iter().map(|b| crop_face(image, b, &crop)).collect();
        boxes.into_iter().zip(self.classify(&faces)).map(|(b, p)| FacePrediction::new(b, p)).collect()
    }

    #[cfg(feature = "dlib")]
    fn detect(&self, image: &DynamicImage) -> Vec<FaceBox> {
        self.detector.detect(image, self.options.upsample)
    }

    #[cfg(not(feature = "dlib"))]
    fn detect(&self, _image: &DynamicImage) -> Vec<FaceBox> {
        unreachable!("PredictOptions::check refuses detection without the dlib feature, and it is off by default")
    }

    /// Class probabilities of 48×48 faces, read through the options' view.
    pub fn classify(&self, faces: &[FaceImage]) -> Vec<[f32; Emotion::COUNT]> {
        let view = self.options.view;
        let (side, crops) = (view.side(), view.crops_per_face());
        // The view is fixed (checked), so the generator is never drawn from.
        let windows = view.windows(&mut ChaCha8Rng::seed_from_u64(0));
        let mut out = Vec::with_capacity(faces.len());
        for chunk in faces.chunks(BATCH_FACES) {
            let mut pixels = vec![0.0f32; chunk.len() * crops * side * side];
            for (face, slots) in chunk.iter().zip(pixels.chunks_exact_mut(crops * side * side)) {
                for (window, slot) in windows.iter().zip(slots.chunks_exact_mut(side * side)) {
                    window.write_scaled(face, slot);
                }
            }
            let images =
                Tensor::<B, 4>::from_data(TensorData::new(pixels, [chunk.len() * crops, 1, side, side]), &self.device);
            let logits = match &self.network {
                Network::Images(model) => average_crops(model.forward_inference(images), crops),
                #[cfg(feature = "dlib")]
                Network::WithFeatures { model, set, landmarks } => {
                    model.forward_inference(images, crate::feature_input(chunk, *set, landmarks, &self.device))
                }
            };
            let probabilities = softmax(logits, 1).into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
            out.extend(probabilities.chunks_exact(Emotion::COUNT).map(|p| {
                let mut row = [0.0f32; Emotion::COUNT];
                row.copy_from_slice(p);
                row
            }));
        }
        out
    }
}

/// The first of [`FONT_PATHS`] that exists, read.
pub fn font_bytes() -> Result<Vec<u8>, PredictError> {
    FONT_PATHS.iter().find_map(|p| std::fs::read(p).ok()).ok_or(PredictError::Font)
}

/// The font [`annotate`] writes labels with (see [`FONT_PATHS`]).
pub fn label_font() -> Result<FontVec, PredictError> {
    FontVec::try_from_vec(font_bytes()?).map_err(|_| PredictError::Font)
}

/// A colour per expression for boxes and labels.
pub fn emotion_color(emotion: Emotion) -> Rgb<u8> {
    Rgb(match emotion {
        Emotion::Angry => [220, 40, 40],
        Emotion::Disgust => [120, 160, 30],
        Emotion::Fear => [150, 60, 200],
        Emotion::Happy => [250, 190, 20],
        Emotion::Sad => [40, 110, 230],
        Emotion::Surprise => [250, 120, 20],
        Emotion::Neutral => [200, 200, 200],
    })
}

/// `image` with a box per face in its expression's colour and a label such as `happy 87%`.
pub fn annotate(image: &DynamicImage, predictions: &[FacePrediction], font: &FontVec) -> RgbImage {
    let mut canvas = image.to_rgb8();
    let (width, height) = canvas.dimensions();
    let thickness = (width.min(height) / 200).max(2) as i32;
    for p in predictions {
        let color = emotion_color(p.emotion);
        let b = p.face;
        for t in 0..thickness {
            let (w, h) = (b.width as i32 + 2 * t, b.height as i32 + 2 * t);
            if w > 0 && h > 0 {
                draw_hollow_rect_mut(&mut canvas, Rect::at(b.left - t, b.top - t).of_size(w as u32, h as u32), color);
            }
        }
        let label = format!("{} {:.0}%", p.emotion.name(), 100.0 * p.confidence);
        let scale = PxScale::from((b.width as f32 / 5.0).clamp(12.0, 48.0));
        let (tw, th) = text_size(scale, font, &label);
        let pad = 2;
        let label_h = th as i32 + 2 * pad;
        // Above the box when there is room, else inside its top edge.
        let top = if b.top - thickness - label_h >= 0 { b.top - thickness - label_h } else { b.top };
        let left = (b.left - thickness).max(0);
        draw_filled_rect_mut(&mut canvas, Rect::at(left, top).of_size(tw + 2 * pad as u32, label_h as u32), color);
        draw_text_mut(&mut canvas, Rgb([0, 0, 0]), left + pad, top + pad, scale, font, &label);
    }
    canvas
}

/// The face crop fed to the network, as an image (for inspection).
pub fn face_image(face: &FaceImage) -> image::GrayImage {
    image::GrayImage::from_raw(FACE_SIDE as u32, FACE_SIDE as u32, face.pixels().to_vec()).expect("48×48 pixels")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelConfig;
    use burn::backend::NdArray;

    type B = NdArray;

    fn predictor() -> Predictor<B> {
        let device = Default::default();
        Predictor::new(ModelConfig::from_name("vgg-small").expect("known").init::<B>(&device), &device)
    }

    #[test]
    fn probabilities_sum_to_one_and_tencrop_averages_logits() {
        let predictor = predictor();
        let faces: Vec<FaceImage> =
            (0..3).map(|i| FaceImage::from_slice(&[(40 + 60 * i) as u8; 48 * 48]).expect("48×48")).collect();
        let centre = predictor.classify(&faces);
        assert_eq!(centre.len(), 3);
        for p in &centre {
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
        }
        // TenCrop = softmax of the mean of the ten crops' logits, computed here by hand.
        let predictor = predictor.with_options(PredictOptions { view: View::TenCrop(44), ..Default::default() });
        let predictor = predictor.expect("valid");
        let ten = predictor.classify(&faces[..1]);
        let device = Default::default();
        let mut pixels = vec![0.0f32; 10 * 44 * 44];
        for (w, slot) in fer_dataset::CropWindow::ten(44).iter().zip(pixels.chunks_exact_mut(44 * 44)) {
            w.write_scaled(&faces[0], slot);
        }
        #[allow(clippy::infallible_destructuring_match)] // refutable with the `dlib` feature
        let model = match &predictor.network {
            Network::Images(model) => model,
            #[cfg(feature = "dlib")]
            Network::WithFeatures { .. } => panic!("an image model"),
        };
        let logits =
            model.forward_inference(Tensor::<B, 4>::from_data(TensorData::new(pixels, [10, 1, 44, 44]), &device));
        let mean = logits.mean_dim(0);
        let by_hand: Vec<f32> = softmax(mean, 1).into_data().into_vec().expect("f32");
        for (a, b) in ten[0].iter().zip(&by_hand) {
            assert!((a - b).abs() < 1e-5, "{ten:?} vs {by_hand:?}");
        }
    }

    /// The CNN + landmarks + HOG model reads the whole face and the face's feature vector (landmarks
    /// in face widths): its probabilities are the softmax of `forward_inference` on both, computed
    /// here by hand; crops, models of another feature length and other image sides are refused.
    #[cfg(feature = "dlib")]
    #[test]
    fn the_feature_model_reads_whole_faces_and_their_features() {
        let path = fer_features::landmark_model_path(None);
        if !path.is_file() {
            eprintln!("skipped: {} not found (apt-get install libdlib-data)", path.display());
            return;
        }
        let open = || LandmarkModel::open(None).expect("the Debian model loads");
        let device = Default::default();
        let set = FeatureSet::LandmarksWholeHog;
        let config = CnnHogConfig::tiny(set.len());
        let model = config.init::<B>(&device);
        let _ = model.num_params(); // materialises the lazy parameters: a clone then has the same weights
        let predictor = Predictor::with_features(model.clone(), &config, set, open(), &device).expect("valid");
        assert_eq!(predictor.options().view, View::Full);
        let faces: Vec<FaceImage> = (0..3)
            .map(|i| {
                let pixels: Vec<u8> = (0..48 * 48).map(|p| ((p % 48) * (3 + i) + p / 48 * 2) as u8).collect();
                FaceImage::from_slice(&pixels).expect("48×48")
            })
            .collect();
        let probabilities = predictor.classify(&faces);
        let landmarks = open();
        let mut pixels = vec![0.0f32; 3 * 48 * 48];
        let mut rows = Vec::new();
        for (face, slot) in faces.iter().zip(pixels.chunks_exact_mut(48 * 48)) {
            fer_dataset::CropWindow { top: 0, left: 0, size: 48, mirrored: false }.write_scaled(face, slot);
            let mut row = fer_features::feature_vector(face, &landmarks, set);
            crate::scale_feature_row(&mut row);
            rows.extend(row);
        }
        let logits = model.forward_inference(
            Tensor::<B, 4>::from_data(TensorData::new(pixels, [3, 1, 48, 48]), &device),
            Tensor::<B, 2>::from_data(TensorData::new(rows, [3, set.len()]), &device),
        );
        let by_hand: Vec<f32> = softmax(logits, 1).into_data().into_vec().expect("f32");
        assert_eq!(probabilities.concat(), by_hand);
        assert_ne!(probabilities[0], probabilities[1], "other faces, other answers");

        let crop = predictor.with_options(PredictOptions { view: View::CenterCrop(44), ..Default::default() });
        assert!(crop.expect_err("a crop").to_string().contains("whole 48×48 face"));
        let other = FeatureSet::Landmarks;
        let err = Predictor::with_features(model.clone(), &config, other, open(), &device).expect_err("136 ≠ 208");
        assert!(err.to_string().contains("reads 208 features, the `landmarks` set has 136"), "{err}");
        let small = CnnHogConfig { image_side: 44, ..config.clone() };
        let err = Predictor::with_features(small.init::<B>(&device), &small, set, open(), &device).expect_err("44");
        assert!(err.to_string().contains("reads 44×44 images"), "{err}");
    }

    #[test]
    fn whole_image_mode_classifies_one_face_per_image() {
        let predictor =
            predictor().with_options(PredictOptions { detect: false, ..Default::default() }).expect("valid");
        let image = DynamicImage::new_luma8(48, 48);
        let faces = predictor.predict(&image);
        assert_eq!(faces.len(), 1);
        assert_eq!(faces[0].face, FaceBox::whole(48, 48));
        assert_eq!(faces[0].probabilities[faces[0].emotion.index()], faces[0].confidence);
        // A flat image has no face to detect.
        #[cfg(feature = "dlib")]
        assert!(self::predictor().predict(&image).is_empty());
    }

    #[cfg(not(feature = "dlib"))]
    #[test]
    fn detection_without_dlib_is_refused_and_off_by_default() {
        assert!(!PredictOptions::default().detect);
        let e = predictor().with_options(PredictOptions { detect: true, ..Default::default() });
        let e = e.expect_err("no dlib").to_string();
        assert!(e.contains("dlib") && e.contains("--no-detect"), "{e}");
        // The default predictor classifies the whole image.
        assert_eq!(predictor().predict(&DynamicImage::new_luma8(60, 50))[0].face, FaceBox::whole(60, 50));
    }

    #[test]
    fn json_shape() {
        let p = FacePrediction::new(
            FaceBox { left: -3, top: 5, width: 80, height: 81 },
            [0.05, 0.0, 0.05, 0.7, 0.1, 0.05, 0.05],
        );
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["box"], serde_json::json!({"left": -3, "top": 5, "width": 80, "height": 81}));
        assert_eq!(json["emotion"], "happy");
        assert!((json["confidence"].as_f64().expect("number") - 0.7).abs() < 1e-6);
        let names: Vec<&str> = json["probabilities"].as_object().expect("map").keys().map(String::as_str).collect();
        assert_eq!(names.len(), 7);
        for e in Emotion::ALL {
            assert!(names.contains(&e.name()), "{names:?}");
        }
    }

    #[test]
    fn bad_options_and_unreadable_files_are_named() {
        let e = predictor().with_options(PredictOptions { view: View::RandomCropFlip(44), ..Default::default() });
        assert!(e.expect_err("random").to_string().contains("random"));
        let e = predictor().with_options(PredictOptions { view: View::CenterCrop(50), ..Default::default() });
        assert!(e.expect_err("too big").to_string().contains("50"));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not-an-image.png");
        std::fs::write(&path, b"hello").expect("write");
        let e = load_image(&path).expect_err("not an image").to_string();
        assert!(e.contains("not-an-image.png"), "{e}");
        let e = load_image(dir.path().join("missing.jpg")).expect_err("missing").to_string();
        assert!(e.contains("missing.jpg"), "{e}");
    }

    #[test]
    fn annotation_draws_the_box_in_the_emotion_colour() {
        let Ok(font) = label_font() else {
            eprintln!("skipped: no font at {}", FONT_PATHS.join(" or "));
            return;
        };
        let image = DynamicImage::new_rgb8(200, 160);
        let p = FacePrediction::new(FaceBox { left: 60, top: 50, width: 80, height: 80 }, [0., 0., 0., 1., 0., 0., 0.]);
        let out = annotate(&image, &[p], &font);
        assert_eq!(out.dimensions(), (200, 160));
        let happy = emotion_color(Emotion::Happy);
        assert_eq!(*out.get_pixel(60, 100), happy, "left edge");
        assert_eq!(*out.get_pixel(139, 100), happy, "right edge");
        assert_eq!(*out.get_pixel(100, 100), Rgb([0, 0, 0]), "inside untouched");
        // The label sits above the box: some of its pixels are the label colour.
        let label_pixels =
            (0..200).flat_map(|x| (0..48).map(move |y| (x, y))).filter(|&(x, y)| *out.get_pixel(x, y) == happy);
        assert!(label_pixels.count() > 50);
    }
}
