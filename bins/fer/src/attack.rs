//! `fer attack`: robustness of a checkpoint under FGSM / FGSM-RS / PGD, ε sweeps, example figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fer_adversarial::{
    Attack, FeatureGradient, LabelSource, RobustCeiling, Robustness, RobustnessConfig, adversarial_examples, eps_sweep,
    evaluate_robustness, example_faces, parse_eps,
};
use fer_dataset::{Split, SplitData, View};
use fer_train::SplitReport;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::{DeviceSpec, with_backend};
use crate::checkpoint_arg::{CheckpointArg, resolve};
use crate::faces_arg::FacesArgs;

/// `fer attack` flags. Defaults are the reference's protocol: FGSM, ε = 0.3, labels = the model's
/// predictions, full 48×48 PrivateTest faces, inference mode.
#[derive(clap::Args)]
pub struct AttackArgs {
    /// Checkpoint file (`best.fer` / `latest.fer` of a run) or run directory (its `best.fer`); or
    /// the CNN + landmarks + HOG model of a `fer train-features` run (its directory, or `best.bin`
    /// / `latest.bin`), attacked through its whole pipeline: the gradient flows through the image
    /// branch and the HOG, and the attacked faces are scored as 8-bit images with landmarks and
    /// HOG computed anew.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Refuse a checkpoint that does not hold this model (vgg19, resnet18, cnn-hog-b, …).
    #[arg(long)]
    model: Option<String>,
    /// Attack: fgsm, fgsm-rs, pgd, or APGD (Croce & Hein 2020, AutoAttack's PGD with momentum
    /// and a step size of its own, halved where the loss stalls): apgd-ce (cross-entropy),
    /// apgd-dlr (difference of logits ratio, blind to scaled logits) or apgd (both, a face broken
    /// by either counts as broken).
    #[arg(long, default_value = "fgsm")]
    method: String,
    /// L∞ budget on pixels in [0, 1]: 0.3, 8/255, …
    #[arg(long, default_value = "0.3")]
    eps: String,
    /// Iterations (gradient passes) of pgd and of each APGD run [default: 10 for pgd, 100 for
    /// apgd-ce / apgd-dlr / apgd].
    #[arg(long)]
    steps: Option<usize>,
    /// Step size: 0.075, 2/255, … [default: 1.25ε for fgsm-rs, 2.5ε/steps for pgd; APGD sets
    /// its own and refuses one].
    #[arg(long, value_parser = fer_adversarial::parse_step_size)]
    alpha: Option<f64>,
    /// Labels the attack pushes away from: predicted (the reference), true, or distribution (the
    /// model's clean softmax: the attack maximises KL(clean ‖ attacked), TRADES's attack; needs
    /// fgsm-rs or pgd).
    #[arg(long, default_value = "predicted")]
    labels: LabelSource,
    #[command(flatten)]
    faces: FacesArgs,
    /// Faces per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seed of random starts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Comma-separated budgets for a sweep (e.g. 0,1/255,2/255,4/255,8/255,0.1,0.2,0.3): writes
    /// sweep.csv and robustness.png into --out.
    #[arg(long)]
    eps_sweep: Option<String>,
    /// Methods of the sweep, comma-separated.
    #[arg(long, default_value = "fgsm,pgd")]
    sweep_methods: String,
    /// Also bound what any classifier could do on the attacked faces: the robustness ceiling, the
    /// best accuracy under an L∞ attack of budget ε that a classifier of the same view can keep
    /// (pairs of differently labelled faces within 2ε of each other cannot both stay right). In
    /// attack.json and the printout; with --eps-sweep, at each budget, in ceiling.csv and drawn in
    /// robustness.png. See `fer ceiling`.
    #[arg(long)]
    ceiling: bool,
    /// Draw this many faces (clean, perturbation, adversarial) into examples.png in --out.
    #[arg(long, default_value_t = 0)]
    examples: usize,
    /// Directory for attack.json, answers-clean.csv and answers-attacked.csv (each face's answer
    /// before and under the attack, for `fer compare` against another model's), sweep.csv,
    /// robustness.png, examples.png.
    #[arg(long, default_value = "attack-report")]
    out: PathBuf,
    /// Print the JSON report on stdout.
    #[arg(long)]
    json: bool,
    /// Device: cpu, ndarray, wgpu[:N], vulkan[:N], cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// For the CNN + landmarks + HOG model, what the attack differentiates: pipeline (the image
    /// branch and the HOG) or image-branch (the features held at the clean face's: an ablation).
    #[arg(long, default_value = "pipeline")]
    feature_gradient: FeatureGradient,
    /// dlib 68-point model, for the CNN + landmarks + HOG model's features [default:
    /// $FER_LANDMARK_MODEL, else /usr/share/dlib/shape_predictor_68_face_landmarks.dat]
    #[arg(long)]
    landmark_model: Option<PathBuf>,
}

