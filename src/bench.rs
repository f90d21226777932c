//! `facecast bench`: the figures that say whether the avatar keeps up in real time.
//!
//! - **TTS real-time factor**: espeak-ng synthesis time ÷ duration of the speech it made.
//! - **Per-frame cost** of `avatarsrc` + `lipsync engine=viseme`, measured on their code paths
//!   directly (no GStreamer scheduling, one thread, so one core): the idle animation and drawing
//!   of an avatar frame, then the lip-sync engine's mouth estimate and redraw.
//! - **Pipeline throughput**: `speechsynth ! lipsync ← avatarsrc ! fakesink` as fast as it goes,
//!   with the process CPU time per frame (includes TTS and GStreamer overhead).
//!
//! Pin it to one core for the per-core figure: `taskset -c 0 facecast bench`.

use anyhow::Context;
use facecast_common::{BlendshapeWeights, Viseme};
use gst::prelude::*;
use gstfacecastavatar::idle::IdleAnimator;
use gstfacecastavatar::render::Renderer;
use gstfacecastlipsync::engine::viseme::VisemeEngine;
use gstfacecastlipsync::engine::{FrameJob, LipSyncEngine, Rendered};
use gstfacecastlipsync::timeline::{AudioTimeline, PhonemeTimeline, TimedViseme};
use gstfacecasttts::espeak::{self, VoiceParams};
use std::time::{Duration, Instant};

