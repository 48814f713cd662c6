//! Feature vectors of every face (landmarks + HOG), computed in parallel and cached on disk.

use std::io::Read;
use std::path::{Path, PathBuf};
#[cfg(feature = "dlib")]
use std::sync::atomic::{AtomicUsize, Ordering};

use fer_dataset::{Fer2013, Split};
#[cfg(feature = "dlib")]
use rayon::prelude::*;

use crate::{LANDMARKS_LEN, SLIDING_HOG_LEN, WHOLE_HOG_LEN};
#[cfg(feature = "dlib")]
use crate::{LandmarkModel, face_hogs, sliding_hog, whole_hog};

/// Values stored per face: landmarks (136), sliding HOG (2,592), whole-image HOG (72).
pub const FEATURES_PER_FACE: usize = LANDMARKS_LEN + SLIDING_HOG_LEN + WHOLE_HOG_LEN;

/// Which features feed the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureSet {
    /// Landmarks + sliding-window HOG: 2,728 values (the reference's best).
    #[default]
    LandmarksSlidingHog,
    /// Landmarks + whole-image HOG: 208 values.
    LandmarksWholeHog,
    /// Landmarks only: 136 values.
    Landmarks,
}

impl FeatureSet {
    /// Values per face.
    pub fn len(self) -> usize {
        match self {
            FeatureSet::LandmarksSlidingHog => LANDMARKS_LEN + SLIDING_HOG_LEN,
            FeatureSet::LandmarksWholeHog => LANDMARKS_LEN + WHOLE_HOG_LEN,
            FeatureSet::Landmarks => LANDMARKS_LEN,
        }
    }

    /// Always false: every set holds the landmarks.
    pub fn is_empty(self) -> bool {
        false
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            FeatureSet::LandmarksSlidingHog => "landmarks-sliding-hog",
            FeatureSet::LandmarksWholeHog => "landmarks-whole-hog",
            FeatureSet::Landmarks => "landmarks",
        }
    }
}

impl std::str::FromStr for FeatureSet {
    type Err = String;
    fn from_str(s: &str) -> Result<FeatureSet, String> {
        [FeatureSet::LandmarksSlidingHog, FeatureSet::LandmarksWholeHog, FeatureSet::Landmarks]
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown feature set `{s}` (expected landmarks-sliding-hog, landmarks-whole-hog or landmarks)")
            })
    }
}

/// Landmarks and both HOGs of every face of every split, as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceFeatures {
    splits: [Vec<f32>; 3],
    /// CRC-32 of the faces the features were computed from (see [`images_fingerprint`]).
    pub fingerprint: u32,
}

/// CRC-32 over every label and pixel of `data`, split by split: ties a feature cache to its data.
pub fn images_fingerprint(data: &Fer2013) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for split in Split::ALL {
        let faces = data.split(split);
        for (label, image) in faces.labels().iter().zip(faces.images()) {
            crc.update(&[label.index() as u8]);
            crc.update(image.pixels());
        }
    }
    crc.finalize()
}

impl FaceFeatures {
    /// Computes the features of every face on all cores (rayon). `progress` is called with the
    /// number of faces done so far, from the worker threads.
    #[cfg(feature = "dlib")]
    pub fn compute(data: &Fer2013, model: &LandmarkModel, progress: impl Fn(usize) + Sync) -> FaceFeatures {
        let done = AtomicUsize::new(0);
        let splits = Split::ALL.map(|split| {
            let faces = data.split(split).images();
            let mut values = vec![0.0f32; faces.len() * FEATURES_PER_FACE];
            values.par_chunks_mut(FEATURES_PER_FACE).zip(faces.par_iter()).for_each(|(out, face)| {
                write_face_features(face, model, out);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(256) {
                    progress(n);
                }
            });
            values
        });
        progress(done.load(Ordering::Relaxed));
        FaceFeatures { splits, fingerprint: images_fingerprint(data) }
    }

    /// Faces of `split`.
    pub fn faces(&self, split: Split) -> usize {
        self.splits[split_index(split)].len() / FEATURES_PER_FACE
    }

