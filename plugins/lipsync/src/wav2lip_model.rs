//! A Wav2Lip-class ONNX model run with ONNX Runtime (`ort`, loaded dynamically).
//!
//! ONNX Runtime is a shared library found at run time (`ORT_DYLIB_PATH`, or a path given by the
//! caller), never downloaded by the build. Loading it is checked once per process; a missing or
//! unusable library is an error naming the path, not the panic `ort` would raise on first use.
//! A model must have the inputs and output the engine feeds: by default `mel` [N,1,80,16] and
//! `face` [N,6,96,96] → [N,3,96,96]; names are configurable for other exports, and a model that
//! does not fit is refused with what was expected.
//!
//! Live frames come as [`FrameInput`]s (a mel window and an 8-bit face crop) and are run by
//! [`Wav2LipModel::run_batch`]. On a GPU their inputs are bound to the model: the mel windows in
//! page-locked host memory, the face input built on the GPU from the crops (the `facecast-gpu`
//! kernel writing into ONNX Runtime's input tensor) where the kernels load, else on the CPU
//! into page-locked memory. The frames of a batch share its outputs where they landed
//! ([`crate::wav2lip_output`]). A model loaded on a lane ([`Wav2LipModel::load_on`], the batch
//! worker's own CUDA stream) queues such a batch there whole: [`Wav2LipModel::submit_batch`]
//! returns before the GPU is done, and [`Submitted::wait`] waits for it.

use crate::wav2lip_frames::{compose_batch, ComposeJob};
use crate::wav2lip_output::{BatchOutputs, ComingOutputs, OutputPool};
use facecast_gpu::cuda::{CropBatch, Gpu};
use facecast_gpu::frames::{Composer, PinnedFrame};
use facecast_gpu::lane::{Lane, Mark};
use facecast_onnx::{cuda_session_builder_on, Device, RuntimeError};
use ort::logging::LogLevel;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::{Tensor, TensorRef, TensorValueType};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub use facecast_onnx::runtime;

/// Values of one frame's mel input (80 mel bands × 16 frames).
pub const MEL_LEN: usize = 80 * 16;
/// Values of one frame's face input: 6 channels of 96×96.
pub const FACE_LEN: usize = 6 * 96 * 96;
/// Values of one frame's output: 3 channels of 96×96.
pub const OUT_LEN: usize = 3 * 96 * 96;
/// Bytes of one face crop: 96×96 RGB.
pub const CROP_LEN: usize = 96 * 96 * 3;

/// One frame of a batch: its mel window (`MEL_LEN` values) and its face crop (`CROP_LEN`
/// bytes, RGB).
#[derive(Debug, Clone, Copy)]
pub struct FrameInput<'a> {
    pub mel: &'a [f32],
    pub crop: &'a [u8],
}

/// The model's face input from a crop, written to `out` (`FACE_LEN` values): the crop with
/// its lower half zeroed (what to draw), then the whole crop (who to draw), both B, G, R in
/// 0..1. (The CPU path; `facecast-gpu`'s `face_input_f32` kernel does the same division.)
pub fn face_input_into(crop: &[u8], out: &mut [f32]) {
    let n = 96;
    let plane = n * n;
    for y in 0..n {
        for x in 0..n {
            let p = (y * n + x) * 3;
            let o = y * n + x;
            for (c, rgb) in [(0, 2), (1, 1), (2, 0)] {
                let v = crop[p + rgb] as f32 / 255.0;
                out[c * plane + o] = if y < n / 2 { v } else { 0.0 };
                out[(3 + c) * plane + o] = v;
            }
        }
    }
}

/// [`face_input_into`] into a new tensor.
pub fn face_input(crop: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; FACE_LEN];
    face_input_into(crop, &mut out);
    out
}

/// Input and output names of a Wav2Lip-class model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIo {
    pub mel: String,
    pub face: String,
    pub output: String,
}

