//! Self-describing checkpoints: the model config, free-form metadata and the weights in one file.
//!
//! Layout (integers little-endian):
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | magic `FERCKPT1` |
//! | 4 | header length `h` |
//! | `h` | JSON header: [`Checkpoint`] (model config + metadata) |
//! | 8 | record length `r` |
//! | `r` | Burn record of the weights (`BinBytesRecorder`, full f32 precision) |
//! | 4 | CRC-32 of every byte before it |
//!
//! Burn's binary record is used (not safetensors) because it round-trips every module state
//! Burn has — BatchNorm running statistics included — with no name mapping to maintain. For
//! other tools, [`crate::export_safetensors`] writes the same weights as safetensors (`fer export`)
//! and [`crate::import_safetensors`] reads them back (`fer import`).

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};

use crate::{Model, ModelConfig};

/// The first eight bytes of every checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"FERCKPT1";

/// Errors of checkpoint I/O.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write checkpoint {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a fer-rs checkpoint, or is damaged.
    #[error("{}: not a valid fer-rs checkpoint: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The checkpoint holds another model than the one asked for.
    #[error("{}: checkpoint holds model `{found}`, expected `{expected}`", path.display())]
    WrongModel {
        /// The file.
        path: PathBuf,
        /// Model in the file.
        found: String,
        /// Model asked for.
        expected: String,
    },
}

/// What a checkpoint says about itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The architecture, enough to rebuild the model.
    pub model: ModelConfig,
    /// Free-form metadata (fer-train stores the epoch, accuracies, the training config).
    pub meta: serde_json::Value,
}

impl Checkpoint {
    /// Fails with [`ModelError::WrongModel`] unless the checkpoint holds `expected`.
    pub fn ensure_model(&self, expected: &ModelConfig, path: &Path) -> Result<(), ModelError> {
        if &self.model == expected {
            Ok(())
        } else {
            Err(ModelError::WrongModel {
                path: path.to_path_buf(),
                found: describe(&self.model),
                expected: describe(expected),
            })
        }
    }
}

fn describe(config: &ModelConfig) -> String {
    match config.name() {
        "vgg" | "resnet" => {
            format!("{} (custom: {})", config.name(), serde_json::to_string(config).unwrap_or_default())
        }
        name => name.to_string(),
    }
}

/// Writes `model` with its `config` and `meta` to `path`, atomically (temporary file + rename).
pub fn save_checkpoint<B: Backend>(
    path: impl AsRef<Path>,
    model: &Model<B>,
    config: &ModelConfig,
    meta: serde_json::Value,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    let invalid = |problem: String| ModelError::Invalid { path: path.to_path_buf(), problem };
    let header = serde_json::to_vec(&Checkpoint { model: config.clone(), meta }).map_err(|e| invalid(e.to_string()))?;
    let record = BinBytesRecorder::<FullPrecisionSettings>::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| invalid(format!("cannot encode weights: {e}")))?;
    let mut bytes = Vec::with_capacity(record.len() + header.len() + 28);
    bytes.extend_from_slice(&CHECKPOINT_MAGIC);
    bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&(record.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&record);
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    fer_dataset::write_atomically(path, &bytes).map_err(|source| ModelError::Write { path: path.to_path_buf(), source })
}

struct Parsed<'a> {
    header: Checkpoint,
    record: &'a [u8],
    /// The stored (and verified) CRC-32 trailer.
    checksum: u32,
}

fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<Parsed<'a>, ModelError> {
    let invalid = |problem: String| ModelError::Invalid { path: path.to_path_buf(), problem };
    if bytes.len() < 8 || bytes[..8] != CHECKPOINT_MAGIC {
        return Err(invalid("bad magic bytes (expected FERCKPT1)".into()));
    }
    if bytes.len() < 24 {
        return Err(invalid(format!("only {} bytes", bytes.len())));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(invalid(format!(
            "checksum {computed:08x} does not match the stored {stored:08x} (truncated or damaged)"
        )));
    }
    let header_len = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let header_end = 12usize.checked_add(header_len).filter(|&e| e + 8 <= body.len());
    let header_end = header_end.ok_or_else(|| invalid(format!("header length {header_len} overruns the file")))?;
    let header: Checkpoint =
        serde_json::from_slice(&body[12..header_end]).map_err(|e| invalid(format!("header JSON: {e}")))?;
    let record_len = u64::from_le_bytes(body[header_end..header_end + 8].try_into().expect("8 bytes"));
    if record_len != (body.len() - header_end - 8) as u64 {
        return Err(invalid(format!("record length {record_len} does not match the file")));
    }
    header.model.check().map_err(|e| invalid(format!("model config: {e}")))?;
    Ok(Parsed { header, record: &body[header_end + 8..], checksum: stored })
}

/// Reads only what a checkpoint says about itself (no weights are decoded).
pub fn read_checkpoint_header(path: impl AsRef<Path>) -> Result<Checkpoint, ModelError> {
    read_checkpoint_header_with_checksum(path).map(|(header, _)| header)
}

/// The CRC-32 a valid checkpoint stores over its contents (configuration, metadata and weights):
/// a short name for exactly these weights, e.g. to record what a run started from.
pub fn checkpoint_checksum(path: impl AsRef<Path>) -> Result<u32, ModelError> {
    read_checkpoint_header_with_checksum(path).map(|(_, checksum)| checksum)
}

