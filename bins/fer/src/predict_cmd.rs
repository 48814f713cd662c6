//! `fer predict`: the expressions of the faces in photos.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fer_dataset::{Emotion, View};
use fer_features::{CropSpec, Upsample};
use fer_models::{FacePrediction, PredictOptions, Predictor, annotate, label_font, load_image};

use crate::backend::{DeviceSpec, with_backend};
use crate::checkpoint_arg::{CheckpointArg, resolve};

/// `fer predict` flags.
#[derive(clap::Args)]
pub struct PredictArgs {
    /// Checkpoint file (`best.fer` of a run; its model config travels with it) or the run directory
    /// (its `best.fer`), or the CNN + landmarks + HOG model of a `fer train-features` run: its
    /// directory (`best.bin`) or a weights file of it (`best.bin`, `latest.bin`; the run's
    /// config.json beside it).
    #[arg(long)]
    checkpoint: PathBuf,
    /// JPEG or PNG photos.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// One JSON object per image on stdout (JSON lines).
    #[arg(long)]
    json: bool,
    /// Write each photo with boxes and labels drawn to this folder (`NAME.annotated.png`).
    #[arg(long)]
    annotate: Option<PathBuf>,
    /// Average the logits of ten 44×44 crops of each face (the reference's evaluation).
    #[arg(long)]
    tencrop: bool,
    /// Doublings before detection: auto (small images until 96 px) or 0..=4.
    #[arg(long, default_value = "auto")]
    upsample: Upsample,
    /// Classify each whole image as one face (for images that already are face crops).
    #[arg(long)]
    no_detect: bool,
    /// Face crop side over detected box side.
    #[arg(long, default_value_t = CropSpec::default().scale)]
    crop_scale: f32,
    /// Upward shift of the crop centre, in box heights.
    #[arg(long, default_value_t = CropSpec::default().shift_up)]
    crop_shift: f32,
    /// Device: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// dlib 68-point model, for the CNN + landmarks + HOG model's features [default:
    /// $FER_LANDMARK_MODEL, else /usr/share/dlib/shape_predictor_68_face_landmarks.dat]
    #[arg(long)]
    landmark_model: Option<PathBuf>,
}

/// The predictor for `--checkpoint`: a `.fer` checkpoint's model, or a feature run's CNN +
/// landmarks + HOG model with dlib's landmarks.
fn load_predictor<B: burn::prelude::Backend>(
    args: &PredictArgs,
    options: PredictOptions,
    device: &B::Device,
) -> Result<Predictor<B>> {
    let run = match resolve(&args.checkpoint)? {
        CheckpointArg::Classifier(path) => {
            return Ok(Predictor::<B>::from_checkpoint(&path, device)?.with_options(options)?);
        }
        CheckpointArg::FeatureRun(run) => run,
    };
    #[cfg(feature = "dlib")]
    {
        if args.tencrop {
            bail!(
                "--tencrop: the CNN + landmarks + HOG model of {} reads the whole 48×48 face; TenCrop is for \
                 VGG/ResNet checkpoints (.fer)",
                args.checkpoint.display()
            );
        }
        let (model, config, _) = fer_train::load_feature_run::<B>(&run, device)?;
        let landmarks = fer_features::LandmarkModel::open(args.landmark_model.as_deref())?;
        let predictor = Predictor::with_features(model, &config.model, config.feature_set, landmarks, device)?;
        Ok(predictor.with_options(PredictOptions { view: View::Full, ..options })?)
    }
    #[cfg(not(feature = "dlib"))]
    bail!(crate::checkpoint_arg::needs_dlib(&run))
}

/// Runs `fer predict`. Unreadable images are reported and skipped; the exit status is an error
/// when any was, after the others are done.
pub fn run(args: PredictArgs) -> Result<()> {
    let options = PredictOptions {
        upsample: args.upsample,
        crop: CropSpec { scale: args.crop_scale, shift_up: args.crop_shift },
        view: if args.tencrop { View::TenCrop(44) } else { View::CenterCrop(44) },
        detect: !args.no_detect,
    };
    let font = match &args.annotate {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            Some(label_font()?)
        }
        None => None,
    };
    let failed = with_backend!(args.device, |B, device| {
        let predictor = load_predictor::<B>(&args, options, &device)?;
        let mut written = HashSet::new();
        let mut failed = 0usize;
        let mut stdout = std::io::stdout().lock();
        for path in &args.images {
            let photo = match load_image(path) {
                Ok(photo) => photo,
                Err(e) => {
                    failed += 1;
                    if args.json {
                        let line = serde_json::json!({"image": path, "error": e.to_string()});
                        writeln!(stdout, "{line}")?;
                    }
                    eprintln!("error: {e}");
                    continue;
                }
            };
            let faces = predictor.predict(&photo);
            if args.json {
                let line = ImageLine { image: path, width: photo.width(), height: photo.height(), faces: &faces };
                writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
            } else {
                write!(stdout, "{}", describe(path, &faces, &options))?;
            }
            if let (Some(dir), Some(font)) = (&args.annotate, &font) {
                let out = annotated_path(dir, path, &mut written);
                annotate(&photo, &faces, font).save(&out).with_context(|| format!("cannot write {}", out.display()))?;
                if !args.json {
                    writeln!(stdout, "  annotated: {}", out.display())?;
                }
            }
        }
        failed
    });
    if failed > 0 {
        bail!("{failed} of {} images could not be read (see above); the others were processed", args.images.len());
    }
    Ok(())
}

/// One `--json` line: the photo, its size and its faces (fields in this order).
#[derive(serde::Serialize)]
struct ImageLine<'a> {
    image: &'a Path,
    width: u32,
    height: u32,
    faces: &'a [FacePrediction],
}

/// The text report of one photo.
fn describe(path: &Path, faces: &[FacePrediction], options: &PredictOptions) -> String {
    if faces.is_empty() {
        return format!(
            "{}: no face found (dlib frontal face detector, upsample {}; try --upsample 1 or 2, or --no-detect for face crops)\n",
            path.display(),
            options.upsample
        );
    }
    let mut text = format!("{}: {} face{}\n", path.display(), faces.len(), if faces.len() == 1 { "" } else { "s" });
    for (i, f) in faces.iter().enumerate() {
        let mut others: Vec<(Emotion, f32)> =
            Emotion::ALL.iter().copied().zip(f.probabilities).filter(|&(e, _)| e != f.emotion).collect();
        others.sort_by(|a, b| b.1.total_cmp(&a.1));
        let runners: Vec<String> =
            others.iter().take(2).map(|(e, p)| format!("{} {:.1} %", e.name(), 100.0 * p)).collect();
        text.push_str(&format!(
            "  face {} at ({}, {}) {}×{}: {} {:.1} % ({})\n",
            i + 1,
            f.face.left,
            f.face.top,
            f.face.width,
            f.face.height,
            f.emotion.name(),
            100.0 * f.confidence,
            runners.join(", ")
        ));
    }
    text
}

/// `DIR/STEM.annotated.png`, with `-2`, `-3`, … when two inputs share a stem.
fn annotated_path(dir: &Path, image: &Path, written: &mut HashSet<PathBuf>) -> PathBuf {
    let stem = image.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let mut out = dir.join(format!("{stem}.annotated.png"));
    let mut n = 2;
    while !written.insert(out.clone()) {
        out = dir.join(format!("{stem}-{n}.annotated.png"));
        n += 1;
    }
    out
}