/// `attack.json`.
#[derive(serde::Serialize)]
struct AttackReport {
    checkpoint: PathBuf,
    model: String,
    split: Split,
    config: RobustnessConfig,
    clean: SplitReport,
    adversarial: SplitReport,
    flipped: u64,
    /// Faces right both clean and under attack, and their share of the faces.
    kept_right: u64,
    robust_accuracy: f64,
    /// Faces wrong clean and right under attack (counted in `adversarial.accuracy`).
    made_right: u64,
    max_perturbation: f64,
    seconds: f64,
    faces_per_second: f64,
    /// `--ceiling`: the robustness ceiling of the attacked faces at the attack's ε.
    #[serde(skip_serializing_if = "Option::is_none")]
    ceiling: Option<RobustCeiling>,
}

pub fn run(args: AttackArgs) -> Result<()> {
    let eps = parse_eps(&args.eps)?;
    let attack = Attack::from_name(&args.method, eps, args.alpha, args.steps)?;
    let config = RobustnessConfig {
        attack,
        labels: args.labels,
        tencrop: args.faces.tencrop.then_some(args.faces.crop),
        center_crop: args.faces.center_crop.then_some(args.faces.crop),
        batch_faces: args.batch,
        seed: args.seed,
    };
    config.check()?;
    let sweep: Option<(Vec<f64>, Vec<Attack>)> = match &args.eps_sweep {
        None => None,
        Some(list) => {
            let budgets = list.split(',').map(parse_eps).collect::<Result<Vec<f64>, _>>()?;
            let methods = args
                .sweep_methods
                .split(',')
                .map(|m| Attack::from_name(m.trim(), eps, args.alpha, args.steps))
                .collect::<Result<Vec<Attack>, _>>()?;
            Some((budgets, methods))
        }
    };
    let checkpoint = match resolve(&args.checkpoint)? {
        CheckpointArg::Classifier(path) => path,
        CheckpointArg::FeatureRun(run) => return run_feature_model(&args, &run, &config, sweep.as_ref()),
    };
    if args.feature_gradient != FeatureGradient::Pipeline {
        bail!("--feature-gradient is for the CNN + landmarks + HOG model of a `fer train-features` run");
    }
    let expected =
        args.model.as_deref().map(fer_models::ModelConfig::from_name).transpose().map_err(anyhow::Error::msg)?;

    with_backend!(args.device, |B, device| {
        type A = burn::backend::Autodiff<B>;
        // The checkpoint first: a bad path or the wrong model fails before the data is read.
        let (model, saved) = fer_models::load_checkpoint::<A>(&checkpoint, &device)?;
        if let Some(expected) = &expected {
            saved.ensure_model(expected, &checkpoint)?;
        }
        let faces = attacked_faces(&args)?;
        let bar = new_bar(faces.len() as u64, &config.attack.label());
        let result: Robustness = evaluate_robustness(&model, faces.clone(), &config, &device, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64)
        })?;
        bar.finish_and_clear();
        let (ceiling, sweep_ceiling) = attacked_ceilings(&args, &faces, &config, sweep_budgets(sweep.as_ref()))?;
        let report = write_report(&args, &checkpoint, saved.model.label(), &config, &result, faces.labels(), ceiling)?;

        if args.examples > 0 {
            let picked = example_faces(&result.predictions, faces.labels(), args.examples);
            let examples = adversarial_examples(&model, &faces, &picked, &config, &device)?;
            let path = args.out.join("examples.png");
            fer_train::plot_adversarial_examples(&examples, config.attack.eps(), &path)?;
            note(args.json, format!("wrote {}", path.display()));
        }

        if let Some((budgets, methods)) = &sweep {
            let bar = new_bar((budgets.len() * methods.len()) as u64, "ε sweep");
            let points = eps_sweep(&model, faces.clone(), methods, budgets, &config, &device, |p| sweep_line(&bar, p))?;
            bar.finish_and_clear();
            write_sweep(&args, &points, &sweep_ceiling, &report, &config)?;
        }
        Ok::<(), anyhow::Error>(())
    })
}

