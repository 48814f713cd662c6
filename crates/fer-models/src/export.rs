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
//!
//! The CNN + landmarks + HOG model ([`CnnHog`]) has its own pair,
//! [`export_feature_model_safetensors`] / [`import_feature_model_safetensors`]: its config goes
//! under [`SAFETENSORS_FEATURE_MODEL_KEY`] and the name of the feature vector it reads (which
//! fixes the layout of its second input) under [`SAFETENSORS_FEATURE_SET_KEY`]. Its tensors:
//! `convs.N.conv.weight` / `bias` and `convs.N.norm.*` (as above; each block is conv → ReLU →
//! BatchNorm → optional 2×2 max-pool), `image_fc.N.weight` / `bias` (the image branch's dense
//! layers on the flattened map, ReLU after each), `feature_fc.N.*` (the feature branch's, ReLU
//! after each) and `classifier.*` on the two branches concatenated (image first); linear weights
//! `[in, out]`. Callers may add their own metadata entries (fer-train adds the run's recipe).

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use fer_features::FeatureSet;

use crate::{CnnHog, CnnHogConfig, Model, ModelConfig, ModelError};

/// Header metadata key holding the [`ModelConfig`] as JSON.
pub const SAFETENSORS_CONFIG_KEY: &str = "fer_model_config";

/// Header metadata key holding a [`CnnHogConfig`] as JSON.
pub const SAFETENSORS_FEATURE_MODEL_KEY: &str = "fer_feature_model_config";

/// Header metadata key holding the name of the [`FeatureSet`] a [`CnnHog`] model reads
/// ([`FeatureSet::name`], e.g. `landmarks-sliding-hog`).
pub const SAFETENSORS_FEATURE_SET_KEY: &str = "fer_feature_set";

/// Writes `model`'s weights (with `config` in the metadata) to `path` as safetensors.
pub fn export_safetensors<B: Backend>(
    model: &Model<B>,
    config: &ModelConfig,
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    let json = serde_json::to_string(config).map_err(|e| invalid(path, e.to_string()))?;
    let store = SafetensorsStore::from_bytes(None).metadata(SAFETENSORS_CONFIG_KEY, json);
    match model {
        Model::Vgg(m) => write_module(m, store, path),
        Model::ResNet(m) => write_module(m, store, path),
        Model::VggGroupNorm(m) => write_module(m, store, path),
    }
}

/// Reads a safetensors file written by [`export_safetensors`]: rebuilds the model from the config
/// in its metadata and loads every tensor. A file without that metadata, or whose tensors do not
/// match the config (missing, unexpected or differently shaped), is refused with what differs.
pub fn import_safetensors<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(Model<B>, ModelConfig), ModelError> {
    let path = path.as_ref();
    let (bytes, metadata) = read_file(path)?;
    let config: ModelConfig = config_entry(path, &metadata, SAFETENSORS_CONFIG_KEY)?;
    config.check().map_err(|e| invalid(path, format!("model config: {e}")))?;
    let mut model = config.init::<B>(device);
    match &mut model {
        Model::Vgg(m) => load_module(m, bytes, path, config.name()),
        Model::ResNet(m) => load_module(m, bytes, path, config.name()),
        Model::VggGroupNorm(m) => load_module(m, bytes, path, config.name()),
    }?;
    Ok((model, config))
}

