//! facecast on NVIDIA GPUs.
//!
//! - [`reference`]: the CPU references of the lip-sync path's kernels (pure, always built).
//! - [`cuda`]: the kernels (`kernels.cu`) compiled at run time by NVRTC for the card in hand,
//!   and run through the CUDA driver API; nothing of CUDA is needed to build, and a machine
//!   without a GPU gets a clear error, never a panic.
//! - [`lane`]: a batch worker's own CUDA stream, shared with ONNX Runtime, so that a batch's
//!   steps are queued without waiting and the next batch is prepared while the GPU runs one.
//! - [`frames`]: live output frames made on a lane: a registered avatar's frame kept on the
//!   GPU, the model's output blended in there, one download per frame.
//! - [`nvml`]: the GPUs' state (utilisation, memory, temperature, power, encoder and decoder)
//!   through NVML, for `/metrics` and `/health/ready`.

pub mod cuda;
pub mod frames;
pub mod lane;
pub mod nvml;
pub mod reference;

pub use half::f16;
