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

mod listen;
mod restream;
mod serve;
mod threads;
#[cfg(test)]
pub(crate) use listen::{sound_span, spoken_48k, OutputAudio};

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
    /// Number of `say` requests timed (with --serve; 0 skips that part).
    #[arg(long, default_value_t = 20)]
    says: usize,
    /// Most concurrent sessions tried (with --serve), one more each step.
    #[arg(long, default_value_t = 8)]
    max_sessions: usize,
    /// With --serve: the session counts tried instead, comma-separated (e.g. 16,48,96,128).
    #[arg(long, value_delimiter = ',')]
    sessions: Vec<usize>,
    /// With --serve: sessions show this registered avatar (photo or video; `facecast avatar
    /// add`), with the lip-sync model of the configuration (FACECAST_WAV2LIP_MODEL).
    #[arg(long)]
    avatar: Option<String>,
    /// With --serve: the lip-sync engine, viseme or wav2lip (default: wav2lip for a registered
    /// avatar).
    #[arg(long)]
    engine: Option<String>,
    /// With --serve: the video codec sent, vp8 or h264 (default: the configuration's).
    #[arg(long)]
    codec: Option<crate::config::VideoCodec>,
    /// With --serve: the server's configuration file, as `facecast serve --config` takes it
    /// (default: configs/facecast.toml when present; FACECAST_* variables apply on top).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
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
    /// Where the model runs (with --wav2lip, or --serve with a lip-sync model): cpu or cuda:N
    /// (with --serve, default: the configuration's).
    #[arg(long)]
    device: Option<String>,
    /// Batch sizes timed (with --wav2lip), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 16])]
    batches: Vec<usize>,
    /// Time a chat reply instead: from the first token of a (scripted, loopback) language model
    /// to the first lip-synced frame of the answer out of the encoder.
    #[arg(long)]
    chat: bool,
    /// Time a Piper voice instead (name or .onnx path; ONNX Runtime from ORT_DYLIB_PATH):
    /// synthesis time per sentence and the real-time factor. With --chat: chat with that voice.
    #[arg(long, value_name = "VOICE")]
    piper: Option<String>,
    /// Time the avatar cache instead: write and open a FRAMES-frame avatar (disk and memory).
    #[arg(long, value_name = "FRAMES")]
    cache: Option<usize>,
    /// Time voice activity detection instead: the CPU one listening stream costs (`vad` with
    /// this Silero model, e.g. models/silero_vad.onnx), as a share of one core.
    #[arg(long, value_name = "MODEL")]
    vad: Option<std::path::PathBuf>,
    /// Time barge-in instead, this many times: a WHIP client speaks over the avatar; from the
    /// onset of its speech to the interrupt, and from the interrupt to the avatar's silence.
    #[arg(long, value_name = "ROUNDS")]
    barge_in: Option<usize>,
    /// Time turn-taking instead, this many times: from the end of a question published over
    /// WHIP to the first lip-synced frame of the answer (scripted instant ASR and LLM).
    #[arg(long, value_name = "ROUNDS")]
    turn: Option<usize>,
    /// Time drive mode instead, over this many syllables: from a syllable's onset in the
    /// published voice to the first frame with the jaw open out of the encoder.
    #[arg(long, value_name = "SYLLABLES")]
    drive: Option<usize>,
    /// With --serve: every session also listens, a WHIP publisher sending it room noise.
    #[arg(long)]
    listening: bool,
    /// Time restreaming instead, to this RTMP server and application (rtmp://HOST:PORT/APP,
    /// run it yourself): the CPU one output adds to a session whose viewers take H.264, and
    /// POST → first frame at the server. With --serve: every session also restreams there.
    #[arg(long, value_name = "URL")]
    restream: Option<String>,
    /// Phases of --restream's CPU measurement, each --step-secs long.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(super) fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// User + system CPU time of this process, from /proc (10 ms resolution).
