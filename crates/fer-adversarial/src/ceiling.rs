//! The robustness ceiling of a set of faces (see [`robust_ceiling`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};

use fer_dataset::{Emotion, FACE_PIXELS, FACE_SIDE, SplitData, View};
use petgraph::algo::maximum_matching;
use petgraph::graph::UnGraph;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rayon::prelude::*;

use crate::AttackError;

/// Pairs of faces with different labels within `2ε` of each other for every ε up to a largest
/// one: what [`robust_ceiling`] reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ConflictGraph {
    view: View,
    labels: Vec<Emotion>,
    /// `(i, j, largest difference in levels over the view's pixels)`, `i < j`, labels differ,
    /// the difference at most `max_levels`; sorted by `(i, j)`.
    pairs: Vec<(u32, u32, u8)>,
    max_levels: u8,
}

/// The robustness ceiling of a set of faces at one budget (see [`robust_ceiling`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RobustCeiling {
    /// L∞ budget on pixels in `[0, 1]`.
    pub eps: f64,
    /// Largest difference in 8-bit levels at which two faces conflict (`⌊2ε·255⌋`, at most 255).
    pub conflict_levels: u8,
    /// Faces of the set.
    pub faces: usize,
    /// Pairs of faces with different labels whose ε-balls overlap.
    pub conflicts: usize,
    /// Faces in at least one conflict.
    pub conflicted_faces: usize,
    /// Pairs of a maximum matching of the conflicts: at least this many faces are lost by any
    /// classifier.
    pub matched_pairs: usize,
    /// Ceiling's upper bound: `(faces − matched_pairs) / faces`.
    pub at_most: f64,
    /// Faces of a conflict-free set found greedily: one classifier keeps all of them right under
    /// every attack of budget `eps`.
    pub kept_faces: usize,
    /// Ceiling's lower bound: `kept_faces / faces`.
    pub at_least: f64,
}

/// Largest difference in 8-bit levels at which two faces conflict at budget `eps`: `⌊2ε·255⌋`
/// (with a tolerance for ε written as a decimal, e.g. 0.3 → 153), at most 255.
pub fn conflict_levels(eps: f64) -> u8 {
    (2.0 * eps * 255.0 + 1e-9).floor().clamp(0.0, 255.0) as u8
}

/// Indices (row-major in the 48×48 face) of the pixels a classifier of `view` sees.
fn view_pixels(view: View) -> Result<Vec<usize>, AttackError> {
    if view.is_random() {
        return Err(AttackError::Config(format!(
            "the robustness ceiling needs a fixed view (full, centre crop or TenCrop), not {view:?}"
        )));
    }
    view.check().map_err(AttackError::Config)?;
    let mut seen = [false; FACE_PIXELS];
    // Fixed views draw nothing from the generator.
    for w in view.windows(&mut ChaCha8Rng::seed_from_u64(0)) {
        for y in w.top..w.top + w.size {
            for x in w.left..w.left + w.size {
                seen[y * FACE_SIDE + x] = true;
            }
        }
    }
    Ok((0..FACE_PIXELS).filter(|&i| seen[i]).collect())
}

/// Largest `|a − b|` over `pixels`, or `None` as soon as it passes `limit`.
fn linf_within(a: &[u8; FACE_PIXELS], b: &[u8; FACE_PIXELS], pixels: &[usize], limit: u8) -> Option<u8> {
    let mut largest = 0u8;
    for chunk in pixels.chunks(48) {
        for &k in chunk {
            largest = largest.max(a[k].abs_diff(b[k]));
        }
        if largest > limit {
            return None;
        }
    }
    Some(largest)
}

