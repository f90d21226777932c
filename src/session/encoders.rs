//! The session's encoders, and what each is for:
//!
//! - the viewers' video codec (`video.codec`: VP8, or H.264 constrained baseline), always
//!   running: it also times `say` → first frame;
//! - Opus for viewers' audio, always running;
//! - H.264 for outputs (RTMP, SRT, recordings): the viewers' encoder itself when viewers use
//!   H.264, else one more encoder, started by the first output and stopped with the last;
//! - AAC for outputs, likewise started and stopped with them.
//!
//! Each builder returns its chain in link order.

use crate::config::{Config, OutputsConfig, VideoCodec};
use anyhow::Context;
use gst::prelude::*;

fn missing(name: &str) -> String {
    format!("GStreamer element '{name}' is missing: run scripts/install-deps.sh")
}

/// What an H.264 encoder is asked for.
struct H264 {
    name: Option<&'static str>,
    bitrate_kbps: u32,
    keyframe_frames: u32,
    /// The profile as caps name it.
    profile: &'static str,
}

/// The viewers' video encoder (named "encoder") and what must follow it.
pub fn viewer_video(config: &Config) -> anyhow::Result<Vec<gst::Element>> {
    let v = &config.video;
    match v.codec {
        // Real-time VP8: one thread per session (sessions run in parallel), constant bitrate,
        // a keyframe every two seconds so a joining viewer waits little even without asking.
        // libvpx's fastest real-time speed: on a 512×512 portrait with a moving box it took
        // half the CPU of speed 8 (0.55 against 1.1 ms a frame here) at the same bitrate and a
        // luma PSNR 0.04 dB lower (47.74 against 47.78 dB).
        VideoCodec::Vp8 => Ok(vec![gst::ElementFactory::make("vp8enc")
            .name("encoder")
            .property("deadline", 1i64)
            .property("cpu-used", 16i32)
            .property("threads", 1i32)
            .property_from_str("end-usage", "cbr")
            .property("target-bitrate", (v.bitrate_kbps * 1000) as i32)
            .property("keyframe-max-dist", (v.fps * 2) as i32)
            .property_from_str("error-resilient", "default")
            .property("lag-in-frames", 0i32)
            .build()
            .with_context(|| missing("vp8enc"))?]),
        // Browsers decode constrained baseline whatever 42xx profile they offer.
        VideoCodec::H264 => h264(&H264 {
            name: Some("encoder"),
            bitrate_kbps: v.bitrate_kbps,
            keyframe_frames: v.fps * 2,
            profile: "constrained-baseline",
        }),
    }
}

/// An H.264 encoder for outputs, when viewers do not use H.264.
pub fn output_video(config: &Config) -> anyhow::Result<Vec<gst::Element>> {
    let o: &OutputsConfig = &config.outputs;
    h264(&H264 {
        name: None,
        bitrate_kbps: o.bitrate_kbps,
        keyframe_frames: config.video.fps * o.keyframe_interval_secs,
        profile: o.profile.caps_name(),
    })
}

/// The finest quantiser x264 may use. Left at its default (10), x264 spends the whole
/// bitrate on a talking head that barely changes, coding detail nobody can see: on a 512×512
/// portrait with a moving box, a floor of 20 took x264 from 0.59 to 0.21 ms of CPU a frame and
/// from 1,100 to 235 kbit/s, at a luma PSNR of 42.8 dB (51.6 without it). Content that needs
/// the bitrate (noise) is coded as before.
const X264_MIN_QP: u32 = 20;

/// Whether H.264 goes to NVENC: nvcodec registers `nvh264enc` only where CUDA loads and the
/// GPU has an encoder.
pub fn nvenc() -> bool {
    gst::ElementFactory::find("nvh264enc").is_some()
}