/// Writes a CNN + features model's weights to `path` as safetensors, with `config` and the name
/// of `set` (the feature vector it reads) in the header metadata, plus the `extra` entries.
/// The model must read `set` (`config.feature_len == set.len()`).
pub fn export_feature_model_safetensors<B: Backend>(
    model: &CnnHog<B>,
    config: &CnnHogConfig,
    set: FeatureSet,
    extra: &[(&str, String)],
    path: impl AsRef<Path>,
) -> Result<(), ModelError> {
    let path = path.as_ref();
    if config.feature_len != set.len() || model.feature_len() != set.len() {
        return Err(invalid(
            path,
            format!(
                "the model takes {} features (config: {}) but the set {} has {}",
                model.feature_len(),
                config.feature_len,
                set.name(),
                set.len()
            ),
        ));
    }
    let json = serde_json::to_string(config).map_err(|e| invalid(path, e.to_string()))?;
    let mut store = SafetensorsStore::from_bytes(None)
        .metadata(SAFETENSORS_FEATURE_MODEL_KEY, json)
        .metadata(SAFETENSORS_FEATURE_SET_KEY, set.name());
    for (key, value) in extra {
        if [SAFETENSORS_CONFIG_KEY, SAFETENSORS_FEATURE_MODEL_KEY, SAFETENSORS_FEATURE_SET_KEY].contains(key) {
            return Err(invalid(path, format!("metadata key `{key}` is fer-rs's own")));
        }
        store = store.metadata(*key, value.clone());
    }
    write_module(model, store, path)
}

/// A CNN + features model read back by [`import_feature_model_safetensors`].
#[derive(Debug)]
pub struct ImportedFeatureModel<B: Backend> {
    /// The model, every tensor loaded.
    pub model: CnnHog<B>,
    /// Its config (from the header metadata).
    pub config: CnnHogConfig,
    /// The feature vector it reads.
    pub set: FeatureSet,
    /// Every header metadata entry, fer-rs's own and the exporter's `extra` ones.
    pub metadata: HashMap<String, String>,
}

/// Reads a safetensors file written by [`export_feature_model_safetensors`]: rebuilds the model
/// from the config in its metadata and loads every tensor. Refused, naming the file: a file
/// without that metadata (a VGG/ResNet export says so), an unknown feature set or one of another
/// length than the model's, and tensors that do not fit (missing, unexpected, other shapes).
pub fn import_feature_model_safetensors<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<ImportedFeatureModel<B>, ModelError> {
    let path = path.as_ref();
    let (bytes, metadata) = read_file(path)?;
    if !metadata.contains_key(SAFETENSORS_FEATURE_MODEL_KEY) && metadata.contains_key(SAFETENSORS_CONFIG_KEY) {
        return Err(invalid(path, "holds a VGG/ResNet model (`fer_model_config`), not a CNN + features model".into()));
    }
    let config: CnnHogConfig = config_entry(path, &metadata, SAFETENSORS_FEATURE_MODEL_KEY)?;
    config.check().map_err(|e| invalid(path, format!("model config: {e}")))?;
    let set_name = metadata
        .get(SAFETENSORS_FEATURE_SET_KEY)
        .ok_or_else(|| invalid(path, format!("no `{SAFETENSORS_FEATURE_SET_KEY}` in the header metadata")))?;
    let set: FeatureSet =
        set_name.parse().map_err(|e| invalid(path, format!("{SAFETENSORS_FEATURE_SET_KEY} `{set_name}`: {e}")))?;
    if set.len() != config.feature_len {
        return Err(invalid(
            path,
            format!("the model takes {} features but the set {} has {}", config.feature_len, set.name(), set.len()),
        ));
    }
    let mut model = config.init::<B>(device);
    load_module(&mut model, bytes, path, "cnn-hog")?;
    Ok(ImportedFeatureModel { model, config, set, metadata })
}

/// The header metadata of a safetensors file (empty when it has none): which fer-rs export it is
/// ([`SAFETENSORS_CONFIG_KEY`] for VGG/ResNet, [`SAFETENSORS_FEATURE_MODEL_KEY`] for the CNN +
/// features model) and any entries the exporter added.
pub fn safetensors_metadata(path: impl AsRef<Path>) -> Result<HashMap<String, String>, ModelError> {
    read_file(path.as_ref()).map(|(_, metadata)| metadata)
}

fn invalid(path: &Path, problem: String) -> ModelError {
    ModelError::Invalid { path: path.to_path_buf(), problem }
}

