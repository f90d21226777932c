//! The kernels compile, with NVRTC, for Hopper (`compute_90`, the H100/H200 this project runs
//! on) and for the older architectures `Gpu::open` falls back to, each with every kernel it
//! loads. NVRTC needs no GPU, so CI checks here what would otherwise first fail on a GPU
//! server (where a kernel that does not compile turns the GPU's face inputs off). Whether the
//! kernels compute what their CPU references do is `facecast selftest`'s to check, on a GPU.

use facecast_gpu::cuda::{kernels_ptx, KERNEL_NAMES};
use std::path::PathBuf;

/// Where `scripts/fetch-test-assets.sh` puts NVRTC (PyPI's `nvidia-cuda-nvrtc`), or
/// `FACECAST_NVRTC_DIR`.
fn nvrtc_dir() -> PathBuf {
    std::env::var_os("FACECAST_NVRTC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/nvrtc"))
}

/// Loads NVRTC and its builtins by path, so that cudarc's lookup by name (and NVRTC's own,
/// of its builtins) finds them already loaded.
fn load_nvrtc() -> Vec<libloading::os::unix::Library> {
    let dir = nvrtc_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "NVRTC is not in {} ({e}): run scripts/fetch-test-assets.sh, or set FACECAST_NVRTC_DIR",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc"))
        })
        .collect();
    // The builtins first: NVRTC opens them by name as it compiles.
    found.sort_by_key(|p| !p.to_string_lossy().contains("builtins"));
    assert!(
        found.len() >= 2,
        "NVRTC and its builtins are not both in {}: run scripts/fetch-test-assets.sh",
        dir.display()
    );
    found
        .iter()
        .map(|path| {
            let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
            // SAFETY: NVIDIA's NVRTC libraries, whose initialisers only set themselves up.
            unsafe { libloading::os::unix::Library::open(Some(path), flags) }
                .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
        })
        .collect()
}

#[test]
fn the_kernels_compile_for_hopper_and_the_fallback_architectures() {
    let _loaded = load_nvrtc();
    for arch in ["compute_90", "compute_80", "compute_75"] {
        let ptx = kernels_ptx(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        for name in KERNEL_NAMES {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "{arch}: no kernel {name} in the PTX"
            );
        }
        assert!(
            ptx.contains(&format!(".target sm_{}", &arch[8..])),
            "{arch}: target"
        );
    }
}
