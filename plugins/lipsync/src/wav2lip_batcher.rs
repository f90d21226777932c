//! One Wav2Lip model per process, shared by every session, batching their frames.
//!
//! Loading a model takes a second or more and holds its weights (and, on a GPU, its workspace)
//! in memory; every session loading its own would make session start slow and memory grow with
//! the audience. So a model is loaded once (and warmed up: the first run of an ONNX Runtime
//! session is several times slower than the next) by [`shared`], which keeps it for the life of
//! the process. A worker owns it (`wav2lip_worker`): it takes the first waiting frame, gathers
//! whatever else arrives within `max_wait` (up to `max_batch` frames, from any session), runs
//! them as one batch, and answers each frame on its own channel. One live session at 25 fps
//! mostly runs batches of one; several sessions, or an offline render that submits frames
//! ahead, share batches, which is where a GPU gets its throughput.
//!
//! A frame may come with the instant after which its answer is of no use (a live frame past its
//! frame budget is replaced by the previous one anyway). Such a frame that would expire before
//! its batch ends (reckoned from the last batch's run time) is left out and answered "expired"
//! at once: an overloaded model spends itself on frames that can still be shown, instead of
//! falling further behind on ones that cannot.

use crate::wav2lip_frames::{Answer, ComposeJob};
use crate::wav2lip_model::{runtime, ModelError, ModelIo, Wav2LipModel, CROP_LEN, MEL_LEN};
pub use crate::wav2lip_worker::BatchStats;
use crate::wav2lip_worker::{self, Batching, Request, Unanswered, CAT};
use facecast_gpu::frames::Composer;
use facecast_onnx::Device;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The default of [`ModelKey::gpu_frames_mb`]: 256 frames of 512×512, or 60 of 1280×720,
/// kept on the GPU per worker. On an H100 the sessions' lipsync threads fell from 2.7 to 1.1
/// cores with it at 175 H.264 sessions, which then held where they did not without it.
pub const DEFAULT_GPU_FRAMES_MB: usize = 256;

/// What identifies a loaded model: two sessions asking for the same key share it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelKey {
    pub path: PathBuf,
    pub io: ModelIoKey,
    pub device: Device,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// ONNX Runtime intra-op threads (CPU); 0 = one per core.
    pub threads: usize,
    /// Worker threads running batches, each with its own sessions (see [`shared`]).
    pub workers: usize,
    /// On a GPU, MB of registered avatars' frames each worker keeps there to compose output
    /// frames on the GPU ([`crate::wav2lip_frames`]); 0: output frames are made on the CPU.
    pub gpu_frames_mb: usize,
}

impl ModelKey {
    /// The key `lipsync` builds from its properties, with the default input and output names.
    pub fn new(
        path: &std::path::Path,
        device: Device,
        max_batch: u32,
        max_wait_ms: u32,
        threads: u32,
    ) -> Self {
        Self {
            path: path.to_owned(),
            io: ModelIoKey::default(),
            device,
            max_batch: max_batch.max(1) as usize,
            max_wait: Duration::from_millis(max_wait_ms as u64),
            threads: threads as usize,
            workers: 1,
            gpu_frames_mb: DEFAULT_GPU_FRAMES_MB,
        }
    }
}

/// `ModelIo` as a hashable key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelIoKey {
    pub mel: String,
    pub face: String,
    pub output: String,
}

impl Default for ModelIoKey {
    fn default() -> Self {
        let io = ModelIo::default();
        Self {
            mel: io.mel,
            face: io.face,
            output: io.output,
        }
    }
}

impl From<&ModelIoKey> for ModelIo {
    fn from(k: &ModelIoKey) -> Self {
        ModelIo {
            mel: k.mel.clone(),
            face: k.face.clone(),
            output: k.output.clone(),
        }
    }
}

/// A handle on a shared model.
pub struct SharedModel {
    key: ModelKey,
    requests: Mutex<mpsc::Sender<Request>>,
    pub stats: Arc<BatchStats>,
    pub load_time: Duration,
    /// Input and output names taken from the model's shapes, one note each (for the log).
    pub inferred_names: Vec<String>,
    /// Where face inputs are built, after warm-up (for the log): see
    /// [`Wav2LipModel::face_inputs`].
    pub face_inputs: String,
    /// Whether its workers compose registered avatars' output frames on the GPU (a frame's
    /// answer may then bring the finished frame).
    pub frames_on_gpu: bool,
}

/// A frame submitted to the model; [`wait`](PendingInference::wait) blocks for its output.
pub struct PendingInference(mpsc::Receiver<Result<Answer, Unanswered>>);

/// What waiting for a frame until a deadline gave.
pub enum Waited {
    Answer(Result<Answer, ModelError>),
    /// Not answered by the deadline: the frame, whose answer may still be taken later.
    Late(PendingInference),
}

