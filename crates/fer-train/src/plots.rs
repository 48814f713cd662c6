//! PNG plots with plotters: training curves and confusion matrices.

use std::path::Path;
use std::sync::OnceLock;

use fer_adversarial::{AdversarialExample, RobustCeiling, SweepPoint};
use fer_dataset::{Emotion, FACE_SIDE};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::{EpochMetrics, FeatureEpoch, TrainError, Trial};

fn ensure_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        // The same font as fer-models' photo labels (Debian's fonts-dejavu-core).
        let bytes = fer_models::font_bytes().map_err(|e| e.to_string())?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "the DejaVu font file could not be parsed".to_string())
    })
    .clone()
}

/// The caption font for `title` over `area`: 22 px, or smaller (down to 10 px) until the title
/// fits the area's width (a long model label such as a width-scaled VGG19's would be cut off).
fn caption_font<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
) -> (&'static str, f64) {
    let room = f64::from(area.dim_in_pixel().0) * 0.96;
    let mut size = 22.0;
    while size > 10.0 {
        match area.estimate_text_size(title, &("sans-serif", size).into_text_style(area)) {
            Ok((width, _)) if f64::from(width) > room => size -= 1.0,
            _ => break,
        }
    }
    ("sans-serif", size)
}

fn plot_error(path: &Path, message: impl ToString) -> TrainError {
    TrainError::Plot { path: path.to_path_buf(), message: message.to_string() }
}

/// One line of a chart: its legend, colour and (x, y) points.
struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const PUBLIC: RGBColor = RGBColor(255, 127, 14);
const PRIVATE: RGBColor = RGBColor(44, 160, 44);
const TRAIN_ATTACKED: RGBColor = RGBColor(140, 86, 75);
/// PublicTest / PrivateTest of the raw weights, in runs whose model is their moving average.
const PUBLIC_RAW: RGBColor = RGBColor(255, 187, 120);
const PRIVATE_RAW: RGBColor = RGBColor(152, 223, 138);

/// Draws loss (left) and accuracy (right) per epoch: train, PublicTest, PrivateTest, and for
/// adversarial runs the attacked training crops and both test splits under attack; for runs whose
/// model is a weight average, the raw weights' PublicTest and PrivateTest accuracy too.
pub fn plot_curves(rows: &[EpochMetrics], path: &Path) -> Result<(), TrainError> {
    let line = |name, color, value: fn(&EpochMetrics) -> Option<f64>| Series {
        name,
        color,
        points: rows.iter().filter_map(|r| value(r).map(|v| ((r.epoch + 1) as f64, v))).collect(),
    };
    let losses = [
        line("train", TRAIN, |r| Some(r.train_loss)),
        line("train attacked", TRAIN_ATTACKED, |r| r.train_adv_loss),
        line("PublicTest", PUBLIC, |r| Some(r.public_loss)),
        line("PrivateTest", PRIVATE, |r| Some(r.private_loss)),
    ];
    let accuracies = [
        line("train", TRAIN, |r| Some(100.0 * r.train_acc)),
        line("train attacked", TRAIN_ATTACKED, |r| r.train_adv_acc.map(|v| 100.0 * v)),
        line("PublicTest", PUBLIC, |r| Some(100.0 * r.public_acc)),
        line("PrivateTest", PRIVATE, |r| Some(100.0 * r.private_acc)),
        line("PublicTest attacked", RGBColor(214, 39, 40), |r| r.public_adv_acc.map(|v| 100.0 * v)),
        line("PrivateTest attacked", RGBColor(148, 103, 189), |r| r.private_adv_acc.map(|v| 100.0 * v)),
        line("PublicTest, raw weights", PUBLIC_RAW, |r| r.raw_public_acc.map(|v| 100.0 * v)),
        line("PrivateTest, raw weights", PRIVATE_RAW, |r| r.raw_private_acc.map(|v| 100.0 * v)),
    ];
    draw_curves(path, "loss", &losses, &accuracies)
}

