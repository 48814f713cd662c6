//! dlib landmarks on a synthetic face-like image (needs Debian's libdlib-data, which the README's
//! commands install; skipped with a notice when the model file is absent).

use fer_dataset::FaceImage;
use fer_features::{DEFAULT_LANDMARK_MODEL, LANDMARKS_LEN, LandmarkModel, landmark_model_path};

/// A cartoon face: a bright oval on a dark background, dark eyes, brows, nose and mouth.
fn cartoon_face() -> FaceImage {
    let mut face = FaceImage::filled(30);
    for y in 0..48usize {
        for x in 0..48usize {
            let (fx, fy) = (x as f64 - 23.5, y as f64 - 24.0);
            let mut v = if (fx / 17.0).powi(2) + (fy / 21.0).powi(2) < 1.0 { 190.0 } else { 30.0 };
            let dark = |cx: f64, cy: f64, rx: f64, ry: f64| ((fx - cx) / rx).powi(2) + ((fy - cy) / ry).powi(2) < 1.0;
            if dark(-7.0, -5.0, 3.5, 2.0) || dark(7.0, -5.0, 3.5, 2.0) {
                v = 40.0; // eyes
            }
            if dark(-7.0, -10.0, 5.0, 1.0) || dark(7.0, -10.0, 5.0, 1.0) {
                v = 70.0; // brows
            }
            if dark(0.0, 3.0, 1.5, 4.0) {
                v = 140.0; // nose
            }
            if dark(0.0, 11.0, 7.0, 2.0) {
                v = 60.0; // mouth
            }
            face.0[y * 48 + x] = v as u8;
        }
    }
    face
}

#[test]
fn sixty_eight_finite_points_in_a_sane_box_every_time() {
    let path = landmark_model_path(None);
    if !path.is_file() {
        eprintln!("skipped: {} not found (apt-get install libdlib-data)", path.display());
        return;
    }
    assert_eq!(DEFAULT_LANDMARK_MODEL, "/usr/share/dlib/shape_predictor_68_face_landmarks.dat");
    let model = LandmarkModel::open(None).expect("the Debian model loads");
    let face = cartoon_face();
    let points = model.face_landmarks(&face);
    assert_eq!(points.len(), LANDMARKS_LEN);
    assert!(points.iter().all(|v| v.is_finite()));
    // Points may fall slightly outside the 48×48 face (kept, as the reference keeps them).
    assert!(points.iter().all(|&v| (-12.0..=60.0).contains(&v)), "{points:?}");
    let (xs, ys): (Vec<f32>, Vec<f32>) = points.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
    let spread = |v: &[f32]| v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread(&xs) > 15.0 && spread(&ys) > 15.0, "the points spread over the face: {points:?}");
    // iBUG layout: the jaw (0–16) runs left to right; the mouth (48–67) lies below the eyes (36–47).
    assert!(xs[0] < xs[16], "jaw runs left to right");
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    assert!(mean(&ys[48..68]) > mean(&ys[36..48]), "mouth below eyes");
    assert_eq!(model.face_landmarks(&face), points, "deterministic");
}

/// `feature_vector` of one face gives, for every feature set, the values a feature cache holds
/// for the same face (what `fer predict` feeds a model trained on a cache).
#[test]
fn one_face_vector_equals_the_cache_rows() {
    use fer_dataset::{Emotion, Fer2013, Split, SplitData};
    use fer_features::{FaceFeatures, FeatureSet, feature_vector};
    let path = landmark_model_path(None);
    if !path.is_file() {
        eprintln!("skipped: {} not found (apt-get install libdlib-data)", path.display());
        return;
    }
    let model = LandmarkModel::open(None).expect("the Debian model loads");
    let mut shifted = cartoon_face();
    shifted.0.rotate_left(3 * 48 + 2);
    let mut private = SplitData::new();
    private.push(Emotion::Happy, cartoon_face());
    private.push(Emotion::Sad, shifted.clone());
    let data = Fer2013::from_splits(SplitData::new(), SplitData::new(), private);
    let cache = FaceFeatures::compute(&data, &model, |_| {});
    for set in [FeatureSet::LandmarksSlidingHog, FeatureSet::LandmarksWholeHog, FeatureSet::Landmarks] {
        for (index, face) in [cartoon_face(), shifted.clone()].iter().enumerate() {
            let mut row = Vec::new();
            cache.extend_vector(Split::PrivateTest, index, set, &mut row);
            let vector = feature_vector(face, &model, set);
            assert_eq!(vector.len(), set.len());
            assert_eq!(vector, row, "{set:?}, face {index}");
        }
    }
    let (a, b) = (
        feature_vector(&cartoon_face(), &model, FeatureSet::LandmarksSlidingHog),
        feature_vector(&shifted, &model, FeatureSet::LandmarksSlidingHog),
    );
    assert_ne!(a, b, "a moved face has other features");
}