pub(super) fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.serve {
        return serve::serve_bench(&args);
    }
    if let Some(base) = &args.restream {
        return restream::restream_bench(base, args.step_secs, args.rounds);
    }
    if let Some(model) = &args.wav2lip {
        return wav2lip_bench(model, &args);
    }
    if args.chat {
        return chat_bench(&args);
    }
    if let Some(rounds) = args.barge_in {
        return listen::barge_in_bench(rounds, args.piper.as_deref());
    }
    if let Some(rounds) = args.turn {
        return listen::turn_bench(rounds, args.piper.as_deref());
    }
    if let Some(syllables) = args.drive {
        return listen::drive_bench(syllables, args.piper.as_deref());
    }
    if let Some(voice) = &args.piper {
        return piper_bench(voice, &args);
    }
    if let Some(frames) = args.cache {
        return cache_bench(frames, args.size);
    }
    if let Some(model) = &args.vad {
        return listen::vad_bench(model);
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
            deadline: None,
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

/// First token → first lip-synced frame of a chat answer, with a scripted model on loopback
/// streaming "Sure, I can help with that. …" a few characters per token, 20 ms apart (about
/// 50 tokens/s, a typical served model). Also prints sentence-complete → first frame.
fn chat_bench(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::config::Config;
    use crate::conversation::scripted::{scripted, sse};
    use crate::session::{CreateSession, Registry};
    use std::sync::Arc;

    let tokens = [
        "Sure", ", I", " can", " help", " with", " that", ".", " Let", " me", " explain",
    ];
    // The token that completes the first spoken piece, found as the conversation finds it.
    let mut splitter =
        crate::conversation::sentences::SentenceSplitter::default().early_first_clause();
    let completing = tokens
        .iter()
        .position(|t| !splitter.push(t).is_empty())
        .expect("the script has a complete first piece");
    let tts = if args.piper.is_some() {
        "Piper"
    } else {
        "espeak-ng"
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut first_token = Vec::new();
        let mut sentence = Vec::new();
        let mut before_end = 0;
        for round in 0..args.says.max(3) {
            let mut parts: Vec<(u64, Vec<u8>)> =
                tokens.iter().map(|t| (20, sse(&[t]))).collect();
            parts.push((20, b"data: [DONE]\n\n".to_vec()));
            let server = scripted("200 OK", parts).await;
            let mut config = Config::default();
            config.apply_env(|k| std::env::var(k).ok())?;
            config.llm.base_url = Some(server.base_url.clone());
            if let Some(voice) = &args.piper {
                config.speech.engine = gstfacecasttts::SpeechEngine::Piper;
                config.speech.piper_voice = voice.clone();
            }
            let registry = Registry::new(Arc::new(config), Arc::new(crate::metrics::Metrics::new()));
            let session = registry
                .create(CreateSession::default())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // Let the live pipeline settle (it starts with idle frames).
            tokio::time::sleep(Duration::from_millis(1500)).await;
            registry
                .chat(&session.id, "Can you help me budget?")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let frame = loop {
                if let Some(&t) = session.say_first_frames().first() {
                    break t;
                }
                anyhow::ensure!(Instant::now() < deadline, "round {round}: no frame of the answer");
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let request = server.request.await?;
            anyhow::ensure!(request["stream"] == true, "the request did not ask to stream");
            anyhow::ensure!(
                !server.client_gone.load(std::sync::atomic::Ordering::SeqCst),
                "the client dropped the stream"
            );
            if !server.finished.load(std::sync::atomic::Ordering::SeqCst) {
                before_end += 1;
            }
            let sent = server.sent.lock().unwrap().clone();
            first_token.push(frame.duration_since(sent[0]).as_secs_f64() * 1e3);
            sentence.push(frame.duration_since(sent[completing]).as_secs_f64() * 1e3);
            registry.end(&session.id, "bench");
        }
        println!(
            "chat ({} voice), {} replies: first token -> first lip-synced frame median {:.1} ms (p95 {:.1}); \
             first piece complete -> first frame median {:.1} ms (the first piece took {} tokens at 20 ms); \
             {before_end} of them began before the model finished",
            tts,
            first_token.len(),
            median(&mut first_token.clone()),
            percentile(&mut first_token, 0.95),
            median(&mut sentence),
            completing + 1
        );
        Ok(())
    })
}

/// A Piper voice on this machine: how long each sentence takes to synthesise (phonemes,
/// model, and the espeak-ng timing pass together) against how long it sounds.
fn piper_bench(voice: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let voice = gstfacecasttts::piper::PiperVoice::get(voice)?;
    println!(
        "Piper voice {} loaded in {:.2} s",
        voice.path().display(),
        started.elapsed().as_secs_f64()
    );
    let sentences = [
        "Sure, I can help with that.",
        "Let me explain how an emergency fund works.",
        "Most advisers suggest keeping three to six months of expenses in a savings account you can reach quickly.",
    ];
    voice.synthesize(sentences[0], 1.0)?; // warm-up: first-run allocations
    for sentence in sentences {
        let (mut ms, mut rtf) = (Vec::new(), Vec::new());
        let mut audio_secs = 0.0;
        for _ in 0..args.tts_runs.max(1) {
            let t = Instant::now();
            let utt = voice.synthesize(sentence, 1.0)?;
            let took = t.elapsed().as_secs_f64();
            audio_secs = utt.samples.len() as f64 / utt.sample_rate as f64;
            ms.push(took * 1e3);
            rtf.push(took / audio_secs);
        }
        println!(
            "piper, {} words ({audio_secs:.2} s of speech), {} runs: synthesis median {:.1} ms, real-time factor median {:.3}",
            sentence.split_whitespace().count(),
            ms.len(),
            median(&mut ms),
            median(&mut rtf)
        );
    }
    Ok(())
}

/// A Wav2Lip-class model on this machine, by batch size: the model alone (ONNX Runtime through
/// `ort`, inputs and outputs in host memory, so transfers to and from a GPU are included), then
/// the `lipsync` engine's whole path (mel windows, face crops, model through the shared batcher,
/// blending back into the frame).
fn wav2lip_bench(path: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    use facecast_onnx::Device;
    use gstfacecastlipsync::wav2lip_model::{runtime, ModelIo, Wav2LipModel};
    let device: Device = args
        .device
        .as_deref()
        .unwrap_or("cpu")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let threads = args.threads;
    let env = runtime(None)?;
    let t = Instant::now();
    let mut model = Wav2LipModel::load(env, path, ModelIo::default(), device, threads)?;
    println!(
        "wav2lip bench: {} on {device} ({threads} CPU threads), loaded in {:.2} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
    // Per batch size, the model alone as the engine path's yardstick: with its tensors
    // resident on the GPU where there is one (the goal is 80 % of that), else on the CPU.
    let mut alone = std::collections::HashMap::new();
    for &batch in &args.batches {
        let mel: Vec<f32> = (0..batch * 80 * 16)
            .map(|i| (i % 17) as f32 / 4.0 - 2.0)
            .collect();
        let face: Vec<f32> = (0..batch * 6 * 96 * 96)
            .map(|i| (i % 251) as f32 / 251.0)
            .collect();
        model.infer(batch, &mel, &face)?; // warm-up
        model.infer(batch, &mel, &face)?;
        let mut per_frame = Vec::new();
        let runs = if device == Device::Cpu {
            (40 / batch).max(3)
        } else {
            30
        };
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(model.infer(batch, &mel, &face)?);
            per_frame.push(t.elapsed().as_secs_f64() * 1e3 / batch as f64);
        }
        let ms = median(&mut per_frame);
        println!(
            "model only, batch {batch:>3}: median {ms:.3} ms per frame = {:.0} frames/s ({runs} runs)",
            1e3 / ms
        );
        if let Some(why) = model.pinned_failure() {
            println!("  (pinned host buffers refused, ordinary tensors used: {why})");
        }
        let resident = print_resident(&mut model, batch, "tensors resident on the GPU");
        let yardstick = match resident {
            Some(fps) => (fps, "resident tensors"),
            None => (1e3 / ms, "host tensors"),
        };
        alone.insert(batch, yardstick);
    }
    drop(model);
    if device != Device::Cpu {
        // CUDA graphs: a session per batch shape, as the live worker keeps, replaying its
        // recorded launches. ONNX Runtime records on the first run, with the buffers bound.
        for &batch in &args.batches {
            let mut graphed =
                match Wav2LipModel::load_with(env, path, ModelIo::default(), device, threads, true)
                {
                    Ok(m) => m,
                    Err(e) => {
                        println!("model only, CUDA graphs: not loaded ({e})");
                        break;
                    }
                };
            print_resident(
                &mut graphed,
                batch,
                "tensors resident on the GPU, CUDA graphs",
            );
        }
    }
    // On a GPU, one batch worker and two (see `wav2lip_batcher::shared`).
    let worker_counts: &[usize] = if device == Device::Cpu { &[1] } else { &[1, 2] };
    for &batch in &args.batches {
        for &model_workers in worker_counts {
            engine_path_bench(
                path,
                device,
                batch,
                threads,
                model_workers,
                alone.get(&batch).copied(),
            )?;
        }
    }
    Ok(())
}

/// Prints the model alone at `batch` with its tensors resident on the GPU (nothing on a CPU),
/// and returns its median frames/s.
fn print_resident(
    model: &mut gstfacecastlipsync::wav2lip_model::Wav2LipModel,
    batch: usize,
    what: &str,
) -> Option<f64> {
    match model.resident_throughput(batch, 30, 5) {
        Ok(Some(mut fps)) => {
            let fps = median(&mut fps);
            println!(
                "model only, batch {batch:>3}, {what}: median {fps:.0} frames/s (5 x 30 runs)"
            );
            Some(fps)
        }
        Ok(None) => None,
        Err(e) => {
            println!("model only, batch {batch:>3}, {what}: {e}");
            None
        }
    }
}

/// Frames per second through `Wav2LipEngine` (what `lipsync engine=wav2lip` runs per frame).
/// As in a server, where each session's `lipsync` prepares its own frames on its own streaming
/// thread, one engine per core prepares a share of each batch and all feed the shared batcher.
/// `alone` is the model alone at this batch size (frames/s, and how its tensors were held): the
/// streamed figure is also given as a share of it.
fn engine_path_bench(
    path: &std::path::Path,
    device: facecast_onnx::Device,
    batch: usize,
    threads: usize,
    model_workers: usize,
    alone: Option<(f64, &str)>,
) -> anyhow::Result<()> {
    use facecast_avatars::store::AvatarStore;
    use facecast_common::{FaceInfo, Rect};
    use gstfacecastlipsync::engine::wav2lip::Wav2LipEngine;
    use gstfacecastlipsync::wav2lip_batcher::{shared, ModelKey};
    use std::sync::Barrier;
    // All `batch` frames are prepared before any is collected: let the batcher wait for them.
    let mut key = ModelKey::new(path, device, batch as u32, 500, threads as u32);
    key.workers = model_workers;
    let model = shared(&key)?;
    let size = 512u32;
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, size, size)
        .fps(gst::Fraction::new(25, 1))
        .build()?;
    let mut frame = gst::Buffer::from_mut_slice(
        (0..info.size())
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    FaceInfo {
        face: Rect::new(176, 56, 160, 200),
        mouth: Rect::new(176, 156, 160, 100),
        pose: None,
        source: None,
    }
    .attach(frame.get_mut().unwrap());
    // Ten seconds of noise at espeak-ng's rate, so the mel windows are resampled like speech.
    let mut audio = AudioTimeline::new(22050);
    let samples: Vec<f32> = (0..22050 * 10).map(|_| fastrand::f32() - 0.5).collect();
    audio.append(gst::ClockTime::ZERO, &samples);
    let phonemes = PhonemeTimeline::default();
    let expression = BlendshapeWeights::default();
    let frame_time = gst::ClockTime::from_mseconds(40);
    let rounds = 12usize;
    // The streamed run is timed until `stream_batches` batches' frames are answered, while the
    // threads still keep frames coming, so every timed batch is full. Its start (the first
    // batch gathered with the GPU idle) weighed about 7 % of 12 batches on an H100: it runs
    // four times as many. (Timed to its last frame, its end weighed far more: the last frames,
    // too few for a batch, waited out the 500 ms batch wait.)
    let stream_batches = 4 * rounds;
    let stream_frames = stream_batches * batch;
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let stream_end = std::sync::OnceLock::new();
    // Batches kept in flight by the streamed run (see there).
    let in_flight = 2 * model_workers + 1;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, batch.max(1));
    // Main and the workers meet at the start and the end of every round.
    let (start, done) = (Barrier::new(workers + 1), Barrier::new(workers + 1));
    let fps = std::thread::scope(
        |s| -> anyhow::Result<(Vec<f64>, f64, WorkerTimes, f64, WorkerTimes)> {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    // The shared model's counters, read when the stream's time ends.
                    let counted = &model;
                    let (model, start, done) = (model.clone(), &start, &done);
                    let (answered, stream_end) = (&answered, &stream_end);
                    let (audio, phonemes, frame, info, expression) =
                        (&audio, &phonemes, &frame, &info, &expression);
                    s.spawn(move || -> anyhow::Result<Vec<Duration>> {
                        let mut engine = Wav2LipEngine::new(model, AvatarStore::global());
                        let share = batch / workers + usize::from(w < batch % workers);
                        let mut failure = None;
                        let job = |n: u64| FrameJob {
                            index: n,
                            origin: gst::ClockTime::ZERO,
                            start: frame_time * n,
                            duration: frame_time,
                            deadline: None,
                            audio,
                            phonemes,
                            video: frame,
                            video_info: info,
                            expression,
                        };
                        // Waits for a frame and drops it, as a session pushes it on.
                        let finish = |p: Rendered| -> anyhow::Result<()> {
                            let out = match p {
                                Rendered::Done(out) => *out,
                                Rendered::Pending(p) => p.finish()?,
                            };
                            std::hint::black_box(out.buffer);
                            Ok(())
                        };
                        // How long this worker took to submit its share, each round.
                        let mut submitting = Vec::with_capacity(rounds + 2);
                        for round in 0..rounds + 2 {
                            start.wait();
                            let began = Instant::now();
                            let mut run = || -> anyhow::Result<()> {
                                let mut pending = Vec::with_capacity(share);
                                for i in 0..share {
                                    let n = ((round * batch + w * share + i) % 200) as u64;
                                    pending.push(engine.render(&job(n))?);
                                }
                                submitting.push(began.elapsed());
                                pending.into_iter().try_for_each(finish)
                            };
                            // Keep meeting the others after a failure, so that no one waits forever.
                            if let Err(e) = run() {
                                failure.get_or_insert(e);
                            }
                            done.wait();
                        }
                        // The stream: frames until all threads together have had
                        // `stream_frames` answered, keeping a batch more in flight than the
                        // batch workers hold (two each: one running, one gathered or queued
                        // behind it), as sessions keep preparing frames while earlier ones are
                        // inferred. The frames still in flight then are answered untimed.
                        start.wait();
                        let mut stream = || -> anyhow::Result<()> {
                            use std::sync::atomic::Ordering::Relaxed;
                            let depth = in_flight * share;
                            let mut pending = std::collections::VecDeque::with_capacity(depth);
                            for i in 0.. {
                                if pending.len() == depth {
                                    finish(pending.pop_front().expect("full"))?;
                                    if answered.fetch_add(1, Relaxed) + 1 == stream_frames {
                                        let at = (Instant::now(), WorkerTimes::of(counted));
                                        let _ = stream_end.set(at);
                                    }
                                }
                                if answered.load(Relaxed) >= stream_frames {
                                    break;
                                }
                                let n = ((w * share * stream_batches + i) % 200) as u64;
                                pending.push_back(engine.render(&job(n))?);
                            }
                            pending.into_iter().try_for_each(finish)
                        };
                        if let Err(e) = stream() {
                            failure.get_or_insert(e);
                        }
                        done.wait();
                        failure.map_or(Ok(submitting), Err)
                    })
                })
                .collect();
            let mut fps = Vec::new();
            let mut before = None;
            for round in 0..rounds + 2 {
                if round == 2 {
                    before = Some(WorkerTimes::of(&model));
                }
                start.wait();
                let t = Instant::now();
                done.wait();
                if round >= 2 {
                    fps.push(batch as f64 / t.elapsed().as_secs_f64());
                }
            }
            let streaming = WorkerTimes::of(&model);
            let worker = streaming.since(before.expect("set at round 2"));
            start.wait();
            let t = Instant::now();
            done.wait();
            // The time and the worker's counters when the timed frames were all answered (the
            // batches answered untimed after are left out); unset only if every thread failed
            // (their errors are returned below).
            let (end, counters) = stream_end
                .get()
                .copied()
                .unwrap_or_else(|| (Instant::now(), WorkerTimes::of(&model)));
            let streamed = stream_frames as f64 / (end - t).as_secs_f64();
            let stream_worker = counters.since(streaming);
            // The slowest worker's submitting time, per measured round.
            let mut slowest = vec![Duration::ZERO; rounds + 2];
            for h in handles {
                let times = h.join().expect("an engine thread panicked")?;
                for (s, t) in slowest.iter_mut().zip(times) {
                    *s = (*s).max(t);
                }
            }
            let mut submit_ms: Vec<f64> =
                slowest[2..].iter().map(|d| d.as_secs_f64() * 1e3).collect();
            Ok((fps, median(&mut submit_ms), worker, streamed, stream_worker))
        },
    )?;
    let (mut fps, submit_ms, worker, streamed, stream_worker) = fps;
    let fps = median(&mut fps);
    println!(
        "lipsync engine path (512x512 frames, mel + crop + model + blend, frames prepared on {workers} thread{}, {model_workers} batch worker{}, face inputs {}), batch {batch:>3}: median {fps:.0} frames/s ({rounds} rounds)",
        if workers == 1 { "" } else { "s" },
        if model_workers == 1 { "" } else { "s" },
        model.face_inputs,
    );
    println!(
        "  a round of {batch} frames: {:.1} ms; frames submitted by the slowest thread in {submit_ms:.1} ms (median); {}",
        batch as f64 / fps * 1e3,
        worker.describe(),
    );
    let share = alone.map_or(String::new(), |(fps, held)| {
        format!(
            ", {:.1} % of the model alone with {held}",
            100.0 * streamed / fps
        )
    });
    println!(
        "lipsync engine path, streamed ({} batches in flight, as sessions keep preparing frames while earlier ones run), batch {batch:>3}, {model_workers} batch worker{}: {streamed:.0} frames/s{share} ({} frames timed); {}",
        in_flight,
        if model_workers == 1 { "" } else { "s" },
        stream_frames,
        stream_worker.describe(),
    );
    Ok(())
}

