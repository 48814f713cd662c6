//! HOG parity with scikit-image: the fixture (made by `fixtures/make_hog_fixture.py` with
//! scikit-image from PyPI) holds its output for synthetic 48×48 images.

use fer_dataset::FaceImage;
use fer_features::{sliding_hog, whole_hog};

#[derive(serde::Deserialize)]
struct Fixture {
    scikit_image: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    pixels: Vec<u8>,
    sliding: Vec<f64>,
    whole: Vec<f64>,
}

#[test]
fn sliding_and_whole_hog_equal_scikit_image() {
    let text = include_str!("fixtures/hog_fixture.json");
    let fixture: Fixture = serde_json::from_str(text).expect("fixture parses");
    assert!(fixture.cases.len() >= 10, "fixture has its images");
    let (mut worst, mut identical, mut values) = (0.0f64, 0usize, 0usize);
    for case in &fixture.cases {
        let face = FaceImage::from_slice(&case.pixels).expect("48×48");
        for (kind, ours, theirs) in
            [("sliding", sliding_hog(&face), &case.sliding), ("whole", whole_hog(&face), &case.whole)]
        {
            assert_eq!(ours.len(), theirs.len(), "{} {kind}: length", case.name);
            for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
                let diff = (a - b).abs();
                assert!(diff <= 1e-6, "{} {kind}[{i}]: {a} vs scikit-image {b}", case.name);
                worst = worst.max(diff);
                identical += usize::from(a.to_bits() == b.to_bits());
                values += 1;
            }
        }
    }
    eprintln!(
        "HOG vs scikit-image {}: {identical}/{values} values bit-identical, max |diff| {worst:e}",
        fixture.scikit_image
    );
}