/// Encodes every tensor of `module` into `store` and writes it atomically.
fn write_module<B: Backend, M: Module<B>>(
    module: &M,
    mut store: SafetensorsStore,
    path: &Path,
) -> Result<(), ModelError> {
    module.save_into(&mut store).map_err(|e| invalid(path, format!("cannot encode weights: {e}")))?;
    let bytes = store.get_bytes().map_err(|e| invalid(path, format!("cannot encode weights: {e}")))?;
    let bytes = with_sorted_header(bytes).map_err(|e| invalid(path, format!("cannot encode weights: {e}")))?;
    fer_dataset::write_atomically(path, &bytes).map_err(|source| ModelError::Write { path: path.to_path_buf(), source })
}

/// `bytes`, a safetensors file, with its JSON header's keys in sorted order, so that the same
/// weights and metadata always give the same file: burn-store writes the metadata from a hash map,
/// in an order that changes from one export to the next. The tensors' offsets count from the end
/// of the header, so only the header is rewritten (padded with spaces to 8 bytes, as the format
/// allows).
fn with_sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let (header_len, _) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| e.to_string())?;
    let end = 8 + header_len;
    // serde_json's maps are ordered by key (no `preserve_order`), at every level.
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..end]).map_err(|e| e.to_string())?;
    let mut json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - end);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