/// Which encoder H.264 sessions get here, for the server's start-up line. NVENC has never run
/// in this project (the GPUs it was measured on, H100 and H200, have none), and says so.
pub fn h264_encoder_at_start() -> &'static str {
    if nvenc() {
        "nvh264enc (NVENC; untested: the GPUs this project was measured on have no NVENC)"
    } else {
        "x264enc (no nvh264enc: no NVIDIA GPU with NVENC here)"
    }
}

/// NVENC when the GPU has it, x264 otherwise; both without B-frames or look-ahead, so a frame
/// leaves at once. Parameter sets go with every keyframe (a restream or viewer may join at any
/// one).
fn h264(want: &H264) -> anyhow::Result<Vec<gst::Element>> {
    let mut encoder = if nvenc() {
        gst::ElementFactory::make("nvh264enc")
            .property_from_str("preset", "low-latency-hq")
            .property_from_str("rc-mode", "cbr")
            .property("bitrate", want.bitrate_kbps)
            .property("gop-size", want.keyframe_frames as i32)
            .property("zerolatency", true)
            .property("bframes", 0u32)
    } else {
        gst::ElementFactory::make("x264enc")
            .property_from_str("tune", "zerolatency")
            .property_from_str("speed-preset", "ultrafast")
            .property("bitrate", want.bitrate_kbps)
            .property("key-int-max", want.keyframe_frames)
            .property("bframes", 0u32)
            .property("threads", 1u32)
            .property("qp-min", X264_MIN_QP)
    };
    if let Some(name) = want.name {
        encoder = encoder.name(name);
    }
    let encoder = encoder
        .build()
        .with_context(|| missing("x264enc or nvh264enc"))?;
    tracing::info!(
        "H.264 encoder: {} ({})",
        encoder
            .factory()
            .map(|f| f.name().to_string())
            .unwrap_or_default(),
        want.profile
    );
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("profile", want.profile)
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

/// The highest complexity at which libopus skips its per-frame signal analysis.
const OPUS_COMPLEXITY: i32 = 6;

/// Opus for viewers, from the session's 48 kHz mono voice: 48 kbit/s in 20 ms frames, at
/// complexity 6. From 7 up, libopus first runs its signal analysis (speech or music, tonality)
/// on every frame, which here cost more than the coding itself: over 2 min of speech (espeak-ng,
/// and the Piper voice) complexity 10 took 2.17 and 1.67 s of CPU, 6 took 0.64 and 0.41 s, with
/// the decoded speech as close to the source (SNR 17.1 against 17.8 dB, and 20.8 against
/// 19.9). A session's voice is always speech, so the analysis has nothing to decide.
pub fn viewer_audio() -> anyhow::Result<gst::Element> {
    gst::ElementFactory::make("opusenc")
        .property("bitrate", 48_000i32)
        .property_from_str("frame-size", "20")
        .property("complexity", OPUS_COMPLEXITY)
        .build()
        .with_context(|| missing("opusenc"))
}

/// AAC-LC for outputs, from the session's 48 kHz mono sound: `voaacenc` (plugins-bad) where
/// present, at less than half the CPU of `avenc_aac` (1.5 % against 3.6 % of a core here),
/// else `avenc_aac` (libav).
pub fn output_audio(config: &Config) -> anyhow::Result<Vec<gst::Element>> {
    let convert = gst::ElementFactory::make("audioconvert")
        .build()
        .with_context(|| missing("audioconvert"))?;
    let bitrate = (config.outputs.audio_bitrate_kbps * 1000) as i32;
    let aac = match gst::ElementFactory::make("voaacenc")
        .property("bitrate", bitrate)
        .build()
    {
        Ok(aac) => aac,
        Err(_) => gst::ElementFactory::make("avenc_aac")
            .property("bitrate", bitrate)
            .build()
            .with_context(|| missing("voaacenc (plugins-bad) or avenc_aac (gstreamer1.0-libav)"))?,
    };
    let parse = gst::ElementFactory::make("aacparse")
        .build()
        .with_context(|| missing("aacparse"))?;
    Ok(vec![convert, aac, parse])
}
