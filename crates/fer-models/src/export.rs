//! Weights as safetensors, for tools outside fer-rs (PyTorch, NumPy, Hugging Face).
//!
//! fer-rs's own checkpoints (`.fer`, [`crate::save_checkpoint`]) keep Burn's binary record: it
//! round-trips every module state with no name mapping and sits inside a checksummed file with the
//! model config and training metadata. safetensors is the exchange format: a flat, memory-mappable
//! map from names to tensors that every framework reads without running code. The export holds
//! every tensor of the model, BatchNorm running statistics included, named by Burn's module paths
//! (VGG: `blocks.0.conv.weight`, `blocks.0.norm.gamma` / `beta` / `running_mean` / `running_var`,
//! `classifier.weight`), fp32, Burn's layouts (convolutions `[out, in, k, k]` as in PyTorch;
//! linear weights `[in, out]`, the transpose of PyTorch's; BatchNorm `gamma`/`beta` are PyTorch's
//! `weight`/`bias`). Checked readable by Python's `safetensors.numpy.load_file`. The model config travels in the
//! header metadata under [`SAFETENSORS_CONFIG_KEY`], so [`import_safetensors`] needs only the path.

use std::path::Path;

use burn::prelude::*;
use burn_store::{ModuleSnapshot, SafetensorsStore};

use crate::{Model, ModelConfig, ModelError};

/// Header metadata key holding the [`ModelConfig`] as JSON.
pub const SAFETENSORS_CONFIG_KEY: &str = "fer_model_config";

/// Writes `model`'s weights (with `config` in the metadata) to `path` as safetensors.
pub fn export_safetensors<B: Backend>(
    model: &Model<B>,
    config: &ModelConfig,
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    let invalid = |problem: String| ModelError::Invalid { path: path.to_path_buf(), problem };
    let json = serde_json::to_string(config).map_err(|e| invalid(e.to_string()))?;
    let mut store = SafetensorsStore::from_bytes(None).metadata(SAFETENSORS_CONFIG_KEY, json);
    let saved = match model {
        Model::Vgg(m) => m.save_into(&mut store),
        Model::ResNet(m) => m.save_into(&mut store),
    };
    saved.map_err(|e| invalid(format!("cannot encode weights: {e}")))?;
    let bytes = store.get_bytes().map_err(|e| invalid(format!("cannot encode weights: {e}")))?;
    fer_dataset::write_atomically(path, &bytes).map_err(|source| ModelError::Write { path: path.to_path_buf(), source })
}

/// Reads a safetensors file written by [`export_safetensors`]: rebuilds the model from the config
/// in its metadata and loads every tensor. A file without that metadata, or whose tensors do not
/// match the config (missing, unexpected or differently shaped), is refused with what differs.
pub fn import_safetensors<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Model<B>, ModelConfig), ModelError> {
    let path = path.as_ref();
    let invalid = |problem: String| ModelError::Invalid { path: path.to_path_buf(), problem };
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| invalid(format!("not a safetensors file: {e}")))?;
    let json = header.metadata().as_ref().and_then(|m| m.get(SAFETENSORS_CONFIG_KEY)).ok_or_else(|| {
        invalid(format!(
            "no `{SAFETENSORS_CONFIG_KEY}` in the header metadata: not exported by fer-rs, so the architecture is unknown"
        ))
    })?;
    let config: ModelConfig =
        serde_json::from_str(json).map_err(|e| invalid(format!("{SAFETENSORS_CONFIG_KEY}: {e}")))?;
    config.check().map_err(|e| invalid(format!("model config: {e}")))?;
    let mut model = config.init::<B>(device);
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let applied = match &mut model {
        Model::Vgg(m) => m.load_from(&mut store),
        Model::ResNet(m) => m.load_from(&mut store),
    };
    let result = applied.map_err(|e| invalid(format!("tensors do not fit model `{}`: {e}", config.name())))?;
    if !result.unused.is_empty() {
        return Err(invalid(format!(
            "tensors {:?} are not part of model `{}`",
            result.unused.iter().take(5).collect::<Vec<_>>(),
            config.name()
        )));
    }
    Ok((model, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type B = NdArray;

    #[test]
    fn round_trip_gives_identical_logits_and_keeps_running_statistics() {
        let device = Default::default();
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["vgg-small", "resnet-small"] {
            let config = ModelConfig::from_name(name).expect("known");
            let model = config.init::<B>(&device);
            let path = dir.path().join(format!("{name}.safetensors"));
            export_safetensors(&model, &config, &path).expect("export");

            // Any safetensors reader sees plain named fp32 tensors, running statistics included.
            let bytes = std::fs::read(&path).expect("read");
            let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
            let names = file.names();
            assert!(names.iter().any(|n| n.ends_with("running_mean")), "{names:?}");
            assert!(names.iter().all(|n| !n.starts_with("Vgg") && !n.starts_with("ResNet")), "{names:?}");
            let params: usize = file.tensors().iter().map(|(_, t)| t.shape().iter().product::<usize>()).sum();
            assert_eq!(params, model.num_params(), "every tensor of the module is exported");

            let (loaded, loaded_config) = import_safetensors::<B>(&path, &device).expect("import");
            assert_eq!(loaded_config, config);
            let x = Tensor::<B, 4>::random([2, 1, 44, 44], Distribution::Uniform(0.0, 1.0), &device);
            assert_eq!(model.forward(x.clone()).into_data(), loaded.forward(x).into_data(), "{name}");
        }
    }

    #[test]
    fn foreign_and_mismatched_files_are_refused() {
        let device = Default::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let vgg = ModelConfig::from_name("vgg-small").expect("known");
        let path = dir.path().join("m.safetensors");
        export_safetensors(&vgg.init::<B>(&device), &vgg, &path).expect("export");

        // The same tensors under another config's name: nothing fits.
        let bytes = std::fs::read(&path).expect("read");
        let vgg_json = serde_json::to_string(&vgg).expect("json");
        let resnet_json = serde_json::to_string(&ModelConfig::from_name("resnet-small").expect("known")).expect("json");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(text.contains(&vgg_json.replace('"', "\\\"")), "config stored as escaped JSON in the header");
        let (header_len, _) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).expect("utf-8 header");
        let swapped = header.replace(&vgg_json.replace('"', "\\\""), &resnet_json.replace('"', "\\\""));
        let mut forged = (swapped.len() as u64).to_le_bytes().to_vec();
        forged.extend_from_slice(swapped.as_bytes());
        forged.extend_from_slice(&bytes[8 + header_len..]);
        let forged_path = dir.path().join("forged.safetensors");
        std::fs::write(&forged_path, forged).expect("write");
        let e = import_safetensors::<B>(&forged_path, &device).expect_err("mismatch").to_string();
        assert!(e.contains("forged.safetensors") && e.contains("resnet"), "{e}");

        std::fs::write(&forged_path, b"\x02\x00\x00\x00\x00\x00\x00\x00{}").expect("write");
        let e = import_safetensors::<B>(&forged_path, &device).expect_err("no metadata").to_string();
        assert!(e.contains("fer_model_config"), "{e}");
        std::fs::write(&forged_path, b"hello").expect("write");
        let e = import_safetensors::<B>(&forged_path, &device).expect_err("not safetensors").to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
    }
}
