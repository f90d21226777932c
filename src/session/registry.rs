//! The registry: every live session by id, the exact `max_sessions` cap, ending sessions and
//! reaping idle ones.
//!
//! Creating a session takes a slot first (an atomic reservation, so concurrent creates never
//! exceed the cap), then does its blocking work — opening the avatar, loading a Piper voice,
//! building and starting the pipeline — on tokio's blocking pool, never on the async runtime.
//! A failed creation gives its slot back; ending a session frees its slot.

use super::admission::{Admission, Limits, Reservation};
use super::bus::BusStream;
use super::output::{self, OutputInfo, OutputState, Target};
use super::plan::{plan, CreateSession, ListenMode, OutputRequest, PlanContext, PlanError};
use super::publisher::{Ingest, Listening, Publisher};
use super::{
    liveness, pipeline::SessionPipeline, viewer::Viewer, voice, NullOnDrop, Session, SessionError,
    SessionEvent, SessionInfo,
};
use crate::config::Config;
use crate::conversation::assistant::Assistant;
use crate::conversation::chat::{self, ChatError, Conversation};
use crate::metrics::Metrics;
use crate::signalling;
use facecast_avatars::store::AvatarStore;
use facecast_common::events::{
    SPEECH_ENDED_MESSAGE, SPEECH_STARTED_MESSAGE, TRANSCRIPT_EVENT, USER_SPEECH_EVENT,
};
use facecast_common::{TranscriptEvent, UserSpeechEvent};
use facecast_onnx::Device;
use futures_util::StreamExt;
use gst::prelude::*;
use gstfacecastlipsync::{EngineKind, LIPSYNC_ERROR_MESSAGE};
use gstfacecastlisten::ASR_ERROR_MESSAGE;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub struct Registry {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Slots taken: live sessions plus creations under way. Never above `max_sessions`.
    slots: AtomicUsize,
    /// What `chat` answers with, when a language model is configured.
    pub assistant: Option<Arc<Assistant>>,
    /// Room on the lip-sync device for photo-avatar sessions.
    admission: Arc<Admission>,
}

/// A reserved session slot; given back when dropped unless the session was registered.
struct Slot<'a> {
    slots: &'a AtomicUsize,
    kept: bool,
}

