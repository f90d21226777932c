//! `facecast render`: text or an audio file → an MP4 (H.264 + AAC) of the talking avatar.
//!
//! The graph is the one users can also write by hand (see `pipelines/`):
//!
//! ```text
//! speechsynth | filesrc ! decodebin ─ tee ─ queue ─────────────── lipsync.audio
//!                                        └ queue ! audioconvert ! avenc_aac ─┐
//! avatarsrc ! capsfilter ──────────────────────────────────────── lipsync.video
//! lipsync ! videoconvert ! x264enc ───────────────────────────── mp4mux ! filesink
//! ```
//!
//! The audio branch to the muxer gets an unbounded queue: x264 holds back a second or more of
//! frames for look-ahead, and a bounded queue there would stall the tee, starving `lipsync`.

use anyhow::{anyhow, bail, Context};
use facecast_common::Emotion;
use facecast_onnx::Device;
use gst::prelude::*;
use gstfacecastlipsync::EngineKind;
use gstfacecasttts::SpeechEngine;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Text to speak with the built-in TTS (espeak-ng, or Piper with --tts piper).
    #[arg(long, required_unless_present = "audio", conflicts_with = "audio")]
    text: Option<String>,
    /// An audio file to lip-sync instead (WAV, MP3, Ogg, …: anything GStreamer decodes).
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Language of the text: en, fa, de, … (any espeak-ng language).
    #[arg(long, default_value = "en")]
    lang: String,
    /// Who speaks: espeak (espeak-ng) or piper (a neural voice, through ONNX Runtime).
    #[arg(long, default_value = "espeak")]
    tts: SpeechEngine,
    /// espeak: an exact voice (e.g. en-us+f3), overriding --lang; piper: a voice name in the
    /// models folder or a path to its .onnx (default en_US-joe-medium).
    #[arg(long)]
    voice: Option<String>,
    /// Speaking rate in words per minute (80-450).
    #[arg(long, default_value_t = 175, value_parser = clap::value_parser!(u32).range(80..=450))]
    rate: u32,
    /// Base pitch, 0-100.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    pitch: u32,
    /// Expression: neutral, happy, confident, thoughtful, concerned.
    #[arg(long, default_value = "neutral")]
    emotion: Emotion,
    /// Strength of the expression, 0-1.
    #[arg(long, default_value_t = 0.6)]
    intensity: f64,
    /// A registered photo/video avatar (`facecast avatar add`) instead of the parametric face;
    /// the video takes its size.
    #[arg(long)]
    avatar: Option<String>,
    /// How the mouth is made: viseme (parametric face) or wav2lip (photo/video avatars; needs
    /// --model). Default: wav2lip with --avatar, viseme without.
    #[arg(long)]
    engine: Option<EngineKind>,
    /// engine=wav2lip: the ONNX model, a path or a file name in the models folder.
    #[arg(long, env = "FACECAST_WAV2LIP_MODEL")]
    model: Option<String>,
    /// engine=wav2lip: cpu or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// engine=wav2lip: the model's mel input [N,1,80,16] (default mel; a model whose two
    /// inputs and one output its shapes tell apart needs none of these three).
    #[arg(long)]
    mel_input: Option<String>,
    /// engine=wav2lip: the model's face input [N,6,96,96] (default face).
    #[arg(long)]
    face_input: Option<String>,
    /// engine=wav2lip: the model's output [N,3,96,96] (default output).
    #[arg(long)]
    output_name: Option<String>,
    /// engine=wav2lip: frames per inference.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    batch_size: u32,
    /// Video width in pixels (parametric face only).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=4096))]
    width: u32,
    /// Video height in pixels (parametric face only).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(64..=4096))]
    height: u32,
    /// Frames per second.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=120))]
    fps: u32,
    /// Seed of the idle animation (blinks, glances).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output MP4 file.
    #[arg(short, long)]
    output: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn make(factory: &str) -> anyhow::Result<gst::Element> {
    gst::ElementFactory::make(factory).build().with_context(|| {
        format!("GStreamer element '{factory}' is missing: run scripts/install-deps.sh")
    })
}

