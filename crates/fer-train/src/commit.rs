//! Saving an epoch's files as one unit.
//!
//! Each file of a run is written atomically (a temporary file, then a rename), but an epoch ends
//! with several of them: `latest.fer`, `latest.optim`, `ema.fer`, `best.fer` and `state.json`. A
//! run killed between two of those renames used to leave, say, `latest.fer` of epoch N beside a
//! `state.json` that still says N − 1 epochs are done; `--resume` would then run epoch N again
//! from epoch N's weights, and the resumed run would no longer equal the uninterrupted one.
//!
//! So the epoch's files are first written under staged names (`latest.fer.pending`, …). Writing
//! `state.json` with the list of staged files is the commit: only then are they renamed into
//! place, and `state.json` is written once more without the list. Resuming a run whose
//! `state.json` still lists staged files finishes the renames (a file whose staged copy is gone
//! was renamed already); staged files that no `state.json` lists belong to an epoch that never
//! committed and are removed. A killed run therefore resumes from one consistent epoch: the last
//! committed one.

use std::path::{Path, PathBuf};

use crate::TrainError;
use crate::run::write_json;

/// The suffix of a staged file.
const STAGED_SUFFIX: &str = ".pending";

/// `name` in `dir` under its staged name.
fn staged_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{STAGED_SUFFIX}"))
}

/// The files of one epoch, written under staged names until [`EpochFiles::commit`].
#[derive(Debug)]
pub(crate) struct EpochFiles {
    dir: PathBuf,
    epoch: usize,
    names: Vec<String>,
}

impl EpochFiles {
    /// The files of 0-based `epoch` of the run in `dir`.
    pub(crate) fn new(dir: &Path, epoch: usize) -> EpochFiles {
        EpochFiles { dir: dir.to_path_buf(), epoch, names: Vec::new() }
    }

    /// Where to write the run file `name` (e.g. `latest.fer`) for this epoch.
    pub(crate) fn stage(&mut self, name: &str) -> Result<PathBuf, TrainError> {
        fail_point(self.epoch, &format!("stage {name}"))?;
        self.names.push(name.to_string());
        Ok(staged_path(&self.dir, name))
    }

    /// Commits the epoch: writes `state` (to `state_path`) listing the staged files in the list
    /// `pending` returns, renames them into place, then writes `state` again with the list empty.
    pub(crate) fn commit<S: serde::Serialize>(
        self,
        state_path: &Path,
        state: &mut S,
        pending: fn(&mut S) -> &mut Vec<String>,
    ) -> Result<(), TrainError> {
        fail_point(self.epoch, "commit")?;
        *pending(state) = self.names.clone();
        write_json(state_path, state)?;
        publish(&self.dir, &self.names, self.epoch)?;
        fail_point(self.epoch, "clear")?;
        pending(state).clear();
        write_json(state_path, state)
    }
}

/// Renames each staged file of `names` into place; a name whose staged file is gone was renamed
/// before (a commit interrupted part-way and finished now).
fn publish(dir: &Path, names: &[String], epoch: usize) -> Result<(), TrainError> {
    for name in names {
        fail_point(epoch, &format!("publish {name}"))?;
        let staged = staged_path(dir, name);
        if staged.exists() {
            std::fs::rename(&staged, dir.join(name)).map_err(|source| TrainError::Io { path: staged, source })?;
        }
    }
    Ok(())
}

/// Brings the run in `dir` to its last committed epoch before it resumes: finishes the renames of
/// the staged files its `state` (read from `state_path`) lists in `pending`, then clears that list
/// in `state` and `state_path`, and removes staged files no commit lists.
pub(crate) fn recover<S: serde::Serialize>(
    dir: &Path,
    state_path: &Path,
    state: &mut S,
    pending: fn(&mut S) -> &mut Vec<String>,
) -> Result<(), TrainError> {
    let names = std::mem::take(pending(state));
    publish(dir, &names, usize::MAX)?;
    if !names.is_empty() {
        write_json(state_path, state)?;
        tracing::info!("{}: finished saving an epoch that was interrupted after it committed", dir.display());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| TrainError::Io { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| TrainError::Io { path: dir.to_path_buf(), source })?.path();
        let staged = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(STAGED_SUFFIX));
        if staged && path.is_file() {
            tracing::info!("removing {}: written by an epoch that was interrupted before it committed", path.display());
            std::fs::remove_file(&path).map_err(|source| TrainError::Io { path: path.clone(), source })?;
        }
    }
    Ok(())
}

