//! `--device` parsing and dispatch to the Burn backends compiled into this binary.

use std::fmt;
use std::str::FromStr;

/// A Burn backend family this binary may be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// burn-flex: fast pure-Rust CPU backend (`--device cpu` or `flex`).
    Flex,
    /// burn-ndarray: reference CPU backend, used by the test suite.
    NdArray,
    /// burn-wgpu with its default graphics API.
    Wgpu,
    /// burn-wgpu on Vulkan (SPIR-V kernels).
    Vulkan,
    /// burn-cuda (NVIDIA).
    Cuda,
}

impl BackendKind {
    /// Every kind, with the cargo feature that compiles it and whether this binary has it.
    pub const ALL: [(BackendKind, &'static str, bool); 5] = [
        (BackendKind::Flex, "flex", cfg!(feature = "flex")),
        (BackendKind::NdArray, "ndarray", cfg!(feature = "ndarray")),
        (BackendKind::Wgpu, "wgpu", cfg!(feature = "wgpu")),
        (BackendKind::Vulkan, "vulkan", cfg!(feature = "vulkan")),
        (BackendKind::Cuda, "cuda", cfg!(feature = "cuda")),
    ];

    fn feature(self) -> &'static str {
        Self::ALL.iter().find(|(k, ..)| *k == self).map_or("?", |(_, f, _)| f)
    }

    fn compiled(self) -> bool {
        Self::ALL.iter().any(|&(k, _, on)| k == self && on)
    }
}

/// The names of the backends compiled into this binary, e.g. `"flex, ndarray"`.
pub fn compiled_backends() -> String {
    let names: Vec<&str> = BackendKind::ALL.iter().filter(|(.., on)| *on).map(|(_, f, _)| *f).collect();
    names.join(", ")
}

/// A parsed `--device` value: `cpu`, `flex`, `ndarray`, `wgpu[:N]`, `vulkan[:N]`, `cuda[:N]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Backend family.
    pub kind: BackendKind,
    /// Device index (GPUs only). Without one, CUDA takes device 0 and wgpu/Vulkan the adapter
    /// wgpu ranks best (a high-power GPU first; `CUBECL_WGPU_DEFAULT_DEVICE=Cpu` or
    /// `IntegratedGpu(0)` overrides it); `wgpu:N`/`vulkan:N` is the N-th discrete GPU.
    pub index: Option<usize>,
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            BackendKind::Flex | BackendKind::NdArray => f.write_str(self.kind.feature()),
            BackendKind::Cuda => write!(f, "cuda:{}", self.index.unwrap_or(0)),
            _ => match self.index {
                Some(index) => write!(f, "{}:{index}", self.kind.feature()),
                None => f.write_str(self.kind.feature()),
            },
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, index) = match lower.split_once(':') {
            Some((n, i)) => {
                let index = i.parse::<usize>().map_err(|_| format!("device index `{i}` in `{s}` is not a number"))?;
                (n.to_string(), Some(index))
            }
            None => (lower.clone(), None),
        };
        let kind = match name.as_str() {
            "cpu" | "flex" => BackendKind::Flex,
            "ndarray" => BackendKind::NdArray,
            "wgpu" | "gpu" => BackendKind::Wgpu,
            "vulkan" => BackendKind::Vulkan,
            "cuda" => BackendKind::Cuda,
            _ => {
                return Err(format!(
                    "unknown device `{s}`: expected cpu, ndarray, wgpu[:N], vulkan[:N] or cuda[:N] (this binary has: {})",
                    compiled_backends()
                ));
            }
        };
        if index.is_some() && matches!(kind, BackendKind::Flex | BackendKind::NdArray) {
            return Err(format!("`{s}`: CPU backends take no device index"));
        }
        if !kind.compiled() {
            return Err(format!(
                "backend `{}` is not compiled into this binary (it has: {}); rebuild with `cargo build --release -p fer --features {}`",
                kind.feature(),
                compiled_backends(),
                kind.feature()
            ));
        }
        Ok(DeviceSpec { kind, index })
    }
}

/// Parses one entry of `--devices`: like [`DeviceSpec`], and CPU entries may carry a replica
/// number (`cpu:0,cpu:1`: the CPU backends have one device, so the number only names the replica).
pub fn parse_replica(s: &str) -> Result<DeviceSpec, String> {
    match s.trim().split_once(':') {
        Some((name, index)) if matches!(name.to_ascii_lowercase().as_str(), "cpu" | "flex" | "ndarray") => {
            index.parse::<usize>().map_err(|_| format!("replica number `{index}` in `{s}` is not a number"))?;
            name.parse()
        }
        _ => s.parse(),
    }
}

/// A backend's device from a `--device` index: how [`with_backend!`] and `--devices` build
/// devices (CPU backends have one device: the index is ignored, so `cpu,cpu` gives two replicas on
/// the same CPU).
pub trait DeviceFromIndex {
    /// The device numbered `index`, or the backend's default device.
    fn from_index(index: Option<usize>) -> Self;
}

