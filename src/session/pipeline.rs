//! One session's GStreamer pipeline, as **inputs → face → outputs**:
//!
//! ```text
//! input   speechsynth is-live ! volume "hold" ─ tee ─ queue ──────────────── lipsync.audio
//!                                  └ queue ! audioconvert ! audioresample ! opusenc ─ tee "audio_out"
//!         (listen=drive: speechsynth ! audiomixer "voice_in" ! 48 kHz mono ─ tee, and the
//!          publisher's decoded voice joins the mixer: it is the avatar's voice)
//! face    avatarsrc is-live ! caps ! queue ──────────────────────────────── lipsync.video
//!         lipsync ! queue (leaky) ! deltaconvert ─ tee "video_raw"   (I420: only what changed)
//! encode  video_raw ─ vp8enc | x264enc ─ tee "video_out"          (the viewers' codec)
//!         video_raw ─ queue (leaky) ! x264enc ─ tee                (H.264 for outputs, on demand)
//!         audio_raw ─ opusenc ─ tee "audio_out"                    (Opus for viewers)
//!         audio_raw ─ queue (leaky) ! voaacenc ─ tee               (AAC for outputs, on demand)
//! outputs branches on the encoded tees: [`SessionPipeline::tap`] (WHEP viewers, restreams,
//!         recordings)
//! ```
//!
//! Each codec is encoded once per session, whoever needs it ([`super::encoders`]): outputs
//! share the viewers' H.264 encoder when viewers use H.264, and an on-demand encoder lives
//! exactly as long as some branch taps it. Branches come and go while the session runs, each
//! behind its own queue so that one failing or stalling ends only itself. The leaky queue
//! before the encoders is the one place frames may be dropped (if encoding falls behind); its
//! overruns are the session's dropped-frame count.

use super::encoders;
use super::plan::{AvatarChoice, ListenMode, SessionPlan};
use crate::config::{Config, VideoCodec};
use anyhow::Context;
use facecast_onnx::Device;
use gst::prelude::*;
use gstfacecastlipsync::EngineKind;
use gstfacecasttts::SpeechSynth;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The elements a session talks to after the pipeline is built.
pub struct SessionPipeline {
    pub pipeline: gst::Pipeline,
    /// The input: text to speech.
    pub speech: SpeechSynth,
    /// In drive mode, the mixer a published voice joins (speech is mixed in too).
    pub voice_in: Option<gst::Element>,
    /// In converse mode, mutes the avatar's voice the moment a person may have begun to
    /// speak over it, before barge-in is confirmed (see [`SessionPipeline::hold_voice`]).
    hold: Option<gst::Element>,
    /// The face: audio + avatar → the avatar talking.
    pub lipsync: gst::Element,
    encoder: gst::Element,
    encoder_queue: gst::Element,
    audio_encoder: gst::Element,
    /// The output seam: encoded video and audio, fanned out.
    video_out: gst::Element,
    audio_out: gst::Element,
    /// Raw frames and sound, for the encoders started on demand.
    video_raw: gst::Element,
    audio_raw: gst::Element,
    /// Encoders running because some branch taps them, by stream.
    on_demand: Mutex<HashMap<Encoded, OnDemand>>,
    /// What the on-demand encoders are built from.
    config: Config,
    /// Told of each frame an encoder's queue dropped (see [`Self::on_frame_dropped`]).
    frame_dropped: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

/// Which encoded stream an output branch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoded {
    /// The viewers' video codec (`video.codec`).
    Video,
    /// Opus, for viewers.
    Audio,
    /// H.264, for outputs: the viewers' encoder when they use H.264, else one on demand.
    H264,
    /// AAC, for outputs: encoded while some output taps it.
    Aac,
}

/// An encoder started for the branches that tap it: `raw tee → queue → encoder … → tee`.
struct OnDemand {
    /// The raw tee's pad feeding it.
    feed: gst::Pad,
    elements: Vec<gst::Element>,
    tee: gst::Element,
    users: usize,
}