thread_local! {
    static FAIL_AT: std::cell::RefCell<Option<(usize, String)>> = const { std::cell::RefCell::new(None) };
}

/// Makes the next save of 0-based `epoch` by a run on this thread stop with an error at `point`,
/// as a kill there would: the hook of the tests that kill runs while they save. The points are
/// `stage NAME` (before the run file NAME is written), `commit` (every file staged, `state.json`
/// not yet written), `publish NAME` (committed, NAME not yet renamed into place) and `clear`
/// (every file renamed, `state.json` still lists them).
#[doc(hidden)]
pub fn fail_saving_at(epoch: usize, point: &str) {
    FAIL_AT.with(|f| *f.borrow_mut() = Some((epoch, point.to_string())));
}

/// The error [`fail_saving_at`] asked for, once, when the save reaches it.
fn fail_point(epoch: usize, point: &str) -> Result<(), TrainError> {
    let hit = FAIL_AT.with(|f| {
        let mut f = f.borrow_mut();
        let hit = f.as_ref().is_some_and(|(e, p)| *e == epoch && p == point);
        if hit {
            *f = None;
        }
        hit
    });
    if hit {
        return Err(TrainError::Data(format!("killed at \"{point}\" of epoch {epoch} (fail_saving_at)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Default)]
    struct State {
        epochs: usize,
        #[serde(default)]
        pending: Vec<String>,
    }

    fn read(dir: &Path, name: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(name)).ok()
    }

    /// Epoch `epoch` writes `a` and `b` holding its number.
    fn save(dir: &Path, epoch: usize, state: &mut State) -> Result<(), TrainError> {
        let mut files = EpochFiles::new(dir, epoch);
        for name in ["a", "b"] {
            crate::run::write_file(&files.stage(name)?, epoch.to_string().as_bytes())?;
        }
        state.epochs = epoch + 1;
        files.commit(&dir.join("state.json"), state, |s| &mut s.pending)
    }

    /// A killed save, then what a resume does: the files and the state agree on one epoch.
    fn killed_then_recovered(point: &str) -> (Option<String>, Option<String>, usize, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::default();
        save(dir.path(), 0, &mut state).expect("epoch 0");
        fail_saving_at(1, point);
        let err = save(dir.path(), 1, &mut state).expect_err("killed").to_string();
        assert!(err.contains(point), "{err}");
        let state_path = dir.path().join("state.json");
        let mut state: State = crate::run::read_json(&state_path).expect("state");
        recover(dir.path(), &state_path, &mut state, |s| &mut s.pending).expect("recover");
        let stored: State = crate::run::read_json(&state_path).expect("state");
        assert!(stored.pending.is_empty(), "{point}: the list is cleared in state.json");
        let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "pending"))
            .collect();
        (read(dir.path(), "a"), read(dir.path(), "b"), state.epochs, left)
    }

    #[test]
    fn a_killed_save_resumes_from_one_committed_epoch() {
        let epoch0 = (Some("0".to_string()), Some("0".to_string()), 1, vec![]);
        let epoch1 = (Some("1".to_string()), Some("1".to_string()), 2, vec![]);
        for point in ["stage a", "stage b", "commit"] {
            assert_eq!(killed_then_recovered(point), epoch0, "killed at {point}: epoch 0 stands");
        }
        for point in ["publish a", "publish b", "clear"] {
            assert_eq!(killed_then_recovered(point), epoch1, "killed at {point}: epoch 1 is finished");
        }
    }

    #[test]
    fn an_uninterrupted_save_leaves_no_staged_file_and_no_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::default();
        for epoch in 0..3 {
            save(dir.path(), epoch, &mut state).expect("save");
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let stored: State = crate::run::read_json(&dir.path().join("state.json")).expect("state");
        assert_eq!((stored.epochs, stored.pending.len()), (3, 0));
        assert_eq!((read(dir.path(), "a"), read(dir.path(), "b")), (Some("2".into()), Some("2".into())));
    }
}