/// The file's bytes and header metadata.
fn read_file(path: &Path) -> Result<(Vec<u8>, HashMap<String, String>), ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| invalid(path, format!("not a safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    Ok((bytes, metadata))
}

/// The JSON config under `key`.
fn config_entry<T: serde::de::DeserializeOwned>(
    path: &Path,
    metadata: &HashMap<String, String>,
    key: &str,
) -> Result<T, ModelError> {
    let json = metadata.get(key).ok_or_else(|| {
        invalid(
            path,
            format!("no `{key}` in the header metadata: not exported by fer-rs, so the architecture is unknown"),
        )
    })?;
    serde_json::from_str(json).map_err(|e| invalid(path, format!("{key}: {e}")))
}

/// Loads every tensor of `bytes` into `module`; refuses missing, unexpected or misshapen ones.
fn load_module<B: Backend, M: Module<B>>(
    module: &mut M,
    bytes: Vec<u8>,
    path: &Path,
    name: &str,
) -> Result<(), ModelError> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    let result =
        module.load_from(&mut store).map_err(|e| invalid(path, format!("tensors do not fit model `{name}`: {e}")))?;
    if !result.unused.is_empty() {
        return Err(invalid(
            path,
            format!("tensors {:?} are not part of model `{name}`", result.unused.iter().take(5).collect::<Vec<_>>()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type B = NdArray;

    /// Writes `to`: the safetensors file `from` with its JSON header passed through `edit` (which
    /// must change it) and its tensor bytes unchanged.
    fn rewrite_header(from: &Path, to: &Path, edit: impl FnOnce(&str) -> String) {
        let bytes = std::fs::read(from).expect("read");
        let (header_len, _) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
        let header = std::str::from_utf8(&bytes[8..8 + header_len]).expect("utf-8 header");
        let edited = edit(header);
        assert_ne!(edited, header, "the edit changes the header");
        let mut forged = (edited.len() as u64).to_le_bytes().to_vec();
        forged.extend_from_slice(edited.as_bytes());
        forged.extend_from_slice(&bytes[8 + header_len..]);
        std::fs::write(to, forged).expect("write");
    }

    /// The same weights and config give the same bytes, export after export (burn-store's
    /// metadata map alone would order the header's keys anew each time), readable as before.
    #[test]
    fn exports_of_the_same_weights_are_byte_identical() {
        let device = Default::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ModelConfig::from_name("vgg-small").expect("known");
        let model = config.init::<B>(&device);
        let paths: Vec<_> = (0..4).map(|i| dir.path().join(format!("{i}.safetensors"))).collect();
        for path in &paths {
            export_safetensors(&model, &config, path).expect("export");
        }
        let first = std::fs::read(&paths[0]).expect("read");
        for path in &paths[1..] {
            assert_eq!(std::fs::read(path).expect("read"), first, "{}", path.display());
        }
        let (header_len, _) = safetensors::SafeTensors::read_metadata(&first).expect("header");
        assert_eq!(header_len % 8, 0, "the header is padded to 8 bytes");
        let header = std::str::from_utf8(&first[8..8 + header_len]).expect("utf-8");
        assert!(header.starts_with(r#"{"__metadata__":{"fer_model_config":"#), "{header}");
        let (back, back_config) = import_safetensors::<B>(&paths[0], &device).expect("import");
        assert_eq!(back_config, config);
        let x = Tensor::<B, 4>::random([2, 1, 44, 44], Distribution::Default, &device);
        let same = (model.forward_inference(x.clone()) - back.forward_inference(x)).abs().max().into_scalar();
        assert_eq!(same, 0.0);
    }

    #[test]
    fn round_trip_gives_identical_logits_and_keeps_running_statistics() {
        let device = Default::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let group_norm = ModelConfig::Vgg(crate::VggConfig::small().with_group_norm_groups(Some(8)));
        for (name, config) in [
            ("vgg-small", ModelConfig::from_name("vgg-small").expect("known")),
            ("resnet-small", ModelConfig::from_name("resnet-small").expect("known")),
            ("vgg-small-gn8", group_norm),
        ] {
            let model = config.init::<B>(&device);
            let path = dir.path().join(format!("{name}.safetensors"));
            export_safetensors(&model, &config, &path).expect("export");

            // Any safetensors reader sees plain named fp32 tensors, running statistics included
            // (GroupNorm has none: its γ and β only).
            let bytes = std::fs::read(&path).expect("read");
            let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
            let names = file.names();
            let running = names.iter().any(|n| n.ends_with("running_mean"));
            assert_eq!(running, config.has_batch_norm(), "{names:?}");
            assert!(names.iter().any(|n| n.ends_with("norm.gamma")), "{names:?}");
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
        let forged_path = dir.path().join("forged.safetensors");
        rewrite_header(&path, &forged_path, |header| {
            header.replace(&vgg_json.replace('"', "\\\""), &resnet_json.replace('"', "\\\""))
        });
        let e = import_safetensors::<B>(&forged_path, &device).expect_err("mismatch").to_string();
        assert!(e.contains("forged.safetensors") && e.contains("resnet"), "{e}");

        std::fs::write(&forged_path, b"\x02\x00\x00\x00\x00\x00\x00\x00{}").expect("write");
        let e = import_safetensors::<B>(&forged_path, &device).expect_err("no metadata").to_string();
        assert!(e.contains("fer_model_config"), "{e}");
        std::fs::write(&forged_path, b"hello").expect("write");
        let e = import_safetensors::<B>(&forged_path, &device).expect_err("not safetensors").to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
    }

    #[test]
    fn feature_model_round_trip_gives_identical_logits_for_every_feature_set() {
        let device = Default::default();
        let dir = tempfile::tempdir().expect("tempdir");
        for set in [FeatureSet::LandmarksSlidingHog, FeatureSet::LandmarksWholeHog, FeatureSet::Landmarks] {
            let config = CnnHogConfig::tiny(set.len());
            let model = config.init::<B>(&device);
            let values = model.num_params();
            let path = dir.path().join(format!("{}.safetensors", set.name()));
            let extra = [("recipe", "{\"epochs\":13}".to_string())];
            export_feature_model_safetensors(&model, &config, set, &extra, &path).expect("export");

            let bytes = std::fs::read(&path).expect("read");
            let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
            let stored: usize = file.tensors().iter().map(|(_, t)| t.shape().iter().product::<usize>()).sum();
            assert_eq!(stored, values, "every tensor of the module is exported");
            let names = file.names();
            for prefix in ["convs.0.conv.weight", "convs.0.norm.running_var", "image_fc.0.weight", "feature_fc.0.bias"]
            {
                assert!(names.contains(&prefix), "{prefix} not in {names:?}");
            }

            let imported = import_feature_model_safetensors::<B>(&path, &device).expect("import");
            assert_eq!(imported.config, config);
            assert_eq!(imported.set, set);
            assert_eq!(imported.metadata.get("recipe").map(String::as_str), Some("{\"epochs\":13}"));
            assert_eq!(imported.metadata.get(SAFETENSORS_FEATURE_SET_KEY).map(String::as_str), Some(set.name()));
            let images = Tensor::<B, 4>::random([3, 1, 48, 48], Distribution::Uniform(0.0, 1.0), &device);
            let features = Tensor::<B, 2>::random([3, set.len()], Distribution::Uniform(0.0, 1.0), &device);
            assert_eq!(
                model.forward_inference(images.clone(), features.clone()).into_data(),
                imported.model.forward_inference(images, features).into_data(),
                "{}",
                set.name()
            );
        }
    }

    #[test]
    fn feature_model_files_are_checked_both_ways() {
        let device = Default::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let set = FeatureSet::Landmarks;
        let config = CnnHogConfig::tiny(set.len());
        let model = config.init::<B>(&device);
        let path = dir.path().join("b.safetensors");

        // A model that does not read the set it is exported with, and reserved metadata keys.
        let e = export_feature_model_safetensors(&model, &config, FeatureSet::LandmarksWholeHog, &[], &path)
            .expect_err("wrong set")
            .to_string();
        assert!(e.contains("b.safetensors") && e.contains("136") && e.contains("208"), "{e}");
        let reserved = [(SAFETENSORS_FEATURE_SET_KEY, "landmarks".to_string())];
        let e = export_feature_model_safetensors(&model, &config, set, &reserved, &path).expect_err("reserved");
        assert!(e.to_string().contains("fer-rs's own"), "{e}");
        assert!(!path.exists(), "nothing written on a refused export");

        // Each import refuses the other family's file, by name.
        export_feature_model_safetensors(&model, &config, set, &[], &path).expect("export");
        let metadata = safetensors_metadata(&path).expect("metadata");
        assert!(metadata.contains_key(SAFETENSORS_FEATURE_MODEL_KEY) && !metadata.contains_key(SAFETENSORS_CONFIG_KEY));
        let e = import_safetensors::<B>(&path, &device).expect_err("not a VGG/ResNet file").to_string();
        assert!(e.contains("b.safetensors") && e.contains(SAFETENSORS_CONFIG_KEY), "{e}");
        let vgg = ModelConfig::from_name("vgg-small").expect("known");
        let vgg_path = dir.path().join("vgg.safetensors");
        export_safetensors(&vgg.init::<B>(&device), &vgg, &vgg_path).expect("export");
        let e = import_feature_model_safetensors::<B>(&vgg_path, &device).expect_err("a VGG file").to_string();
        assert!(e.contains("vgg.safetensors") && e.contains("VGG/ResNet"), "{e}");

        // A set name that disagrees with the model's input, and an unknown one.
        for (name, expected) in [("landmarks-whole-hog", "208"), ("landmarks-and-more", "unknown feature set")] {
            let forged_path = dir.path().join("forged.safetensors");
            rewrite_header(&path, &forged_path, |header| header.replace("\"landmarks\"", &format!("\"{name}\"")));
            let e = import_feature_model_safetensors::<B>(&forged_path, &device).expect_err(name).to_string();
            assert!(e.contains("forged.safetensors") && e.contains(expected), "{e}");
        }

        // Tensors of another architecture under this config.
        let wider = CnnHogConfig::model_a(set.len());
        let other = dir.path().join("other.safetensors");
        export_feature_model_safetensors(&wider.init::<B>(&device), &wider, set, &[], &other).expect("export");
        let escaped = |c: &CnnHogConfig| serde_json::to_string(c).expect("json").replace('"', "\\\"");
        let forged_path = dir.path().join("mixed.safetensors");
        rewrite_header(&other, &forged_path, |header| header.replace(&escaped(&wider), &escaped(&config)));
        let e = import_feature_model_safetensors::<B>(&forged_path, &device).expect_err("other tensors").to_string();
        assert!(e.contains("mixed.safetensors") && e.contains("cnn-hog"), "{e}");
    }
}