    /// Every stored value of face `index` of `split` (landmarks, sliding HOG, whole HOG).
    pub fn all(&self, split: Split, index: usize) -> &[f32] {
        &self.splits[split_index(split)][index * FEATURES_PER_FACE..(index + 1) * FEATURES_PER_FACE]
    }

    /// Appends the `set` features of face `index` of `split` to `out`.
    pub fn extend_vector(&self, split: Split, index: usize, set: FeatureSet, out: &mut Vec<f32>) {
        extend_with_set(self.all(split, index), set, out);
    }

    /// Checks that these features were computed from `data` (same faces, same order).
    pub fn check_matches(&self, data: &Fer2013, path: &Path) -> Result<(), FeatureCacheError> {
        for split in Split::ALL {
            if self.faces(split) != data.split(split).len() {
                return Err(FeatureCacheError::OtherData {
                    path: path.to_path_buf(),
                    problem: format!(
                        "{} faces of {split}, the data has {}",
                        self.faces(split),
                        data.split(split).len()
                    ),
                });
            }
        }
        if self.fingerprint != images_fingerprint(data) {
            return Err(FeatureCacheError::OtherData {
                path: path.to_path_buf(),
                problem: "computed from other faces (fingerprint differs)".into(),
            });
        }
        Ok(())
    }
}

/// Appends the `set` part of one face's stored values (`all`: landmarks, sliding HOG, whole HOG).
fn extend_with_set(all: &[f32], set: FeatureSet, out: &mut Vec<f32>) {
    out.extend_from_slice(&all[..LANDMARKS_LEN]);
    match set {
        FeatureSet::LandmarksSlidingHog => out.extend_from_slice(&all[LANDMARKS_LEN..LANDMARKS_LEN + SLIDING_HOG_LEN]),
        FeatureSet::LandmarksWholeHog => out.extend_from_slice(&all[LANDMARKS_LEN + SLIDING_HOG_LEN..]),
        FeatureSet::Landmarks => {}
    }
}

/// Writes the values [`FaceFeatures`] stores for one 48×48 face into `out` ([`FEATURES_PER_FACE`]
/// long): landmarks, sliding HOG, whole-image HOG.
#[cfg(feature = "dlib")]
fn write_face_features(face: &fer_dataset::FaceImage, model: &LandmarkModel, out: &mut [f32]) {
    let (landmarks, rest) = out.split_at_mut(LANDMARKS_LEN);
    let (sliding, whole) = rest.split_at_mut(SLIDING_HOG_LEN);
    landmarks.copy_from_slice(&model.face_landmarks(face));
    let (sliding_values, whole_values) = face_hogs(face);
    for (o, v) in sliding.iter_mut().zip(sliding_values) {
        *o = v as f32;
    }
    for (o, v) in whole.iter_mut().zip(whole_values) {
        *o = v as f32;
    }
}

/// The `set` feature vector of any 48×48 face ([`FeatureSet::len`] values): the same values, in
/// the same order, as [`FaceFeatures::extend_vector`] gives for a face of a feature cache, so a
/// model trained on a cache can classify faces from elsewhere (photos, `fer predict`).
///
/// ```no_run
/// use fer_features::{FeatureSet, LandmarkModel, feature_vector};
/// use fer_features::fer_dataset::FaceImage;
///
/// let model = LandmarkModel::open(None)?; // Debian's libdlib-data
/// let face = FaceImage::filled(128);
/// assert_eq!(feature_vector(&face, &model, FeatureSet::LandmarksSlidingHog).len(), 2728);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "dlib")]
pub fn feature_vector(face: &fer_dataset::FaceImage, model: &LandmarkModel, set: FeatureSet) -> Vec<f32> {
    let mut all = vec![0.0f32; FEATURES_PER_FACE];
    write_face_features(face, model, &mut all);
    let mut out = Vec::with_capacity(set.len());
    extend_with_set(&all, set, &mut out);
    out
}

/// Single-thread seconds per part of [`FaceFeatures::compute`] over some faces (for benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureTimings {
    /// Faces processed.
    pub faces: usize,
    /// Seconds in dlib's landmark predictor.
    pub landmarks_seconds: f64,
    /// Seconds in the sliding-window HOG.
    pub sliding_hog_seconds: f64,
    /// Seconds in the whole-image HOG.
    pub whole_hog_seconds: f64,
    /// Seconds in both HOGs computed together ([`face_hogs`], the face's gradients once), as
    /// [`FaceFeatures::compute`] does.
    pub hogs_seconds: f64,
}

