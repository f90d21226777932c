use crate::silero::{SileroModel, SileroStream, FRAME, MODEL_FILE, SAMPLE_RATE};
use crate::turns::{Turn, TurnRules, TurnTracker};
use facecast_common::UserSpeechEvent;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new("vad", gst::DebugColorFlags::empty(), Some("facecast vad"))
});

const DEFAULT_THRESHOLD: f32 = 0.5;
const DEFAULT_MIN_SPEECH_MS: u32 = 150;
const DEFAULT_END_SILENCE_MS: u32 = 600;
const DEFAULT_PRE_ROLL_MS: u32 = 300;

#[derive(Debug, Clone)]
struct Settings {
    model: String,
    threshold: f32,
    min_speech_ms: u32,
    end_silence_ms: u32,
    pre_roll_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: MODEL_FILE.into(),
            threshold: DEFAULT_THRESHOLD,
            min_speech_ms: DEFAULT_MIN_SPEECH_MS,
            end_silence_ms: DEFAULT_END_SILENCE_MS,
            pre_roll_ms: DEFAULT_PRE_ROLL_MS,
        }
    }
}

impl Settings {
    fn rules(&self) -> TurnRules {
        TurnRules {
            threshold: self.threshold,
            min_speech: gst::ClockTime::from_mseconds(self.min_speech_ms as u64),
            end_silence: gst::ClockTime::from_mseconds(self.end_silence_ms as u64),
        }
    }
}

/// The stream being listened to.
struct State {
    model: SileroStream,
    tracker: TurnTracker,
    /// Samples not yet a whole frame, and the time of the first of them.
    pending: Vec<f32>,
    pending_at: Option<gst::ClockTime>,
    /// The first sample's time: the pre-roll never reaches before it.
    first: Option<gst::ClockTime>,
}

#[derive(Default)]
pub struct Vad {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for Vad {
    const NAME: &'static str = "FacecastVad";
    type Type = super::Vad;
    type ParentType = gst_base::BaseTransform;
}

fn frame_duration() -> gst::ClockTime {
    gst::ClockTime::from_nseconds(FRAME as u64 * 1_000_000_000 / SAMPLE_RATE as u64)
}

impl Vad {
    /// Announces a turn decision downstream (before the audio that follows) and on the bus.
    fn announce(&self, turn: Turn, first: gst::ClockTime) {
        let pre_roll =
            gst::ClockTime::from_mseconds(self.settings.lock().unwrap().pre_roll_ms as u64);
        let event = match turn {
            Turn::Possible { start } => UserSpeechEvent::Possible { start },
            Turn::Dismissed { start } => UserSpeechEvent::Dismissed { start },
            Turn::Started { start } => UserSpeechEvent::Started {
                start,
                from: start.saturating_sub(pre_roll).max(first),
            },
            Turn::Ended { start, end } => UserSpeechEvent::Ended { start, end },
        };
        gst::debug!(CAT, imp = self, "{event:?}");
        let confirmed = matches!(turn, Turn::Started { .. } | Turn::Ended { .. });
        let obj = self.obj();
        // The bus first: an application interrupting on it (barge-in) must not wait for
        // whatever downstream does with the event (a recogniser starting up, say).
        let _ = obj.post_message(
            gst::message::Element::builder(event.structure())
                .src(&*obj)
                .build(),
        );
        obj.src_pad().push_event(event.to_event());
        if confirmed {
            obj.notify("speaking");
        }
    }

    /// A gap in the stream (a GAP event: lost packets, a silent sender): silence from `at`.
    fn silence(&self, at: gst::ClockTime, duration: gst::ClockTime) {
        if duration.is_zero() {
            return;
        }
        let rules = self.settings.lock().unwrap().rules();
        let decided = self.state.lock().unwrap().as_mut().and_then(|s| {
            s.pending.clear();
            s.pending_at = Some(at + duration);
            let first = *s.first.get_or_insert(at);
            s.tracker
                .frame(&rules, at, duration, 0.0)
                .map(|t| (t, first))
        });
        if let Some((turn, first)) = decided {
            self.announce(turn, first);
        }
    }