/// Draws a CNN+features run's curves: training loss (left; the run evaluates accuracy only) and
/// train / PublicTest / PrivateTest accuracy (right) per epoch.
pub fn plot_feature_curves(rows: &[FeatureEpoch], path: &Path) -> Result<(), TrainError> {
    let line = |name, color, value: fn(&FeatureEpoch) -> f64| Series {
        name,
        color,
        points: rows.iter().map(|r| ((r.epoch + 1) as f64, value(r))).collect(),
    };
    let losses = [line("train", TRAIN, |r| r.train_loss)];
    let accuracies = [
        line("train", TRAIN, |r| 100.0 * r.train_acc),
        line("PublicTest", PUBLIC, |r| 100.0 * r.public_acc),
        line("PrivateTest", PRIVATE, |r| 100.0 * r.private_acc),
    ];
    draw_curves(path, "training loss", &losses, &accuracies)
}

/// Draws a hyper-parameter search: each trial's score (dots) and the best score so far (line).
pub fn plot_trials(trials: &[Trial], metric: &str, path: &Path) -> Result<(), TrainError> {
    ensure_font().map_err(|e| plot_error(path, e))?;
    if trials.is_empty() {
        return Err(plot_error(path, "no trials to plot"));
    }
    let scores: Vec<(f64, f64)> = trials.iter().map(|t| (t.trial as f64, t.score)).collect();
    let (low, high) = scores.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &(_, s)| (lo.min(s), hi.max(s)));
    let pad = ((high - low) * 0.08).max(0.01);
    let last = scores.iter().map(|p| p.0).fold(1.0, f64::max);
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("search: {metric} per trial"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..last + 0.5, (low - pad)..(high + pad))
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("trial")
        .y_desc(metric)
        .x_labels((last as usize + 2).min(21))
        .x_label_formatter(&whole_numbers)
        .y_label_formatter(&|v| format!("{v:.3}"))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    chart
        .draw_series(scores.iter().map(|&p| Circle::new(p, 4, TRAIN.filled())))
        .map_err(|e| plot_error(path, e))?
        .label("trial")
        .legend(|(x, y)| Circle::new((x + 10, y), 4, TRAIN.filled()));
    let mut best = f64::MIN;
    let running: Vec<(f64, f64)> = scores
        .iter()
        .map(|&(x, s)| {
            best = best.max(s);
            (x, best)
        })
        .collect();
    chart
        .draw_series(LineSeries::new(running, PUBLIC.stroke_width(2)))
        .map_err(|e| plot_error(path, e))?
        .label("best so far")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PUBLIC.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))
}

/// An axis label for whole numbers (epochs, trials); none between them.
fn whole_numbers(v: &f64) -> String {
    if v.fract() == 0.0 && *v >= 0.0 { format!("{v:.0}") } else { String::new() }
}

/// Two charts side by side against the epoch: `losses` (left, captioned `loss_caption`) and
/// `accuracies` in % (right); series without points are left out.
fn draw_curves(path: &Path, loss_caption: &str, losses: &[Series], accuracies: &[Series]) -> Result<(), TrainError> {
    ensure_font().map_err(|e| plot_error(path, e))?;
    let epochs = losses
        .iter()
        .chain(accuracies)
        .flat_map(|s| &s.points)
        .map(|p| p.0)
        .reduce(f64::max)
        .ok_or_else(|| plot_error(path, "no epochs to plot"))?;
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let (left, right) = root.split_horizontally(600);
    let max_loss = losses.iter().flat_map(|s| &s.points).map(|p| p.1).fold(0.0f64, f64::max);
    let panels = [
        (&left, loss_caption, losses, (max_loss * 1.05).max(1e-3), SeriesLabelPosition::UpperRight),
        (&right, "accuracy (%)", accuracies, 100.0, SeriesLabelPosition::LowerRight),
    ];
    for (area, caption, series, top, legend) in panels {
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(1.0..epochs.max(2.0), 0.0..top)
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&whole_numbers)
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for s in series.iter().filter(|s| !s.points.is_empty()) {
            let color = s.color;
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| plot_error(path, e))?
                .label(s.name)
                .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(legend)
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()
            .map_err(|e| plot_error(path, e))?;
    }
    root.present().map_err(|e| plot_error(path, e))
}

