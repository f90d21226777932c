//! Sessions: one talking avatar each, with its pipeline, its viewers and its event stream.
//!
//! The [`Registry`] owns every session. A session's pipeline reports through its bus; a sync
//! handler forwards each message to the session's task on the tokio runtime, which turns speech
//! messages into events for clients and ends the session on a pipeline error, without touching
//! any other session. A `Drop` guard sets the pipeline to `Null` on every way out.

pub mod pipeline;
pub mod viewer;

use crate::config::Config;
use crate::conversation::chat::{Assistant, Conversation};
use crate::conversation::history::{MemoryHistory, RedisHistory};
use crate::conversation::llm::LlmClient;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::signalling;
use anyhow::Context;
use facecast_common::Emotion;
use gst::prelude::*;
use gstfacecastavatar::registered::store::{AvatarStore, StoreError};
use gstfacecasttts::piper::PiperVoice;
use gstfacecasttts::speechsynth::SpeechEngine;
use pipeline::{Face, SessionPipeline, Voice};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use viewer::Viewer;
use warp::http::StatusCode;

/// What a session tells its clients (the events WebSocket).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    SpeechStarted {
        text: String,
    },
    SpeechEnded {
        text: String,
        interrupted: bool,
    },
    ViewerJoined {
        viewer: String,
    },
    ViewerLeft {
        viewer: String,
    },
    Error {
        message: String,
    },
    SessionEnded {
        reason: String,
    },
    /// A piece of the language model's answer, as it streams in.
    ReplyDelta {
        text: String,
    },
    /// The whole answer, once the stream ended.
    ReplyDone {
        text: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub avatar: Option<String>,
    /// `viseme` or `wav2lip`; default: wav2lip for registered avatars, viseme for the built-in one.
    pub engine: Option<String>,
    /// espeak-ng voice, or with `tts: piper` a Piper voice name.
    pub voice: Option<String>,
    pub lang: Option<String>,
    /// Who speaks: `espeak` or `piper`; default: the configuration's `speech.engine`.
    pub tts: Option<String>,
    /// The assistant's system prompt for this session (else the avatar's or the default).
    pub persona: Option<String>,
    /// Continue this conversation (remembered in Redis under this name); default: a new one,
    /// named after the session.
    pub conversation: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub avatar: String,
    pub engine: String,
    pub lang: String,
    pub voice: Option<String>,
    pub tts: String,
    pub conversation: String,
    pub viewers: usize,
    pub age_secs: u64,
    pub whep_url: String,
    pub events_url: String,
}

/// Sets the pipeline to `Null` when the session goes, however it goes.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// A `say` waiting for its first frame: when it was asked, and (once speech started) the
/// running time its audio starts at.
struct PendingSay {
    asked: Instant,
    starts_at: Option<gst::ClockTime>,
}

pub struct Session {
    pub id: String,
    pub avatar: String,
    pub engine: String,
    pub lang: String,
    pub voice: Option<String>,
    pub tts: String,
    created: Instant,
    pipeline: SessionPipeline,
    _guard: NullOnDrop,
    events: broadcast::Sender<SessionEvent>,
    viewers: Mutex<HashMap<String, Viewer>>,
    /// When the session last had a viewer (or was created): for the idle reaper.
    last_watched: Mutex<Instant>,
    pending_says: Mutex<VecDeque<PendingSay>>,
    /// The latest say → first frame latencies (for `facecast bench --serve`).
    say_latencies: Mutex<VecDeque<Duration>>,
    /// When those first frames left the encoder (for `facecast bench --chat`).
    say_first_frames: Mutex<VecDeque<Instant>>,
    next_viewer: AtomicU64,
    pub conversation: Conversation,
}

