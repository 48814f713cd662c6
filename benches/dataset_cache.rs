//! Loading FER2013: parsing the gzip'd CSV versus reading the `fer preprocess` cache.
//!
//! Uses the real file named by `FER2013_CSV` when set; otherwise a synthetic gzip'd CSV of
//! 3,000 random faces (same format, so the ratio is comparable, the absolute times are not).
//!
//! `FER2013_CSV=../shared/data/fer2013.csv.gz cargo bench --bench dataset_cache`

use std::io::Write;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use fer_rs::dataset::{Split, read_cache, read_csv, write_cache};
use flate2::Compression;
use flate2::write::GzEncoder;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

fn source(dir: &tempfile::TempDir) -> (PathBuf, &'static str) {
    if let Some(p) = std::env::var_os("FER2013_CSV").filter(|v| !v.is_empty()) {
        return (PathBuf::from(p), "real FER2013");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut text = String::from("emotion,pixels,Usage\n");
    for r in 0..3000 {
        let pixels: Vec<String> = (0..2304).map(|_| rng.random_range(0..256u32).to_string()).collect();
        text.push_str(&format!("{},{},{}\n", r % 7, pixels.join(" "), Split::ALL[r % 3].usage()));
    }
    let path = dir.path().join("synthetic.csv.gz");
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(text.as_bytes()).expect("in-memory gzip");
    std::fs::write(&path, gz.finish().expect("gzip")).expect("write synthetic csv");
    (path, "synthetic 3,000 faces")
}

fn loading(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (csv, label) = source(&dir);
    let data = read_csv(&csv).expect("csv parses");
    let cache = dir.path().join("fer2013.cache");
    write_cache(&data, &cache).expect("cache writes");
    eprintln!("dataset_cache: {label}, {} faces", data.len());

    let mut group = c.benchmark_group("load_fer2013");
    group.sample_size(10);
    group.bench_function("csv_gz_parse", |b| b.iter(|| read_csv(&csv).expect("csv parses")));
    group.bench_function("cache_read", |b| b.iter(|| read_cache(&cache).expect("cache reads")));
    group.finish();
}

// No HTML plots: criterion's plotters backend finds no font where plotters is built with
// ab_glyph (as fer-train builds it), and the figures that matter are in the terminal output.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = loading
}
criterion_main!(benches);
