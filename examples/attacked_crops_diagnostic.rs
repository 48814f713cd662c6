//! Diagnostic of adversarial training: does a model that fits its attacked training crops keep
//! that robustness at inference? With the public fer-rs API only.
//!
//! The Training faces are attacked exactly as `fer train --adversarial …` attacks its batches
//! (random crops with flips, the attack run on a frozen inference-mode copy against the true
//! labels), then the same clean and attacked crops are scored five ways: at inference (BatchNorm
//! running statistics, no dropout), and in a training pass with the batch's own BatchNorm
//! statistics or the running ones, each with and without dropout. Besides accuracy it prints
//! balanced accuracy and the most frequent answer: a model that answers one class for every
//! attacked crop keeps that class's share of the faces "right" without being robust. `metrics.csv`'s
//! `train_adv_acc` is the training pass of the run's `--adv-bn` with dropout; `fer attack` scores
//! the inference row (on full faces or, with `--center-crop`, the centred crop).
//!
//! ```sh
//! cargo run --release --example attacked_crops_diagnostic -- --checkpoint runs/NAME/latest.fer --data fer2013.cache
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::prelude::*;
use clap::Parser;
use fer_rs::adversarial::{Attack, LabelSource, Labels, parse_eps, perturb};
use fer_rs::dataset::{BatchStream, Emotion, FaceBatcher, Split, View};
use fer_rs::models::{Evaluation, ModelConfig, NormStatistics, load_checkpoint};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

type B = Autodiff<Flex>;

#[derive(Parser)]
struct Args {
    /// A checkpoint (`best.fer` / `latest.fer` of a run).
    #[arg(long)]
    checkpoint: PathBuf,
    /// FER2013 CSV, .csv.gz or `fer preprocess` cache [default: $FER2013_CSV].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The first this-many Training faces.
    #[arg(long, default_value_t = 1024)]
    faces: usize,
    /// Attack: fgsm, fgsm-rs or pgd.
    #[arg(long, default_value = "pgd")]
    method: String,
    /// L∞ budget on pixels in [0, 1].
    #[arg(long, default_value = "0.3")]
    eps: String,
    /// PGD iterations (step 2.5ε/steps).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Faces per batch (the batch whose statistics the training pass uses).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Side of the random training crops.
    #[arg(long, default_value_t = 44)]
    crop: usize,
    /// Seed of the crops, the random starts and dropout.
    #[arg(long, default_value_t = 3)]
    seed: u64,
}

/// One way of running the model forward.
struct Pass {
    name: &'static str,
    statistics: Option<NormStatistics>,
    dropout: bool,
}

const PASSES: [Pass; 5] = [
    Pass { name: "inference (running statistics, no dropout)", statistics: None, dropout: false },
    Pass { name: "training, batch statistics, dropout", statistics: Some(NormStatistics::Batch), dropout: true },
    Pass { name: "training, batch statistics, no dropout", statistics: Some(NormStatistics::Batch), dropout: false },
    Pass { name: "training, running statistics, dropout", statistics: Some(NormStatistics::Running), dropout: true },
    Pass {
        name: "training, running statistics, no dropout",
        statistics: Some(NormStatistics::Running),
        dropout: false,
    },
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    fer_rs::models::keep_freed_memory();
    let attack = Attack::from_name(&args.method, parse_eps(&args.eps)?, None, Some(args.steps))?;
    attack.check()?;
    if args.faces == 0 || args.batch == 0 {
        return Err("--faces and --batch must be positive".into());
    }
    let device = Default::default();
    <B as Backend>::seed(&device, args.seed);
    let (model, header) = load_checkpoint::<B>(&args.checkpoint, &device)?;
    // The same weights without dropout (dropout has no parameters, so the record fits).
    let without_dropout = match header.model.clone() {
        ModelConfig::Vgg(c) => ModelConfig::Vgg(c.with_dropout(0.0)),
        ModelConfig::ResNet(c) => ModelConfig::ResNet(c.with_dropout(0.0)),
    }
    .init::<B>(&device)
    .load_record(model.clone().into_record())
    .no_grad();
    // Attacked and scored without parameter gradients (the frozen copy training attacks, and no
    // autodiff graph kept); the backend is still an autodiff one, so the training passes still
    // use batch statistics and dropout.
    let scored = model.clone().no_grad();
    let data = fer_rs::dataset::load(fer_rs::dataset::default_data_path(args.data.as_deref())?)?;
    let training = data.split(Split::Training);
    let faces = args.faces.min(training.len());
    let split = Arc::new(training.select(&(0..faces).collect::<Vec<_>>()));
    let view = View::RandomCropFlip(args.crop);
    view.check()?;
    let batcher = FaceBatcher::new(view, args.seed, faces);
    let stream = BatchStream::<B>::new(split, (0..faces).collect(), args.batch, batcher, 2, device);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    // scores[pass][0]: the clean crops, scores[pass][1]: the attacked ones.
    let mut scores: Vec<[Evaluation; 2]> = PASSES.iter().map(|_| Default::default()).collect();
    for batch in stream {
        let labels = Labels::from_source(LabelSource::True, batch.targets.clone());
        let attacked = perturb(&attack, |x| scored.forward_inference(x), batch.images.clone(), labels, &mut rng)?;
        for (kind, images) in [batch.images, attacked].into_iter().enumerate() {
            for (pass, score) in PASSES.iter().zip(scores.iter_mut()) {
                let net = if pass.dropout { &scored } else { &without_dropout };
                let logits = match pass.statistics {
                    None => net.forward_inference(images.clone()),
                    Some(statistics) => net.forward_training(images.clone(), statistics, None),
                };
                score[kind].record(logits.detach(), batch.targets.clone());
            }
        }
    }
    println!(
        "{} on the first {faces} Training faces ({}×{} random crops with flips, batches of {}), {} against the true labels:",
        args.checkpoint.display(),
        args.crop,
        args.crop,
        args.batch,
        attack.label()
    );
    println!(
        "  accuracy, balanced accuracy (mean recall per class: 14.29 % for a constant answer) and the most \
         frequent answer's share"
    );
    for (pass, [clean, attacked]) in PASSES.iter().zip(&scores) {
        println!("  {:44} clean {}  attacked {}", pass.name, figures(clean), figures(attacked));
    }
    Ok(())
}

/// `accuracy / balanced accuracy / top answer share`, in percent.
fn figures(score: &Evaluation) -> String {
    let (top, share) = score.top_answer().unwrap_or((Emotion::Neutral, 0.0));
    let share = 100.0 * share;
    format!(
        "{:6.2} % / {:6.2} % / {share:5.1} % {:8}",
        100.0 * score.accuracy(),
        100.0 * score.balanced_accuracy(),
        top.name()
    )
}
