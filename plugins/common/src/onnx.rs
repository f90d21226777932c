//! ONNX Runtime, loaded once per process for every facecast model (face detector, lip-sync).
//!
//! The library is a shared object found at run time — a path from configuration, else
//! `ORT_DYLIB_PATH` — never downloaded by the build. `ort` panics on first use when it cannot
//! load it; checking here first turns that into an error naming the path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found: set ORT_DYLIB_PATH to libonnxruntime.so (pip package onnxruntime, file onnxruntime/capi/libonnxruntime.so.<version>; onnxruntime-gpu for CUDA)")]
    NotConfigured,
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

static RUNTIME: OnceLock<Result<(PathBuf, ort::environment::Environment), RuntimeError>> =
    OnceLock::new();

/// The process's ONNX Runtime environment, loaded on first call from `path` or else
/// `ORT_DYLIB_PATH`. Later calls return the same environment whatever path they name.
pub fn runtime(
    path: Option<&Path>,
) -> Result<&'static ort::environment::Environment, RuntimeError> {
    let result = RUNTIME.get_or_init(|| {
        let library = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
            .ok_or(RuntimeError::NotConfigured)?;
        let fail = |reason: String| RuntimeError::Load {
            path: library.clone(),
            reason,
        };
        if !library.is_file() {
            return Err(fail("no such file".into()));
        }
        let env = ort::init_from(&library)
            .map_err(|e| fail(e.to_string()))?
            .with_name("facecast")
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok((library, env))
    });
    result.as_ref().map(|(_, env)| env).map_err(Clone::clone)
}

/// The folder models are looked up in by name: `FACECAST_MODELS_DIR`, else `./models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("FACECAST_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// A model given as a path (used as is when it exists or names a folder) or as a bare file name
/// (looked up in `models_dir`).
pub fn find_model(name_or_path: &Path, models_dir: &Path) -> PathBuf {
    if name_or_path.exists() || name_or_path.components().count() > 1 {
        name_or_path.to_owned()
    } else {
        models_dir.join(name_or_path)
    }
}

/// Where an ONNX model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA GPU by index (needs the onnxruntime-gpu library).
    Cuda(i32),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .filter(|n: &i32| *n >= 0)
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device '{s}': expected cpu, cuda or cuda:N")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A session builder for `device`; CUDA is required, not silently replaced by the CPU.
pub fn session_builder(
    env: &ort::environment::Environment,
    device: Device,
    threads: usize,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    let builder = ort::session::Session::builder(env)?
        .with_intra_threads(threads.max(1))
        .map_err(|e| -> ort::Error { e.into() })?;
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda(id) => builder
            .with_execution_providers([ort::ep::CUDA::default()
                .with_device_id(id)
                // Tensor cores work on channels-last data: ONNX Runtime converts once, at load.
                .with_prefer_nhwc(true)
                .build()
                .error_on_failure()])
            .map_err(|e| -> ort::Error { e.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn devices_parse() {
        assert_eq!("cpu".parse(), Ok(Device::Cpu));
        assert_eq!("cuda:1".parse(), Ok(Device::Cuda(1)));
        assert_eq!("cuda".parse(), Ok(Device::Cuda(0)));
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:-1".parse::<Device>().is_err());
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }
}