struct RenderPipeline {
    pipeline: gst::Pipeline,
    /// End time of the latest frame out of `lipsync`, in nanoseconds.
    position: Arc<AtomicU64>,
    frames: Arc<AtomicU64>,
    lipsync: gst::Element,
}

fn build(args: &RenderArgs) -> anyhow::Result<RenderPipeline> {
    let pipeline = gst::Pipeline::new();

    let audio_out = make("tee")?;
    pipeline.add(&audio_out)?;
    if let Some(text) = &args.text {
        if text.trim().is_empty() {
            bail!("nothing to say: --text is empty");
        }
        let tts = gst::ElementFactory::make("speechsynth")
            .property("engine", args.tts)
            .property("text", text)
            .property("language", &args.lang)
            .property("voice", args.voice.as_deref())
            .property("rate", args.rate)
            .property("pitch", args.pitch)
            .build()?;
        pipeline.add(&tts)?;
        tts.link(&audio_out)?;
    } else if let Some(path) = &args.audio {
        if !path.is_file() {
            bail!("audio file not found: {}", path.display());
        }
        let src = gst::ElementFactory::make("filesrc")
            .property("location", path)
            .build()?;
        let decode = make("decodebin")?;
        let convert = make("audioconvert")?;
        let resample = make("audioresample")?;
        pipeline.add_many([&src, &decode, &convert, &resample])?;
        src.link(&decode)?;
        gst::Element::link_many([&convert, &resample, &audio_out])?;
        let convert_sink = convert.static_pad("sink").expect("audioconvert has a sink");
        decode.connect_pad_added(move |_, pad| {
            let is_audio = pad
                .current_caps()
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with("audio/")))
                .unwrap_or(false);
            if is_audio && !convert_sink.is_linked() {
                let _ = pad.link(&convert_sink);
            }
        });
    }

    let avatar = gst::ElementFactory::make("avatarsrc")
        .property("seed", args.seed)
        .property("emotion", args.emotion.name())
        .property("emotion-intensity", args.intensity.clamp(0.0, 1.0))
        .property("avatar", args.avatar.as_deref())
        .build()?;
    // A registered avatar has its own size; the parametric face is drawn at any.
    let caps = gst_video::VideoCapsBuilder::new().framerate(gst::Fraction::new(args.fps as i32, 1));
    let caps = if args.avatar.is_some() {
        caps.build()
    } else {
        caps.width(args.width as i32)
            .height(args.height as i32)
            .build()
    };
    let avatar_caps = gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()?;
    let engine = args.engine.unwrap_or(if args.avatar.is_some() {
        EngineKind::Wav2lip
    } else {
        EngineKind::Viseme
    });
    let mut lipsync = gst::ElementFactory::make("lipsync")
        .property("engine", engine)
        .property("model", args.model.as_deref())
        .property("device", args.device.to_string())
        .property("batch-size", args.batch_size);
    for (property, name) in [
        ("mel-input", &args.mel_input),
        ("face-input", &args.face_input),
        ("output-name", &args.output_name),
    ] {
        if let Some(name) = name {
            lipsync = lipsync.property(property, name);
        }
    }
    let lipsync = lipsync
        .build()
        .with_context(|| format!("cannot set up lipsync with engine {engine}"))?;
    let lip_queue = make("queue")?;
    let mux_queue = gst::ElementFactory::make("queue")
        .property("max-size-time", 0u64)
        .property("max-size-buffers", 0u32)
        .property("max-size-bytes", 0u32)
        .build()?;
    let aconvert = make("audioconvert")?;
    let aresample = make("audioresample")?;
    let aac = make("avenc_aac")?;
    // Only the pixels that changed are converted (a photo avatar: its face box).
    let vconvert = make("deltaconvert")?;
    let x264 = gst::ElementFactory::make("x264enc")
        .property_from_str("speed-preset", "faster")
        .build()
        .context("GStreamer element 'x264enc' is missing: run scripts/install-deps.sh")?;
    let h264_caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("profile", "high")
                .build(),
        )
        .build()?;
    let mux = make("mp4mux")?;
    let sink = gst::ElementFactory::make("filesink")
        .property("location", &args.output)
        .build()?;
    pipeline.add_many([
        &avatar,
        &avatar_caps,
        &lipsync,
        &lip_queue,
        &mux_queue,
        &aconvert,
        &aresample,
        &aac,
        &vconvert,
        &x264,
        &h264_caps,
        &mux,
        &sink,
    ])?;
    gst::Element::link_many([&avatar, &avatar_caps])?;
    avatar_caps.link_pads(None, &lipsync, Some("video"))?;
    gst::Element::link_many([&audio_out, &lip_queue])?;
    lip_queue.link_pads(None, &lipsync, Some("audio"))?;
    gst::Element::link_many([&lipsync, &vconvert, &x264, &h264_caps, &mux])?;
    gst::Element::link_many([&audio_out, &mux_queue, &aconvert, &aresample, &aac, &mux])?;
    mux.link(&sink)?;

    let position = Arc::new(AtomicU64::new(0));
    let frames = Arc::new(AtomicU64::new(0));
    let (pos, count) = (position.clone(), frames.clone());
    lipsync
        .static_pad("src")
        .expect("lipsync has a src pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                if let Some(pts) = buffer.pts() {
                    let end = pts + buffer.duration().unwrap_or_default();
                    pos.store(end.nseconds(), Ordering::Relaxed);
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    Ok(RenderPipeline {
        pipeline,
        position,
        frames,
        lipsync,
    })
}

