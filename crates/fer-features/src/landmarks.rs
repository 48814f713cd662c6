//! dlib's 68-point facial landmarks (the iBUG 300-W layout) on FER2013 faces.

use std::path::{Path, PathBuf};

#[cfg(feature = "dlib")]
use dlib_face_recognition::{ImageMatrix, LandmarkPredictor, LandmarkPredictorTrait, Rectangle};
#[cfg(feature = "dlib")]
use fer_dataset::{FACE_SIDE, FaceImage};

/// Where Debian's `libdlib-data` puts the 68-point model.
pub const DEFAULT_LANDMARK_MODEL: &str = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat";
/// Environment variable that overrides [`DEFAULT_LANDMARK_MODEL`].
pub const LANDMARK_MODEL_ENV: &str = "FER_LANDMARK_MODEL";
/// Points per face.
pub const LANDMARK_POINTS: usize = 68;
/// Values per face: `x0, y0, x1, y1, …`.
pub const LANDMARKS_LEN: usize = 2 * LANDMARK_POINTS;

/// Why the landmark model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LandmarkError {
    /// The model file is not there.
    #[error(
        "dlib landmark model {} not found: install Debian's libdlib-data (apt-get install libdlib-data) \
         or point --landmark-model / ${LANDMARK_MODEL_ENV} at shape_predictor_68_face_landmarks.dat",
        path.display()
    )]
    Missing {
        /// The path tried.
        path: PathBuf,
    },
    /// dlib could not deserialise the file.
    #[error("{} is not a dlib shape predictor (dlib: {message})", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// dlib's message.
        message: String,
    },
    /// The model predicts another number of points.
    #[error("{} predicts {points} points, not 68", path.display())]
    WrongPointCount {
        /// The file.
        path: PathBuf,
        /// Points it predicted.
        points: usize,
    },
    /// A gray image whose pixel count does not match its size.
    #[error("{pixels} pixels do not make a {width}×{height} image")]
    Shape {
        /// Pixels given.
        pixels: usize,
        /// Width asked for.
        width: usize,
        /// Height asked for.
        height: usize,
    },
}

/// The model path: `explicit`, else `$FER_LANDMARK_MODEL`, else [`DEFAULT_LANDMARK_MODEL`].
pub fn landmark_model_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(LANDMARK_MODEL_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LANDMARK_MODEL))
}

/// A loaded 68-point shape predictor. Prediction is read-only: share one across threads.
#[cfg(feature = "dlib")]
pub struct LandmarkModel {
    predictor: LandmarkPredictor,
    path: PathBuf,
}

#[cfg(feature = "dlib")]
impl std::fmt::Debug for LandmarkModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LandmarkModel").field("path", &self.path).finish()
    }
}

// SAFETY: dlib's `shape_predictor::operator()` is const and keeps no per-call state, so calls from
// several threads on one predictor are safe (dlib documents its objects as safe for concurrent
// const use); the Rust wrapper holds the C++ object by value and never hands out a mutable alias.
#[cfg(feature = "dlib")]
unsafe impl Sync for LandmarkModel {}
// SAFETY: the predictor owns its data (plain vectors and matrices); moving it between threads is fine.
#[cfg(feature = "dlib")]
unsafe impl Send for LandmarkModel {}

#[cfg(feature = "dlib")]
impl LandmarkModel {
    /// Loads the model at [`landmark_model_path`]`(explicit)` and checks it predicts 68 points.
    pub fn open(explicit: Option<&Path>) -> Result<LandmarkModel, LandmarkError> {
        let path = landmark_model_path(explicit);
        if !path.is_file() {
            return Err(LandmarkError::Missing { path });
        }
        let predictor =
            LandmarkPredictor::open(&path).map_err(|message| LandmarkError::Corrupt { path: path.clone(), message })?;
        let model = LandmarkModel { predictor, path };
        let points = model.predict(&[128; FACE_SIDE * FACE_SIDE], FACE_SIDE, FACE_SIDE, FER_FACE_BOX)?.len();
        if points != LANDMARK_POINTS {
            return Err(LandmarkError::WrongPointCount { path: model.path, points });
        }
        Ok(model)
    }

    /// The file the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Landmarks of a 48×48 FER2013 face in the reference's fixed box (1, 1)–(47, 47) (no
    /// detector: dlib's detector finds no face at 48×48), flattened `x0, y0, x1, y1, …`. Points
    /// may lie slightly outside the image; they are kept.
    pub fn face_landmarks(&self, face: &FaceImage) -> [f32; LANDMARKS_LEN] {
        let points =
            self.predict(face.pixels(), FACE_SIDE, FACE_SIDE, FER_FACE_BOX).expect("a 48×48 face has 2,304 pixels");
        let mut out = [0.0f32; LANDMARKS_LEN];
        for (pair, (x, y)) in out.chunks_exact_mut(2).zip(points) {
            pair[0] = x as f32;
            pair[1] = y as f32;
        }
        out
    }

    /// Landmarks of any gray image (row-major `pixels`) inside `face_box` `(left, top, right,
    /// bottom)`, as dlib's integer points.
    pub fn predict(
        &self,
        pixels: &[u8],
        width: usize,
        height: usize,
        face_box: (i64, i64, i64, i64),
    ) -> Result<Vec<(i64, i64)>, LandmarkError> {
        if pixels.len() != width * height {
            return Err(LandmarkError::Shape { pixels: pixels.len(), width, height });
        }
        // dlib's intensity of rgb_pixel(g, g, g) is g: the predictor sees the gray image exactly.
        let rgb: Vec<u8> = pixels.iter().flat_map(|&g| [g, g, g]).collect();
        // SAFETY: `rgb` holds exactly width × height × 3 bytes, read once during the call.
        let matrix = unsafe { ImageMatrix::new(width, height, rgb.as_ptr()) };
        let (left, top, right, bottom) = face_box;
        let rect = Rectangle { left: left as _, top: top as _, right: right as _, bottom: bottom as _ };
        let landmarks = self.predictor.face_landmarks(&matrix, &rect);
        // dlib's coordinates are C `long`s: i64 here, i32 on some targets.
        #[allow(clippy::useless_conversion)]
        Ok(landmarks.iter().map(|p| (i64::from(p.x()), i64::from(p.y()))).collect())
    }
}

/// The reference's face box on a 48×48 face: `dlib.rectangle(1, 1, 47, 47)`.
pub const FER_FACE_BOX: (i64, i64, i64, i64) = (1, 1, 47, 47);

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "dlib")]
    #[test]
    fn a_missing_model_names_the_path_and_the_package() {
        let err = LandmarkModel::open(Some(Path::new("/no/such/model.dat"))).expect_err("missing");
        let text = err.to_string();
        assert!(text.contains("/no/such/model.dat") && text.contains("libdlib-data"), "{text}");
    }

    #[cfg(feature = "dlib")]
    #[test]
    fn a_corrupt_model_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.dat");
        std::fs::write(&path, b"this is not a dlib model").expect("write");
        let err = LandmarkModel::open(Some(&path)).expect_err("corrupt");
        assert!(matches!(err, LandmarkError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("bad.dat"));
    }

    #[test]
    fn explicit_path_wins() {
        assert_eq!(landmark_model_path(Some(Path::new("/x.dat"))), PathBuf::from("/x.dat"));
    }
}