impl Default for ModelIo {
    fn default() -> Self {
        Self {
            mel: "mel".into(),
            face: "face".into(),
            output: "output".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("model file not found: {0}")]
    NotFound(PathBuf),
    #[error("cannot load model {path} on {device}: {reason}")]
    Load {
        path: PathBuf,
        device: Device,
        reason: String,
    },
    #[error("model {path} does not fit: {reason} (expected inputs {mel} [N,1,80,16] and {face} [N,6,96,96], output {output} [N,3,96,96])")]
    Shape {
        path: PathBuf,
        reason: String,
        mel: String,
        face: String,
        output: String,
    },
    #[error("inference failed: {0}")]
    Run(String),
    /// Live: the frame's batch did not finish within the frame budget.
    #[error("the frame missed its deadline")]
    Late,
}

pub struct Wav2LipModel {
    /// Declared first, so dropped first: before the lane whose stream it may run on.
    session: Session,
    io: ModelIo,
    device: Device,
    /// On a GPU: page-locked buffers and their binding, per batch size, where the face
    /// input is built, and turn (see `run_pinned`).
    pinned: HashMap<(usize, FaceSide, usize), PinnedBatch>,
    /// With face inputs built on the GPU: the outputs' page-locked rooms, per batch size.
    output_pools: HashMap<usize, OutputPool>,
    /// Set when ONNX Runtime refused pinned buffers: ordinary tensors are used from then on.
    pinned_failed: Option<String>,
    /// The GPU's kernels, which build the face input from crops on the GPU (see `set_gpu`).
    gpu: Option<Arc<Gpu>>,
    /// Why face inputs are built on the CPU on a GPU device, once that was tried and failed.
    gpu_failed: Option<String>,
    /// The stream the model runs on, when it was loaded on a lane ([`load_on`](Self::load_on)):
    /// a batch with face inputs built on the GPU is then queued there whole, and
    /// [`submit_batch`](Self::submit_batch) returns before the GPU is done.
    lane: Option<Arc<Lane>>,
    /// On a lane: composes the output frames of registered avatars there
    /// ([`crate::wav2lip_frames`]); shared by the worker's sessions of every batch shape.
    composer: Option<Arc<Mutex<Composer>>>,
    /// Whether a failure to compose has been reported (once: the frames are then made on the
    /// CPU, and a cause such as a frame too large for the cache would repeat every frame).
    compose_warned: bool,
    /// Which of the two sets of buffers per batch size the next queued batch uses: a batch
    /// writes its inputs while the one before may still be running from the other set.
    turn: usize,
    /// Reused host buffers: inputs of the CPU path.
    host_mel: Vec<f32>,
    host_face: Vec<f32>,
    /// Names taken from the model's shapes rather than from `io` (see `check`).
    inferred: Vec<String>,
    /// Every run's options: ONNX Runtime prints nothing of its own when a run fails. The
    /// error comes back to the caller, which reports it once per run of failures; ONNX
    /// Runtime would print it again for every failed batch, at the frame rate.
    quiet: RunOptions,
    /// `quiet`, and a run returns once its work is queued on the lane, without waiting for
    /// the GPU.
    queued: RunOptions,
}

/// Where one batch's time went on the thread that ran it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunTimes {
    /// Writing the inputs: mel windows, and face inputs built (or crops uploaded and built on
    /// the GPU).
    pub fill: std::time::Duration,
    /// ONNX Runtime's run, its own transfers to and from the GPU included.
    pub model: std::time::Duration,
    /// Bringing the outputs into host memory the frames can share: a download from the GPU,
    /// or a copy out of ONNX Runtime's output tensor.
    pub read: std::time::Duration,
    /// On a lane, the three above only queue work: the batch's time on the GPU, from its
    /// crops' upload to its outputs' download. Zero elsewhere.
    pub gpu: std::time::Duration,
}

/// A batch whose work has been queued ([`Wav2LipModel::submit_batch`]).
pub struct Submitted {
    outputs: ComingOutputs,
    times: RunTimes,
    /// Frame by frame, the output frames composed on the GPU (none where not composed, or
    /// when none was asked for): ready once `outputs` are.
    frames: Vec<Option<PinnedFrame>>,
}

impl Submitted {
    /// Waits for the batch's outputs, `OUT_LEN` values a frame ([`BatchOutputs::frames`]), and
    /// tells where its time went.
    pub fn wait(self) -> Result<(Arc<BatchOutputs>, RunTimes), ModelError> {
        self.wait_all().map(|(outputs, _, times)| (outputs, times))
    }

    /// [`wait`](Self::wait), with the frames composed on the GPU, frame by frame (empty when
    /// none was asked for).
    #[allow(clippy::type_complexity)]
    pub fn wait_all(
        self,
    ) -> Result<(Arc<BatchOutputs>, Vec<Option<PinnedFrame>>, RunTimes), ModelError> {
        let mut times = self.times;
        let (outputs, on_gpu) = self
            .outputs
            .wait()
            .map_err(|e| ModelError::Run(format!("the batch failed on the GPU: {e}")))?;
        times.gpu = on_gpu.unwrap_or_default();
        Ok((outputs, self.frames, times))
    }
}

/// Where a batch's face input is built, and where its output is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FaceSide {
    /// On the CPU, into page-locked host memory; the output is copied to host memory by ONNX
    /// Runtime.
    Host,
    /// On the GPU, from crops, into device memory; the output stays on the GPU and is
    /// downloaded into page-locked memory of ours.
    Device,
}

/// Inputs of one batch size bound to the model: the mel input in page-locked (pinned) host
/// memory, the face input there too or on the GPU. Copies from pinned memory to the GPU run at
/// full bus speed and need no staging copy; with ordinary (pageable) tensors ONNX Runtime
/// stages every run's inputs.
///
/// The output cannot be bound to a pinned tensor of our own: with ONNX Runtime 1.31 that fails
/// every run (its CUDA provider counts pinned memory as the GPU's, and then copies the output
/// onto itself: "dst_data != src_data"), measured on an H200. So with the face input built on
/// the CPU it is bound to host memory that ONNX Runtime allocates, pageable, and copies into
/// every run; with the face input built on the GPU it is left in device memory and only the
/// frames used are downloaded, by DMA, into page-locked room from a pool (`outputs`), where
/// the frames read them.
struct PinnedBatch {
    binding: IoBinding,
    mel: Tensor<f32>,
    face: Tensor<f32>,
    /// With the face input built on the GPU: the crops' room there and on the way.
    crops: Option<CropBatch>,
    /// With the face input built on the GPU, the output is left there.
    output_on_gpu: bool,
    /// On a lane: when the last batch run from these buffers is done, after which they may be
    /// written again.
    busy: Option<Arc<Mark>>,
    /// On a lane: the start of this batch's work there, marked as its crops go up.
    started: Option<Mark>,
    // The allocators must outlive the tensors they made.
    _allocators: Vec<Allocator>,
}