/// Draws a row-normalised confusion matrix (`confusion[true][predicted]`) with counts and percentages.
pub fn plot_confusion(
    confusion: &[[u64; Emotion::COUNT]; Emotion::COUNT],
    title: &str,
    path: &Path,
) -> Result<(), TrainError> {
    use plotters::coord::combinators::IntoLinspace;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    ensure_font().map_err(|e| plot_error(path, e))?;
    let root = BitMapBackend::new(path, (760, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let n = Emotion::COUNT as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, caption_font(&root, title))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((0.0..n).step(0.5), (0.0..n).step(0.5))
        .map_err(|e| plot_error(path, e))?;
    // Labels sit at cell centres (k + 0.5); rows run top to bottom in Emotion order.
    let name = |v: f64, flip: bool| {
        let k = v - 0.5;
        if k.fract() != 0.0 || !(0.0..n).contains(&k) {
            return String::new();
        }
        let i = if flip { Emotion::COUNT - 1 - k as usize } else { k as usize };
        Emotion::from_index(i).map_or(String::new(), |e| e.name().to_string())
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("predicted")
        .y_desc("true")
        .x_labels(2 * Emotion::COUNT + 1)
        .y_labels(2 * Emotion::COUNT + 1)
        .x_label_formatter(&|v| name(*v, false))
        .y_label_formatter(&|v| name(*v, true))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    let centred = Pos::new(HPos::Center, VPos::Center);
    for (t, row) in confusion.iter().enumerate() {
        let total = row.iter().sum::<u64>().max(1) as f64;
        let y = (Emotion::COUNT - 1 - t) as f64;
        for (p, &count) in row.iter().enumerate() {
            let share = count as f64 / total;
            let x = p as f64;
            let shade = (255.0 * (1.0 - share)) as u8;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    RGBColor(shade, shade, 255).filled(),
                )))
                .map_err(|e| plot_error(path, e))?;
            let color = if share > 0.5 { WHITE } else { BLACK };
            for (text, dy) in [(count.to_string(), 0.64), (format!("{:.0}%", 100.0 * share), 0.36)] {
                let style = ("sans-serif", 16).into_font().color(&color).pos(centred);
                chart
                    .draw_series(std::iter::once(Text::new(text, (x + 0.5, y + dy), style)))
                    .map_err(|e| plot_error(path, e))?;
            }
        }
    }
    root.present().map_err(|e| plot_error(path, e))
}

/// Draws accuracy (%) against ε, one line per attack method (an ε sweep's robustness curve), and
/// the robustness ceiling of the attacked faces when `ceiling` is not empty (black: no classifier
/// can keep more faces right under attack than the solid line; the dashed line is what one
/// classifier can keep, so the ceiling lies between them; see
/// [`fer_adversarial::robust_ceiling`]). Either list may be empty, not both.
pub fn plot_robustness(
    points: &[SweepPoint],
    ceiling: &[RobustCeiling],
    title: &str,
    path: &Path,
) -> Result<(), TrainError> {
    ensure_font().map_err(|e| plot_error(path, e))?;
    if points.is_empty() && ceiling.is_empty() {
        return Err(plot_error(path, "no sweep points or ceiling to plot"));
    }
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let max_eps = points.iter().map(|p| p.eps).chain(ceiling.iter().map(|c| c.eps)).fold(0.0f64, f64::max).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, caption_font(&root, title))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_eps * 1.02, 0.0..100.0)
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("ε (L∞, pixels in [0, 1])")
        .y_desc("accuracy (%)")
        .draw()
        .map_err(|e| plot_error(path, e))?;
    let palette = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(255, 127, 14)];
    let mut methods: Vec<&str> = Vec::new();
    for p in points {
        if !methods.contains(&p.method.as_str()) {
            methods.push(&p.method);
        }
    }
    for (i, method) in methods.iter().enumerate() {
        let color = palette[i % palette.len()];
        let line: Vec<(f64, f64)> =
            points.iter().filter(|p| p.method == *method).map(|p| (p.eps, 100.0 * p.adversarial_acc)).collect();
        let label = points
            .iter()
            .find(|p| p.method == *method)
            .map_or(method.to_string(), |p| p.attack.split(" ε=").next().unwrap_or(method).to_string());
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|e| plot_error(path, e))?
            .label(label)
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2)));
        chart
            .draw_series(line.into_iter().map(|(x, y)| Circle::new((x, y), 4, color.filled())))
            .map_err(|e| plot_error(path, e))?;
    }
    if let Some(first) = points.first() {
        let clean = 100.0 * first.clean_acc;
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(LineSeries::new(vec![(0.0, clean), (max_eps * 1.02, clean)], grey.stroke_width(1)))
            .map_err(|e| plot_error(path, e))?
            .label("clean")
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], grey.stroke_width(1)));
    }
    if !ceiling.is_empty() {
        let mut sorted: Vec<&RobustCeiling> = ceiling.iter().collect();
        sorted.sort_by(|a, b| a.eps.total_cmp(&b.eps));
        let at_most: Vec<(f64, f64)> = sorted.iter().map(|c| (c.eps, 100.0 * c.at_most)).collect();
        let at_least: Vec<(f64, f64)> = sorted.iter().map(|c| (c.eps, 100.0 * c.at_least)).collect();
        chart
            .draw_series(LineSeries::new(at_most, BLACK.stroke_width(2)))
            .map_err(|e| plot_error(path, e))?
            .label("ceiling: no classifier above")
            .legend(|(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], BLACK.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(at_least, 6, 4, BLACK.stroke_width(1)))
            .map_err(|e| plot_error(path, e))?
            .label("ceiling: one classifier reaches")
            .legend(|(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], BLACK.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(
            // The ceiling runs along the top (above 60 % on FER2013 up to ε = 0.3), and attacked
            // accuracy falls below the middle within the first budgets.
            if ceiling.is_empty() { SeriesLabelPosition::UpperRight } else { SeriesLabelPosition::MiddleRight },
        )
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))
}

