//! `fer`: the fer-rs command line. It only parses arguments and calls the fer-rs crates.
// The doc comments of the argument structs are clap's `--help` text, written for a terminal:
// `wgpu[:N]` there is not an intra-doc link.
#![allow(rustdoc::broken_intra_doc_links)]

mod attack;
mod backend;
mod ceiling_cmd;
mod checkpoint_arg;
mod faces_arg;
mod features_cmd;
mod predict_cmd;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fer_dataset::{DatasetError, Emotion, FaceBatch, FaceBatcher, FaceDataset, Fer2013, Split, View};
use fer_models::ModelConfig;
use fer_train::{FeatureTrainConfig, RunFiles, Schedule, SplitReport, TrainConfig, TrainOptions};
use indicatif::{ProgressBar, ProgressStyle};

use backend::{DeviceSpec, compiled_backends, with_backend};
use checkpoint_arg::CheckpointArg;

/// Facial expression recognition on FER2013 with Burn.
#[derive(Parser)]
#[command(name = "fer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How convolution weight gradients are computed off burn-flex (CUDA, Vulkan, ndarray):
    /// `backend` (Burn's own), `gemm[:MIN_SIDE]` (batched GEMMs, one per image, for output maps
    /// of at least MIN_SIDE pixels a side [default: 16]) or `gemm-stem[:MAX_IN_CHANNELS]` (the
    /// same GEMMs for convolutions of at most MAX_IN_CHANNELS input channels only [default: 1]:
    /// the gray first layer, whose weight gradient Burn's CUDA backend runs on a slow fallback
    /// kernel); burn-flex always runs fer-models' own kernels. The same values and gradients up
    /// to float rounding. On an H200 (CUDA) `gemm` made VGG19's step 4.7× slower
    /// (docs/RESULTS.md); `gemm-stem` is not measured on a GPU yet: measure before choosing it.
    #[arg(long, global = true, default_value = "backend", value_parser = parse_weight_gradient)]
    weight_gradient: fer_models::WeightGradient,
    /// How BatchNorm with batch statistics is differentiated on Burn's GPU backends (CUDA,
    /// Vulkan, wgpu): `operation` (one autodiff operation with the closed-form backward step) or
    /// `composed` (Burn tensor operations, each broadcast reducing its own gradient; the older
    /// way, kept for side-by-side measurement). The same values and gradients up to float rounding;
    /// burn-flex and ndarray ignore it.
    #[arg(long, global = true, default_value = "operation", value_parser = parse_gpu_batch_norm)]
    gpu_batch_norm: fer_models::GpuBatchNorm,
}

/// `--gpu-batch-norm`: `operation` or `composed`.
fn parse_gpu_batch_norm(text: &str) -> std::result::Result<fer_models::GpuBatchNorm, String> {
    match text {
        "operation" => Ok(fer_models::GpuBatchNorm::Operation),
        "composed" => Ok(fer_models::GpuBatchNorm::Composed),
        _ => Err(format!("`{text}`: expected operation or composed")),
    }
}