/// The error of a frame whose model worker has gone.
fn worker_stopped() -> ModelError {
    ModelError::Run("the model's worker stopped".into())
}

impl PendingInference {
    /// The frame's output: 3·96·96 values, BGR in 0..1, planar. With a `deadline`, a frame not
    /// answered by then is given back as [`Waited::Late`], its answer still to come.
    pub fn wait(self, deadline: Option<Instant>) -> Waited {
        let answer = match deadline {
            None => self.0.recv().map_err(|_| worker_stopped()),
            Some(at) => match self
                .0
                .recv_timeout(at.saturating_duration_since(Instant::now()))
            {
                Ok(answer) => Ok(answer),
                Err(mpsc::RecvTimeoutError::Timeout) => return Waited::Late(self),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(worker_stopped()),
            },
        };
        Waited::Answer(answer.and_then(|a| a.map_err(ModelError::from)))
    }

    /// The answer if it has come, without waiting.
    pub fn try_answer(&self) -> Option<Result<Answer, ModelError>> {
        match self.0.try_recv() {
            Ok(answer) => Some(answer.map_err(ModelError::from)),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(worker_stopped())),
        }
    }
}

impl SharedModel {
    pub fn key(&self) -> &ModelKey {
        &self.key
    }

    /// Queues one frame: `mel` is 80·16 values, `crop` the 96×96 RGB face crop. A frame
    /// still queued at `expires` is not run: it is answered [`ModelError::Late`]. With
    /// `compose`, its answer may bring the output frame composed on the GPU.
    pub fn submit(
        &self,
        mel: Vec<f32>,
        crop: Vec<u8>,
        expires: Option<Instant>,
        compose: Option<ComposeJob>,
    ) -> Result<PendingInference, ModelError> {
        if mel.len() != MEL_LEN || crop.len() != CROP_LEN {
            return Err(ModelError::Run(format!(
                "a frame needs {MEL_LEN} mel values and a {CROP_LEN}-byte crop, got {} and {}",
                mel.len(),
                crop.len()
            )));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .lock()
            .unwrap()
            .send(Request {
                mel,
                crop,
                submitted: Instant::now(),
                expires,
                compose,
                reply,
            })
            .map_err(|_| worker_stopped())?;
        Ok(PendingInference(answer))
    }
}

static MODELS: LazyLock<Mutex<HashMap<ModelKey, Arc<SharedModel>>>> =
    LazyLock::new(Default::default);

/// The process's model for `key`, loaded and warmed up on first use.
pub fn shared(key: &ModelKey) -> Result<Arc<SharedModel>, ModelError> {
    // Held while loading, so two sessions starting together load the model once.
    let mut models = MODELS.lock().unwrap();
    if let Some(model) = models.get(key) {
        return Ok(model.clone());
    }
    let started = Instant::now();
    let env = runtime(None)?;
    let threads = if key.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        key.threads
    };
    let n = key.max_batch.max(1);
    let pad = key.device != Device::Cpu;
    // On a GPU, one ONNX Runtime session per batch shape. A session's convolutions keep the
    // plan of the last shape they ran: switching shapes re-plans every layer, measured at
    // 1.1–1.3 s a switch on an H100 with ONNX Runtime 1.31 and cuDNN 9 (against 2–3 ms for a
    // run of the same shape), so one session fed varying batches stalls every stream behind it.
    // On a CPU any shape runs at once, and one session serves them all.
    let shapes = if pad { gpu_batch_shapes(n) } else { vec![n] };
    // On a GPU, the kernels that build face inputs from crops there (compiled once, shared by
    // the shapes' sessions); without them the inputs are built on the CPU.
    let gpu = match key.device {
        Device::Cuda(id) => match facecast_gpu::cuda::Gpu::open(id.max(0) as usize) {
            Ok(gpu) => Some(Arc::new(gpu)),
            Err(e) => {
                gst::warning!(CAT, "face inputs built on the CPU: {e}");
                None
            }
        },
        Device::Cpu => None,
    };
    let (tx, rx) = mpsc::channel::<Request>();
    // Workers take turns gathering batches from the one queue. With two on a GPU, one
    // worker's host work (writing inputs, handing out outputs) and transfers overlap the
    // other's model run, which a single worker leaves the GPU idle for.
    let requests = Arc::new(Mutex::new(rx));
    let stats = Arc::new(BatchStats::default());
    let workers = key.workers.max(1);
    let (ready_tx, ready) = mpsc::sync_channel(workers);
    let mut inferred_names = Vec::new();
    let mut frames_on_gpu = false;
    for worker in 0..workers {
        // On a GPU, the worker's sessions run on a lane of its own, where its batches are
        // queued whole (see `wav2lip_worker`).
        let lane = match &gpu {
            Some(gpu) => match gpu.lane() {
                Ok(lane) => Some(Arc::new(lane)),
                Err(e) => {
                    gst::warning!(
                        CAT,
                        "each batch waits for the GPU: no stream of its own ({e})"
                    );
                    None
                }
            },
            None => None,
        };
        // On a lane, one composer for the worker's sessions of every shape.
        let composer = match &lane {
            Some(lane) if key.gpu_frames_mb > 0 => Some(Arc::new(Mutex::new(Composer::new(
                lane.clone(),
                key.gpu_frames_mb << 20,
            )))),
            _ => None,
        };
        frames_on_gpu |= composer.is_some();
        let mut sessions = Vec::with_capacity(shapes.len());
        for &size in &shapes {
            let (path, io) = (&key.path, (&key.io).into());
            let model = match (&lane, &gpu) {
                (Some(lane), _) => {
                    let mut model =
                        Wav2LipModel::load_on(env, path, io, key.device, threads, lane.clone())?;
                    if let Some(composer) = &composer {
                        model.set_composer(composer.clone());
                    }
                    model
                }
                (None, Some(gpu)) => {
                    let mut model = Wav2LipModel::load(env, path, io, key.device, threads)?;
                    model.set_gpu(gpu.clone());
                    model
                }
                (None, None) => Wav2LipModel::load(env, path, io, key.device, threads)?,
            };
            sessions.push((size, model));
        }
        if worker == 0 {
            inferred_names = sessions[0].1.inferred_names().to_vec();
        }
        let ready_tx = ready_tx.clone();
        let warm = move |sessions: &mut [(usize, Wav2LipModel)]| {
            // Any shape's session that fell back says why.
            let _ = ready_tx.send(warm_up(sessions).map(|()| {
                let (_, model) = sessions
                    .iter()
                    .find(|(_, m)| !m.face_inputs_on_gpu())
                    .unwrap_or(&sessions[0]);
                (model.face_inputs_on_gpu(), model.face_inputs())
            }));
        };
        let how = Batching {
            requests: requests.clone(),
            stats: stats.clone(),
            max_batch: n,
            max_wait: key.max_wait,
            pad,
        };
        wav2lip_worker::start(worker, sessions, warm, how)
            .map_err(|e| ModelError::Run(format!("cannot start the model's worker: {e}")))?;
    }
    drop(ready_tx);
    // Every worker's sessions are alike; one that fell back says why.
    let mut face_inputs = None;
    for _ in 0..workers {
        let (on_gpu, said) = ready
            .recv()
            .map_err(|_| ModelError::Run("the model's worker stopped while warming up".into()))??;
        if face_inputs.is_none() || !on_gpu {
            face_inputs = Some(said);
        }
    }
    let face_inputs = face_inputs.expect("at least one worker");
    let load_time = started.elapsed();
    gst::info!(CAT, "{}: face inputs {face_inputs}", key.path.display());
    let shared = Arc::new(SharedModel {
        key: key.clone(),
        requests: Mutex::new(tx),
        stats,
        load_time,
        inferred_names,
        face_inputs,
        frames_on_gpu,
    });
    models.insert(key.clone(), shared.clone());
    Ok(shared)
}

