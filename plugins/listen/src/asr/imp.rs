use super::openai::{OpenaiRecognizer, OpenaiSettings};
use super::pocketsphinx::PocketsphinxRecognizer;
use super::utterance::{samples_to_time, Collected, Utterances};
use super::{AsrEngine, ASR_ERROR_MESSAGE};
use facecast_common::{TranscriptEvent, UserSpeechEvent};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::Duration;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new("asr", gst::DebugColorFlags::empty(), Some("facecast asr"))
});

const DEFAULT_MODEL: &str = "whisper-1";
const DEFAULT_LANGUAGE: &str = "en";
const DEFAULT_TIMEOUT_MS: u32 = 15_000;
const DEFAULT_MAX_UTTERANCE_SECS: u32 = 30;

#[derive(Debug, Clone)]
struct Settings {
    engine: AsrEngine,
    base_url: Option<String>,
    model: String,
    api_key: Option<String>,
    language: String,
    timeout_ms: u32,
    max_utterance_secs: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            engine: AsrEngine::default(),
            base_url: None,
            model: DEFAULT_MODEL.into(),
            api_key: None,
            language: DEFAULT_LANGUAGE.into(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_utterance_secs: DEFAULT_MAX_UTTERANCE_SECS,
        }
    }
}

/// What a recogniser heard.
pub type Heard = TranscriptEvent;

/// Where recognisers deliver results, from whatever thread they run on: posted on the bus at
/// once, and queued for the streaming thread to send downstream in order.
#[derive(Clone)]
pub struct Report(Arc<ReportInner>);

struct ReportInner {
    element: glib::WeakRef<super::Asr>,
    queue: Mutex<Delivered>,
    changed: Condvar,
}

#[derive(Default)]
struct Delivered {
    events: Vec<TranscriptEvent>,
    /// Turns sent to a recogniser whose final result has not come back.
    outstanding: usize,
    /// The element is stopping: nobody waits for those results any more.
    abandoned: bool,
}

impl Report {
    fn new(element: &super::Asr) -> Self {
        Report(Arc::new(ReportInner {
            element: element.downgrade(),
            queue: Mutex::new(Delivered::default()),
            changed: Condvar::new(),
        }))
    }

    fn post(&self, structure: gst::Structure) {
        if let Some(element) = self.0.element.upgrade() {
            let _ = element.post_message(
                gst::message::Element::builder(structure)
                    .src(&element)
                    .build(),
            );
        }
    }

    /// A partial result: on the bus and downstream, replaced by a later one.
    pub fn partial(&self, heard: Heard) {
        self.post(heard.structure());
        self.0.queue.lock().unwrap().events.push(heard);
    }

    /// The final result of a turn sent to the recogniser (or why there is none).
    pub fn deliver(&self, result: Result<Heard, String>) {
        match result {
            Ok(heard) => {
                if let Some(element) = self.0.element.upgrade() {
                    gst::debug!(CAT, obj = element, "heard {:?}", heard.text);
                }
                self.post(heard.structure());
                self.0.queue.lock().unwrap().events.push(heard);
            }
            Err(message) => {
                if let Some(element) = self.0.element.upgrade() {
                    gst::element_warning!(
                        element,
                        gst::ResourceError::Read,
                        ("speech recognition failed: {message}")
                    );
                }
                self.post(
                    gst::Structure::builder(ASR_ERROR_MESSAGE)
                        .field("message", message.as_str())
                        .build(),
                );
            }
        }
        let mut q = self.0.queue.lock().unwrap();
        q.outstanding = q.outstanding.saturating_sub(1);
        self.0.changed.notify_all();
    }

    fn sent(&self) {
        self.0.queue.lock().unwrap().outstanding += 1;
    }

    fn take(&self) -> Vec<TranscriptEvent> {
        std::mem::take(&mut self.0.queue.lock().unwrap().events)
    }

    /// Waits (at most `limit`) until every turn sent has its result, or the element stops.
    fn drain(&self, limit: Duration) -> Vec<TranscriptEvent> {
        let q = self.0.queue.lock().unwrap();
        let (mut q, _) = self
            .0
            .changed
            .wait_timeout_while(q, limit, |q| q.outstanding > 0 && !q.abandoned)
            .unwrap();
        std::mem::take(&mut q.events)
    }