/// The shared model's worker counters (see `BatchStats`), to take the difference of two.
#[derive(Clone, Copy)]
struct WorkerTimes {
    batches: u64,
    fill_ms: f64,
    model_ms: f64,
    read_ms: f64,
    gpu_ms: f64,
}

impl WorkerTimes {
    fn of(model: &gstfacecastlipsync::wav2lip_batcher::SharedModel) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let ms = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed) as f64 / 1e3;
        Self {
            batches: model.stats.batches.load(Relaxed),
            fill_ms: ms(&model.stats.fill_us),
            model_ms: ms(&model.stats.model_us),
            read_ms: ms(&model.stats.read_us),
            gpu_ms: ms(&model.stats.gpu_us),
        }
    }

    /// Per-batch means since `earlier`.
    fn since(self, earlier: Self) -> Self {
        let n = (self.batches - earlier.batches).max(1) as f64;
        Self {
            batches: self.batches - earlier.batches,
            fill_ms: (self.fill_ms - earlier.fill_ms) / n,
            model_ms: (self.model_ms - earlier.model_ms) / n,
            read_ms: (self.read_ms - earlier.read_ms) / n,
            gpu_ms: (self.gpu_ms - earlier.gpu_ms) / n,
        }
    }

    /// Where a batch's time went, per batch. On a GPU lane the worker's thread only queues
    /// the batch's steps, and the GPU's time is told apart.
    fn describe(&self) -> String {
        if self.gpu_ms > 0.0 {
            format!(
                "a batch worker per batch: inputs written and queued {:.1} ms, model queued {:.1} ms, download queued {:.1} ms; on the GPU {:.1} ms, crops up to outputs down (means of {} batches)",
                self.fill_ms, self.model_ms, self.read_ms, self.gpu_ms, self.batches
            )
        } else {
            format!(
                "a batch worker per batch: inputs {:.1} ms, run {:.1} ms, outputs read back {:.1} ms (means of {} batches)",
                self.fill_ms, self.model_ms, self.read_ms, self.batches
            )
        }
    }
}

