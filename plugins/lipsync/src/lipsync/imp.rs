use super::EngineKind;
use crate::engine::viseme::VisemeEngine;
use crate::engine::wav2lip::Wav2LipEngine;
use crate::engine::{FrameJob, LipSyncEngine, PendingFrame, Rendered};
use crate::timeline::{AudioTimeline, PhonemeTimeline, TimedViseme};
use crate::wav2lip_batcher::{self, ModelIoKey, ModelKey, DEFAULT_GPU_FRAMES_MB};
use facecast_avatars::store::AvatarStore;
use facecast_common::{EmotionEvent, ExpressionBlender, FaceInfo, PhonemeEvent};
use facecast_onnx::{find_model, models_dir, Device};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "lipsync",
        gst::DebugColorFlags::empty(),
        Some("facecast lip-sync aggregator"),
    )
});

/// Phonemes are kept this long after they end (co-articulation looks back a little).
const PHONEME_HISTORY: gst::ClockTime = gst::ClockTime::from_mseconds(500);

const DEFAULT_DEVICE: &str = "cpu";
const DEFAULT_BATCH_SIZE: u32 = 4;
const DEFAULT_BATCH_WAIT_MS: u32 = 8;
/// Live: how long past its due time a frame may still come from the engine before the previous
/// frame is shown instead (0: always wait; see `frame_deadline`). Off by default: a slow engine
/// then delays the stream rather than freezing the face, until a user chooses otherwise.
const DEFAULT_FRAME_BUDGET_MS: u32 = 0;

/// Posted (at most once per run of failures) when the engine fails a frame and the previous
/// frame is shown instead: field `message`.
pub const LIPSYNC_ERROR_MESSAGE: &str = "facecast/lipsync-error";

#[derive(Debug, Clone)]
struct Settings {
    engine: EngineKind,
    model: Option<String>,
    device: String,
    batch_size: u32,
    batch_wait_ms: u32,
    frame_budget_ms: u32,
    threads: u32,
    workers: u32,
    gpu_frames_mb: u32,
    mel_input: String,
    face_input: String,
    output: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            engine: EngineKind::default(),
            model: None,
            device: DEFAULT_DEVICE.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            batch_wait_ms: DEFAULT_BATCH_WAIT_MS,
            frame_budget_ms: DEFAULT_FRAME_BUDGET_MS,
            threads: 0,
            workers: 1,
            gpu_frames_mb: DEFAULT_GPU_FRAMES_MB as u32,
            mel_input: "mel".into(),
            face_input: "face".into(),
            output: "output".into(),
        }
    }
}

impl Settings {
    /// The engine these settings ask for; a neural engine's model is loaded (once per process).
    fn make_engine(&self) -> Result<Box<dyn LipSyncEngine>, String> {
        match self.engine {
            EngineKind::Viseme => Ok(Box::new(VisemeEngine::new())),
            EngineKind::Wav2lip => {
                let model = self.model.as_deref().ok_or(
                    "engine=wav2lip needs a model: set model=PATH (a Wav2Lip-class ONNX file; see README)",
                )?;
                let device: Device = self.device.parse()?;
                let mut key = ModelKey::new(
                    &find_model(std::path::Path::new(model), &models_dir()),
                    device,
                    self.batch_size,
                    self.batch_wait_ms,
                    self.threads,
                );
                key.workers = self.workers.max(1) as usize;
                key.gpu_frames_mb = self.gpu_frames_mb as usize;
                key.io = ModelIoKey {
                    mel: self.mel_input.clone(),
                    face: self.face_input.clone(),
                    output: self.output.clone(),
                };
                let shared = wav2lip_batcher::shared(&key).map_err(|e| e.to_string())?;
                for note in &shared.inferred_names {
                    gst::info!(CAT, "model {}: {note}", key.path.display());
                }
                Ok(Box::new(Wav2LipEngine::new(shared, AvatarStore::global())))
            }
        }
    }
}

