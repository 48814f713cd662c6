//! `fer`: the fer-rs command line. It only parses arguments and calls the fer-rs crates.

mod backend;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fer_dataset::{DatasetError, FaceBatch, FaceBatcher, FaceDataset, Fer2013, View};
use indicatif::{ProgressBar, ProgressStyle};

use backend::{DeviceSpec, compiled_backends, with_backend};

/// Facial expression recognition on FER2013 with Burn.
#[derive(Parser)]
#[command(name = "fer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Stats { data, json } => {
            let data = load_with_progress(data.as_deref())?;
            let counts = data.counts();
            if json {
                println!("{}", serde_json::to_string_pretty(&counts)?);
            } else {
                print!("{counts}");
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
        Command::Devices { device, data, batch } => {
            println!("compiled backends: {}", compiled_backends());
            if let Some(spec) = device {
                check_device(spec, data.as_deref(), batch)?;
            }
        }
    }
    Ok(())
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