impl Session {
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            avatar: self.avatar.clone(),
            engine: self.engine.clone(),
            lang: self.lang.clone(),
            voice: self.voice.clone(),
            tts: self.tts.clone(),
            conversation: self.conversation.id.clone(),
            viewers: self.viewers.lock().unwrap().len(),
            age_secs: self.created.elapsed().as_secs(),
            whep_url: format!("/whep/{}", self.id),
            events_url: format!("/api/v1/sessions/{}/events", self.id),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, event: SessionEvent) {
        let _ = self.events.send(event);
    }

    /// Queues `text`, with an optional emotion that starts with it.
    pub fn say(&self, text: &str, emotion: Option<(Emotion, f64)>) {
        if let Some((emotion, intensity)) = emotion {
            self.pipeline
                .speech
                .emit_by_name::<bool>("push-emotion", &[&emotion.name(), &intensity]);
        }
        self.pending_says.lock().unwrap().push_back(PendingSay {
            asked: Instant::now(),
            starts_at: None,
        });
        self.pipeline.speech.emit_by_name::<()>("say", &[&text]);
    }

    pub fn interrupt(&self) {
        // Stop the answer being written as well as the one being spoken.
        self.conversation.cancel();
        self.pipeline.speech.emit_by_name::<()>("interrupt", &[]);
        self.pending_says.lock().unwrap().clear();
    }

    /// When the latest says' first lip-synced frames left the encoder, oldest first.
    pub fn say_first_frames(&self) -> Vec<Instant> {
        self.say_first_frames
            .lock()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    /// The latest say → first lip-synced frame latencies, oldest first.
    pub fn say_latencies(&self) -> Vec<Duration> {
        self.say_latencies.lock().unwrap().iter().copied().collect()
    }

    pub fn viewer_count(&self) -> usize {
        self.viewers.lock().unwrap().len()
    }

    pub fn viewer_mids(&self, viewer: &str) -> Option<Vec<Option<String>>> {
        self.viewers
            .lock()
            .unwrap()
            .get(viewer)
            .map(|v| v.mids.clone())
    }

    pub fn add_candidates(&self, viewer: &str, c: &[signalling::TrickleCandidate]) -> bool {
        match self.viewers.lock().unwrap().get(viewer) {
            Some(v) => {
                v.add_candidates(c);
                true
            }
            None => false,
        }
    }
}

pub struct Registry {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// What `chat` answers with, when a language model is configured.
    pub assistant: Option<Arc<Assistant>>,
}

impl Registry {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Arc<Self> {
        let assistant = match Self::assistant(&config) {
            Ok(a) => a.map(Arc::new),
            Err(e) => {
                tracing::warn!("{e:#}; chat is unavailable");
                None
            }
        };
        Arc::new(Self {
            config,
            metrics,
            sessions: Mutex::new(HashMap::new()),
            assistant,
        })
    }