    /// Ends a [`Report::drain`] now: the element is stopping, and its streaming thread (which
    /// the stop waits for) must not sit out the recogniser's timeout.
    fn abandon(&self) {
        self.0.queue.lock().unwrap().abandoned = true;
        self.0.changed.notify_all();
    }
}

enum Recognizer {
    Openai(OpenaiRecognizer),
    Pocketsphinx(PocketsphinxRecognizer),
}

impl Recognizer {
    fn begin(&mut self, start: gst::ClockTime, samples: &[i16]) {
        match self {
            Recognizer::Openai(r) => r.begin(start, samples),
            Recognizer::Pocketsphinx(r) => r.begin(start, samples),
        }
    }
    fn audio(&mut self, samples: &[i16]) {
        match self {
            Recognizer::Openai(r) => r.audio(samples),
            Recognizer::Pocketsphinx(r) => r.audio(samples),
        }
    }
    fn end(&mut self, end: gst::ClockTime) -> bool {
        match self {
            Recognizer::Openai(r) => r.end(end),
            Recognizer::Pocketsphinx(r) => r.end(end),
        }
    }
}

struct State {
    recognizer: Recognizer,
    report: Report,
    utterances: Utterances,
    /// Where the next sample is, from the buffers' timestamps.
    next_at: gst::ClockTime,
    max_utterance: gst::ClockTime,
    timeout: Duration,
}

impl State {
    fn end_part(&mut self, end: gst::ClockTime) {
        if self.recognizer.end(end) {
            self.report.sent();
        }
    }
}

#[derive(Default)]
pub struct Asr {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for Asr {
    const NAME: &'static str = "FacecastAsr";
    type Type = super::Asr;
    type ParentType = gst_base::BaseTransform;
}

impl Asr {
    fn push_results(&self, events: Vec<TranscriptEvent>) {
        for e in events {
            self.obj().src_pad().push_event(e.to_event());
        }
    }

    fn on_speech(&self, event: UserSpeechEvent) {
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            return;
        };
        match event {
            UserSpeechEvent::Started { from, .. } => {
                if state.utterances.part_start().is_some() {
                    let at = state.next_at;
                    state.end_part(at);
                }
                let kept = state.utterances.open(from);
                let start = state.utterances.part_start().unwrap_or(from);
                state.recognizer.begin(start, &kept);
            }
            UserSpeechEvent::Ended { end, .. } => {
                if state.utterances.close().is_some() {
                    state.end_part(end);
                }
            }
            // Only confirmed turns are recognised.
            UserSpeechEvent::Possible { .. } | UserSpeechEvent::Dismissed { .. } => {}
        }
    }
}

