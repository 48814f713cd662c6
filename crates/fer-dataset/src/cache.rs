//! The binary cache `fer preprocess` writes: FER2013 decoded once, loaded in milliseconds.
//!
//! Layout (all integers little-endian):
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | magic `FERCACHE` |
//! | 4 | format version ([`CACHE_VERSION`]) |
//! | 3 × 8 | faces in Training, PublicTest, PrivateTest |
//! | per split | `n` label bytes (0–6), then `n × 2304` pixel bytes |
//! | 4 | CRC-32 of every byte before it |

use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use crate::{DatasetError, Emotion, FACE_PIXELS, FaceImage, Fer2013, Split, SplitData};

/// The first eight bytes of every cache file.
pub const CACHE_MAGIC: [u8; 8] = *b"FERCACHE";
/// The cache format this build writes and reads; bump it whenever the layout changes.
pub const CACHE_VERSION: u32 = 1;

const HEADER_LEN: usize = 8 + 4 + 3 * 8;

/// Writes `data` to `path` atomically (a temporary file renamed into place).
pub fn write_cache(data: &Fer2013, path: impl AsRef<Path>) -> Result<(), DatasetError> {
    let path = path.as_ref();
    let mut bytes = Vec::with_capacity(HEADER_LEN + data.len() * (FACE_PIXELS + 1) + 4);
    bytes.extend_from_slice(&CACHE_MAGIC);
    bytes.extend_from_slice(&CACHE_VERSION.to_le_bytes());
    for s in Split::ALL {
        bytes.extend_from_slice(&(data.split(s).len() as u64).to_le_bytes());
    }
    for s in Split::ALL {
        let split = data.split(s);
        bytes.extend(split.labels().iter().map(|l| l.index() as u8));
        for image in split.images() {
            bytes.extend_from_slice(image.pixels());
        }
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());

    write_atomically(path, &bytes).map_err(|source| DatasetError::Write { path: path.to_path_buf(), source })
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it and renames it over `path`, so a
/// reader never sees a half-written file (caches, checkpoints, run state all go through here).
/// On Unix the directory is synced after the rename too, so that renames reach the disk in the
/// order they were made (a run's epoch commit relies on that order across a power cut; a
/// filesystem that cannot sync a directory is left to its own order).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    #[cfg(unix)]
    {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Best effort: some filesystems refuse to sync a directory (EINVAL); the file itself is
        // complete and in place either way.
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Reads a cache written by [`write_cache`], checking magic, version, sizes and checksum.
///
/// The file is streamed straight into the faces (one pass, no second copy of the 83 MB).
pub fn read_cache(path: impl AsRef<Path>) -> Result<Fer2013, DatasetError> {
    let path = path.as_ref();
    let open_error = |source| DatasetError::Open { path: path.to_path_buf(), source };
    let file = fs::File::open(path).map_err(open_error)?;
    let file_len = file.metadata().map_err(open_error)?.len();
    let corrupt = |problem: String| DatasetError::CacheCorrupt { path: path.to_path_buf(), problem };
    let read_error = |source| DatasetError::Read { path: path.to_path_buf(), line: 0, source };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();

    let mut header = [0u8; HEADER_LEN];
    let got = read_up_to(&mut reader, &mut header).map_err(read_error)?;
    if got < 8 || header[..8] != CACHE_MAGIC {
        return Err(DatasetError::CacheMagic { path: path.to_path_buf() });
    }
    if file_len < (HEADER_LEN + 4) as u64 {
        return Err(corrupt(format!("{file_len} bytes is shorter than the {} byte header", HEADER_LEN + 4)));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != CACHE_VERSION {
        return Err(DatasetError::CacheVersion { path: path.to_path_buf(), found: version, expected: CACHE_VERSION });
    }
    let counts: [u64; 3] =
        std::array::from_fn(|i| u64::from_le_bytes(header[12 + 8 * i..20 + 8 * i].try_into().expect("8 bytes")));
    let faces: u64 = counts.iter().sum();
    let expected_len =
        faces.checked_mul(FACE_PIXELS as u64 + 1).and_then(|body| body.checked_add((HEADER_LEN + 4) as u64));
    if expected_len != Some(file_len) {
        return Err(corrupt(format!(
            "header announces {faces} faces ({} bytes) but the file has {file_len} bytes",
            expected_len.map_or("overflowing".into(), |n| n.to_string()),
        )));
    }
    crc.update(&header);

    let mut splits = Vec::with_capacity(3);
    for (s, &n) in Split::ALL.iter().zip(&counts) {
        let n = n as usize;
        let mut labels = vec![0u8; n];
        reader.read_exact(&mut labels).map_err(read_error)?;
        crc.update(&labels);
        let mut split = SplitData::with_capacity(n);
        for (i, &label) in labels.iter().enumerate() {
            let emotion = Emotion::from_index(label as usize)
                .ok_or_else(|| corrupt(format!("{s} face {i} has label {label}, not 0-6")))?;
            let mut image = FaceImage([0; FACE_PIXELS]);
            reader.read_exact(&mut image.0).map_err(read_error)?;
            crc.update(&image.0);
            split.push(emotion, image);
        }
        splits.push(split);
    }
    let mut trailer = [0u8; 4];
    reader.read_exact(&mut trailer).map_err(read_error)?;
    let stored = u32::from_le_bytes(trailer);
    let computed = crc.finalize();
    if stored != computed {
        return Err(corrupt(format!("checksum {computed:08x} does not match the stored {stored:08x}")));
    }
    let [training, public_test, private_test]: [SplitData; 3] = splits.try_into().expect("three splits");
    Ok(Fer2013::from_splits(training, public_test, private_test))
}

/// Fills as much of `buf` as the reader holds; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fer2013 {
        let mut data = Fer2013::default();
        for i in 0..30u8 {
            let split = Split::ALL[(i % 3) as usize];
            let mut px = [0u8; FACE_PIXELS];
            for (k, p) in px.iter_mut().enumerate() {
                *p = (k as u8).wrapping_mul(i);
            }
            data.split_mut(split).push(Emotion::ALL[(i % 7) as usize], FaceImage(px));
        }
        data
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fer.cache");
        let data = sample();
        write_cache(&data, &path).expect("write");
        assert_eq!(read_cache(&path).expect("read"), data);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    fn written() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fer.cache");
        write_cache(&sample(), &path).expect("write");
        let bytes = fs::read(&path).expect("read back");
        (dir, path, bytes)
    }

    #[test]
    fn rejects_flipped_byte() {
        let (_dir, path, mut bytes) = written();
        bytes[HEADER_LEN + 500] ^= 0x10;
        fs::write(&path, &bytes).expect("write");
        let err = read_cache(&path).expect_err("corrupt");
        assert!(matches!(err, DatasetError::CacheCorrupt { .. }), "{err}");
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn rejects_truncation() {
        let (_dir, path, bytes) = written();
        fs::write(&path, &bytes[..bytes.len() - 100]).expect("write");
        let err = read_cache(&path).expect_err("truncated");
        assert!(err.to_string().contains("header announces 30 faces"), "{err}");
        fs::write(&path, &bytes[..10]).expect("write");
        assert!(matches!(read_cache(&path), Err(DatasetError::CacheCorrupt { .. })));
    }

    #[test]
    fn rejects_stale_version_and_foreign_file() {
        let (_dir, path, mut bytes) = written();
        bytes[8..12].copy_from_slice(&(CACHE_VERSION + 1).to_le_bytes());
        fs::write(&path, &bytes).expect("write");
        let err = read_cache(&path).expect_err("stale");
        assert!(matches!(err, DatasetError::CacheVersion { found, .. } if found == CACHE_VERSION + 1), "{err}");
        assert!(err.to_string().contains("fer preprocess"), "{err}");
        fs::write(&path, b"emotion,pixels,Usage\n").expect("write");
        assert!(matches!(read_cache(&path), Err(DatasetError::CacheMagic { .. })));
    }
}