/// Warms up each session at its batch shape ([`Wav2LipModel::warm_up`]): nothing is planned or
/// found wanting mid-stream.
fn warm_up(models: &mut [(usize, Wav2LipModel)]) -> Result<(), ModelError> {
    for (size, model) in models {
        let started = Instant::now();
        model.warm_up(*size)?;
        gst::debug!(CAT, "warm-up of batch {size}: {:?}", started.elapsed());
    }
    Ok(())
}

/// Every model loaded so far (for metrics).
pub fn loaded() -> Vec<Arc<SharedModel>> {
    MODELS.lock().unwrap().values().cloned().collect()
}

/// Frames run through every model loaded so far, and of them those whose output frame was
/// composed on the GPU.
pub fn frames_so_far() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    loaded().iter().fold((0, 0), |(run, composed), m| {
        (
            run + m.stats.frames.load(Relaxed),
            composed + m.stats.composed.load(Relaxed),
        )
    })
}

/// The batch shapes run on a GPU: powers of two and `max` (a batch is padded up to the next
/// one), so that few sessions are needed.
fn gpu_batch_shapes(max: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..)
        .map(|k| 1usize << k)
        .take_while(|&s| s < max)
        .collect();
    sizes.push(max);
    sizes
}

#[cfg(test)]
mod tests {
    use super::gpu_batch_shapes;

    #[test]
    fn gpu_batches_use_few_shapes() {
        assert_eq!(gpu_batch_shapes(128), [1, 2, 4, 8, 16, 32, 64, 128]);
        assert_eq!(gpu_batch_shapes(24), [1, 2, 4, 8, 16, 24]);
        assert_eq!(gpu_batch_shapes(1), [1]);
    }
}
