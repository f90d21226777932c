//! A shared model's batch worker: two threads.
//!
//! - The gatherer owns the model's sessions. It takes the first waiting frame from the queue
//!   shared by every session, gathers whatever else arrives within `max_wait` (up to the
//!   largest batch), leaves out the frames that would expire before the batch is done, and
//!   submits the batch ([`Wav2LipModel::submit_batch`]).
//! - The answerer waits for each submitted batch and answers each of its frames.
//!
//! They meet on a channel with no room: the gatherer hands a batch over only when the
//! answerer has finished the one before. On a GPU lane a submitted batch is only queued, so
//! the gatherer gathers and queues the next batch while the GPU runs this one, and the GPU
//! goes from one batch to the next without waiting for the host's work in between. (Elsewhere
//! a batch is done when it is submitted, and the answerer just answers.) At most two batches
//! are then in hand, which is what the model's two sets of buffers per shape allow.

use crate::wav2lip_frames::{Answer, ComposeJob};
use crate::wav2lip_model::{FrameInput, ModelError, Submitted, Wav2LipModel};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "wav2lip",
        gst::DebugColorFlags::empty(),
        Some("facecast Wav2Lip batch worker"),
    )
});

/// A frame waiting for the model: what the sessions queue and the worker answers.
pub(crate) struct Request {
    pub mel: Vec<f32>,
    /// The face crop (96×96 RGB): the worker builds the model's input from it, on the GPU
    /// where it can (eight times fewer bytes to move than the input itself).
    pub crop: Vec<u8>,
    pub submitted: Instant,
    /// After this, the answer is of no use: the frame is left out of its batch.
    pub expires: Option<Instant>,
    /// A registered avatar's frame, to compose the output frame on the GPU where the batch
    /// runs on a lane.
    pub compose: Option<ComposeJob>,
    pub reply: mpsc::SyncSender<Result<Answer, Unanswered>>,
}

/// Why a frame got no output.
pub(crate) enum Unanswered {
    /// It expired before its batch ran, and was left out.
    Expired,
    /// Its batch failed (ONNX Runtime's message).
    Failed(String),
}

impl From<Unanswered> for ModelError {
    fn from(u: Unanswered) -> Self {
        match u {
            Unanswered::Expired => ModelError::Late,
            Unanswered::Failed(message) => ModelError::Run(message),
        }
    }
}

/// Counters of a shared model, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub frames: AtomicU64,
    /// Total time spent in inference, in microseconds.
    pub inference_us: AtomicU64,
    /// Frames left out because they expired before their batch ran.
    pub expired: AtomicU64,
    /// Writing inputs, ONNX Runtime's runs, and bringing the outputs into host memory, and on
    /// a GPU lane the batches' time on the GPU (see
    /// [`RunTimes`](crate::wav2lip_model::RunTimes)).
    pub fill_us: AtomicU64,
    pub model_us: AtomicU64,
    pub read_us: AtomicU64,
    pub gpu_us: AtomicU64,
    /// Output frames composed on the GPU.
    pub composed: AtomicU64,
}

/// A batch on its way from the gatherer to the answerer.
struct Handed {
    batch: Vec<Request>,
    submitted: Result<Submitted, ModelError>,
    /// The shape it ran at, and when its gathering and its submission began (for the log).
    shape: usize,
    gathering: Instant,
    started: Instant,
}

/// How a worker batches, and what its threads take frames from and count in.
pub(crate) struct Batching {
    pub requests: Arc<Mutex<mpsc::Receiver<Request>>>,
    pub stats: Arc<BatchStats>,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// On a GPU: a batch is padded up to the smallest shape that holds it.
    pub pad: bool,
}

/// What the two threads share: how long the last batch took from its submission to its
/// outputs, in µs. A frame that would expire before a batch like it ends is left out (it
/// would be answered too late to be shown).
#[derive(Default)]
struct LastBatch(AtomicU64);

