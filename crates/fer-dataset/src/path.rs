//! Where FER2013 is found, and loading it whatever its form.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{CACHE_MAGIC, DatasetError, Fer2013, read_cache, read_csv};

/// The environment variable naming the FER2013 file when `--data` is not given.
pub const DATA_ENV_VAR: &str = "FER2013_CSV";

const DEFAULT_PLACES: [&str; 2] = ["data/fer2013.csv.gz", "data/fer2013.csv"];

/// The FER2013 file to use: `explicit` when given, else `$FER2013_CSV`, else
/// `data/fer2013.csv.gz` or `data/fer2013.csv` under the working directory.
///
/// An explicit path or the variable is returned as is (a missing file is reported when it is
/// opened, naming it); when neither is set and no default exists, the error says where to get
/// FER2013 and how to point fer-rs at it.
pub fn default_data_path(explicit: Option<&Path>) -> Result<PathBuf, DatasetError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os(DATA_ENV_VAR).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    DEFAULT_PLACES.iter().map(PathBuf::from).find(|p| p.is_file()).ok_or_else(|| DatasetError::NoData {
        tried: format!("no --data, {DATA_ENV_VAR} is unset, and neither {} exists", DEFAULT_PLACES.join(" nor ")),
    })
}

/// Loads FER2013 from a `fer preprocess` cache, a CSV or a gzip'd CSV, told apart by content.
pub fn load(path: impl AsRef<Path>) -> Result<Fer2013, DatasetError> {
    let path = path.as_ref();
    if is_cache_file(path)? { read_cache(path) } else { read_csv(path) }
}

/// True when `path` starts with the cache magic bytes (reads 8 bytes).
pub fn is_cache_file(path: impl AsRef<Path>) -> Result<bool, DatasetError> {
    let path = path.as_ref();
    let mut head = [0u8; 8];
    let file = File::open(path).map_err(|source| DatasetError::Open { path: path.to_path_buf(), source })?;
    let n = file.take(8).read(&mut head).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        line: 1,
        source,
    })?;
    Ok(n == head.len() && head == CACHE_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins() {
        let p = Path::new("/some/where.csv");
        assert_eq!(default_data_path(Some(p)).expect("explicit"), p);
    }

    #[test]
    fn load_tells_cache_from_csv() {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv = dir.path().join("f.csv");
        let pixels = vec!["9"; crate::FACE_PIXELS].join(" ");
        std::fs::write(&csv, format!("emotion,pixels,Usage\n3,{pixels},Training\n")).expect("write");
        let from_csv = load(&csv).expect("csv");
        let cache = dir.path().join("f.cache");
        crate::write_cache(&from_csv, &cache).expect("cache");
        assert_eq!(load(&cache).expect("cache"), from_csv);
        assert!(matches!(load(dir.path().join("none")), Err(DatasetError::Open { .. })));
    }
}