const PARAGRAPH: &str = "Good morning, and thank you for joining me today. \
    I would like to walk you through the options for your savings plan. \
    First, we will look at how much you can set aside each month without strain. \
    Then we will compare a few portfolios, from careful to more ambitious, \
    and talk about what each one means for you over five, ten and twenty years. \
    Please stop me at any time if you have a question.";

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Frame size (square), in pixels.
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Frames per second of the simulated stream.
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Repetitions of the TTS measurement.
    #[arg(long, default_value_t = 5)]
    tts_runs: usize,
    /// Measure the live server instead: say → first frame latency and concurrent sessions.
    #[arg(long)]
    serve: bool,
    /// Number of `say` requests timed (with --serve).
    #[arg(long, default_value_t = 20)]
    says: usize,
    /// Most concurrent sessions tried (with --serve).
    #[arg(long, default_value_t = 8)]
    max_sessions: usize,
    /// Seconds each concurrency step runs (with --serve).
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    /// Time a Wav2Lip-class ONNX model instead (ms per frame at batch 1, 8 and 16; ONNX
    /// Runtime from ORT_DYLIB_PATH).
    #[arg(long, value_name = "MODEL")]
    wav2lip: Option<std::path::PathBuf>,
    /// ONNX Runtime intra-op threads (with --wav2lip).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// User + system CPU time of this process, from /proc (10 ms resolution).
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.serve {
        return serve_bench(&args);
    }
    if let Some(model) = &args.wav2lip {
        return wav2lip_bench(model, args.threads);
    }
    println!(
        "facecast bench: {}x{} at {} fps",
        args.size, args.size, args.fps
    );

    // TTS real-time factor.
    let params = VoiceParams::default();
    let mut rtf = Vec::new();
    let mut utterance = None;
    for _ in 0..args.tts_runs.max(1) {
        let t = Instant::now();
        let u = espeak::synthesize(PARAGRAPH, &params)?;
        let elapsed = t.elapsed().as_secs_f64();
        rtf.push(elapsed / (u.samples.len() as f64 / u.sample_rate as f64));
        utterance = Some(u);
    }
    let utterance = utterance.expect("at least one run");
    let speech_secs = utterance.samples.len() as f64 / utterance.sample_rate as f64;
    println!(
        "tts espeak-ng: {:.1} s of speech, real-time factor median {:.4} ({:.0}x faster than real time) over {} runs",
        speech_secs,
        median(&mut rtf),
        1.0 / median(&mut rtf),
        rtf.len()
    );

    // Per-frame cost on the elements' code paths.
    let rate = utterance.sample_rate;
    let mut audio = AudioTimeline::new(rate);
    let samples: Vec<f32> = utterance
        .samples
        .iter()
        .map(|&s| s as f32 / 32768.0)
        .collect();
    audio.append(gst::ClockTime::ZERO, &samples);
    let mut phonemes = PhonemeTimeline::default();
    let to_time = |s: u64| gst::ClockTime::from_nseconds(s * 1_000_000_000 / rate as u64);
    for (i, p) in utterance.phonemes.iter().enumerate() {
        let end = utterance
            .phonemes
            .get(i + 1)
            .map_or(utterance.samples.len() as u64, |n| n.sample);
        phonemes.push(TimedViseme {
            start: to_time(p.sample),
            end: to_time(end),
            viseme: Viseme::from_ipa(&p.ipa),
        });
    }
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, args.size, args.size)
        .fps(gst::Fraction::new(args.fps as i32, 1))
        .build()?;
    let mut renderer = Renderer::new(args.size, args.size).context("renderer")?;
    let mut idle = IdleAnimator::new(1);
    let mut engine = VisemeEngine::new();
    let expression = BlendshapeWeights::default();
    let frame = gst::ClockTime::SECOND / args.fps as u64;
    let n_frames = (speech_secs * args.fps as f64) as u64;
    let (mut t_avatar, mut t_lipsync, mut t_total) = (Vec::new(), Vec::new(), Vec::new());
    let stride = info.stride()[0] as usize;
    for n in 0..n_frames {
        let start = frame * n;
        let t0 = Instant::now();
        let pose = idle.pose_at(start.seconds_f32());
        let mut buffer = gst::Buffer::with_size(info.size())?;
        {
            let b = buffer.get_mut().unwrap();
            let mut map = b.map_writable()?;
            renderer.render_into(&pose, map.as_mut_slice(), stride);
            drop(map);
            renderer.face_info(&pose).attach(b);
        }
        let t1 = Instant::now();
        let job = FrameJob {
            index: n,
            origin: gst::ClockTime::ZERO,
            start,
            duration: frame,
            audio: &audio,
            phonemes: &phonemes,
            video: &buffer,
            video_info: &info,
            expression: &expression,
        };
        let out = match engine.render(&job)? {
            Rendered::Done(out) => *out,
            Rendered::Pending(p) => p.finish()?,
        };
        std::hint::black_box(out.buffer);
        let t2 = Instant::now();
        t_avatar.push((t1 - t0).as_secs_f64() * 1e3);
        t_lipsync.push((t2 - t1).as_secs_f64() * 1e3);
        t_total.push((t2 - t0).as_secs_f64() * 1e3);
    }
    let med_total = median(&mut t_total);
    println!(
        "per frame, one thread, {} frames: avatarsrc median {:.3} ms, lipsync(viseme) median {:.3} ms, \
         total median {:.3} ms (p95 {:.3} ms) = {:.0} fps",
        n_frames,
        median(&mut t_avatar),
        median(&mut t_lipsync),
        med_total,
        percentile(&mut t_total, 0.95),
        1000.0 / med_total
    );

    // The whole pipeline, as fast as it goes.
    let pipeline = gst::parse::launch(&format!(
        "lipsync name=ls ! fakesink name=sink sync=false \
         avatarsrc ! video/x-raw,width={s},height={s},framerate={f}/1 ! ls.video \
         speechsynth name=tts ! ls.audio",
        s = args.size,
        f = args.fps
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    pipeline
        .by_name("tts")
        .context("tts")?
        .set_property("text", PARAGRAPH);
    let cpu0 = process_cpu_time();
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().context("bus")?;
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(600),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_time()
        .zip(cpu0)
        .map(|(a, b)| (a - b).as_secs_f64());
    pipeline.set_state(gst::State::Null)?;
    if let Some(gst::MessageView::Error(e)) = msg.as_ref().map(|m| m.view()) {
        anyhow::bail!("bench pipeline failed: {}", e.error());
    }
    let frames = (speech_secs * args.fps as f64).ceil();
    println!(
        "pipeline speechsynth+avatarsrc+lipsync→fakesink: {:.0} frames in {:.2} s wall = {:.0} fps; \
         process CPU {:.1} ms/frame",
        frames,
        wall,
        frames / wall,
        cpu.map_or(f64::NAN, |c| c * 1000.0 / frames)
    );
    Ok(())
}

/// Live sessions as `facecast serve` runs them (pipelines and registry, no HTTP): the latency
/// from `say` to its first lip-synced frame out of the encoder, then how many sessions keep
/// 25 fps with no dropped frame while all of them speak.
fn serve_bench(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::config::{Config, VideoConfig};
    use crate::session::{CreateSession, Registry};
    use std::sync::Arc;

    let mut base = Config::default();
    base.apply_env(|k| std::env::var(k).ok())?;
    let config = Arc::new(Config {
        max_sessions: args.max_sessions,
        video: VideoConfig {
            width: args.size,
            height: args.size,
            fps: args.fps,
            ..base.video
        },
        ..base
    });
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let registry = Registry::new(config.clone(), metrics.clone());
        println!(
            "facecast bench --serve: {}x{} at {} fps, {:?} {} kbit/s + Opus, {} CPUs",
            args.size,
            args.size,
            args.fps,
            config.video.codec,
            config.video.bitrate_kbps,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );

        // say → first frame, one session, one short sentence at a time.
        let session = registry.create(CreateSession::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 0..args.says {
            session.say(if i % 2 == 0 { "Hello there." } else { "How can I help?" }, None);
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let mut ms: Vec<f64> = session.say_latencies().iter().map(|d| d.as_secs_f64() * 1e3).collect();
        registry.end(&session.id, "bench");
        anyhow::ensure!(!ms.is_empty(), "no say reached the encoder");
        println!(
            "say -> first lip-synced frame out of the encoder: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms ({} says)",
            percentile(&mut ms, 0.5),
            percentile(&mut ms, 0.95),
            percentile(&mut ms, 1.0),
            ms.len()
        );

        // Concurrent sessions, all speaking all the time.
        for n in 1..=args.max_sessions {
            let sessions: Vec<_> = (0..n)
                .map(|_| registry.create(CreateSession::default()))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let count = |id: &str| {
                (
                    metrics.frames_produced.with_label_values(&[id]).get(),
                    metrics.frames_dropped.with_label_values(&[id]).get(),
                )
            };
            let before: Vec<_> = sessions.iter().map(|s| count(&s.id)).collect();
            for s in &sessions {
                for _ in 0..((args.step_secs / 15) + 1) {
                    s.say(PARAGRAPH, None);
                }
            }
            let cpu0 = process_cpu_time();
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(args.step_secs)).await;
            let wall = t0.elapsed().as_secs_f64();
            let cpu = process_cpu_time().zip(cpu0).map(|(a, b)| (a - b).as_secs_f64());
            let after: Vec<_> = sessions.iter().map(|s| count(&s.id)).collect();
            let expected = wall * args.fps as f64;
            let (mut worst_fps, mut dropped) = (f64::MAX, 0);
            let mut rates = Vec::new();
            for (b, a) in before.iter().zip(&after) {
                let fps = (a.0 - b.0) as f64 / wall;
                rates.push(format!("{fps:.1}"));
                worst_fps = worst_fps.min(fps);
                dropped += a.1 - b.1;
            }
            let ok = dropped == 0 && worst_fps * wall >= expected * 0.98;
            println!(
                "{n} sessions speaking: fps [{}], {dropped} frames dropped, CPU {:.0}% of one core{}",
                rates.join(", "),
                cpu.map_or(f64::NAN, |c| c / wall * 100.0),
                if ok { "" } else { "  <- not sustained" }
            );
            for s in &sessions {
                registry.end(&s.id, "bench");
            }
            if !ok {
                break;
            }
        }
        Ok(())
    })
}

