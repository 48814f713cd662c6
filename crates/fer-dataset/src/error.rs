//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// What went wrong reading FER2013 or its cache. Every variant names the file, and those about
/// the content also name the 1-based line (the header is line 1), the field and the value.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be opened (missing, unreadable).
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Reading failed part-way, e.g. a truncated or corrupt gzip stream.
    #[error("{}:{line}: read failed: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The line being read when it failed.
        line: u64,
        /// The underlying error (a truncated gzip reports "unexpected end of file").
        source: io::Error,
    },
    /// The file (after decompression) holds nothing at all.
    #[error("{}: the file is empty (expected the header `emotion,pixels,Usage` then 35,887 rows)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file holds a header but no data rows.
    #[error("{}: the header is there but there are no data rows", path.display())]
    NoRows {
        /// The file.
        path: PathBuf,
    },
    /// The first line is not `emotion,pixels,Usage`.
    #[error("{}:1: header is `{found}`, expected `emotion,pixels,Usage`", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// The header found.
        found: String,
    },
    /// A row does not have exactly three fields.
    #[error("{}:{line}: expected 3 fields (emotion,pixels,Usage), found {found}", path.display())]
    FieldCount {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// Number of fields found.
        found: usize,
    },
    /// A field holds a value that is not allowed there.
    #[error("{}:{line}: field `{field}`: {problem} (value `{value}`)", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// `emotion`, `pixels` or `Usage`; in FER+'s votes, `Usage` or a vote column's name.
        field: &'static str,
        /// The offending value (for pixels: the one bad number, or a short prefix of the field).
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The cache does not start with the fer-rs cache magic bytes.
    #[error("{}: not a fer-rs cache (bad magic bytes); rebuild it with `fer preprocess`", path.display())]
    CacheMagic {
        /// The file.
        path: PathBuf,
    },
    /// The cache was written by another (older or newer) format version.
    #[error("{}: stale cache: format version {found}, this build reads version {expected}; rebuild it with `fer preprocess`", path.display())]
    CacheVersion {
        /// The file.
        path: PathBuf,
        /// Version stored in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// The cache's size or content does not match its header or checksum.
    #[error("{}: corrupt cache: {problem}; rebuild it with `fer preprocess`", path.display())]
    CacheCorrupt {
        /// The file.
        path: PathBuf,
        /// What does not match.
        problem: String,
    },
    /// A file's layout is not the expected one (another header, another number of fields).
    #[error("{}:{line}: {problem}", path.display())]
    Layout {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        problem: String,
    },
    /// A file is well formed but does not belong to the data it is used with.
    #[error("{}: {problem}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What does not match.
        problem: String,
    },
    /// Writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No `--data` was given and none of the default places holds FER2013.
    #[error("no FER2013 file found: {tried}.\nFER2013 comes from the Kaggle challenge \"Challenges in Representation Learning: Facial Expression Recognition\" (fer2013.csv, ~300 MB, or gzip it to ~94 MB).\nPoint fer-rs at it with `--data PATH` or `export {var}=PATH` (CSV, .csv.gz or a `fer preprocess` cache).", var = crate::DATA_ENV_VAR)]
    NoData {
        /// The places that were looked at.
        tried: String,
    },
}