/// Compares every pair of faces of `faces` with different labels over the pixels `view` shows
/// and keeps those within `2·max_eps` (on all cores). `progress` is called with the number of
/// faces whose pairs are done. Time grows with the square of the faces: about 2 s for one test
/// split (3,589 faces) on two cores.
pub fn conflict_graph(
    faces: &SplitData,
    view: View,
    max_eps: f64,
    progress: impl Fn(usize) + Sync,
) -> Result<ConflictGraph, AttackError> {
    if !(0.0..=1.0).contains(&max_eps) {
        return Err(AttackError::Config(format!("ε {max_eps} is not in [0, 1]")));
    }
    if faces.len() > u32::MAX as usize {
        return Err(AttackError::Config(format!("{} faces are too many for a conflict graph", faces.len())));
    }
    let pixels = view_pixels(view)?;
    let max_levels = conflict_levels(max_eps);
    let images = faces.images();
    let labels = faces.labels();
    let done = AtomicUsize::new(0);
    let pairs: Vec<(u32, u32, u8)> = (0..faces.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let a = images[i].pixels();
            let row: Vec<(u32, u32, u8)> = (i + 1..faces.len())
                .filter(|&j| labels[j] != labels[i])
                .filter_map(|j| {
                    linf_within(a, images[j].pixels(), &pixels, max_levels).map(|d| (i as u32, j as u32, d))
                })
                .collect();
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            row
        })
        .collect();
    Ok(ConflictGraph { view, labels: labels.to_vec(), pairs, max_levels })
}

impl ConflictGraph {
    /// The view whose pixels were compared.
    pub fn view(&self) -> View {
        self.view
    }

    /// Faces of the set.
    pub fn faces(&self) -> usize {
        self.labels.len()
    }

    /// Conflicting pairs `(i, j, largest difference in levels)` at budget `eps` (`i < j`).
    pub fn conflicts(&self, eps: f64) -> impl Iterator<Item = (usize, usize, u8)> + '_ {
        let levels = conflict_levels(eps);
        self.pairs.iter().filter(move |p| p.2 <= levels).map(|&(i, j, d)| (i as usize, j as usize, d))
    }

    /// The largest budget this graph answers for: ε with `2ε·255` at most the levels kept.
    pub fn max_eps(&self) -> f64 {
        self.max_levels as f64 / 510.0
    }
}

/// The robustness ceiling of a set of faces: the best accuracy under an L∞ attack of budget ε
/// that *any* classifier can have on them, whatever it learned.
///
/// Two faces `a` and `b` with different labels whose ε-balls overlap (`‖a − b‖∞ ≤ 2ε`) cannot both
/// be right under attack: the image halfway between them is within ε of each, and a classifier
/// gives it one answer. Call such a pair a *conflict*. The faces a classifier can keep right
/// under every attack of budget ε form a set without conflicts (an independent set of the conflict
/// graph), and every such set is kept right by some classifier (answer each image with the label
/// of the kept face within ε of it: two kept faces within ε of one image have the same label).
/// So the ceiling is the largest independent set's share of the faces (Bhagoji, Cullina and
/// Mittal, *Lower Bounds on Adversarial Robustness from Optimal Transport*, NeurIPS 2019, and
/// Pydi and Jog, ICML 2020, for the two-class case and distributions). Finding that set is
/// NP-hard in general, so this function brackets it:
///
/// * **at most** `(n − m) / n`, with `m` a maximum matching of the conflict graph (each matched
///   pair keeps at most one of its two faces; petgraph's [`maximum_matching`]);
/// * **at least** the share of a conflict-free set built greedily (the face with the fewest
///   conflicts left first), which a classifier keeps right by construction.
///
/// It is a ceiling on the *robust accuracy* (right clean and under the strongest attack) of any
/// classifier of the view, not a prediction of what training reaches; an attack weaker than the
/// strongest (FGSM) or pushing from a wrong prediction (the reference's predicted labels) can score
/// above it. Pixels are FER2013's 8-bit levels scaled to `[0, 1]`: two faces conflict at ε when
/// their largest difference in levels is at most `2ε·255`. What a classifier sees decides which
/// pixels count: the whole face for [`View::Full`] and [`View::TenCrop`] (the union of the ten
/// windows), the centred window for [`View::CenterCrop`].
///
/// This function answers for the faces of `graph` at budget `eps`, which must not exceed the ε the
/// graph was built for ([`conflict_graph`]; [`ceiling_sweep`] does both).
pub fn robust_ceiling(graph: &ConflictGraph, eps: f64) -> Result<RobustCeiling, AttackError> {
    let levels = conflict_levels(eps);
    if !(0.0..=1.0).contains(&eps) || levels > graph.max_levels {
        return Err(AttackError::Config(format!(
            "ε {eps} is outside the conflict graph's range [0, {:.4}]: build it for a larger ε",
            graph.max_eps()
        )));
    }
    let n = graph.faces();
    let mut g = UnGraph::<(), ()>::with_capacity(n, 0);
    let nodes: Vec<_> = (0..n).map(|_| g.add_node(())).collect();
    let mut neighbours = vec![Vec::new(); n];
    for (i, j, _) in graph.conflicts(eps) {
        g.add_edge(nodes[i], nodes[j], ());
        neighbours[i].push(j);
        neighbours[j].push(i);
    }
    let matched_pairs = maximum_matching(&g).len();
    let kept_faces = greedy_conflict_free(&neighbours).len();
    let share = |count: usize| if n == 0 { 0.0 } else { count as f64 / n as f64 };
    Ok(RobustCeiling {
        eps,
        conflict_levels: levels,
        faces: n,
        conflicts: g.edge_count(),
        conflicted_faces: neighbours.iter().filter(|v| !v.is_empty()).count(),
        matched_pairs,
        at_most: share(n - matched_pairs),
        kept_faces,
        at_least: share(kept_faces),
    })
}