/// `fer attack` on the CNN + landmarks + HOG model of a `fer train-features` run.
#[cfg(feature = "dlib")]
fn run_feature_model(
    args: &AttackArgs,
    run: &Path,
    config: &RobustnessConfig,
    sweep: Option<&(Vec<f64>, Vec<Attack>)>,
) -> Result<()> {
    if args.faces.tencrop || args.faces.center_crop {
        bail!(
            "--tencrop/--center-crop: the CNN + landmarks + HOG model of {} reads the whole 48×48 face",
            run.display()
        );
    }
    with_backend!(args.device, |B, device| {
        type A = burn::backend::Autodiff<B>;
        let (model, trained, weights) = fer_train::load_feature_run::<A>(run, &device)?;
        let name = crate::features_cmd::feature_model_name(&trained.model);
        if let Some(expected) = args.model.as_deref().filter(|&m| m != name) {
            bail!("{} holds a {name} model, not {expected}", weights.display());
        }
        let (set, gradient) = (trained.feature_set, args.feature_gradient);
        let landmarks = fer_features::LandmarkModel::open(args.landmark_model.as_deref())?;
        let faces = attacked_faces(args)?;
        let bar = new_bar(faces.len() as u64, &config.attack.label());
        let target = fer_adversarial::FeatureModel { model: &model, set, landmarks: &landmarks, gradient };
        let result = fer_adversarial::evaluate_feature_model_robustness(
            &target,
            faces.clone(),
            config,
            &device,
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64)
            },
        )?;
        bar.finish_and_clear();
        let gradient_words = match gradient {
            FeatureGradient::Pipeline => String::new(),
            FeatureGradient::ImageBranch => ", gradient through the image branch only".to_string(),
        };
        let label = format!("{name}, {}{gradient_words}", set.name());
        let (ceiling, sweep_ceiling) = attacked_ceilings(args, &faces, config, sweep_budgets(sweep))?;
        let report = write_report(args, &weights, label, config, &result, faces.labels(), ceiling)?;
        if args.examples > 0 {
            let picked = example_faces(&result.predictions, faces.labels(), args.examples);
            let examples =
                fer_adversarial::feature_model_adversarial_examples(&target, &faces, &picked, config, &device)?;
            let path = args.out.join("examples.png");
            fer_train::plot_adversarial_examples(&examples, config.attack.eps(), &path)?;
            note(args.json, format!("wrote {}", path.display()));
        }
        if let Some((budgets, methods)) = sweep {
            let bar = new_bar((budgets.len() * methods.len()) as u64, "ε sweep");
            let points = fer_adversarial::feature_model_eps_sweep(
                &target,
                faces.clone(),
                methods,
                budgets,
                config,
                &device,
                |p| sweep_line(&bar, p),
            )?;
            bar.finish_and_clear();
            write_sweep(args, &points, &sweep_ceiling, &report, config)?;
        }
        Ok::<(), anyhow::Error>(())
    })
}

#[cfg(not(feature = "dlib"))]
fn run_feature_model(
    _: &AttackArgs,
    run: &Path,
    _: &RobustnessConfig,
    _: Option<&(Vec<f64>, Vec<Attack>)>,
) -> Result<()> {
    bail!(crate::checkpoint_arg::needs_dlib(run))
}

/// The faces to attack: the split, cut to `--limit`; and `--out` made.
fn attacked_faces(args: &AttackArgs) -> Result<Arc<SplitData>> {
    let faces = args.faces.load()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    Ok(Arc::new(faces))
}

/// The budgets of `--eps-sweep` (none without it).
fn sweep_budgets(sweep: Option<&(Vec<f64>, Vec<Attack>)>) -> &[f64] {
    sweep.map_or(&[], |(budgets, _)| budgets.as_slice())
}