/// `--weight-gradient`: `backend`, `gemm`, `gemm:MIN_SIDE`, `gemm-stem` or `gemm-stem:MAX_IN_CHANNELS`.
fn parse_weight_gradient(text: &str) -> std::result::Result<fer_models::WeightGradient, String> {
    match text.split_once(':') {
        None if text == "backend" => Ok(fer_models::WeightGradient::Backend),
        None if text == "gemm" => Ok(fer_models::WeightGradient::Gemm { min_side: 16 }),
        None if text == "gemm-stem" => Ok(fer_models::WeightGradient::GemmStem { max_in_channels: 1 }),
        Some(("gemm", side)) => side
            .parse()
            .map(|min_side| fer_models::WeightGradient::Gemm { min_side })
            .map_err(|_| format!("`{side}` in `{text}` is not a map side in pixels")),
        Some(("gemm-stem", channels)) => channels
            .parse()
            .map(|max_in_channels| fer_models::WeightGradient::GemmStem { max_in_channels })
            .map_err(|_| format!("`{channels}` in `{text}` is not a channel count")),
        _ => Err(format!("`{text}`: expected backend, gemm, gemm:MIN_SIDE, gemm-stem or gemm-stem:MAX_IN_CHANNELS")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print faces per split and class.
    Stats {
        /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also count the test faces that have a copy in Training (FER2013 holds some photos more
        /// than once): a model can get those right from memory.
        #[arg(long)]
        copies: bool,
        /// Largest difference in grey levels on any pixel at which a Training face counts as a
        /// copy (0: exact copies).
        #[arg(long, default_value_t = 0)]
        copy_levels: u8,
    },
    /// Decode FER2013 once into a checksummed binary cache that loads in milliseconds.
    Preprocess {
        /// FER2013 CSV or .csv.gz [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
        #[arg(long)]
        data: Option<PathBuf>,
        /// Cache file to write.
        #[arg(long, default_value = "fer2013.cache")]
        out: PathBuf,
    },
    /// Compute dlib landmarks + HOG of every face (all cores) into a checksummed feature cache.
    Features {
        /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
        #[arg(long)]
        data: Option<PathBuf>,
        /// Feature cache to write.
        #[arg(long, default_value = "features.cache")]
        out: PathBuf,
        /// dlib 68-point model [default: $FER_LANDMARK_MODEL, else /usr/share/dlib/shape_predictor_68_face_landmarks.dat]
        #[arg(long)]
        landmark_model: Option<PathBuf>,
        /// Worker threads [default: all cores].
        #[arg(long)]
        threads: Option<usize>,
        /// Instead of writing a cache, time each part on the first N training faces, one thread.
        #[arg(long)]
        bench: Option<usize>,
        /// Print JSON (with --bench).
        #[arg(long)]
        json: bool,
    },
    /// Train the CNN + landmarks + HOG model on images and a `fer features` cache.
    TrainFeatures(Box<features_cmd::TrainFeatureArgs>),
    /// Evaluate the weights of a `fer train-features` run on a split.
    EvalFeatures(Box<features_cmd::EvalFeatureArgs>),
    /// TPE search of lr, lr decay, momentum and keep_prob for the CNN + landmarks + HOG model.
    Hyperopt {
        /// Trials in all (a rerun with the same --out resumes).
        #[arg(long, default_value_t = 20)]
        max_evals: usize,
        /// Trials drawn at random before TPE takes over (hyperopt's default: 20).
        #[arg(long, default_value_t = 5)]
        startup_trials: usize,
        #[command(flatten)]
        args: Box<features_cmd::FeatureArgs>,
    },
    /// Train a model (VGG19, ResNet18, …) into a resumable run directory.
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on a split (accuracy, per-class accuracy, confusion matrix).
    Eval {
        /// Checkpoint file (`best.fer` / `latest.fer` of a run).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Split: public, private or training.
        #[arg(long, default_value = "private")]
        split: Split,
        /// Average logits over TenCrop (otherwise the centre crop).
        #[arg(long)]
        tencrop: bool,
        /// Evaluate the whole 48×48 face instead of crops.
        #[arg(long, conflicts_with = "tencrop")]
        full: bool,
        /// Crop side.
        #[arg(long, default_value_t = 44)]
        crop: usize,
        /// Faces per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Which faces of a test split: all, unseen (those without a copy in Training: about 8 %
        /// of each test split has one, see `fer stats --copies`) or copied (only those).
        #[arg(long, default_value = "all")]
        faces: FaceSubset,
        /// Largest difference in grey levels on any pixel at which a Training face counts as a
        /// copy, for --faces (0: exact copies).
        #[arg(long, default_value_t = 0)]
        copy_levels: u8,
        /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
        #[arg(long)]
        data: Option<PathBuf>,
        /// Device: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also write each face's label, answer and class probabilities to this CSV file, for
        /// `fer compare` against another checkpoint's answers on the same faces.
        #[arg(long)]
        answers: Option<PathBuf>,
    },
    /// Read FER+'s crowd votes (Microsoft's `fer2013new.csv`: ten annotators per face) beside
    /// FER2013: how often their majority agrees with FER2013's labels, per split and class, and
    /// (with --answers) one split's vote shares as an answers file that teaches a run like a
    /// model's answers (`fer train --teacher FILE --temperature 1`: soft targets beside the labels).
    Ferplus {
        /// FER+'s `fer2013new.csv` (header `Usage,Image name,neutral,…,NF`, FER2013's row order).
        votes: PathBuf,
        /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
        #[arg(long)]
        data: Option<PathBuf>,
        /// Write the votes of --split as answers to this CSV file (`gzip` it to carry it: a teacher may be gzip'd).
        #[arg(long)]
        answers: Option<PathBuf>,
        /// The split whose votes --answers writes (a teacher needs Training's) and whose faces
        /// --score answers.
        #[arg(long, default_value = "training")]
        split: Split,
        /// Score a classifier's answers on the whole --split (`fer eval --answers`, .csv or
        /// .csv.gz; repeatable) against FER+'s majority as well as FER2013's labels.
        #[arg(long, value_name = "ANSWERS")]
        score: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare two checkpoints' answers on the same faces (`fer eval --answers` files, or the
    /// `answers-attacked.csv` of two `fer attack` runs): each accuracy with its 95 % interval,
    /// the faces only one gets right, the difference with its 95 % interval, and McNemar's exact
    /// test of "neither is better".
    Compare {
        /// Answers of checkpoint A (`fer eval --answers A.csv`; a gzip'd `A.csv.gz` too).
        a: PathBuf,
        /// Answers of checkpoint B on the same faces, in the same order.
        b: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Average several checkpoints' class probabilities on the same faces (soft voting) from
    /// their `fer eval --answers` files: the ensemble's accuracy with its 95 % interval, and a
    /// paired test against each member. With --select-on, the members and their weights are chosen
    /// on another split (greedy forward selection with replacement, Caruana et al. 2004), so the
    /// reported split stays unseen: select on PublicTest, report PrivateTest.
    Ensemble {
        /// Each member's answers on the split to report (`fer eval --answers`, .csv or .csv.gz),
        /// one file per member; give them before --select-on.
        #[arg(required = true, value_name = "ANSWERS")]
        answers: Vec<PathBuf>,
        /// The same members' answers on the selection split, in the same order: choose the
        /// weights there instead of weighting every member equally.
        #[arg(long, num_args = 1.., value_name = "ANSWERS")]
        select_on: Vec<PathBuf>,
        /// Rounds of greedy selection (each adds one member, again if it is the best choice; the
        /// best prefix on the selection split is kept).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Write the ensemble's answers on the reported split to this CSV file (for `fer
        /// compare`, or as a member of another ensemble).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute a checkpoint's BatchNorm running statistics from clean training faces (after
    /// adversarial training, whose perturbed batches also move them); weights are unchanged.
    RecalibrateBn {
        /// Checkpoint to read.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Checkpoint to write (the input is left as it is).
        #[arg(long)]
        out: PathBuf,
        /// Training-mode forward passes (each moves the statistics 10 % towards its batch's).
        #[arg(long, default_value_t = 100)]
        batches: usize,
        /// Faces per batch.
        #[arg(long, default_value_t = 128)]
        bs: usize,
        /// Side of the random training crops (with horizontal flips).
        #[arg(long, default_value_t = 44)]
        crop: usize,
        /// Seed of the face order and crops.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
        #[arg(long)]
        data: Option<PathBuf>,
        /// Device: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Expressions of the faces in JPEG/PNG photos: boxes, probabilities, annotated images.
    Predict(Box<predict_cmd::PredictArgs>),
    /// Attack a checkpoint (FGSM, FGSM-RS, PGD): clean vs adversarial accuracy, ε sweeps, figures.
    Attack(Box<attack::AttackArgs>),
    /// The robustness ceiling of a split: the best accuracy under an L∞ attack of budget ε that
    /// any classifier can keep on its faces (no model needed; a test split takes about a second,
    /// Training minutes: the work grows with the square of the faces).
    Ceiling(Box<ceiling_cmd::CeilingArgs>),
    /// Time training steps (forward, backward, SGD) of a model: median img/s after warm-up.
    BenchTrain {
        /// Model: vgg19, resnet18, vgg-small, resnet-small (44×44 crops, the reference recipe's
        /// step), or cnn-hog-b, cnn-hog-a, cnn-hog-tiny (48×48 faces + features, momentum SGD).
        #[arg(long, default_value = "vgg19")]
        model: String,
        /// Multiply every channel count of vgg*/resnet* models by this factor (as `fer train
        /// --width`).
        #[arg(long)]
        width: Option<f64>,
        /// GroupNorm with this many groups in place of a VGG's BatchNorm (as `fer train
        /// --group-norm`).
        #[arg(long)]
        group_norm: Option<usize>,
        /// Feature vector of the cnn-hog models: landmarks-sliding-hog, landmarks-whole-hog,
        /// landmarks.
        #[arg(long, default_value = "landmarks-sliding-hog")]
        feature_set: fer_features::FeatureSet,
        /// Images per step.
        #[arg(long, default_value_t = 128)]
        bs: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Warm-up steps, left out of the median (their seconds are in the JSON's `warmup_seconds`).
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Device: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Print JSON (the same keys as benches/reference/torch_train.py).
        #[arg(long)]
        json: bool,
        /// Time steps of adversarial training (vgg*/resnet* models), as `fer train --adversarial`
        /// runs them: the attack, then the clean and the attacked batch; img/s counts training faces.
        #[command(flatten)]
        attack: TrainingAttackArgs,
    },
    /// Rewrite report.json and the PNG plots of a run from its best.fer and metrics.csv.
    Report {
        /// Run directory.
        #[arg(long)]
        run: PathBuf,
        /// Only redraw the PNG plots, from metrics.csv and report.json (no checkpoint, no data):
        /// for a run trained where no font was installed, or whose checkpoints stayed there.
        #[arg(long)]
        plots_only: bool,
        /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
        #[arg(long)]
        data: Option<PathBuf>,
        /// Device: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Write a checkpoint's weights as safetensors (for PyTorch, NumPy, Hugging Face tools).
    Export {
        /// A `.fer` checkpoint, a `fer train` run directory (its best.fer), or the CNN + landmarks +
        /// HOG model of a `fer train-features` run (its directory: best.bin; or a `.bin` of it).
        #[arg(long)]
        checkpoint: PathBuf,
        /// safetensors file to write (the model config, and for a feature run its recipe and
        /// feature set, go in its metadata).
        #[arg(long)]
        out: PathBuf,
    },
    /// Turn a safetensors file written by `fer export` back into what it came from: a `.fer`
    /// checkpoint (VGG/ResNet) or a `fer train-features` run directory (config.json + best.bin).
    Import {
        /// safetensors file from `fer export`.
        #[arg(long)]
        safetensors: PathBuf,
        /// Checkpoint file to write (VGG/ResNet), or a new run directory (CNN + landmarks + HOG).
        #[arg(long)]
        out: PathBuf,
    },
    /// List the compiled backends; with --device, run a TenCrop batch on that device.
    Devices {
        /// Device to check: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// FER2013 file to take the batch from [default: synthetic faces].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Faces in the batch.
        #[arg(long, default_value_t = 128)]
        batch: usize,
    },
}

/// `fer train` flags. Defaults are the reference recipe (`mainpro_FER.py --bs 128 --lr 0.01`).
#[derive(clap::Args)]
struct TrainArgs {
    /// Model: vgg19, resnet18, or the CPU-sized vgg-small / resnet-small [default: vgg19, or the
    /// --init checkpoint's model].
    #[arg(long)]
    model: Option<String>,
    /// Multiply every layer's channel count by this factor (e.g. 0.25: VGG19 with 16…128
    /// channels, 1/16 of the weights and compute, for CPU experiments); config.json records the
    /// resulting layers.
    #[arg(long, conflicts_with = "resume")]
    width: Option<f64>,
    /// GroupNorm with this many groups after every convolution of a VGG, in place of BatchNorm
    /// (e.g. 8 at --width 0.125, 32 at full width; it must divide every layer's channel count):
    /// each face is normalised on its own, alike in training and at inference, with no running
    /// statistics (--adv-bn and --adv-clean-bn do not apply). config.json records it.
    #[arg(long, conflicts_with = "resume")]
    group_norm: Option<usize>,
    /// Start from this checkpoint's weights and BatchNorm statistics instead of fresh ones (e.g.
    /// adversarial fine-tuning of a cleanly trained model); the optimiser and the schedule start
    /// afresh. config.json records the path and the file's checksum.
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// Recipe the other flags start from: reference (250 epochs, step decay) or fast (60, cosine).
    #[arg(long, default_value = "reference")]
    recipe: String,
    /// Faces per step.
    #[arg(long)]
    bs: Option<usize>,
    /// Leave out each epoch's last, smaller batch (other faces each epoch): every step has one
    /// shape, so a GPU backend autotunes one batch size, not two.
    #[arg(long)]
    drop_last: bool,
    /// Training augmentation besides the random crop and mirror: none (the reference) or strong
    /// (±10° rotation, ±10 % zoom, a random black rectangle on half the crops); the three flags
    /// below change one part of it.
    #[arg(long, conflicts_with = "resume", default_value = "none")]
    augment: String,
    /// Rotation of the training crops, uniformly within ±this many degrees.
    #[arg(long, conflicts_with = "resume")]
    augment_rotation: Option<u32>,
    /// Zoom of the training crops, uniformly within ±this many percent.
    #[arg(long, conflicts_with = "resume")]
    augment_zoom: Option<u32>,
    /// Chance, in percent, of erasing a random rectangle (2–33 % of the crop) to black.
    #[arg(long, conflicts_with = "resume")]
    augment_erase: Option<u32>,
    /// Percent of the training batches made of whole 48×48 faces (mirrored at random, and
    /// augmented as the crops) instead of random crops, so the network also learns the
    /// whole-face view that the reference's attack evaluation feeds it (`fer eval --full`,
    /// `fer attack`) [default: 0, crops only].
    #[arg(long, value_name = "PCT", conflicts_with = "resume")]
    whole_faces: Option<u32>,
    /// Label smoothing of the training loss: cross-entropy against (1 − S)·one-hot + S/7
    /// [default: 0, none]; the test splits' losses stay plain cross-entropy.
    #[arg(long, conflicts_with = "resume", value_name = "S")]
    label_smoothing: Option<f32>,
    /// Mixup with this α: each training batch mixed with a shuffled copy of itself,
    /// λ·x + (1 − λ)·x[π] with λ ~ Beta(α, α), and the loss weighed the same way (clean training
    /// on one device) [default: off; 0.2–0.4 is usual].
    #[arg(long, conflicts_with = "resume", value_name = "ALPHA")]
    mixup: Option<f32>,
    /// Keep an exponential moving average of the weights with this per-step decay (0.999 is
    /// usual; step t uses min(DECAY, (1 + t)/(10 + t)), so 0.999 holds from step 8,990 on),
    /// BatchNorm statistics included. The
    /// average is then the run's model: evaluated each epoch, selected on PublicTest and saved as
    /// best.fer; metrics.csv adds the raw weights' accuracies [default: off].
    #[arg(long, conflicts_with = "resume", value_name = "DECAY")]
    ema: Option<f64>,
    /// Knowledge distillation from a teacher's answers on the whole Training split (`fer eval
    /// --split training --tencrop --answers FILE` of its checkpoint; .csv or .csv.gz): the loss
    /// becomes (1 − α)·CE(labels) + α·T²·KL(teacher ‖ model) at temperature T. Repeat for several
    /// teachers, whose probabilities are averaged (an ensemble distilled into one model). Clean
    /// training on one device; config.json records each file's checksum.
    #[arg(long = "teacher", value_name = "ANSWERS", conflicts_with = "resume")]
    teachers: Vec<PathBuf>,
    /// The teachers' share α of the distillation loss, in [0, 1] [default: 0.5].
    #[arg(long, value_name = "ALPHA", requires = "teachers", conflicts_with = "resume")]
    distill_weight: Option<f32>,
    /// The distillation temperature T, softening both distributions [default: 2].
    #[arg(long, value_name = "T", requires = "teachers", conflicts_with = "resume")]
    temperature: Option<f32>,
    /// Faces per evaluation batch (×10 crops with TenCrop) [default: 64]. On a GPU, the batch
    /// size of training (--bs) makes the centre-crop evaluation reuse the training's tuned kernels.
    #[arg(long)]
    eval_batch: Option<usize>,
    /// Base learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// SGD momentum.
    #[arg(long)]
    momentum: Option<f64>,
    /// Nesterov momentum (PyTorch's SGD `nesterov=True`): each step follows g + μ·v rather
    /// than the velocity v [default: off, the reference's plain momentum].
    #[arg(long, conflicts_with = "resume")]
    nesterov: bool,
    /// Weight decay.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clamp each gradient element to ±this (0 turns clamping off).
    #[arg(long)]
    grad_clip: Option<f32>,
    /// Learning-rate schedule: reference, cosine or constant.
    #[arg(long)]
    schedule: Option<String>,
    /// Warm-up epochs of the cosine schedule (linear from ~0 to --lr) [default: 2].
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Final learning rate of the cosine schedule [default: 1e-4].
    #[arg(long)]
    min_lr: Option<f64>,
    /// Seed of weights, data order, crops and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// Evaluate with the centre crop instead of TenCrop.
    #[arg(long)]
    no_tencrop: bool,
    /// Train on a seeded subset of this many training faces.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on the first this-many faces of each test split.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Stop after this many epochs in this call (resume later with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Continue the run in --out from its last completed epoch (its config.json is used).
    #[arg(long)]
    resume: bool,
    /// Run directory.
    #[arg(long)]
    out: PathBuf,
    /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Device: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Data-parallel training over these devices of one backend (e.g. cuda:0,cuda:1; cpu:0,cpu:1
    /// runs two CPU replicas): each batch of --bs faces is split over them, the first one
    /// evaluates and checkpoints. Replaces --device.
    #[arg(long, value_delimiter = ',', conflicts_with = "device", value_parser = backend::parse_replica)]
    devices: Vec<DeviceSpec>,
    #[command(flatten)]
    attack: TrainingAttackArgs,
    /// Weight of the adversarial loss: (1 − w)·CE(clean) + w·CE(adversarial).
    #[arg(long, default_value_t = 0.5, requires = "adversarial")]
    adv_weight: f64,
    /// TRADES (Zhang et al. 2019) instead of the weighted mix: loss = CE(clean) +
    /// β·KL(p(clean) ‖ p(attacked)), and the training attack maximises that KL (labels
    /// distribution unless --adv-labels says otherwise; use pgd, fgsm-rs or n-fgsm). TRADES's code: 6 on
    /// CIFAR-10.
    #[arg(long, requires = "adversarial", conflicts_with = "adv_weight")]
    trades_beta: Option<f64>,
    /// BatchNorm in the pass on the attacked faces: batch-update (the reference: batch statistics,
    /// which also enter the running statistics), batch (batch statistics, running statistics from
    /// clean batches only) or running (the running statistics of clean batches, as at inference;
    /// alone it lets a model exploit their lag behind the weights: see --adv-clean-bn).
    #[arg(long, default_value = "batch-update", requires = "adversarial")]
    adv_bn: fer_models::NormStatistics,
    /// BatchNorm in the pass on the clean faces: batch-update (ordinary training, the reference),
    /// batch or running, as --adv-bn; `--adv-bn running --adv-clean-bn running` freezes the
    /// statistics of the --init checkpoint, so both passes normalise exactly as inference does.
    #[arg(long, default_value = "batch-update", requires = "adversarial")]
    adv_clean_bn: fer_models::NormStatistics,
    /// Raise the training attack's ε linearly from 0 to --eps over this many epochs (fractions
    /// allowed: 0.5 = the first half of the first epoch; 0: the full ε from the first step). The
    /// per-epoch attacks on the test splits always use the full ε.
    #[arg(long, default_value_t = 0.0, requires = "adversarial")]
    adv_eps_ramp: f64,
    /// Labels of the training attack: true, predicted or distribution (the clean softmax, the
    /// attack maximising KL; needs pgd, fgsm-rs or n-fgsm) [default: true; distribution with
    /// --trades-beta].
    #[arg(long, requires = "adversarial")]
    adv_labels: Option<fer_adversarial::LabelSource>,
    /// What picks best.fer on PublicTest: clean, adversarial or mean (of clean and attacked
    /// accuracy), or adversarial-balanced / mean-balanced (the same on balanced accuracy, which a
    /// constant answer under attack cannot inflate), or adversarial-robust / mean-robust (the
    /// same on the faces right both clean and under attack: the evaluation attack uses predicted
    /// labels, so the attacked accuracy also counts faces it moved onto the right answer).
    #[arg(long, default_value = "mean", requires = "adversarial")]
    select: fer_train::Selection,
    /// PublicTest faces of the per-epoch FGSM-vs-PGD catastrophic-overfitting check (0: off).
    #[arg(long, default_value_t = 500, requires = "adversarial")]
    check_faces: usize,
    /// What the per-epoch and report attacks show the model: full (the reference: whole 48×48
    /// faces) or center (the centred crop of the training crops' side, the view they are centred on).
    #[arg(long, default_value = "full", value_parser = ["full", "center"], requires = "adversarial")]
    adv_eval_view: String,
}

/// The attack of adversarial training (`fer train`, `fer bench-train`).
#[derive(clap::Args, Debug)]
struct TrainingAttackArgs {
    /// Adversarial training with this attack: fgsm (the reference), fgsm-rs, n-fgsm (de Jorge et
    /// al. 2022: noise 2ε, step ε, no projection to the ε-ball) or pgd (apgd-ce, apgd-dlr and
    /// apgd run too, at 100 passes a step unless --adv-steps says less).
    #[arg(long)]
    adversarial: Option<String>,
    /// L∞ budget of adversarial training (pixels in [0, 1]): 0.3, 8/255, …
    #[arg(long, default_value = "0.3", requires = "adversarial")]
    eps: String,
    /// PGD (and APGD) iterations of adversarial training [default: 10 for pgd, 100 for APGD].
    #[arg(long, requires = "adversarial")]
    adv_steps: Option<usize>,
    /// Step size of the training attack: 0.075, 2/255, … [default: 1.25ε for fgsm-rs, ε for
    /// n-fgsm, 2.5ε/steps for pgd].
    #[arg(long, requires = "adversarial", value_parser = fer_adversarial::parse_step_size)]
    adv_alpha: Option<f64>,
    /// Half-width of n-fgsm's uniform noise: 0.6, 16/255, … [default: 2ε].
    #[arg(long, requires = "adversarial", value_parser = fer_adversarial::parse_noise)]
    adv_noise: Option<f64>,
    /// Model that builds the training examples: frozen (inference-mode copy) or current.
    #[arg(long, default_value = "frozen", requires = "adversarial")]
    adv_source: fer_train::AdvSource,
    /// ELLE (Abad Rocamora et al. 2024), against catastrophic overfitting: add λ × the
    /// local-linearity error of the loss within the ε-ball (three more passes a step, no double
    /// backpropagation); its mean per epoch is metrics.csv's train_linearity_error. The paper:
    /// 1000 to 10000 on CIFAR-10 (2/255 to 26/255); on FER2013 at 0.3, 10 already outweighs the
    /// cross-entropy.
    #[arg(long, requires = "adversarial")]
    adv_linearity: Option<f64>,
}

impl TrainingAttackArgs {
    /// Adversarial training with the attack and source asked for (the other settings at their
    /// defaults), or `None` without --adversarial.
    fn training(&self) -> Result<Option<fer_train::AdversarialTraining>> {
        let Some(method) = &self.adversarial else { return Ok(None) };
        let eps = fer_adversarial::parse_eps(&self.eps)?;
        let mut attack = fer_adversarial::Attack::from_name(method, eps, self.adv_alpha, self.adv_steps)?;
        if let Some(noise) = self.adv_noise {
            attack = attack.with_noise(noise)?;
        }
        Ok(Some(fer_train::AdversarialTraining {
            source: self.adv_source,
            linearity_weight: self.adv_linearity,
            ..fer_train::AdversarialTraining::new(attack)
        }))
    }
}

impl TrainArgs {
    /// The run's configuration: the run's own config.json on --resume, else recipe + flags.
    fn config(&self) -> Result<TrainConfig> {
        if self.resume {
            let path = RunFiles::new(&self.out).config();
            let text =
                std::fs::read(&path).with_context(|| format!("cannot resume: cannot read {}", path.display()))?;
            return serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a training config", path.display()));
        }
        let (init, init_header) =
            self.init.as_deref().map(fer_train::InitCheckpoint::from_file_with_header).transpose()?.unzip();
        // fer_train::train checks that an --init checkpoint holds the model.
        let model = match (&self.model, init_header) {
            (Some(name), _) => ModelConfig::from_name(name).map_err(anyhow::Error::msg)?,
            (None, Some(header)) => header.model,
            (None, None) => ModelConfig::from_name("vgg19").map_err(anyhow::Error::msg)?,
        };
        let model = with_group_norm(with_width(model, self.width)?, self.group_norm)?;
        let mut c = match self.recipe.as_str() {
            "reference" => TrainConfig::reference(model),
            "fast" => TrainConfig::fast(model),
            other => anyhow::bail!("unknown recipe `{other}` (expected reference or fast)"),
        };
        c.batch_size = self.bs.unwrap_or(c.batch_size);
        c.lr = self.lr.unwrap_or(c.lr);
        c.epochs = self.epochs.unwrap_or(c.epochs);
        c.momentum = self.momentum.unwrap_or(c.momentum);
        c.nesterov = self.nesterov;
        c.weight_decay = self.weight_decay.unwrap_or(c.weight_decay);
        if let Some(clip) = self.grad_clip {
            c.grad_clip = (clip > 0.0).then_some(clip);
        }
        if let Some(s) = &self.schedule {
            c.schedule = match s.as_str() {
                "reference" => Schedule::REFERENCE,
                "cosine" => Schedule::Cosine { warmup_epochs: 2, min_lr: 1e-4 },
                "constant" => Schedule::Constant,
                other => anyhow::bail!("unknown schedule `{other}` (expected reference, cosine or constant)"),
            };
        }
        if self.warmup_epochs.is_some() || self.min_lr.is_some() {
            let Schedule::Cosine { warmup_epochs, min_lr } = &mut c.schedule else {
                anyhow::bail!(
                    "--warmup-epochs and --min-lr shape the cosine schedule: add --schedule cosine (or --recipe fast)"
                );
            };
            *warmup_epochs = self.warmup_epochs.unwrap_or(*warmup_epochs);
            *min_lr = self.min_lr.unwrap_or(*min_lr);
        }
        c.seed = self.seed.unwrap_or(c.seed);
        c.eval_tencrop = !self.no_tencrop;
        c.drop_last = self.drop_last;
        let mut augmentation = fer_dataset::Augmentation::from_name(&self.augment).map_err(anyhow::Error::msg)?;
        augmentation.max_rotation_deg = self.augment_rotation.unwrap_or(augmentation.max_rotation_deg);
        augmentation.max_zoom_pct = self.augment_zoom.unwrap_or(augmentation.max_zoom_pct);
        augmentation.erase_pct = self.augment_erase.unwrap_or(augmentation.erase_pct);
        c.augmentation = augmentation;
        c.whole_face_pct = self.whole_faces.unwrap_or(c.whole_face_pct);
        c.label_smoothing = self.label_smoothing.unwrap_or(c.label_smoothing);
        c.mixup_alpha = self.mixup;
        c.ema_decay = self.ema;
        c.eval_batch_faces = self.eval_batch.unwrap_or(c.eval_batch_faces);
        c.train_limit = self.train_limit;
        c.eval_limit = self.eval_limit;
        c.init = init;
        if !self.teachers.is_empty() {
            let teachers =
                self.teachers.iter().map(fer_train::TeacherAnswers::from_file).collect::<Result<Vec<_>, _>>()?;
            let defaults = fer_train::Distillation::new(teachers);
            c.distillation = Some(fer_train::Distillation {
                weight: self.distill_weight.unwrap_or(defaults.weight),
                temperature: self.temperature.unwrap_or(defaults.temperature),
                ..defaults
            });
        }
        if let Some(base) = self.attack.training()? {
            c.adversarial = Some(fer_train::AdversarialTraining {
                weight: self.adv_weight,
                norm_statistics: self.adv_bn,
                clean_norm_statistics: self.adv_clean_bn,
                eps_ramp_epochs: self.adv_eps_ramp,
                trades_beta: self.trades_beta,
                labels: self.adv_labels.unwrap_or(match self.trades_beta {
                    Some(_) => fer_adversarial::LabelSource::Distribution,
                    None => fer_adversarial::LabelSource::True,
                }),
                selection: self.select,
                check_faces: self.check_faces,
                eval_center_crop: (self.adv_eval_view == "center").then_some(c.crop),
                ..base
            });
        }
        c.check().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}

fn main() -> ExitCode {
    // Training and evaluation allocate and free large tensors all the time: keep their memory.
    fer_models::keep_freed_memory();
    tracing_subscriber::fmt()
        // Autotuning on a GPU logs every new kernel shape at `info`: shown with
        // RUST_LOG=info,cubecl_runtime::tune=info.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cubecl_runtime::tune=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_report(&e));
            ExitCode::FAILURE
        }
    }
}

/// `model` with its channel counts scaled by `--width` when given (`fer train`, `fer bench-train`).
fn with_width(model: ModelConfig, width: Option<f64>) -> Result<ModelConfig> {
    match width {
        Some(factor) => model.scale_width(factor).map_err(|e| anyhow::anyhow!("--width: {e}")),
        None => Ok(model),
    }
}

/// `model` with GroupNorm of `--group-norm` groups when given (`fer train`, `fer bench-train`):
/// VGG models only, and the groups must divide every convolution's channels.
fn with_group_norm(model: ModelConfig, groups: Option<usize>) -> Result<ModelConfig> {
    let Some(groups) = groups else { return Ok(model) };
    let ModelConfig::Vgg(vgg) = &model else {
        anyhow::bail!("--group-norm applies to VGG models, not `{}`", model.label());
    };
    let model = ModelConfig::Vgg(vgg.with_group_norm_groups(Some(groups)));
    model.check().map_err(|e| anyhow::anyhow!("--group-norm: {e}"))?;
    Ok(model)
}

/// `e` and its causes, joined by ": ", leaving out a cause whose text the message already holds:
/// fer-rs's errors name their cause in their own message (so that they read whole when a library
/// user prints them) and also return it as `source()`, which `{:#}` would print twice.
fn error_report(e: &anyhow::Error) -> String {
    let mut report = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !report.contains(&text) {
            if !report.is_empty() {
                report.push_str(": ");
            }
            report.push_str(&text);
        }
    }
    report
}

/// The backend of format conversions (no computation happens there).
#[cfg(feature = "ndarray")]
type CpuBackend = burn::backend::NdArray;
#[cfg(all(not(feature = "ndarray"), feature = "flex"))]
type CpuBackend = burn::backend::Flex;

fn run(cli: Cli) -> Result<()> {
    fer_models::set_weight_gradient(cli.weight_gradient);
    if cli.weight_gradient != fer_models::WeightGradient::Backend {
        tracing::info!("convolution weight gradients: {:?}", cli.weight_gradient);
    }
    fer_models::set_gpu_batch_norm(cli.gpu_batch_norm);
    if cli.gpu_batch_norm != fer_models::GpuBatchNorm::Operation {
        tracing::info!("BatchNorm on GPU backends: {:?}", cli.gpu_batch_norm);
    }
    match cli.command {
        Command::Stats { data, json, copies, copy_levels } => {
            let data = load_with_progress(data.as_deref())?;
            let counts = data.counts();
            let copy_counts: Vec<(Split, fer_dataset::CopyCounts)> = if copies {
                let training = data.split(Split::Training);
                [Split::PublicTest, Split::PrivateTest]
                    .into_iter()
                    .map(|split| {
                        let faces = data.split(split);
                        let found = fer_dataset::copies_in(faces, training, copy_levels);
                        (split, fer_dataset::CopyCounts::new(faces, training, &found, copy_levels))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if json && copies {
                let copies: serde_json::Map<String, serde_json::Value> = copy_counts
                    .iter()
                    .map(|(split, c)| Ok((split.to_string(), serde_json::to_value(c)?)))
                    .collect::<Result<_, serde_json::Error>>()?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"counts": counts, "copies_in_training": copies}))?
                );
            } else if json {
                println!("{}", serde_json::to_string_pretty(&counts)?);
            } else {
                print!("{counts}");
                for (split, c) in &copy_counts {
                    println!("{split} faces with a copy in Training: {c}");
                }
            }
        }
        Command::Preprocess { data, out } => {
            let source = fer_dataset::default_data_path(data.as_deref())?;
            let data = load_with_progress(Some(&source))?;
            fer_dataset::write_cache(&data, &out)?;
            let bytes = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!(
                "wrote {} ({} faces, {:.1} MB) from {}",
                out.display(),
                data.len(),
                bytes as f64 / 1e6,
                source.display()
            );
        }
        Command::Features { data, out, landmark_model, threads, bench, json } => {
            #[cfg(feature = "dlib")]
            features(data.as_deref(), &out, landmark_model.as_deref(), threads, bench, json)?;
            #[cfg(not(feature = "dlib"))]
            {
                let _ = (data, out, landmark_model, threads, bench, json);
                anyhow::bail!(
                    "`fer features` computes dlib's landmarks, and this fer was built without its `dlib` feature \
                     (build it with the default features, or --features dlib; Debian: apt-get install libdlib-dev \
                     libdlib-data)"
                );
            }
        }
        Command::Train(args) => {
            let config = args.config()?;
            let data = load_with_progress(args.data.as_deref())?;
            let options = TrainOptions { resume: args.resume, stop_after: args.stop_after, ..TrainOptions::default() };
            let specs = if args.devices.is_empty() { vec![args.device] } else { args.devices.clone() };
            if let Some(other) = specs.iter().find(|s| s.kind != specs[0].kind) {
                anyhow::bail!("--devices mixes backends ({} and {other}): use devices of one backend", specs[0]);
            }
            let names: Vec<String> = specs.iter().map(ToString::to_string).collect();
            tracing::info!("training {} on {} into {}", config.model.label(), names.join(", "), args.out.display());
            let summary = with_backend!(specs[0], |B, device| {
                let others = specs[1..].iter().map(|s| backend::DeviceFromIndex::from_index(s.index));
                let devices: Vec<_> = std::iter::once(device).chain(others).collect();
                fer_train::train_on_devices::<burn::backend::Autodiff<B>>(
                    &config, &data, &args.out, &options, &devices,
                )?
            });
            println!(
                "{} epochs done. Selected epoch {} ({}): clean PublicTest {:.2} %, PrivateTest {:.2} % (headline).",
                summary.completed_epochs,
                summary.selected_epoch + 1,
                summary.selection.criterion(),
                100.0 * summary.selected_public_acc,
                100.0 * summary.selected_private_acc
            );
            if let (Some(public), Some(private), Some(adv)) =
                (summary.selected_public_adv_acc, summary.selected_private_adv_acc, &config.adversarial)
            {
                let view = adv.eval_center_crop.map_or("full faces".to_string(), |s| format!("centre {s}×{s} crop"));
                let balanced = summary
                    .selected_public_adv_balanced_acc
                    .map_or(String::new(), |b| format!(" (balanced {:.2} %)", 100.0 * b));
                println!(
                    "Under attack at that epoch (--select {}): PublicTest {:.2} %{balanced}, PrivateTest {:.2} % (headline; {}, {view}).",
                    summary.selection.name(),
                    100.0 * public,
                    100.0 * private,
                    adv.eval_attack.label()
                );
            }
            println!(
                "Reference-style figure (best PrivateTest over all epochs, selected on the test set): {:.2} % at epoch {}.",
                100.0 * summary.reference_style_private_acc,
                summary.reference_style_epoch + 1
            );
            if let Some(adv) = summary.reference_style_private_adv_acc {
                println!(
                    "Reference-style adversarial figure (best attacked PrivateTest over all epochs): {:.2} %.",
                    100.0 * adv
                );
            }
            // The summary's 0-based epochs as the console counts them, from 1.
            let counted = |epochs: &[usize]| epochs.iter().map(|e| (e + 1).to_string()).collect::<Vec<_>>().join(", ");
            if !summary.catastrophic_epochs.is_empty() {
                let epochs = counted(&summary.catastrophic_epochs);
                println!(
                    "Catastrophic overfitting (FGSM accuracy far above PGD's, or PGD taking almost every face FGSM leaves right) at epochs {epochs}."
                );
            }
            if !summary.constant_answer_epochs.is_empty() {
                println!(
                    "Constant answer under attack (one class for more than half of the attacked PublicTest faces) at epochs {}.",
                    counted(&summary.constant_answer_epochs)
                );
            }
            // A finished run's report.json: warn when one class has most of the selected model's answers.
            let report_path = RunFiles::new(&args.out).report();
            if summary.completed_epochs == config.epochs && report_path.is_file() {
                let report: fer_train::Report = serde_json::from_slice(&std::fs::read(&report_path)?)
                    .with_context(|| format!("cannot read {}", report_path.display()))?;
                if let Some(ci) = report.private_test.accuracy_ci95 {
                    println!(
                        "best.fer on PrivateTest ({:?}, report.json): {:.2} %, 95 % interval {} over {} faces (`fer eval --answers` and `fer compare` test a difference between two models).",
                        report.view,
                        100.0 * report.private_test.accuracy,
                        percent_interval(ci),
                        report.private_test.faces
                    );
                }
                if let Some(unseen) = &report.private_test_unseen {
                    println!(
                        "best.fer on PrivateTest ({:?}, report.json): {:.2} %; on the {} of {} faces without an exact copy in Training: {:.2} %.",
                        report.view,
                        100.0 * report.private_test.accuracy,
                        unseen.faces,
                        report.private_test.faces,
                        100.0 * unseen.accuracy
                    );
                }
                if let Some(whole) = &report.private_test_whole_faces {
                    println!(
                        "best.fer on PrivateTest's whole 48×48 faces (the view of the reference's attack protocol, report.json): {:.2} %.",
                        100.0 * whole.accuracy
                    );
                }
                let attacked = report.adversarial.as_ref().map(|a| &a.private_test);
                for note in [
                    dominant_answer_note("on PrivateTest ", &report.private_test),
                    attacked.and_then(|a| dominant_answer_note("on PrivateTest under attack ", a)),
                ]
                .into_iter()
                .flatten()
                {
                    println!("{note}");
                }
                if let Some(adv) = &report.adversarial
                    && let Some(ceiling) = &adv.private_test_ceiling
                    && let Some(kept) = adv.private_test_check_robust_accuracy
                {
                    println!(
                        "Robustness ceiling of PrivateTest at ε = {:.4}: no classifier keeps more than {:.2} % of its faces right under every attack (`fer ceiling`); this model keeps {:.2} % right both clean and under {}.",
                        ceiling.eps,
                        100.0 * ceiling.at_most,
                        100.0 * kept,
                        adv.check_attack.label()
                    );
                }
            }
        }
        Command::Attack(args) => attack::run(*args)?,
        Command::Ceiling(args) => ceiling_cmd::run(*args)?,
        Command::Predict(args) => predict_cmd::run(*args)?,
        Command::TrainFeatures(args) => features_cmd::train(*args)?,
        Command::EvalFeatures(args) => features_cmd::eval(*args)?,
        Command::Hyperopt { max_evals, startup_trials, args } => {
            features_cmd::hyperopt(*args, max_evals, startup_trials)?
        }
        Command::BenchTrain { model, width, group_norm, feature_set, bs, steps, warmup, device, json, attack } => {
            let bench = if model.starts_with("cnn-hog") {
                anyhow::ensure!(width.is_none(), "--width applies to vgg*/resnet* models, not `{model}`");
                anyhow::ensure!(group_norm.is_none(), "--group-norm applies to VGG models, not `{model}`");
                anyhow::ensure!(
                    attack.adversarial.is_none(),
                    "--adversarial applies to vgg*/resnet* models, not `{model}`"
                );
                let net = features_cmd::feature_model(&model, feature_set)?;
                let config = FeatureTrainConfig { batch_size: bs, ..FeatureTrainConfig::reference(net, feature_set) };
                with_backend!(device, |B, device| {
                    fer_train::bench_feature_train_steps::<burn::backend::Autodiff<B>>(
                        &model, &config, warmup, steps, &device,
                    )
                    .map_err(anyhow::Error::msg)?
                })
            } else {
                let model = with_width(ModelConfig::from_name(&model).map_err(anyhow::Error::msg)?, width)?;
                let model = with_group_norm(model, group_norm)?;
                let config =
                    TrainConfig { batch_size: bs, adversarial: attack.training()?, ..TrainConfig::reference(model) };
                with_backend!(device, |B, device| {
                    fer_train::bench_train_steps::<burn::backend::Autodiff<B>>(&config, warmup, steps, &device)
                        .map_err(anyhow::Error::msg)?
                })
            };
            if json {
                let mut value = serde_json::to_value(&bench)?;
                value["framework"] = "burn".into();
                value["device"] = device.to_string().into();
                value["weight_gradient"] = format!("{:?}", fer_models::weight_gradient()).into();
                value["gpu_batch_norm"] = format!("{:?}", fer_models::gpu_batch_norm()).into();
                println!("{value}");
            } else {
                let attack =
                    bench.adversarial.as_ref().map(|a| format!(" with {a} adversarial training")).unwrap_or_default();
                println!(
                    "{}{attack} on {device}, batch {}: {:.1} img/s (median of {} steps after {} warm-up taking {:.1} s; {:.4} s/step)",
                    bench.model,
                    bench.batch_size,
                    bench.median_img_per_s,
                    bench.step_seconds.len(),
                    bench.warmup_steps,
                    bench.warmup_seconds.iter().sum::<f64>(),
                    bench.median_step_seconds
                );
            }
        }
        Command::Eval {
            checkpoint,
            split,
            tencrop,
            full,
            crop,
            batch,
            faces,
            copy_levels,
            data,
            device,
            json,
            answers,
        } => {
            let view = if full {
                View::Full
            } else if tencrop {
                View::TenCrop(crop)
            } else {
                View::CenterCrop(crop)
            };
            view.check().map_err(anyhow::Error::msg)?;
            anyhow::ensure!(batch > 0, "--batch must be positive");
            anyhow::ensure!(
                faces == FaceSubset::All || split != Split::Training,
                "--faces {faces:?} compares a test split with Training: choose --split public or private"
            );
            let mut inputs = format!("{view:?}");
            let evaluation = with_backend!(device, |B, device| {
                // The checkpoint first: a bad path fails before the data is read.
                let (model, _) = fer_models::load_checkpoint::<B>(&checkpoint, &device)?;
                let data = load_with_progress(data.as_deref())?;
                let (chosen, words) = face_subset(&data, split, faces, copy_levels);
                if let Some(words) = words {
                    inputs = format!("{inputs}, {words}");
                }
                anyhow::ensure!(!chosen.is_empty(), "no faces of {split} are {faces:?}");
                let chosen = std::sync::Arc::new(chosen);
                match &answers {
                    Some(path) => {
                        let (evaluation, each) =
                            fer_models::evaluate_with_answers(&model, chosen, view, batch, &device);
                        fer_train::write_answers(path, &each)?;
                        evaluation
                    }
                    None => fer_train::evaluate(&model, chosen, view, batch, &device),
                }
            });
            print_split_report(&checkpoint.display().to_string(), split, &inputs, &evaluation, json)?;
            if let Some(path) = answers
                && !json
            {
                println!("each face's answer: {}", path.display());
            }
        }
        Command::Ferplus { votes, data, answers, split, score, json } => {
            let data = load_with_progress(data.as_deref())?;
            let ferplus = fer_dataset::read_ferplus(&votes)?;
            ferplus.check_matches(&data, &votes)?;
            let agreements: Vec<fer_train::FerPlusAgreement> = Split::ALL
                .into_iter()
                .map(|s| fer_train::ferplus_agreement(s, ferplus.split(s), data.split(s)))
                .collect::<Result<_, _>>()?;
            if let Some(path) = &answers {
                let rows = fer_train::ferplus_answers(ferplus.split(split), data.split(split))?;
                fer_train::write_answers(path, &rows)?;
            }
            let mut scores = Vec::with_capacity(score.len());
            for path in &score {
                let answers = fer_train::read_answers(path)?;
                let s = fer_train::score_on_majority(&answers, ferplus.split(split))
                    .with_context(|| format!("{} on {split}", path.display()))?;
                scores.push((path.display().to_string(), s));
            }
            if json {
                let scores: Vec<serde_json::Value> = scores
                    .iter()
                    .map(|(path, s)| serde_json::json!({"answers": path, "split": split, "score": s}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"agreement": agreements, "scores": scores}))?
                );
            } else {
                print!("{}", ferplus_table(&agreements));
                for (path, s) in &scores {
                    let pct = |part: usize, whole: usize| 100.0 * part as f64 / whole.max(1) as f64;
                    println!(
                        "{path} on {split}: {:.2} % right on FER2013's labels; on the {} faces with a FER+ majority \
                         {:.2} % the majority, {:.2} % the label",
                        pct(s.right_on_label, s.faces),
                        s.with_majority,
                        pct(s.right_on_majority, s.with_majority),
                        pct(s.right_on_label_with_majority, s.with_majority)
                    );
                }
            }
            if let Some(path) = &answers {
                eprintln!(
                    "wrote the FER+ vote shares of {split} ({} faces) to {}",
                    data.split(split).len(),
                    path.display()
                );
            }
        }
        Command::Compare { a, b, json } => {
            let answers_a = fer_train::read_answers(&a)?;
            let answers_b = fer_train::read_answers(&b)?;
            let c = fer_models::compare_answers(&answers_a, &answers_b)
                .with_context(|| format!("{} against {}", a.display(), b.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                let pct = |x: f64| 100.0 * x;
                println!("{} faces", c.faces);
                println!(
                    "A {}: {:.2} % (95 % interval {})",
                    a.display(),
                    pct(c.accuracy_a),
                    percent_interval(c.accuracy_a_ci95)
                );
                println!(
                    "B {}: {:.2} % (95 % interval {})",
                    b.display(),
                    pct(c.accuracy_b),
                    percent_interval(c.accuracy_b_ci95)
                );
                println!(
                    "right both {}, only A {}, only B {}, neither {}",
                    c.both_right, c.only_a_right, c.only_b_right, c.both_wrong
                );
                println!("B − A: {}", difference_text(&c));
            }
        }
        Command::Ensemble { answers, select_on, rounds, out, json } => {
            let select_on = (!select_on.is_empty()).then_some(select_on.as_slice());
            let (report, ensemble) = fer_train::ensemble_answer_files(&answers, select_on, rounds)?;
            if let Some(path) = &out {
                fer_train::write_answers(path, &ensemble)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_ensemble(&report, out.as_deref());
            }
        }
        Command::RecalibrateBn { checkpoint, out, batches, bs, crop, seed, data, device } => {
            let faces = with_backend!(device, |B, device| {
                type AD = burn::backend::Autodiff<B>;
                let (model, header) = fer_models::load_checkpoint::<AD>(&checkpoint, &device)?;
                let data = load_with_progress(data.as_deref())?;
                let train = std::sync::Arc::new(data.split(Split::Training).clone());
                let view = View::RandomCropFlip(crop);
                let faces = fer_train::recalibrate_batch_norm(&model, train, view, bs, batches, seed, &device)
                    .map_err(anyhow::Error::msg)?;
                let mut meta = header.meta;
                meta["recalibrated_bn"] = serde_json::json!({
                    "from": checkpoint.display().to_string(), "batches": batches, "faces": faces, "crop": crop, "seed": seed,
                });
                fer_models::save_checkpoint(&out, &model, &header.model, meta)?;
                faces
            });
            println!(
                "{}: BatchNorm statistics recomputed from {faces} Training faces ({batches} batches); written to {}",
                checkpoint.display(),
                out.display()
            );
        }
        Command::Report { run, plots_only: true, .. } => {
            let files = RunFiles::new(&run);
            let report = fer_train::write_plots(&files)?;
            println!(
                "wrote {} and {} (PrivateTest {:.2} % at the PublicTest-selected epoch {})",
                files.curves_png().display(),
                files.confusion_png().display(),
                100.0 * report.private_test.accuracy,
                report.summary.selected_epoch + 1
            );
        }
        Command::Report { run, data, device, plots_only: false } => {
            let data = load_with_progress(data.as_deref())?;
            let files = RunFiles::new(&run);
            let report = with_backend!(device, |B, device| {
                fer_train::write_report::<burn::backend::Autodiff<B>>(&files, &data, &device)?
            });
            println!(
                "wrote {}: PrivateTest {:.2} % at the PublicTest-selected epoch {}",
                files.report().display(),
                100.0 * report.private_test.accuracy,
                report.summary.selected_epoch + 1
            );
        }
        Command::Export { checkpoint, out } => match checkpoint_arg::resolve(&checkpoint)? {
            CheckpointArg::Classifier(path) => {
                let (model, header) = fer_models::load_checkpoint::<CpuBackend>(&path, &Default::default())?;
                fer_models::export_safetensors(&model, &header.model, &out)?;
                let values = burn::module::Module::num_params(&model);
                println!("wrote {} (model `{}`, {values} values)", out.display(), header.model.label());
            }
            CheckpointArg::FeatureRun(run) => {
                let (config, weights) = fer_train::export_feature_run::<CpuBackend>(&run, &out, &Default::default())?;
                println!(
                    "wrote {} (CNN + features model of {}, reads {}: {} values per face)",
                    out.display(),
                    weights.display(),
                    config.feature_set.name(),
                    config.feature_set.len()
                );
            }
        },
        Command::Import { safetensors, out } => {
            let metadata = fer_models::safetensors_metadata(&safetensors)?;
            if metadata.contains_key(fer_models::SAFETENSORS_FEATURE_MODEL_KEY) {
                let config = fer_train::import_feature_run::<CpuBackend>(&safetensors, &out, &Default::default())?;
                println!(
                    "wrote run {} (config.json, best.bin: CNN + features model reading {})",
                    out.display(),
                    config.feature_set.name()
                );
            } else {
                let (model, config) = fer_models::import_safetensors::<CpuBackend>(&safetensors, &Default::default())?;
                let meta = serde_json::json!({ "imported_from": safetensors });
                fer_models::save_checkpoint(&out, &model, &config, meta)?;
                println!("wrote {} (model `{}`)", out.display(), config.name());
            }
        }
        Command::Devices { device, data, batch } => {
            println!("compiled backends: {}", compiled_backends());
            if let Some(spec) = device {
                check_device(spec, data.as_deref(), batch)?;
            }
        }
    }
    Ok(())
}

/// `fer features`: dlib landmarks + HOG of every face into a feature cache, or `--bench` timings.
#[cfg(feature = "dlib")]
fn features(
    data: Option<&Path>,
    out: &Path,
    landmark_model: Option<&Path>,
    threads: Option<usize>,
    bench: Option<usize>,
    json: bool,
) -> Result<()> {
    // The model first: a missing file fails before the data is read.
    let model = fer_features::LandmarkModel::open(landmark_model)?;
    let data = load_with_progress(data)?;
    if let Some(n) = bench {
        let faces = &data.split(Split::Training).images()[..n.min(data.split(Split::Training).len())];
        let t = fer_features::time_features(faces, &model);
        if json {
            let mut value = serde_json::to_value(t)?;
            value["faces_per_second"] = t.faces_per_second().into();
            println!("{value}");
        } else {
            let rate = |s: f64| t.faces as f64 / s.max(1e-12);
            println!(
                "{} faces, one thread: landmarks {:.0} faces/s, sliding HOG {:.0}, whole HOG {:.0}, both HOGs together {:.0}; all {:.0} faces/s",
                t.faces,
                rate(t.landmarks_seconds),
                rate(t.sliding_hog_seconds),
                rate(t.whole_hog_seconds),
                rate(t.hogs_seconds),
                t.faces_per_second()
            );
        }
        return Ok(());
    }
    let pool = rayon_pool(threads)?;
    let bar = ProgressBar::new(data.len() as u64).with_style(
        ProgressStyle::with_template("features [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let features = pool.install(|| fer_features::FaceFeatures::compute(&data, &model, |n| bar.set_position(n as u64)));
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    fer_features::write_feature_cache(&features, out)?;
    println!(
        "wrote {} ({} faces × {} values) in {seconds:.1}s ({:.0} faces/s on {} threads)",
        out.display(),
        data.len(),
        fer_features::FEATURES_PER_FACE,
        data.len() as f64 / seconds.max(1e-9),
        pool.current_num_threads()
    );
    Ok(())
}

/// A rayon pool of `threads` workers (all cores when `None`).
#[cfg(feature = "dlib")]
fn rayon_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be positive");
        builder = builder.num_threads(n);
    }
    builder.build().context("cannot start worker threads")
}

/// `fer ferplus`'s table: per split, FER+'s majority against FER2013's labels, overall and per
/// label.
fn ferplus_table(agreements: &[fer_train::FerPlusAgreement]) -> String {
    let pct = |part: usize, whole: usize| {
        if whole == 0 { "—".to_string() } else { format!("{:.2} %", 100.0 * part as f64 / whole as f64) }
    };
    let mut text = String::from(
        "FER+ majority (a strict plurality of the ten votes among the seven classes) against FER2013's label\n",
    );
    for a in agreements {
        text += &format!(
            "{}: {} faces, {} with a majority: {} of them the label ({}); {} without a vote for any of the seven classes; \
             mean share of a face's class votes on its label {:.2} %\n",
            a.split,
            a.faces,
            a.with_majority,
            a.majority_is_label,
            pct(a.majority_is_label, a.with_majority),
            a.no_class_votes,
            100.0 * a.mean_label_share
        );
        text += "  by label: the share whose majority is the label; the majority's most frequent other class\n";
        for label in Emotion::ALL {
            let row = &a.confusion[label.index()];
            let total: usize = row.iter().sum();
            let other = Emotion::ALL
                .into_iter()
                .filter(|&e| e != label && row[e.index()] > 0)
                .max_by_key(|e| (row[e.index()], std::cmp::Reverse(e.index())));
            let other = other.map_or(String::new(), |e| format!("; {} {}", e.name(), pct(row[e.index()], total)));
            text += &format!("    {:<9} {} of {total}{other}\n", label.name(), pct(row[label.index()], total));
        }
    }
    text
}

/// Loads FER2013 (CSV, gz or cache), with a progress bar over the bytes read from disk.
fn load_with_progress(explicit: Option<&Path>) -> Result<Fer2013> {
    let path = fer_dataset::default_data_path(explicit)?;
    let started = Instant::now();
    let data = if fer_dataset::is_cache_file(&path)? {
        fer_dataset::read_cache(&path)?
    } else {
        let file = File::open(&path).map_err(|source| DatasetError::Open { path: path.clone(), source })?;
        let bar = ProgressBar::new(file.metadata().map(|m| m.len()).unwrap_or(0)).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
                .context("progress template")?
                .progress_chars("=> "),
        );
        bar.set_message(format!("reading {}", path.display()));
        let data = fer_dataset::read_csv_from(bar.wrap_read(file), &path);
        bar.finish_and_clear();
        data?
    };
    tracing::info!("loaded {} faces from {} in {:.2?}", data.len(), path.display(), started.elapsed());
    Ok(data)
}

/// Builds one TenCrop batch on `spec`'s device and reduces it there: proves the backend works.
fn check_device(spec: DeviceSpec, data: Option<&Path>, batch: usize) -> Result<()> {
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;

    let split = match data {
        Some(path) => {
            let data = load_with_progress(Some(path))?;
            std::sync::Arc::new(data.split(fer_dataset::Split::PrivateTest).clone())
        }
        None => std::sync::Arc::new(synthetic_split(batch)),
    };
    let dataset = FaceDataset::new(split);
    let items: Vec<_> = (0..batch.min(dataset.len())).filter_map(|i| dataset.get(i)).collect();
    anyhow::ensure!(!items.is_empty(), "no faces to batch");
    let batcher = FaceBatcher::new(View::TenCrop(44), 0, dataset.len());
    with_backend!(spec, |B, device| {
        let started = Instant::now();
        let b: FaceBatch<B> = batcher.batch(items.clone(), &device);
        let dims = b.images.dims();
        let mean: f32 = b.images.mean().into_scalar();
        println!(
            "{spec}: TenCrop batch {dims:?} built and reduced on {device:?} in {:.2?} (mean pixel {mean:.4})",
            started.elapsed()
        );
    });
    Ok(())
}

fn synthetic_split(faces: usize) -> fer_dataset::SplitData {
    let mut split = fer_dataset::SplitData::new();
    for i in 0..faces {
        let mut img = fer_dataset::FaceImage::filled(0);
        for (k, p) in img.0.iter_mut().enumerate() {
            *p = ((k + 31 * i) % 256) as u8;
        }
        split.push(fer_dataset::Emotion::ALL[i % 7], img);
    }
    split
}

/// `fer eval --faces`: which faces of a test split to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FaceSubset {
    /// Every face of the split.
    All,
    /// The faces without a copy in Training.
    Unseen,
    /// The faces with a copy in Training.
    Copied,
}

/// The faces of `split` that `subset` names, and words saying which (none for all of them).
fn face_subset(
    data: &Fer2013,
    split: Split,
    subset: FaceSubset,
    copy_levels: u8,
) -> (fer_dataset::SplitData, Option<String>) {
    let faces = data.split(split);
    if subset == FaceSubset::All {
        return (faces.clone(), None);
    }
    let parts = fer_dataset::CopyPartition::new(faces, data.split(Split::Training), copy_levels);
    let keep = if subset == FaceSubset::Unseen { parts.unseen } else { parts.copied };
    let within =
        if copy_levels == 0 { "an exact copy".to_string() } else { format!("a copy within {copy_levels} levels") };
    let which = if subset == FaceSubset::Unseen { "without" } else { "with" };
    let words = format!("the {} of {} faces {which} {within} in Training", keep.len(), faces.len());
    (faces.select(&keep), Some(words))
}

/// A 95 % interval of a share as `low–high %` in percent, two decimals.
pub(crate) fn percent_interval([low, high]: [f64; 2]) -> String {
    format!("{:.2}–{:.2} %", 100.0 * low, 100.0 * high)
}

/// A paired comparison's B − A: the difference in points with its 95 % interval and McNemar's
/// exact p-value, saying when it is not significant at the 5 % level.
fn difference_text(c: &fer_models::PairedComparison) -> String {
    let pct = |x: f64| 100.0 * x;
    let p = if c.mcnemar_p >= 1e-3 { format!("{:.4}", c.mcnemar_p) } else { format!("{:.1e}", c.mcnemar_p) };
    format!(
        "{:+.2} points (95 % interval {:+.2} to {:+.2}); McNemar's exact test: p = {p}{}",
        pct(c.difference),
        pct(c.difference_ci95[0]),
        pct(c.difference_ci95[1]),
        if c.mcnemar_p < 0.05 { "" } else { " (not significant at the 5 % level)" }
    )
}

/// `fer ensemble`'s text: each member's accuracy and weight, the ensemble's, and the paired test
/// of the ensemble against each member.
fn print_ensemble(report: &fer_train::EnsembleReport, out: Option<&std::path::Path>) {
    let pct = |x: f64| 100.0 * x;
    match &report.selection {
        Some(s) => println!(
            "{} faces; weights chosen on the selection split by greedy selection: {} of {} rounds kept, {:.2} % there (optimistic: chosen on those faces)",
            report.faces,
            s.kept_rounds,
            s.rounds.len(),
            pct(s.accuracy)
        ),
        None => println!("{} faces; every member weighted equally", report.faces),
    }
    for (m, member) in report.members.iter().enumerate() {
        let selection =
            member.selection_accuracy.map_or_else(String::new, |a| format!(", selection split {:.2} %", pct(a)));
        println!(
            "member {} {}: weight {}, {:.2} % (95 % interval {}{selection})",
            m + 1,
            member.answers.display(),
            member.weight,
            pct(member.accuracy),
            percent_interval(member.accuracy_ci95)
        );
    }
    println!("ensemble: {:.2} % (95 % interval {})", pct(report.accuracy), percent_interval(report.accuracy_ci95));
    if report.selected_on_reported_faces {
        println!(
            "warning: the weights were chosen on these very faces (--select-on holds the reported faces): not an honest figure; select on another split (PublicTest) and report this one"
        );
    }
    for (m, member) in report.members.iter().enumerate() {
        let best =
            if report.best_selected_member == Some(m) { " (the best member on the selection split)" } else { "" };
        println!("ensemble − member {}{best}: {}", m + 1, difference_text(&member.ensemble_vs_member));
    }
    if let Some(path) = out {
        println!("the ensemble's answers: {}", path.display());
    }
}

/// Prints an evaluation of `what` on `split` as `fer eval` does: a line and per-class recalls, or JSON.
fn print_split_report(
    what: &str,
    split: Split,
    inputs: &str,
    evaluation: &fer_train::Evaluation,
    json: bool,
) -> Result<()> {
    let report = SplitReport::new(split, evaluation);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let interval =
            report.accuracy_ci95.map_or(String::new(), |ci| format!(" (95 % interval {})", percent_interval(ci)));
        println!(
            "{what} on {split} ({inputs}): accuracy {:.2} %{interval} over {} faces (balanced {:.2} %), mean loss {:.4}",
            100.0 * report.accuracy,
            report.faces,
            100.0 * report.balanced_accuracy,
            report.mean_loss
        );
        println!("  {:<9} {:>8} {:>8}", "class", "recall", "answers");
        for ((emotion, acc), (_, answers)) in report.per_class_accuracy.iter().zip(&report.answers) {
            let acc = acc.map_or("-".to_string(), |a| format!("{:.2} %", 100.0 * a));
            println!("  {:<9} {acc:>8} {answers:>8}", emotion.name());
        }
        if let Some(note) = dominant_answer_note("", &report) {
            println!("{note}");
        }
    }
    Ok(())
}

/// A warning when one class takes more than half of `report`'s answers: accuracy is then largely
/// that class's share of the faces (`under` names the condition, e.g. "under attack ").
fn dominant_answer_note(under: &str, report: &SplitReport) -> Option<String> {
    let d = report.dominant_answer()?;
    Some(format!(
        "  note: {under}{:.1} % of the answers are \"{}\" ({:.1} % of these faces are {}): read the \
         accuracy as largely that of a constant answer; balanced accuracy {:.2} %",
        100.0 * d.share_of_answers,
        d.emotion.name(),
        100.0 * d.share_of_faces,
        d.emotion.name(),
        100.0 * report.balanced_accuracy
    ))
}

#[cfg(test)]
mod tests {
    use super::{error_report, parse_weight_gradient};
    use fer_models::WeightGradient;

    #[test]
    fn weight_gradient_flag_values() {
        assert_eq!(parse_weight_gradient("backend"), Ok(WeightGradient::Backend));
        assert_eq!(parse_weight_gradient("gemm"), Ok(WeightGradient::Gemm { min_side: 16 }));
        assert_eq!(parse_weight_gradient("gemm:4"), Ok(WeightGradient::Gemm { min_side: 4 }));
        assert_eq!(parse_weight_gradient("gemm-stem"), Ok(WeightGradient::GemmStem { max_in_channels: 1 }));
        assert_eq!(parse_weight_gradient("gemm-stem:3"), Ok(WeightGradient::GemmStem { max_in_channels: 3 }));
        let bad = parse_weight_gradient("gemm-stem:x").expect_err("not a count");
        assert!(bad.contains("`x` in `gemm-stem:x` is not a channel count"), "{bad}");
        let bad = parse_weight_gradient("stem").expect_err("unknown");
        assert!(bad.contains("expected backend, gemm, gemm:MIN_SIDE, gemm-stem"), "{bad}");
    }

    #[test]
    fn error_report_names_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let model = fer_models::ModelError::Read { path: "/x.fer".into(), source: io };
        let e = anyhow::Error::new(model).context("evaluating");
        assert_eq!(error_report(&e), "evaluating: cannot read checkpoint /x.fer: no such file");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_report(&plain), "outer: inner");
    }
}
