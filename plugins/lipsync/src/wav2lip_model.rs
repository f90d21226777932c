//! A Wav2Lip-class ONNX model run with ONNX Runtime (`ort`, loaded dynamically).
//!
//! ONNX Runtime is a shared library found at run time (`ORT_DYLIB_PATH`, or a path given by the
//! caller), never downloaded by the build. Loading it is checked once per process; a missing or
//! unusable library is an error naming the path, not the panic `ort` would raise on first use.
//! A model must have the inputs and output the engine feeds: by default `mel` [N,1,80,16] and
//! `face` [N,6,96,96] → [N,3,96,96]; names are configurable for other exports, and a model that
//! does not fit is refused with what was expected.

use facecast_common::onnx::{session_builder, Device, RuntimeError};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

pub use facecast_common::onnx::runtime;

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
}

pub struct Wav2LipModel {
    session: Session,
    io: ModelIo,
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
        let model = Self { session, io };
        model.check(path)?;
        Ok(model)
    }

    fn check(&self, path: &Path) -> Result<(), ModelError> {
        let misfit = |reason: String| ModelError::Shape {
            path: path.to_owned(),
            reason,
            mel: self.io.mel.clone(),
            face: self.io.face.clone(),
            output: self.io.output.clone(),
        };
        let dims = |outlets: &[ort::value::Outlet], name: &str| -> Result<Vec<i64>, ModelError> {
            let outlet = outlets.iter().find(|o| o.name() == name).ok_or_else(|| {
                let names: Vec<_> = outlets.iter().map(|o| o.name().to_owned()).collect();
                misfit(format!("it has no '{name}' (it has {names:?})"))
            })?;
            let shape = outlet
                .dtype()
                .tensor_shape()
                .ok_or_else(|| misfit(format!("'{name}' is not a tensor")))?;
            Ok(shape.iter().copied().collect())
        };
        for (outlets, name, want) in [
            (self.session.inputs(), &self.io.mel, [1i64, 80, 16]),
            (self.session.inputs(), &self.io.face, [6, 96, 96]),
            (self.session.outputs(), &self.io.output, [3, 96, 96]),
        ] {
            let got = dims(outlets, name)?;
            // The batch dimension may be dynamic (-1); the others must match (or be dynamic).
            let fits = got.len() == 4 && got[1..].iter().zip(want).all(|(&g, w)| g == w || g < 0);
            if !fits {
                return Err(misfit(format!("'{name}' has shape {got:?}")));
            }
        }
        Ok(())
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
        let mel_t = TensorRef::from_array_view(([n, 1, 80, 16], mel)).map_err(run)?;
        let face_t = TensorRef::from_array_view(([n, 6, 96, 96], face)).map_err(run)?;
        let outputs = self
            .session
            .run(ort::inputs![self.io.mel.as_str() => mel_t, self.io.face.as_str() => face_t])
            .map_err(run)?;
        let (_, data) = outputs[self.io.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(run)?;
        Ok(data.to_vec())
    }
}
