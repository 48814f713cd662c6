//! End-to-end checks of the `fer` binary on small generated files.

use std::path::Path;
use std::process::{Command, Output};

fn fer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fer"))
        .args(args)
        .env_remove("FER2013_CSV")
        .env("RUST_LOG", "warn")
        .output()
        .expect("the fer binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// 70 synthetic rows: ten of each class, split 50 / 10 / 10.
fn write_csv(dir: &Path) -> std::path::PathBuf {
    let mut text = String::from("emotion,pixels,Usage\n");
    for r in 0..70 {
        let usage = if r < 50 {
            "Training"
        } else if r < 60 {
            "PublicTest"
        } else {
            "PrivateTest"
        };
        let pixels: Vec<String> = (0..2304).map(|i| ((i * 3 + r) % 256).to_string()).collect();
        text.push_str(&format!("{},{},{usage}\n", r % 7, pixels.join(" ")));
    }
    let path = dir.join("small.csv");
    std::fs::write(&path, text).expect("write csv");
    path
}

#[test]
fn stats_prints_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_csv(dir.path());
    let out = fer(&["stats", "--data", csv.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let training = table.lines().find(|l| l.starts_with("Training")).expect("Training row");
    let cells: Vec<&str> = training.split_whitespace().collect();
    assert_eq!(cells, ["Training", "50", "8", "7", "7", "7", "7", "7", "7"], "{table}");
    assert!(
        table.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>() == ["all", "70", "10", "10", "10", "10", "10", "10", "10"]
        ),
        "{table}"
    );
}

#[test]
fn preprocess_then_stats_from_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_csv(dir.path());
    let cache = dir.path().join("small.cache");
    let out = fer(&["preprocess", "--data", csv.to_str().expect("utf-8"), "--out", cache.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("70 faces"), "{}", stdout(&out));
    let from_csv = stdout(&fer(&["stats", "--data", csv.to_str().expect("utf-8")]));
    let from_cache = stdout(&fer(&["stats", "--data", cache.to_str().expect("utf-8")]));
    assert_eq!(from_csv, from_cache);

    // A corrupted cache is refused with a message naming it.
    let mut bytes = std::fs::read(&cache).expect("read cache");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&cache, bytes).expect("write");
    let out = fer(&["stats", "--data", cache.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corrupt cache") && stderr(&out).contains("small.cache"), "{}", stderr(&out));
}

#[test]
fn bad_row_fails_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_csv(dir.path());
    let text = std::fs::read_to_string(&csv).expect("read");
    let broken = text.replacen("\n3,", "\n9,", 1); // line 5 holds label 3 → 9
    std::fs::write(&csv, broken).expect("write");
    let out = fer(&["stats", "--data", csv.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("small.csv:5: field `emotion`") && err.contains("value `9`"), "{err}");
}

#[test]
fn missing_data_says_where_to_get_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_fer"))
        .arg("stats")
        .current_dir(dir.path())
        .env_remove("FER2013_CSV")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no FER2013 file found") && err.contains("FER2013_CSV") && err.contains("--data"), "{err}");

    let out = fer(&["stats", "--data", "/no/such/fer2013.csv"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot open /no/such/fer2013.csv"), "{}", stderr(&out));
}

#[test]
fn devices_lists_backends_and_runs_a_batch() {
    let out = fer(&["devices", "--device", "ndarray", "--batch", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("compiled backends: flex, ndarray"), "{text}");
    assert!(text.contains("TenCrop batch [40, 1, 44, 44]"), "{text}");

    if !cfg!(feature = "cuda") {
        let out = fer(&["devices", "--device", "cuda:0"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("not compiled into this binary (it has: flex, ndarray"), "{}", stderr(&out));
    }
}

#[test]
fn train_eval_report_round_trip_on_ndarray() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_csv(dir.path());
    let csv = csv.to_str().expect("utf-8");
    let run = dir.path().join("run");
    let run_s = run.to_str().expect("utf-8");
    let train_args = [
        "train",
        "--model",
        "vgg-small",
        "--epochs",
        "1",
        "--bs",
        "16",
        "--no-tencrop",
        "--device",
        "ndarray",
        "--data",
        csv,
        "--out",
        run_s,
    ];
    let out = fer(&train_args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 epochs done. Selected epoch 1") && text.contains("Reference-style figure"), "{text}");
    for file in ["config.json", "metrics.csv", "state.json", "latest.fer", "best.fer", "latest.optim", "report.json"] {
        assert!(run.join(file).is_file(), "{file} written");
    }

    // A second run into the same directory is refused; --resume of a finished run only reports.
    let out = fer(&train_args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already holds a run"), "{}", stderr(&out));
    let out = fer(&["train", "--resume", "--out", run_s, "--device", "ndarray", "--data", csv]);
    assert!(out.status.success(), "{}", stderr(&out));

    let best = run.join("best.fer");
    let out = fer(&[
        "eval",
        "--checkpoint",
        best.to_str().expect("utf-8"),
        "--split",
        "private",
        "--tencrop",
        "--device",
        "ndarray",
        "--data",
        csv,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(report["faces"], 10);
    assert_eq!(report["split"], "PrivateTest");
    assert_eq!(report["per_class_accuracy"].as_array().map(Vec::len), Some(7));

    let out = fer(&["report", "--run", run_s, "--device", "ndarray", "--data", csv]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run.join("curves.png").is_file() && run.join("confusion_private.png").is_file());

    let out = fer(&["eval", "--checkpoint", "/no/such.fer", "--device", "ndarray", "--data", csv]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot read checkpoint /no/such.fer"), "{}", stderr(&out));
    let out = fer(&["train", "--model", "alexnet", "--out", run_s, "--data", csv]);
    assert!(stderr(&out).contains("unknown model `alexnet`"), "{}", stderr(&out));
}