/// Writing and opening a registered avatar's cache: from disk (a fresh open: header, faces and
/// frame index) and from memory (the store's LRU), and reading one frame.
fn cache_bench(frames: usize, size: u32) -> anyhow::Result<()> {
    use facecast_avatars::cache::{self, CachedAvatar};
    use facecast_avatars::store::AvatarStore;
    use facecast_avatars::{AvatarInfo, FaceFrame, SourceKind, CROP_SIZE};
    use facecast_common::Rect;
    let dir = tempfile::tempdir()?;
    let store = AvatarStore::new(dir.path(), 2);
    let info = AvatarInfo {
        name: "bench".into(),
        kind: SourceKind::Video,
        width: size,
        height: size,
        fps: (25, 1),
        padding: [0, 10, 0, 0],
        detector: "bench".into(),
        created_unix: 0,
    };
    // Smooth gradients with noise: compresses about like a real face video.
    let frame_bytes = (size * size * 4) as usize;
    let frame = |k: usize| -> Vec<u8> {
        (0..frame_bytes)
            .map(|i| {
                let px = i / 4;
                let (x, y) = (px % size as usize, px / size as usize);
                if i % 4 == 3 {
                    255
                } else {
                    ((x + y + k) / 3 + fastrand::usize(..6)) as u8
                }
            })
            .collect()
    };
    let faces: Vec<FaceFrame> = (0..frames)
        .map(|k| FaceFrame {
            face: Rect::new(170 + (k % 5) as u32, 60, 100, 130),
            landmarks: [[200.0, 100.0]; 5],
            score: 0.9,
            crop: (0..CROP_SIZE * CROP_SIZE * 3)
                .map(|i| (i * 13 + k) as u8)
                .collect(),
            mask: vec![128; CROP_SIZE * CROP_SIZE].into(),
        })
        .collect();
    let path = store.path_of("bench")?;
    let t = Instant::now();
    let bytes = cache::write(&path, &info, &faces, (0..frames).map(frame))?;
    println!(
        "avatar cache: {frames} frames of {size}x{size}, {:.1} MB on disk, written in {:.2} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let mut disk = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        std::hint::black_box(CachedAvatar::open(&path)?);
        disk.push(t.elapsed().as_secs_f64() * 1e3);
    }
    store.get("bench")?;
    let mut memory = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        std::hint::black_box(store.get("bench")?);
        memory.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let avatar = store.get("bench")?;
    let mut out = vec![0u8; avatar.frame_size()];
    let mut read = Vec::new();
    for k in 0..frames.min(100) {
        let t = Instant::now();
        avatar.read_frame(k, &mut out)?;
        read.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "open from disk (page cache): median {:.2} ms; from memory (LRU hit): median {:.4} ms; one frame read + decompressed: median {:.2} ms",
        median(&mut disk),
        median(&mut memory),
        median(&mut read)
    );
    Ok(())
}
