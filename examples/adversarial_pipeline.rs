//! Adversarial pipeline: train → FGSM and PGD evaluation → FGSM adversarial training → compare,
//! with the public fer-rs API only.
//!
//! Tiny by default (vgg-small, 1 epoch on 500 training faces, 200 test faces; a few minutes on a
//! CPU); the flags give the reference's full setting (VGG19, ε = 0.3):
//!
//! ```sh
//! cargo run --release --example adversarial_pipeline -- --data ../shared/data/fer2013.csv.gz
//! cargo run --release --example adversarial_pipeline -- --data fer2013.cache --model vgg19 --epochs 60 --train-limit 0 --eval-limit 0
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use clap::Parser;
use fer_rs::adversarial::{Attack, RobustnessConfig, evaluate_robustness};
use fer_rs::dataset::Split;
use fer_rs::models::{ModelConfig, load_checkpoint};
use fer_rs::train::{AdversarialTraining, NormStatistics, RunFiles, TrainConfig, TrainOptions, train};

type B = Autodiff<Flex>;

#[derive(Parser)]
struct Args {
    /// FER2013 CSV, .csv.gz or `fer preprocess` cache [default: $FER2013_CSV].
    #[arg(long)]
    data: Option<PathBuf>,
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
    /// L∞ budget on pixels in [0, 1].
    #[arg(long, default_value_t = 0.3)]
    eps: f64,
    /// BatchNorm in the pass on attacked faces: batch-update (the reference), batch or running.
    #[arg(long, default_value = "batch-update")]
    adv_bn: NormStatistics,
    #[arg(long, default_value = "runs/example-adversarial")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    fer_rs::models::keep_freed_memory();
    let data = fer_rs::dataset::load(fer_rs::dataset::default_data_path(args.data.as_deref())?)?;
    let device = Default::default();
    let mut base = TrainConfig::reference(ModelConfig::from_name(&args.model)?);
    base.epochs = args.epochs;
    base.batch_size = 32;
    base.train_limit = (args.train_limit > 0).then_some(args.train_limit);
    base.eval_limit = (args.eval_limit > 0).then_some(args.eval_limit);
    let mut private = data.split(Split::PrivateTest).clone();
    if args.eval_limit > 0 && args.eval_limit < private.len() {
        private = private.select(&(0..args.eval_limit).collect::<Vec<_>>());
    }
    let private = Arc::new(private);

    // Robustness of a run's selected checkpoint: FGSM and PGD-10 at ε, the reference's protocol.
    let robustness = |dir: &PathBuf| -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
        let (model, _) = load_checkpoint::<B>(RunFiles::new(dir).best(), &device)?;
        let fgsm = evaluate_robustness(
            &model,
            private.clone(),
            &RobustnessConfig::reference(Attack::fgsm(args.eps)),
            &device,
            |_, _| {},
        )?;
        let pgd = evaluate_robustness(
            &model,
            private.clone(),
            &RobustnessConfig::reference(Attack::pgd(args.eps, 10)),
            &device,
            |_, _| {},
        )?;
        Ok((fgsm.clean.accuracy(), fgsm.adversarial.accuracy(), pgd.adversarial.accuracy()))
    };

    // 1. Clean training, then attacks.
    let clean_dir = args.out.join("clean");
    let options =
        |dir: &PathBuf| TrainOptions { resume: RunFiles::new(dir).state().exists(), ..TrainOptions::default() };
    train::<B>(&base, &data, &clean_dir, &options(&clean_dir), &device)?;
    let (clean, fgsm, pgd) = robustness(&clean_dir)?;
    println!(
        "clean training:       clean {:.2} %, FGSM {:.2} %, PGD-10 {:.2} %",
        100.0 * clean,
        100.0 * fgsm,
        100.0 * pgd
    );

    // 2. FGSM adversarial training (frozen inference-mode copy, loss = mean of clean and adversarial
    //    CE); `norm_statistics` says whether the attacked batches enter the BatchNorm statistics.
    let adv_dir = args.out.join("fgsm-at");
    let defence =
        AdversarialTraining { norm_statistics: args.adv_bn, ..AdversarialTraining::new(Attack::fgsm(args.eps)) };
    let defended = TrainConfig { adversarial: Some(defence), ..base.clone() };
    let summary = train::<B>(&defended, &data, &adv_dir, &options(&adv_dir), &device)?;
    if !summary.catastrophic_epochs.is_empty() {
        println!("catastrophic overfitting flagged at epochs {:?}", summary.catastrophic_epochs);
    }
    if !summary.constant_answer_epochs.is_empty() {
        println!("one answer for most attacked faces at epochs {:?}", summary.constant_answer_epochs);
    }
    let (clean, fgsm, pgd) = robustness(&adv_dir)?;
    println!(
        "adversarial training: clean {:.2} %, FGSM {:.2} %, PGD-10 {:.2} %",
        100.0 * clean,
        100.0 * fgsm,
        100.0 * pgd
    );
    Ok(())
}