/// [`robust_ceiling`] at each budget of `eps`, on one graph built for the largest.
///
/// ```
/// use fer_adversarial::ceiling_sweep;
/// use fer_dataset::{Emotion, FaceImage, SplitData, View};
///
/// let mut faces = SplitData::new();
/// faces.push(Emotion::Happy, FaceImage::filled(50));
/// faces.push(Emotion::Sad, FaceImage::filled(150));
/// // 100 levels apart: their ε-balls meet from ε = 100/510 ≈ 0.196 on, and then one is lost.
/// let ceiling = ceiling_sweep(&faces, View::Full, &[0.1, 0.3], |_| {})?;
/// assert_eq!((ceiling[0].at_most, ceiling[1].at_most), (1.0, 0.5));
/// # Ok::<(), fer_adversarial::AttackError>(())
/// ```
pub fn ceiling_sweep(
    faces: &SplitData,
    view: View,
    eps: &[f64],
    progress: impl Fn(usize) + Sync,
) -> Result<Vec<RobustCeiling>, AttackError> {
    let largest = eps.iter().copied().fold(0.0, f64::max);
    let graph = conflict_graph(faces, view, largest, progress)?;
    eps.iter().map(|&e| robust_ceiling(&graph, e)).collect()
}

/// Up to `count` conflicting pairs `(i, j, largest difference in levels)` at budget `eps` for a
/// figure: the pairs whose faces have the most contrast (the smaller of the two faces' standard
/// deviations of their levels, over the whole face), each face in one pair at most. Low-contrast
/// faces conflict with many others; these are the clearest faces that still do. `faces` must be
/// the faces the graph was built from.
pub fn conflict_examples(
    graph: &ConflictGraph,
    faces: &SplitData,
    eps: f64,
    count: usize,
) -> Result<Vec<(usize, usize, u8)>, AttackError> {
    if faces.len() != graph.faces() || faces.labels() != graph.labels.as_slice() {
        return Err(AttackError::Config(format!(
            "the conflict graph holds {} faces, not these {}",
            graph.faces(),
            faces.len()
        )));
    }
    let contrast: Vec<f64> = faces
        .images()
        .iter()
        .map(|image| {
            let levels = image.pixels();
            let mean = levels.iter().map(|&p| p as f64).sum::<f64>() / FACE_PIXELS as f64;
            (levels.iter().map(|&p| (p as f64 - mean).powi(2)).sum::<f64>() / FACE_PIXELS as f64).sqrt()
        })
        .collect();
    let mut pairs: Vec<(usize, usize, u8)> = graph.conflicts(eps).collect();
    pairs.sort_by(|a, b| contrast[b.0].min(contrast[b.1]).total_cmp(&contrast[a.0].min(contrast[a.1])));
    let mut used = vec![false; faces.len()];
    let mut picked = Vec::new();
    for (i, j, d) in pairs {
        if picked.len() == count {
            break;
        }
        if !used[i] && !used[j] {
            used[i] = true;
            used[j] = true;
            picked.push((i, j, d));
        }
    }
    Ok(picked)
}