/// `--ceiling`: the robustness ceiling of the attacked faces through the model's view at the
/// attack's ε and at each of `sweep_budgets`, from one comparison of the pairs of faces (nothing
/// without the flag).
fn attacked_ceilings(
    args: &AttackArgs,
    faces: &SplitData,
    config: &RobustnessConfig,
    sweep_budgets: &[f64],
) -> Result<(Option<RobustCeiling>, Vec<RobustCeiling>)> {
    if !args.ceiling {
        return Ok((None, Vec::new()));
    }
    let budgets: Vec<f64> = std::iter::once(config.attack.eps()).chain(sweep_budgets.iter().copied()).collect();
    let mut points = crate::ceiling_cmd::ceilings(faces, config.view(), &budgets)?.into_iter();
    let at_eps = points.next();
    Ok((at_eps, points.collect()))
}

/// Writes `attack.json` and each face's answers before and under the attack (`labels`: the
/// attacked faces'), and prints the report (or the JSON with `--json`).
fn write_report(
    args: &AttackArgs,
    checkpoint: &Path,
    model: String,
    config: &RobustnessConfig,
    result: &Robustness,
    labels: &[fer_dataset::Emotion],
    ceiling: Option<RobustCeiling>,
) -> Result<AttackReport> {
    let [clean_answers, attacked_answers] = result.answers(labels);
    fer_train::write_answers(&args.out.join("answers-clean.csv"), &clean_answers)?;
    fer_train::write_answers(&args.out.join("answers-attacked.csv"), &attacked_answers)?;
    let faces = result.clean.faces();
    let report = AttackReport {
        checkpoint: checkpoint.to_path_buf(),
        model,
        split: args.faces.split,
        config: config.clone(),
        clean: SplitReport::new(args.faces.split, &result.clean),
        adversarial: SplitReport::new(args.faces.split, &result.adversarial),
        flipped: result.flipped,
        kept_right: result.kept_right,
        robust_accuracy: result.robust_accuracy(),
        made_right: result.made_right,
        max_perturbation: result.max_perturbation,
        seconds: result.seconds,
        faces_per_second: faces as f64 / result.seconds.max(1e-9),
        ceiling,
    };
    let json_path = args.out.join("attack.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
        println!("wrote {}", json_path.display());
    }
    Ok(report)
}

/// One finished point of an ε sweep, above its progress bar.
fn sweep_line(bar: &ProgressBar, point: &fer_adversarial::SweepPoint) {
    bar.inc(1);
    bar.println(format!("  {:<22} {:>7.2} %", point.attack, 100.0 * point.adversarial_acc));
}

/// `sweep.csv` and `robustness.png` in `--out` (with `--ceiling`, `ceiling.csv` too, and the
/// ceiling drawn).
fn write_sweep(
    args: &AttackArgs,
    points: &[fer_adversarial::SweepPoint],
    ceiling: &[RobustCeiling],
    report: &AttackReport,
    config: &RobustnessConfig,
) -> Result<()> {
    let csv = args.out.join("sweep.csv");
    fer_train::write_sweep_csv(points, &csv)?;
    if !ceiling.is_empty() {
        let path = args.out.join("ceiling.csv");
        fer_train::write_ceiling_csv(ceiling, &path)?;
        note(args.json, format!("wrote {}", path.display()));
    }
    let png = args.out.join("robustness.png");
    let title =
        format!("{} on {} ({} faces{})", report.model, args.faces.split, report.clean.faces, view_words(config));
    fer_train::plot_robustness(points, ceiling, &title, &png)?;
    note(args.json, format!("wrote {} and {}", csv.display(), png.display()));
    Ok(())
}

/// A message for the user: on stdout, or on stderr when stdout carries JSON.
fn note(json: bool, message: String) {
    if json {
        eprintln!("{message}");
    } else {
        println!("{message}");
    }
}

