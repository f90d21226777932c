//! Sessions: one talking avatar each, read as **inputs → face → outputs**.
//!
//! - [`plan`]: a create request → what to build (pure, unit-tested).
//! - [`voice`]: the planned voice, checked (espeak-ng) or loaded (Piper).
//! - [`pipeline`]: the GStreamer graph, with its seams: the speech input, the face, and the
//!   encoded outputs where branches (WHEP [`viewer`]s, [`output`]s) are added and removed at
//!   run time.
//! - [`registry`]: every live session, the exact `max_sessions` cap, ending and reaping.
//! - [`admission`]: whether the lip-sync device has room for one more photo-avatar session.
//! - [`bus`]: the pipeline's bus as a `Stream` for the session's task.
//! - [`liveness`]: noticing viewers that vanished without saying so.
//! - [`latency`]: `say` → first frame.
//! - [`turns`]: what a person says to the session: holding the voice, barge-in, questions.
//! - [`encoders`]: each codec encoded once, on demand for outputs.
//! - [`output`]: restreams (RTMP, SRT) and recordings, each supervised and reconnected alone.
//!
//! A session's pipeline reports through its bus to the session's task on the tokio runtime,
//! which turns speech messages into events for clients and ends the session on a pipeline
//! error, without touching any other session. A `Drop` guard sets the pipeline to `Null` on
//! every way out.

pub mod admission;
mod bus;
pub mod encoders;
pub mod error;
mod events;
mod latency;
mod liveness;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod publisher;
mod registry;
mod turns;
pub mod viewer;
pub mod voice;
mod webrtc;

pub use error::SessionError;
pub use events::SessionEvent;
pub use plan::{CreateSession, SessionPlan};
pub use registry::Registry;

use crate::conversation::chat::Conversation;
use crate::conversation::{ConversationEvent, Speaker};
use crate::signalling;
use facecast_common::Emotion;
use gst::prelude::*;
use latency::SayTiming;
use pipeline::SessionPipeline;
use publisher::Publisher;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use viewer::Viewer;

#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub avatar: String,
    pub engine: String,
    pub lang: String,
    pub voice: Option<String>,
    pub tts: String,
    pub conversation: String,
    /// What a published voice is: `converse` or `drive`.
    pub listen: String,
    pub viewers: usize,
    pub age_secs: u64,
    pub whep_url: String,
    /// Where a voice is published to the session (WHIP), and the publisher now, if any.
    pub whip_url: String,
    pub publisher: Option<String>,
    pub events_url: String,
    /// Restreams and recordings (URLs redacted).
    pub outputs: Vec<output::OutputInfo>,
}

/// Sets the pipeline to `Null` when the session goes, however it goes.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

pub struct Session {
    pub id: String,
    pub plan: SessionPlan,
    /// The voice the element speaks with (a checked Piper voice's file, or the espeak voice).
    voice: Option<String>,
    created: Instant,
    pipeline: SessionPipeline,
    _guard: NullOnDrop,
    events: broadcast::Sender<SessionEvent>,
    viewers: Mutex<HashMap<String, Viewer>>,
    /// When the session last had a viewer (or was created): for the idle reaper.
    last_watched: Mutex<Instant>,
    timing: SayTiming,
    next_viewer: AtomicU64,
    /// The one WHIP publisher, if any: its id and branch.
    publisher: Mutex<Option<(String, Publisher)>>,
    /// A publisher is negotiating (see `registry::PublisherClaim`).
    publisher_claimed: Mutex<bool>,
    next_publisher: AtomicU64,
    /// Whether the avatar is sounding an utterance (between speech-started and -ended).
    speaking: AtomicBool,
    /// Since when (running time) the avatar's voice is held because a person may have begun
    /// to speak over it; barge-in confirms the hold or lets it go.
    held: Mutex<Option<gst::ClockTime>>,
    /// Restreams and recordings, in the order they were added.
    outputs: Mutex<Vec<Arc<output::Output>>>,
    next_output: AtomicU64,
    pub conversation: Arc<Conversation>,
    /// Its share of the lip-sync device (neural engine only), given back when it ends.
    reservation: Mutex<Option<admission::Reservation>>,
}

