//! One session's GStreamer pipeline: live speech and avatar, lip-synced, encoded once, fanned out
//! to every viewer.
//!
//! ```text
//! speechsynth is-live ─ tee ─ queue ─────────────────────────────────── lipsync.audio
//!                           └ queue ! audioconvert ! audioresample ! opusenc ─ tee "audio_out"
//! avatarsrc is-live ! caps ──────────────────────────────────────────── lipsync.video
//! lipsync ! queue (leaky) ! videoconvert ! vp8enc | (nvh264enc|x264enc) ─ tee "video_out"
//! ```
//!
//! The two output tees are where viewers attach ([`super::viewer`]). The leaky queue before the
//! encoder is the one place frames may be dropped (if encoding falls behind); its overruns are
//! the session's dropped-frame count.

use crate::config::{Config, VideoCodec};
use anyhow::Context;
use gst::prelude::*;
use gstfacecasttts::speechsynth::SpeechEngine;

/// The elements a session talks to after the pipeline is built.
pub struct SessionPipeline {
    pub pipeline: gst::Pipeline,
    pub speech: gst::Element,
    pub lipsync: gst::Element,
    pub encoder: gst::Element,
    pub encoder_queue: gst::Element,
    pub video_out: gst::Element,
    pub audio_out: gst::Element,
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

/// Which face a session shows and how it talks.
pub struct Face<'a> {
    /// A registered avatar (name, width, height); `None`: the parametric face.
    pub registered: Option<(&'a str, u32, u32)>,
    /// Lip-sync with the configured Wav2Lip model (else the viseme engine).
    pub wav2lip: bool,
}

/// Speech settings of one session.
pub struct Voice<'a> {
    pub engine: SpeechEngine,
    pub language: &'a str,
    pub voice: Option<&'a str>,
}

impl SessionPipeline {
    pub fn build(config: &Config, voice: &Voice, face: &Face, seed: u64) -> anyhow::Result<Self> {
        let v = &config.video;
        let pipeline = gst::Pipeline::new();

        let speech = gst::ElementFactory::make("speechsynth")
            .name("speech")
            .property("is-live", true)
            .property("engine", voice.engine)
            .property("language", voice.language)
            .property("voice", voice.voice)
            .build()?;
        let speech_tee = make("tee", None)?;
        let lip_queue = make("queue", None)?;
        let audio_queue = make("queue", None)?;
        let aconvert = make("audioconvert", None)?;
        let aresample = make("audioresample", None)?;
        let opus_caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst_audio::AudioCapsBuilder::new()
                    .rate(48000)
                    .channels(1)
                    .build(),
            )
            .build()?;
        let opus = gst::ElementFactory::make("opusenc")
            .property("bitrate", 48_000i32)
            .property_from_str("frame-size", "20")
            .build()
            .context("GStreamer element 'opusenc' is missing: run scripts/install-deps.sh")?;
        let audio_out = gst::ElementFactory::make("tee")
            .name("audio_out")
            .property("allow-not-linked", true)
            .build()?;

        let avatar = gst::ElementFactory::make("avatarsrc")
            .property("is-live", true)
            .property("seed", seed)
            .property("avatar", face.registered.map(|r| r.0))
            .build()?;
        // A registered avatar is shown at its own size.
        let (width, height) = face.registered.map_or((v.width, v.height), |r| (r.1, r.2));
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
        if face.wav2lip {
            let model = config
                .wav2lip_model()
                .context("no lip-sync model configured (lipsync.model)")?;
            let l = &config.lipsync;
            lipsync.set_property_from_str("engine", "wav2lip");
            lipsync.set_property("model", model.to_string_lossy().as_ref());
            lipsync.set_property("device", &l.device);
            lipsync.set_property("batch-size", l.batch_size);
            lipsync.set_property("batch-wait", l.batch_wait_ms);
            lipsync.set_property("threads", l.threads);
        }
        let encoder_queue = gst::ElementFactory::make("queue")
            .name("encoder_queue")
            .property("max-size-buffers", 3u32)
            .property("max-size-time", 0u64)
            .property("max-size-bytes", 0u32)
            .property_from_str("leaky", "downstream")
            .build()?;
        let vconvert = make("videoconvert", None)?;
        let encoder_chain = video_encoder(config)?;
        let encoder = encoder_chain[0].clone();
        let video_out = gst::ElementFactory::make("tee")
            .name("video_out")
            .property("allow-not-linked", true)
            .build()?;

