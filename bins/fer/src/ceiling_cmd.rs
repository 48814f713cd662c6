//! `fer ceiling`: the robustness ceiling of a split (the best accuracy under an L∞ attack that any
//! classifier can have on its faces), and the same ceiling for `fer attack --ceiling`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fer_adversarial::{ConflictGraph, RobustCeiling, conflict_examples, conflict_graph, parse_eps, robust_ceiling};
use fer_dataset::{Split, SplitData, View};
use indicatif::{ProgressBar, ProgressStyle};

use crate::faces_arg::FacesArgs;

/// `fer ceiling` flags.
#[derive(clap::Args)]
pub struct CeilingArgs {
    /// Comma-separated L∞ budgets on pixels in [0, 1] (the ceiling is cheap: the default is finer
    /// where FER2013's falls).
    #[arg(long, default_value = "0,2/255,4/255,8/255,16/255,0.1,0.15,0.2,0.225,0.25,0.275,0.3")]
    eps_sweep: String,
    /// The faces, and the pixels compared: the whole face (also for a TenCrop classifier, whose
    /// ten windows cover it), or the centred crop's.
    #[command(flatten)]
    faces: FacesArgs,
    /// Draw this many conflicting pairs at the largest ε into conflicts.png (a face, the image
    /// halfway to a differently labelled one, that face): the pairs of the clearest faces, those
    /// with the most contrast.
    #[arg(long, default_value_t = 0)]
    examples: usize,
    /// Directory for ceiling.json, ceiling.csv, ceiling.png and conflicts.png.
    #[arg(long, default_value = "ceiling-report")]
    out: PathBuf,
    /// Print the JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// `ceiling.json`.
#[derive(serde::Serialize)]
struct CeilingReport {
    split: Split,
    /// What a classifier sees: `full`, `center-crop-44` or `tencrop-44`.
    view: String,
    faces: usize,
    seconds: f64,
    points: Vec<RobustCeiling>,
}

pub fn run(args: CeilingArgs) -> Result<()> {
    let budgets = args.eps_sweep.split(',').map(parse_eps).collect::<Result<Vec<f64>, _>>()?;
    let view = args.faces.view();
    view.check().map_err(anyhow::Error::msg)?;
    let faces = args.faces.load()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let start = std::time::Instant::now();
    let largest = budgets.iter().copied().fold(0.0, f64::max);
    let graph = pairs_of_faces(&faces, view, largest)?;
    let points = budgets.iter().map(|&e| robust_ceiling(&graph, e)).collect::<Result<Vec<_>, _>>()?;
    let report = CeilingReport {
        split: args.faces.split,
        view: view_name(view),
        faces: faces.len(),
        seconds: start.elapsed().as_secs_f64(),
        points,
    };
    let json_path = args.out.join("ceiling.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let title = format!("robustness ceiling of {} ({} faces, {})", args.faces.split, report.faces, report.view);
    let (csv, png) = write_ceiling(&report.points, &title, &args.out)?;
    if args.examples > 0 {
        let pairs = conflict_examples(&graph, &faces, largest, args.examples)?;
        let path = args.out.join("conflicts.png");
        fer_train::plot_conflicts(&faces, &pairs, largest, &path)?;
        eprintln!("wrote {} ({} pairs)", path.display(), pairs.len());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        eprintln!("wrote {}, {} and {}", json_path.display(), csv.display(), png.display());
    } else {
        println!("{title}: the best accuracy any classifier can keep under an L∞ attack of budget ε");
        print_ceilings(&report.points);
        println!("wrote {}, {} and {}", json_path.display(), csv.display(), png.display());
    }
    Ok(())
}

/// The ceiling of `faces` seen through `view` at each budget.
pub fn ceilings(faces: &SplitData, view: View, budgets: &[f64]) -> Result<Vec<RobustCeiling>> {
    let graph = pairs_of_faces(faces, view, budgets.iter().copied().fold(0.0, f64::max))?;
    Ok(budgets.iter().map(|&e| robust_ceiling(&graph, e)).collect::<Result<Vec<_>, _>>()?)
}

/// The conflict graph of `faces` up to `max_eps`, with a progress bar while the pairs of faces
/// are compared.
fn pairs_of_faces(faces: &SplitData, view: View, max_eps: f64) -> Result<ConflictGraph> {
    let bar = ProgressBar::new(faces.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} faces (eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix("ceiling: pairs of faces");
    let graph = conflict_graph(faces, view, max_eps, |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    Ok(graph)
}

/// `ceiling.csv` and `ceiling.png` in `out`.
pub fn write_ceiling(points: &[RobustCeiling], title: &str, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let csv = out.join("ceiling.csv");
    fer_train::write_ceiling_csv(points, &csv)?;
    let png = out.join("ceiling.png");
    fer_train::plot_robustness(&[], points, title, &png)?;
    Ok((csv, png))
}

/// One line per budget: the bracket, and how many faces conflict.
pub fn print_ceilings(points: &[RobustCeiling]) {
    println!("  {:>8}  {:>9}  {:>9}  {:>15}  {:>9}", "ε", "at most", "at least", "conflicted faces", "conflicts");
    for p in points {
        println!(
            "  {:>8.4}  {:>7.2} %  {:>7.2} %  {:>7} ({:>5.1} %)  {:>9}",
            p.eps,
            100.0 * p.at_most,
            100.0 * p.at_least,
            p.conflicted_faces,
            100.0 * p.conflicted_faces as f64 / p.faces.max(1) as f64,
            p.conflicts
        );
    }
}

/// `full`, `center-crop-44` or `tencrop-44`.
pub fn view_name(view: View) -> String {
    match view {
        View::Full => "full".to_string(),
        View::CenterCrop(side) => format!("center-crop-{side}"),
        View::TenCrop(side) => format!("tencrop-{side}"),
        View::RandomCropFlip(side) => format!("random-crop-{side}"),
    }
}