#[cfg(feature = "flex")]
impl DeviceFromIndex for burn::backend::flex::FlexDevice {
    fn from_index(_index: Option<usize>) -> Self {
        burn::backend::flex::FlexDevice
    }
}

#[cfg(feature = "ndarray")]
impl DeviceFromIndex for burn::backend::ndarray::NdArrayDevice {
    fn from_index(_index: Option<usize>) -> Self {
        burn::backend::ndarray::NdArrayDevice::default()
    }
}

#[cfg(feature = "wgpu")]
impl DeviceFromIndex for burn::backend::wgpu::WgpuDevice {
    fn from_index(index: Option<usize>) -> Self {
        index.map_or(burn::backend::wgpu::WgpuDevice::DefaultDevice, burn::backend::wgpu::WgpuDevice::DiscreteGpu)
    }
}

#[cfg(feature = "cuda")]
impl DeviceFromIndex for burn::backend::cuda::CudaDevice {
    fn from_index(index: Option<usize>) -> Self {
        burn::backend::cuda::CudaDevice::new(index.unwrap_or(0))
    }
}

/// Runs `$body` with `$B` bound to the Burn backend type of `$spec` and `$device` to its device.
///
/// The body is compiled once per backend feature enabled in this build.
macro_rules! with_backend {
    ($spec:expr, |$B:ident, $device:ident| $body:expr) => {{
        let spec: $crate::backend::DeviceSpec = $spec;
        let index = spec.index;
        use $crate::backend::DeviceFromIndex as _;
        match spec.kind {
            #[cfg(feature = "flex")]
            $crate::backend::BackendKind::Flex => {
                type $B = burn::backend::Flex;
                let $device = burn::backend::flex::FlexDevice::from_index(index);
                $body
            }
            #[cfg(feature = "ndarray")]
            $crate::backend::BackendKind::NdArray => {
                type $B = burn::backend::NdArray;
                let $device = burn::backend::ndarray::NdArrayDevice::from_index(index);
                $body
            }
            #[cfg(feature = "wgpu")]
            $crate::backend::BackendKind::Wgpu | $crate::backend::BackendKind::Vulkan => {
                type $B = burn::backend::Wgpu;
                let $device = burn::backend::wgpu::WgpuDevice::from_index(index);
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::BackendKind::Cuda => {
                type $B = burn::backend::Cuda;
                let $device = burn::backend::cuda::CudaDevice::from_index(index);
                $body
            }
            #[allow(unreachable_patterns)]
            other => unreachable!("DeviceSpec parsing rejects uncompiled backend {other:?}"),
        }
    }};
}
pub(crate) use with_backend;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compiled_cpu_backends() {
        #[cfg(feature = "flex")]
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec { kind: BackendKind::Flex, index: None }));
        #[cfg(feature = "ndarray")]
        assert_eq!("NdArray".parse::<DeviceSpec>().map(|d| d.kind), Ok(BackendKind::NdArray));
    }

    #[test]
    fn gpu_devices_without_an_index_name_the_default_one() {
        let spec = |kind, index| DeviceSpec { kind, index }.to_string();
        assert_eq!(spec(BackendKind::Cuda, None), "cuda:0");
        assert_eq!(spec(BackendKind::Cuda, Some(1)), "cuda:1");
        assert_eq!(spec(BackendKind::Wgpu, None), "wgpu", "the adapter wgpu ranks best, not discrete GPU 0");
        assert_eq!(spec(BackendKind::Vulkan, Some(2)), "vulkan:2");
        #[cfg(feature = "wgpu")]
        {
            use burn::backend::wgpu::WgpuDevice;
            assert_eq!("wgpu".parse::<DeviceSpec>().map(|d| d.index), Ok(None));
            assert_eq!(WgpuDevice::from_index(None), WgpuDevice::DefaultDevice);
            assert_eq!(WgpuDevice::from_index(Some(1)), WgpuDevice::DiscreteGpu(1));
        }
    }

    #[test]
    fn rejects_unknown_and_indexed_cpu() {
        let e = "tpu".parse::<DeviceSpec>().expect_err("unknown");
        assert!(e.contains("unknown device `tpu`") && e.contains("this binary has"), "{e}");
        assert!("cpu:1".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().expect_err("bad index").contains("not a number"));
    }

    #[test]
    fn replicas_may_number_cpu_entries() {
        #[cfg(feature = "flex")]
        assert_eq!(parse_replica("cpu:1").map(|d| d.kind), Ok(BackendKind::Flex));
        assert!(parse_replica("cpu:x").expect_err("bad number").contains("not a number"));
        assert!(parse_replica("tpu:0").is_err());
    }

    #[test]
    fn absent_backend_names_what_is_compiled() {
        for (kind, feature, on) in BackendKind::ALL {
            if !on {
                let e = format!("{feature}:0").parse::<DeviceSpec>().expect_err("not compiled");
                assert!(e.contains("not compiled") && e.contains(&compiled_backends()), "{kind:?}: {e}");
                assert!(e.contains(&format!("--features {feature}")), "{e}");
            }
        }
    }
}
