//! A WHIP publisher: one `webrtcbin` receiving a voice into the session.
//!
//! ```text
//! webrtcbin ─ (audio) rtpopusdepay ! opusdec ! audioconvert ! audioresample
//!             converse: ! 16 kHz mono ! vad ! asr ! fakesink   the turns and words go to the bus
//!             drive:    → the session's "voice_in" mixer      the voice is the avatar's
//!           └ (video, e.g. OBS's H.264) fakesink    answered, received, dropped
//! ```
//!
//! The branch lives in the session's pipeline, so `vad` and `asr` post on the session's bus
//! and their timestamps are the session's running time (what barge-in compares with the
//! avatar's speech). Removing the publisher removes only its elements.

use super::pipeline::SessionPipeline;
use crate::config::Config;
use crate::signalling::PublishPlan;
use anyhow::{anyhow, Context};
use gst::prelude::*;
use std::sync::{Arc, Mutex};

pub struct Publisher {
    pub webrtcbin: gst::Element,
    /// Everything added to the pipeline for this publisher (the decoding branches are added
    /// when the media arrives).
    elements: Arc<Mutex<Vec<gst::Element>>>,
    /// In drive mode, the mixer's pad the voice feeds (released when the publisher goes).
    mixer_pad: Mutex<Option<gst::Pad>>,
    /// The offer's m-line mids, for trickled candidates.
    pub mids: Vec<Option<String>>,
    /// When the publisher's audio last arrived, or it connected (a WebRTC sender keeps
    /// sending, Opus DTX at least every 400 ms): the sign it is still there when ICE and RTCP
    /// are slow to tell.
    pub last_audio: Arc<Mutex<Option<std::time::Instant>>>,
    /// Where the received audio enters the branch, and (listening) where it leaves it: what
    /// [`Publisher::drain`] pushes the end of the stream through.
    audio_in: Mutex<Option<gst::Pad>>,
    listened_out: Mutex<Option<gst::Pad>>,
}

/// What the session does with the received voice.
#[derive(Debug, Clone)]
pub enum Ingest {
    /// Listens to a person: voice activity and recognition.
    Converse(Listening),
    /// The voice is the avatar's: it joins the session's voice mixer.
    Drive,
}

/// How the received voice is listened to.
#[derive(Debug, Clone)]
pub struct Listening {
    pub vad_model: std::path::PathBuf,
    pub threshold: f32,
    pub min_speech_ms: u32,
    pub end_silence_ms: u32,
    pub pre_roll_ms: u32,
    pub asr: gstfacecastlisten::AsrEngine,
    pub asr_base_url: Option<String>,
    pub asr_model: String,
    pub asr_api_key: Option<String>,
    pub language: String,
    pub asr_timeout_ms: u32,
    pub max_utterance_secs: u32,
}

impl Listening {
    pub fn from_config(config: &Config, session_language: &str) -> Self {
        let v = &config.voice_input;
        let a = &config.asr;
        Self {
            vad_model: config.vad_model(),
            threshold: v.threshold,
            min_speech_ms: v.min_interrupt_ms,
            end_silence_ms: v.end_of_turn_ms,
            pre_roll_ms: v.pre_roll_ms,
            asr: a.engine(),
            asr_base_url: a.base_url.clone(),
            asr_model: a.model.clone(),
            asr_api_key: a.api_key(),
            language: a
                .language
                .clone()
                .unwrap_or_else(|| session_language.to_owned()),
            asr_timeout_ms: (a.timeout_secs * 1000).min(600_000) as u32,
            max_utterance_secs: a.max_utterance_secs,
        }
    }

    /// Checks what can be checked before a publisher connects (so it gets a clear `4xx`/`5xx`
    /// rather than a session error later).
    pub fn check(&self) -> Result<(), String> {
        if !self.vad_model.is_file() {
            return Err(format!(
                "the voice activity model {} is missing: scripts/fetch-runtime.sh installs it (make run does), or `pip download silero-vad --no-deps` and take silero_vad/data/silero_vad.onnx from the wheel",
                self.vad_model.display()
            ));
        }
        if self.asr == gstfacecastlisten::AsrEngine::Pocketsphinx
            && gst::ElementFactory::find("pocketsphinx").is_none()
        {
            return Err("no speech recogniser: install gstreamer1.0-pocketsphinx and pocketsphinx-en-us (scripts/install-deps.sh), or set FACECAST_ASR_BASE_URL to an OpenAI-compatible endpoint".into());
        }
        Ok(())
    }