/// Inference time of a Wav2Lip-class model on this machine's CPU, per frame, by batch size.
fn wav2lip_bench(path: &std::path::Path, threads: usize) -> anyhow::Result<()> {
    use gstfacecastlipsync::wav2lip_model::{runtime, ModelIo, Wav2LipModel};
    let env = runtime(None)?;
    let mut model = Wav2LipModel::load(env, path, ModelIo::default(), Default::default(), threads)?;
    println!(
        "wav2lip bench: {} with {threads} ONNX Runtime threads",
        path.display()
    );
    for batch in [1usize, 8, 16] {
        let mel: Vec<f32> = (0..batch * 80 * 16)
            .map(|i| (i % 17) as f32 / 4.0 - 2.0)
            .collect();
        let face: Vec<f32> = (0..batch * 6 * 96 * 96)
            .map(|i| (i % 251) as f32 / 251.0)
            .collect();
        model.infer(batch, &mel, &face)?; // warm-up
        let mut per_frame = Vec::new();
        for _ in 0..(40 / batch).max(3) {
            let t = Instant::now();
            std::hint::black_box(model.infer(batch, &mel, &face)?);
            per_frame.push(t.elapsed().as_secs_f64() * 1e3 / batch as f64);
        }
        println!(
            "batch {batch:>2}: median {:.1} ms per frame ({} runs)",
            median(&mut per_frame),
            per_frame.len()
        );
    }
    Ok(())
}