/// Run options under which ONNX Runtime logs only fatal errors.
fn quiet_runs() -> ort::Result<RunOptions> {
    let mut options = RunOptions::new()?;
    options.set_log_level(LogLevel::Fatal)?;
    Ok(options)
}

/// [`quiet_runs`] that return once their work is queued on the model's stream.
fn queued_runs() -> ort::Result<RunOptions> {
    let mut options = quiet_runs()?;
    options.disable_device_sync()?;
    Ok(options)
}

impl Wav2LipModel {
    /// Loads and checks a model; `threads` is ONNX Runtime's intra-op thread count (CPU).
    pub fn load(
        env: &ort::environment::Environment,
        path: &Path,
        io: ModelIo,
        device: Device,
        threads: usize,
    ) -> Result<Self, ModelError> {
        Self::load_with(env, path, io, device, threads, false)
    }

    /// [`load`](Self::load), with CUDA graphs on a GPU when `cuda_graph` is set: such a model
    /// runs only with every input and output on the GPU, bound to the same buffers every run
    /// ([`resident_throughput`](Self::resident_throughput) does; `facecast bench --wav2lip`
    /// times it).
    pub fn load_with(
        env: &ort::environment::Environment,
        path: &Path,
        io: ModelIo,
        device: Device,
        threads: usize,
        cuda_graph: bool,
    ) -> Result<Self, ModelError> {
        // SAFETY: no stream is given.
        unsafe { Self::load_inner(env, path, io, device, threads, cuda_graph, None) }
    }

    /// [`load`](Self::load) on a GPU, run on `lane`, with face inputs built on the lane's GPU:
    /// a batch's steps are queued there whole ([`submit_batch`](Self::submit_batch)).
    pub fn load_on(
        env: &ort::environment::Environment,
        path: &Path,
        io: ModelIo,
        device: Device,
        threads: usize,
        lane: Arc<Lane>,
    ) -> Result<Self, ModelError> {
        // SAFETY: the lane's stream is of the GPU's primary context, and the model keeps the
        // lane (and so its stream) longer than its session (`session` is dropped first).
        let mut model = unsafe {
            Self::load_inner(
                env,
                path,
                io,
                device,
                threads,
                false,
                Some(lane.raw_stream()),
            )
        }?;
        model.gpu = Some(lane.gpu().clone());
        model.lane = Some(lane);
        Ok(model)
    }