    fn assistant(config: &Config) -> anyhow::Result<Option<Assistant>> {
        let Some(llm) = LlmClient::new(&config.llm).context("language model client")? else {
            return Ok(None);
        };
        let read = |p: &std::path::Path| match std::fs::read_to_string(p) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => {
                tracing::warn!("cannot read persona {}: {e}", p.display());
                None
            }
        };
        let persona = config.llm.persona.as_deref().and_then(read);
        let avatar_personas = config
            .llm
            .avatar_personas
            .iter()
            .filter_map(|(avatar, p)| Some((avatar.clone(), read(p)?)))
            .collect();
        let shared_memory = match config.llm.redis_url.as_deref() {
            None => None,
            Some(url) => Some(RedisHistory::new(
                url,
                Duration::from_secs(config.llm.history_ttl_secs),
                config.llm.history_turns,
            )?),
        };
        Ok(Some(Assistant {
            llm,
            persona,
            avatar_personas,
            memory: MemoryHistory::new(config.llm.memory_conversations, config.llm.history_turns),
            shared_memory,
        }))
    }

    /// Starts answering `text` in session `id` (the reply is spoken and streamed as events).
    pub fn chat(&self, id: &str, text: &str) -> Result<(), ApiError> {
        let session = self.get(id)?;
        let Some(assistant) = self.assistant.clone() else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_llm",
                "no language model is configured: set llm.base_url (and llm.model) in the configuration, or FACECAST_LLM_BASE_URL and FACECAST_LLM_MODEL; say keeps working without one",
            ));
        };
        let max = assistant.llm.config().max_question_chars;
        if text.chars().count() > max {
            let message =
                format!("the question is longer than {max} characters; ask something shorter");
            // The user may be listening rather than reading: the avatar says so too.
            crate::conversation::chat::report(&session, &assistant, message.clone(), false);
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "question_too_long",
                message,
            ));
        }
        crate::conversation::chat::ask(&session, assistant, text.to_owned());
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Arc<Session>, ApiError> {
        self.sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::session_not_found(id))
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<_> = self
            .sessions
            .lock()
            .unwrap()
            .values()
            .map(|s| s.info())
            .collect();
        v.sort_by(|a, b| b.age_secs.cmp(&a.age_secs).then(a.id.cmp(&b.id)));
        v
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// Starts a session. Must run inside the tokio runtime (it spawns the session's bus task).
    pub fn create(self: &Arc<Self>, req: CreateSession) -> Result<Arc<Session>, ApiError> {
        let avatar = req.avatar.unwrap_or_else(|| "default".into());
        let registered = if avatar == "default" {
            None
        } else {
            let cached = AvatarStore::global().get(&avatar).map_err(|e| match e {
                StoreError::Unknown(_) => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "avatar_not_found",
                    format!("no avatar '{avatar}' is registered (GET /api/v1/avatars lists them; 'default' is the built-in face)"),
                ),
                StoreError::BadName { .. } => ApiError::bad_request("bad_avatar_name", e.to_string()),
                other => ApiError::internal(format!("cannot open avatar '{avatar}': {other}")),
            })?;
            Some((cached.info.width, cached.info.height))
        };
        let engine = match req.engine.as_deref() {
            None if registered.is_some() => "wav2lip",
            None | Some("viseme") => "viseme",
            Some("wav2lip") => "wav2lip",
            Some(other) => {
                return Err(ApiError::bad_request(
                    "unknown_engine",
                    format!("unknown engine '{other}' (expected viseme or wav2lip)"),
                ))
            }
        };
        if engine == "wav2lip" && self.config.wav2lip_model().is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_lipsync_model",
                "engine wav2lip needs a Wav2Lip ONNX model: set lipsync.model in the configuration or FACECAST_WAV2LIP_MODEL (see README, 'Photo and video avatars')",
            ));
        }
        if engine == "viseme" && registered.is_some() {
            return Err(ApiError::bad_request(
                "engine_mismatch",
                "the viseme engine draws only the built-in face; photo and video avatars talk with engine wav2lip",
            ));
        }
        let lang = req
            .lang
            .unwrap_or_else(|| self.config.speech.language.clone());
        let tts = req
            .tts
            .clone()
            .unwrap_or_else(|| self.config.speech.engine.clone());
        let (speech_engine, voice) = self.check_voice(&tts, &lang, req.voice)?;
        let conversation = req.conversation;
        let max_persona = self.config.llm.max_persona_chars;
        if req
            .persona
            .as_ref()
            .is_some_and(|p| p.chars().count() > max_persona)
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "persona_too_long",
                format!("persona is longer than {max_persona} characters"),
            ));
        }
        let persona = req
            .persona
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .or_else(|| {
                let assistant = self.assistant.as_ref()?;
                assistant.avatar_personas.get(&avatar).cloned()
            });
        if let Some(name) = &conversation {
            let fits = (1..=128).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !fits {
                return Err(ApiError::bad_request(
                    "bad_conversation",
                    "conversation must be 1 to 128 characters of letters, digits, '-', '_', '.' or ':'",
                ));
            }
        }
        if self.len() >= self.config.max_sessions {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                format!(
                    "the server is at its limit of {} sessions; try again shortly",
                    self.config.max_sessions
                ),
            );
            e.retry_after = Some(10);
            return Err(e);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let seed = u64::from_str_radix(&id[..16], 16).unwrap_or(1);
        let pipeline = SessionPipeline::build(
            &self.config,
            &Voice {
                engine: speech_engine,
                language: &lang,
                voice: voice.as_deref(),
            },
            &Face {
                registered: registered.map(|(w, h)| (avatar.as_str(), w, h)),
                wav2lip: engine == "wav2lip",
            },
            seed,
        )
        .map_err(|e| ApiError::internal(format!("cannot build the session pipeline: {e:#}")))?;
        let (events, _) = broadcast::channel(256);
        let session = Arc::new(Session {
            id: id.clone(),
            avatar,
            engine: engine.to_owned(),
            lang,
            voice,
            tts,
            created: Instant::now(),
            _guard: NullOnDrop(pipeline.pipeline.clone()),
            pipeline,
            events,
            viewers: Mutex::new(HashMap::new()),
            last_watched: Mutex::new(Instant::now()),
            pending_says: Mutex::new(VecDeque::new()),
            say_latencies: Mutex::new(VecDeque::new()),
            say_first_frames: Mutex::new(VecDeque::new()),
            next_viewer: AtomicU64::new(1),
            conversation: Conversation::new(conversation.unwrap_or_else(|| id.clone()), persona),
        });
        self.instrument(&session);
        self.watch_bus(&session);
        session
            .pipeline
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| ApiError::internal("the session pipeline could not start"))?;
        self.sessions
            .lock()
            .unwrap()
            .insert(id.clone(), session.clone());
        self.metrics.sessions_active.set(self.len() as i64);
        tracing::info!(session = %id, "session started");
        Ok(session)
    }

    /// The speech engine and voice a session asks for, checked (a Piper voice is loaded here,
    /// once per process, so a missing one is refused before the session starts).
    fn check_voice(
        &self,
        tts: &str,
        lang: &str,
        voice: Option<String>,
    ) -> Result<(SpeechEngine, Option<String>), ApiError> {
        match tts {
            "espeak" => {
                let name = voice.clone().unwrap_or_else(|| lang.to_owned());
                gstfacecasttts::espeak::check_voice(&name)
                    .map_err(|e| ApiError::bad_request("unknown_voice", e.to_string()))?;
                Ok((SpeechEngine::Espeak, voice))
            }
            "piper" => {
                let name = voice.unwrap_or_else(|| self.config.speech.piper_voice.clone());
                let path = gstfacecasttts::piper::locate(&name, &self.config.models_dir);
                let loaded = PiperVoice::get_at(&path)
                    .map_err(|e| ApiError::bad_request("unknown_voice", e.to_string()))?;
                let speaks = loaded.language();
                let base = |l: &str| l.split(['-', '_']).next().unwrap_or("").to_owned();
                if base(speaks) != base(lang) {
                    return Err(ApiError::bad_request(
                        "voice_language_mismatch",
                        format!("the Piper voice {name} speaks '{speaks}', but this session's language is '{lang}'; use a voice of that language, or tts espeak"),
                    ));
                }
                // The element gets the file, so it speaks the very voice checked here.
                Ok((
                    SpeechEngine::Piper,
                    Some(path.to_string_lossy().into_owned()),
                ))
            }
            other => Err(ApiError::bad_request(
                "unknown_tts",
                format!("unknown tts '{other}' (expected espeak or piper)"),
            )),
        }
    }

    /// Counts frames in and out of the encoder and times `say` → first frame.
    fn instrument(&self, session: &Arc<Session>) {
        let produced = self
            .metrics
            .frames_produced
            .with_label_values(&[&session.id]);
        session
            .pipeline
            .lipsync
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                produced.inc();
                gst::PadProbeReturn::Ok
            });
        let dropped = self
            .metrics
            .frames_dropped
            .with_label_values(&[&session.id]);
        session
            .pipeline
            .encoder_queue
            .connect("overrun", false, move |_| {
                dropped.inc();
                None
            });
        let weak = Arc::downgrade(session);
        let histogram = self.metrics.say_to_first_frame.clone();
        session
            .pipeline
            .encoder
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let (Some(session), Some(buffer)) = (weak.upgrade(), info.buffer()) else {
                    return gst::PadProbeReturn::Ok;
                };
                // Encoders may shift timestamps (x264 adds 1000 h and says so in its segment):
                // compare running times.
                let segment = pad
                    .sticky_event::<gst::event::Segment>(0)
                    .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned());
                let end = buffer
                    .pts()
                    .map(|p| p + buffer.duration().unwrap_or_default())
                    .and_then(|end| match &segment {
                        Some(seg) => seg.to_running_time(end),
                        None => Some(end),
                    });
                let Some(end) = end else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut pending = session.pending_says.lock().unwrap();
                while let Some(p) = pending.front() {
                    match p.starts_at {
                        Some(start) if end > start => {
                            let latency = p.asked.elapsed();
                            histogram.observe(latency.as_secs_f64());
                            pending.pop_front();
                            let mut recent = session.say_latencies.lock().unwrap();
                            if recent.len() == 1000 {
                                recent.pop_front();
                            }
                            recent.push_back(latency);
                            let mut frames = session.say_first_frames.lock().unwrap();
                            if frames.len() == 1000 {
                                frames.pop_front();
                            }
                            frames.push_back(Instant::now());
                        }
                        _ => break,
                    }
                }
                gst::PadProbeReturn::Ok
            });
    }

    /// Forwards the pipeline's bus to the session's task; handles speech timing synchronously.
    fn watch_bus(self: &Arc<Self>, session: &Arc<Session>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<gst::Message>();
        let weak = Arc::downgrade(session);
        let bus = session
            .pipeline
            .pipeline
            .bus()
            .expect("pipelines have a bus");
        bus.set_sync_handler(move |_, msg| {
            if let (Some(s), Some(session)) = (msg.structure(), weak.upgrade()) {
                if s.name() == "facecast/speech-started" {
                    // The oldest say still waiting for its speech: now we know where it starts.
                    let at =
                        gst::ClockTime::from_nseconds(s.get::<u64>("running-time").unwrap_or(0));
                    let mut pending = session.pending_says.lock().unwrap();
                    if let Some(p) = pending.iter_mut().find(|p| p.starts_at.is_none()) {
                        p.starts_at = Some(at);
                    }
                }
            }
            let _ = tx.send(msg.clone());
            gst::BusSyncReply::Drop
        });
        let registry = Arc::downgrade(self);
        let weak = Arc::downgrade(session);
        let id = session.id.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let Some(session) = weak.upgrade() else { break };
                match msg.view() {
                    gst::MessageView::Element(e) => {
                        let Some(s) = e.structure() else { continue };
                        let text = s.get::<String>("text").unwrap_or_default();
                        match s.name().as_str() {
                            "facecast/speech-started" => {
                                session.emit(SessionEvent::SpeechStarted { text })
                            }
                            "facecast/speech-ended" => session.emit(SessionEvent::SpeechEnded {
                                text,
                                interrupted: s.get("interrupted").unwrap_or(false),
                            }),
                            _ => {}
                        }
                    }
                    gst::MessageView::Error(e) => {
                        let source = e.src().map(|s| s.name().to_string()).unwrap_or_default();
                        let message = format!("{source}: {}", e.error());
                        tracing::error!(session = %id, "pipeline error: {message} ({:?})", e.debug());
                        session.emit(SessionEvent::Error {
                            message: message.clone(),
                        });
                        drop(session);
                        if let Some(registry) = registry.upgrade() {
                            registry.end(&id, &format!("pipeline error: {message}"));
                        }
                        break;
                    }
                    gst::MessageView::Warning(w) => {
                        tracing::warn!(session = %id, "pipeline warning: {}", w.error());
                    }
                    _ => {}
                }
            }
        });
    }

    /// Ends a session: tells its clients, drops its viewers and stops its pipeline.
    pub fn end(&self, id: &str, reason: &str) -> bool {
        let Some(session) = self.sessions.lock().unwrap().remove(id) else {
            return false;
        };
        tracing::info!(session = %id, "session ended: {reason}");
        session.emit(SessionEvent::SessionEnded {
            reason: reason.to_owned(),
        });
        let viewers: Vec<Viewer> = session
            .viewers
            .lock()
            .unwrap()
            .drain()
            .map(|(_, v)| v)
            .collect();
        self.metrics.viewers.sub(viewers.len() as i64);
        let _ = session.pipeline.pipeline.set_state(gst::State::Null);
        for mut v in viewers {
            v.disconnect(&session.pipeline.pipeline);
        }
        self.metrics.remove_session(id);
        self.metrics.sessions_active.set(self.len() as i64);
        true
    }

    pub fn end_all(&self, reason: &str) {
        let ids: Vec<String> = self.sessions.lock().unwrap().keys().cloned().collect();
        for id in ids {
            self.end(&id, reason);
        }
    }

    /// Adds a WHEP viewer to session `id`; returns its id and the SDP answer.
    pub async fn add_viewer(
        self: &Arc<Self>,
        id: &str,
        offer: &str,
    ) -> Result<(String, String), ApiError> {
        let session = self.get(id)?;
        let (sdp, plan) =
            signalling::plan_offer(offer, self.config.video.codec).map_err(|e| match e {
                signalling::SignallingError::NothingToSend(_) => ApiError::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "unsupported_offer",
                    e.to_string(),
                ),
                _ => ApiError::bad_request("malformed_sdp", e.to_string()),
            })?;
        let viewer_id = format!("v{}", session.next_viewer.fetch_add(1, Ordering::Relaxed));
        let (viewer, answer) =
            Viewer::connect(&viewer_id, &session.pipeline, &self.config, sdp, &plan)
                .await
                .map_err(|e| ApiError::bad_request("negotiation_failed", format!("{e:#}")))?;

        // A viewer that vanishes without DELETE is dropped: when its connection fails, when
        // it says goodbye in RTCP (BYE) or falls silent there (timeout), or when it never
        // connects at all.
        let registry = Arc::downgrade(self);
        let runtime = tokio::runtime::Handle::current();
        let drop_viewer = {
            let (sid, vid) = (id.to_owned(), viewer_id.clone());
            move |why: &'static str| {
                let (registry, sid, vid) = (registry.clone(), sid.clone(), vid.clone());
                runtime.spawn(async move {
                    if let Some(r) = registry.upgrade() {
                        if r.remove_viewer(&sid, &vid) {
                            tracing::info!(session = %sid, viewer = %vid, "viewer dropped: {why}");
                        }
                    }
                });
            }
        };
        let on_state = drop_viewer.clone();
        viewer
            .webrtcbin
            .connect_notify(Some("connection-state"), move |w, _| {
                use gst_webrtc::WebRTCPeerConnectionState as S;
                if matches!(w.property::<S>("connection-state"), S::Failed | S::Closed) {
                    on_state("connection failed");
                }
            });
        if let Some(rtpbin) = viewer
            .webrtcbin
            .downcast_ref::<gst::Bin>()
            .and_then(|b| b.by_name("rtpbin"))
        {
            for signal in ["on-bye-ssrc", "on-timeout"] {
                let on_rtcp = drop_viewer.clone();
                rtpbin.connect(signal, false, move |_| {
                    on_rtcp(if signal == "on-bye-ssrc" {
                        "RTCP BYE"
                    } else {
                        "RTCP timeout"
                    });
                    None
                });
            }
        } else {
            tracing::warn!("webrtcbin has no rtpbin: viewers are dropped only on ICE failure");
        }
        let deadline = Duration::from_secs(self.config.viewer_connect_timeout_secs);
        let webrtcbin = viewer.webrtcbin.downgrade();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            let connected = webrtcbin.upgrade().is_some_and(|w| {
                w.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
                    == gst_webrtc::WebRTCPeerConnectionState::Connected
            });
            if !connected {
                drop_viewer("never connected");
            }
        });
        session
            .viewers
            .lock()
            .unwrap()
            .insert(viewer_id.clone(), viewer);
        *session.last_watched.lock().unwrap() = Instant::now();
        self.metrics.viewers.inc();
        session.emit(SessionEvent::ViewerJoined {
            viewer: viewer_id.clone(),
        });
        Ok((viewer_id, answer))
    }

    pub fn remove_viewer(&self, id: &str, viewer: &str) -> bool {
        let Ok(session) = self.get(id) else {
            return false;
        };
        let Some(mut v) = session.viewers.lock().unwrap().remove(viewer) else {
            return false;
        };
        v.disconnect(&session.pipeline.pipeline);
        *session.last_watched.lock().unwrap() = Instant::now();
        self.metrics.viewers.dec();
        session.emit(SessionEvent::ViewerLeft {
            viewer: viewer.to_owned(),
        });
        true
    }

    /// Ends sessions that have had no viewer for the configured idle timeout.
    pub fn reap_idle(&self) {
        let timeout = Duration::from_secs(self.config.idle_timeout_secs);
        let idle: Vec<String> = self
            .sessions
            .lock()
            .unwrap()
            .values()
            .filter(|s| {
                s.viewer_count() == 0 && s.last_watched.lock().unwrap().elapsed() >= timeout
            })
            .map(|s| s.id.clone())
            .collect();
        for id in idle {
            self.end(&id, "idle: no viewer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(config: Config) -> Arc<Registry> {
        gst::init().unwrap();
        crate::plugins::register().ok();
        Registry::new(Arc::new(config), Arc::new(Metrics::new()))
    }

    async fn next_event(
        rx: &mut broadcast::Receiver<SessionEvent>,
        want: fn(&SessionEvent) -> bool,
    ) -> SessionEvent {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let ev = rx.recv().await.expect("event stream open");
                if want(&ev) {
                    return ev;
                }
            }
        })
        .await
        .expect("event within 5 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipeline_error_ends_only_its_session() {
        let registry = registry(Config::default());
        let broken = registry.create(CreateSession::default()).unwrap();
        let healthy = registry.create(CreateSession::default()).unwrap();
        let mut events = broken.subscribe();
        // What an element posts when it fails while streaming.
        let lipsync = broken.pipeline.lipsync.clone();
        lipsync
            .post_message(
                gst::message::Error::builder(gst::StreamError::Failed, "simulated failure")
                    .src(&lipsync)
                    .build(),
            )
            .unwrap();
        let ev = next_event(&mut events, |e| matches!(e, SessionEvent::Error { .. })).await;
        assert!(
            matches!(ev, SessionEvent::Error { message } if message.contains("simulated failure"))
        );
        next_event(&mut events, |e| {
            matches!(e, SessionEvent::SessionEnded { .. })
        })
        .await;
        assert!(registry.get(&broken.id).is_err());
        assert!(registry.get(&healthy.id).is_ok());
        // The other session keeps producing frames.
        let produced = || {
            registry
                .metrics
                .frames_produced
                .with_label_values(&[&healthy.id])
                .get()
        };
        let before = produced();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let after = produced();
        assert!(after >= before + 15, "{before} -> {after} frames in 1 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_photo_avatar_session_talks_with_wav2lip() {
        use gstfacecastavatar::registration::{register, RegisterOptions};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cache = root.join(".cache");
        let lib = std::env::var_os("ORT_DYLIB_PATH")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| cache.join("onnxruntime/libonnxruntime.so.1.31.1"));
        let (portrait, models) = (cache.join("media/astronaut.png"), cache.join("models"));
        assert!(
            lib.is_file() && portrait.is_file() && models.join("wav2lip_w025_seed7.onnx").is_file(),
            "test assets missing: run scripts/fetch-test-assets.sh"
        );
        facecast_common::onnx::runtime(Some(&lib)).unwrap();
        static DATA: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let store =
            AvatarStore::init_global(DATA.get_or_init(|| tempfile::tempdir().unwrap()).path(), 4);
        let mut options = RegisterOptions::new(
            "session-astro",
            &portrait,
            &models.join("yunet_n_dynamic.onnx"),
        );
        options.replace = true;
        register(store, &options, &mut |_, _| {}).unwrap();

        let mut config = Config {
            models_dir: models,
            ..Config::default()
        };
        config.lipsync.model = Some("wav2lip_w025_seed7.onnx".into());
        config.lipsync.batch_size = 3;
        config.lipsync.threads = 1;
        let registry = registry(config);
        let session = registry
            .create(CreateSession {
                avatar: Some("session-astro".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(session.info().engine, "wav2lip");
        let mut events = session.subscribe();
        let inferred = || -> u64 {
            gstfacecastlipsync::wav2lip_batcher::loaded()
                .iter()
                .filter(|m| m.key().max_batch == 3)
                .map(|m| m.stats.frames.load(Ordering::Relaxed))
                .sum()
        };
        let produced = || {
            registry
                .metrics
                .frames_produced
                .with_label_values(&[&session.id])
                .get()
        };
        // Silence first: frames flow, and the idle photo is inferred only once.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (idle_frames, idle_inferred) = (produced(), inferred());
        assert!(idle_frames >= 20, "{idle_frames} frames in 1.5 s");
        assert!(
            idle_inferred <= 3,
            "{idle_inferred} inferences while silent"
        );
        session.say("Hello there, how are you today?", None);
        next_event(&mut events, |e| {
            matches!(e, SessionEvent::SpeechStarted { .. })
        })
        .await;
        next_event(&mut events, |e| {
            matches!(e, SessionEvent::SpeechEnded { .. })
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Speech runs through the model frame by frame, and the stream keeps its pace.
        let spoken = inferred() - idle_inferred;
        assert!(
            spoken >= 25,
            "only {spoken} frames inferred for about 2 s of speech"
        );
        let caps = session
            .pipeline
            .lipsync
            .static_pad("src")
            .unwrap()
            .current_caps()
            .unwrap();
        let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
        assert_eq!((info.width(), info.height()), (512, 512));
        registry.end(&session.id, "test over");
        store.remove("session-astro").unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_sessions_are_reaped_and_silent_viewers_dropped() {
        let registry = registry(Config {
            idle_timeout_secs: 0,
            viewer_connect_timeout_secs: 1,
            ..Config::default()
        });
        let watched = registry.create(CreateSession::default()).unwrap();
        let idle = registry.create(CreateSession::default()).unwrap();
        let offer = crate::signalling::tests::webrtcbin_offer().await;
        let (viewer, _answer) = registry.add_viewer(&watched.id, &offer).await.unwrap();
        registry.reap_idle();
        assert!(
            registry.get(&idle.id).is_err(),
            "an unwatched session survived the reaper"
        );
        assert!(registry.get(&watched.id).is_ok());
        // This viewer (a canned offer) never connects: it is dropped after the deadline.
        let mut events = watched.subscribe();
        let ev = next_event(&mut events, |e| {
            matches!(e, SessionEvent::ViewerLeft { .. })
        })
        .await;
        assert_eq!(ev, SessionEvent::ViewerLeft { viewer });
        assert_eq!(watched.viewer_count(), 0);
    }
}
