//! ONNX Runtime, loaded once per process for every facecast model (face detector, lip-sync,
//! Piper voices), plus where models run ([`Device`]) and how sessions are built on it.
//!
//! The library is a shared object found at run time, never downloaded by the build. In order:
//! a path from configuration, `ORT_DYLIB_PATH`, then the copy the project's set-up installs
//! (`scripts/fetch-runtime.sh` puts it in `.cache/onnxruntime/` of the checkout, found beside
//! the working directory or above the running executable). `ort` panics on first use when it
//! cannot load a library; checking here first turns that into an error naming the path.

pub use ort::environment::Environment;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The folder, inside a checkout, where the set-up puts ONNX Runtime's library.
pub const RUNTIME_CACHE_DIR: &str = ".cache/onnxruntime";

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library not found (looked in {searched}): run scripts/fetch-runtime.sh (make run does), or set ORT_DYLIB_PATH to libonnxruntime.so (pip package onnxruntime, file onnxruntime/capi/libonnxruntime.so.<version>; onnxruntime-gpu for CUDA)")]
    NotFound { searched: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

static RUNTIME: OnceLock<Result<(PathBuf, ort::environment::Environment), RuntimeError>> =
    OnceLock::new();

/// Folders the set-up's copy of the library may be in: `.cache/onnxruntime` of the working
/// directory and of each folder above the executable (`target/release/facecast` sits two
/// below the checkout).
fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(RUNTIME_CACHE_DIR)];
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(
            exe.ancestors()
                .skip(1)
                .take(4)
                .map(|d| d.join(RUNTIME_CACHE_DIR)),
        );
    }
    dirs
}

/// The newest `libonnxruntime.so*` in `dir` (by file name: `libonnxruntime.so.1.31.1`).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Where the library would be loaded from: `configured`, else `ORT_DYLIB_PATH`, else the
/// set-up's copy.
pub fn locate(configured: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let dirs = default_dirs();
    dirs.iter()
        .find_map(|d| library_in(d))
        .ok_or_else(|| RuntimeError::NotFound {
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The process's ONNX Runtime environment, loaded on first call from `path` or else as
/// [`locate`] finds it. Later calls return the same environment whatever path they name.
pub fn runtime(
    path: Option<&Path>,
) -> Result<&'static ort::environment::Environment, RuntimeError> {
    let result = RUNTIME.get_or_init(|| {
        let library = locate(path)?;
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

/// The library the process's runtime was loaded from, once it is.
pub fn loaded_library() -> Option<&'static Path> {
    RUNTIME.get()?.as_ref().ok().map(|(p, _)| p.as_path())
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

/// Where an ONNX model runs: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`, parsed once where it
/// enters (configuration, command line, element property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(try_from = "String")]
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

impl TryFrom<String> for Device {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
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
    cuda_session_builder(env, device, threads, false)
}

/// [`session_builder`], with CUDA graphs on a GPU when `cuda_graph` is set: the first run
/// records every kernel launch and later runs replay them at once. ONNX Runtime allows it only
/// for a model run wholly on the GPU, with its inputs and outputs bound to the same device
/// buffers every run (IoBinding).
pub fn cuda_session_builder(
    env: &ort::environment::Environment,
    device: Device,
    threads: usize,
    cuda_graph: bool,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    // SAFETY: no stream is given.
    unsafe { cuda_session_builder_on(env, device, threads, cuda_graph, None) }
}

/// [`cuda_session_builder`], with the model run on `stream` when given (the CUDA provider's
/// user compute stream) rather than on a stream of ONNX Runtime's own: work the caller
/// queues on that stream before or after a run is ordered with the run's own kernels.
///
/// # Safety
/// `stream` must be a CUDA stream (`CUstream`) of the device's primary context that outlives
/// every session built.
pub unsafe fn cuda_session_builder_on(
    env: &ort::environment::Environment,
    device: Device,
    threads: usize,
    cuda_graph: bool,
    stream: Option<*mut ()>,
) -> ort::Result<ort::session::builder::SessionBuilder> {
    let builder = ort::session::Session::builder(env)?
        .with_intra_threads(threads.max(1))
        .map_err(|e| -> ort::Error { e.into() })?;
    match device {
        Device::Cpu => Ok(builder),
        Device::Cuda(id) => {
            let mut cuda = ort::ep::CUDA::default()
                .with_device_id(id)
                // Tensor cores work on channels-last data: ONNX Runtime converts once, at load.
                .with_prefer_nhwc(true)
                .with_cuda_graph(cuda_graph);
            if let Some(stream) = stream {
                // SAFETY: the caller vouches for the stream.
                cuda = unsafe { cuda.with_compute_stream(stream) };
            }
            builder
                .with_execution_providers([cuda.build().error_on_failure()])
                .map_err(|e| -> ort::Error { e.into() })
        }
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