/// One output branch's hold on an encoded stream; [`SessionPipeline::untap`] gives it back.
pub struct Tap {
    tee: gst::Element,
    pad: gst::Pad,
    /// The on-demand encoder this tap keeps running, if any.
    on_demand: Option<Encoded>,
}

impl Tap {
    /// Asks the encoder for a keyframe now (a new viewer should not wait for the next one).
    pub fn request_keyframe(&self) {
        let ev = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        self.pad.send_event(ev);
    }
}

fn make(factory: &str, name: Option<&str>) -> anyhow::Result<gst::Element> {
    let mut b = gst::ElementFactory::make(factory);
    if let Some(name) = name {
        b = b.name(name);
    }
    b.build().with_context(|| {
        format!("GStreamer element '{factory}' is missing: run scripts/install-deps.sh")
    })
}

/// The speech input: `speechsynth` (with, in drive mode, the mixer a live voice joins) and
/// the tee that sends its audio to the face and to the audio encoder.
struct SpeechInput {
    speech: SpeechSynth,
    voice_in: Option<gst::Element>,
    hold: Option<gst::Element>,
    tee: gst::Element,
}

/// How long the drive mixer waits for a live voice's audio beyond the jitter buffer (decoding
/// and scheduling); later audio is dropped, not waited for. Audio on time is mixed at once, so
/// this costs nothing while the voice flows. With 30 ms, on a busy machine, a whole voice
/// sometimes never reached the mix (most likely all of it arrived later than the wait; not
/// proven); with 150 ms the drive test passed every run since.
const VOICE_IN_MARGIN_MS: u32 = 150;

fn build_input(
    pipeline: &gst::Pipeline,
    config: &Config,
    plan: &SessionPlan,
    voice: Option<&str>,
) -> anyhow::Result<SpeechInput> {
    let speech = gst::ElementFactory::make("speechsynth")
        .name("speech")
        .property("is-live", true)
        .property("engine", plan.tts)
        .property("language", plan.lang.as_str())
        .property("voice", voice)
        .build()?
        .downcast::<SpeechSynth>()
        .map_err(|_| anyhow::anyhow!("'speechsynth' is not facecast's SpeechSynth"))?;
    let tee = make("tee", None)?;
    pipeline.add_many([speech.upcast_ref(), &tee])?;
    if plan.listen != ListenMode::Drive {
        let hold = make("volume", Some("hold"))?;
        pipeline.add(&hold)?;
        gst::Element::link_many([speech.upcast_ref(), &hold, &tee])?;
        return Ok(SpeechInput {
            speech,
            voice_in: None,
            hold: Some(hold),
            tee,
        });
    }
    // Drive: the live voice and the (still usable) speech are mixed; speechsynth's live
    // silence keeps the stream going while nobody talks. The mixer waits for the voice as
    // long as its jitter buffer holds it, and not for a voice that is not there (pads that
    // never had data are ignored, once the speech flows: see below).
    let wait_ms = config.voice_input.jitter_buffer_ms + VOICE_IN_MARGIN_MS;
    let mixer = gst::ElementFactory::make("audiomixer")
        .name("voice_in")
        .property("latency", gst::ClockTime::from_mseconds(wait_ms.into()))
        .build()
        .context("GStreamer element 'audiomixer' is missing: run scripts/install-deps.sh")?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AudioFormat::S16le)
                .rate(48_000)
                .channels(1)
                .build(),
        )
        .build()?;
    // The synthesiser speaks at its voice's rate (22.05 kHz for most), the mixer at the
    // decoded voice's 48 kHz.
    let convert = make("audioconvert", None)?;
    let resample = make("audioresample", None)?;
    pipeline.add_many([&convert, &resample, &mixer, &caps])?;
    gst::Element::link_many([
        speech.upcast_ref(),
        &convert,
        &resample,
        &mixer,
        &caps,
        &tee,
    ])?;
    // Inactive pads are ignored only from the speech's first buffer on. GStreamer 1.22's
    // aggregator can time out before the pipeline's base time is set; with the speech pad
    // still empty, and so ignored, the mixer then saw no pads at all and ended its stream
    // (EOS) at start, silencing the session for good (about one start in five here).
    let weak_mixer = mixer.downgrade();
    resample
        .static_pad("src")
        .expect("audioresample has a src pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            if let Some(mixer) = weak_mixer.upgrade() {
                mixer.set_property("ignore-inactive-pads", true);
            }
            gst::PadProbeReturn::Remove
        });
    // The lips follow the sound, not the text: speechsynth's phoneme announcements would
    // make the viseme engine ignore the live voice.
    speech
        .static_pad("src")
        .expect("speechsynth has a src pad")
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
            let is_phoneme = info
                .event()
                .and_then(|e| e.structure())
                .is_some_and(|s| s.name() == facecast_common::events::PHONEME_EVENT);
            if is_phoneme {
                // `Handled`, not `Drop`: gstreamer-rs has already taken the event out of
                // the probe's info, and frees it. With `Drop`, GStreamer then unrefs the
                // emptied pointer too ("gst_mini_object_unref: assertion 'mini_object !=
                // NULL' failed", a CRITICAL in the log each time).
                gst::PadProbeReturn::Handled
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    Ok(SpeechInput {
        speech,
        voice_in: Some(mixer),
        hold: None,
        tee,
    })
}

