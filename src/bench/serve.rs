//! `facecast bench --serve`: live sessions as `facecast serve` runs them (pipelines and
//! registry, no HTTP). First the latency from `say` to its first lip-synced frame out of the
//! encoder, then, step by step, whether N sessions all speaking keep their frame rate with no
//! frame dropped or repeated: with the built-in face, or a registered photo avatar through the
//! lip-sync model on a chosen device (then with the lipsync frame delay and the GPU's load).

use super::{listen, percentile, process_cpu_time, restream, threads, BenchArgs, PARAGRAPH};
use crate::session::admission::BUSY_WINDOW;
use gst::prelude::*;
use std::time::{Duration, Instant};

pub(super) fn serve_bench(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::config::{Config, VideoConfig};
    use crate::session::{CreateSession, Registry};
    use std::sync::Arc;

    let mut base = Config::load(args.config.as_deref())?;
    if let Some(codec) = args.codec {
        base.video.codec = codec;
    }
    if let Some(device) = &args.device {
        base.lipsync.device = crate::config::parse_device(device, facecast_gpu::nvml::gpu_count)
            .map_err(anyhow::Error::msg)?;
    }
    let config = Arc::new(Config {
        max_sessions: args
            .sessions
            .iter()
            .copied()
            .fold(args.max_sessions, usize::max),
        video: VideoConfig {
            width: args.size,
            height: args.size,
            fps: args.fps,
            ..base.video
        },
        ..base
    });
    let photo = args.avatar.is_some() || args.engine.as_deref() == Some("wav2lip");
    if photo {
        // As `facecast serve` does: the avatar store, and the model loaded and warmed up.
        crate::serve::prepare_lipsync(&config)?;
    }
    let create = || CreateSession {
        avatar: args.avatar.clone(),
        engine: args.engine.clone(),
        ..Default::default()
    };
    let steps: Vec<usize> = if args.sessions.is_empty() {
        (1..=args.max_sessions).collect()
    } else {
        args.sessions.clone()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let registry = Registry::new(config.clone(), metrics.clone());
        println!(
            "facecast bench --serve: {}x{} at {} fps, {:?} {} kbit/s + Opus, {} CPUs, avatar {}{}",
            args.size,
            args.size,
            args.fps,
            config.video.codec,
            config.video.bitrate_kbps,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            args.avatar.as_deref().unwrap_or("built-in"),
            if photo {
                format!(
                    ", lip-sync model on {} (batch size {}, batch wait {} ms, frame budget {} ms)",
                    config.lipsync.device,
                    config.lipsync.batch_size,
                    config.lipsync.batch_wait_ms,
                    config.lipsync.frame_budget_ms
                )
            } else {
                String::new()
            }
        );

        if args.says > 0 {
            // say → first frame, one session, one short sentence at a time.
            let session = registry
                .create(create())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
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
        }

        // Concurrent sessions, all speaking all the time.
        for n in steps {
            let mut sessions = Vec::with_capacity(n);
            let mut refused = 0;
            for _ in 0..n {
                sessions.push(create_admitted(&registry, create(), &mut refused).await?);
            }
            if let Some(base) = &args.restream {
                for (i, s) in sessions.iter().enumerate() {
                    registry
                        .add_output(&s.id, &restream::stream(base, &format!("serve-{n}-{i}")))
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
            let mut publishers = Vec::new();
            if args.listening {
                for s in &sessions {
                    publishers.push(
                        listen::room_noise_publisher(&registry, s, args.step_secs as f64 + 3.0)
                            .await?,
                    );
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let count = |id: &str| {
                (
                    metrics.frames_produced.with_label_values(&[id]).get(),
                    metrics.frames_dropped.with_label_values(&[id]).get(),
                    metrics.frames_repeated.with_label_values(&[id]).get(),
                )
            };
            for s in &sessions {
                for _ in 0..((args.step_secs / 15) + 1) {
                    s.say(PARAGRAPH, None);
                }
            }
            let delays = FrameDelays::watch(&sessions);
            let gpu = GpuSampler::start(config.lipsync.device);
            let cpu0 = process_cpu_time();
            let threads0 = threads::ThreadTimes::now();
            // Counted from here, where the step's clock starts: queuing the says of a hundred
            // sessions takes seconds, and frames counted before the clock would pass for more
            // than 25 fps.
            let before: Vec<_> = sessions.iter().map(|s| count(&s.id)).collect();
            let model_frames0 = gstfacecastlipsync::wav2lip_batcher::frames_so_far();
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(args.step_secs)).await;
            let wall = t0.elapsed().as_secs_f64();
            let cpu = process_cpu_time().zip(cpu0).map(|(a, b)| (a - b).as_secs_f64());
            let by_thread =
                threads::ThreadTimes::now().since(&threads0, Duration::from_secs_f64(wall));
            let gpu = gpu.stop();
            let mut delays = delays.take();
            let after: Vec<_> = sessions.iter().map(|s| count(&s.id)).collect();
            let model_frames = gstfacecastlipsync::wav2lip_batcher::frames_so_far();
            let expected = wall * args.fps as f64;
            let (mut worst_fps, mut dropped, mut repeated) = (f64::MAX, 0, 0);
            let mut rates = Vec::new();
            for (b, a) in before.iter().zip(&after) {
                let fps = (a.0 - b.0) as f64 / wall;
                rates.push(format!("{fps:.1}"));
                worst_fps = worst_fps.min(fps);
                dropped += a.1 - b.1;
                repeated += a.2 - b.2;
            }
            // A restream that is not on the air does not count as held.
            let off_air = sessions
                .iter()
                .flat_map(|s| s.outputs())
                .filter(|o| o.state != crate::session::output::OutputState::Connected)
                .count();
            let ok = dropped == 0
                && repeated == 0
                && worst_fps * wall >= expected * 0.98
                && off_air == 0;
            let fps_list = if n <= 16 {
                format!("fps [{}]", rates.join(", "))
            } else {
                format!("slowest {worst_fps:.1} fps")
            };
            println!(
                "{n} sessions speaking{}{}: {fps_list}, {dropped} frames dropped, {repeated} repeated (late or failed), \
                 lipsync frame delay p50 {} p99 {}, CPU {:.0}% of one core{}{}{}",
                if args.listening {
                    " and listening (WHIP clients in this process)"
                } else {
                    ""
                },
                match &args.restream {
                    Some(_) => format!(" and restreaming ({off_air} outputs off the air)"),
                    None => String::new(),
                },
                ms_or_dash(&mut delays, 0.5),
                ms_or_dash(&mut delays, 0.99),
                cpu.map_or(f64::NAN, |c| c / wall * 100.0),
                gpu.map(|g| format!(", {g}")).unwrap_or_default(),
                match refused {
                    0 => String::new(),
                    k => format!(
                        ", admission refused {k} starts (each retried {} s later)",
                        BUSY_WINDOW.as_secs()
                    ),
                },
                if ok { "" } else { "  <- not sustained" }
            );
            // Where the CPU went: the costliest kinds of thread (GStreamer names streaming
            // threads after their pad; the kernel cuts names at 15 characters).
            let top: Vec<String> = by_thread
                .iter()
                .take(6)
                .map(|k| format!("{} {:.2} ({} threads)", k.name, k.cores, k.threads))
                .collect();
            if !top.is_empty() {
                println!("    cores by thread: {}", top.join(", "));
            }
            if matches!(config.lipsync.device, facecast_onnx::Device::Cuda(_)) {
                println!(
                    "    output frames made on the GPU: {} of the {} through the model",
                    model_frames.1 - model_frames0.1,
                    model_frames.0 - model_frames0.0
                );
            }
            for s in &sessions {
                registry.end(&s.id, "bench");
            }
            drop(publishers);
            if !ok {
                break;
            }
        }
        Ok(())
    })
}

/// How many times a step asks again for a session that admission refused because the sessions
/// already started repeated a late frame: starting a hundred pipelines back to back can make
/// the running ones late for a moment, which admission rightly answers with "try again
/// shortly". The bench then does what a client honouring `Retry-After` does; the refusals are
/// counted in the step's line, and frames repeated before the step's clock starts are not
/// counted against it.
const ADMISSION_TRIES: u32 = 6;

async fn create_admitted(
    registry: &std::sync::Arc<crate::session::Registry>,
    request: crate::session::CreateSession,
    refused: &mut u32,
) -> anyhow::Result<std::sync::Arc<crate::session::Session>> {
    use crate::session::{admission::Refusal, SessionError};
    let mut tries = 0;
    loop {
        match registry.create(request.clone()).await {
            Ok(session) => return Ok(session),
            Err(SessionError::Busy(Refusal::Late { .. })) if tries < ADMISSION_TRIES => {
                tries += 1;
                *refused += 1;
                tokio::time::sleep(BUSY_WINDOW).await;
            }
            Err(e) if tries > 0 => {
                anyhow::bail!(
                    "{e} (refused {} times, {} s apart)",
                    tries + 1,
                    BUSY_WINDOW.as_secs()
                )
            }
            Err(e) => anyhow::bail!("{e}"),
        }
    }
}

fn ms_or_dash(v: &mut [f64], p: f64) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        format!("{:.0} ms", percentile(v, p) * 1e3)
    }
}

