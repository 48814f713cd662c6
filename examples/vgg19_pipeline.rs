//! VGG pipeline: train → TenCrop evaluation → report, with the public fer-rs API only.
//!
//! Tiny by default (vgg-small, 1 epoch on 500 training faces, 200 test faces; about a minute on a
//! CPU); the flags give the full run:
//!
//! ```sh
//! cargo run --release --example vgg19_pipeline -- --data ../shared/data/fer2013.csv.gz
//! cargo run --release --example vgg19_pipeline -- --data fer2013.cache --model vgg19 --epochs 250 --train-limit 0 --eval-limit 0 --out runs/vgg19
//! cargo run --release --example vgg19_pipeline -- --data fer2013.cache --ema 0.999 --out runs/example-vgg-ema   # best.fer: the weights' average
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use clap::Parser;
use fer_rs::dataset::{Split, View};
use fer_rs::models::{ModelConfig, load_checkpoint};
use fer_rs::train::{RunFiles, TrainConfig, TrainOptions, evaluate, train, write_report};

#[derive(Parser)]
struct Args {
    /// FER2013 CSV, .csv.gz or `fer preprocess` cache [default: $FER2013_CSV].
    #[arg(long)]
    data: Option<PathBuf>,
    /// vgg19, resnet18, vgg-small, resnet-small.
    #[arg(long, default_value = "vgg-small")]
    model: String,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Training faces (0: all).
    #[arg(long, default_value_t = 500)]
    train_limit: usize,
    /// Faces of each test split (0: all).
    #[arg(long, default_value_t = 200)]
    eval_limit: usize,
    #[arg(long, default_value_t = 32)]
    bs: usize,
    /// Make a moving average of the weights (this per-step decay, e.g. 0.999) the run's model.
    #[arg(long)]
    ema: Option<f64>,
    #[arg(long, default_value = "runs/example-vgg")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    fer_rs::models::keep_freed_memory();
    let data = fer_rs::dataset::load(fer_rs::dataset::default_data_path(args.data.as_deref())?)?;
    let device = Default::default();

    // 1. Train with the reference recipe (SGD 0.01, momentum 0.9, constant rate through epoch 80).
    let mut config = TrainConfig::reference(ModelConfig::from_name(&args.model)?);
    config.epochs = args.epochs;
    config.batch_size = args.bs;
    config.ema_decay = args.ema;
    config.train_limit = (args.train_limit > 0).then_some(args.train_limit);
    config.eval_limit = (args.eval_limit > 0).then_some(args.eval_limit);
    let options = TrainOptions { resume: RunFiles::new(&args.out).state().exists(), ..TrainOptions::default() };
    let summary = train::<Autodiff<Flex>>(&config, &data, &args.out, &options, &device)?;
    println!(
        "selected epoch {}: PublicTest {:.2} %, PrivateTest {:.2} % (headline)",
        summary.selected_epoch + 1,
        100.0 * summary.selected_public_acc,
        100.0 * summary.selected_private_acc
    );

    // 2. Evaluate the selected checkpoint with TenCrop on PrivateTest, on the inference backend.
    let (model, _) = load_checkpoint::<Autodiff<Flex>>(RunFiles::new(&args.out).best(), &device)?;
    let mut private = data.split(Split::PrivateTest).clone();
    if args.eval_limit > 0 && args.eval_limit < private.len() {
        private = private.select(&(0..args.eval_limit).collect::<Vec<_>>());
    }
    let tencrop = evaluate(&model.valid(), Arc::new(private), View::TenCrop(44), 64, &device);
    println!(
        "TenCrop PrivateTest: {:.2} % (balanced {:.2} %)",
        100.0 * tencrop.accuracy(),
        100.0 * tencrop.balanced_accuracy()
    );

    // 3. The report (JSON + PNG curves and confusion matrix) of the run.
    let report = write_report::<Autodiff<Flex>>(&RunFiles::new(&args.out), &data, &device)?;
    println!(
        "report: {} ({} PrivateTest faces)",
        RunFiles::new(&args.out).report().display(),
        report.private_test.faces
    );
    Ok(())
}