impl FeatureTimings {
    /// Faces per second of the whole feature vector as [`FaceFeatures::compute`] makes it:
    /// landmarks + both HOGs together.
    pub fn faces_per_second(&self) -> f64 {
        self.faces as f64 / (self.landmarks_seconds + self.hogs_seconds).max(1e-12)
    }
}

/// Times each part of the features of `faces` on the calling thread, part by part.
#[cfg(feature = "dlib")]
pub fn time_features(faces: &[fer_dataset::FaceImage], model: &LandmarkModel) -> FeatureTimings {
    let time = |f: &dyn Fn(&fer_dataset::FaceImage) -> f32| {
        let started = std::time::Instant::now();
        let checksum: f32 = faces.iter().map(f).sum();
        std::hint::black_box(checksum);
        started.elapsed().as_secs_f64()
    };
    FeatureTimings {
        faces: faces.len(),
        landmarks_seconds: time(&|face| model.face_landmarks(face)[0]),
        sliding_hog_seconds: time(&|face| sliding_hog(face)[0] as f32),
        whole_hog_seconds: time(&|face| whole_hog(face)[0] as f32),
        hogs_seconds: time(&|face| {
            let (sliding, whole) = face_hogs(face);
            (sliding[0] + whole[0]) as f32
        }),
    }
}

fn split_index(split: Split) -> usize {
    Split::ALL.iter().position(|&s| s == split).expect("ALL holds every split")
}

/// Magic bytes of a feature cache.
pub const FEATURE_CACHE_MAGIC: &[u8; 8] = b"FERFEATS";
/// Format version of a feature cache; bumped when the layout or a feature's definition changes.
pub const FEATURE_CACHE_VERSION: u32 = 1;

/// Why a feature cache cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FeatureCacheError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a feature cache, another version, truncated or corrupt.
    #[error("{}: {problem}; recompute it with `fer features`", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A valid cache of other data.
    #[error("{}: the feature cache does not belong to this data set: {problem}; recompute it with `fer features`", path.display())]
    OtherData {
        /// The file.
        path: PathBuf,
        /// What differs.
        problem: String,
    },
}