/// Draws one row per example: the clean face (true label, prediction and confidence), the
/// perturbation (mid-grey is 0, black −ε, white +ε) and the adversarial face (prediction and
/// confidence), as the reference project's figure.
pub fn plot_adversarial_examples(examples: &[AdversarialExample], eps: f64, path: &Path) -> Result<(), TrainError> {
    if examples.is_empty() {
        return Err(plot_error(path, "no examples to draw"));
    }
    let headings = ["clean".to_string(), format!("δ (±ε = {eps:.3})"), "adversarial".to_string()];
    let rows: Vec<FaceRow> = examples
        .iter()
        .map(|example| {
            let delta: Vec<f32> = example
                .clean
                .iter()
                .zip(&example.adversarial)
                .map(|(c, a)| if eps > 0.0 { 0.5 + (a - c) / (2.0 * eps as f32) } else { 0.5 })
                .collect();
            let (clean_class, clean_p) = example.clean_top();
            let (adv_class, adv_p) = example.adversarial_top();
            FaceRow {
                images: [example.clean.clone(), delta, example.adversarial.clone()],
                captions: vec![
                    (
                        0,
                        format!("true: {}", example.label.name()),
                        format!("pred: {} {:.0}%", clean_class.name(), 100.0 * clean_p),
                    ),
                    (
                        2,
                        format!("face #{}", example.index),
                        format!("pred: {} {:.0}%", adv_class.name(), 100.0 * adv_p),
                    ),
                ],
            }
        })
        .collect();
    draw_face_rows(&headings, &rows, path)
}

/// Draws one row per conflicting pair `(i, j, largest difference in levels)` of `faces` at budget
/// `eps` (see [`fer_adversarial::conflict_examples`]): face `i` with its label, the image halfway
/// between the two (within ε of each: no classifier can answer it both ways), face `j`.
pub fn plot_conflicts(
    faces: &fer_dataset::SplitData,
    pairs: &[(usize, usize, u8)],
    eps: f64,
    path: &Path,
) -> Result<(), TrainError> {
    if pairs.is_empty() {
        return Err(plot_error(path, format!("no conflicting faces at ε = {eps:.3} to draw")));
    }
    let headings = ["face a".to_string(), format!("halfway, ε = {eps:.3}"), "face b".to_string()];
    let scaled = |i: usize| -> Vec<f32> { faces.image(i).pixels().iter().map(|&p| p as f32 / 255.0).collect() };
    let rows: Vec<FaceRow> = pairs
        .iter()
        .map(|&(i, j, levels)| {
            let (a, b) = (scaled(i), scaled(j));
            let halfway = a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect();
            FaceRow {
                images: [a, halfway, b],
                captions: vec![
                    (0, faces.label(i).name().to_string(), format!("face #{i}")),
                    (1, format!("‖a − b‖∞ = {levels}/255"), format!("{:.3} from each ≤ ε", levels as f64 / 510.0)),
                    (2, faces.label(j).name().to_string(), format!("face #{j}")),
                ],
            }
        })
        .collect();
    draw_face_rows(&headings, &rows, path)
}