    /// Ends an open turn where the stream stops (EOS, flush).
    fn finish(&self) {
        let decided = self.state.lock().unwrap().as_mut().and_then(|s| {
            let at = s.pending_at.unwrap_or(gst::ClockTime::ZERO);
            s.pending.clear();
            s.pending_at = None;
            s.model.reset();
            let first = s.first.unwrap_or(at);
            s.tracker.finish(at).map(|t| (t, first))
        });
        if let Some((turn, first)) = decided {
            self.announce(turn, first);
        }
    }
}

impl ObjectImpl for Vad {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("Silero VAD v5/v6 ONNX model: a path, or a file name in the models folder (FACECAST_MODELS_DIR, else ./models)")
                    .default_value(Some(MODEL_FILE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecFloat::builder("threshold")
                    .nick("Threshold")
                    .blurb("Speech probability at or above which a frame is speech (silence below threshold - 0.15)")
                    .minimum(0.15)
                    .maximum(1.0)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("min-speech-ms")
                    .nick("Minimum speech")
                    .blurb("Speech needed before a turn is confirmed (shorter sounds are ignored)")
                    .maximum(10_000)
                    .default_value(DEFAULT_MIN_SPEECH_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("end-silence-ms")
                    .nick("End-of-turn silence")
                    .blurb("Silence after which a turn has ended")
                    .minimum(32)
                    .maximum(60_000)
                    .default_value(DEFAULT_END_SILENCE_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("pre-roll-ms")
                    .nick("Pre-roll")
                    .blurb("Audio before the detected start that belongs to the utterance (announced as the event's 'from')")
                    .maximum(5_000)
                    .default_value(DEFAULT_PRE_ROLL_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("speaking")
                    .nick("Speaking")
                    .blurb("Whether a confirmed turn of speech is open")
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "model" => s.model = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "threshold" => s.threshold = value.get().unwrap(),
            "min-speech-ms" => s.min_speech_ms = value.get().unwrap(),
            "end-silence-ms" => s.end_silence_ms = value.get().unwrap(),
            "pre-roll-ms" => s.pre_roll_ms = value.get().unwrap(),
            _ => unreachable!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "model" => s.model.to_value(),
            "threshold" => s.threshold.to_value(),
            "min-speech-ms" => s.min_speech_ms.to_value(),
            "end-silence-ms" => s.end_silence_ms.to_value(),
            "pre-roll-ms" => s.pre_roll_ms.to_value(),
            "speaking" => {
                drop(s);
                self.state
                    .lock()
                    .unwrap()
                    .as_ref()
                    .is_some_and(|st| st.tracker.speaking())
                    .to_value()
            }
            _ => unreachable!(),
        }
    }
}

impl GstObjectImpl for Vad {}

impl ElementImpl for Vad {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Voice activity detector",
                "Filter/Analyzer/Audio",
                "Marks where a person starts and stops speaking (Silero VAD), with events and bus messages",
                "facecast developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AudioFormat::S16le)
                .rate(SAMPLE_RATE as i32)
                .channels(1)
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for Vad {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let name = self.settings.lock().unwrap().model.clone();
        let path = facecast_onnx::find_model(name.as_ref(), &facecast_onnx::models_dir());
        let model = SileroModel::load(&path)
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ("{e}")))?;
        *self.state.lock().unwrap() = Some(State {
            model: SileroStream::new(model),
            tracker: TurnTracker::default(),
            pending: Vec::with_capacity(FRAME),
            pending_at: None,
            first: None,
        });
        self.obj().set_passthrough(true);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Eos(_) | gst::EventView::FlushStop(_) => self.finish(),
            gst::EventView::Gap(gap) => {
                let (at, duration) = gap.get();
                self.silence(at, duration.unwrap_or(gst::ClockTime::ZERO));
            }
            _ => (),
        }
        self.parent_sink_event(event)
    }

    fn transform_ip_passthrough(
        &self,
        buffer: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let rules = self.settings.lock().unwrap().rules();
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let mut decided = Vec::new();
        {
            let mut guard = self.state.lock().unwrap();
            let state = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            let pts = buffer.pts();
            // Timestamps come from the buffers; between them, from the sample count.
            if let Some(pts) = pts {
                let expected = state.pending_at.map(|at| {
                    at + gst::ClockTime::from_nseconds(
                        state.pending.len() as u64 * 1_000_000_000 / SAMPLE_RATE as u64,
                    )
                });
                let jumped = expected.is_none_or(|e| e.absdiff(pts) > frame_duration());
                if jumped || buffer.flags().contains(gst::BufferFlags::DISCONT) {
                    // Nothing arrived for a while (Opus DTX sends a packet every 400 ms in
                    // silence, a lost burst leaves a hole): that time was not speech.
                    if let Some(e) = expected.filter(|&e| pts > e) {
                        if let Some(turn) = state.tracker.frame(&rules, e, pts - e, 0.0) {
                            decided.push((turn, state.first.unwrap_or(e)));
                        }
                    }
                    state.pending.clear();
                    state.pending_at = Some(pts);
                }
                state.first.get_or_insert(pts);
            } else if state.pending_at.is_none() {
                state.pending_at = Some(gst::ClockTime::ZERO);
                state.first.get_or_insert(gst::ClockTime::ZERO);
            }
            let first = state.first.unwrap_or_default();
            for pair in map.chunks_exact(2) {
                state
                    .pending
                    .push(i16::from_le_bytes([pair[0], pair[1]]) as f32 / 32768.0);
                if state.pending.len() < FRAME {
                    continue;
                }
                let frame: &[f32; FRAME] = state.pending[..].try_into().unwrap();
                let p = state.model.probability(frame).map_err(|e| {
                    gst::element_imp_error!(self, gst::StreamError::Failed, ("{e}"));
                    gst::FlowError::Error
                })?;
                let at = state.pending_at.unwrap_or_default();
                if let Some(turn) = state.tracker.frame(&rules, at, frame_duration(), p) {
                    decided.push((turn, first));
                }
                state.pending.clear();
                state.pending_at = Some(at + frame_duration());
            }
        }
        for (turn, first) in decided {
            self.announce(turn, first);
        }
        Ok(gst::FlowSuccess::Ok)
    }
}