    /// What follows the decoder: voice activity and recognition.
    fn listening_tail(&self) -> anyhow::Result<Vec<gst::Element>> {
        let caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst_audio::AudioCapsBuilder::new_interleaved()
                    .format(gst_audio::AudioFormat::S16le)
                    .rate(16_000)
                    .channels(1)
                    .build(),
            )
            .build()?;
        let vad = gst::ElementFactory::make("vad")
            .property("model", self.vad_model.to_string_lossy().as_ref())
            .property("threshold", self.threshold)
            .property("min-speech-ms", self.min_speech_ms)
            .property("end-silence-ms", self.end_silence_ms.max(32))
            .property("pre-roll-ms", self.pre_roll_ms)
            .build()?;
        let asr = gst::ElementFactory::make("asr")
            .property("engine", self.asr)
            .property("base-url", self.asr_base_url.as_deref())
            .property("model", self.asr_model.as_str())
            .property("api-key", self.asr_api_key.as_deref())
            .property("language", self.language.as_str())
            .property("timeout-ms", self.asr_timeout_ms.max(100))
            .property("max-utterance-secs", self.max_utterance_secs.clamp(1, 600))
            .build()?;
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()?;
        Ok(vec![caps, vad, asr, sink])
    }
}

fn make(factory: &str) -> anyhow::Result<gst::Element> {
    gst::ElementFactory::make(factory)
        .build()
        .with_context(|| format!("GStreamer element '{factory}' is missing"))
}

/// The received audio, decoded: RTP Opus → raw audio at any rate.
fn decoder() -> anyhow::Result<Vec<gst::Element>> {
    // Leaky: a stalled consumer never backs up into webrtcbin.
    let queue = gst::ElementFactory::make("queue")
        .property("max-size-time", 2_000_000_000u64)
        .property_from_str("leaky", "downstream")
        .build()?;
    let dec = gst::ElementFactory::make("opusdec")
        .property("plc", true)
        .build()?;
    Ok(vec![
        queue,
        make("rtpopusdepay")?,
        dec,
        make("audioconvert")?,
        make("audioresample")?,
    ])
}

impl Publisher {
    /// Adds a publisher to the session's pipeline and answers `offer`. On failure nothing is
    /// left behind.
    pub async fn connect(
        id: &str,
        session: &SessionPipeline,
        config: &Config,
        ingest: Ingest,
        offer: gst_sdp::SDPMessage,
        plan: &PublishPlan,
    ) -> anyhow::Result<(Publisher, String)> {
        let mids = offer
            .medias()
            .map(|m| m.attribute_val("mid").map(String::from))
            .collect();
        let webrtcbin = super::webrtc::webrtcbin(&format!("publisher-{id}"), config)?;
        webrtcbin.set_property("latency", config.voice_input.jitter_buffer_ms);
        let publisher = Publisher {
            webrtcbin: webrtcbin.clone(),
            elements: Arc::new(Mutex::new(vec![webrtcbin.clone()])),
            mixer_pad: Mutex::new(None),
            mids,
            last_audio: Arc::default(),
            audio_in: Mutex::new(None),
            listened_out: Mutex::new(None),
        };
        let result = publisher
            .negotiate(session, config, ingest, offer, plan)
            .await;
        match result {
            Ok(answer) => Ok((publisher, answer)),
            Err(e) => {
                let mut publisher = publisher;
                publisher.disconnect(session);
                Err(e)
            }
        }
    }

