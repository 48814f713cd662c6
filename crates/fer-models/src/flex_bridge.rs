//! What fer-models' own burn-flex kernels ([`crate::cpu_conv`], [`crate::cpu_norm`]) share: the
//! autodiff backend they replace operations of, and moving between Burn tensors and the contiguous
//! `f32` slices the kernels read and write.

use burn::backend::Autodiff;
use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::tensor::TensorData;
use burn_flex::FlexTensor;

/// The autodiff backend whose operations the kernels replace (Burn's `Autodiff<Flex>`).
pub(crate) type FlexAd = Autodiff<Flex, NoCheckpointing>;

/// A Flex tensor whose `f32` values are one contiguous slice (copied only when strided).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() }
}

/// A Flex tensor holding `values` in `shape`.
pub(crate) fn flex_tensor(values: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// The values of a tensor made [`contiguous`].
pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}