struct State {
    audio_info: Option<gst_audio::AudioInfo>,
    video_info: Option<gst_video::VideoInfo>,
    audio: Option<AudioTimeline>,
    phonemes: PhonemeTimeline,
    /// Running time of output frame 0: where the audio (or, live, the video) started.
    origin: Option<gst::ClockTime>,
    next_frame: u64,
    /// The avatar frame the next output frame starts from.
    current_video: Option<gst::Buffer>,
    engine: Box<dyn LipSyncEngine>,
    /// Frames handed to the engine and not yet pushed, oldest first.
    pending: VecDeque<Queued>,
    expression: ExpressionBlender,
    warned_no_pose: bool,
    /// The last frame pushed: shown again for a frame that is late or failed.
    last_output: Option<gst::Buffer>,
    /// Frames shown again instead of their own (late or failed), since start.
    frames_repeated: u64,
    /// In a run of failed frames (one message per run).
    failing: bool,
}

/// A frame handed to the engine.
struct Queued {
    n: u64,
    start: gst::ClockTime,
    duration: gst::ClockTime,
    /// When it was handed over (for the log).
    queued_at: std::time::Instant,
    /// Live with a frame budget: when it must be ready (else the previous frame is shown).
    deadline: Option<std::time::Instant>,
    /// The avatar frame it starts from: shown unchanged if it fails before any frame was pushed.
    avatar: gst::Buffer,
    frame: PendingFrame,
}

impl State {
    fn new(engine: Box<dyn LipSyncEngine>) -> Self {
        Self {
            audio_info: None,
            video_info: None,
            audio: None,
            phonemes: PhonemeTimeline::default(),
            origin: None,
            next_frame: 0,
            current_video: None,
            engine,
            pending: VecDeque::new(),
            expression: ExpressionBlender::default(),
            warned_no_pose: false,
            last_output: None,
            frames_repeated: 0,
            failing: false,
        }
    }
}

fn frame_offset(n: u64, fps: gst::Fraction) -> gst::ClockTime {
    gst::ClockTime::SECOND
        .mul_div_floor(n * fps.denom() as u64, fps.numer() as u64)
        .unwrap_or_default()
}

/// Live: how long a frame ending at running time `end` may still be waited for, given the
/// pipeline clock's `now`, its `base_time`, the element's whole `latency` and the frame
/// `budget`. A frame is due when the aggregator would have timed out on it (its end plus the
/// latency); the budget is the time past that the engine is given. Counting from the due time
/// rather than from the hand-over matters when the element falls behind: a frame handed over
/// already late gets no wait at all, so the stream catches up instead of every frame waiting a
/// whole budget (which caps it at 1000/budget fps for good).
fn frame_deadline(
    now: gst::ClockTime,
    base_time: gst::ClockTime,
    end: gst::ClockTime,
    latency: gst::ClockTime,
    budget: gst::ClockTime,
) -> std::time::Duration {
    let due = base_time + end + latency + budget;
    std::time::Duration::from_nanos(due.saturating_sub(now).nseconds())
}

/// What a live frame's deadline is reckoned from: the pipeline clock and base time, the
/// element's latency and the frame budget. `None` offline or without a budget.
struct DeadlineClock {
    clock: gst::Clock,
    base_time: gst::ClockTime,
    latency: gst::ClockTime,
    budget: gst::ClockTime,
}

impl DeadlineClock {
    /// The instant by which a frame ending at running time `end` must be ready.
    fn deadline(&self, end: gst::ClockTime) -> std::time::Instant {
        std::time::Instant::now()
            + frame_deadline(
                self.clock.time(),
                self.base_time,
                end,
                self.latency,
                self.budget,
            )
    }
}

fn running_time(
    pad: &gst_base::AggregatorPad,
    pts: Option<gst::ClockTime>,
) -> Option<gst::ClockTime> {
    let segment = pad.segment();
    let segment = segment.downcast_ref::<gst::ClockTime>()?;
    segment.to_running_time(pts?)
}