/// The gatherer: `models` are (batch shape, session), smallest first; with `pad` (a GPU) a
/// batch is padded up to the smallest shape that holds it, else the one session runs any size.
fn gather_batches(
    mut models: Vec<(usize, Wav2LipModel)>,
    how: &Batching,
    last: &LastBatch,
    answerer: mpsc::SyncSender<Handed>,
) {
    let Batching {
        requests,
        stats,
        max_batch,
        max_wait,
        pad,
    } = how;
    let (max_batch, max_wait, pad) = (*max_batch, *max_wait, *pad);
    loop {
        // The queue is this worker's while it gathers a batch, the others' while it runs one.
        let (batch, gathering) = {
            let requests = requests.lock().unwrap();
            let Ok(first) = requests.recv() else {
                return;
            };
            let gathering = Instant::now();
            let deadline = gathering + max_wait;
            let mut batch = vec![first];
            while batch.len() < max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match requests.recv_timeout(left) {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            (batch, gathering)
        };
        let done_by = Instant::now() + Duration::from_micros(last.0.load(Ordering::Relaxed));
        let (expired, batch): (Vec<Request>, Vec<Request>) = batch
            .into_iter()
            .partition(|r| r.expires.is_some_and(|at| at <= done_by));
        if !expired.is_empty() {
            gst::debug!(
                CAT,
                "{} frames expired before their batch ran",
                expired.len()
            );
            stats
                .expired
                .fetch_add(expired.len() as u64, Ordering::Relaxed);
            for r in expired {
                let _ = r.reply.send(Err(Unanswered::Expired));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let slot = models
            .iter()
            .position(|(s, _)| !pad || *s >= batch.len())
            .unwrap_or(models.len() - 1);
        let (shape, model) = &mut models[slot];
        let shape = if pad { *shape } else { batch.len() };
        let frames: Vec<FrameInput> = batch
            .iter()
            .map(|r| FrameInput {
                mel: &r.mel,
                crop: &r.crop,
            })
            .collect();
        let compose: Vec<Option<&ComposeJob>> = batch.iter().map(|r| r.compose.as_ref()).collect();
        let started = Instant::now();
        let on_gpu = model.face_inputs_on_gpu();
        let submitted = model.submit_composing(shape, &frames, &compose);
        if on_gpu && !model.face_inputs_on_gpu() {
            // Said once per session: from now on its inputs are built on the CPU.
            gst::warning!(
                CAT,
                "batch shape {shape}: face inputs {}",
                model.face_inputs()
            );
        }
        drop((frames, compose));
        let handed = Handed {
            batch,
            submitted,
            shape,
            gathering,
            started,
        };
        if answerer.send(handed).is_err() {
            // The answerer is gone (it panicked): no frame would be answered.
            return;
        }
    }
}

/// The answerer: waits for each batch handed over, counts it, and answers its frames.
fn answer_batches(handed: mpsc::Receiver<Handed>, stats: &BatchStats, last: &LastBatch) {
    for Handed {
        batch,
        submitted,
        shape,
        gathering,
        started,
    } in handed
    {
        let result = submitted.and_then(Submitted::wait_all);
        let took = started.elapsed();
        last.0.store(took.as_micros() as u64, Ordering::Relaxed);
        let times = result
            .as_ref()
            .map(|(_, _, times)| *times)
            .unwrap_or_default();
        gst::debug!(
            CAT,
            "batch of {} (shape {shape}): oldest frame queued {:?} before, gathered in {:?}, done in {:?} (on the GPU {:?})",
            batch.len(),
            started.duration_since(batch[0].submitted),
            started.duration_since(gathering),
            took,
            times.gpu,
        );
        // Counted before the frames are answered: whoever reads the counters after an answer
        // finds its batch in them. The model's time is the GPU's where the batch was queued on
        // a lane (batches there overlap the host's work, not each other), else all of it.
        let model_time = if times.gpu.is_zero() { took } else { times.gpu };
        stats
            .inference_us
            .fetch_add(model_time.as_micros() as u64, Ordering::Relaxed);
        for (counter, part) in [
            (&stats.fill_us, times.fill),
            (&stats.model_us, times.model),
            (&stats.read_us, times.read),
            (&stats.gpu_us, times.gpu),
        ] {
            counter.fetch_add(part.as_micros() as u64, Ordering::Relaxed);
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .frames
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        match result {
            // Every frame's answer shares the batch's outputs, where they landed; a frame
            // composed on the GPU comes with it.
            Ok((outputs, composed, _)) => {
                let made = composed.iter().filter(|f| f.is_some()).count();
                stats.composed.fetch_add(made as u64, Ordering::Relaxed);
                let mut composed = composed.into_iter();
                for (r, output) in batch.iter().zip(outputs.frames(batch.len())) {
                    let frame = composed.next().flatten();
                    let _ = r.reply.send(Ok(Answer { output, frame }));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for r in batch {
                    let _ = r.reply.send(Err(Unanswered::Failed(message.clone())));
                }
            }
        }
    }
}

/// Both threads of worker `index`, started: "wav2lip-0" gathers, "wav2lip-ans-0" answers
/// (thread names are cut at 15 bytes).
/// The gatherer first hands its models to `warm_up`, on its own thread: on a GPU, ONNX
/// Runtime makes its per-thread state (cuDNN and cuBLAS handles) on a thread's first run.
pub(crate) fn start(
    index: usize,
    models: Vec<(usize, Wav2LipModel)>,
    warm_up: impl FnOnce(&mut [(usize, Wav2LipModel)]) + Send + 'static,
    how: Batching,
) -> std::io::Result<()> {
    let last = Arc::new(LastBatch::default());
    let (to_answerer, handed) = mpsc::sync_channel(0);
    {
        let (stats, last) = (how.stats.clone(), last.clone());
        std::thread::Builder::new()
            .name(format!("wav2lip-ans-{index}"))
            .spawn(move || answer_batches(handed, &stats, &last))?;
    }
    std::thread::Builder::new()
        .name(format!("wav2lip-{index}"))
        .spawn(move || {
            let mut models = models;
            warm_up(&mut models);
            gather_batches(models, &how, &last, to_answerer)
        })?;
    Ok(())
}