/// The face: the avatar source and `lipsync`, fed by the input's audio.
fn build_face(
    pipeline: &gst::Pipeline,
    config: &Config,
    plan: &SessionPlan,
    audio: &gst::Element,
    seed: u64,
    device: Device,
) -> anyhow::Result<gst::Element> {
    let v = &config.video;
    let (registered, (width, height)) = match &plan.avatar {
        AvatarChoice::Builtin => (None, (v.width, v.height)),
        // A registered avatar is shown at its own size.
        AvatarChoice::Registered {
            name,
            width,
            height,
        } => (Some(name.as_str()), (*width, *height)),
    };
    let avatar = gst::ElementFactory::make("avatarsrc")
        .property("is-live", true)
        .property("seed", seed)
        .property("avatar", registered)
        .build()?;
    let avatar_caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst_video::VideoCapsBuilder::new()
                .width(width as i32)
                .height(height as i32)
                .framerate(gst::Fraction::new(v.fps as i32, 1))
                .build(),
        )
        .build()?;
    let lipsync = make("lipsync", Some("lipsync"))?;
    if plan.engine == EngineKind::Wav2lip {
        let model = config
            .wav2lip_model()
            .context("no lip-sync model configured (lipsync.model)")?;
        let l = &config.lipsync;
        let io = config.wav2lip_io();
        lipsync.set_property("engine", EngineKind::Wav2lip);
        lipsync.set_property("model", model.to_string_lossy().as_ref());
        lipsync.set_property("device", device.to_string());
        lipsync.set_property("batch-size", l.batch_size);
        lipsync.set_property("batch-wait", l.batch_wait_ms);
        lipsync.set_property("frame-budget", l.frame_budget_ms);
        lipsync.set_property("threads", l.threads);
        lipsync.set_property("workers", l.workers);
        lipsync.set_property("gpu-frames", l.gpu_frames_mb);
        lipsync.set_property("mel-input", io.mel);
        lipsync.set_property("face-input", io.face);
        lipsync.set_property("output-name", io.output);
    }
    let lip_queue = make("queue", None)?;
    // lipsync holds frames until their audio (and its look-ahead) is in: the live avatar
    // must be allowed to be that late, or the latency cannot be configured and lipsync times
    // out and draws frames as silence before their sound arrives.
    let avatar_queue = gst::ElementFactory::make("queue")
        .property("max-size-time", 300_000_000u64)
        .property("max-size-buffers", 0u32)
        .property("max-size-bytes", 0u32)
        .build()?;
    pipeline.add_many([&avatar, &avatar_caps, &avatar_queue, &lip_queue, &lipsync])?;
    audio.link(&lip_queue)?;
    lip_queue.link_pads(None, &lipsync, Some("audio"))?;
    gst::Element::link_many([&avatar, &avatar_caps, &avatar_queue])?;
    avatar_queue.link_pads(None, &lipsync, Some("video"))?;
    Ok(lipsync)
}