impl Session {
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            avatar: self.plan.avatar.name().to_owned(),
            engine: self.plan.engine.name().to_owned(),
            lang: self.plan.lang.clone(),
            voice: self.voice.clone(),
            tts: self.plan.tts.name().to_owned(),
            conversation: self.conversation.id.clone(),
            listen: self.plan.listen.name().to_owned(),
            viewers: self.viewer_count(),
            age_secs: self.created.elapsed().as_secs(),
            whep_url: format!("/whep/{}", self.id),
            whip_url: format!("/whip/{}", self.id),
            publisher: self.publisher_id(),
            events_url: format!("/api/v1/sessions/{}/events", self.id),
            outputs: self.outputs(),
        }
    }

    /// The session's outputs now.
    pub fn outputs(&self) -> Vec<output::OutputInfo> {
        self.outputs
            .lock()
            .unwrap()
            .iter()
            .map(|o| o.info())
            .collect()
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
            self.pipeline.speech.push_emotion(emotion, intensity);
        }
        self.timing.asked();
        self.pipeline.speech.say(text);
    }

    pub fn interrupt(&self) {
        // Stop the answer being written as well as the one being spoken.
        self.conversation.cancel();
        self.pipeline.speech.interrupt();
        self.timing.clear();
    }

    /// When the latest says' first lip-synced frames left the encoder, oldest first.
    pub fn say_first_frames(&self) -> Vec<Instant> {
        self.timing.first_frames()
    }

    /// The latest say → first lip-synced frame latencies, oldest first.
    pub fn say_latencies(&self) -> Vec<Duration> {
        self.timing.latencies()
    }

    /// Whether the avatar is talking, or an answer it will speak is still being written.
    pub fn is_answering(&self) -> bool {
        self.speaking.load(Ordering::SeqCst) || self.conversation.is_running()
    }

    /// Mutes the avatar's answer the moment a person may have begun to speak over it (the
    /// first frame of their speech), so that it falls silent within a frame or two instead
    /// of after the `min_interrupt_ms` that confirms a barge-in. Nothing is held while the
    /// avatar is not answering.
    pub(crate) fn hold_voice(&self) {
        let mut held = self.held.lock().unwrap();
        if held.is_none() && self.is_answering() {
            *held = Some(self.running_time().unwrap_or_default());
            self.pipeline.hold_voice(true);
        }
    }

    /// Lets a hold go: the possible speech was not speech, or the answer it covered has
    /// stopped.
    pub(crate) fn release_voice(&self) {
        if self.held.lock().unwrap().take().is_some() {
            self.pipeline.hold_voice(false);
        }
    }

    /// When the voice was held, if it is.
    pub(crate) fn held_since(&self) -> Option<gst::ClockTime> {
        *self.held.lock().unwrap()
    }

    /// The session's GStreamer graph (benchmarks and diagnostics watch it).
    pub fn pipeline(&self) -> &SessionPipeline {
        &self.pipeline
    }

    /// The session's running time now (the time base of its audio).
    pub fn running_time(&self) -> Option<gst::ClockTime> {
        self.pipeline.pipeline.current_running_time()
    }

    pub fn publisher_id(&self) -> Option<String> {
        self.publisher
            .lock()
            .unwrap()
            .as_ref()
            .map(|(id, _)| id.clone())
    }

    pub fn publisher_mids(&self, publisher: &str) -> Option<Vec<Option<String>>> {
        match self.publisher.lock().unwrap().as_ref() {
            Some((id, p)) if id == publisher => Some(p.mids.clone()),
            _ => None,
        }
    }

    pub fn add_publisher_candidates(
        &self,
        publisher: &str,
        c: &[signalling::TrickleCandidate],
    ) -> Result<(), SessionError> {
        match self.publisher.lock().unwrap().as_ref() {
            Some((id, p)) if id == publisher => {
                p.add_candidates(c);
                Ok(())
            }
            _ => Err(SessionError::PublisherNotFound {
                session: self.id.clone(),
                publisher: publisher.to_owned(),
            }),
        }
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

    pub fn add_candidates(
        &self,
        viewer: &str,
        c: &[signalling::TrickleCandidate],
    ) -> Result<(), SessionError> {
        match self.viewers.lock().unwrap().get(viewer) {
            Some(v) => {
                v.add_candidates(c);
                Ok(())
            }
            None => Err(SessionError::ViewerNotFound {
                session: self.id.clone(),
                viewer: viewer.to_owned(),
            }),
        }
    }
}

/// A conversation speaks through its session.
impl Speaker for Session {
    fn say(&self, text: &str, mood: Option<(Emotion, f64)>) {
        Session::say(self, text, mood);
    }

    fn emit(&self, event: ConversationEvent) {
        Session::emit(self, event.into());
    }

    fn language(&self) -> &str {
        &self.plan.lang
    }
}

#[cfg(test)]
mod output_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod whip_tests;
