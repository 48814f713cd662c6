//! Hyper-parameter search with TPE (the `tpe` crate), resumable through `trials.csv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

use crate::TrainError;
use crate::run::{read_json, write_file, write_json};

/// One searched parameter, drawn uniformly in `[low, high]` (in log space when `log`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ParamSpec {
    /// Name (a `trials.csv` column).
    pub name: String,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Search `ln(value)` uniformly instead of the value.
    pub log: bool,
}

impl ParamSpec {
    /// A uniform parameter.
    pub fn uniform(name: &str, low: f64, high: f64) -> ParamSpec {
        ParamSpec { name: name.into(), low, high, log: false }
    }
}

/// The reference's space (`optimize_hyperparams.py`): lr U(1e-5, 0.1), lr_decay U(0.5, 0.99),
/// momentum U(0.5, 0.99), keep_prob U(0.7, 0.99).
pub fn reference_space() -> Vec<ParamSpec> {
    vec![
        ParamSpec::uniform("lr", 1e-5, 0.1),
        ParamSpec::uniform("lr_decay", 0.5, 0.99),
        ParamSpec::uniform("momentum", 0.5, 0.99),
        ParamSpec::uniform("keep_prob", 0.7, 0.99),
    ]
}

/// One evaluated point.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    /// 0-based trial number.
    pub trial: usize,
    /// Parameter values by name.
    pub params: BTreeMap<String, f64>,
    /// Objective value (maximised; PublicTest accuracy for a training run).
    pub score: f64,
    /// Seconds the objective took.
    pub seconds: f64,
}

/// Files of a search directory.
fn trials_csv(dir: &Path) -> PathBuf {
    dir.join("trials.csv")
}

/// `best.json` of a search directory: the best [`Trial`].
pub fn best_trial_path(dir: &Path) -> PathBuf {
    dir.join("best.json")
}