impl SessionPipeline {
    /// `lipsync_device`: where a neural engine's model runs (the device admission placed the
    /// session on).
    pub fn build(
        config: &Config,
        plan: &SessionPlan,
        voice: Option<&str>,
        seed: u64,
        lipsync_device: Device,
    ) -> anyhow::Result<Self> {
        let pipeline = gst::Pipeline::new();
        let input = build_input(&pipeline, config, plan, voice)?;
        let lipsync = build_face(&pipeline, config, plan, &input.tee, seed, lipsync_device)?;

        // Outputs: audio and video encoded once, each onto its tee.
        let audio_queue = make("queue", None)?;
        let aconvert = make("audioconvert", None)?;
        let aresample = make("audioresample", None)?;
        let opus_caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst_audio::AudioCapsBuilder::new_interleaved()
                    .format(gst_audio::AudioFormat::S16le)
                    .rate(48000)
                    .channels(1)
                    .build(),
            )
            .build()?;
        let audio_raw = gst::ElementFactory::make("tee")
            .name("audio_raw")
            .property("allow-not-linked", true)
            .build()?;
        let opus = encoders::viewer_audio()?;
        let audio_out = gst::ElementFactory::make("tee")
            .name("audio_out")
            .property("allow-not-linked", true)
            .build()?;
        let encoder_queue = gst::ElementFactory::make("queue")
            .name("encoder_queue")
            .property("max-size-buffers", 3u32)
            .property("max-size-time", 0u64)
            .property("max-size-bytes", 0u32)
            .property_from_str("leaky", "downstream")
            .build()?;
        // To I420, converting only the pixels that changed: a photo avatar's frames differ
        // in the face box alone, and videoconvert's whole frames were half the CPU of this
        // branch (0.33 of 0.67 ms a 512×512 frame with x264, against 0.03 ms now).
        let vconvert = make("deltaconvert", None)?;
        let video_raw = gst::ElementFactory::make("tee")
            .name("video_raw")
            .property("allow-not-linked", true)
            .build()?;
        let encoder_chain = encoders::viewer_video(config)?;
        let encoder = encoder_chain[0].clone();
        let video_out = gst::ElementFactory::make("tee")
            .name("video_out")
            .property("allow-not-linked", true)
            .build()?;
        pipeline.add_many([
            &audio_queue,
            &aconvert,
            &aresample,
            &opus_caps,
            &audio_raw,
            &opus,
            &audio_out,
            &encoder_queue,
            &vconvert,
            &video_raw,
            &video_out,
        ])?;
        pipeline.add_many(&encoder_chain)?;
        gst::Element::link_many([
            &input.tee,
            &audio_queue,
            &aconvert,
            &aresample,
            &opus_caps,
            &audio_raw,
            &opus,
            &audio_out,
        ])?;
        gst::Element::link_many([&lipsync, &encoder_queue, &vconvert, &video_raw])?;
        gst::Element::link_many(
            std::iter::once(&video_raw)
                .chain(encoder_chain.iter())
                .chain(std::iter::once(&video_out)),
        )?;
        Ok(Self {
            pipeline,
            speech: input.speech,
            voice_in: input.voice_in,
            hold: input.hold,
            lipsync,
            encoder,
            encoder_queue,
            audio_encoder: opus,
            video_out,
            audio_out,
            video_raw,
            audio_raw,
            on_demand: Mutex::new(HashMap::new()),
            config: config.clone(),
            frame_dropped: Mutex::new(None),
        })
    }

    /// Links `sink` (an output branch's first pad) to the encoded `stream`, starting its
    /// encoder if nothing taps it yet. The branch's elements must already be in the pipeline
    /// and started.
    pub fn tap(&self, stream: Encoded, sink: &gst::Pad) -> anyhow::Result<Tap> {
        let shared = match stream {
            Encoded::Video => Some(&self.video_out),
            Encoded::Audio => Some(&self.audio_out),
            Encoded::H264 if self.config.video.codec == VideoCodec::H264 => Some(&self.video_out),
            Encoded::H264 | Encoded::Aac => None,
        };
        let mut on_demand = self.on_demand.lock().unwrap();
        let tee = match shared {
            Some(tee) => tee.clone(),
            None => match on_demand.get(&stream) {
                Some(running) => running.tee.clone(),
                None => {
                    let started = self.start_encoder(stream)?;
                    let tee = started.tee.clone();
                    on_demand.insert(stream, started);
                    tee
                }
            },
        };
        let pad = tee
            .request_pad_simple("src_%u")
            .context("tee refused a src pad")?;
        if let Err(e) = pad.link(sink) {
            tee.release_request_pad(&pad);
            // An encoder started for this tap alone goes with it.
            let unused = shared.is_none() && on_demand.get(&stream).is_some_and(|r| r.users == 0);
            drop(on_demand);
            if unused {
                self.release_encoder(stream);
            }
            anyhow::bail!("cannot link the {stream:?} output to its branch: {e:?}");
        }
        let kept = shared.is_none().then_some(stream);
        if let Some(s) = kept {
            if let Some(running) = on_demand.get_mut(&s) {
                running.users += 1;
            }
        }
        Ok(Tap {
            tee,
            pad,
            on_demand: kept,
        })
    }

    /// Unlinks a branch from its encoded stream; an on-demand encoder nobody taps any more
    /// is stopped and removed.
    pub fn untap(&self, tap: Tap) {
        if let Some(peer) = tap.pad.peer() {
            let _ = tap.pad.unlink(&peer);
        }
        tap.tee.release_request_pad(&tap.pad);
        if let Some(stream) = tap.on_demand {
            self.release_encoder(stream);
        }
    }

    /// Builds, links and starts the encoder of `stream` on its raw tee (with no users yet).
    fn start_encoder(&self, stream: Encoded) -> anyhow::Result<OnDemand> {
        let (raw, chain) = match stream {
            Encoded::H264 => (&self.video_raw, encoders::output_video(&self.config)?),
            Encoded::Aac => (&self.audio_raw, encoders::output_audio(&self.config)?),
            Encoded::Video | Encoded::Audio => unreachable!("always encoded"),
        };
        // Its own thread, and frames dropped rather than waited for: a slow encoder here
        // never holds up the viewers' one.
        let queue = gst::ElementFactory::make("queue")
            .property("max-size-buffers", 5u32)
            .property("max-size-time", 0u64)
            .property("max-size-bytes", 0u32)
            .property_from_str("leaky", "downstream")
            .build()?;
        if let (Encoded::H264, Some(dropped)) = (stream, self.frame_dropped.lock().unwrap().clone())
        {
            queue.connect("overrun", false, move |_| {
                dropped();
                None
            });
        }
        let tee = gst::ElementFactory::make("tee")
            .property("allow-not-linked", true)
            .build()?;
        let mut elements = vec![queue];
        elements.extend(chain);
        elements.push(tee.clone());
        self.pipeline.add_many(&elements)?;
        let started = (|| -> anyhow::Result<gst::Pad> {
            gst::Element::link_many(&elements)?;
            for e in elements.iter().rev() {
                e.sync_state_with_parent()?;
            }
            let feed = raw
                .request_pad_simple("src_%u")
                .context("tee refused a src pad")?;
            feed.link(&elements[0].static_pad("sink").expect("queues have a sink"))
                .map_err(|e| anyhow::anyhow!("cannot link the {stream:?} encoder: {e:?}"))?;
            Ok(feed)
        })();
        match started {
            Ok(feed) => {
                tracing::debug!("{stream:?} encoder started");
                Ok(OnDemand {
                    feed,
                    elements,
                    tee,
                    users: 0,
                })
            }
            Err(e) => {
                for el in &elements {
                    let _ = el.set_state(gst::State::Null);
                    let _ = self.pipeline.remove(el);
                }
                Err(e)
            }
        }
    }

    /// One user fewer for `stream`'s on-demand encoder; the last one stops it.
    fn release_encoder(&self, stream: Encoded) {
        let stopped = {
            let mut on_demand = self.on_demand.lock().unwrap();
            match on_demand.get_mut(&stream) {
                Some(running) if running.users > 1 => {
                    running.users -= 1;
                    None
                }
                Some(_) => on_demand.remove(&stream),
                None => None,
            }
        };
        let Some(stopped) = stopped else { return };
        let raw = match stream {
            Encoded::H264 => &self.video_raw,
            _ => &self.audio_raw,
        };
        if let Some(peer) = stopped.feed.peer() {
            let _ = stopped.feed.unlink(&peer);
        }
        raw.release_request_pad(&stopped.feed);
        self.retire(stopped.elements);
        tracing::debug!("{stream:?} encoder stopped");
    }

    /// Stops `elements` and takes them out of the running pipeline, in the order given.
    ///
    /// Branches leave on their own threads (a publisher draining, a viewer's liveness timer)
    /// while the session may be ending on another: the pipeline's own way down to NULL would
    /// then raise an element we had just stopped back to READY or PAUSED, and we would
    /// remove it, and drop it, running: GStreamer's "Trying to dispose element … but it is in
    /// PAUSED", with its threads left behind. (The WHIP tests that hung in CI had just done
    /// so; a later pipeline's stop waited for ever on a queue's stream lock.) So each
    /// element's state is locked first, which the pipeline's state changes skip, and it is
    /// stopped once more after its removal, when nothing else can reach it.
    pub fn retire(&self, elements: impl IntoIterator<Item = gst::Element>) {
        for e in elements {
            e.set_locked_state(true);
            let _ = e.set_state(gst::State::Null);
            let _ = self.pipeline.remove(&e);
            let _ = e.set_state(gst::State::Null);
        }
    }

    /// Mutes (`true`) or unmutes the avatar's voice where it leaves the synthesiser, for the
    /// face and the viewers alike. Speech goes on underneath: a hold that comes to nothing
    /// loses only what it covered. Audio already past this point (the synthesiser's lead)
    /// still plays.
    pub fn hold_voice(&self, held: bool) {
        if let Some(hold) = &self.hold {
            hold.set_property("mute", held);
        }
    }

    /// Calls `dropped` for every frame the encoders could not take in time: the viewers'
    /// one, and the outputs' H.264 encoder while it runs.
    pub fn on_frame_dropped(&self, dropped: impl Fn() + Send + Sync + 'static) {
        let dropped: Arc<dyn Fn() + Send + Sync> = Arc::new(dropped);
        let d = dropped.clone();
        self.encoder_queue.connect("overrun", false, move |_| {
            d();
            None
        });
        *self.frame_dropped.lock().unwrap() = Some(dropped);
    }

    /// Calls `heard(running_time, samples)` for every buffer of the session's sound as it
    /// goes to the audio encoder (48 kHz mono S16): what viewers will hear, on the session's
    /// running time.
    pub fn on_audio_out(&self, heard: impl Fn(gst::ClockTime, &[i16]) + Send + Sync + 'static) {
        let pad = self
            .audio_encoder
            .static_pad("sink")
            .expect("encoders have a sink pad");
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let at = running_time_on(pad, buffer.pts().unwrap_or_default());
            if let Ok(map) = buffer.map_readable() {
                let samples: Vec<i16> = map
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]))
                    .collect();
                heard(at, &samples);
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// Calls `encoded(end)` for every encoded frame, with the running time its display ends.
    pub fn on_frame_encoded(&self, encoded: impl Fn(gst::ClockTime) + Send + Sync + 'static) {
        let pad = self
            .encoder
            .static_pad("src")
            .expect("encoders have a src pad");
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            // Encoders may shift timestamps (x264 adds 1000 h and says so in its segment):
            // compare running times.
            if let Some(pts) = buffer.pts() {
                encoded(running_time_on(
                    pad,
                    pts + buffer.duration().unwrap_or_default(),
                ));
            }
            gst::PadProbeReturn::Ok
        });
    }
}

/// The running time of `t` on `pad`'s current segment (`t` itself without one).
pub fn running_time_on(pad: &gst::Pad, t: gst::ClockTime) -> gst::ClockTime {
    pad.sticky_event::<gst::event::Segment>(0)
        .and_then(|e| e.segment().downcast_ref::<gst::ClockTime>().cloned())
        .and_then(|s| s.to_running_time(t))
        .unwrap_or(t)
}