/// A conflict-free set of faces: repeatedly keep the face with the fewest conflicts left (the
/// lowest index among equals) and drop its neighbours. Returns the kept faces in order of index.
fn greedy_conflict_free(neighbours: &[Vec<usize>]) -> Vec<usize> {
    let n = neighbours.len();
    let mut degree: Vec<usize> = neighbours.iter().map(Vec::len).collect();
    let mut alive = vec![true; n];
    let mut heap: BinaryHeap<Reverse<(usize, usize)>> = (0..n).map(|i| Reverse((degree[i], i))).collect();
    let mut kept = Vec::new();
    while let Some(Reverse((d, i))) = heap.pop() {
        if !alive[i] || d != degree[i] {
            continue; // dropped, or an outdated entry
        }
        kept.push(i);
        alive[i] = false;
        for &j in &neighbours[i] {
            if alive[j] {
                alive[j] = false;
                for &k in &neighbours[j] {
                    if alive[k] {
                        degree[k] -= 1;
                        heap.push(Reverse((degree[k], k)));
                    }
                }
            }
        }
    }
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use fer_dataset::FaceImage;

    fn set(faces: &[(Emotion, u8)]) -> SplitData {
        let mut split = SplitData::new();
        for &(label, level) in faces {
            split.push(label, FaceImage::filled(level));
        }
        split
    }

    #[test]
    fn conflict_levels_round_down_and_cap() {
        assert_eq!(conflict_levels(0.0), 0);
        assert_eq!(conflict_levels(0.3), 153);
        assert_eq!(conflict_levels(8.0 / 255.0), 16);
        assert_eq!(conflict_levels(1.0 / 510.0), 1);
        assert_eq!(conflict_levels(0.9 / 510.0), 0);
        assert_eq!(conflict_levels(0.5), 255);
        assert_eq!(conflict_levels(1.0), 255);
    }

    #[test]
    fn two_faces_conflict_exactly_when_their_balls_meet() {
        // Uniform faces 100 levels apart: the balls meet from 2ε·255 ≥ 100.
        let faces = set(&[(Emotion::Happy, 50), (Emotion::Sad, 150)]);
        let graph = conflict_graph(&faces, View::Full, 0.3, |_| {}).unwrap();
        let below = robust_ceiling(&graph, 99.0 / 510.0).unwrap();
        assert_eq!((below.conflicts, below.matched_pairs, below.kept_faces), (0, 0, 2));
        assert_eq!((below.at_most, below.at_least), (1.0, 1.0));
        let at = robust_ceiling(&graph, 100.0 / 510.0).unwrap();
        assert_eq!((at.conflicts, at.conflicted_faces, at.matched_pairs, at.kept_faces), (1, 2, 1, 1));
        assert_eq!((at.at_most, at.at_least), (0.5, 0.5));
        // The same faces with one label never conflict.
        let same = set(&[(Emotion::Happy, 50), (Emotion::Happy, 150)]);
        let graph = conflict_graph(&same, View::Full, 0.5, |_| {}).unwrap();
        assert_eq!(robust_ceiling(&graph, 0.5).unwrap().at_least, 1.0);
    }

    #[test]
    fn only_the_pixels_the_view_shows_count() {
        // Two faces equal in the centred 44×44 window, 200 levels apart on the border.
        let mut a = FaceImage::filled(100);
        let b = FaceImage::filled(100);
        a.0[0] = 255;
        a.0[FACE_PIXELS - 1] = 0;
        let mut faces = SplitData::new();
        faces.push(Emotion::Angry, a);
        faces.push(Emotion::Fear, b);
        let eps = 0.1; // 51 levels
        let full = robust_ceiling(&conflict_graph(&faces, View::Full, eps, |_| {}).unwrap(), eps).unwrap();
        assert_eq!(full.conflicts, 0);
        let ten = robust_ceiling(&conflict_graph(&faces, View::TenCrop(44), eps, |_| {}).unwrap(), eps).unwrap();
        assert_eq!(ten.conflicts, 0, "TenCrop's corner windows see the corners");
        let center = robust_ceiling(&conflict_graph(&faces, View::CenterCrop(44), eps, |_| {}).unwrap(), 0.0).unwrap();
        assert_eq!((center.conflicts, center.at_most), (1, 0.5), "identical crops conflict even at ε = 0");
        assert_eq!(view_pixels(View::CenterCrop(44)).unwrap().len(), 44 * 44);
        assert_eq!(view_pixels(View::TenCrop(44)).unwrap().len(), FACE_PIXELS);
        // Four 20×20 corners and a centred 20×20 window that overlaps each corner by 6×6.
        assert_eq!(view_pixels(View::TenCrop(20)).unwrap().len(), 4 * 400 + 400 - 4 * 36);
    }

    #[test]
    fn the_bounds_bracket_the_ceiling_on_a_triangle_and_a_star() {
        // Three faces of three labels, pairwise 60 levels or less apart: one can be kept.
        let triangle = set(&[(Emotion::Angry, 100), (Emotion::Happy, 130), (Emotion::Sad, 160)]);
        let c = robust_ceiling(&conflict_graph(&triangle, View::Full, 0.2, |_| {}).unwrap(), 60.0 / 510.0).unwrap();
        assert_eq!((c.conflicts, c.matched_pairs, c.kept_faces), (3, 1, 1));
        assert!((c.at_most - 2.0 / 3.0).abs() < 1e-12 && (c.at_least - 1.0 / 3.0).abs() < 1e-12);
        // A grey "hub" face near four faces of another label that are far from each other
        // (same label, so they never conflict): dropping the hub keeps four of five.
        let star = set(&[
            (Emotion::Neutral, 128),
            (Emotion::Happy, 78),
            (Emotion::Happy, 88),
            (Emotion::Happy, 168),
            (Emotion::Happy, 178),
        ]);
        let c = robust_ceiling(&conflict_graph(&star, View::Full, 0.2, |_| {}).unwrap(), 50.0 / 510.0).unwrap();
        assert_eq!((c.conflicts, c.matched_pairs, c.kept_faces, c.faces), (4, 1, 4, 5));
        assert_eq!((c.at_most, c.at_least), (0.8, 0.8));
    }

    #[test]
    fn the_kept_faces_are_conflict_free_and_the_bounds_hold_on_random_sets() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        use rand::RngExt;
        for round in 0..20 {
            let faces: Vec<(Emotion, u8)> = (0..30)
                .map(|_| (Emotion::ALL[rng.random_range(0..Emotion::COUNT)], rng.random_range(0..=255u8)))
                .collect();
            let split = set(&faces);
            let eps = [0.01, 0.05, 0.1, 0.2][round % 4];
            let graph = conflict_graph(&split, View::Full, eps, |_| {}).unwrap();
            let c = robust_ceiling(&graph, eps).unwrap();
            // Brute force over the uniform faces: a conflict is |Δlevel| ≤ ⌊2ε·255⌋.
            let limit = conflict_levels(eps);
            let mut neighbours = vec![Vec::new(); faces.len()];
            let mut brute = 0;
            for i in 0..faces.len() {
                for j in i + 1..faces.len() {
                    if faces[i].0 != faces[j].0 && faces[i].1.abs_diff(faces[j].1) <= limit {
                        brute += 1;
                        neighbours[i].push(j);
                        neighbours[j].push(i);
                    }
                }
            }
            assert_eq!(c.conflicts, brute);
            let kept = greedy_conflict_free(&neighbours);
            assert_eq!(kept.len(), c.kept_faces);
            for (a, &i) in kept.iter().enumerate() {
                for &j in &kept[a + 1..] {
                    assert!(!neighbours[i].contains(&j), "kept faces {i} and {j} conflict");
                }
            }
            assert!(c.at_least <= c.at_most && c.at_most <= 1.0 && c.at_least > 0.0);
        }
    }

    #[test]
    fn bad_budgets_and_views_are_refused() {
        let faces = set(&[(Emotion::Happy, 0)]);
        assert!(conflict_graph(&faces, View::Full, -0.1, |_| {}).is_err());
        assert!(conflict_graph(&faces, View::Full, 1.5, |_| {}).is_err());
        let err = conflict_graph(&faces, View::RandomCropFlip(44), 0.1, |_| {}).unwrap_err().to_string();
        assert!(err.contains("fixed view"), "{err}");
        assert!(conflict_graph(&faces, View::CenterCrop(49), 0.1, |_| {}).is_err());
        let graph = conflict_graph(&faces, View::Full, 0.1, |_| {}).unwrap();
        let err = robust_ceiling(&graph, 0.2).unwrap_err().to_string();
        assert!(err.contains("larger ε"), "{err}");
        let empty = conflict_graph(&SplitData::new(), View::Full, 0.1, |_| {}).unwrap();
        let c = robust_ceiling(&empty, 0.1).unwrap();
        assert_eq!((c.faces, c.at_most, c.at_least), (0, 0.0, 0.0));
    }

    #[test]
    fn examples_are_the_highest_contrast_conflicts_each_face_once() {
        // Faces 0 and 1 are flat (no contrast); 2 and 3 are stripes of 60 and 70 levels that
        // conflict with each other and with the flat faces.
        let mut faces = set(&[(Emotion::Angry, 100), (Emotion::Happy, 110)]);
        for (label, low, high) in [(Emotion::Sad, 70, 130), (Emotion::Fear, 65, 135)] {
            let mut image = FaceImage::filled(low);
            for k in (0..FACE_PIXELS).step_by(2) {
                image.0[k] = high;
            }
            faces.push(label, image);
        }
        let graph = conflict_graph(&faces, View::Full, 0.1, |_| {}).unwrap();
        assert_eq!(graph.conflicts(0.1).count(), 6);
        // Pair 2–3 has the most contrast; every other pair holds a flat face, and of those only
        // 0–1 has both faces unused.
        assert_eq!(conflict_examples(&graph, &faces, 0.1, 5).unwrap(), vec![(2, 3, 5), (0, 1, 10)]);
        assert_eq!(conflict_examples(&graph, &faces, 0.1, 1).unwrap(), vec![(2, 3, 5)]);
        assert!(conflict_examples(&graph, &set(&[(Emotion::Angry, 0)]), 0.1, 1).is_err());
    }

    #[test]
    fn a_sweep_equals_one_graph_per_budget() {
        let faces = set(&[(Emotion::Angry, 10), (Emotion::Happy, 40), (Emotion::Sad, 90), (Emotion::Happy, 200)]);
        let eps = [0.0, 0.05, 0.1, 0.3];
        let sweep = ceiling_sweep(&faces, View::Full, &eps, |_| {}).unwrap();
        for (c, &e) in sweep.iter().zip(&eps) {
            let alone = robust_ceiling(&conflict_graph(&faces, View::Full, e, |_| {}).unwrap(), e).unwrap();
            assert_eq!(*c, alone);
        }
        assert!(sweep.windows(2).all(|w| w[0].at_most >= w[1].at_most), "the ceiling falls with ε");
    }
}