impl Slot<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.slots.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Registry {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Arc<Self> {
        let assistant = match Assistant::from_config(&config) {
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
            slots: AtomicUsize::new(0),
            assistant,
            admission: Arc::default(),
        })
    }

    /// Takes a slot if one is free: the check and the take are one atomic step.
    fn reserve(&self) -> Result<Slot<'_>, SessionError> {
        let max = self.config.max_sessions;
        self.slots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| SessionError::Full(max))?;
        Ok(Slot {
            slots: &self.slots,
            kept: false,
        })
    }

    /// A photo-avatar session's share of a lip-sync device (the least-loaded with room), if
    /// one has room (see [`admission`](super::admission)).
    fn admit(&self) -> Result<Reservation, SessionError> {
        let l = &self.config.lipsync;
        let limits = Limits {
            capacity_fps: l.capacity_fps,
            max_load: l.max_load,
            memory_reserve_mb: l.gpu_memory_reserve_mb,
        };
        let free_mb = |device| match device {
            Device::Cuda(n) => facecast_gpu::nvml::read(n.max(0) as u32)
                .ok()
                .and_then(|r| Some(r.memory_total_bytes?.saturating_sub(r.memory_used_bytes?)))
                .map(|b| b / 1_000_000),
            Device::Cpu => None,
        };
        let reservation = self.admission.place(
            &self.config.lipsync_devices(),
            self.config.video.fps as f64,
            limits,
            Instant::now(),
            free_mb,
        );
        if let Ok(r) = &reservation {
            self.publish_reserved(r.device);
        }
        reservation.map_err(|refusal| {
            tracing::warn!("session refused: {refusal}");
            refusal.into()
        })
    }

    fn publish_reserved(&self, device: Device) {
        self.metrics
            .lipsync_reserved_fps
            .with_label_values(&[&device.to_string()])
            .set(self.admission.reserved_fps(device));
    }

    pub fn get(&self, id: &str) -> Result<Arc<Session>, SessionError> {
        self.sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| SessionError::NotFound(id.to_owned()))
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().unwrap().values().cloned().collect();
        let mut v: Vec<_> = sessions.iter().map(|s| s.info()).collect();
        v.sort_by(|a, b| b.age_secs.cmp(&a.age_secs).then(a.id.cmp(&b.id)));
        v
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// Starts answering `text` in session `id` (the reply is spoken and streamed as events).
    pub fn chat(&self, id: &str, text: &str) -> Result<(), ChatError> {
        let Ok(session) = self.get(id) else {
            // The route looked the session up just before; it ended in between.
            return Ok(());
        };
        let conversation = session.conversation.clone();
        chat::start(self.assistant.as_ref(), session, &conversation, text)
    }

    /// Plans, checks and starts a session. Must run inside the tokio runtime.
    pub async fn create(
        self: &Arc<Self>,
        req: CreateSession,
    ) -> Result<Arc<Session>, SessionError> {
        let registered = match req.avatar.as_deref() {
            None | Some(super::plan::BUILTIN_AVATAR) => None,
            Some(name) => Some(avatar_size(name.to_owned()).await?),
        };
        let ctx = PlanContext {
            default_lang: &self.config.speech.language,
            default_tts: self.config.speech.engine,
            has_lipsync_model: self.config.wav2lip_model().is_some(),
            max_persona_chars: self.config.llm.max_persona_chars,
            avatar_personas: self.assistant.as_ref().map(|a| &a.avatar_personas),
            max_outputs: self.config.outputs.max_outputs_per_session,
        };
        let plan = plan(req, registered, &ctx)?;
        let config = self.config.clone();
        let checked = plan.clone();
        let voice = blocking(move || {
            voice::resolve(
                &config,
                checked.tts,
                &checked.lang,
                checked.voice.as_deref(),
            )
        })
        .await??;
        let slot = self.reserve()?;
        let reservation = match plan.engine {
            EngineKind::Wav2lip => Some(self.admit()?),
            EngineKind::Viseme => None,
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let seed = u64::from_str_radix(&id[..16], 16).unwrap_or(1);
        let config = self.config.clone();
        let build_plan = plan.clone();
        let build_voice = voice.clone();
        let device = reservation
            .as_ref()
            .map_or(self.config.lipsync.device, |r| r.device);
        let pipeline = blocking(move || {
            SessionPipeline::build(&config, &build_plan, build_voice.as_deref(), seed, device)
                .map_err(|e| SessionError::Build(format!("{e:#}")))
        })
        .await??;
        let (events, _) = broadcast::channel(256);
        let conversation = plan.conversation.clone().unwrap_or_else(|| id.clone());
        let persona = plan.persona.clone();
        let session = Arc::new(Session {
            id: id.clone(),
            plan,
            voice,
            created: Instant::now(),
            _guard: NullOnDrop(pipeline.pipeline.clone()),
            pipeline,
            events,
            viewers: Mutex::new(HashMap::new()),
            last_watched: Mutex::new(Instant::now()),
            timing: Default::default(),
            next_viewer: AtomicU64::new(1),
            publisher: Mutex::new(None),
            publisher_claimed: Mutex::new(false),
            next_publisher: AtomicU64::new(1),
            speaking: Default::default(),
            held: Mutex::new(None),
            outputs: Mutex::new(Vec::new()),
            next_output: AtomicU64::new(1),
            conversation: Arc::new(Conversation::new(conversation, persona)),
            reservation: Mutex::new(reservation),
        });
        self.instrument(&session);
        self.watch_bus(&session);
        let pipeline = session.pipeline.pipeline.clone();
        blocking(move || {
            pipeline
                .set_state(gst::State::Playing)
                .map(|_| ())
                .map_err(|_| SessionError::Build("the session pipeline could not start".into()))
        })
        .await??;
        self.sessions
            .lock()
            .unwrap()
            .insert(id.clone(), session.clone());
        slot.keep();
        self.metrics.sessions_active.set(self.len() as i64);
        tracing::info!(session = %id, "session started");
        // Outputs asked for at creation start with it; one that cannot start (an encoder
        // missing) fails the creation.
        for target in session.plan.outputs.clone() {
            if let Err(e) = self.start_output(&session, target).await {
                let registry = self.clone();
                let sid = id.clone();
                let _ = blocking(move || registry.end(&sid, "an output could not start")).await;
                return Err(e);
            }
        }
        Ok(session)
    }

    /// `POST /api/v1/sessions/{id}/outputs`: starts restreaming or recording session `id`.
    pub async fn add_output(
        self: &Arc<Self>,
        id: &str,
        req: &OutputRequest,
    ) -> Result<OutputInfo, SessionError> {
        let target = req.target()?;
        let session = self.get(id)?;
        self.start_output(&session, target).await
    }

    async fn start_output(
        self: &Arc<Self>,
        session: &Arc<Session>,
        target: Target,
    ) -> Result<OutputInfo, SessionError> {
        let (session, registry) = (session.clone(), self.clone());
        let runtime = tokio::runtime::Handle::current();
        blocking(move || {
            let config = &registry.config;
            let max = config.outputs.max_outputs_per_session;
            // Held while starting, so that outputs added at once never pass the limit.
            let mut outputs = session.outputs.lock().unwrap();
            let live = outputs
                .iter()
                .filter(|o| !matches!(o.state(), OutputState::Stopped | OutputState::Failed))
                .count();
            if live >= max {
                return Err(PlanError::TooManyOutputs(max).into());
            }
            let oid = format!("o{}", session.next_output.fetch_add(1, Ordering::Relaxed));
            let output = output::start(
                &session,
                oid,
                target,
                config.recordings_dir(),
                &config.outputs,
                registry.metrics.clone(),
                &runtime,
            )
            .map_err(|e| SessionError::Output(format!("{e:#}")))?;
            tracing::info!(session = %session.id, output = %output.id, "output added: {}", output.info().url.as_deref().unwrap_or("recording"));
            outputs.push(output.clone());
            Ok(output.info())
        })
        .await?
    }

    /// `DELETE /api/v1/sessions/{id}/outputs/{output}`: stops it (a recording is closed
    /// properly). Blocking.
    pub fn remove_output(&self, id: &str, output: &str) -> Result<(), SessionError> {
        let session = self.get(id)?;
        let removed = {
            let mut outputs = session.outputs.lock().unwrap();
            let at = outputs.iter().position(|o| o.id == output);
            at.map(|i| outputs.remove(i))
        };
        let Some(removed) = removed else {
            return Err(SessionError::OutputNotFound {
                session: id.to_owned(),
                output: output.to_owned(),
            });
        };
        removed.stop(&session);
        Ok(())
    }

    /// Counts frames in and out of the encoder and times `say` → first frame.
    fn instrument(&self, session: &Arc<Session>) {
        let produced = self
            .metrics
            .frames_produced
            .with_label_values(&[&session.id]);
        let repeated = self
            .metrics
            .frames_repeated
            .with_label_values(&[&session.id]);
        let lipsync = session.pipeline.lipsync.clone();
        // A repeated frame tells admission that the device is at its capacity.
        let admission = session
            .reservation
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| (self.admission.clone(), r.device));
        session
            .pipeline
            .lipsync
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                produced.inc();
                let total = lipsync.property::<u64>("frames-repeated");
                if total > repeated.get() {
                    repeated.inc_by(total - repeated.get());
                    if let Some((admission, device)) = &admission {
                        admission.frame_repeated(*device, Instant::now());
                    }
                }
                gst::PadProbeReturn::Ok
            });
        let dropped = self
            .metrics
            .frames_dropped
            .with_label_values(&[&session.id]);
        session.pipeline.on_frame_dropped(move || dropped.inc());
        let weak = Arc::downgrade(session);
        let histogram = self.metrics.say_to_first_frame.clone();
        session.pipeline.on_frame_encoded(move |end| {
            if let Some(session) = weak.upgrade() {
                for latency in session.timing.frame_left(end) {
                    histogram.observe(latency.as_secs_f64());
                }
            }
        });
    }

    /// Reads the pipeline's bus on the session's task; speech timing is noted as it is posted.
    fn watch_bus(self: &Arc<Self>, session: &Arc<Session>) {
        let weak = Arc::downgrade(session);
        let bus = session
            .pipeline
            .pipeline
            .bus()
            .expect("pipelines have a bus");
        // On the posting thread, for what cannot wait for the runtime: the first frame's
        // timing, and holding the avatar's voice the moment a person may be speaking over it.
        let mut messages = BusStream::new(bus, move |msg| {
            let Some(s) = msg.structure() else {
                return;
            };
            let Some(session) = weak.upgrade() else {
                return;
            };
            match s.name().as_str() {
                SPEECH_STARTED_MESSAGE => {
                    let at =
                        gst::ClockTime::from_nseconds(s.get::<u64>("running-time").unwrap_or(0));
                    session.timing.speech_started(at);
                }
                USER_SPEECH_EVENT => match UserSpeechEvent::from_structure(s) {
                    Some(Ok(UserSpeechEvent::Possible { .. })) => session.hold_voice(),
                    Some(Ok(UserSpeechEvent::Dismissed { .. })) => session.release_voice(),
                    _ => {}
                },
                _ => {}
            }
        });
        let registry = Arc::downgrade(self);
        let weak = Arc::downgrade(session);
        let id = session.id.clone();
        tokio::spawn(async move {
            while let Some(msg) = messages.next().await {
                let Some(session) = weak.upgrade() else { break };
                match msg.view() {
                    gst::MessageView::Element(e) => {
                        let Some(s) = e.structure() else { continue };
                        let text = s.get::<String>("text").unwrap_or_default();
                        match s.name().as_str() {
                            SPEECH_STARTED_MESSAGE => {
                                session.speaking.store(true, Ordering::SeqCst);
                                session.conversation.sounding(
                                    &text,
                                    s.get::<u64>("running-time").unwrap_or(0),
                                    s.get::<u64>("duration").unwrap_or(0),
                                );
                                session.emit(SessionEvent::SpeechStarted { text })
                            }
                            SPEECH_ENDED_MESSAGE => {
                                session.speaking.store(false, Ordering::SeqCst);
                                let interrupted = s.get::<bool>("interrupted").unwrap_or(false);
                                if interrupted {
                                    // A barge-in's hold ends with the answer it silenced.
                                    session.release_voice();
                                } else {
                                    session.conversation.sounded(&text);
                                }
                                session.emit(SessionEvent::SpeechEnded { text, interrupted })
                            }
                            USER_SPEECH_EVENT => {
                                if let Some(Ok(speech)) = UserSpeechEvent::from_structure(s) {
                                    if let Some(r) = registry.upgrade() {
                                        r.heard_speech(&session, speech);
                                    }
                                }
                            }
                            TRANSCRIPT_EVENT => {
                                if let Some(Ok(t)) = TranscriptEvent::from_structure(s) {
                                    if let Some(r) = registry.upgrade() {
                                        r.heard_words(&session, t);
                                    }
                                }
                            }
                            ASR_ERROR_MESSAGE => session.emit(SessionEvent::Error {
                                message: s.get::<String>("message").unwrap_or_default(),
                            }),
                            LIPSYNC_ERROR_MESSAGE => {
                                // The frames repeat the previous one; the session goes on.
                                let message = s.get::<String>("message").unwrap_or_default();
                                tracing::warn!(session = %id, "{message}");
                                if let Some(r) = registry.upgrade() {
                                    r.metrics.lipsync_errors.with_label_values(&[&id]).inc();
                                }
                                session.emit(SessionEvent::Error { message })
                            }
                            _ => {}
                        }
                    }
                    gst::MessageView::Error(e) => {
                        let message = crate::error::describe_bus_error(e);
                        tracing::error!(session = %id, "pipeline error: {message}");
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

    /// Adds the WHIP publisher of session `id` (one at a time); returns its id and the answer.
    pub async fn add_publisher(
        self: &Arc<Self>,
        id: &str,
        offer: &str,
    ) -> Result<(String, String), SessionError> {
        let session = self.get(id)?;
        let (sdp, plan) = signalling::plan_publish(offer)?;
        // Claimed before negotiating, so that two offers at once cannot both win.
        let claim = PublisherClaim::new(&session)?;
        let publisher_id = format!(
            "p{}",
            session.next_publisher.fetch_add(1, Ordering::Relaxed)
        );
        let ingest = match session.plan.listen {
            ListenMode::Converse => {
                let listening = Listening::from_config(&self.config, &session.plan.lang);
                listening
                    .check()
                    .map_err(SessionError::ListeningUnavailable)?;
                Ingest::Converse(listening)
            }
            ListenMode::Drive => Ingest::Drive,
        };
        let (publisher, answer) = Publisher::connect(
            &publisher_id,
            &session.pipeline,
            &self.config,
            ingest,
            sdp,
            &plan,
        )
        .await
        .map_err(|e| SessionError::Negotiation(format!("{e:#}")))?;

        let registry = Arc::downgrade(self);
        let runtime = tokio::runtime::Handle::current();
        let (sid, pid) = (id.to_owned(), publisher_id.clone());
        liveness::watch(
            &publisher.webrtcbin,
            Duration::from_secs(self.config.voice_input.publisher_connect_timeout_secs),
            move |why: &'static str| {
                let (registry, sid, pid) = (registry.clone(), sid.clone(), pid.clone());
                runtime.spawn(async move {
                    if let Some(r) = registry.upgrade() {
                        if r.remove_publisher(&sid, &pid).is_ok() {
                            tracing::info!(session = %sid, publisher = %pid, "publisher dropped: {why}");
                        }
                    }
                });
            },
        );
        let last_audio = publisher.last_audio.clone();
        // Silence is counted from now until the first audio arrives.
        last_audio
            .lock()
            .unwrap()
            .get_or_insert_with(std::time::Instant::now);
        claim.fill(publisher_id.clone(), publisher);
        // Packets that stop are the quickest sign of a vanished publisher.
        let silence = Duration::from_secs(
            self.config
                .voice_input
                .publisher_silence_timeout_secs
                .max(1),
        );
        let (registry, sid, pid) = (Arc::downgrade(self), id.to_owned(), publisher_id.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(r) = registry.upgrade() else { break };
                let Ok(session) = r.get(&sid) else { break };
                if session.publisher_id().as_deref() != Some(pid.as_str()) {
                    break;
                }
                let heard = *last_audio.lock().unwrap();
                if heard.is_some_and(|at| at.elapsed() >= silence)
                    && r.remove_publisher(&sid, &pid).is_ok()
                {
                    tracing::info!(session = %sid, publisher = %pid, "publisher dropped: no audio for {silence:?}");
                    break;
                }
            }
        });
        self.metrics.publishers.inc();
        session.emit(SessionEvent::PublisherJoined {
            publisher: publisher_id.clone(),
        });
        Ok((publisher_id, answer))
    }

    pub fn remove_publisher(&self, id: &str, publisher: &str) -> Result<(), SessionError> {
        let session = self.get(id)?;
        let taken = {
            let mut slot = session.publisher.lock().unwrap();
            match slot.as_ref() {
                Some((p, _)) if p == publisher => slot.take(),
                _ => None,
            }
        };
        let Some((_, mut p)) = taken else {
            return Err(SessionError::PublisherNotFound {
                session: id.to_owned(),
                publisher: publisher.to_owned(),
            });
        };
        // A possible start that the publisher's leaving cut short holds nothing any more.
        session.release_voice();
        self.metrics.publishers.dec();
        session.emit(SessionEvent::PublisherLeft {
            publisher: publisher.to_owned(),
        });
        // What the person had begun to say is still heard and answered: the branch is
        // drained (off the caller's thread: recognition may take up to its timeout) and then
        // removed. A new publisher may join meanwhile.
        let within = Duration::from_secs(self.config.asr.timeout_secs.min(600) + 2);
        std::thread::spawn(move || {
            p.drain(within, &session.pipeline);
            p.disconnect(&session.pipeline);
        });
        Ok(())
    }

    /// Ends a session: tells its clients, drops its viewers and stops its pipeline.
    pub fn end(&self, id: &str, reason: &str) -> bool {
        let Some(session) = self.sessions.lock().unwrap().remove(id) else {
            return false;
        };
        self.slots.fetch_sub(1, Ordering::SeqCst);
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
        let publisher = session.publisher.lock().unwrap().take();
        // Recordings are closed properly before the pipeline stops.
        let outputs: Vec<_> = session.outputs.lock().unwrap().drain(..).collect();
        for o in outputs {
            o.stop(&session);
        }
        let _ = session.pipeline.pipeline.set_state(gst::State::Null);
        // Its frames no longer come: its share of the lip-sync device is free.
        if let Some(r) = session.reservation.lock().unwrap().take() {
            let device = r.device;
            drop(r);
            self.publish_reserved(device);
        }
        for mut v in viewers {
            v.disconnect(&session.pipeline);
        }
        if let Some((_, mut p)) = publisher {
            p.disconnect(&session.pipeline);
            self.metrics.publishers.dec();
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
    ) -> Result<(String, String), SessionError> {
        let session = self.get(id)?;
        let (sdp, plan) = signalling::plan_offer(offer, self.config.video.codec)?;
        let viewer_id = format!("v{}", session.next_viewer.fetch_add(1, Ordering::Relaxed));
        let (viewer, answer) =
            Viewer::connect(&viewer_id, &session.pipeline, &self.config, sdp, &plan)
                .await
                .map_err(|e| SessionError::Negotiation(format!("{e:#}")))?;

        let registry = Arc::downgrade(self);
        let runtime = tokio::runtime::Handle::current();
        let (sid, vid) = (id.to_owned(), viewer_id.clone());
        liveness::watch(
            &viewer.webrtcbin,
            Duration::from_secs(self.config.viewer_connect_timeout_secs),
            move |why: &'static str| {
                let (registry, sid, vid) = (registry.clone(), sid.clone(), vid.clone());
                runtime.spawn(async move {
                    if let Some(r) = registry.upgrade() {
                        if r.remove_viewer(&sid, &vid).is_ok() {
                            tracing::info!(session = %sid, viewer = %vid, "viewer dropped: {why}");
                        }
                    }
                });
            },
        );
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

    pub fn remove_viewer(&self, id: &str, viewer: &str) -> Result<(), SessionError> {
        let session = self.get(id)?;
        let Some(mut v) = session.viewers.lock().unwrap().remove(viewer) else {
            return Err(SessionError::ViewerNotFound {
                session: id.to_owned(),
                viewer: viewer.to_owned(),
            });
        };
        v.disconnect(&session.pipeline);
        *session.last_watched.lock().unwrap() = Instant::now();
        self.metrics.viewers.dec();
        session.emit(SessionEvent::ViewerLeft {
            viewer: viewer.to_owned(),
        });
        Ok(())
    }

    /// Ends sessions that have had no viewer for the configured idle timeout.
    pub fn reap_idle(&self) {
        let timeout = Duration::from_secs(self.config.idle_timeout_secs);
        let sessions: Vec<Arc<Session>> = self.sessions.lock().unwrap().values().cloned().collect();
        for s in sessions {
            if s.viewer_count() == 0 && s.last_watched.lock().unwrap().elapsed() >= timeout {
                self.end(&s.id, "idle: no viewer");
            }
        }
    }

    /// Runs [`reap_idle`](Self::reap_idle) every `every` until the registry is dropped.
    pub fn spawn_reaper(self: &Arc<Self>, every: Duration) {
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(registry) = registry.upgrade() else {
                    break;
                };
                registry.reap_idle();
            }
        });
    }
}