        pipeline.add_many([
            &speech,
            &speech_tee,
            &lip_queue,
            &audio_queue,
            &aconvert,
            &aresample,
            &opus_caps,
            &opus,
            &audio_out,
            &avatar,
            &avatar_caps,
            &lipsync,
            &encoder_queue,
            &vconvert,
            &video_out,
        ])?;
        pipeline.add_many(&encoder_chain)?;
        gst::Element::link_many([&speech, &speech_tee])?;
        gst::Element::link_many([&speech_tee, &lip_queue])?;
        lip_queue.link_pads(None, &lipsync, Some("audio"))?;
        gst::Element::link_many([
            &speech_tee,
            &audio_queue,
            &aconvert,
            &aresample,
            &opus_caps,
            &opus,
            &audio_out,
        ])?;
        gst::Element::link_many([&avatar, &avatar_caps])?;
        avatar_caps.link_pads(None, &lipsync, Some("video"))?;
        gst::Element::link_many([&lipsync, &encoder_queue, &vconvert])?;
        gst::Element::link_many(
            std::iter::once(&vconvert)
                .chain(encoder_chain.iter())
                .chain(std::iter::once(&video_out)),
        )?;
        Ok(Self {
            pipeline,
            speech,
            lipsync,
            encoder,
            encoder_queue,
            video_out,
            audio_out,
        })
    }
}

/// The video encoder (first element) and what must follow it, for the configured codec.
fn video_encoder(config: &Config) -> anyhow::Result<Vec<gst::Element>> {
    let v = &config.video;
    let missing =
        |name: &str| format!("GStreamer element '{name}' is missing: run scripts/install-deps.sh");
    match v.codec {
        // Real-time VP8: one thread per session (sessions run in parallel), constant bitrate,
        // a keyframe every two seconds so a joining viewer waits little even without asking.
        VideoCodec::Vp8 => Ok(vec![gst::ElementFactory::make("vp8enc")
            .name("encoder")
            .property("deadline", 1i64)
            .property("cpu-used", 8i32)
            .property("threads", 1i32)
            .property_from_str("end-usage", "cbr")
            .property("target-bitrate", (v.bitrate_kbps * 1000) as i32)
            .property("keyframe-max-dist", (v.fps * 2) as i32)
            .property_from_str("error-resilient", "default")
            .property("lag-in-frames", 0i32)
            .build()
            .with_context(|| missing("vp8enc"))?]),
        VideoCodec::H264 => {
            // NVENC when the GPU has it (nvcodec registers it only where CUDA loads), x264
            // otherwise; both without B-frames or look-ahead, so a frame leaves at once.
            let encoder = if gst::ElementFactory::find("nvh264enc").is_some() {
                gst::ElementFactory::make("nvh264enc")
                    .name("encoder")
                    .property_from_str("preset", "low-latency-hq")
                    .property_from_str("rc-mode", "cbr")
                    .property("bitrate", v.bitrate_kbps)
                    .property("gop-size", (v.fps * 2) as i32)
                    .property("zerolatency", true)
                    .property("bframes", 0u32)
                    .build()
                    .with_context(|| missing("nvh264enc"))?
            } else {
                gst::ElementFactory::make("x264enc")
                    .name("encoder")
                    .property_from_str("tune", "zerolatency")
                    .property_from_str("speed-preset", "ultrafast")
                    .property("bitrate", v.bitrate_kbps)
                    .property("key-int-max", v.fps * 2)
                    .property("threads", 1u32)
                    .build()
                    .with_context(|| missing("x264enc"))?
            };
            tracing::info!(
                "H.264 encoder: {}",
                encoder
                    .factory()
                    .map(|f| f.name().to_string())
                    .unwrap_or_default()
            );
            let caps = gst::ElementFactory::make("capsfilter")
                .property(
                    "caps",
                    gst::Caps::builder("video/x-h264")
                        .field("profile", "constrained-baseline")
                        .field("stream-format", "byte-stream")
                        .field("alignment", "au")
                        .build(),
                )
                .build()?;
            let parse = gst::ElementFactory::make("h264parse")
                .property("config-interval", -1i32)
                .build()
                .with_context(|| missing("h264parse"))?;
            Ok(vec![encoder, caps, parse])
        }
    }
}