pub struct LipSync {
    audio_pad: gst_base::AggregatorPad,
    video_pad: gst_base::AggregatorPad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

/// What `aggregate` decided about the next output frame.
enum Next {
    /// Handed to the engine (done or pending).
    Queued,
    Wait,
    Eos,
}

/// Stamps a finished frame with its place in the output.
fn stamp(
    mut buffer: gst::Buffer,
    n: u64,
    start: gst::ClockTime,
    duration: gst::ClockTime,
) -> gst::Buffer {
    let b = buffer.make_mut();
    b.set_pts(start);
    b.set_dts(gst::ClockTime::NONE);
    b.set_duration(duration);
    b.set_offset(n);
    b.set_offset_end(n + 1);
    if n == 0 {
        b.set_flags(gst::BufferFlags::DISCONT);
    } else {
        b.unset_flags(gst::BufferFlags::DISCONT);
    }
    buffer
}

impl LipSync {
    /// Adds one audio buffer to the timeline, as mono f32.
    fn take_audio(&self, buffer: &gst::Buffer) -> Result<(), gst::FlowError> {
        let mut state = self.state.lock().unwrap();
        let Some(info) = state.audio_info.clone() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("audio buffer before audio caps")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        let Some(at) = running_time(&self.audio_pad, buffer.pts())
            .or_else(|| state.audio.as_ref().and_then(|a| a.end()))
        else {
            gst::debug!(CAT, imp = self, "audio buffer outside the segment, dropped");
            return Ok(());
        };
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let channels = info.channels() as usize;
        let mono: Vec<f32> = match info.format() {
            gst_audio::AudioFormat::S16le => map
                .chunks_exact(2 * channels)
                .map(|f| {
                    f.chunks_exact(2)
                        .map(|s| i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0)
                        .sum::<f32>()
                        / channels as f32
                })
                .collect(),
            gst_audio::AudioFormat::F32le => map
                .chunks_exact(4 * channels)
                .map(|f| {
                    f.chunks_exact(4)
                        .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]]))
                        .sum::<f32>()
                        / channels as f32
                })
                .collect(),
            other => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    ("unsupported audio format {other:?}")
                );
                return Err(gst::FlowError::NotNegotiated);
            }
        };
        let rate = info.rate();
        let timeline = state.audio.get_or_insert_with(|| AudioTimeline::new(rate));
        timeline.append(at, &mono);
        if state.origin.is_none() {
            state.origin = Some(at);
            gst::debug!(CAT, imp = self, "output time starts at {at}");
        }
        gst::log!(CAT, imp = self, "audio {} samples at {at}", mono.len());
        Ok(())
    }

    /// Live with a frame budget: how frames' deadlines are found (read before the state is
    /// locked: it asks the element and its clock).
    fn deadline_clock(&self) -> Option<DeadlineClock> {
        let budget = self.settings.lock().unwrap().frame_budget_ms;
        if budget == 0 {
            return None;
        }
        let obj = self.obj();
        Some(DeadlineClock {
            clock: obj.clock()?,
            base_time: obj.base_time()?,
            latency: obj.latency()?,
            budget: gst::ClockTime::from_mseconds(budget as u64),
        })
    }

    /// Decides and, when possible, draws the next output frame.
    fn next_frame(&self, timeout: bool) -> Result<Next, gst::FlowError> {
        let deadlines = self.deadline_clock();
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        let Some(video_info) = state.video_info.clone() else {
            if self.video_pad.is_eos() {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("the video pad ended before any avatar frame arrived")
                );
                return Err(gst::FlowError::Error);
            }
            return Ok(Next::Wait);
        };
        let fps = video_info.fps();
        if fps.numer() <= 0 {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("the avatar video needs a fixed, non-zero framerate")
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        let audio_eos = self.audio_pad.is_eos() && !self.audio_pad.has_buffer();

        if state.origin.is_none() {
            if timeout {
                // Live, and no audio yet: start the clock with the avatar.
                let first = self
                    .video_pad
                    .peek_buffer()
                    .and_then(|b| running_time(&self.video_pad, b.pts()));
                state.origin = Some(first.unwrap_or(gst::ClockTime::ZERO));
            } else if audio_eos {
                return Ok(Next::Eos);
            } else {
                return Ok(Next::Wait);
            }
        }
        let origin = state.origin.unwrap();
        let n = state.next_frame;
        let start = origin + frame_offset(n, fps);
        let end = origin + frame_offset(n + 1, fps);
        let lookahead = state.engine.lookahead();

        if timeout {
            // Live and late: whatever audio has not arrived by now is silence.
            gst::debug!(
                CAT,
                imp = self,
                "audio late for frame {n} at {start}: drawn as silence"
            );
            let audio = state.audio.get_or_insert_with(|| AudioTimeline::new(16000));
            if audio.start().is_none() {
                audio.append(origin, &[]);
            }
            audio.extend_silence_to(end + lookahead);
        }
        let audio_end = state.audio.as_ref().and_then(|a| a.end());
        let ready = match audio_end {
            Some(ae) => end + lookahead <= ae || (audio_eos && start < ae),
            None => false,
        };
        if !ready {
            if audio_eos {
                return Ok(Next::Eos);
            }
            return Ok(Next::Wait);
        }

        // The avatar frame: the latest one at or before this frame's start.
        loop {
            match self.video_pad.peek_buffer() {
                Some(b) => {
                    let rt = running_time(&self.video_pad, b.pts());
                    if state.current_video.is_none() || rt.is_none_or(|rt| rt <= start) {
                        self.video_pad.drop_buffer();
                        state.current_video = Some(b);
                        continue;
                    }
                    break;
                }
                None => {
                    let Some(current) = &state.current_video else {
                        if self.video_pad.is_eos() {
                            gst::element_imp_error!(
                                self,
                                gst::StreamError::Failed,
                                ("the video pad ended before any avatar frame arrived")
                            );
                            return Err(gst::FlowError::Error);
                        }
                        return Ok(Next::Wait);
                    };
                    // Without a newer frame queued, the current one is only known to be the
                    // right one if it still covers this time (or no newer one can come).
                    let covers = running_time(&self.video_pad, current.pts())
                        .zip(current.duration())
                        .is_some_and(|(rt, d)| start < rt + d);
                    if !covers && !self.video_pad.is_eos() && !timeout {
                        return Ok(Next::Wait);
                    }
                    break;
                }
            }
        }
        let video = state.current_video.clone().expect("selected above");
        let needs_pose = state.engine.name() == "viseme";
        let has_face = FaceInfo::from_buffer(&video);
        let unusable = if needs_pose {
            has_face.and_then(|f| f.pose).is_none()
        } else {
            has_face.is_none()
        };
        if !state.warned_no_pose && unusable {
            state.warned_no_pose = true;
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                (
                    "{}; engine={} leaves them unchanged",
                    if needs_pose {
                        "the avatar frames were not drawn by avatarsrc's parametric renderer (use engine=wav2lip for photo and video avatars)"
                    } else {
                        "the avatar frames carry no face meta (register the avatar, or put a face region-of-interest meta on them)"
                    },
                    state.engine.name()
                )
            );
        }

        let duration = end - start;
        let expression = *state.expression.advance(duration.seconds_f32());
        let audio = state.audio.as_ref().expect("ready implies audio");
        let deadline = deadlines.as_ref().map(|d| d.deadline(end));
        let job = FrameJob {
            index: n,
            origin,
            start,
            duration,
            deadline,
            audio,
            phonemes: &state.phonemes,
            video: &video,
            video_info: &video_info,
            expression: &expression,
        };
        let rendered = state.engine.render(&job).map_err(|e| {
            gst::element_imp_error!(
                self,
                gst::StreamError::Failed,
                ("lip-sync engine failed: {e}")
            );
            gst::FlowError::Error
        })?;
        let pending = match rendered {
            Rendered::Done(output) => PendingFrame::new(move |_| Ok(*output)),
            Rendered::Pending(p) => p,
        };
        state.pending.push_back(Queued {
            n,
            start,
            duration,
            queued_at: std::time::Instant::now(),
            deadline,
            avatar: video,
            frame: pending,
        });
        state.next_frame += 1;
        let history = state.engine.history();
        if let Some(a) = state.audio.as_mut() {
            a.trim_before(start.saturating_sub(history));
        }
        state
            .phonemes
            .trim_before(start.saturating_sub(PHONEME_HISTORY));
        gst::log!(CAT, imp = self, "frame {n} at {start}");
        Ok(Next::Queued)
    }

    /// Waits for every frame handed to the engine and pushes them, in order. Live, a frame
    /// waits at most the frame budget: a late frame, like a failed one, is replaced by the
    /// previous frame (counted in `frames-repeated`), so the stream never stalls and one bad
    /// batch never ends it. Offline, frames are waited for, and a failure is an error.
    fn push_pending(&self) -> Result<(), gst::FlowError> {
        let live = self.obj().latency().is_some();
        loop {
            // The state is not locked while the engine finishes a frame.
            let Some(queued) = self.state.lock().unwrap().pending.pop_front() else {
                return Ok(());
            };
            let result = queued.frame.finish_by(queued.deadline);
            gst::trace!(
                CAT,
                imp = self,
                "frame {} answered {} ms after its hand-over",
                queued.n,
                queued.queued_at.elapsed().as_millis()
            );
            let buffer = match result {
                Ok(output) => {
                    let buffer = stamp(output.buffer, queued.n, queued.start, queued.duration);
                    let mut state = self.state.lock().unwrap();
                    state.last_output = Some(buffer.clone());
                    state.failing = false;
                    buffer
                }
                Err(e) if !live => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Failed,
                        ("lip-sync engine failed: {e}")
                    );
                    return Err(gst::FlowError::Error);
                }
                Err(e) => {
                    let mut state = self.state.lock().unwrap();
                    state.frames_repeated += 1;
                    if e.is_late() {
                        gst::debug!(CAT, imp = self, "frame {} late: repeated", queued.n);
                    } else {
                        gst::warning!(CAT, imp = self, "frame {} failed: {e}", queued.n);
                        if !state.failing {
                            state.failing = true;
                            let _ = self.obj().post_message(
                                gst::message::Element::builder(
                                    gst::Structure::builder(LIPSYNC_ERROR_MESSAGE)
                                        .field("message", format!("lip-sync engine failed: {e}"))
                                        .build(),
                                )
                                .src(&*self.obj())
                                .build(),
                            );
                        }
                    }
                    let previous = state.last_output.clone().unwrap_or(queued.avatar);
                    stamp(previous, queued.n, queued.start, queued.duration)
                }
            };
            self.obj().finish_buffer(buffer)?;
        }
    }

    fn is_full(&self) -> bool {
        let state = self.state.lock().unwrap();
        state.pending.len() >= state.engine.max_in_flight()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for LipSync {
    const NAME: &'static str = "GstFacecastLipSync";
    type Type = super::LipSync;
    type ParentType = gst_base::Aggregator;

    fn with_class(klass: &Self::Class) -> Self {
        let audio_pad = gst::PadBuilder::<gst_base::AggregatorPad>::from_template(
            &klass.pad_template("audio").unwrap(),
        )
        .name("audio")
        .build();
        let video_pad = gst::PadBuilder::<gst_base::AggregatorPad>::from_template(
            &klass.pad_template("video").unwrap(),
        )
        .name("video")
        .build();
        Self {
            audio_pad,
            video_pad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::new(Box::new(VisemeEngine::new()))),
        }
    }
}