/// Maximises `objective` over `space` with one TPE optimiser per parameter (as hyperopt's TPE,
/// which models parameters independently), `max_evals` trials in all, the first `startup` of them
/// drawn uniformly at random (TPE needs a few observations before its model says anything;
/// hyperopt's default is 20, which makes the reference's 20-evaluation search a random search).
///
/// Every finished trial is appended to `dir/trials.csv` and `dir/best.json` is rewritten, both
/// atomically, and `dir/trials.png` is redrawn (each trial's score and the best so far); calling
/// again with the same directory resumes: the recorded trials are fed back to the optimisers and
/// only the missing ones run. The `k`-th suggestion is drawn from a generator seeded by
/// `(seed, k)`, so a resumed search suggests what the uninterrupted one would have.
pub fn hyperopt<E>(
    space: &[ParamSpec],
    max_evals: usize,
    startup: usize,
    seed: u64,
    dir: &Path,
    mut objective: impl FnMut(usize, &BTreeMap<String, f64>) -> Result<f64, E>,
) -> Result<Vec<Trial>, TrainError>
where
    TrainError: From<E>,
{
    if space.is_empty() {
        return Err(TrainError::Config("the search space is empty".into()));
    }
    for p in space {
        let bad = !(p.low.is_finite() && p.high.is_finite() && p.low < p.high) || (p.log && p.low <= 0.0);
        if bad {
            return Err(TrainError::Config(format!(
                "parameter {} has an invalid range [{}, {}]",
                p.name, p.low, p.high
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io { path: dir.to_path_buf(), source })?;
    let mut trials = read_trials(dir, space)?;
    let to_search = |p: &ParamSpec, v: f64| if p.log { v.ln() } else { v };
    let mut optimizers: Vec<tpe::TpeOptimizer> = space
        .iter()
        .map(|p| {
            let range = tpe::range(to_search(p, p.low), to_search(p, p.high)).expect("checked above");
            tpe::TpeOptimizer::new(tpe::parzen_estimator(), range)
        })
        .collect();
    let tell = |optimizers: &mut Vec<tpe::TpeOptimizer>, trial: &Trial| -> Result<(), TrainError> {
        for (opt, p) in optimizers.iter_mut().zip(space) {
            let v = trial.params.get(&p.name).copied().unwrap_or(f64::NAN);
            // TPE minimises: tell it the negated score.
            opt.tell(to_search(p, v), -trial.score)
                .map_err(|e| TrainError::Data(format!("trial {}: {e}", trial.trial)))?;
        }
        Ok(())
    };
    for trial in &trials {
        tell(&mut optimizers, trial)?;
    }
    while trials.len() < max_evals {
        let k = trials.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut params = BTreeMap::new();
        for (opt, p) in optimizers.iter_mut().zip(space) {
            let x = if k < startup {
                rand::RngExt::random_range(&mut rng, to_search(p, p.low)..=to_search(p, p.high))
            } else {
                opt.ask(&mut rng).map_err(|e| TrainError::Data(format!("TPE: {e}")))?
            };
            params.insert(p.name.clone(), if p.log { x.exp() } else { x });
        }
        let started = Instant::now();
        let score = objective(k, &params)?;
        if score.is_nan() {
            return Err(TrainError::Data(format!("trial {k} returned NaN")));
        }
        let trial = Trial { trial: k, params, score, seconds: started.elapsed().as_secs_f64() };
        tell(&mut optimizers, &trial)?;
        trials.push(trial);
        write_trials(dir, space, &trials)?;
        let best = trials.iter().fold(&trials[0], |b, t| if t.score > b.score { t } else { b });
        write_json(&best_trial_path(dir), best)?;
        if let Err(e) = crate::plots::plot_trials(&trials, "score", &dir.join("trials.png")) {
            tracing::warn!("{e}");
        }
    }
    Ok(trials)
}

/// The best trial of a finished or partial search (`best.json`).
pub fn read_best_trial(dir: &Path) -> Result<Trial, TrainError> {
    read_json(&best_trial_path(dir))
}

fn write_trials(dir: &Path, space: &[ParamSpec], trials: &[Trial]) -> Result<(), TrainError> {
    let path = trials_csv(dir);
    let mut text = String::from("trial");
    for p in space {
        text.push(',');
        text.push_str(&p.name);
    }
    text.push_str(",score,seconds\n");
    for t in trials {
        text.push_str(&t.trial.to_string());
        for p in space {
            text.push_str(&format!(",{:?}", t.params.get(&p.name).copied().unwrap_or(f64::NAN)));
        }
        text.push_str(&format!(",{:?},{:?}\n", t.score, t.seconds));
    }
    write_file(&path, text.as_bytes())
}

fn read_trials(dir: &Path, space: &[ParamSpec]) -> Result<Vec<Trial>, TrainError> {
    let path = trials_csv(dir);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let csv_error = |source| TrainError::Csv { path: path.clone(), source };
    let mut reader = csv::Reader::from_path(&path).map_err(csv_error)?;
    let headers = reader.headers().map_err(csv_error)?.clone();
    let expected: Vec<String> = std::iter::once("trial".to_string())
        .chain(space.iter().map(|p| p.name.clone()))
        .chain(["score".to_string(), "seconds".to_string()])
        .collect();
    if headers.iter().collect::<Vec<_>>() != expected.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(TrainError::Data(format!(
            "{}: columns {:?} do not match this search ({:?}); use another directory",
            path.display(),
            headers.iter().collect::<Vec<_>>(),
            expected
        )));
    }
    let mut trials = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(csv_error)?;
        let number = |i: usize| -> Result<f64, TrainError> {
            record.get(i).and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| {
                TrainError::Data(format!("{}:{}: column {} is not a number", path.display(), line + 2, expected[i]))
            })
        };
        let params = space
            .iter()
            .enumerate()
            .map(|(i, p)| Ok((p.name.clone(), number(i + 1)?)))
            .collect::<Result<_, TrainError>>()?;
        trials.push(Trial {
            trial: number(0)? as usize,
            params,
            score: number(space.len() + 1)?,
            seconds: number(space.len() + 2)?,
        });
    }
    Ok(trials)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy objective with its maximum 1 at lr = 0.03, momentum = 0.9.
    fn toy(params: &BTreeMap<String, f64>) -> f64 {
        1.0 - (params["lr"] - 0.03).powi(2) * 100.0 - (params["momentum"] - 0.9).powi(2)
    }

    fn space() -> Vec<ParamSpec> {
        vec![ParamSpec::uniform("lr", 1e-5, 0.1), ParamSpec::uniform("momentum", 0.5, 0.99)]
    }

    #[test]
    fn three_evals_return_the_best_trial_and_resume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trials = hyperopt::<TrainError>(&space(), 3, 2, 7, dir.path(), |_, p| Ok(toy(p))).expect("search runs");
        assert_eq!(trials.len(), 3);
        let best = read_best_trial(dir.path()).expect("best.json");
        let max = trials.iter().map(|t| t.score).fold(f64::MIN, f64::max);
        assert_eq!(best.score, max);
        assert_eq!(best.score, toy(&best.params), "best.json holds the trial's own parameters");
        for t in &trials {
            assert!((1e-5..=0.1).contains(&t.params["lr"]) && (0.5..=0.99).contains(&t.params["momentum"]));
        }

        // Resume to 6: only 3 new calls, and the first 3 trials are kept as they were.
        let mut calls = Vec::new();
        let more = hyperopt::<TrainError>(&space(), 6, 2, 7, dir.path(), |k, p| {
            calls.push(k);
            Ok(toy(p))
        })
        .expect("resumes");
        assert_eq!(calls, vec![3, 4, 5]);
        assert_eq!(more.len(), 6);
        for (a, b) in trials.iter().zip(&more) {
            assert_eq!(a.params, b.params);
            assert_eq!(a.score, b.score);
        }
        let rows = std::fs::read_to_string(dir.path().join("trials.csv")).expect("csv");
        assert!(rows.starts_with("trial,lr,momentum,score,seconds\n"));
        assert_eq!(rows.lines().count(), 7);
    }

    #[test]
    fn more_trials_find_better_points_than_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trials = hyperopt::<TrainError>(&space(), 40, 5, 1, dir.path(), |_, p| Ok(toy(p))).expect("runs");
        let first = trials[..5].iter().map(|t| t.score).fold(f64::MIN, f64::max);
        // The 5 startup trials are spread over the range, not clustered around the first one.
        let lrs: Vec<f64> = trials[..5].iter().map(|t| t.params["lr"]).collect();
        let spread = lrs.iter().cloned().fold(f64::MIN, f64::max) - lrs.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 0.02, "startup trials: {lrs:?}");
        let all = trials.iter().map(|t| t.score).fold(f64::MIN, f64::max);
        assert!(all > 0.99, "TPE gets close to the optimum: {all}");
        assert!(all >= first);
    }

    #[test]
    fn bad_spaces_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = vec![ParamSpec::uniform("lr", 0.1, 0.01)];
        assert!(hyperopt::<TrainError>(&bad, 1, 0, 0, dir.path(), |_, _| Ok(0.0)).is_err());
        std::fs::write(dir.path().join("trials.csv"), "trial,other,score,seconds\n0,1,0.5,1\n").expect("write");
        let err = hyperopt::<TrainError>(&space(), 1, 0, 0, dir.path(), |_, _| Ok(0.0)).expect_err("columns");
        assert!(err.to_string().contains("do not match"), "{err}");
        assert_eq!(reference_space().len(), 4);
    }
}