impl ObjectImpl for Asr {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecEnum::builder_with_default("engine", AsrEngine::default())
                    .nick("Engine")
                    .blurb("The recogniser: pocketsphinx (offline US English) or openai (an OpenAI-compatible endpoint, base-url)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("base-url")
                    .nick("Base URL")
                    .blurb("openai: the endpoint up to /v1, e.g. http://127.0.0.1:8080/v1")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("openai: the model name the endpoint expects")
                    .default_value(Some(DEFAULT_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("api-key")
                    .nick("API key")
                    .blurb("openai: sent as a bearer token (unset: none)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("language")
                    .nick("Language")
                    .blurb("The language spoken (ISO 639-1, e.g. en)")
                    .default_value(Some(DEFAULT_LANGUAGE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("timeout-ms")
                    .nick("Timeout")
                    .blurb("openai: how long one recognition may take")
                    .minimum(100)
                    .maximum(600_000)
                    .default_value(DEFAULT_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-utterance-secs")
                    .nick("Longest utterance")
                    .blurb("A turn longer than this is cut here and recognised in parts")
                    .minimum(1)
                    .maximum(600)
                    .default_value(DEFAULT_MAX_UTTERANCE_SECS)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "engine" => s.engine = value.get().unwrap(),
            "base-url" => {
                s.base_url = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|u| !u.is_empty())
            }
            "model" => s.model = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "api-key" => {
                s.api_key = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|k| !k.is_empty())
            }
            "language" => s.language = value.get::<Option<String>>().unwrap().unwrap_or_default(),
            "timeout-ms" => s.timeout_ms = value.get().unwrap(),
            "max-utterance-secs" => s.max_utterance_secs = value.get().unwrap(),
            _ => unreachable!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "engine" => s.engine.to_value(),
            "base-url" => s.base_url.to_value(),
            "model" => s.model.to_value(),
            // A secret: never read back.
            "api-key" => None::<String>.to_value(),
            "language" => s.language.to_value(),
            "timeout-ms" => s.timeout_ms.to_value(),
            "max-utterance-secs" => s.max_utterance_secs.to_value(),
            _ => unreachable!(),
        }
    }
}

impl GstObjectImpl for Asr {}

impl ElementImpl for Asr {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Speech recogniser",
                "Filter/Analyzer/Audio",
                "Recognises each turn of speech vad marks (OpenAI-compatible endpoint or pocketsphinx), with transcript events and bus messages",
                "facecast developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AudioFormat::S16le)
                .rate(16_000)
                .channels(1)
                .build();
            ["sink", "src"]
                .into_iter()
                .map(|name| {
                    let direction = if name == "sink" {
                        gst::PadDirection::Sink
                    } else {
                        gst::PadDirection::Src
                    };
                    gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps).unwrap()
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        // Before the pads are deactivated, which waits for the streaming thread: that thread
        // may be waiting at an end of stream for transcripts (see `sink_event`).
        if transition == gst::StateChange::PausedToReady {
            if let Some(state) = self.state.lock().unwrap().as_ref() {
                state.report.abandon();
            }
        }
        self.parent_change_state(transition)
    }
}

impl BaseTransformImpl for Asr {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let s = self.settings.lock().unwrap().clone();
        let report = Report::new(&self.obj());
        let timeout = Duration::from_millis(s.timeout_ms as u64);
        let recognizer = match s.engine {
            AsrEngine::Openai => {
                let Some(base_url) = s.base_url.clone() else {
                    return Err(gst::error_msg!(
                        gst::LibraryError::Settings,
                        ("engine=openai needs base-url (the endpoint up to /v1)")
                    ));
                };
                Recognizer::Openai(OpenaiRecognizer::new(
                    OpenaiSettings {
                        base_url,
                        model: s.model.clone(),
                        api_key: s.api_key.clone(),
                        language: s.language.clone(),
                        timeout,
                    },
                    report.clone(),
                ))
            }
            AsrEngine::Pocketsphinx => {
                super::pocketsphinx::available()
                    .map_err(|e| gst::error_msg!(gst::CoreError::MissingPlugin, ("{e}")))?;
                Recognizer::Pocketsphinx(PocketsphinxRecognizer::new(
                    s.language.clone(),
                    report.clone(),
                ))
            }
        };
        gst::info!(CAT, imp = self, "recognising with {}", s.engine.name());
        *self.state.lock().unwrap() = Some(State {
            recognizer,
            report,
            utterances: Utterances::default(),
            next_at: gst::ClockTime::ZERO,
            max_utterance: gst::ClockTime::from_seconds(s.max_utterance_secs as u64),
            timeout,
        });
        self.obj().set_passthrough(true);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let Some(Ok(speech)) = UserSpeechEvent::parse(&event) {
            self.on_speech(speech);
        }
        if let gst::EventView::Eos(_) = event.view() {
            // Every turn heard gets its transcript before the stream ends.
            let drained = {
                let mut guard = self.state.lock().unwrap();
                guard.as_mut().map(|state| {
                    if state.utterances.close().is_some() {
                        let at = state.next_at;
                        state.end_part(at);
                    }
                    (state.report.clone(), state.timeout + Duration::from_secs(1))
                })
            };
            if let Some((report, limit)) = drained {
                self.push_results(report.drain(limit));
            }
        }
        self.parent_sink_event(event)
    }

    fn transform_ip_passthrough(
        &self,
        buffer: &gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let samples: Vec<i16> = map
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let ready = {
            let mut guard = self.state.lock().unwrap();
            let state = guard.as_mut().ok_or(gst::FlowError::Flushing)?;
            let at = buffer.pts().unwrap_or(state.next_at);
            state.next_at = at + samples_to_time(samples.len() as u64);
            for collected in state.utterances.push(at, &samples, state.max_utterance) {
                match collected {
                    Collected::Audio(a) => state.recognizer.audio(&a),
                    Collected::Cut { end } => {
                        gst::debug!(CAT, imp = self, "turn cut at {end} (max-utterance-secs)");
                        state.end_part(end);
                        state.recognizer.begin(end, &[]);
                    }
                }
            }
            state.report.take()
        };
        self.push_results(ready);
        Ok(gst::FlowSuccess::Ok)
    }
}