/// [`read_checkpoint_header`] and [`checkpoint_checksum`] from one read of the file, so both
/// describe the same contents (no weights are decoded).
pub fn read_checkpoint_header_with_checksum(path: impl AsRef<Path>) -> Result<(Checkpoint, u32), ModelError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
    let Parsed { header, checksum, .. } = parse(&bytes, path)?;
    Ok((header, checksum))
}

/// Loads a checkpoint: rebuilds the model from its stored config and loads the weights.
pub fn load_checkpoint<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Model<B>, Checkpoint), ModelError> {
    load_checkpoint_with_checksum(path, device).map(|(model, header, _)| (model, header))
}

/// [`load_checkpoint`], also returning the file's [`checkpoint_checksum`], from one read of the
/// file: the checksum names exactly the weights that were loaded.
pub fn load_checkpoint_with_checksum<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Model<B>, Checkpoint, u32), ModelError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
    let Parsed { header, record, checksum } = parse(&bytes, path)?;
    let record = BinBytesRecorder::<FullPrecisionSettings>::default()
        .load(record.to_vec(), device)
        .map_err(|e| ModelError::Invalid { path: path.to_path_buf(), problem: format!("weights: {e}") })?;
    let model = header.model.init::<B>(device).load_record(record);
    Ok((model, header, checksum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type B = NdArray;

    #[test]
    fn round_trip_gives_identical_logits() {
        let device = Default::default();
        let group_norm = ModelConfig::Vgg(crate::VggConfig::small().with_group_norm_groups(Some(8)));
        for config in [
            ModelConfig::from_name("vgg-small").expect("known"),
            ModelConfig::from_name("resnet-small").expect("known"),
            group_norm,
        ] {
            let name = config.label();
            let model = config.init::<B>(&device);
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("m.fer");
            save_checkpoint(&path, &model, &config, serde_json::json!({"epoch": 3})).expect("save");
            let (loaded, header) = load_checkpoint::<B>(&path, &device).expect("load");
            assert_eq!(header.model, config);
            assert_eq!(header.meta["epoch"], 3);
            let x = Tensor::<B, 4>::random([3, 1, 44, 44], Distribution::Uniform(0.0, 1.0), &device);
            // Eval mode (no autodiff backend): dropout is identity, BN uses running stats.
            let a = model.forward(x.clone()).into_data();
            let b = loaded.forward(x).into_data();
            assert_eq!(a, b, "{name}");
        }
    }

    #[test]
    fn damaged_and_foreign_files_are_refused() {
        let device = Default::default();
        let config = ModelConfig::from_name("vgg-small").expect("known");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.fer");
        save_checkpoint(&path, &config.init::<B>(&device), &config, serde_json::Value::Null).expect("save");
        let mut bytes = fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n / 2] ^= 4;
        fs::write(&path, &bytes).expect("write");
        let err = load_checkpoint::<B>(&path, &device).expect_err("damaged");
        assert!(err.to_string().contains("checksum"), "{err}");
        fs::write(&path, b"not a checkpoint at all").expect("write");
        assert!(read_checkpoint_header(&path).expect_err("foreign").to_string().contains("magic"));
        let missing = load_checkpoint::<B>(dir.path().join("none.fer"), &device).expect_err("missing");
        assert!(matches!(missing, ModelError::Read { .. }));
    }

    #[test]
    fn checksum_names_the_weights() {
        let device = Default::default();
        let config = ModelConfig::from_name("vgg-small").expect("known");
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.fer"), dir.path().join("b.fer"));
        let model = config.init::<B>(&device);
        save_checkpoint(&a, &model, &config, serde_json::Value::Null).expect("save");
        let bytes = fs::read(&a).expect("read");
        let sum = checkpoint_checksum(&a).expect("checksum");
        assert_eq!(sum, crc32fast::hash(&bytes[..bytes.len() - 4]), "the stored CRC over everything before it");
        save_checkpoint(&b, &model, &config, serde_json::Value::Null).expect("save");
        assert_eq!(checkpoint_checksum(&b).expect("checksum"), sum, "same weights, same checksum");
        save_checkpoint(&b, &config.init::<B>(&device), &config, serde_json::Value::Null).expect("save");
        assert_ne!(checkpoint_checksum(&b).expect("checksum"), sum, "other weights");
        let (loaded, header, loaded_sum) = load_checkpoint_with_checksum::<B>(&a, &device).expect("load");
        assert_eq!((loaded_sum, &header.model), (sum, &config), "the loaded file's checksum");
        let (read, read_sum) = read_checkpoint_header_with_checksum(&a).expect("header");
        assert_eq!((read_sum, read.model), (sum, config), "header and checksum from one read");
        let images = Tensor::<B, 4>::random([2, 1, 44, 44], Distribution::Default, &device);
        assert_eq!(loaded.forward(images.clone()).into_data(), model.forward(images).into_data(), "same weights");
        fs::write(&b, &bytes[..bytes.len() - 1]).expect("truncate");
        assert!(checkpoint_checksum(&b).expect_err("truncated").to_string().contains("b.fer"));
    }

    #[test]
    fn wrong_model_is_named() {
        let vgg = ModelConfig::from_name("vgg19").expect("known");
        let header =
            Checkpoint { model: ModelConfig::from_name("resnet18").expect("known"), meta: serde_json::Value::Null };
        let err = header.ensure_model(&vgg, Path::new("x.fer")).expect_err("mismatch");
        assert_eq!(err.to_string(), "x.fer: checkpoint holds model `resnet18`, expected `vgg19`");
    }
}