/// Runs blocking work (files, models, GStreamer state changes) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SessionError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SessionError::Build(format!("session set-up stopped: {e}")))
}

/// The size of registered avatar `name` (opening it, from disk the first time).
async fn avatar_size(name: String) -> Result<(u32, u32), SessionError> {
    blocking(move || {
        AvatarStore::global()
            .get(&name)
            .map(|a| (a.info.width, a.info.height))
            .map_err(|source| SessionError::Avatar { name, source })
    })
    .await?
}

/// A session's publisher place, held while a publisher negotiates: a second offer meanwhile is
/// refused, and a failed negotiation gives the place back.
struct PublisherClaim {
    session: Arc<Session>,
}

impl PublisherClaim {
    fn new(session: &Arc<Session>) -> Result<Self, SessionError> {
        let mut claimed = session.publisher_claimed.lock().unwrap();
        if *claimed || session.publisher.lock().unwrap().is_some() {
            return Err(SessionError::PublisherExists(session.id.clone()));
        }
        *claimed = true;
        Ok(Self {
            session: session.clone(),
        })
    }

    fn fill(self, id: String, publisher: Publisher) {
        *self.session.publisher.lock().unwrap() = Some((id, publisher));
    }
}

impl Drop for PublisherClaim {
    fn drop(&mut self) {
        *self.session.publisher_claimed.lock().unwrap() = false;
    }
}
