//! Face detection and FER-framed crops on a real photo (scikit-image's public-domain astronaut
//! portrait, see `tests/fixtures/README.md`), on synthetic canvases with several pasted faces, and
//! on real FER2013 faces when `FER2013_CSV` is set.

use std::io::Cursor;
use std::path::PathBuf;

use fer_dataset::{Split, load};
use fer_features::{CropSpec, FaceBox, FaceDetector, Upsample, crop_face};
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

fn astronaut() -> DynamicImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/astronaut.png");
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// dlib's Python binding (`dlib.get_frontal_face_detector()(img, 0)`) on the same photo:
/// rectangle (179, 83)–(266, 170), inclusive.
const ASTRONAUT_FACE: FaceBox = FaceBox { left: 179, top: 83, width: 88, height: 88 };

#[test]
fn finds_the_astronauts_face_where_dlib_python_does() {
    let photo = astronaut();
    let detector = FaceDetector::new();
    let faces = detector.detect(&photo, Upsample::Auto);
    assert_eq!(faces, vec![ASTRONAUT_FACE], "512×512 photo: auto = no upsampling, same box as dlib's Python");

    // The same photo through a JPEG round trip (the other decoder users feed) finds the same face.
    let mut jpeg = Vec::new();
    photo.write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg).expect("encode JPEG");
    let decoded = image::load_from_memory(&jpeg).expect("decode JPEG");
    // JPEG noise lifts a weak false positive (the shoulder patch, score 0.12 in dlib's Python at
    // 2×) just over dlib's threshold: the face must be there, at most one extra box.
    let faces = detector.detect(&decoded, Upsample::Auto);
    assert!(faces.len() <= 2 && faces.iter().any(|f| f.iou(&ASTRONAUT_FACE) > 0.8), "{faces:?}");

    // Gray input works too.
    let faces = detector.detect(&DynamicImage::ImageLuma8(photo.to_luma8()), Upsample::Auto);
    assert!(faces.len() <= 2 && faces.iter().any(|f| f.iou(&ASTRONAUT_FACE) > 0.8), "{faces:?}");
}

#[test]
fn several_pasted_faces_are_found_at_their_places_and_scales() {
    let photo = astronaut().to_rgb8();
    // The face with a generous margin, so the detector sees a whole head.
    let (margin, side) = (40, 168);
    let head = image::imageops::crop_imm(&photo, 179 - margin, 83 - margin, side, side).to_image();
    let mut canvas = RgbImage::from_pixel(900, 420, image::Rgb([90, 110, 130]));
    // (x, y, pasted side): the face box scales with the paste.
    let pastes = [(20u32, 30u32, 168u32), (330, 150, 252), (640, 40, 200)];
    let mut expected = Vec::new();
    for &(x, y, s) in &pastes {
        let scaled = image::imageops::resize(&head, s, s, image::imageops::FilterType::Triangle);
        image::imageops::replace(&mut canvas, &scaled, x as i64, y as i64);
        let k = s as f32 / side as f32;
        expected.push(FaceBox {
            left: x as i32 + (margin as f32 * k).round() as i32,
            top: y as i32 + (margin as f32 * k).round() as i32,
            width: (88.0 * k).round() as u32,
            height: (88.0 * k).round() as u32,
        });
    }
    let faces = FaceDetector::new().detect(&DynamicImage::ImageRgb8(canvas.clone()), Upsample::Auto);
    assert_eq!(faces.len(), 3, "{faces:?}");
    for want in &expected {
        let best = faces.iter().map(|f| f.iou(want)).fold(0.0f32, f32::max);
        assert!(best > 0.6, "pasted face {want:?} not found (IoU {best:.2}) in {faces:?}");
    }

    // A small canvas (faces under dlib's 80 px window) needs the automatic upsampling.
    let small = image::imageops::resize(&canvas, 300, 140, image::imageops::FilterType::Triangle);
    let small = DynamicImage::ImageRgb8(small);
    let without = FaceDetector::new().detect(&small, Upsample::Times(0));
    let with = FaceDetector::new().detect(&small, Upsample::Times(1));
    assert!(with.len() > without.len(), "upsampling finds more: {with:?} vs {without:?}");
    for f in &with {
        assert!(
            f.left >= -5 && f.top >= -5 && f.left + (f.width as i32) <= 305,
            "box in small-canvas coordinates: {f:?}"
        );
    }
}

#[test]
fn the_crop_of_the_astronaut_is_a_48_by_48_face() {
    let photo = astronaut();
    let face = crop_face(&photo, &ASTRONAUT_FACE, &CropSpec::default());
    // Round trip: the crop is a face dlib finds again (2× upsampled), filling most of the frame.
    let gray = GrayImage::from_raw(48, 48, face.pixels().to_vec()).expect("48×48");
    let found = FaceDetector::new().detect(&DynamicImage::ImageLuma8(gray), Upsample::Auto);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].width >= 34, "{found:?}");
}

#[test]
fn fer2013_faces_are_found_and_the_default_crop_reproduces_their_framing() {
    let Some(path) = std::env::var_os("FER2013_CSV").filter(|v| !v.is_empty()) else {
        eprintln!("skipped: FER2013_CSV is not set");
        return;
    };
    let data = load(PathBuf::from(path)).expect("FER2013");
    let split = data.split(Split::Training);
    let detector = FaceDetector::new();
    let spec = CropSpec::default();
    let (mut found, mut errors, mut identity_errors) = (0, Vec::new(), Vec::new());
    let (mut scales, mut shifts) = (Vec::new(), Vec::new());
    let n = 300;
    for i in 0..n {
        let face = split.image(i);
        let gray = GrayImage::from_raw(48, 48, face.pixels().to_vec()).expect("48×48");
        let image = DynamicImage::ImageLuma8(gray);
        let boxes = detector.detect(&image, Upsample::Auto);
        if let Some(b) = boxes.first() {
            found += 1;
            // The framing that would give back the FER image exactly: the whole 48×48 image.
            scales.push(48.0 / b.width.max(b.height) as f32);
            shifts.push((b.center().1 - 24.0) / b.height as f32);
            let mean_abs = |crop: &fer_dataset::FaceImage| {
                let sum: u32 = crop.pixels().iter().zip(face.pixels()).map(|(&a, &b)| a.abs_diff(b) as u32).sum();
                sum as f32 / 2304.0
            };
            errors.push(mean_abs(&crop_face(&image, b, &spec)));
            identity_errors.push(mean_abs(&crop_face(&image, b, &CropSpec { scale: 1.0, shift_up: 0.0 })));
        }
    }
    let rate = found as f32 / n as f32;
    let median = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    let (m, m_box) = (median(&mut errors), median(&mut identity_errors));
    let (scale, shift) = (median(&mut scales), median(&mut shifts));
    eprintln!(
        "FER2013: {found}/{n} faces found; median |crop − face| {m:.2} (box alone {m_box:.2}) gray levels; \
         FER framing: median scale {scale:.3}, shift up {shift:.3}"
    );
    assert!((spec.scale - scale).abs() < 0.03, "default scale {} vs FER's {scale:.3}", spec.scale);
    assert!((spec.shift_up - shift).abs() < 0.03, "default shift {} vs FER's {shift:.3}", spec.shift_up);
    assert!(rate > 0.6, "dlib's Python binding finds ~70 % at 2×; found {rate:.3}");
    assert!(m < m_box, "the FER framing ({m:.2}) beats the bare box ({m_box:.2})");
}
