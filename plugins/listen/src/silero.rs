//! Silero VAD (v5/v6, ONNX, MIT) through `ort`: the probability that a 32 ms frame of 16 kHz
//! audio is speech. The model is recurrent: each stream keeps its own state and the last 64
//! samples of context, as the reference Python wrapper does.

use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The only rate the element feeds the model (Silero also takes 8 kHz; we resample instead).
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples per frame at 16 kHz (32 ms), as the model requires.
pub const FRAME: usize = 512;
/// Samples of the previous frame prepended to each frame.
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;
/// The file name set-up puts in the models folder.
pub const MODEL_FILE: &str = "silero_vad.onnx";

#[derive(Debug, thiserror::Error)]
pub enum SileroError {
    #[error("Silero VAD model not found at {0}: scripts/fetch-runtime.sh installs it (make run does); or `pip download silero-vad --no-deps` and take silero_vad/data/silero_vad.onnx from the wheel (MIT licence)")]
    NotFound(PathBuf),
    #[error(transparent)]
    Runtime(#[from] facecast_onnx::RuntimeError),
    #[error("cannot load the Silero VAD model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("Silero VAD failed: {0}")]
    Run(String),
}

/// A loaded model, shared by every stream (one inference at a time; each takes ~0.1 ms).
pub struct SileroModel {
    session: Mutex<Session>,
}

impl SileroModel {
    pub fn load(path: &Path) -> Result<Arc<Self>, SileroError> {
        if !path.is_file() {
            return Err(SileroError::NotFound(path.to_owned()));
        }
        let env = facecast_onnx::runtime(None)?;
        let load = |e: ort::Error| SileroError::Load {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        // One thread: a frame is tiny, and every session runs its own stream.
        let session = facecast_onnx::session_builder(env, facecast_onnx::Device::Cpu, 1)
            .map_err(load)?
            .commit_from_file(path)
            .map_err(load)?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for needed in ["input", "state", "sr"] {
            if !inputs.contains(&needed) {
                return Err(SileroError::Load {
                    path: path.to_owned(),
                    reason: format!(
                        "not a Silero VAD v5/v6 model: it has no input '{needed}' ({inputs:?})"
                    ),
                });
            }
        }
        Ok(Arc::new(Self {
            session: Mutex::new(session),
        }))
    }
}

/// One audio stream's recurrent state.
pub struct SileroStream {
    model: Arc<SileroModel>,
    input: Vec<f32>,
    state: Vec<f32>,
}

impl SileroStream {
    pub fn new(model: Arc<SileroModel>) -> Self {
        Self {
            model,
            input: vec![0.0; CONTEXT + FRAME],
            state: vec![0.0; STATE],
        }
    }

    /// Forgets the stream (a new one starts, or a discontinuity).
    pub fn reset(&mut self) {
        self.input.fill(0.0);
        self.state.fill(0.0);
    }

    /// The speech probability of `frame` (16 kHz, samples in -1..1).
    pub fn probability(&mut self, frame: &[f32; FRAME]) -> Result<f32, SileroError> {
        self.input[CONTEXT..].copy_from_slice(frame);
        let run = |e: ort::Error| SileroError::Run(e.to_string());
        let sr = [SAMPLE_RATE as i64];
        let input = TensorRef::from_array_view(([1usize, CONTEXT + FRAME], &self.input[..]))
            .map_err(run)?;
        let state = TensorRef::from_array_view(([2usize, 1, 128], &self.state[..])).map_err(run)?;
        let sr = TensorRef::from_array_view(((), &sr[..])).map_err(run)?;
        let mut session = self.model.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs!["input" => input, "state" => state, "sr" => sr])
            .map_err(run)?;
        let (_, prob) = outputs[0].try_extract_tensor::<f32>().map_err(run)?;
        let (_, state) = outputs[1].try_extract_tensor::<f32>().map_err(run)?;
        if state.len() != STATE || prob.is_empty() {
            return Err(SileroError::Run(format!(
                "unexpected output sizes ({} probabilities, state {})",
                prob.len(),
                state.len()
            )));
        }
        let p = prob[0];
        self.state.copy_from_slice(state);
        drop(outputs);
        drop(session);
        // The next frame's context is the end of this one.
        self.input.copy_within(FRAME.., 0);
        Ok(p)
    }
}