    async fn negotiate(
        &self,
        session: &SessionPipeline,
        config: &Config,
        ingest: Ingest,
        offer: gst_sdp::SDPMessage,
        plan: &PublishPlan,
    ) -> anyhow::Result<String> {
        let pipeline = session.pipeline.clone();
        // The branch is built and started now, before the answer, so the model is loaded (or
        // its failure reported) before the first packet: the first words are heard in time,
        // not behind a start-up backlog.
        let mut branch = decoder()?;
        if let Ingest::Converse(listening) = &ingest {
            branch.extend(listening.listening_tail()?);
        }
        pipeline.add_many(&branch)?;
        self.elements.lock().unwrap().extend(branch.iter().cloned());
        gst::Element::link_many(&branch)?;
        if let Ingest::Drive = ingest {
            let mixer = session
                .voice_in
                .as_ref()
                .context("this session was not created with listen=drive")?;
            let pad = mixer
                .request_pad_simple("sink_%u")
                .context("the voice mixer refused a pad")?;
            *self.mixer_pad.lock().unwrap() = Some(pad.clone());
            let last = branch.last().expect("the decoder has elements");
            last.static_pad("src")
                .unwrap()
                .link(&pad)
                .map_err(|e| anyhow!("cannot feed the voice into the session: {e:?}"))?;
        }
        for e in &branch {
            e.sync_state_with_parent()
                .with_context(|| format!("cannot start {} for the publisher", e.name()))?;
        }
        let audio_in = branch[0].static_pad("sink").unwrap();
        *self.audio_in.lock().unwrap() = Some(audio_in.clone());
        if let Ingest::Converse(_) = &ingest {
            *self.listened_out.lock().unwrap() = branch.last().and_then(|e| e.static_pad("sink"));
        }
        let last_audio = self.last_audio.clone();
        audio_in.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            *last_audio.lock().unwrap() = Some(std::time::Instant::now());
            gst::PadProbeReturn::Ok
        });
        // Media arrives on new pads: audio is listened to, anything else is dropped.
        let elements = self.elements.clone();
        let weak_pipeline = pipeline.downgrade();
        self.webrtcbin.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak_pipeline.upgrade() else {
                return;
            };
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let is_audio = pad
                .current_caps()
                .or_else(|| Some(pad.query_caps(None)))
                .and_then(|c| {
                    c.structure(0)
                        .and_then(|s| s.get::<&str>("media").ok().map(|m| m == "audio"))
                })
                .unwrap_or(false);
            let linked = if is_audio && !audio_in.is_linked() {
                pad.link(&audio_in)
                    .map(|_| ())
                    .map_err(|e| anyhow!("cannot link the publisher's audio: {e:?}"))
            } else {
                // Video (OBS sends H.264), or a second audio stream: received and dropped.
                (|| {
                    let sink = gst::ElementFactory::make("fakesink")
                        .property("sync", false)
                        .property("async", false)
                        .build()?;
                    pipeline.add(&sink)?;
                    elements.lock().unwrap().push(sink.clone());
                    sink.sync_state_with_parent()?;
                    pad.link(&sink.static_pad("sink").unwrap())
                        .map_err(|e| anyhow!("cannot link the publisher's media: {e:?}"))?;
                    Ok(())
                })()
            };
            if let Err(e) = linked {
                tracing::error!("publisher media branch: {e:#}");
            }
        });
        super::webrtc::start_in(&self.webrtcbin, &pipeline, config)?;
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "audio")
            .field("encoding-name", "OPUS")
            .field("clock-rate", 48000i32)
            .field("payload", plan.audio.payload as i32)
            .build();
        self.webrtcbin
            .emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
            );
        super::webrtc::answer(&self.webrtcbin, offer).await
    }

    /// Adds trickled remote candidates.
    pub fn add_candidates(&self, candidates: &[crate::signalling::TrickleCandidate]) {
        super::webrtc::add_candidates(&self.webrtcbin, candidates);
    }

    /// Ends the publisher's stream gracefully: no more voice comes in, and a turn the person
    /// was in the middle of is ended and recognised (its transcript posted) before this
    /// returns, or `within` has passed, or the session has stopped. Then
    /// [`Publisher::disconnect`] removes the branch.
    pub fn drain(&self, within: std::time::Duration, session: &SessionPipeline) {
        // Locked, so that the session ending meanwhile cannot start it again (see
        // `SessionPipeline::retire`, which removes it later).
        self.webrtcbin.set_locked_state(true);
        let _ = self.webrtcbin.set_state(gst::State::Null);
        let (Some(audio_in), Some(out)) = (
            self.audio_in.lock().unwrap().clone(),
            self.listened_out.lock().unwrap().clone(),
        ) else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // The end of stream stops here: past the branch it would count towards the whole
        // pipeline's end.
        out.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data {
                if e.type_() == gst::EventType::Eos {
                    let _ = tx.send(());
                    // Not `Drop`: see the phoneme probe in `pipeline.rs`.
                    return gst::PadProbeReturn::Handled;
                }
            }
            gst::PadProbeReturn::Ok
        });
        if !audio_in.send_event(gst::event::Eos::new()) {
            return;
        }
        // A session that ends meanwhile stops its recogniser, and this end of stream never
        // arrives: the wait ends then too, rather than keep the session for `within`.
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    if session.pipeline.current_state() > gst::State::Ready => {}
                _ => return,
            }
        }
    }

    /// Detaches the publisher from the running pipeline and removes its elements.
    pub fn disconnect(&mut self, session: &SessionPipeline) {
        let elements: Vec<gst::Element> = self.elements.lock().unwrap().drain(..).collect();
        session.retire(elements);
        // The mixer stops waiting for this voice; the speech alone goes on.
        if let (Some(pad), Some(mixer)) = (self.mixer_pad.lock().unwrap().take(), &session.voice_in)
        {
            mixer.release_request_pad(&pad);
        }
    }
}