/// Writes `features` to `path` atomically: magic, version, fingerprint, face counts, f32 values
/// (little-endian), CRC-32 of everything after the magic.
pub fn write_feature_cache(features: &FaceFeatures, path: &Path) -> Result<(), FeatureCacheError> {
    let total: usize = features.splits.iter().map(Vec::len).sum();
    let mut bytes = Vec::with_capacity(40 + 4 * total);
    bytes.extend_from_slice(FEATURE_CACHE_MAGIC);
    bytes.extend_from_slice(&FEATURE_CACHE_VERSION.to_le_bytes());
    bytes.extend_from_slice(&features.fingerprint.to_le_bytes());
    for split in &features.splits {
        bytes.extend_from_slice(&((split.len() / FEATURES_PER_FACE) as u64).to_le_bytes());
    }
    for split in &features.splits {
        for v in split {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&bytes[FEATURE_CACHE_MAGIC.len()..]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    fer_dataset::write_atomically(path, &bytes)
        .map_err(|source| FeatureCacheError::Io { path: path.to_path_buf(), source })
}

/// Reads a cache written by [`write_feature_cache`], refusing any other, stale or damaged file.
pub fn read_feature_cache(path: &Path) -> Result<FaceFeatures, FeatureCacheError> {
    let invalid = |problem: String| FeatureCacheError::Invalid { path: path.to_path_buf(), problem };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| FeatureCacheError::Io { path: path.to_path_buf(), source })?;
    let header = FEATURE_CACHE_MAGIC.len() + 4 + 4 + 3 * 8;
    if bytes.len() < FEATURE_CACHE_MAGIC.len() || &bytes[..FEATURE_CACHE_MAGIC.len()] != FEATURE_CACHE_MAGIC {
        return Err(invalid("not a fer-rs feature cache (wrong magic)".into()));
    }
    if bytes.len() < header + 4 {
        return Err(invalid(format!("truncated: {} bytes", bytes.len())));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != FEATURE_CACHE_VERSION {
        return Err(invalid(format!(
            "format version {version}, this build reads {FEATURE_CACHE_VERSION} (stale cache)"
        )));
    }
    let fingerprint = u32_at(12);
    let counts: Vec<usize> = (0..3)
        .map(|i| u64::from_le_bytes(bytes[16 + 8 * i..24 + 8 * i].try_into().expect("8 bytes")) as usize)
        .collect();
    let values: usize = counts.iter().sum::<usize>() * FEATURES_PER_FACE;
    if bytes.len() != header + 4 * values + 4 {
        return Err(invalid(format!(
            "{} bytes, the header's {} faces need {}",
            bytes.len(),
            counts.iter().sum::<usize>(),
            header + 4 * values + 4
        )));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(&body[FEATURE_CACHE_MAGIC.len()..]) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        return Err(invalid("checksum mismatch (corrupt file)".into()));
    }
    let mut at = header;
    let splits = [0, 1, 2].map(|i| {
        let n = counts[i] * FEATURES_PER_FACE;
        let split: Vec<f32> =
            body[at..at + 4 * n].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        at += 4 * n;
        split
    });
    Ok(FaceFeatures { splits, fingerprint })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(faces: [usize; 3]) -> FaceFeatures {
        let splits = faces.map(|n| (0..n * FEATURES_PER_FACE).map(|i| i as f32 * 0.5).collect());
        FaceFeatures { splits, fingerprint: 77 }
    }

    #[test]
    fn set_lengths_and_names() {
        assert_eq!(FeatureSet::LandmarksSlidingHog.len(), 2728);
        assert_eq!(FeatureSet::LandmarksWholeHog.len(), 208);
        assert_eq!(FeatureSet::Landmarks.len(), 136);
        for set in [FeatureSet::LandmarksSlidingHog, FeatureSet::LandmarksWholeHog, FeatureSet::Landmarks] {
            assert_eq!(set.name().parse::<FeatureSet>(), Ok(set));
        }
        assert!("hog".parse::<FeatureSet>().is_err());
    }

    #[test]
    fn vectors_take_the_right_slices() {
        let f = features([2, 1, 1]);
        for set in [FeatureSet::LandmarksSlidingHog, FeatureSet::LandmarksWholeHog, FeatureSet::Landmarks] {
            let mut v = Vec::new();
            f.extend_vector(Split::Training, 1, set, &mut v);
            assert_eq!(v.len(), set.len());
            assert_eq!(v[0], (FEATURES_PER_FACE as f32) * 0.5, "face 1 starts after face 0");
        }
        let mut v = Vec::new();
        f.extend_vector(Split::Training, 0, FeatureSet::LandmarksWholeHog, &mut v);
        assert_eq!(v[136], (136 + 2592) as f32 * 0.5, "whole HOG follows the sliding HOG in storage");
    }

    #[test]
    fn cache_round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.cache");
        let f = features([3, 1, 2]);
        write_feature_cache(&f, &path).expect("write");
        assert_eq!(read_feature_cache(&path).expect("read"), f);

        let mut bytes = std::fs::read(&path).expect("bytes");
        let last = bytes.len() - 10;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(read_feature_cache(&path).expect_err("corrupt").to_string().contains("checksum"));
        std::fs::write(&path, &bytes[..100]).expect("write");
        assert!(read_feature_cache(&path).expect_err("short").to_string().contains("bytes"));
        std::fs::write(&path, b"FERCACHE and more bytes than a header holds......").expect("write");
        assert!(read_feature_cache(&path).expect_err("magic").to_string().contains("wrong magic"));
        write_feature_cache(&f, &path).expect("write");
        let mut stale = std::fs::read(&path).expect("bytes");
        stale[8] = 9;
        std::fs::write(&path, &stale).expect("write");
        assert!(read_feature_cache(&path).expect_err("version").to_string().contains("stale"));
        let missing = read_feature_cache(&dir.path().join("none.cache")).expect_err("missing");
        assert!(missing.to_string().contains("none.cache"));
    }
}
