//! What a `--checkpoint` path names: a `.fer` checkpoint of `fer train` (VGG/ResNet), or the CNN +
//! landmarks + HOG model of a `fer train-features` run.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// A `--checkpoint` argument, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointArg {
    /// A `.fer` checkpoint (the file given, or `best.fer` of the run directory given).
    Classifier(PathBuf),
    /// A `fer train-features` run: its directory or one of its `.bin` weights files.
    FeatureRun(PathBuf),
}

/// Resolves `--checkpoint`: a run directory by what it holds (`best.fer` for `fer train`,
/// `best.bin` for `fer train-features`), a file by its extension (`.bin`: a feature run's
/// weights; anything else: a `.fer` checkpoint, checked when loaded).
pub fn resolve(path: &Path) -> Result<CheckpointArg> {
    if !path.is_dir() {
        let weights = path.extension().is_some_and(|e| e == "bin");
        return Ok(if weights {
            CheckpointArg::FeatureRun(path.into())
        } else {
            CheckpointArg::Classifier(path.into())
        });
    }
    let (fer, bin) = (path.join("best.fer"), path.join("best.bin"));
    match (fer.is_file(), bin.is_file()) {
        (true, false) => Ok(CheckpointArg::Classifier(fer)),
        (false, true) => Ok(CheckpointArg::FeatureRun(path.into())),
        (true, true) => bail!("{} holds both best.fer and best.bin: name the file to use", path.display()),
        (false, false) => bail!(
            "{} holds neither best.fer (a `fer train` run) nor best.bin (a `fer train-features` run): is the run \
             past its first epoch?",
            path.display()
        ),
    }
}

/// The error for a feature run in a build without dlib.
#[cfg(not(feature = "dlib"))]
pub fn needs_dlib(run: &Path) -> String {
    format!(
        "{} is a `fer train-features` run: its model reads dlib's landmarks, and this fer was built without its \
         `dlib` feature (build it with the default features)",
        run.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_directories_by_content_files_by_extension() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (train, features, both, empty) =
            (dir.path().join("t"), dir.path().join("f"), dir.path().join("b"), dir.path().join("e"));
        for (run, files) in
            [(&train, &["best.fer"][..]), (&features, &["best.bin"]), (&both, &["best.fer", "best.bin"])]
        {
            std::fs::create_dir_all(run).expect("mkdir");
            for file in files {
                std::fs::write(run.join(file), b"").expect("write");
            }
        }
        std::fs::create_dir_all(&empty).expect("mkdir");
        assert_eq!(resolve(&train).expect("ok"), CheckpointArg::Classifier(train.join("best.fer")));
        assert_eq!(resolve(&features).expect("ok"), CheckpointArg::FeatureRun(features.clone()));
        assert!(resolve(&both).expect_err("ambiguous").to_string().contains("both best.fer and best.bin"));
        assert!(resolve(&empty).expect_err("empty").to_string().contains("neither best.fer"));
        let latest = features.join("latest.bin");
        assert_eq!(resolve(&latest).expect("ok"), CheckpointArg::FeatureRun(latest.clone()));
        let missing = dir.path().join("no.fer");
        assert_eq!(resolve(&missing).expect("ok"), CheckpointArg::Classifier(missing.clone()));
    }
}
