//! The listening benchmarks: what a voice in costs, and how fast the avatar answers to it.
//!
//! - `--vad MODEL`: one listening stream's CPU, as a share of one core.
//! - `--barge-in N`: a person's speech onset in → the avatar's output audio silent.
//! - `--turn N`: the end of a person's question → the first lip-synced frame of the answer
//!   out of the encoder, with a scripted instant recogniser and language model.
//! - `--drive N`: drive mode, a syllable's onset in the published voice → the first frame with
//!   the jaw open out of the encoder.
//!
//! Every voice crosses real WebRTC on loopback (a `webrtcbin` WHIP client), and every figure
//! is taken on the system clock that the client's pipeline and the session's share.

use super::{median, percentile, process_cpu_time};
use crate::config::Config;
use crate::peers::WhipClient;
use crate::session::pipeline::running_time_on;
use crate::session::{CreateSession, Registry, Session, SessionEvent};
use anyhow::Context;
use gst::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One listening stream's cost: 10 minutes of audio through `vad` as fast as it goes, the
/// process's CPU time over the audio's duration (the source and sink are included, so this is an
/// upper bound). Median of 3 runs.
pub(super) fn vad_bench(model: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    crate::plugins::register()?;
    let audio_secs = 600.0;
    let mut shares = Vec::new();
    for _ in 0..3 {
        let pipeline = gst::parse::launch(&format!(
            "audiotestsrc wave=pink-noise volume=0.3 samplesperbuffer=320 num-buffers={} \
             ! audio/x-raw,format=S16LE,rate=16000,channels=1 ! vad model={} ! fakesink sync=false",
            (audio_secs * 50.0) as u64,
            model.display()
        ))?;
        let cpu0 = process_cpu_time();
        pipeline.set_state(gst::State::Playing)?;
        let bus = pipeline.bus().context("a pipeline has a bus")?;
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(600),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .context("vad did not finish within 10 minutes")?;
        pipeline.set_state(gst::State::Null)?;
        if let gst::MessageView::Error(e) = msg.view() {
            anyhow::bail!("vad: {}", e.error());
        }
        let cpu = process_cpu_time()
            .zip(cpu0)
            .map(|(a, b)| (a - b).as_secs_f64())
            .context("no /proc/self/stat")?;
        shares.push(cpu / audio_secs);
    }
    println!(
        "vad (Silero, 32 ms frames): one stream costs {:.2} % of one core (median of 3 runs of {audio_secs:.0} s of audio)",
        100.0 * median(&mut shares)
    );
    Ok(())
}