/// One row of a three-column figure of 48×48 faces.
struct FaceRow {
    /// The three images, values in `[0, 1]`, row-major.
    images: [Vec<f32>; 3],
    /// `(column, first line, second line)` written under the images.
    captions: Vec<(usize, String, String)>,
}

/// Draws `rows` of three faces each, enlarged three times, under three column headings.
fn draw_face_rows(headings: &[String; 3], rows: &[FaceRow], path: &Path) -> Result<(), TrainError> {
    ensure_font().map_err(|e| plot_error(path, e))?;
    const SCALE: usize = 3;
    const CELL: usize = FACE_SIDE * SCALE;
    const PAD: usize = 16;
    const TEXT: usize = 44;
    let (width, row_height) = (3 * (CELL + PAD) + PAD, CELL + TEXT + PAD);
    let height = 40 + rows.len() * row_height;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let heading = ("sans-serif", 17).into_font().color(&BLACK);
    for (col, text) in headings.iter().enumerate() {
        root.draw_text(text, &heading, ((PAD + col * (CELL + PAD)) as i32, 12)).map_err(|e| plot_error(path, e))?;
    }
    let small = ("sans-serif", 14).into_font().color(&BLACK);
    let gray = |v: f32| {
        let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        RGBColor(g, g, g)
    };
    for (row, face_row) in rows.iter().enumerate() {
        let top = 40 + row * row_height;
        for (col, pixels) in face_row.images.iter().enumerate() {
            let left = PAD + col * (CELL + PAD);
            for (i, &v) in pixels.iter().enumerate() {
                let (y, x) = (i / FACE_SIDE, i % FACE_SIDE);
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let at = ((left + x * SCALE + dx) as i32, (top + y * SCALE + dy) as i32);
                        root.draw_pixel(at, &gray(v)).map_err(|e| plot_error(path, e))?;
                    }
                }
            }
        }
        for (col, first, second) in &face_row.captions {
            let x = (PAD + col * (CELL + PAD)) as i32;
            let y = (top + CELL + 4) as i32;
            root.draw_text(first, &small, (x, y)).map_err(|e| plot_error(path, e))?;
            root.draw_text(second, &small, (x, y + 18)).map_err(|e| plot_error(path, e))?;
        }
    }
    root.present().map_err(|e| plot_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, adversarial: bool) -> EpochMetrics {
        let adv = |v: f64| adversarial.then_some(v);
        EpochMetrics {
            epoch,
            lr: 0.01,
            train_loss: 1.5 - 0.1 * epoch as f64,
            train_acc: 0.4 + 0.05 * epoch as f64,
            public_loss: 1.6,
            public_acc: 0.38,
            private_loss: 1.55,
            private_acc: 0.39,
            img_per_s: 100.0,
            seconds: 10.0,
            public_adv_acc: adv(0.2),
            private_adv_acc: adv(0.21),
            check_eval_acc: adv(0.2),
            check_pgd_acc: adv(0.1),
            catastrophic: adversarial.then_some(false),
            train_adv_loss: adv(1.9 - 0.1 * epoch as f64),
            train_adv_acc: adv(0.25 + 0.05 * epoch as f64),
            public_adv_balanced_acc: adv(0.18),
            public_adv_top_answer_share: adv(0.3),
            public_balanced_acc: Some(0.3),
            public_adv_robust_acc: adv(0.15),
            check_eval_robust_acc: adv(0.15),
            check_pgd_robust_acc: adv(0.05),
            raw_public_acc: None,
            raw_private_acc: None,
            train_linearity_error: None,
        }
    }

    /// Pixels of `curves.png` drawn in exactly `color`.
    fn pixels_of(rows: &[EpochMetrics], color: RGBColor) -> usize {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("curves.png");
        plot_curves(rows, &path).expect("plot");
        let image = image::open(&path).expect("png").to_rgb8();
        image.pixels().filter(|p| p.0 == [color.0, color.1, color.2]).count()
    }

    #[test]
    fn curves_show_the_attacked_training_crops_of_adversarial_runs_only() {
        let clean: Vec<_> = (0..4).map(|e| row(e, false)).collect();
        let adversarial: Vec<_> = (0..4).map(|e| row(e, true)).collect();
        assert_eq!(pixels_of(&clean, TRAIN_ATTACKED), 0, "a clean run has no attacked training crops");
        assert!(pixels_of(&adversarial, TRAIN_ATTACKED) > 100, "two lines and two legend marks");
        assert!(pixels_of(&clean, TRAIN) > 100);
        // The raw weights' lines appear in runs with a weight average only.
        let averaged: Vec<_> = (0..4)
            .map(|e| EpochMetrics { raw_public_acc: Some(0.36), raw_private_acc: Some(0.37), ..row(e, false) })
            .collect();
        for color in [PUBLIC_RAW, PRIVATE_RAW] {
            assert_eq!(pixels_of(&clean, color), 0);
            assert!(pixels_of(&averaged, color) > 100, "a line and a legend mark");
        }
    }

    #[test]
    fn robustness_plots_take_a_ceiling_alone_and_conflicts_draw_three_faces_a_row() {
        use fer_dataset::{FaceImage, SplitData, View};
        let dir = tempfile::tempdir().expect("temp dir");
        let mut faces = SplitData::new();
        for (label, level) in [(Emotion::Angry, 100), (Emotion::Happy, 150), (Emotion::Sad, 20)] {
            faces.push(label, FaceImage::filled(level));
        }
        let ceiling = fer_adversarial::ceiling_sweep(&faces, View::Full, &[0.0, 0.1, 0.3], |_| {}).expect("ceiling");
        let png = dir.path().join("ceiling.png");
        plot_robustness(&[], &ceiling, "ceiling", &png).expect("a ceiling alone is drawn");
        let size = |path: &Path| std::fs::metadata(path).expect("written").len();
        assert!(size(&png) > 3_000);
        assert!(plot_robustness(&[], &[], "nothing", &dir.path().join("none.png")).is_err());
        let graph = fer_adversarial::conflict_graph(&faces, View::Full, 0.3, |_| {}).expect("graph");
        let pairs = fer_adversarial::conflict_examples(&graph, &faces, 0.3, 2).expect("pairs");
        assert_eq!(pairs, vec![(0, 1, 50)]);
        let conflicts = dir.path().join("conflicts.png");
        plot_conflicts(&faces, &pairs, 0.3, &conflicts).expect("drawn");
        let image = image::open(&conflicts).expect("a PNG").to_luma8();
        // One row: three 144-pixel faces; the halfway face is level 125 in the middle column.
        assert_eq!((image.width(), image.height()), (3 * (144 + 16) + 16, 40 + 144 + 44 + 16));
        let (left, middle) = (16 + 72, 16 + 160 + 72);
        assert_eq!(image.get_pixel(left, 40 + 72).0[0], 100);
        assert_eq!(image.get_pixel(middle, 40 + 72).0[0], 125);
        assert!(plot_conflicts(&faces, &[], 0.3, &conflicts).is_err());
    }

    #[test]
    fn long_captions_shrink_to_fit() {
        ensure_font().expect("the DejaVu font");
        let mut buffer = vec![0u8; 800 * 560 * 3];
        let root = BitMapBackend::with_buffer(&mut buffer, (800, 560)).into_drawing_area();
        assert_eq!(caption_font(&root, "vgg19 on PrivateTest (500 faces)").1, 22.0);
        let long = "vgg(16-16-M-32-32-M-64-64-64-64-M-128-128-128-128-M-128-128-128-128-M) on PrivateTest \
                    (500 faces, centre crop 44)";
        let font = caption_font(&root, long);
        assert!((10.0..22.0).contains(&font.1), "{font:?}");
        let (width, _) = root.estimate_text_size(long, &font.into_text_style(&root)).expect("measured");
        assert!(width <= 800, "{width} px at {font:?}");
    }
}