/// How long after its running time each frame leaves `lipsync` (the mel window's look-ahead,
/// the batch wait and the inference, the paste-back), measured on the pipeline clock.
struct FrameDelays(std::sync::Arc<std::sync::Mutex<Vec<f64>>>);

impl FrameDelays {
    fn watch(sessions: &[std::sync::Arc<crate::session::Session>]) -> Self {
        let delays = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for s in sessions {
            let pipeline = s.pipeline().pipeline.clone();
            let keep = delays.clone();
            s.pipeline().lipsync.static_pad("src").unwrap().add_probe(
                gst::PadProbeType::BUFFER,
                move |pad, info| {
                    let Some(gst::PadProbeData::Buffer(b)) = &info.data else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let running = pad.sticky_event::<gst::event::Segment>(0).and_then(|e| {
                        e.segment()
                            .downcast_ref::<gst::ClockTime>()
                            .and_then(|seg| seg.to_running_time(b.pts()))
                    });
                    let now = pipeline.current_running_time();
                    if let (Some(rt), Some(now)) = (running, now) {
                        let delay = now.nseconds() as f64 / 1e9 - rt.nseconds() as f64 / 1e9;
                        keep.lock().unwrap().push(delay);
                    }
                    gst::PadProbeReturn::Ok
                },
            );
        }
        Self(delays)
    }

    fn take(&self) -> Vec<f64> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The lip-sync GPU's utilisation (mean of one reading a second) and memory (the most used),
/// through NVML, while a step runs.
struct GpuSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
}

impl GpuSampler {
    fn start(device: facecast_onnx::Device) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let facecast_onnx::Device::Cuda(index) = device else {
            return Self { stop, thread: None };
        };
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut util, mut memory, mut total) = (Vec::new(), 0u64, 0u64);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = facecast_gpu::nvml::read(index.max(0) as u32) {
                    util.extend(r.utilization_percent.map(f64::from));
                    memory = memory.max(r.memory_used_bytes.unwrap_or(0));
                    total = r.memory_total_bytes.unwrap_or(total);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            (!util.is_empty()).then(|| {
                format!(
                    "GPU {:.0}% busy (mean), {:.2} of {:.0} GB used (most)",
                    util.iter().sum::<f64>() / util.len() as f64,
                    memory as f64 / 1e9,
                    total as f64 / 1e9
                )
            })
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Option<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take()?.join().ok().flatten()
    }
}
