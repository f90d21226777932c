//! A Wav2Lip-class ONNX model run with ONNX Runtime (`ort`, loaded dynamically).
//!
//! ONNX Runtime is a shared library found at run time (`ORT_DYLIB_PATH`, or a path given by the
//! caller), never downloaded by the build. Loading it is checked once per process; a missing or
//! unusable library is an error naming the path, not the panic `ort` would raise on first use.
//! A model must have the inputs and output the engine feeds: by default `mel` [N,1,80,16] and
//! `face` [N,6,96,96] → [N,3,96,96]; names are configurable for other exports, and a model that
//! does not fit is refused with what was expected.

use facecast_onnx::{session_builder, Device, RuntimeError};
use ort::logging::LogLevel;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::{Tensor, TensorRef};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use facecast_onnx::runtime;

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
    session: Session,
    io: ModelIo,
    device: Device,
    /// On a GPU: page-locked buffers and their binding, per batch size (see `infer_pinned`).
    pinned: HashMap<usize, PinnedBatch>,
    /// Set when ONNX Runtime refused pinned buffers: ordinary tensors are used from then on.
    pinned_failed: Option<String>,
    /// Names taken from the model's shapes rather than from `io` (see `check`).
    inferred: Vec<String>,
    /// Every run's options: ONNX Runtime prints nothing of its own when a run fails. The
    /// error comes back to the caller, which reports it once per run of failures; ONNX
    /// Runtime would print it again for every failed batch, at the frame rate.
    quiet: RunOptions,
}

/// Inputs and output of one batch size in page-locked (pinned) host memory, bound to the model.
/// Copies between pinned memory and the GPU run at full bus speed and need no staging copy;
/// with ordinary (pageable) tensors ONNX Runtime stages every run's inputs and output.
struct PinnedBatch {
    binding: IoBinding,
    mel: Tensor<f32>,
    face: Tensor<f32>,
    // The allocator must outlive the tensors it made.
    _input: Allocator,
}

/// Run options under which ONNX Runtime logs only fatal errors.
fn quiet_runs() -> ort::Result<RunOptions> {
    let mut options = RunOptions::new()?;
    options.set_log_level(LogLevel::Fatal)?;
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
        if !path.is_file() {
            return Err(ModelError::NotFound(path.to_owned()));
        }
        let load = |e: ort::Error| ModelError::Load {
            path: path.to_owned(),
            device,
            reason: e.to_string(),
        };
        let session = session_builder(env, device, threads)
            .map_err(load)?
            .commit_from_file(path)
            .map_err(load)?;
        let mut model = Self {
            session,
            io,
            device,
            pinned: HashMap::new(),
            pinned_failed: None,
            inferred: Vec::new(),
            quiet: quiet_runs().map_err(load)?,
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

    /// Runs `n` frames: `mel` holds n·80·16 values, `face` n·6·96·96; returns n·3·96·96 values
    /// (BGR in 0..1, NCHW).
    pub fn infer(&mut self, n: usize, mel: &[f32], face: &[f32]) -> Result<Vec<f32>, ModelError> {
        let run = |e: ort::Error| ModelError::Run(e.to_string());
        if mel.len() != n * 80 * 16 || face.len() != n * 6 * 96 * 96 {
            return Err(ModelError::Run(format!(
                "{n} frames need {} mel and {} face values, got {} and {}",
                n * 80 * 16,
                n * 6 * 96 * 96,
                mel.len(),
                face.len()
            )));
        }
        if let (Device::Cuda(id), None) = (self.device, &self.pinned_failed) {
            match self.infer_pinned(id, n, mel, face) {
                Ok(out) => return Ok(out),
                Err(e) => {
                    // Keep working without them; the reason is kept for `pinned_failure`.
                    self.pinned.clear();
                    self.pinned_failed = Some(e.to_string());
                }
            }
        }
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

    fn infer_pinned(
        &mut self,
        id: i32,
        n: usize,
        mel: &[f32],
        face: &[f32],
    ) -> Result<Vec<f32>, ModelError> {
        let run = |e: ort::Error| ModelError::Run(e.to_string());
        if !self.pinned.contains_key(&n) {
            let batch = self.pinned_batch(id, n).map_err(run)?;
            self.pinned.insert(n, batch);
        }
        let batch = self.pinned.get_mut(&n).expect("inserted above");
        batch.mel.extract_tensor_mut().1.copy_from_slice(mel);
        batch.face.extract_tensor_mut().1.copy_from_slice(face);
        let outputs = self
            .session
            .run_binding_with_options(&batch.binding, &self.quiet)
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

    fn pinned_batch(&self, id: i32, n: usize) -> ort::Result<PinnedBatch> {
        let memory = |kind| {
            MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                id,
                AllocatorType::Device,
                kind,
            )
        };
        let input = Allocator::new(&self.session, memory(MemoryType::CPUInput)?)?;
        let mel = Tensor::<f32>::new(&input, [n, 1, 80, 16])?;
        let face = Tensor::<f32>::new(&input, [n, 6, 96, 96])?;
        let mut binding = self.session.create_binding()?;
        binding.bind_input(self.io.mel.as_str(), &mel)?;
        binding.bind_input(self.io.face.as_str(), &face)?;
        // The output comes back to ordinary host memory (ONNX Runtime allocates it).
        let host = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )?;
        binding.bind_output_to_device(self.io.output.as_str(), &host)?;
        Ok(PinnedBatch {
            binding,
            mel,
            face,
            _input: input,
        })
    }

    /// Frames per second of the model alone with its inputs and output kept on the GPU (copied
    /// there once), `runs` times at batch `n`: the figure to set beside framework benchmarks,
    /// which measure the same way. `None` on a CPU.
    pub fn resident_throughput(
        &mut self,
        n: usize,
        runs: usize,
    ) -> Result<Option<f64>, ModelError> {
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
        let started = std::time::Instant::now();
        for _ in 0..runs {
            // `run_binding` waits for the GPU before returning.
            drop(self.session.run_binding(&binding).map_err(run)?);
        }
        Ok(Some((n * runs) as f64 / started.elapsed().as_secs_f64()))
    }
}