fn print_report(report: &AttackReport) {
    println!(
        "{} ({}) on {}, {} faces, {} ({:?} labels{}):",
        report.checkpoint.display(),
        report.model,
        report.split,
        report.clean.faces,
        report.config.attack.label(),
        report.config.labels,
        view_words(&report.config)
    );
    println!(
        "  clean {:.2} % → adversarial {:.2} % ({} predictions flipped; max |δ| {:.4}; {:.1} faces/s)",
        100.0 * report.clean.accuracy,
        100.0 * report.adversarial.accuracy,
        report.flipped,
        report.max_perturbation,
        report.faces_per_second
    );
    if let (Some(clean), Some(adversarial)) = (report.clean.accuracy_ci95, report.adversarial.accuracy_ci95) {
        println!(
            "  95 % intervals: clean {}, adversarial {}",
            crate::percent_interval(clean),
            crate::percent_interval(adversarial)
        );
    }
    println!(
        "  balanced accuracy (mean recall per class) {:.2} % → {:.2} %",
        100.0 * report.clean.balanced_accuracy,
        100.0 * report.adversarial.balanced_accuracy
    );
    println!(
        "  right both clean and under attack (robust accuracy) {:.2} %; wrong clean, right under attack: {} faces",
        100.0 * report.robust_accuracy,
        report.made_right
    );
    if let Some(c) = &report.ceiling {
        println!(
            "  ceiling of these faces at ε = {:.4} (any classifier of this view, right clean and under the strongest \
             attack): at most {:.2} %, one classifier keeps {:.2} % ({} faces conflict)",
            c.eps,
            100.0 * c.at_most,
            100.0 * c.at_least,
            c.conflicted_faces
        );
    }
    println!("  {:<9} {:>8} {:>12} {:>15} {:>12}", "class", "clean", "adversarial", "answers: clean", "adversarial");
    for (((emotion, clean), (_, adversarial)), ((_, answers_clean), (_, answers_adversarial))) in report
        .clean
        .per_class_accuracy
        .iter()
        .zip(&report.adversarial.per_class_accuracy)
        .zip(report.clean.answers.iter().zip(&report.adversarial.answers))
    {
        let pct = |a: &Option<f64>| a.map_or("-".to_string(), |a| format!("{:.2} %", 100.0 * a));
        println!(
            "  {:<9} {:>8} {:>12} {answers_clean:>15} {answers_adversarial:>12}",
            emotion.name(),
            pct(clean),
            pct(adversarial)
        );
    }
    for note in [
        crate::dominant_answer_note("without attack ", &report.clean),
        crate::dominant_answer_note("under attack ", &report.adversarial)
            .map(|note| note + CONSTANT_ANSWER_KEEPS_ITS_FACES),
    ]
    .into_iter()
    .flatten()
    .chain(moved_onto_the_right_answer_note(report))
    {
        println!("{note}");
    }
}

/// Added to the constant-answer note under attack: such an answer keeps its class's faces right,
/// so it lifts the robust accuracy too.
const CONSTANT_ANSWER_KEEPS_ITS_FACES: &str =
    ". The robust accuracy is lifted the same way: the faces of that class answered right clean stay right";

/// With predicted labels, a note when faces the model got wrong clean make up a quarter or more of
/// those right under attack: the attack pushes a wrong answer away from itself, sometimes onto the
/// right class, which raises the adversarial accuracy without any robustness behind it.
fn moved_onto_the_right_answer_note(report: &AttackReport) -> Option<String> {
    let right_under_attack = report.kept_right + report.made_right;
    let inflated = report.made_right > 0 && 4 * report.made_right >= right_under_attack;
    (report.config.labels == LabelSource::Predicted && inflated).then(|| {
        format!(
            "  note: {} of the {right_under_attack} faces right under attack were wrong without it (predicted labels: \
             the attack pushes a wrong answer away, sometimes onto the right class); right both clean and under \
             attack: {:.2} %, as --labels true would measure",
            report.made_right,
            100.0 * report.robust_accuracy
        )
    })
}

fn new_bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} (eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix.to_string());
    bar
}

/// `, full faces`, `, centre crop 44` or `, TenCrop 44`: what the model saw.
fn view_words(config: &RobustnessConfig) -> String {
    match config.view() {
        View::TenCrop(side) => format!(", TenCrop {side}"),
        View::CenterCrop(side) => format!(", centre crop {side}"),
        View::Full | View::RandomCropFlip(_) => ", full faces".to_string(),
    }
}