impl ObjectImpl for LipSync {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder::<EngineKind>("engine")
                    .nick("Engine")
                    .blurb("How the talking face is made")
                    .default_value(EngineKind::default())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("engine=wav2lip: the ONNX model, a path or a file name in the models folder (FACECAST_MODELS_DIR, default ./models)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb("engine=wav2lip: where the model runs, cpu or cuda:N")
                    .default_value(Some(DEFAULT_DEVICE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb("engine=wav2lip: most frames per inference (shared by every lipsync using the same model)")
                    .minimum(1)
                    .maximum(256)
                    .default_value(DEFAULT_BATCH_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-wait")
                    .nick("Batch wait")
                    .blurb("engine=wav2lip: longest wait for more frames to fill a batch, in ms")
                    .maximum(10_000)
                    .default_value(DEFAULT_BATCH_WAIT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("frame-budget")
                    .nick("Frame budget")
                    .blurb("Live: ms past its due time (its end plus the pipeline latency) a frame may wait for the engine before the previous frame is shown instead (0 = wait, the default)")
                    .maximum(10_000)
                    .default_value(DEFAULT_FRAME_BUDGET_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-repeated")
                    .nick("Frames repeated")
                    .blurb("Live: frames shown again in place of one that was late or failed")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt::builder("threads")
                    .nick("Threads")
                    .blurb("engine=wav2lip on the CPU: inference threads (0 = one per core)")
                    .maximum(256)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("workers")
                    .nick("Workers")
                    .blurb("engine=wav2lip: batch workers of the shared model, each with its own copy of its sessions (with two on a GPU, one's host work overlaps the other's run)")
                    .minimum(1)
                    .maximum(2)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("gpu-frames")
                    .nick("GPU frames")
                    .blurb("engine=wav2lip on a GPU: MB of registered avatars' frames each worker keeps there to make output frames on the GPU (0 = make them on the CPU)")
                    .maximum(1 << 20)
                    .default_value(DEFAULT_GPU_FRAMES_MB as u32)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("mel-input")
                    .nick("Mel input name")
                    .blurb("engine=wav2lip: the model's mel input [N,1,80,16]")
                    .default_value(Some("mel"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("face-input")
                    .nick("Face input name")
                    .blurb("engine=wav2lip: the model's face input [N,6,96,96]")
                    .default_value(Some("face"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("output-name")
                    .nick("Output name")
                    .blurb("engine=wav2lip: the model's output [N,3,96,96]")
                    .default_value(Some("output"))
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        let text = || {
            value
                .get::<Option<String>>()
                .expect("type checked upstream")
        };
        match pspec.name() {
            "engine" => {
                settings.engine = value.get().expect("type checked upstream");
                gst::info!(CAT, imp = self, "engine set to {:?}", settings.engine);
            }
            "model" => settings.model = text(),
            "device" => settings.device = text().unwrap_or_else(|| DEFAULT_DEVICE.into()),
            "batch-size" => settings.batch_size = value.get().expect("type checked upstream"),
            "batch-wait" => settings.batch_wait_ms = value.get().expect("type checked upstream"),
            "frame-budget" => {
                settings.frame_budget_ms = value.get().expect("type checked upstream")
            }
            "threads" => settings.threads = value.get().expect("type checked upstream"),
            "workers" => settings.workers = value.get().expect("type checked upstream"),
            "gpu-frames" => settings.gpu_frames_mb = value.get().expect("type checked upstream"),
            "mel-input" => settings.mel_input = text().unwrap_or_else(|| "mel".into()),
            "face-input" => settings.face_input = text().unwrap_or_else(|| "face".into()),
            "output-name" => settings.output = text().unwrap_or_else(|| "output".into()),
            _ => unreachable!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "engine" => settings.engine.to_value(),
            "model" => settings.model.to_value(),
            "device" => settings.device.to_value(),
            "batch-size" => settings.batch_size.to_value(),
            "batch-wait" => settings.batch_wait_ms.to_value(),
            "frame-budget" => settings.frame_budget_ms.to_value(),
            "frames-repeated" => {
                drop(settings);
                self.state.lock().unwrap().frames_repeated.to_value()
            }
            "threads" => settings.threads.to_value(),
            "workers" => settings.workers.to_value(),
            "gpu-frames" => settings.gpu_frames_mb.to_value(),
            "mel-input" => settings.mel_input.to_value(),
            "face-input" => settings.face_input.to_value(),
            "output-name" => settings.output.to_value(),
            _ => unreachable!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.audio_pad).unwrap();
        obj.add_pad(&self.video_pad).unwrap();
    }
}

impl GstObjectImpl for LipSync {}

impl ElementImpl for LipSync {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Lip sync",
                "Filter/Effect/Video",
                "Makes an avatar's mouth follow speech: one frame per 1/fps of audio",
                "facecast developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let video = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgba)
                .build();
            let audio = gst_audio::AudioCapsBuilder::new_interleaved()
                .format_list([gst_audio::AudioFormat::S16le, gst_audio::AudioFormat::F32le])
                .rate_range(8000..=192_000)
                .channels_range(1..=8)
                .build();
            vec![
                gst::PadTemplate::with_gtype(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &video,
                    gst_base::AggregatorPad::static_type(),
                )
                .unwrap(),
                gst::PadTemplate::with_gtype(
                    "audio",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &audio,
                    gst_base::AggregatorPad::static_type(),
                )
                .unwrap(),
                gst::PadTemplate::with_gtype(
                    "video",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &video,
                    gst_base::AggregatorPad::static_type(),
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl AggregatorImpl for LipSync {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let engine = settings.make_engine().map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::OpenRead,
                ("cannot start engine {}: {e}", settings.engine.name())
            )
        })?;
        let state = State::new(engine);
        // Frames wait for this much audio after their end; live pipelines must budget for it.
        self.obj()
            .set_latency(state.engine.max_lookahead(), gst::ClockTime::NONE);
        *self.state.lock().unwrap() = state;
        gst::info!(CAT, imp = self, "started with engine {:?}", settings.engine);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = State::new(Box::new(VisemeEngine::new()));
        Ok(())
    }

    fn flush(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut state = self.state.lock().unwrap();
        state.audio = None;
        state.phonemes.clear();
        state.origin = None;
        state.next_frame = 0;
        state.current_video = None;
        state.pending.clear();
        state.engine.reset();
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, pad: &gst_base::AggregatorPad, event: gst::Event) -> bool {
        use gst::EventView;
        if pad == &self.audio_pad {
            match event.view() {
                EventView::Caps(c) => {
                    let caps = c.caps();
                    match gst_audio::AudioInfo::from_caps(caps) {
                        Ok(info) => {
                            gst::info!(CAT, imp = self, "audio caps {caps}");
                            let mut state = self.state.lock().unwrap();
                            if let Some(timeline) = state.audio.as_mut() {
                                if timeline.rate() != info.rate() {
                                    // Keep the time axis, restart the samples at the new rate.
                                    let end = timeline.end();
                                    let mut fresh = AudioTimeline::new(info.rate());
                                    if let Some(end) = end {
                                        fresh.append(end, &[]);
                                    }
                                    *timeline = fresh;
                                }
                            }
                            state.audio_info = Some(info);
                        }
                        Err(_) => {
                            gst::element_imp_error!(
                                self,
                                gst::CoreError::Negotiation,
                                ("cannot use audio caps {caps}")
                            );
                            return false;
                        }
                    }
                }
                EventView::CustomDownstream(_) => {
                    if let Some(parsed) = PhonemeEvent::parse(&event) {
                        match parsed {
                            Ok(p) => {
                                let start = running_time(pad, Some(p.pts));
                                if let Some(start) = start {
                                    gst::log!(
                                        CAT,
                                        imp = self,
                                        "phoneme {} ({}) at {start}",
                                        p.phoneme,
                                        p.viseme
                                    );
                                    self.state.lock().unwrap().phonemes.push(TimedViseme {
                                        start,
                                        end: start + p.duration,
                                        viseme: p.viseme,
                                    });
                                }
                            }
                            Err(e) => gst::warning!(CAT, imp = self, "ignoring {e}"),
                        }
                        return true;
                    }
                    if let Some(parsed) = EmotionEvent::parse(&event) {
                        match parsed {
                            Ok(e) => {
                                gst::debug!(
                                    CAT,
                                    imp = self,
                                    "emotion {} at {}",
                                    e.emotion,
                                    e.intensity
                                );
                                self.state
                                    .lock()
                                    .unwrap()
                                    .expression
                                    .set_target(e.emotion, e.intensity);
                            }
                            Err(e) => gst::warning!(CAT, imp = self, "ignoring {e}"),
                        }
                        return true;
                    }
                }
                EventView::Gap(g) => {
                    let (ts, dur) = g.get();
                    if let Some(end) = running_time(pad, Some(ts + dur.unwrap_or_default())) {
                        let mut state = self.state.lock().unwrap();
                        if state.origin.is_none() {
                            state.origin = running_time(pad, Some(ts));
                        }
                        let rate = state.audio_info.as_ref().map_or(16000, |i| i.rate());
                        let start = state.origin.unwrap_or(end);
                        let timeline = state.audio.get_or_insert_with(|| AudioTimeline::new(rate));
                        if timeline.start().is_none() {
                            timeline.append(start, &[]);
                        }
                        timeline.extend_silence_to(end);
                    }
                }
                _ => {}
            }
        } else if pad == &self.video_pad {
            if let EventView::Caps(c) = event.view() {
                let caps = c.caps();
                match gst_video::VideoInfo::from_caps(caps) {
                    Ok(info) => {
                        gst::info!(CAT, imp = self, "video caps {caps}");
                        self.state.lock().unwrap().video_info = Some(info);
                    }
                    Err(_) => {
                        gst::element_imp_error!(
                            self,
                            gst::CoreError::Negotiation,
                            ("cannot use video caps {caps}")
                        );
                        return false;
                    }
                }
            }
        }
        self.parent_sink_event(pad, event)
    }

    fn update_src_caps(&self, _caps: &gst::Caps) -> Result<gst::Caps, gst::FlowError> {
        // The output looks like the avatar video.
        self.video_pad
            .current_caps()
            .ok_or(gst_base::AGGREGATOR_FLOW_NEED_DATA)
    }

    fn next_time(&self) -> Option<gst::ClockTime> {
        let state = self.state.lock().unwrap();
        let fps = state.video_info.as_ref()?.fps();
        if fps.numer() <= 0 {
            return None;
        }
        let origin = match state.origin {
            Some(o) => o,
            None => self
                .video_pad
                .peek_buffer()
                .and_then(|b| running_time(&self.video_pad, b.pts()))?,
        };
        Some(origin + frame_offset(state.next_frame + 1, fps))
    }

    fn aggregate(&self, timeout: bool) -> Result<gst::FlowSuccess, gst::FlowError> {
        // One audio buffer per call: events queued behind it (phonemes, emotions) are handled
        // by the base class between calls, in stream order.
        if let Some(buffer) = self.audio_pad.pop_buffer() {
            self.take_audio(&buffer)?;
        }
        loop {
            if self.is_full() {
                self.push_pending()?;
            }
            match self.next_frame(timeout)? {
                Next::Queued => {
                    if timeout {
                        self.push_pending()?;
                        return Ok(gst::FlowSuccess::Ok);
                    }
                }
                Next::Wait => {
                    self.push_pending()?;
                    return Ok(gst::FlowSuccess::Ok);
                }
                Next::Eos => {
                    self.push_pending()?;
                    gst::debug!(CAT, imp = self, "audio ended: end of stream");
                    return Err(gst::FlowError::Eos);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::frame_deadline;
    use std::time::Duration;

    fn ms(v: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(v)
    }

    #[test]
    fn a_frame_waits_until_its_due_time_plus_the_budget() {
        // Frame ending at 1 s, 250 ms of latency, 100 ms budget: due at base + 1.35 s.
        let wait = frame_deadline(ms(5_000 + 1_300), ms(5_000), ms(1_000), ms(250), ms(100));
        assert_eq!(wait, Duration::from_millis(50));
        // Handed over early (audio came ahead of time): it may wait longer.
        let wait = frame_deadline(ms(5_000 + 800), ms(5_000), ms(1_000), ms(250), ms(100));
        assert_eq!(wait, Duration::from_millis(550));
    }

    #[test]
    fn a_frame_handed_over_after_its_due_time_gets_no_wait() {
        // The element fell 2 s behind: the frame is repeated at once unless already done, so
        // the stream catches up instead of waiting a whole budget per frame.
        let wait = frame_deadline(ms(5_000 + 3_350), ms(5_000), ms(1_000), ms(250), ms(100));
        assert_eq!(wait, Duration::ZERO);
    }
}