/// 48 kHz mono samples of `text` said by espeak-ng or the Piper `voice` (what the WHIP client
/// sends).
pub(crate) fn spoken_48k(text: &str, voice: Option<&str>) -> anyhow::Result<Vec<i16>> {
    use anyhow::Context;
    let tts = match voice {
        Some(v) => format!("speechsynth engine=piper voice={v}"),
        None => "speechsynth".into(),
    };
    let pipeline = gst::parse::launch(&format!(
        "{tts} text=\"{text}\" ! audioconvert ! audioresample ! \
         audio/x-raw,format=S16LE,rate=48000,channels=1 ! appsink name=out sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    let mut samples = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().context("a sample without a buffer")?;
        let map = buffer.map_readable()?;
        samples.extend(
            map.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(samples)
}

/// Where sound starts and stops in 48 kHz `samples`, in seconds (10 ms windows within 40 dB
/// of the loudest).
pub(crate) fn sound_span(samples: &[i16]) -> (f64, f64) {
    let levels = loudness(samples);
    let loudest = levels.iter().cloned().fold(0.0, f64::max);
    let first = levels
        .iter()
        .position(|&l| l > loudest / 100.0)
        .unwrap_or(0);
    let last = levels
        .iter()
        .rposition(|&l| l > loudest / 100.0)
        .unwrap_or(0);
    (first as f64 * 0.01, (last + 1) as f64 * 0.01)
}

/// RMS of each 10 ms window of 48 kHz samples.
fn loudness(samples: &[i16]) -> Vec<f64> {
    samples
        .chunks(480)
        .map(|w| (w.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect()
}

fn secs(t: gst::ClockTime) -> f64 {
    t.nseconds() as f64 / 1e9
}

/// The session's sound as it goes to the audio encoder: each 10 ms window's loudness, with the
/// system-clock time it is due to sound at (its running time plus the pipeline's base time).
#[derive(Clone, Default)]
pub(crate) struct OutputAudio(Arc<Mutex<Vec<(f64, f64)>>>);

impl OutputAudio {
    pub(crate) fn capture(session: &Session) -> Self {
        let out = Self::default();
        let keep = out.0.clone();
        let pipeline = session.pipeline();
        let base = secs(pipeline.pipeline.base_time().unwrap_or_default());
        pipeline.on_audio_out(move |at, samples| {
            let start = base + secs(at);
            let levels = loudness(samples);
            let mut windows = keep.lock().unwrap();
            windows.extend(
                levels
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| (start + i as f64 * 0.01, l)),
            );
        });
        out
    }

    /// Whether the output reaches `t` yet.
    pub(crate) fn reaches(&self, t: f64) -> bool {
        self.0.lock().unwrap().last().is_some_and(|w| w.0 >= t)
    }

    /// Whether the avatar sounded in the `span` seconds before `t`.
    pub(crate) fn sounded_before(&self, t: f64, span: f64) -> bool {
        let windows = self.0.lock().unwrap();
        let loudest = windows.iter().map(|w| w.1).fold(0.0, f64::max);
        windows
            .iter()
            .any(|w| w.0 >= t - span && w.0 < t && w.1 > loudest / 100.0)
    }

    /// Where the avatar's sound ends within `within` seconds after `from`: the end of the last
    /// window within 40 dB of the loudest (`from` if it was already silent).
    pub(crate) fn silent_from(&self, from: f64, within: f64) -> f64 {
        let windows = self.0.lock().unwrap();
        let loudest = windows.iter().map(|w| w.1).fold(0.0, f64::max);
        windows
            .iter()
            .filter(|w| w.0 >= from && w.0 < from + within && w.1 > loudest / 100.0)
            .map(|w| w.0 + 0.01)
            .fold(from, f64::max)
    }
}

/// A registry for the benchmarks, configured from the environment like the server.
fn registry(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Arc<Registry>> {
    crate::plugins::register()?;
    let mut config = Config::default();
    config.apply_env(|k| std::env::var(k).ok())?;
    adjust(&mut config);
    Ok(Registry::new(
        Arc::new(config),
        Arc::new(crate::metrics::Metrics::new()),
    ))
}

/// A session with a connected WHIP publisher.
async fn with_publisher(
    registry: &Arc<Registry>,
    create: CreateSession,
) -> anyhow::Result<(Arc<Session>, WhipClient)> {
    let session = registry
        .create(create)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let client = publish_to(registry, &session).await?;
    Ok((session, client))
}

/// A WHIP client publishing to `session`, connected.
async fn publish_to(registry: &Arc<Registry>, session: &Session) -> anyhow::Result<WhipClient> {
    let client = WhipClient::new(false);
    let offer = client.offer();
    let (_, answer) = registry
        .add_publisher(&session.id, &offer)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(tokio::task::spawn_blocking(move || {
        client.answered(&answer);
        client
    })
    .await?)
}

/// A WHIP publisher for `session` sending `secs` of quiet room noise: the session listens
/// (decodes, runs the VAD) all along, and hears no turn.
pub(super) async fn room_noise_publisher(
    registry: &Arc<Registry>,
    session: &Session,
    secs: f64,
) -> anyhow::Result<WhipClient> {
    let client = publish_to(registry, session).await?;
    let mut rng = fastrand::Rng::with_seed(7);
    let noise: Vec<i16> = (0..(secs * 48_000.0) as usize)
        .map(|_| rng.i16(-300..300))
        .collect();
    Ok(tokio::task::spawn_blocking(move || {
        client.send(&noise);
        client
    })
    .await?)
}

/// Sends `lead_in` seconds of silence, `voice`, then `tail` seconds of silence from `client`;
/// returns the system-clock time (seconds) the voice starts leaving it.
async fn speak(
    client: &Arc<WhipClient>,
    lead_in: f64,
    voice: &[i16],
    tail: f64,
) -> anyhow::Result<f64> {
    let mut samples = vec![0i16; (lead_in * 48_000.0) as usize];
    samples.extend(voice);
    samples.extend(vec![0i16; (tail * 48_000.0) as usize]);
    let c = client.clone();
    let start = tokio::task::spawn_blocking(move || c.send(&samples)).await?;
    Ok(secs(client.sent_at(start)) + lead_in)
}

/// The next event `want` accepts, within `within`.
async fn next(
    events: &mut tokio::sync::broadcast::Receiver<SessionEvent>,
    within: Duration,
    want: impl Fn(&SessionEvent) -> bool,
) -> Option<SessionEvent> {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(ev) if want(&ev) => return Some(ev),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

fn summary(v: &mut [f64]) -> String {
    format!(
        "median {:.0} ms, p95 {:.0} ms, max {:.0} ms ({} rounds)",
        median(v),
        percentile(v, 0.95),
        percentile(v, 1.0),
        v.len()
    )
}

/// Barge-in, `rounds` times: the avatar speaks a long sentence and a WHIP client speaks over
/// it. Reported: from the onset of the client's speech (when it leaves the client) to the
/// avatar's output audio falling silent, and to the confirmed barge-in (the interrupt).
pub(super) fn barge_in_bench(rounds: usize, voice: Option<&str>) -> anyhow::Result<()> {
    let question = spoken_48k("Sorry but I have another question", voice)?;
    let (sound_at, _) = sound_span(&question);
    let clock = gst::SystemClock::obtain();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let registry = registry(|_| {})?;
        let (mut to_silence, mut to_interrupt) = (Vec::new(), Vec::new());
        for round in 0..rounds.max(1) {
            let (session, client) = with_publisher(&registry, CreateSession::default()).await?;
            let output = OutputAudio::capture(&session);
            let mut events = session.subscribe();
            session.say(
                "This is a long answer that goes on and on, so that there is plenty of time to interrupt it in the middle.",
                None,
            );
            next(&mut events, Duration::from_secs(10), |e| {
                matches!(e, SessionEvent::SpeechStarted { .. })
            })
            .await
            .context("the avatar never spoke")?;
            // Into the sentence, at a different phase each round.
            tokio::time::sleep(Duration::from_millis(700 + 37 * round as u64)).await;
            let client = Arc::new(client);
            let onset = speak(&client, 0.3, &question, 1.0).await? + sound_at;
            next(&mut events, Duration::from_secs(10), |e| {
                matches!(e, SessionEvent::BargeIn { .. })
            })
            .await
            .with_context(|| format!("round {round}: no barge-in within 10 s"))?;
            to_interrupt.push((secs(clock.time()) - onset) * 1e3);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !output.reaches(onset + 1.0) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::ensure!(
                output.sounded_before(onset, 0.3),
                "round {round}: the avatar was not talking when the question began"
            );
            to_silence.push((output.silent_from(onset, 1.0) - onset) * 1e3);
            registry.end(&session.id, "bench");
            drop(client);
        }
        println!(
            "barge-in over WHIP (loopback), min_interrupt_ms {}, jitter buffer {} ms:\n  \
             speech onset in -> the avatar's output audio silent: {}\n  \
             speech onset in -> barge-in confirmed (interrupt): {}",
            registry.config.voice_input.min_interrupt_ms,
            registry.config.voice_input.jitter_buffer_ms,
            summary(&mut to_silence),
            summary(&mut to_interrupt),
        );
        Ok(())
    })
}

/// A person's question, `rounds` times, answered by a scripted recogniser and language model
/// that answer at once: from the end of the question's sound (as it leaves the client) to the
/// first lip-synced frame of the answer out of the encoder. The end-of-turn silence is part of
/// it by design.
pub(super) fn turn_bench(rounds: usize, voice: Option<&str>) -> anyhow::Result<()> {
    use crate::conversation::scripted::{scripted_conversation, sse};
    let question = spoken_48k("What time is it", voice)?;
    let (_, sound_end) = sound_span(&question);
    let clock = gst::SystemClock::obtain();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (asr_url, _posted) = crate::peers::transcriber("what time is it");
        let replies = (0..rounds.max(1))
            .map(|_| {
                let mut b = sse(&["It is noon."]);
                b.extend_from_slice(b"data: [DONE]\n\n");
                ("200 OK", vec![(0, b)])
            })
            .collect();
        let llm = scripted_conversation(replies).await;
        let registry = registry(|c| {
            c.asr.base_url = Some(asr_url);
            c.llm.base_url = Some(llm.base_url.clone());
        })?;
        let mut latencies = Vec::new();
        for round in 0..rounds.max(1) {
            let (session, client) = with_publisher(&registry, CreateSession::default()).await?;
            let mut events = session.subscribe();
            let client = Arc::new(client);
            let speech_end = speak(&client, 0.5, &question, 2.0).await? + sound_end;
            next(&mut events, Duration::from_secs(15), |e| {
                matches!(e, SessionEvent::SpeechStarted { .. })
            })
            .await
            .with_context(|| format!("round {round}: the question was never answered"))?;
            let deadline = Instant::now() + Duration::from_secs(2);
            let first = loop {
                if let Some(&at) = session.say_first_frames().last() {
                    break at;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "round {round}: no frame of the answer"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            // That Instant on the system clock.
            let (now_clock, now) = (secs(clock.time()), Instant::now());
            let first_clock = now_clock - now.duration_since(first).as_secs_f64();
            latencies.push((first_clock - speech_end) * 1e3);
            registry.end(&session.id, "bench");
            drop(client);
        }
        println!(
            "end of the question's sound -> first lip-synced frame of the answer out of the encoder \
             (scripted instant ASR and LLM over loopback, end_of_turn_ms {} included; goal <= {} ms):\n  {}",
            registry.config.voice_input.end_of_turn_ms,
            registry.config.voice_input.end_of_turn_ms + 200,
            summary(&mut latencies)
        );
        Ok(())
    })
}

/// Drive mode: a voice saying "Pa." `rounds` times, about 0.8 s apart (at phases spread over
/// the frame grid). For each syllable, from its onset leaving the client to the first frame
/// with the jaw open (over a third: the mouth shows the sound) leaving the encoder, and
/// leaving `lipsync`.
pub(super) fn drive_bench(rounds: usize, voice: Option<&str>) -> anyhow::Result<()> {
    use facecast_common::{Blendshape, FaceInfo};
    let syllable = spoken_48k("Pa.", voice)?;
    let (sound_at, sound_end) = sound_span(&syllable);
    let syllable = &syllable[(sound_at * 48_000.0) as usize..(sound_end * 48_000.0) as usize];
    let clock = gst::SystemClock::obtain();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let registry = registry(|_| {})?;
        let (session, client) = with_publisher(
            &registry,
            CreateSession {
                listen: Some("drive".into()),
                ..Default::default()
            },
        )
        .await?;
        let pipeline = session.pipeline();
        // Frames with the jaw open, by the running time their display ends: when they left
        // lipsync and when they left the encoder, on the system clock.
        type Seen = Arc<Mutex<Vec<(gst::ClockTime, f64)>>>;
        let (open_out_of_lipsync, encoded): (Seen, Seen) = Default::default();
        let keep = open_out_of_lipsync.clone();
        let c = clock.clone();
        pipeline
            .lipsync
            .static_pad("src")
            .context("lipsync has a src pad")?
            .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let Some(b) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                let jaw = FaceInfo::from_buffer(b)
                    .and_then(|f| f.pose)
                    .map(|p| p.weights[Blendshape::JawOpen])
                    .unwrap_or(0.0);
                let end = running_time_on(
                    pad,
                    b.pts().unwrap_or_default() + b.duration().unwrap_or_default(),
                );
                if jaw > 0.33 {
                    keep.lock().unwrap().push((end, secs(c.time())));
                }
                gst::PadProbeReturn::Ok
            });
        let keep = encoded.clone();
        let c = clock.clone();
        pipeline.on_frame_encoded(move |end| keep.lock().unwrap().push((end, secs(c.time()))));
        tokio::time::sleep(Duration::from_secs(1)).await;

        // Syllables about 0.8 s apart, each a little later against the 40 ms frame grid.
        let onsets: Vec<f64> = (0..rounds.max(1))
            .map(|k| 0.8 * (k + 1) as f64 + (k * 7 % 40) as f64 / 1000.0)
            .collect();
        let mut samples = Vec::new();
        for &at in &onsets {
            samples.resize((at * 48_000.0) as usize, 0);
            samples.extend(syllable);
        }
        samples.extend(vec![0i16; 48_000]);
        let client = Arc::new(client);
        let c = client.clone();
        let start = tokio::task::spawn_blocking(move || c.send(&samples)).await?;
        let sent = secs(client.sent_at(start));
        tokio::time::sleep(Duration::from_secs_f64(0.8 * (rounds.max(1) + 2) as f64)).await;
        registry.end(&session.id, "bench");
        drop(client);

        let open = open_out_of_lipsync.lock().unwrap().clone();
        let encoded = encoded.lock().unwrap().clone();
        let (mut to_encoded, mut to_lipsync) = (Vec::new(), Vec::new());
        for &at in &onsets {
            let onset = sent + at;
            // The first open frame to leave lipsync after the onset left the client.
            let Some(&(end, out_of_lipsync)) = open
                .iter()
                .find(|&&(_, at)| at >= onset && at < onset + 0.6)
            else {
                continue;
            };
            to_lipsync.push((out_of_lipsync - onset) * 1e3);
            if let Some(&(_, out)) = encoded.iter().find(|&&(e, _)| e == end) {
                to_encoded.push((out - onset) * 1e3);
            }
        }
        anyhow::ensure!(
            !to_encoded.is_empty(),
            "the jaw never opened for the driving voice"
        );
        println!(
            "drive mode over WHIP (loopback), jitter buffer {} ms, viseme engine; syllable onset in ->\n  \
             first jaw-open (> 0.33) frame out of the encoder: {}\n  \
             first jaw-open frame out of lipsync: {}",
            registry.config.voice_input.jitter_buffer_ms,
            summary(&mut to_encoded),
            summary(&mut to_lipsync),
        );
        Ok(())
    })
}