    /// # Safety
    /// As [`cuda_session_builder_on`]: `stream`, when given, must outlive the model.
    unsafe fn load_inner(
        env: &ort::environment::Environment,
        path: &Path,
        io: ModelIo,
        device: Device,
        threads: usize,
        cuda_graph: bool,
        stream: Option<*mut ()>,
    ) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::NotFound(path.to_owned()));
        }
        let load = |e: ort::Error| ModelError::Load {
            path: path.to_owned(),
            device,
            reason: e.to_string(),
        };
        // SAFETY: the caller vouches for the stream.
        let session = unsafe { cuda_session_builder_on(env, device, threads, cuda_graph, stream) }
            .map_err(load)?
            .commit_from_file(path)
            .map_err(load)?;
        let mut model = Self {
            session,
            io,
            device,
            pinned: HashMap::new(),
            output_pools: HashMap::new(),
            pinned_failed: None,
            gpu: None,
            gpu_failed: None,
            lane: None,
            composer: None,
            compose_warned: false,
            turn: 0,
            host_mel: Vec::new(),
            host_face: Vec::new(),
            inferred: Vec::new(),
            quiet: quiet_runs().map_err(load)?,
            queued: queued_runs().map_err(load)?,
        };
        model.inferred = model.check(path)?;
        Ok(model)
    }

    /// Checks the model's inputs and output against `self.io`. A name left at its default
    /// that the model lacks is taken from the shapes instead when they leave no doubt (exactly two inputs, one of them
    /// [N,1,80,16] and the other [N,6,96,96], and one output): exports name them freely
    /// (`audio_sequences`, `face_sequences`, `out`, …). Returns a note per name so taken.
    fn check(&mut self, path: &Path) -> Result<Vec<String>, ModelError> {
        // (name, shape) of every input and output, owned: `self.io` may change below.
        let described = |outlets: &[ort::value::Outlet]| -> Vec<(String, Option<Vec<i64>>)> {
            outlets
                .iter()
                .map(|o| {
                    let shape = o
                        .dtype()
                        .tensor_shape()
                        .map(|s| s.iter().copied().collect());
                    (o.name().to_owned(), shape)
                })
                .collect()
        };
        let inputs = described(self.session.inputs());
        let outputs = described(self.session.outputs());
        // The batch dimension may be dynamic (-1); the others must match (or be dynamic).
        let fits = |got: &[i64], want: [i64; 3]| {
            got.len() == 4 && got[1..].iter().zip(want).all(|(&g, w)| g == w || g < 0)
        };
        let by_shape = |want: [i64; 3]| -> Option<String> {
            let mut found = inputs
                .iter()
                .filter(|(_, s)| s.as_deref().is_some_and(|s| fits(s, want)));
            match (found.next(), found.next()) {
                (Some((name, _)), None) => Some(name.clone()),
                _ => None,
            }
        };
        let has =
            |list: &[(String, Option<Vec<i64>>)], name: &str| list.iter().any(|(n, _)| n == name);
        let mut notes = Vec::new();
        // What the shapes say, when they say it unambiguously.
        if inputs.len() == 2 && outputs.len() == 1 {
            if let (Some(mel), Some(face)) = (by_shape([1, 80, 16]), by_shape([6, 96, 96])) {
                let output = outputs[0].0.clone();
                let conventional = ModelIo::default();
                for (slot, taken, list, role, default) in [
                    (
                        &mut self.io.mel,
                        mel,
                        &inputs,
                        "mel input",
                        &conventional.mel,
                    ),
                    (
                        &mut self.io.face,
                        face,
                        &inputs,
                        "face input",
                        &conventional.face,
                    ),
                    (
                        &mut self.io.output,
                        output,
                        &outputs,
                        "output",
                        &conventional.output,
                    ),
                ] {
                    // Only a name left at its default is guessed; one chosen must exist.
                    if slot == default && !has(list, slot) {
                        notes.push(format!(
                            "{role} '{taken}' (the model has no '{slot}'; taken by its shape)"
                        ));
                        *slot = taken;
                    }
                }
            }
        }
        let misfit = |reason: String| ModelError::Shape {
            path: path.to_owned(),
            reason,
            mel: self.io.mel.clone(),
            face: self.io.face.clone(),
            output: self.io.output.clone(),
        };
        for (list, name, want) in [
            (&inputs, &self.io.mel, [1i64, 80, 16]),
            (&inputs, &self.io.face, [6, 96, 96]),
            (&outputs, &self.io.output, [3, 96, 96]),
        ] {
            let Some((_, shape)) = list.iter().find(|(n, _)| n == name) else {
                let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
                return Err(misfit(format!(
                    "it has no '{name}' (it has {names:?}; name yours with mel-input, face-input and output-name)"
                )));
            };
            let got = shape
                .as_deref()
                .ok_or_else(|| misfit(format!("'{name}' is not a tensor")))?;
            if !fits(got, want) {
                return Err(misfit(format!("'{name}' has shape {got:?}")));
            }
        }
        Ok(notes)
    }

    /// One note per input or output name taken from the shapes, for the log.
    pub fn inferred_names(&self) -> &[String] {
        &self.inferred
    }

    /// The input and output names in use (after any taken from the shapes).
    pub fn io(&self) -> &ModelIo {
        &self.io
    }

    /// Builds face inputs on `gpu` (the model's own GPU) from now on, where it can.
    pub fn set_gpu(&mut self, gpu: Arc<Gpu>) {
        self.gpu = Some(gpu);
    }

    /// Composes the output frames of registered avatars on the lane with `composer` (which
    /// must be on this model's lane) from now on.
    pub fn set_composer(&mut self, composer: Arc<Mutex<Composer>>) {
        self.composer = Some(composer);
    }

    /// Whether [`run_batch`](Self::run_batch) builds face inputs on the GPU.
    pub fn face_inputs_on_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// Where [`run_batch`](Self::run_batch) builds face inputs, for the log: on the GPU, or
    /// on the CPU and why.
    pub fn face_inputs(&self) -> String {
        match (&self.gpu, &self.gpu_failed, self.device) {
            (Some(gpu), _, _) => format!("built on the GPU ({}, {})", gpu.name, gpu.arch),
            (None, Some(why), _) => format!("built on the CPU: the GPU's kernels failed ({why})"),
            (None, None, Device::Cpu) => "built on the CPU".into(),
            (None, None, Device::Cuda(_)) => {
                "built on the CPU (the GPU's kernels are not loaded)".into()
            }
        }
    }

    /// Runs a batch of `shape` once, as live frames run: the first run of a shape plans memory
    /// and, on a GPU, searches convolution algorithms (seconds), which must not happen
    /// mid-stream. With face inputs built on the GPU, their outputs are then compared with
    /// those of the same frames built on the CPU: inputs that the model does not see as the
    /// CPU's (a kernel, a pointer, a stream or an order gone wrong) turn the GPU's inputs off,
    /// with the reason, rather than make every face wrong without an error. On a lane both
    /// sets of buffers are made and run, and the second is compared.
    pub fn warm_up(&mut self, shape: usize) -> Result<(), ModelError> {
        // Crops that differ from each other and across the face, so a misplaced input shows.
        // (The mel windows go the same way on both paths; zeros, as tests' models expect.)
        let mel = vec![0f32; MEL_LEN];
        let crops: Vec<Vec<u8>> = (0..shape)
            .map(|k| {
                (0..CROP_LEN)
                    .map(|i| ((i * 7 + k * 31) % 251) as u8)
                    .collect()
            })
            .collect();
        let frames: Vec<FrameInput> = crops
            .iter()
            .map(|crop| FrameInput { mel: &mel, crop })
            .collect();
        let mut first = self.run_batch(shape, &frames)?;
        if self.lane.is_some() && self.gpu.is_some() {
            first = self.run_batch(shape, &frames)?;
        }
        let first = first.values();
        let Device::Cuda(id) = self.device else {
            return Ok(());
        };
        if self.gpu.is_none() || self.pinned_failed.is_some() {
            return Ok(());
        }
        let compared = self
            .run_frames_pinned(id, shape, &frames, FaceSide::Host, &[])
            .and_then(Submitted::wait);
        let compared = match compared {
            Ok((compared, _)) => compared,
            Err(e) => {
                // Unchecked, the GPU's inputs are not trusted; live runs find their own way.
                self.gpu_refused(format!("their check against the CPU's could not run: {e}"));
                return Ok(());
            }
        };
        let worst = first
            .iter()
            .zip(compared.values())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // The same inputs give the same outputs up to the convolutions' own run-to-run
        // differences, far below a level of 8-bit colour.
        // (A NaN difference is a failure too.)
        if worst.is_nan() || worst > 0.5 / 255.0 {
            self.gpu_refused(format!(
                "the outputs of inputs built on the GPU differ from those built on the CPU by up to {worst} (batch of {shape})"
            ));
        } else {
            // The CPU-built batch was only for the comparison: its pinned memory goes back.
            self.pinned
                .retain(|(_, side, _), _| *side == FaceSide::Device);
        }
        Ok(())
    }

    /// Runs `n` frames: `mel` holds n·80·16 values, `face` n·6·96·96; returns n·3·96·96 values
    /// (BGR in 0..1, NCHW).
    pub fn infer(&mut self, n: usize, mel: &[f32], face: &[f32]) -> Result<Vec<f32>, ModelError> {
        if mel.len() != n * MEL_LEN || face.len() != n * FACE_LEN {
            return Err(ModelError::Run(format!(
                "{n} frames need {} mel and {} face values, got {} and {}",
                n * MEL_LEN,
                n * FACE_LEN,
                mel.len(),
                face.len()
            )));
        }
        if let (Device::Cuda(id), None) = (self.device, &self.pinned_failed) {
            let pinned = self
                .run_pinned(id, n, n, FaceSide::Host, &[], |batch, _| {
                    batch.mel.extract_tensor_mut().1.copy_from_slice(mel);
                    batch.face.extract_tensor_mut().1.copy_from_slice(face);
                    Ok(())
                })
                .and_then(Submitted::wait);
            match pinned {
                Ok((outputs, _)) => return Ok(BatchOutputs::into_vec(outputs)),
                Err(e) => self.pinned_refused(e),
            }
        }
        self.run_host(n, mel, face)
    }

    /// Runs `frames` as one batch of `shape` frames and waits for it:
    /// [`submit_batch`](Self::submit_batch) and [`Submitted::wait`]. The outputs of the frames come back
    /// together, `OUT_LEN` values a frame ([`BatchOutputs::frames`]).
    pub fn run_batch(
        &mut self,
        shape: usize,
        frames: &[FrameInput<'_>],
    ) -> Result<Arc<BatchOutputs>, ModelError> {
        let (outputs, _) = self.submit_batch(shape, frames)?.wait()?;
        Ok(outputs)
    }

    /// Queues `frames` as one batch of `shape` frames (at least as many; the rows past them
    /// hold what an earlier batch left, and their outputs are not read). On a lane with face
    /// inputs built on the GPU this returns once the batch's work is queued there; anywhere
    /// else, once it is done. Either way [`Submitted::wait`] gives the outputs.
    ///
    /// On a lane, the batch after this one may be submitted before this one is waited for,
    /// but not the one after that: it would wait here for this one's buffers.
    pub fn submit_batch(
        &mut self,
        shape: usize,
        frames: &[FrameInput<'_>],
    ) -> Result<Submitted, ModelError> {
        self.submit_composing(shape, frames, &[])
    }

    /// [`submit_batch`](Self::submit_batch), composing on the GPU the output frames of the
    /// frames that have a job in `compose` (frame by frame; may be shorter) where the batch
    /// is queued on a lane ([`crate::wav2lip_frames`]).
    pub fn submit_composing(
        &mut self,
        shape: usize,
        frames: &[FrameInput<'_>],
        compose: &[Option<&ComposeJob>],
    ) -> Result<Submitted, ModelError> {
        if frames.len() > shape {
            return Err(ModelError::Run(format!(
                "{} frames do not fit a batch of {shape}",
                frames.len()
            )));
        }
        if let Some(bad) = frames
            .iter()
            .find(|f| f.mel.len() != MEL_LEN || f.crop.len() != CROP_LEN)
        {
            return Err(ModelError::Run(format!(
                "a frame needs {MEL_LEN} mel values and a {CROP_LEN}-byte crop, got {} and {}",
                bad.mel.len(),
                bad.crop.len()
            )));
        }
        if let (Device::Cuda(id), None) = (self.device, &self.pinned_failed) {
            if self.gpu.is_some() {
                match self.run_frames_pinned(id, shape, frames, FaceSide::Device, compose) {
                    Ok(submitted) => return Ok(submitted),
                    // Keep working with inputs built on the CPU.
                    Err(e) => self.gpu_refused(e.to_string()),
                }
            }
            match self.run_frames_pinned(id, shape, frames, FaceSide::Host, &[]) {
                Ok(submitted) => return Ok(submitted),
                Err(e) => self.pinned_refused(e),
            }
        }
        // Ordinary tensors: the CPU, or a GPU whose ONNX Runtime refused pinned buffers. A
        // GPU runs the batch at its shape (other shapes would be re-planned); a CPU at its size.
        let n = if self.device == Device::Cpu {
            frames.len()
        } else {
            shape
        };
        let started = Instant::now();
        let mut mel = std::mem::take(&mut self.host_mel);
        let mut face = std::mem::take(&mut self.host_face);
        mel.resize(n * MEL_LEN, 0.0);
        face.resize(n * FACE_LEN, 0.0);
        for (i, f) in frames.iter().enumerate() {
            mel[i * MEL_LEN..(i + 1) * MEL_LEN].copy_from_slice(f.mel);
            face_input_into(f.crop, &mut face[i * FACE_LEN..(i + 1) * FACE_LEN]);
        }
        let filled = Instant::now();
        let result = self.run_host(n, &mel, &face);
        (self.host_mel, self.host_face) = (mel, face);
        let mut values = result?;
        values.truncate(frames.len() * OUT_LEN);
        Ok(Submitted {
            outputs: ComingOutputs::Ready(Arc::new(BatchOutputs::Host(values))),
            times: RunTimes {
                fill: filled - started,
                model: filled.elapsed(),
                ..RunTimes::default()
            },
            frames: Vec::new(),
        })
    }

    /// Fills a pinned batch with `frames` (face inputs built on `side`) and runs it.
    fn run_frames_pinned(
        &mut self,
        id: i32,
        shape: usize,
        frames: &[FrameInput<'_>],
        side: FaceSide,
        compose: &[Option<&ComposeJob>],
    ) -> Result<Submitted, ModelError> {
        let gpu = self.gpu.clone();
        self.run_pinned(id, shape, frames.len(), side, compose, |batch, lane| {
            let (_, mel) = batch.mel.extract_tensor_mut();
            for (f, row) in frames.iter().zip(mel.chunks_exact_mut(MEL_LEN)) {
                row.copy_from_slice(f.mel);
            }
            match (side, &gpu, &mut batch.crops) {
                (FaceSide::Device, Some(gpu), Some(crops)) => {
                    let failed = |e: facecast_gpu::cuda::GpuError| ModelError::Run(e.to_string());
                    let host = crops.host_mut().map_err(failed)?;
                    for (f, room) in frames.iter().zip(host.chunks_exact_mut(CROP_LEN)) {
                        room.copy_from_slice(f.crop);
                    }
                    let dst = batch.face.data_ptr_mut() as u64;
                    // SAFETY: `dst` is the batch's face input, allocated by ONNX Runtime's
                    // CUDA provider on this GPU (the primary context) for `shape` ≥
                    // frames.len() faces; nothing else uses it between runs. On a lane, the
                    // model reads it after, on the same stream, and the crops are written
                    // again only once this batch is done (`run_pinned` waits for `busy`).
                    match lane {
                        Some(lane) => {
                            // The batch's time on the GPU counts from here.
                            batch.started = Some(lane.mark().map_err(failed)?);
                            unsafe { lane.face_inputs_from(crops, frames.len(), dst) }
                        }
                        None => unsafe { gpu.face_inputs_from(crops, frames.len(), dst) },
                    }
                    .map_err(failed)
                }
                _ => {
                    let (_, face) = batch.face.extract_tensor_mut();
                    for (f, row) in frames.iter().zip(face.chunks_exact_mut(FACE_LEN)) {
                        face_input_into(f.crop, row);
                    }
                    Ok(())
                }
            }
        })
    }

    /// Runs the pinned batch of `n` frames after `fill` has written its inputs (given the lane
    /// to queue work on, if the batch is queued), and gives the outputs of the first `used`.
    ///
    /// With face inputs built on the GPU of a model loaded on a lane, the batch is queued
    /// there whole and this returns without waiting for it. Its buffers are then one of two
    /// sets, taken in turn, so that the next batch can be written while this one runs.
    fn run_pinned(
        &mut self,
        id: i32,
        n: usize,
        used: usize,
        side: FaceSide,
        compose: &[Option<&ComposeJob>],
        fill: impl FnOnce(&mut PinnedBatch, Option<&Lane>) -> Result<(), ModelError>,
    ) -> Result<Submitted, ModelError> {
        let run = |e: ort::Error| ModelError::Run(e.to_string());
        let failed = |e: facecast_gpu::cuda::GpuError| ModelError::Run(e.to_string());
        let lane = match side {
            FaceSide::Device => self.lane.clone(),
            FaceSide::Host => None,
        };
        let turn = if lane.is_some() {
            self.turn = (self.turn + 1) % 2;
            self.turn
        } else {
            0
        };
        if !self.pinned.contains_key(&(n, side, turn)) {
            let batch = self.pinned_batch(id, n, side).map_err(run)?;
            self.pinned.insert((n, side, turn), batch);
        }
        let batch = self
            .pinned
            .get_mut(&(n, side, turn))
            .expect("inserted above");
        // The batch that last ran from these buffers may still be reading them.
        if let Some(busy) = batch.busy.take() {
            busy.wait()
                .map_err(|e| ModelError::Run(format!("an earlier batch failed on the GPU: {e}")))?;
        }
        let started = Instant::now();
        fill(batch, lane.as_deref())?;
        let filled = Instant::now();
        let options = if lane.is_some() {
            &self.queued
        } else {
            &self.quiet
        };
        let outputs = self
            .session
            .run_binding_with_options(&batch.binding, options)
            .map_err(run)?;
        let ran = Instant::now();
        let output = &outputs[self.io.output.as_str()];
        let values = used.min(n) * OUT_LEN;
        let mut composed = Vec::new();
        let coming = match (batch.output_on_gpu, &self.gpu) {
            (true, Some(gpu)) => {
                let tensor = output
                    .view()
                    .downcast::<TensorValueType<f32>>()
                    .map_err(run)?;
                let on_gpu = tensor.memory_info().allocation_device() == AllocationDevice::CUDA;
                if !on_gpu || tensor.shape().num_elements() < values {
                    return Err(ModelError::Run(format!(
                        "the output bound to the GPU came back as {:?} on {:?}",
                        tensor.shape(),
                        tensor.memory_info().allocation_device()
                    )));
                }
                let pool = match self.output_pools.entry(n) {
                    std::collections::hash_map::Entry::Occupied(pool) => pool.into_mut(),
                    std::collections::hash_map::Entry::Vacant(room) => {
                        room.insert(OutputPool::new(gpu.clone(), n * OUT_LEN).map_err(failed)?)
                    }
                };
                let mut room = pool.take().map_err(failed)?;
                let src = tensor.data_ptr() as u64;
                match &lane {
                    Some(lane) => {
                        let start = batch.started.take().ok_or_else(|| {
                            ModelError::Run("the batch's start on the GPU was not marked".into())
                        })?;
                        // SAFETY: the output is ONNX Runtime's CUDA allocation on this GPU
                        // (checked above), holding at least `values` f32, written by the run
                        // just queued on this lane; the room is read only after `done`.
                        unsafe { lane.download(src, values, room.room_mut()) }.map_err(failed)?;
                        if let Some(composer) = self
                            .composer
                            .as_ref()
                            .filter(|_| compose.iter().any(Option::is_some))
                        {
                            let mut composer =
                                composer.lock().unwrap_or_else(PoisonError::into_inner);
                            let jobs = &compose[..compose.len().min(used)];
                            // SAFETY: the output tensor holds `used` ≥ jobs.len() frames'
                            // outputs, written by the run just queued on this lane, and is
                            // rewritten only by a later batch from these buffers, which waits
                            // for `done` (`busy`) first.
                            let (made, failure) =
                                unsafe { compose_batch(&mut composer, jobs, src) };
                            if let Some(e) = failure {
                                if !std::mem::replace(&mut self.compose_warned, true) {
                                    gst::warning!(
                                        crate::wav2lip_worker::CAT,
                                        "frames made on the CPU instead of the GPU: {e}"
                                    );
                                }
                            }
                            composed = made;
                        }
                        let done = Arc::new(lane.mark().map_err(failed)?);
                        batch.busy = Some(done.clone());
                        ComingOutputs::Downloading { room, start, done }
                    }
                    None => {
                        // SAFETY: as above; the run has returned, and ONNX Runtime's CUDA
                        // provider waits for its stream before returning.
                        unsafe { gpu.download(src, values, room.room_mut()) }.map_err(failed)?;
                        ComingOutputs::Ready(Arc::new(BatchOutputs::Pinned(room)))
                    }
                }
            }
            _ => {
                let (_, output) = output.try_extract_tensor::<f32>().map_err(run)?;
                let values = output[..values.min(output.len())].to_vec();
                ComingOutputs::Ready(Arc::new(BatchOutputs::Host(values)))
            }
        };
        Ok(Submitted {
            outputs: coming,
            times: RunTimes {
                fill: filled - started,
                model: ran - filled,
                read: ran.elapsed(),
                gpu: std::time::Duration::ZERO,
            },
            frames: composed,
        })
    }

    /// Builds face inputs on the CPU from now on, for `why` (kept for `face_inputs`, which the
    /// server logs).
    fn gpu_refused(&mut self, why: String) {
        self.gpu = None;
        self.gpu_failed = Some(why);
        self.pinned
            .retain(|(_, side, _), _| *side == FaceSide::Host);
        self.output_pools.clear();
    }

    /// Gives up pinned buffers after ONNX Runtime refused them (kept for `pinned_failure`).
    fn pinned_refused(&mut self, e: ModelError) {
        self.pinned.clear();
        self.pinned_failed = Some(e.to_string());
    }

    /// Runs `n` frames from ordinary host tensors.
    fn run_host(&mut self, n: usize, mel: &[f32], face: &[f32]) -> Result<Vec<f32>, ModelError> {
        let run = |e: ort::Error| ModelError::Run(e.to_string());
        let mel_t = TensorRef::from_array_view(([n, 1, 80, 16], mel)).map_err(run)?;
        let face_t = TensorRef::from_array_view(([n, 6, 96, 96], face)).map_err(run)?;
        let outputs = self
            .session
            .run_with_options(
                ort::inputs![self.io.mel.as_str() => mel_t, self.io.face.as_str() => face_t],
                &self.quiet,
            )
            .map_err(run)?;
        let (_, data) = outputs[self.io.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(run)?;
        Ok(data.to_vec())
    }

    /// Why pinned buffers are not used on this GPU, if they were refused.
    pub fn pinned_failure(&self) -> Option<&str> {
        self.pinned_failed.as_deref()
    }

    fn pinned_batch(&self, id: i32, n: usize, side: FaceSide) -> ort::Result<PinnedBatch> {
        let pinned = |kind| {
            MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                id,
                AllocatorType::Device,
                kind,
            )
        };
        let input = Allocator::new(&self.session, pinned(MemoryType::CPUInput)?)?;
        let mel = Tensor::<f32>::new(&input, [n, 1, 80, 16])?;
        let mut allocators = Vec::new();
        let mut crops = None;
        let on =
            |device, id| MemoryInfo::new(device, id, AllocatorType::Device, MemoryType::Default);
        let mut output_memory = on(AllocationDevice::CPU, 0)?;
        let face = match side {
            FaceSide::Host => Tensor::<f32>::new(&input, [n, 6, 96, 96])?,
            FaceSide::Device => {
                if let Some(gpu) = &self.gpu {
                    let room = gpu.crop_batch(n).map_err(|e| {
                        ort::Error::new(format!("no room for {n} crops on the GPU: {e}"))
                    })?;
                    crops = Some(room);
                    output_memory = on(AllocationDevice::CUDA, id)?;
                }
                let device = Allocator::new(&self.session, on(AllocationDevice::CUDA, id)?)?;
                let face = Tensor::<f32>::new(&device, [n, 6, 96, 96])?;
                allocators.push(device);
                face
            }
        };
        let mut binding = self.session.create_binding()?;
        binding.bind_input(self.io.mel.as_str(), &mel)?;
        binding.bind_input(self.io.face.as_str(), &face)?;
        binding.bind_output_to_device(self.io.output.as_str(), &output_memory)?;
        allocators.push(input);
        Ok(PinnedBatch {
            binding,
            mel,
            face,
            output_on_gpu: crops.is_some(),
            crops,
            busy: None,
            started: None,
            _allocators: allocators,
        })
    }

    /// Frames per second of the model alone with its inputs and output kept on the GPU (copied
    /// there once, bound once), `rounds` rounds of `runs` runs at batch `n`, one figure per
    /// round: the figure to set beside framework benchmarks, which measure the same way. `None`
    /// on a CPU.
    pub fn resident_throughput(
        &mut self,
        n: usize,
        runs: usize,
        rounds: usize,
    ) -> Result<Option<Vec<f64>>, ModelError> {
        let Device::Cuda(id) = self.device else {
            return Ok(None);
        };
        let run = |e: ort::Error| ModelError::Run(e.to_string());
        let host = |shape: [usize; 4]| {
            let len = shape.iter().product::<usize>();
            Tensor::from_array((
                shape,
                (0..len)
                    .map(|i| (i % 251) as f32 / 251.0)
                    .collect::<Vec<f32>>(),
            ))
        };
        let mel = host([n, 1, 80, 16])
            .map_err(run)?
            .to(AllocationDevice::CUDA, id)
            .map_err(run)?;
        let face = host([n, 6, 96, 96])
            .map_err(run)?
            .to(AllocationDevice::CUDA, id)
            .map_err(run)?;
        let mut binding = self.session.create_binding().map_err(run)?;
        binding
            .bind_input(self.io.mel.as_str(), &mel)
            .map_err(run)?;
        binding
            .bind_input(self.io.face.as_str(), &face)
            .map_err(run)?;
        let device = MemoryInfo::new(
            AllocationDevice::CUDA,
            id,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(run)?;
        binding
            .bind_output_to_device(self.io.output.as_str(), &device)
            .map_err(run)?;
        for _ in 0..3 {
            self.session.run_binding(&binding).map_err(run)?;
        }
        let mut fps = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = std::time::Instant::now();
            for _ in 0..runs {
                // `run_binding` waits for the GPU before returning.
                drop(self.session.run_binding(&binding).map_err(run)?);
            }
            fps.push((n * runs) as f64 / started.elapsed().as_secs_f64());
        }
        Ok(Some(fps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_face_input_masks_the_lower_half_of_the_first_copy() {
        let crop: Vec<u8> = (0..96 * 96).flat_map(|_| [255u8, 128, 0]).collect();
        let t = face_input(&crop);
        let plane = 96 * 96;
        // Channel 0 is blue (0), channel 2 red (1.0).
        assert_eq!(t[0], 0.0);
        assert_eq!(t[2 * plane], 1.0);
        assert_eq!(t[2 * plane + 47 * 96], 1.0);
        assert_eq!(t[2 * plane + 48 * 96], 0.0, "lower half zeroed");
        assert_eq!(t[5 * plane + 95 * 96], 1.0, "reference kept whole");
    }
}