/// The first error on the bus, as one line naming the element that failed.
fn bus_error(msg: &gst::message::Error) -> anyhow::Error {
    anyhow!("{}", crate::error::describe_bus_error(msg))
}

fn parse_device(s: &str) -> Result<Device, String> {
    s.parse()
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    // Fail early, and clearly, on a target that cannot be written.
    std::fs::File::create(&args.output)
        .with_context(|| format!("cannot write output file {}", args.output.display()))?;
    let result = render(&args);
    if result.is_err() {
        let _ = std::fs::remove_file(&args.output);
    }
    result
}

fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let RenderPipeline {
        pipeline,
        position,
        frames,
        lipsync,
    } = build(args)?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let _null_on_exit = NullOnDrop(pipeline.clone());

    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} ms  {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    progress.set_message("rendering");

    if pipeline.set_state(gst::State::Playing).is_err() {
        let err = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(1), &[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(bus_error(e)),
                _ => None,
            });
        return Err(err.unwrap_or_else(|| anyhow!("the render pipeline could not start")));
    }
    let started = std::time::Instant::now();
    loop {
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[
                gst::MessageType::Eos,
                gst::MessageType::Error,
                gst::MessageType::Warning,
            ],
        );
        if progress.length().is_none() {
            if let Some(d) = pipeline.query_duration::<gst::ClockTime>() {
                progress.set_length(d.mseconds());
            }
        }
        progress.set_position(position.load(Ordering::Relaxed) / 1_000_000);
        let Some(msg) = msg else { continue };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                progress.abandon();
                return Err(bus_error(e));
            }
            gst::MessageView::Warning(w) => {
                progress.suspend(|| eprintln!("warning: {}", w.error()));
            }
            _ => {}
        }
    }
    progress.finish_and_clear();
    let secs = position.load(Ordering::Relaxed) as f64 / 1e9;
    let (width, height) = lipsync
        .static_pad("src")
        .and_then(|p| p.current_caps())
        .and_then(|c| gst_video::VideoInfo::from_caps(&c).ok())
        .map_or((args.width, args.height), |i| (i.width(), i.height()));
    println!(
        "wrote {}: {:.2} s, {} frames ({}x{} at {} fps) in {:.1} s",
        args.output.display(),
        secs,
        frames.load(Ordering::Relaxed),
        width,
        height,
        args.fps,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Sets the pipeline to `Null` however the render ends.
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}
