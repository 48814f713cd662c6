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

/// `fer` with its info log (what a background run's log file holds).
fn fer_logged(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fer"))
        .args(args)
        .env_remove("FER2013_CSV")
        .env("RUST_LOG", "info")
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
/// The pixels of row `r` of [`write_csv`]'s file.
fn synthetic_pixels(r: usize) -> Vec<u8> {
    (0..2304).map(|i| ((i * 3 + r) % 256) as u8).collect()
}

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
        let pixels: Vec<String> = synthetic_pixels(r).iter().map(u8::to_string).collect();
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
        "--drop-last",
        "--eval-batch",
        "4",
        "--augment",
        "strong",
        "--augment-erase",
        "20",
        "--whole-faces",
        "50",
        "--label-smoothing",
        "0.1",
        "--mixup",
        "0.2",
        "--nesterov",
        "--ema",
        "0.99",
        "--device",
        "ndarray",
        "--data",
        csv,
        "--out",
        run_s,
    ];
    let out = fer_logged(&train_args);
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).expect("config")).expect("JSON");
    assert_eq!((config["drop_last"].as_bool(), config["eval_batch_faces"].as_u64()), (Some(true), Some(4)));
    let augmentation = &config["augmentation"];
    assert_eq!(
        [&augmentation["max_rotation_deg"], &augmentation["max_zoom_pct"], &augmentation["erase_pct"]],
        [10, 10, 20],
        "strong, erasing changed to 20 %: {augmentation}"
    );
    assert_eq!(config["whole_face_pct"].as_u64(), Some(50));
    assert_eq!((config["label_smoothing"].as_f64(), config["mixup_alpha"].as_f64()), (Some(0.1), Some(0.2)));
    assert_eq!((config["nesterov"].as_bool(), config["momentum"].as_f64()), (Some(true), Some(0.9)));
    assert_eq!(config["ema_decay"].as_f64(), Some(0.99));
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).expect("metrics");
    assert!(
        metrics.lines().next().is_some_and(|h| h.ends_with(",raw_public_acc,raw_private_acc,train_linearity_error")),
        "{metrics}"
    );
    let text = stdout(&out);
    assert!(
        text.contains("1 epochs done. Selected epoch 1 (the best clean PublicTest accuracy): clean PublicTest "),
        "{text}"
    );
    assert!(text.contains("Reference-style figure"), "{text}");
    assert!(text.contains("best.fer on PrivateTest's whole 48×48 faces (the view of the reference's attack"), "{text}");
    // Without a terminal the progress bar draws nothing: the log says how far the epoch is.
    assert!(stderr(&out).contains("epoch 1/1 step 1/"), "{}", stderr(&out));
    for file in
        ["config.json", "metrics.csv", "state.json", "latest.fer", "best.fer", "ema.fer", "latest.optim", "report.json"]
    {
        assert!(run.join(file).is_file(), "{file} written");
    }

    // An unknown augmentation and a bad mixup α are named, and no run is started; a resumed run
    // keeps its own augmentation (the flags conflict).
    let other = dir.path().join("other-run");
    for (from, to, words) in [
        ("strong", "heavy", "unknown augmentation `heavy` (expected none or strong)"),
        ("0.2", "0", "mixup α 0 must be positive"),
        ("0.99", "1", "EMA decay 1 is not in (0, 1)"),
        ("50", "101", "whole faces in 101 % of the batches: more than 100 %"),
    ] {
        let bad: Vec<&str> = train_args
            .iter()
            .map(|&a| match a {
                a if a == from => to,
                a if a == run_s => other.to_str().expect("utf-8"),
                a => a,
            })
            .collect();
        let out = fer(&bad);
        assert!(!other.join("config.json").exists());
        assert!(stderr(&out).contains(words), "{}", stderr(&out));
    }
    // Nesterov without momentum is refused by name.
    let no_momentum: Vec<&str> = train_args
        .iter()
        .map(|&a| if a == run_s { other.to_str().expect("utf-8") } else { a })
        .chain(["--momentum", "0"])
        .collect();
    let out = fer(&no_momentum);
    assert!(!other.join("config.json").exists());
    assert!(stderr(&out).contains("Nesterov momentum needs a momentum above 0"), "{}", stderr(&out));
    let out = fer(&["train", "--resume", "--augment", "strong", "--out", run_s, "--data", csv]);
    assert!(!out.status.success() && stderr(&out).contains("--augment"), "{}", stderr(&out));

    // A second run into the same directory is refused; --resume of a finished run only reports.
    let out = fer(&train_args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already holds a run"), "{}", stderr(&out));
    let out = fer(&["train", "--resume", "--out", run_s, "--device", "ndarray", "--data", csv]);
    assert!(out.status.success(), "{}", stderr(&out));

    let best = run.join("best.fer");
    let eval_args = ["eval", "--checkpoint", best.to_str().expect("utf-8"), "--split", "private", "--tencrop"];
    let eval_args = [&eval_args[..], &["--device", "ndarray", "--data", csv]].concat();
    let out = fer(&[&eval_args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(report["faces"], 10);
    assert_eq!(report["split"], "PrivateTest");
    assert_eq!(report["per_class_accuracy"].as_array().map(Vec::len), Some(7));
    let answers = answer_counts(&report);
    assert_eq!(answers.iter().sum::<u64>(), 10, "{report}");
    // The text form: the same answers per class, and a note exactly when one class has most of them.
    let out = fer(&eval_args);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("over 10 faces (balanced "), "{text}");
    assert!(text.contains("class       recall  answers"), "{text}");
    assert_eq!(table_answers(&text, 0), answers, "{text}");
    assert_eq!(text.contains("note: "), answers.iter().any(|&n| n > 5), "{text}");
    // The accuracy's 95 % (Wilson) interval, in the JSON and the line.
    let accuracy = report["accuracy"].as_f64().expect("accuracy");
    let right = (accuracy * 10.0).round() as u64;
    let interval = fer_models::wilson_interval(right, 10, fer_models::Z_95).expect("10 faces");
    assert_eq!(report["accuracy_ci95"], serde_json::json!(interval), "{report}");
    let line = format!("(95 % interval {:.2}–{:.2} %) over 10 faces", 100.0 * interval[0], 100.0 * interval[1]);
    assert!(text.contains(&line), "{text}");

    // Each face's answer (--answers) and the paired comparison of two answer files.
    let answers_a = dir.path().join("a.csv");
    let out = fer(&[&eval_args[..], &["--answers", answers_a.to_str().expect("utf-8")]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let each = fer_train::read_answers(&answers_a).expect("answers");
    assert_eq!(each.len(), 10);
    assert_eq!(each.iter().filter(|a| a.is_right()).count() as u64, right);
    let mut per_class = [0u64; 7];
    each.iter().for_each(|a| per_class[a.answer.index()] += 1);
    assert_eq!(per_class.to_vec(), answers, "the answers of the evaluation");
    let a_s = answers_a.to_str().expect("utf-8");
    let out = fer(&["compare", a_s, a_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("only A 0, only B 0") && text.contains("B − A: +0.00 points") && text.contains("p = 1.0000"),
        "{text}"
    );
    // Fewer faces, and a missing file: refused by name.
    let short = dir.path().join("short.csv");
    let rows: Vec<String> =
        std::fs::read_to_string(&answers_a).expect("read").lines().take(6).map(String::from).collect();
    std::fs::write(&short, rows.join("\n") + "\n").expect("write");
    let out = fer(&["compare", a_s, short.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("A has 10 faces, B 5: not the same faces"), "{}", stderr(&out));
    let out = fer(&["compare", a_s, "no-such-answers.csv"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-answers.csv"), "{}", stderr(&out));

    let out = fer(&["report", "--run", run_s, "--device", "ndarray", "--data", csv]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run.join("curves.png").is_file() && run.join("confusion_private.png").is_file());
    // --plots-only: from metrics.csv and report.json alone, without a checkpoint or the data.
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).expect("mkdir");
    for f in ["metrics.csv", "report.json"] {
        std::fs::copy(run.join(f), bare.join(f)).expect("copy");
    }
    let out = fer(&["report", "--run", bare.to_str().expect("utf-8"), "--plots-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for png in ["curves.png", "confusion_private.png"] {
        assert_eq!(std::fs::read(bare.join(png)).expect("plot"), std::fs::read(run.join(png)).expect("plot"), "{png}");
    }

    // Fine-tuning from best.fer: the model comes from the checkpoint; config.json names the file.
    let tuned = dir.path().join("tuned");
    let best_s = best.to_str().expect("utf-8");
    let tuned_s = tuned.to_str().expect("utf-8");
    let mut init_args = vec!["train", "--init", best_s, "--epochs", "1", "--bs", "16", "--no-tencrop"];
    init_args.extend(["--schedule", "cosine", "--warmup-epochs", "0", "--min-lr", "0.001"]);
    init_args.extend(["--device", "ndarray", "--data", csv, "--out", tuned_s]);
    let out = fer_logged(&init_args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("starting from the weights of"), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tuned.join("config.json")).expect("config.json")).expect("JSON");
    assert_eq!(config["init"]["path"], best_s);
    let checksum = fer_models::checkpoint_checksum(&best).expect("checksum");
    assert_eq!(config["init"]["checksum"], checksum);
    let schedule = &config["schedule"];
    assert_eq!(
        (&schedule["kind"], &schedule["warmup_epochs"], &schedule["min_lr"]),
        (&"cosine".into(), &0.into(), &0.001.into())
    );
    let from_scratch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).expect("config.json")).expect("JSON");
    assert_eq!(config["model"], from_scratch["model"], "the checkpoint's model");
    // Its answers against best.fer's on the same faces: the four counts add up, each accuracy is
    // its evaluation's.
    let answers_b = dir.path().join("b.csv");
    let tuned_best = tuned.join("best.fer");
    let tuned_eval = ["eval", "--checkpoint", tuned_best.to_str().expect("utf-8"), "--split", "private", "--tencrop"];
    let tuned_eval = [&tuned_eval[..], &["--device", "ndarray", "--data", csv, "--json"]].concat();
    let out = fer(&[&tuned_eval[..], &["--answers", answers_b.to_str().expect("utf-8")]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let tuned_report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let out = fer(&["compare", answers_a.to_str().expect("utf-8"), answers_b.to_str().expect("utf-8"), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c: fer_models::PairedComparison = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(c.both_right + c.only_a_right + c.only_b_right + c.both_wrong, 10);
    assert_eq!(c.accuracy_a, accuracy);
    assert_eq!(Some(c.accuracy_b), tuned_report["accuracy"].as_f64());
    assert_eq!(c.mcnemar_p, fer_models::mcnemar_exact_p(c.only_a_right, c.only_b_right));
    // The two as an ensemble: equal weights, the answers written with --out are the average of
    // the two files' probabilities, and each member's accuracy is its evaluation's.
    let (a_s, b_s) = (answers_a.to_str().expect("utf-8"), answers_b.to_str().expect("utf-8"));
    let ensemble = dir.path().join("ensemble.csv");
    let out = fer(&["ensemble", a_s, b_s, "--out", ensemble.to_str().expect("utf-8"), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e: fer_train::EnsembleReport = serde_json::from_str(&stdout(&out)).expect("JSON");
    let (read_a, read_b) =
        (fer_train::read_answers(&answers_a).expect("a"), fer_train::read_answers(&answers_b).expect("b"));
    let expected = fer_models::average_answers(&[&read_a, &read_b], &[1.0, 1.0]).expect("average");
    let written = fer_train::read_answers(&ensemble).expect("the ensemble's answers");
    assert_eq!(
        written.iter().map(|a| a.answer).collect::<Vec<_>>(),
        expected.iter().map(|a| a.answer).collect::<Vec<_>>()
    );
    assert_eq!(e.accuracy, expected.iter().filter(|a| a.is_right()).count() as f64 / 10.0);
    assert_eq!((e.faces, e.method.as_str(), e.members[0].accuracy), (10, "equal", accuracy));
    assert_eq!(Some(e.members[1].accuracy), tuned_report["accuracy"].as_f64());
    // Selected on the same files (a test only: select on PublicTest, report PrivateTest): the
    // text names the weights and the best member there; a selection list of another length is refused.
    let out = fer(&["ensemble", a_s, b_s, "--select-on", a_s, b_s, "--rounds", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("greedy selection") && text.contains("the best member on the selection split"), "{text}");
    assert!(text.contains("warning: the weights were chosen on these very faces"), "{text}");
    let out = fer(&["ensemble", a_s, b_s, "--select-on", a_s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1 answers files to select on for 2 members"), "{}", stderr(&out));
    // Distillation: best.fer's answers on the Training split teach a new run; config.json records
    // the teacher's file, checksum, weight and temperature. A weight out of range is named, and
    // the distillation flags need a teacher.
    let teacher = dir.path().join("teacher.csv");
    let teacher_s = teacher.to_str().expect("utf-8");
    let mut on_training = vec!["eval", "--checkpoint", best_s, "--split", "training", "--tencrop"];
    on_training.extend(["--device", "ndarray", "--data", csv, "--answers", teacher_s]);
    let out = fer(&on_training);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fer_train::read_answers(&teacher).expect("the teacher's answers").len(), 50);
    let student = dir.path().join("student");
    let mut student_args = vec!["train", "--model", "vgg-small", "--epochs", "1", "--bs", "16", "--no-tencrop"];
    student_args.extend(["--teacher", teacher_s, "--teacher", a_s, "--distill-weight", "0.7", "--temperature", "3"]);
    student_args.extend(["--device", "ndarray", "--data", csv, "--out", student.to_str().expect("utf-8")]);
    // The second teacher is PrivateTest's answers, not Training's: refused by name.
    let out = fer(&student_args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("a.csv: 10 answers, but the Training split holds 50 faces"), "{}", stderr(&out));
    let student_args: Vec<&str> = student_args.iter().map(|&a| if a == a_s { teacher_s } else { a }).collect();
    let out = fer_logged(&student_args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("distilling 2 teacher(s) into the run (weight 0.7, temperature 3)"),
        "{}",
        stderr(&out)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(student.join("config.json")).expect("config.json")).expect("JSON");
    let distillation = &config["distillation"];
    assert_eq!((distillation["weight"].as_f64(), distillation["temperature"].as_f64()), (Some(0.7), Some(3.0)));
    let checksum = crc32fast::hash(&std::fs::read(&teacher).expect("teacher"));
    assert_eq!(distillation["teachers"][1]["path"], teacher_s);
    assert_eq!(distillation["teachers"][1]["checksum"], checksum);
    let bad: Vec<&str> = student_args
        .iter()
        .map(|&a| match a {
            "0.7" => "1.5",
            a if a == student.to_str().expect("utf-8") => tuned_s,
            a => a,
        })
        .collect();
    let out = fer(&bad);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("distillation weight 1.5 is not in [0, 1]"), "{}", stderr(&out));
    let out = fer(&["train", "--distill-weight", "0.5", "--out", tuned_s, "--data", csv]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--teacher"), "{}", stderr(&out));
    // Adversarial fine-tuning with frozen BatchNorm statistics needs the checkpoint's statistics.
    let frozen = dir.path().join("frozen");
    let frozen_s = frozen.to_str().expect("utf-8");
    let mut frozen_args = vec!["train", "--epochs", "1", "--bs", "16", "--no-tencrop", "--adversarial", "fgsm"];
    frozen_args.extend(["--check-faces", "4", "--adv-bn", "running", "--adv-clean-bn", "running"]);
    frozen_args.extend(["--adv-eps-ramp", "0.5"]);
    frozen_args.extend(["--device", "ndarray", "--data", csv, "--out", frozen_s]);
    let out = fer(&[&frozen_args[..], &["--model", "vgg-small"]].concat());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("never update the running statistics"), "{}", stderr(&out));
    let out = fer_logged(&[&frozen_args[..], &["--init", best_s]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    // 50 training faces in batches of 16: 4 steps; the ramp of half an epoch reaches ε = 0.3 at
    // the 2nd, so the 1st (always logged) attacks at 0.15.
    assert!(stderr(&out).contains("step 1/4: loss"), "{}", stderr(&out));
    assert!(stderr(&out).contains("| attacked (ε 0.1500) loss"), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(frozen.join("config.json")).expect("config.json")).expect("JSON");
    assert_eq!(config["adversarial"]["clean_norm_statistics"], "running", "--adv-clean-bn reaches config.json");
    assert_eq!(config["adversarial"]["eps_ramp_epochs"], 0.5, "--adv-eps-ramp reaches config.json");
    let out = fer(&["train", "--init", best_s, "--model", "resnet-small", "--out", tuned_s, "--data", csv]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds model `vgg-small`, expected `resnet-small`"), "{}", stderr(&out));
    let out = fer(&["train", "--init", "/no/such.fer", "--out", tuned_s, "--data", csv]);
    assert!(stderr(&out).contains("cannot read checkpoint /no/such.fer"), "{}", stderr(&out));
    let out = fer(&["train", "--init", best_s, "--warmup-epochs", "1", "--out", tuned_s, "--data", csv]);
    assert!(!out.status.success() && stderr(&out).contains("add --schedule cosine"), "{}", stderr(&out));
    let out = fer(&["train", "--recipe", "fast", "--min-lr", "0.5", "--out", tuned_s, "--data", csv]);
    assert!(stderr(&out).contains("final learning rate 0.5 must be in [0, 0.01]"), "{}", stderr(&out));
    let out = fer(&["train", "--init", best_s, "--resume", "--out", tuned_s, "--data", csv]);
    assert!(!out.status.success() && stderr(&out).contains("cannot be used with"), "{}", stderr(&out));

    let out = fer(&["eval", "--checkpoint", "/no/such.fer", "--device", "ndarray", "--data", csv]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot read checkpoint /no/such.fer"), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("(os error 2)").count(), 1, "the cause once: {}", stderr(&out));
    let out = fer(&["train", "--init", best_s, "--width", "0.5", "--out", tuned_s, "--data", csv]);
    assert!(stderr(&out).contains("holds model `vgg-small`, expected `vgg (custom:"), "{}", stderr(&out));
    let out = fer(&["train", "--model", "vgg19", "--width", "0", "--out", tuned_s, "--data", csv]);
    assert!(stderr(&out).contains("--width: width factor 0 is not a finite number > 0"), "{}", stderr(&out));
    let out = fer(&["train", "--init", best_s, "--group-norm", "8", "--out", tuned_s, "--data", csv]);
    assert!(stderr(&out).contains("holds model `vgg-small`, expected `vgg (custom:"), "{}", stderr(&out));
    let frozen = ["--group-norm", "8", "--adversarial", "fgsm", "--adv-bn", "running", "--device", "ndarray"];
    let out = fer(&[&["train", "--model", "vgg-small", "--out", tuned_s, "--data", csv][..], &frozen[..]].concat());
    assert!(stderr(&out).contains("GroupNorm 8) has no BatchNorm"), "{}", stderr(&out));
    let out = fer(&["train", "--model", "alexnet", "--out", run_s, "--data", csv]);
    assert!(stderr(&out).contains("unknown model `alexnet`"), "{}", stderr(&out));
    let out = fer(&["train", "--model", "vgg-small", "--adversarial", "fgsm", "--adv-bn", "clean", "--out", run_s]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown BatchNorm statistics `clean`"), "{}", stderr(&out));
}

#[test]
fn adversarial_training_then_attacks_on_ndarray() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_csv(dir.path());
    let csv = csv.to_str().expect("utf-8");
    let run = dir.path().join("run");
    let run_s = run.to_str().expect("utf-8");
    let out = fer(&[
        "train",
        "--model",
        "vgg-small",
        "--epochs",
        "1",
        "--bs",
        "16",
        "--no-tencrop",
        "--adversarial",
        "fgsm",
        "--eps",
        "0.3",
        "--check-faces",
        "4",
        "--adv-bn",
        "running",
        "--adv-eval-view",
        "center",
        "--select",
        "mean-balanced",
        "--device",
        "ndarray",
        "--data",
        csv,
        "--out",
        run_s,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Under attack at that epoch (--select mean-balanced): PublicTest "),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("(headline; FGSM ε=0.300, centre 44×44 crop)."), "{}", stdout(&out));
    let criterion = "(the best mean of clean and attacked PublicTest balanced accuracy)";
    assert!(stdout(&out).contains(criterion), "{}", stdout(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).expect("config.json")).expect("JSON");
    assert_eq!(config["adversarial"]["norm_statistics"], "running", "--adv-bn reaches the run's config");
    assert_eq!(config["adversarial"]["eval_center_crop"], 44, "--adv-eval-view center: the training crops' side");
    assert_eq!(config["adversarial"]["selection"], "mean-balanced", "--select reaches the run's config");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).expect("metrics.csv");
    let header: Vec<&str> = metrics.lines().next().expect("header").split(',').collect();
    assert!(header.join(",").ends_with(
        "public_adv_acc,private_adv_acc,check_eval_acc,check_pgd_acc,catastrophic,train_adv_loss,train_adv_acc,\
         public_adv_balanced_acc,public_adv_top_answer_share,public_balanced_acc,public_adv_robust_acc,\
         check_eval_robust_acc,check_pgd_robust_acc,raw_public_acc,raw_private_acc,train_linearity_error"
    ));
    let share_column = header.iter().position(|&c| c == "public_adv_top_answer_share").expect("share column");
    // The closing lines name the epochs whose attacked answers were mostly one class.
    let constant = metrics.lines().skip(1).any(|line| {
        line.split(',').nth(share_column).and_then(|share| share.parse::<f64>().ok()).is_some_and(|share| share > 0.5)
    });
    assert_eq!(stdout(&out).contains("Constant answer under attack"), constant, "{}\n{metrics}", stdout(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).expect("report.json")).expect("JSON");
    assert_eq!(report["adversarial"]["attack"]["method"], "fgsm");
    assert_eq!(report["adversarial"]["private_test"]["faces"], 10);
    // Right both clean and under attack: at most the faces right under attack, and right clean.
    for (robust, attacked) in
        [("private_test_robust_accuracy", "private_test"), ("private_test_check_robust_accuracy", "private_test_check")]
    {
        let robust = report["adversarial"][robust].as_f64().expect(robust);
        let attacked = report["adversarial"][attacked]["accuracy"].as_f64().expect(attacked);
        let clean = report["adversarial"]["private_test_clean"]["accuracy"].as_f64().expect("clean");
        assert!(robust <= attacked.min(clean) + 1e-12, "{robust} vs {attacked}, {clean}");
    }
    let protocol = report["adversarial"]["protocol"].as_str().expect("protocol");
    assert!(protocol.starts_with("the centred 44×44 crop"), "{protocol}");
    // The ceiling of the attacked PrivateTest faces at the evaluation attack's ε, in report.json
    // and the closing lines.
    let ceiling = &report["adversarial"]["private_test_ceiling"];
    assert_eq!(ceiling["eps"], report["adversarial"]["attack"]["eps"], "{ceiling}");
    assert_eq!(ceiling["faces"], 10);
    let (at_most, at_least) =
        (ceiling["at_most"].as_f64().expect("at_most"), ceiling["at_least"].as_f64().expect("at_least"));
    assert!(0.0 < at_least && at_least <= at_most && at_most <= 1.0, "{ceiling}");
    assert!(stdout(&out).contains("Robustness ceiling of PrivateTest at ε = "), "{}", stdout(&out));
    // The closing lines warn exactly when one class has most of the selected model's answers.
    let (clean, attacked) =
        (answer_counts(&report["private_test"]), answer_counts(&report["adversarial"]["private_test"]));
    assert_eq!(attacked.iter().sum::<u64>(), 10);
    let notes: Vec<String> =
        stdout(&out).lines().filter(|l| l.contains("note: on PrivateTest ")).map(String::from).collect();
    let under_attack = notes.iter().filter(|l| l.contains("note: on PrivateTest under attack ")).count();
    assert_eq!(notes.len() - under_attack, usize::from(clean.iter().any(|&n| n > 5)), "{notes:?}");
    assert_eq!(under_attack, usize::from(attacked.iter().any(|&n| n > 5)), "{notes:?}");

    let best = run.join("best.fer");
    let best = best.to_str().expect("utf-8");
    let attack_dir = dir.path().join("attack");
    let attack_dir_s = attack_dir.to_str().expect("utf-8");
    // The run directory stands for its best.fer.
    let out = fer(&[
        "attack",
        "--checkpoint",
        run.to_str().expect("utf-8"),
        "--method",
        "pgd",
        "--eps",
        "8/255",
        "--steps",
        "2",
        "--examples",
        "3",
        "--eps-sweep",
        "0,8/255",
        "--sweep-methods",
        "fgsm,pgd",
        "--ceiling",
        "--out",
        attack_dir_s,
        "--json",
        "--device",
        "ndarray",
        "--data",
        csv,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
    assert_eq!(json["model"], "vgg-small");
    assert_eq!(json["checkpoint"], best);
    let out = fer(&["attack", "--checkpoint", best, "--feature-gradient", "image-branch", "--data", csv]);
    assert!(!out.status.success() && stderr(&out).contains("--feature-gradient is for"), "{}", stderr(&out));
    assert_eq!(json["split"], "PrivateTest");
    assert_eq!(json["config"]["attack"]["method"], "pgd");
    assert_eq!(json["config"]["attack"]["steps"], 2);
    assert_eq!(json["config"]["labels"], "predicted");
    assert_eq!(json["clean"]["faces"], 10);
    assert_eq!(json["adversarial"]["per_class_accuracy"].as_array().map(Vec::len), Some(7));
    assert!(json["max_perturbation"].as_f64().expect("number") <= 8.0 / 255.0 + 1e-6);
    // Right under attack = right both clean and under attack + wrong clean, right under attack.
    let count = |key: &str| json[key].as_u64().expect(key);
    let right_under_attack = json["adversarial"]["accuracy"].as_f64().expect("accuracy") * 10.0;
    assert_eq!((count("kept_right") + count("made_right")) as f64, right_under_attack.round(), "{json}");
    assert_eq!(json["robust_accuracy"].as_f64(), Some(count("kept_right") as f64 / 10.0));
    let sweep = std::fs::read_to_string(attack_dir.join("sweep.csv")).expect("sweep.csv");
    let lines: Vec<&str> = sweep.lines().collect();
    assert_eq!(
        lines[0],
        "method,attack,eps,clean_acc,adversarial_acc,seconds,adversarial_balanced_acc,adversarial_top_answer_share,\
         robust_acc"
    );
    assert_eq!(lines.len(), 5, "{sweep}");
    // --ceiling: the attacked faces' ceiling at the attack's ε in attack.json, and at each budget
    // of the sweep in ceiling.csv. The synthetic faces differ by up to 255 levels somewhere (their
    // pixels wrap around), so no two conflict at these budgets.
    assert_eq!(json["ceiling"]["eps"].as_f64(), Some(8.0 / 255.0), "{json}");
    assert_eq!(json["ceiling"]["conflict_levels"], 16);
    assert_eq!((json["ceiling"]["at_most"].as_f64(), json["ceiling"]["at_least"].as_f64()), (Some(1.0), Some(1.0)));
    let ceiling = std::fs::read_to_string(attack_dir.join("ceiling.csv")).expect("ceiling.csv");
    let rows: Vec<&str> = ceiling.lines().collect();
    assert_eq!(
        rows[0],
        "eps,conflict_levels,faces,conflicts,conflicted_faces,matched_pairs,at_most,kept_faces,at_least"
    );
    assert_eq!(rows.len(), 3, "{ceiling}");
    assert!(rows[2].starts_with("0.03137254901960784,16,10,0,0,0,1.0,10,1.0"), "{ceiling}");
    for png in ["robustness.png", "examples.png"] {
        let bytes = std::fs::read(attack_dir.join(png)).expect(png);
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 3_000, "{png}");
    }
    assert!(attack_dir.join("attack.json").is_file());

    // BatchNorm statistics recomputed from clean faces: a new checkpoint that says so and attacks.
    let recal = dir.path().join("recal.fer");
    let recal_s = recal.to_str().expect("utf-8");
    let args = ["recalibrate-bn", "--checkpoint", best, "--out", recal_s, "--batches", "3", "--bs", "8"];
    let out = fer(&[&args[..], &["--device", "ndarray", "--data", csv]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("from 24 Training faces (3 batches)"), "{}", stdout(&out));
    let header = fer_models::read_checkpoint_header(&recal).expect("a checkpoint");
    assert_eq!(header.meta["recalibrated_bn"]["batches"], 3);
    let recal_attack = dir.path().join("recal-attack");
    let recal_attack = recal_attack.to_str().expect("utf-8");
    let out = fer(&[
        "attack",
        "--checkpoint",
        recal_s,
        "--device",
        "ndarray",
        "--data",
        csv,
        "--limit",
        "4",
        "--out",
        recal_attack,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The text report: balanced accuracy, and answers per class before and under attack as in
    // attack.json, with a note on any class that has most of them.
    let text = stdout(&out);
    assert!(text.contains("balanced accuracy (mean recall per class) "), "{text}");
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(recal_attack).join("attack.json")).expect("attack.json"),
    )
    .expect("JSON");
    // Each accuracy's 95 % interval, in attack.json and the text.
    let interval = |side: &str| -> Vec<f64> {
        let pair = json[side]["accuracy_ci95"].as_array().unwrap_or_else(|| panic!("{side}: {json}"));
        pair.iter().map(|x| 100.0 * x.as_f64().expect("a bound")).collect()
    };
    let (c, a) = (interval("clean"), interval("adversarial"));
    let line = format!("95 % intervals: clean {:.2}–{:.2} %, adversarial {:.2}–{:.2} %", c[0], c[1], a[0], a[1]);
    assert!(text.contains(&line), "{text}");
    // Each face's answer before and under the attack, for `fer compare`: right both is kept_right.
    let answers_at = |name: &str| fer_train::read_answers(&std::path::Path::new(recal_attack).join(name)).expect(name);
    let (before, after) = (answers_at("answers-clean.csv"), answers_at("answers-attacked.csv"));
    assert_eq!((before.len(), after.len()), (4, 4));
    let both = before.iter().zip(&after).filter(|(b, a)| b.is_right() && a.is_right()).count();
    assert_eq!(Some(both as u64), json["kept_right"].as_u64(), "{json}");
    let (clean, attacked) = (answer_counts(&json["clean"]), answer_counts(&json["adversarial"]));
    assert_eq!(clean.iter().sum::<u64>(), 4);
    assert_eq!(table_answers(&text, 1), clean, "{text}");
    assert_eq!(table_answers(&text, 0), attacked, "{text}");
    assert_eq!(text.contains("note: without attack "), clean.iter().any(|&n| n > 2), "{text}");
    assert_eq!(text.contains("note: under attack "), attacked.iter().any(|&n| n > 2), "{text}");
    assert_eq!(
        text.contains("note: under attack "),
        text.contains(". The robust accuracy is lifted the same way: "),
        "{text}"
    );
    let (kept, made) = (json["kept_right"].as_u64().expect("kept"), json["made_right"].as_u64().expect("made"));
    let robust = format!("right both clean and under attack (robust accuracy) {:.2} %; ", 25.0 * kept as f64);
    assert!(text.contains(&robust) && text.contains(&format!("right under attack: {made} faces")), "{text}");
    assert_eq!(text.contains("were wrong without it"), made > 0 && 4 * made >= kept + made, "{text}");
    // The centre-crop view: said in the text and recorded in attack.json.
    let center_attack = dir.path().join("center-attack");
    let center_attack = center_attack.to_str().expect("utf-8");
    let center_args =
        ["attack", "--checkpoint", best, "--center-crop", "--crop", "40", "--limit", "4", "--out", center_attack];
    // … with PGD and a step size written as ε is.
    let center_args = [&center_args[..], &["--method", "pgd", "--steps", "2", "--alpha", "2/255"]].concat();
    let out = fer(&[&center_args[..], &["--device", "ndarray", "--data", csv]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(Predicted labels, centre crop 40):"), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(center_attack).join("attack.json")).expect("attack.json"),
    )
    .expect("JSON");
    assert_eq!(json["config"]["center_crop"], 40);
    assert_eq!(json["config"]["attack"]["alpha"].as_f64(), Some(2.0 / 255.0), "{}", json["config"]);
    assert!(json["config"]["tencrop"].is_null());
    // APGD (CE, then DLR), two passes each, on 4 faces: its settings in attack.json.
    let apgd_attack = dir.path().join("apgd-attack");
    let apgd_attack = apgd_attack.to_str().expect("utf-8");
    let apgd_args = ["attack", "--checkpoint", best, "--method", "apgd", "--steps", "2", "--limit", "4"];
    let out = fer(&[&apgd_args[..], &["--out", apgd_attack, "--device", "ndarray", "--data", csv]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("APGD-CE+DLR-2 ε=0.300"), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(apgd_attack).join("attack.json")).expect("attack.json"),
    )
    .expect("JSON");
    let attack = &json["config"]["attack"];
    assert_eq!((attack["method"].as_str(), attack["steps"].as_u64()), (Some("apgd"), Some(2)), "{attack}");
    assert_eq!(attack["loss"].as_str(), Some("ce-then-dlr"), "{attack}");
    assert!(json["max_perturbation"].as_f64().expect("distance") <= 0.3 + 1e-6);
    let out = fer(&["recalibrate-bn", "--checkpoint", "/no/such.fer", "--out", recal_s, "--device", "ndarray"]);
    assert!(stderr(&out).contains("cannot read checkpoint /no/such.fer"), "{}", stderr(&out));
    let out =
        fer(&[&args[..2], &[best, "--out", recal_s, "--batches", "0", "--device", "ndarray", "--data", csv]].concat());
    assert!(stderr(&out).contains("batches (0) must be positive"), "{}", stderr(&out));

    // TRADES: PGD on the clean answer distribution, loss CE(clean) + β·KL.
    let trades = dir.path().join("trades");
    let trades_s = trades.to_str().expect("utf-8");
    let mut trades_args = vec!["train", "--model", "vgg-small", "--epochs", "1", "--bs", "16", "--no-tencrop"];
    trades_args.extend(["--adv-steps", "2", "--eps", "8/255", "--check-faces", "4"]);
    trades_args.extend(["--device", "ndarray", "--data", csv, "--out", trades_s]);
    let out = fer(&[&trades_args[..], &["--adversarial", "pgd", "--trades-beta", "6"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(trades.join("config.json")).expect("config.json")).expect("JSON");
    assert_eq!(config["adversarial"]["trades_beta"], 6.0, "--trades-beta reaches config.json");
    assert_eq!(config["adversarial"]["labels"], "distribution", "TRADES's attack by default");
    assert!(trades.join("best.fer").exists());
    let rejected = |extra: &[&str], expected: &str| {
        let out = fer(&[&trades_args[..], extra].concat());
        assert!(!out.status.success(), "{extra:?} must fail");
        assert!(stderr(&out).contains(expected), "{extra:?}: {}", stderr(&out));
    };
    rejected(&["--adversarial", "pgd", "--trades-beta", "6", "--adv-weight", "0.3"], "cannot be used with");
    rejected(&["--adversarial", "pgd", "--trades-beta=-1"], "TRADES β = -1 must be a finite number ≥ 0");
    rejected(&["--adv-labels", "distribution", "--adversarial", "fgsm"], "use an attack with a random start");
    rejected(&["--adversarial", "fgsm", "--adv-noise", "0.1"], "a noise magnitude is a setting of n-fgsm only");
    rejected(&["--adversarial", "n-fgsm", "--adv-noise=-0.1"], "noise magnitude -0.1 must be a finite number >= 0");
    rejected(&["--adversarial", "n-fgsm", "--adv-noise", "lots"], "cannot read noise magnitude `lots`");

    // N-FGSM: noise 2ε (or --adv-noise) and one unprojected step of ε; evaluated with FGSM and PGD.
    let n_fgsm = dir.path().join("n-fgsm");
    let n_fgsm_args = [&trades_args[..trades_args.len() - 1], &[n_fgsm.to_str().expect("utf-8")]].concat();
    let out = fer(&[&n_fgsm_args[..], &["--adversarial", "n-fgsm", "--adv-noise", "12/255"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(n_fgsm.join("config.json")).expect("config.json")).expect("JSON");
    let attack = &config["adversarial"]["attack"];
    assert_eq!(attack["method"], "n-fgsm", "{attack}");
    assert_eq!(
        (attack["eps"].as_f64(), attack["noise"].as_f64(), attack["alpha"].as_f64()),
        (Some(8.0 / 255.0), Some(12.0 / 255.0), Some(8.0 / 255.0)),
        "{attack}"
    );
    assert_eq!(config["adversarial"]["eval_attack"]["method"], "fgsm");
    let metrics = std::fs::read_to_string(n_fgsm.join("metrics.csv")).expect("metrics.csv");
    assert_eq!(metrics.lines().count(), 2, "{metrics}");

    // ELLE: λ × the local-linearity error joins the loss; its epoch mean is in metrics.csv.
    let elle = dir.path().join("elle");
    let elle_args = [&trades_args[..trades_args.len() - 1], &[elle.to_str().expect("utf-8")]].concat();
    let out = fer_logged(&[&elle_args[..], &["--adversarial", "fgsm", "--adv-linearity", "100"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("local-linearity error"), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(elle.join("config.json")).expect("config.json")).expect("JSON");
    assert_eq!(config["adversarial"]["linearity_weight"], 100.0, "--adv-linearity reaches config.json");
    let rows = fer_train::read_metrics(&elle.join("metrics.csv")).expect("metrics.csv");
    let error = rows[0].train_linearity_error.expect("the epoch's local-linearity error");
    assert!(error.is_finite() && error > 0.0, "{error}");
    assert_eq!(
        fer_train::read_metrics(&n_fgsm.join("metrics.csv")).expect("metrics.csv")[0].train_linearity_error,
        None,
        "no error without ELLE"
    );
    rejected(
        &["--adversarial", "fgsm", "--adv-linearity", "0"],
        "local-linearity weight λ = 0 must be a finite number > 0",
    );
    rejected(&["--adv-linearity", "100"], "--adversarial");

    // Bad arguments name what is wrong.
    let bad = |extra: &[&str], expected: &str| {
        let mut args =
            vec!["attack", "--checkpoint", best, "--device", "ndarray", "--data", csv, "--out", attack_dir_s];
        args.extend_from_slice(extra);
        let out = fer(&args);
        assert!(!out.status.success(), "{extra:?} must fail");
        assert!(stderr(&out).contains(expected), "{extra:?}: {}", stderr(&out));
    };
    bad(&["--eps=-0.1"], "ε = -0.1 is outside [0, 1]");
    bad(&["--eps", "1.5"], "ε = 1.5 is outside [0, 1]");
    bad(&["--eps", "big"], "cannot read ε `big`");
    bad(&["--method", "pgd", "--steps", "0"], "PGD and APGD need at least 1 step");
    bad(&["--method", "pgd", "--alpha", "two"], "cannot read step size α `two`");
    bad(&["--method", "pgd", "--alpha=-1/255"], "must be a finite number >= 0");
    bad(&["--method", "deepfool"], "unknown attack `deepfool`");
    bad(&["--method", "apgd-ce", "--alpha", "0.01"], "apgd-ce sets its own step size");
    bad(&["--method", "apgd-dlr", "--labels", "distribution"], "cannot drive apgd-dlr");
    bad(&["--labels", "distribution"], "use an attack with a random start (fgsm-rs, n-fgsm or pgd)");
    bad(&["--labels", "gold"], "expected predicted, true or distribution");
    bad(&["--method", "n-fgsm"], "`n-fgsm` is a training attack");
    bad(&["--model", "resnet18"], "resnet18");
    bad(&["--center-crop", "--tencrop"], "cannot be used with");
    bad(&["--center-crop", "--crop", "50"], "centre crop side 50 is not in 1..=48");
    let out = fer(&["attack", "--checkpoint", "/no/such.fer", "--device", "ndarray", "--data", csv]);
    assert!(stderr(&out).contains("cannot read checkpoint /no/such.fer"), "{}", stderr(&out));
}

#[test]
fn bench_train_reports_a_median() {
    let out = fer(&[
        "bench-train",
        "--model",
        "vgg-small",
        "--bs",
        "4",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--device",
        "ndarray",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["framework"], "burn");
    assert_eq!(json["model"], "vgg-small");
    assert_eq!(json["batch_size"], 4);
    assert_eq!(json["step_seconds"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["warmup_seconds"].as_array().map(Vec::len), Some(1));
    assert!(json["median_img_per_s"].as_f64().expect("number") > 0.0);
    assert_eq!(json["weight_gradient"], "Backend");
    assert_eq!(json["gpu_batch_norm"], "Operation");
    // Weight gradients as batched GEMMs (what the GPU runs compare): the same step on ndarray.
    let gemm = ["bench-train", "--model", "vgg-small", "--bs", "4", "--steps", "1", "--warmup", "0"];
    let out = fer(&[&gemm[..], &["--weight-gradient", "gemm:4", "--device", "ndarray", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["weight_gradient"], "Gemm { min_side: 4 }");
    // Only the gray first layer's weight gradient through the GEMMs.
    let out = fer(&[&gemm[..], &["--weight-gradient", "gemm-stem", "--device", "ndarray", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["weight_gradient"], "GemmStem { max_in_channels: 1 }");
    let out = fer(&[&gemm[..], &["--weight-gradient", "gemm:x", "--device", "ndarray"]].concat());
    assert!(stderr(&out).contains("`x` in `gemm:x` is not a map side"), "{}", stderr(&out));
    // The composed BatchNorm (the GPU runs' other side): recorded in the JSON; ndarray ignores it.
    let out = fer(&[&gemm[..], &["--gpu-batch-norm", "composed", "--device", "ndarray", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["gpu_batch_norm"], "Composed");
    let out = fer(&[&gemm[..], &["--gpu-batch-norm", "fused", "--device", "ndarray"]].concat());
    assert!(stderr(&out).contains("`fused`: expected operation or composed"), "{}", stderr(&out));
    let half = ["bench-train", "--model", "vgg-small", "--width", "0.5", "--bs", "4", "--steps", "1", "--warmup", "0"];
    let out = fer(&[&half[..], &["--device", "ndarray", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["model"], "vgg(8-8-M-16-16-M-M)");
    let out = fer(&["bench-train", "--model", "cnn-hog-tiny", "--width", "0.5", "--device", "ndarray"]);
    assert!(stderr(&out).contains("--width applies to vgg*/resnet* models"), "{}", stderr(&out));
    // GroupNorm in place of BatchNorm: a VGG whose groups divide every layer's channels.
    let out = fer(&[&half[..], &["--group-norm", "4", "--device", "ndarray", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["model"], "vgg(8-8-M-16-16-M-M, GroupNorm 4)");
    let out = fer(&[&half[..], &["--group-norm", "16", "--device", "ndarray"]].concat());
    assert!(
        stderr(&out).contains("--group-norm: GroupNorm with 16 groups: convolution 1 of 4 has 8 channels"),
        "{}",
        stderr(&out)
    );
    let out = fer(&["bench-train", "--model", "resnet-small", "--group-norm", "4", "--device", "ndarray"]);
    assert!(stderr(&out).contains("--group-norm applies to VGG models"), "{}", stderr(&out));
    let out = fer(&["bench-train", "--model", "vgg-small", "--steps", "0", "--device", "ndarray"]);
    assert!(stderr(&out).contains("one timed step"), "{}", stderr(&out));
    let tiny = ["bench-train", "--model", "cnn-hog-tiny", "--bs", "4", "--steps", "2", "--warmup", "0"];
    let out = fer(&[&tiny[..], &["--feature-set", "landmarks", "--device", "ndarray", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!((json["model"].as_str(), json["crop"].as_u64()), (Some("cnn-hog-tiny"), Some(48)));
    assert_eq!(json["step_seconds"].as_array().map(Vec::len), Some(2));
    let out = fer(&["bench-train", "--model", "cnn-hog-c", "--device", "ndarray"]);
    assert!(stderr(&out).contains("unknown model `cnn-hog-c`"), "{}", stderr(&out));
    // Steps of adversarial training: the attack is named in the JSON and the text.
    let pgd = ["--adversarial", "pgd", "--eps", "8/255", "--adv-steps", "2", "--adv-source", "current"];
    let out = fer(&[&half[..], &pgd[..], &["--device", "ndarray", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["adversarial"], "PGD-2 ε=0.031 (current)", "{json}");
    let out = fer(&[&half[..], &["--adversarial", "fgsm", "--device", "ndarray"]].concat());
    assert!(stdout(&out).contains("with FGSM ε=0.300 (frozen) adversarial training"), "{}", stdout(&out));
    let elle = ["--adversarial", "fgsm", "--adv-linearity", "5000", "--device", "ndarray"];
    let out = fer(&[&half[..], &elle[..]].concat());
    assert!(stdout(&out).contains("with FGSM ε=0.300 (frozen) + ELLE λ=5000 adversarial training"), "{}", stdout(&out));
    let out = fer(&[&half[..], &["--adversarial", "fgsm", "--adv-linearity=-1", "--device", "ndarray"]].concat());
    assert!(stderr(&out).contains("local-linearity weight λ = -1 must be a finite number > 0"), "{}", stderr(&out));
    let out = fer(&[&half[..], &["--adversarial", "n-fgsm", "--eps", "8/255", "--device", "ndarray"]].concat());
    assert!(stdout(&out).contains("with N-FGSM ε=0.031 noise=0.063 (frozen) adversarial training"), "{}", stdout(&out));
    let out = fer(&[&tiny[..], &["--adversarial", "fgsm", "--device", "ndarray"]].concat());
    assert!(stderr(&out).contains("--adversarial applies to vgg*/resnet* models"), "{}", stderr(&out));
    let out = fer(&[&half[..], &["--adversarial", "cw", "--device", "ndarray"]].concat());
    assert!(!out.status.success() && stderr(&out).contains("cw"), "{}", stderr(&out));
}

#[cfg(feature = "dlib")]
#[test]
fn features_then_feature_model_training_and_search() {
    if !std::path::Path::new("/usr/share/dlib/shape_predictor_68_face_landmarks.dat").is_file() {
        eprintln!("skipped: dlib's landmark model is not installed (apt-get install libdlib-data)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_csv(dir.path());
    let csv = csv.to_str().expect("utf-8");
    let cache = dir.path().join("features.cache");
    let cache_s = cache.to_str().expect("utf-8");
    let out = fer(&["features", "--data", csv, "--out", cache_s, "--threads", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("70 faces × 2800 values"), "{}", stdout(&out));
    let out = fer(&["features", "--data", csv, "--bench", "5", "--json"]);
    let bench: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(bench["faces"], 5);

    let run = dir.path().join("run");
    let common = ["--model", "cnn-hog-tiny", "--bs", "16", "--device", "ndarray", "--data", csv, "--features", cache_s];
    let mut args = vec!["train-features", "--epochs", "2", "--stop-after", "1", "--out", run.to_str().expect("utf-8")];
    args.extend_from_slice(&common);
    let out = fer(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 of 2 epochs done"), "{}", stdout(&out));
    assert!(stdout(&out).contains("PrivateTest") && run.join("best.bin").is_file(), "{}", stdout(&out));
    // Starting again over it is refused; --resume finishes it from its own config.json.
    let out = fer(&args);
    assert!(!out.status.success() && stderr(&out).contains("--resume"), "{}", stderr(&out));
    let out = fer(&[
        "train-features",
        "--resume",
        "--out",
        run.to_str().expect("utf-8"),
        "--device",
        "ndarray",
        "--data",
        csv,
        "--features",
        cache_s,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 of 2 epochs done"), "{}", stdout(&out));
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).expect("metrics.csv");
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
    // The selected weights evaluated again give the run's PrivateTest headline.
    let run_s = run.to_str().expect("utf-8");
    let eval = ["eval-features", "--run", run_s, "--features", cache_s, "--data", csv, "--device", "ndarray"];
    let out = fer(&[&eval[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).expect("summary.json")).expect("JSON");
    assert_eq!(report["accuracy"], summary["selected_private_acc"], "{report}");
    assert_eq!(report["confusion"], summary["private_test"]["confusion"], "{report}");
    let out = fer(&[&eval[..], &["--weights", "latest", "--split", "public"]].concat());
    assert!(
        out.status.success() && stdout(&out).contains("latest.bin on PublicTest"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // `fer export` of the run and `fer import` back: a new run directory whose evaluation is the
    // same report; importing over it is refused.
    let exported = dir.path().join("b.safetensors");
    let imported = dir.path().join("imported");
    let imported_s = imported.to_str().expect("utf-8");
    let out = fer(&["export", "--checkpoint", run_s, "--out", exported.to_str().expect("utf-8")]);
    assert!(out.status.success() && stdout(&out).contains("reads landmarks-sliding-hog"), "{}", stderr(&out));
    let out = fer(&["import", "--safetensors", exported.to_str().expect("utf-8"), "--out", imported_s]);
    assert!(out.status.success() && imported.join("best.bin").is_file(), "{}", stderr(&out));
    let out = fer(&[&eval[..2], &[imported_s], &eval[3..], &["--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let again: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(again, report);
    let out = fer(&["import", "--safetensors", exported.to_str().expect("utf-8"), "--out", imported_s]);
    assert!(!out.status.success() && stderr(&out).contains("already exists"), "{}", stderr(&out));

    // `fer predict` with the run: the PrivateTest faces as PNG files get the answers the
    // evaluation counted (the same weights, whole faces and features computed from the files).
    let faces: Vec<String> = (60..70)
        .map(|r| {
            let path = dir.path().join(format!("private-{r}.png"));
            image::GrayImage::from_raw(48, 48, synthetic_pixels(r)).expect("48×48").save(&path).expect("png");
            path.to_str().expect("utf-8").to_string()
        })
        .collect();
    let predict = ["predict", "--checkpoint", run_s, "--no-detect", "--json", "--device", "ndarray"];
    let out = fer(&[&predict[..], &faces.iter().map(String::as_str).collect::<Vec<_>>()].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let mut confusion = vec![vec![0u64; 7]; 7];
    for (r, line) in (60..70).zip(stdout(&out).lines()) {
        let json: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let emotion: fer_dataset::Emotion =
            json["faces"][0]["emotion"].as_str().expect("emotion").parse().expect("a name");
        let p: Vec<f64> =
            json["faces"][0]["probabilities"].as_object().expect("map").values().filter_map(|v| v.as_f64()).collect();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{line}");
        confusion[r % 7][emotion.index()] += 1;
    }
    assert_eq!(serde_json::json!(confusion), report["confusion"], "{}", stdout(&out));
    // The weights file works as well as the directory; --tencrop and a weights file without its
    // run's config.json are refused by name.
    let best = run.join("best.bin");
    let out =
        fer(&[&predict[..1], &predict[3..], &["--checkpoint", best.to_str().expect("utf-8"), &faces[0]]].concat());
    assert!(out.status.success() && stdout(&out).contains("\"faces\""), "{}", stderr(&out));
    let out = fer(&[&predict[..], &["--tencrop", &faces[0]]].concat());
    assert!(!out.status.success() && stderr(&out).contains("whole 48×48 face"), "{}", stderr(&out));
    let alone = dir.path().join("alone.bin");
    std::fs::copy(&best, &alone).expect("copy");
    let out = fer(&["predict", "--checkpoint", alone.to_str().expect("utf-8"), "--no-detect", &faces[0]]);
    assert!(!out.status.success() && stderr(&out).contains("no config.json beside it"), "{}", stderr(&out));

    // `fer attack` on the run: through the whole pipeline, its clean score is the evaluation's
    // (faces and features computed the same way), the attacked faces stay within ε, and the
    // sweep's ε = 0 point is the clean score; the example figure is drawn. TenCrop is refused by name.
    let attack_dir = dir.path().join("attack");
    let attack_s = attack_dir.to_str().expect("utf-8");
    let attack = ["attack", "--checkpoint", run_s, "--data", csv, "--device", "ndarray", "--out", attack_s];
    let out =
        fer(&[&attack[..], &["--eps", "8/255", "--eps-sweep", "0,0.3", "--sweep-methods", "fgsm", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let attacked: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(attacked["model"], "cnn-hog-tiny, landmarks-sliding-hog", "{attacked}");
    assert_eq!(attacked["clean"]["confusion"], report["confusion"], "{attacked}");
    let moved = attacked["max_perturbation"].as_f64().expect("a number");
    assert!(moved > 0.0 && moved <= 8.0 / 255.0, "{attacked}");
    let sweep = std::fs::read_to_string(attack_dir.join("sweep.csv")).expect("sweep.csv");
    let rows: Vec<Vec<&str>> = sweep.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{sweep}");
    assert_eq!(rows[0][3], rows[0][4], "ε = 0 leaves the clean accuracy: {sweep}");
    assert!(attack_dir.join("robustness.png").is_file());
    let out = fer(&[&attack[..], &["--tencrop"]].concat());
    assert!(!out.status.success() && stderr(&out).contains("whole 48×48 face"), "{}", stderr(&out));
    let out = fer(&[&attack[..], &["--examples", "2", "--limit", "4"]].concat());
    assert!(out.status.success() && attack_dir.join("examples.png").is_file(), "{}", stderr(&out));
    let out = fer(&[&attack[..], &["--feature-gradient", "image-branch", "--json"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let ablation: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(ablation["model"], "cnn-hog-tiny, landmarks-sliding-hog, gradient through the image branch only");
    assert_eq!(ablation["clean"], attacked["clean"]);
    let out = fer(&[&attack[..], &["--feature-gradient", "hog"]].concat());
    assert!(!out.status.success() && stderr(&out).contains("unknown feature gradient"), "{}", stderr(&out));
    let out = fer(&[&attack[..], &["--model", "cnn-hog-b"]].concat());
    assert!(!out.status.success() && stderr(&out).contains("holds a cnn-hog-tiny model"), "{}", stderr(&out));

    let search = dir.path().join("search");
    let mut args = vec!["hyperopt", "--max-evals", "2", "--epochs", "1", "--out", search.to_str().expect("utf-8")];
    args.extend_from_slice(&common);
    let out = fer(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 trials"), "{}", stdout(&out));
    let trials = std::fs::read_to_string(search.join("trials.csv")).expect("trials.csv");
    assert!(trials.starts_with("trial,lr,lr_decay,momentum,keep_prob,score,seconds\n"), "{trials}");

    // A missing cache and a cache of other data are clear errors.
    let mut args = vec![
        "train-features",
        "--out",
        run.to_str().expect("utf-8"),
        "--model",
        "cnn-hog-tiny",
        "--device",
        "ndarray",
        "--data",
        csv,
        "--features",
        "/no/features.cache",
    ];
    let out = fer(&args);
    assert!(stderr(&out).contains("/no/features.cache"), "{}", stderr(&out));
    let other = dir.path().join("other.csv");
    let text = std::fs::read_to_string(csv).expect("csv").replacen("0,", "1,", 1);
    std::fs::write(&other, text).expect("write");
    args[8] = other.to_str().expect("utf-8");
    args[10] = cache_s;
    let out = fer(&args);
    assert!(stderr(&out).contains("does not belong to this data set"), "{}", stderr(&out));
    let out = fer(&["features", "--data", csv, "--landmark-model", "/no/model.dat"]);
    assert!(stderr(&out).contains("libdlib-data"), "{}", stderr(&out));
}

/// Test faces that are copies of Training faces: counted by `fer stats --copies`, left out or kept
/// alone by `fer eval --faces`.
#[test]
fn copies_of_training_faces_are_counted_and_can_be_left_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = String::from("emotion,pixels,Usage\n");
    // Training faces 0 and 1; PublicTest: a copy of 0 (same label); PrivateTest: a copy of 1 with
    // another label, and a face of its own.
    for (emotion, r, usage) in
        [(0, 0, "Training"), (1, 1, "Training"), (0, 0, "PublicTest"), (3, 1, "PrivateTest"), (4, 5, "PrivateTest")]
    {
        let pixels: Vec<String> = synthetic_pixels(r).iter().map(u8::to_string).collect();
        text.push_str(&format!("{emotion},{},{usage}\n", pixels.join(" ")));
    }
    let csv = dir.path().join("copies.csv");
    std::fs::write(&csv, text).expect("write csv");
    let csv = csv.to_str().expect("utf-8");
    let out = fer(&["stats", "--copies", "--data", csv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("PublicTest faces with a copy in Training: 1 of 1 faces (100.00 %) have an exact copy: 1 with the same label, 0 only with another"),
        "{text}"
    );
    assert!(text.contains("PrivateTest faces with a copy in Training: 1 of 2 faces (50.00 %) have an exact copy: 0 with the same label, 1 only with another"), "{text}");
    let out = fer(&["stats", "--copies", "--json", "--data", csv]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["copies_in_training"]["PrivateTest"]["other_label_only"], 1, "{json}");
    let faces_of = |split: usize| {
        json["counts"]["counts"][split].as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).sum::<u64>())
    };
    assert_eq!((faces_of(0), faces_of(1), faces_of(2)), (Some(2), Some(1), Some(2)), "{json}");

    let (checkpoint, _, _) = untrained_checkpoint(dir.path(), "vgg-small");
    let checkpoint = checkpoint.to_str().expect("utf-8");
    for (subset, faces) in [("all", 2), ("unseen", 1), ("copied", 1)] {
        let out = fer(&[
            "eval",
            "--checkpoint",
            checkpoint,
            "--faces",
            subset,
            "--device",
            "ndarray",
            "--data",
            csv,
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
        assert_eq!(json["faces"], faces, "--faces {subset}");
    }
    let out = fer(&["eval", "--checkpoint", checkpoint, "--faces", "unseen", "--device", "ndarray", "--data", csv]);
    assert!(stdout(&out).contains("the 1 of 2 faces without an exact copy in Training"), "{}", stdout(&out));
    let out = fer(&["eval", "--checkpoint", checkpoint, "--split", "training", "--faces", "unseen", "--data", csv]);
    assert!(!out.status.success() && stderr(&out).contains("choose --split public or private"), "{}", stderr(&out));
}

/// `fer ceiling` on three uniform PrivateTest faces: angry at level 100, happy at 50, sad at 150.
#[test]
fn ceiling_brackets_the_best_robust_accuracy_of_a_split() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = String::from("emotion,pixels,Usage\n");
    for (emotion, level, usage) in [
        (0, 10, "Training"),
        (1, 20, "PublicTest"),
        (3, 50, "PrivateTest"),
        (4, 150, "PrivateTest"),
        (0, 100, "PrivateTest"),
    ] {
        text.push_str(&format!("{emotion},{},{usage}\n", vec![level.to_string(); 2304].join(" ")));
    }
    let csv = dir.path().join("uniform.csv");
    std::fs::write(&csv, text).expect("write csv");
    let (csv, out_dir) = (csv.to_str().expect("utf-8"), dir.path().join("ceiling"));
    let args = ["ceiling", "--data", csv, "--eps-sweep", "0,0.1,0.3", "--out", out_dir.to_str().expect("utf-8")];
    let out = fer(&[&args[..], &["--json", "--examples", "4"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("(1 pairs)"), "one pair of unused faces conflicts: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON on stdout");
    assert_eq!(
        (json["split"].as_str(), json["view"].as_str(), json["faces"].as_u64()),
        (Some("PrivateTest"), Some("full"), Some(3))
    );
    let bracket = |i: usize| {
        let p = &json["points"][i];
        (
            p["conflicts"].as_u64().expect("conflicts"),
            p["at_most"].as_f64().expect("at_most"),
            p["at_least"].as_f64().expect("at_least"),
        )
    };
    // ε = 0: no conflict. ε = 0.1 (51 levels): 50–100 and 100–150 conflict, 50–150 do not, so
    // angry is lost and the other two kept. ε = 0.3 (153 levels): all three meet, one is kept.
    assert_eq!(bracket(0), (0, 1.0, 1.0));
    assert_eq!(bracket(1), (2, 2.0 / 3.0, 2.0 / 3.0));
    assert_eq!(bracket(2), (3, 2.0 / 3.0, 1.0 / 3.0));
    for file in ["ceiling.json", "ceiling.csv", "ceiling.png", "conflicts.png"] {
        assert!(out_dir.join(file).is_file(), "{file}");
    }
    // The table, and clear errors on bad budgets and crops.
    let out = fer(&args);
    assert!(out.status.success() && stdout(&out).contains("66.67 %    33.33 %"), "{}", stdout(&out));
    let out = fer(&["ceiling", "--data", csv, "--eps-sweep", "0,1.5", "--out", out_dir.to_str().expect("utf-8")]);
    assert!(!out.status.success() && stderr(&out).contains("1.5"), "{}", stderr(&out));
    let out = fer(&["ceiling", "--data", csv, "--center-crop", "--crop", "50"]);
    assert!(!out.status.success() && stderr(&out).contains("50"), "{}", stderr(&out));
}

type Untrained = (std::path::PathBuf, fer_models::Model<burn::backend::NdArray>, fer_models::ModelConfig);

/// An untrained `name` model saved as `dir/m.fer`.
fn untrained_checkpoint(dir: &Path, name: &str) -> Untrained {
    let config = fer_models::ModelConfig::from_name(name).expect("known");
    let model = config.init::<burn::backend::NdArray>(&Default::default());
    let path = dir.join("m.fer");
    fer_models::save_checkpoint(&path, &model, &config, serde_json::json!({"epoch": 1})).expect("save");
    (path, model, config)
}

#[cfg(feature = "dlib")]
#[test]
fn predict_finds_faces_in_photos_and_reports_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An untrained checkpoint: this test is about detection, boxes, output and errors (the
    // trained-model check on the same photo is in fer-train's real-data test).
    let (checkpoint, ..) = untrained_checkpoint(dir.path(), "vgg-small");
    let checkpoint = checkpoint.to_str().expect("utf-8");

    let astronaut =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/fer-features/tests/fixtures/astronaut.png");
    let photo = image::open(&astronaut).expect("astronaut.png").to_rgb8();
    // A canvas with two pasted heads (as JPEG), and a FER-sized 48×48 face crop.
    let head = image::imageops::crop_imm(&photo, 139, 43, 168, 168).to_image();
    let mut canvas = image::RgbImage::from_pixel(700, 300, image::Rgb([120, 120, 120]));
    image::imageops::replace(&mut canvas, &head, 30, 60);
    let big = image::imageops::resize(&head, 240, 240, image::imageops::FilterType::Triangle);
    image::imageops::replace(&mut canvas, &big, 400, 30);
    let canvas_path = dir.path().join("two.jpg");
    canvas.save(&canvas_path).expect("write JPEG");
    let crop = image::imageops::resize(
        &image::imageops::crop_imm(&image::DynamicImage::ImageRgb8(photo).to_luma8(), 170, 62, 106, 106).to_image(),
        48,
        48,
        image::imageops::FilterType::Triangle,
    );
    let crop_path = dir.path().join("crop.png");
    crop.save(&crop_path).expect("write PNG");
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not a png").expect("write");
    let annotated = dir.path().join("annotated");

    let paths =
        [astronaut.to_str().expect("utf-8"), canvas_path.to_str().expect("utf-8"), broken.to_str().expect("utf-8")];
    let mut args = vec!["predict", "--checkpoint", checkpoint, "--device", "ndarray", "--json"];
    args.extend(paths);
    args.extend(["--annotate", annotated.to_str().expect("utf-8")]);
    let out = fer(&args);
    assert!(!out.status.success(), "an unreadable image makes the exit status an error");
    assert!(stderr(&out).contains("broken.png") && stderr(&out).contains("1 of 3 images"), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 3, "one line per image, in order");

    let faces = lines[0]["faces"].as_array().expect("faces");
    assert_eq!((lines[0]["width"].as_u64(), lines[0]["height"].as_u64()), (Some(512), Some(512)));
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0]["box"], serde_json::json!({"left": 179, "top": 83, "width": 88, "height": 88}));
    let probabilities = faces[0]["probabilities"].as_object().expect("map");
    assert_eq!(probabilities.len(), 7);
    // Printed in dataset order (serde_json's Value re-sorts keys, so read the raw line).
    let raw = stdout(&out);
    let at: Vec<usize> = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
        .iter()
        .map(|n| raw.find(&format!("\"{n}\":")).expect("class printed"))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "dataset order: {raw}");
    let sum: f64 = probabilities.values().map(|v| v.as_f64().expect("number")).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    assert_eq!(probabilities[faces[0]["emotion"].as_str().expect("name")], faces[0]["confidence"]);

    let mut boxes: Vec<(i64, i64)> = lines[1]["faces"]
        .as_array()
        .expect("faces")
        .iter()
        .map(|f| (f["box"]["left"].as_i64().expect("left"), f["box"]["width"].as_i64().expect("width")))
        .collect();
    assert_eq!(boxes.len(), 2, "{boxes:?}");
    boxes.sort();
    // Pasted at x = 30 (face box 40 px in, 88 wide) and x = 400 scaled by 240/168 (dlib's pyramid
    // quantises box sizes, so only roughly 57 px in and 126 wide): each box inside its paste.
    assert!((boxes[0].0 - 70).abs() <= 8 && (boxes[0].1 - 88).abs() <= 12, "{boxes:?}");
    assert!(boxes[1].0 >= 400 && boxes[1].0 + boxes[1].1 <= 640 && boxes[1].1 > boxes[0].1 + 20, "{boxes:?}");
    assert!(lines[2]["error"].as_str().expect("error").contains("broken.png"));
    assert!(annotated.join("astronaut.annotated.png").is_file() && annotated.join("two.annotated.png").is_file());
    let drawn = image::open(annotated.join("astronaut.annotated.png")).expect("annotated PNG");
    assert_eq!((drawn.width(), drawn.height()), (512, 512));

    // A 48×48 face crop: nothing at 0 doublings, found with the automatic upsampling; with
    // --no-detect it is classified whole. Text output names the file and the face.
    let crop_s = crop_path.to_str().expect("utf-8");
    let out = fer(&["predict", "--checkpoint", checkpoint, "--device", "ndarray", "--upsample", "0", crop_s]);
    assert!(out.status.success(), "no face is not an error: {}", stderr(&out));
    assert!(stdout(&out).contains("crop.png: no face found"), "{}", stdout(&out));
    let out = fer(&["predict", "--checkpoint", checkpoint, "--device", "ndarray", crop_s]);
    assert!(stdout(&out).contains("crop.png: 1 face\n  face 1 at ("), "{}", stdout(&out));
    let out = fer(&["predict", "--checkpoint", checkpoint, "--device", "ndarray", "--no-detect", "--tencrop", crop_s]);
    assert!(stdout(&out).contains("face 1 at (0, 0) 48×48"), "{}", stdout(&out));

    let out = fer(&["predict", "--checkpoint", "/no/such.fer", "--device", "ndarray", crop_s]);
    assert!(!out.status.success() && stderr(&out).contains("cannot read checkpoint /no/such.fer"), "{}", stderr(&out));
    let out = fer(&["predict", "--checkpoint", checkpoint, "--upsample", "7", crop_s]);
    assert!(!out.status.success() && stderr(&out).contains("0..=4"), "{}", stderr(&out));
}

/// A fer built without dlib (`--no-default-features`, as the GPU bundle builds it) refuses what
/// needs dlib by name and still classifies face crops.
#[cfg(not(feature = "dlib"))]
#[test]
fn without_dlib_landmarks_and_detection_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_csv(dir.path());
    let out = fer(&["features", "--data", csv.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`dlib` feature"), "{}", stderr(&out));
    let (checkpoint, ..) = untrained_checkpoint(dir.path(), "vgg-small");
    let face = dir.path().join("face.png");
    image::GrayImage::new(48, 48).save(&face).expect("png");
    let args = ["predict", "--checkpoint", checkpoint.to_str().expect("utf-8"), "--device", "ndarray"];
    let out = fer(&[&args[..], &[face.to_str().expect("utf-8")]].concat());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("dlib") && stderr(&out).contains("--no-detect"), "{}", stderr(&out));
    let out = fer(&[&args[..], &["--no-detect", "--json", face.to_str().expect("utf-8")]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"emotion\""), "{}", stdout(&out));
}

#[test]
fn export_to_safetensors_and_import_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fer_path, model, config) = untrained_checkpoint(dir.path(), "resnet-small");
    let device = Default::default();
    let st = dir.path().join("m.safetensors");
    let back = dir.path().join("back.fer");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();

    let out = fer(&["export", "--checkpoint", &s(&fer_path), "--out", &s(&st)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("model `resnet-small`"), "{}", stdout(&out));
    let out = fer(&["import", "--safetensors", &s(&st), "--out", &s(&back)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (loaded, header) = fer_models::load_checkpoint::<burn::backend::NdArray>(&back, &device).expect("load");
    assert_eq!(header.model, config);
    let x = burn::tensor::Tensor::<burn::backend::NdArray, 4>::ones([1, 1, 44, 44], &device);
    assert_eq!(model.forward(x.clone()).into_data(), loaded.forward(x).into_data());

    let out = fer(&["import", "--safetensors", &s(&fer_path), "--out", &s(&back)]);
    assert!(!out.status.success() && stderr(&out).contains("not a safetensors file"), "{}", stderr(&out));
}

#[test]
fn train_on_two_cpu_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_csv(dir.path());
    let csv = csv.to_str().expect("utf-8");
    let run = dir.path().join("run");
    let run_s = run.to_str().expect("utf-8");
    let mut args = vec!["train", "--model", "vgg-small", "--epochs", "1", "--bs", "16", "--no-tencrop"];
    args.extend(["--devices", "ndarray:0,ndarray:1", "--data", csv, "--out", run_s]);
    let out = fer(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 epochs done"), "{}", stdout(&out));
    assert!(run.join("best.fer").is_file());

    let out = fer(&["train", "--devices", "cpu,ndarray", "--data", csv, "--out", run_s]);
    assert!(!out.status.success() && stderr(&out).contains("mixes backends"), "{}", stderr(&out));
}

/// The `answers` counts of a split report (JSON), in class order.
fn answer_counts(report: &serde_json::Value) -> Vec<u64> {
    let answers = report["answers"].as_array().expect("answers");
    answers.iter().map(|pair| pair[1].as_u64().expect("a count")).collect()
}

/// The `from_end`-th last whitespace-separated value (0: the last) of the seven per-class lines of a
/// printed table, as counts (counted from the end: a recall may print as `-` or as `12.50 %`).
fn table_answers(text: &str, from_end: usize) -> Vec<u64> {
    fer_dataset::Emotion::ALL
        .iter()
        .map(|emotion| {
            let name = emotion.name();
            let line = text.lines().find(|l| l.split_whitespace().next() == Some(name)).expect("a class line");
            line.split_whitespace().rev().nth(from_end).and_then(|v| v.parse().ok()).expect("a count")
        })
        .collect()
}

#[test]
fn ferplus_votes_agree_with_labels_and_teach_a_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = write_csv(dir.path());
    let csv = csv.to_str().expect("utf-8");
    // FER+'s vote column of each FER2013 class (angry → anger, …, neutral → neutral).
    let column = [4, 5, 6, 1, 3, 2, 0];
    let mut text =
        String::from("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n");
    // Row r (label r % 7): every fifth row 7 votes happy and 3 its label; row 49 only not-a-face;
    // the others 7 votes its label and 3 contempt.
    let mut expected = [[0usize; 3]; 3]; // per split: faces with a majority, of them the label, no class votes
    for r in 0..70 {
        let (usage, split) = if r < 50 {
            ("Training", 0)
        } else if r < 60 {
            ("PublicTest", 1)
        } else {
            ("PrivateTest", 2)
        };
        let label = r % 7;
        let mut counts = [0u8; 10];
        if r == 49 {
            counts[9] = 10;
            expected[split][2] += 1;
        } else if r % 5 == 0 {
            counts[1] += 7;
            counts[column[label]] += 3;
            expected[split][0] += 1;
            expected[split][1] += usize::from(label == 3);
        } else {
            counts[column[label]] = 7;
            counts[7] = 3;
            expected[split][0] += 1;
            expected[split][1] += 1;
        }
        let counts: Vec<String> = counts.iter().map(u8::to_string).collect();
        text.push_str(&format!("{usage},fer{r:07}.png,{}\n", counts.join(",")));
    }
    let votes = dir.path().join("fer2013new.csv");
    std::fs::write(&votes, &text).expect("write votes");
    let votes_s = votes.to_str().expect("utf-8");
    let teacher = dir.path().join("ferplus-training.csv");
    let teacher_s = teacher.to_str().expect("utf-8");

    let out = fer(&["ferplus", votes_s, "--data", csv, "--json", "--answers", teacher_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let json = &json["agreement"];
    for (split, [with_majority, is_label, no_votes]) in expected.iter().enumerate() {
        let a = &json[split];
        assert_eq!(a["with_majority"].as_u64(), Some(*with_majority as u64), "{a}");
        assert_eq!(a["majority_is_label"].as_u64(), Some(*is_label as u64), "{a}");
        assert_eq!(a["no_class_votes"].as_u64(), Some(*no_votes as u64), "{a}");
    }
    assert_eq!(json[0]["split"], "Training");
    // PrivateTest's rows 60 (sad) and 65 (fear) have a happy majority; the other eight agree.
    let confusion = &json[2]["confusion"];
    assert_eq!(
        (confusion[4][3].as_u64(), confusion[2][3].as_u64(), confusion[2][2].as_u64()),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(confusion[0][0].as_u64(), Some(1), "row 63 is angry, and agrees");
    // The answers: one per Training face, the label FER2013's, the vote shares over the seven
    // classes (contempt left out), the label alone where no class got a vote.
    let answers = fer_train::read_answers(&teacher).expect("answers");
    assert_eq!(answers.len(), 50);
    let p = |face: usize| answers[face].probabilities.expect("probabilities");
    assert_eq!((answers[0].label, answers[0].answer), (fer_dataset::Emotion::Angry, fer_dataset::Emotion::Happy));
    assert!((p(0)[3] - 0.7).abs() < 1e-6 && (p(0)[0] - 0.3).abs() < 1e-6, "{:?}", p(0));
    assert_eq!(p(1), [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "disgust's 7 votes are all of its class votes");
    assert_eq!(p(49)[49 % 7], 1.0, "not a face: the label");
    let table = stdout(&fer(&["ferplus", votes_s, "--data", csv]));
    assert!(table.contains("PrivateTest: 10 faces, 10 with a majority: 8 of them the label (80.00 %)"), "{table}");

    // The vote shares as a classifier's answers, scored: right on FER2013's
    // label on 42 of 50 Training faces (8 of the 10 happy majorities are not the label), on 41 of
    // the 49 with a majority; 100 % on the majority.
    let out = fer(&["ferplus", votes_s, "--data", csv, "--score", teacher_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("on Training: 84.00 % right on FER2013's labels; on the 49 faces with a FER+ majority 100.00 % the majority, 83.67 % the label"),
        "{}",
        stdout(&out)
    );
    let out = fer(&["ferplus", votes_s, "--data", csv, "--score", teacher_s, "--split", "private"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("50 answers for 10 faces with FER+ votes"), "{}", stderr(&out));

    // The votes teach a run as a teacher's answers do.
    let student = dir.path().join("student");
    let mut args = vec!["train", "--model", "vgg-small", "--epochs", "1", "--bs", "16", "--no-tencrop"];
    args.extend(["--teacher", teacher_s, "--temperature", "1", "--device", "ndarray", "--data", csv]);
    args.extend(["--out", student.to_str().expect("utf-8")]);
    let out = fer_logged(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("distilling 1 teacher(s) into the run (weight 0.5, temperature 1)"),
        "{}",
        stderr(&out)
    );

    // Votes of other data (a row short) are refused, naming the file and the counts.
    let short: Vec<&str> = text.lines().filter(|l| !l.contains("fer0000049.png")).collect();
    std::fs::write(&votes, short.join("\n") + "\n").expect("write");
    let out = fer(&["ferplus", votes_s, "--data", csv]);
    assert!(!out.status.success());
    let m = stderr(&out);
    assert!(m.contains("fer2013new.csv: 49 Training rows, but the FER2013 data holds 50 Training faces"), "{m}");
}
