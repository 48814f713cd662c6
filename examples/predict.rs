//! Predict pipeline: one photo → faces → expressions as JSON (and an annotated copy), with the
//! public fer-rs API only.
//!
//! With `--checkpoint` it uses a trained model (e.g. `runs/vgg19/best.fer`); with `--feature-run`
//! the CNN + landmarks + HOG model of a `fer train-features` run (each face's landmarks and HOG
//! computed from the whole 48×48 face). Without either it first trains a tiny model (vgg-small, 1 epoch on 500 FER2013 faces, under a minute on a CPU) so the
//! example runs end to end; such a model is weak, so expect low confidences.
//!
//! ```sh
//! cargo run --release --example predict -- --data ../shared/data/fer2013.csv.gz
//! cargo run --release --example predict -- --checkpoint runs/vgg19/best.fer --tencrop photo.jpg --annotate out.png
//! cargo run --release --example predict -- --feature-run runs/cnn-hog-b photo.jpg
//! ```

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use clap::Parser;
use fer_rs::dataset::View;
use fer_rs::features::LandmarkModel;
use fer_rs::models::{ModelConfig, PredictOptions, Predictor, annotate, label_font, load_image};
use fer_rs::train::{RunFiles, TrainConfig, TrainOptions, load_feature_run, train};

#[derive(Parser)]
struct Args {
    /// JPEG or PNG photo [default: the public-domain astronaut portrait in the test fixtures].
    image: Option<PathBuf>,
    /// Trained checkpoint; without it (or --feature-run) a tiny model is trained first (needs --data).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A `fer train-features` run directory: its CNN + landmarks + HOG model instead.
    #[arg(long, conflicts_with_all = ["checkpoint", "tencrop"])]
    feature_run: Option<PathBuf>,
    /// FER2013 CSV, .csv.gz or cache for the tiny model [default: $FER2013_CSV].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where the tiny model's run goes.
    #[arg(long, default_value = "runs/example-predict")]
    out: PathBuf,
    /// Average ten 44×44 crops per face.
    #[arg(long)]
    tencrop: bool,
    /// Also write the photo with boxes and labels to this PNG.
    #[arg(long)]
    annotate: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = Default::default();

    // 1. The predictor: dlib's face detector + a classifier, on the inference backend.
    let (predictor, checkpoint) = match &args.feature_run {
        Some(run) => {
            // The CNN + landmarks + HOG model reads whole faces and their features.
            let (model, config, weights) = load_feature_run::<Flex>(run, &device)?;
            let landmarks = LandmarkModel::open(None)?; // Debian's libdlib-data
            (Predictor::with_features(model, &config.model, config.feature_set, landmarks, &device)?, weights)
        }
        None => {
            // A checkpoint: the given one, or a tiny model trained now.
            let checkpoint = match args.checkpoint {
                Some(path) => path,
                None => {
                    let data = fer_rs::dataset::load(fer_rs::dataset::default_data_path(args.data.as_deref())?)?;
                    let mut config = TrainConfig::reference(ModelConfig::from_name("vgg-small")?);
                    config.epochs = 1;
                    config.batch_size = 16;
                    config.train_limit = Some(500);
                    config.eval_limit = Some(200);
                    config.eval_tencrop = false;
                    let files = RunFiles::new(&args.out);
                    let options = TrainOptions { resume: files.state().exists(), ..TrainOptions::default() };
                    train::<Autodiff<Flex>>(&config, &data, &args.out, &options, &device)?;
                    files.best()
                }
            };

            let options = PredictOptions {
                view: if args.tencrop { View::TenCrop(44) } else { View::CenterCrop(44) },
                ..PredictOptions::default()
            };
            let predictor = Predictor::<Flex>::from_checkpoint(&checkpoint, &device)?.with_options(options)?;
            (predictor, checkpoint)
        }
    };

    // 2. One photo → one JSON document with a box, 7 probabilities and the top expression per face.
    let image = args.image.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates/fer-features/tests/fixtures/astronaut.png")
    });
    let photo = load_image(&image)?;
    let faces = predictor.predict(&photo);
    #[derive(serde::Serialize)]
    struct Output<'a> {
        image: &'a std::path::Path,
        checkpoint: &'a std::path::Path,
        faces: &'a [fer_rs::models::FacePrediction],
    }
    let output = Output { image: &image, checkpoint: &checkpoint, faces: &faces };
    println!("{}", serde_json::to_string_pretty(&output)?);
    if faces.is_empty() {
        eprintln!("no face found in {}", image.display());
    }
    if let Some(out) = args.annotate {
        annotate(&photo, &faces, &label_font()?).save(&out)?;
        eprintln!("annotated: {}", out.display());
    }
    Ok(())
}
