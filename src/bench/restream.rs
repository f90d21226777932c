//! `facecast bench --restream rtmp://HOST:PORT/APP`: what an RTMP output costs and how soon it
//! is on the air, against a server the caller runs (nginx with the RTMP module, OBS, …).
//!
//! - **Added CPU of one output** when viewers already take H.264: one talking session with an
//!   H.264 WHEP viewer (in this process) for a while, then the same with an RTMP output added;
//!   the process CPU of each phase, and the difference as a share of the first.
//! - **`POST …/outputs` → on the air**: from adding the output to its first bytes leaving
//!   (`output_connected`), and to the first video frame a player pulling the stream back from
//!   the server receives (the player is waiting on the stream before the output starts).
//!
//! With `--serve`, every session of the concurrency steps also restreams (see `serve_bench`).

use super::{median, process_cpu_time, PARAGRAPH};
use crate::config::{Config, VideoCodec};
use crate::peers::WhepClient;
use crate::session::plan::OutputRequest;
use crate::session::{CreateSession, Registry, Session, SessionEvent};
use gst::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The output request for stream `name` under `base` (`rtmp://host:port/app`).
pub(super) fn stream(base: &str, name: &str) -> OutputRequest {
    OutputRequest {
        url: Some(format!("{}/{name}", base.trim_end_matches('/'))),
        record: false,
    }
}

/// Process CPU over `secs`, as a share of one core, with `session` talking.
async fn cpu_share(session: &Session, secs: u64) -> f64 {
    session.say(PARAGRAPH, None);
    session.say(PARAGRAPH, None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, t0) = (process_cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = t0.elapsed().as_secs_f64();
    session.interrupt();
    process_cpu_time()
        .zip(cpu0)
        .map_or(f64::NAN, |(a, b)| (a - b).as_secs_f64() / wall * 100.0)
}

/// A player of `url` (started before the stream exists); gives the instant its first video
/// frame arrives.
fn first_frame_of(
    url: &str,
) -> anyhow::Result<(gst::Pipeline, std::sync::mpsc::Receiver<Instant>)> {
    let pipeline = gst::parse::launch(&format!(
        "rtmp2src location={url} ! flvdemux name=d d.video ! fakesink name=v sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    pipeline
        .by_name("v")
        .and_then(|v| v.static_pad("sink"))
        .expect("fakesink v")
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let _ = tx.try_send(Instant::now());
            gst::PadProbeReturn::Remove
        });
    pipeline.set_state(gst::State::Playing)?;
    Ok((pipeline, rx))
}

pub(super) fn restream_bench(base: &str, secs: u64, rounds: usize) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.apply_env(|k| std::env::var(k).ok())?;
    config.video.codec = VideoCodec::H264;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let registry = Registry::new(Arc::new(config.clone()), metrics);
        println!(
            "facecast bench --restream {base}: {}x{} at {} fps, H.264 {} kbit/s for viewers and outputs, {} CPUs",
            config.video.width,
            config.video.height,
            config.video.fps,
            config.video.bitrate_kbps,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let session = registry
            .create(CreateSession::default())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let viewer = WhepClient::receiving(VideoCodec::H264);
        let (_, answer) = registry
            .add_viewer(&session.id, &viewer.offer())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let viewer = tokio::task::spawn_blocking(move || {
            viewer.answered(&answer);
            viewer
        })
        .await?;

        // The added CPU, over alternating phases.
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for round in 0..rounds.max(1) {
            without.push(cpu_share(&session, secs).await);
            let output = registry
                .add_output(&session.id, &stream(base, &format!("cost-{round}")))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            with.push(cpu_share(&session, secs).await);
            let state = session.outputs()[0].state;
            anyhow::ensure!(
                state == crate::session::output::OutputState::Connected,
                "the output is {state:?}: is an RTMP server at {base}?"
            );
            let (r, sid, oid) = (registry.clone(), session.id.clone(), output.id);
            tokio::task::spawn_blocking(move || r.remove_output(&sid, &oid)).await??;
        }
        let (base_cpu, out_cpu) = (median(&mut without), median(&mut with));
        println!(
            "one talking session + one H.264 viewer: CPU {base_cpu:.1}% of one core; with an RTMP output too: {out_cpu:.1}% (medians of {} phases of {secs} s)",
            without.len()
        );
        println!(
            "added by the output: {:.1}% of one core = {:.1}% of the session's cost",
            out_cpu - base_cpu,
            (out_cpu - base_cpu) / base_cpu * 100.0
        );

        // POST → on the air.
        let (mut connected, mut pulled) = (Vec::new(), Vec::new());
        for round in 0..rounds.max(1) * 2 {
            let name = format!("air-{round}");
            let request = stream(base, &name);
            let (player, first) = first_frame_of(request.url.as_deref().unwrap_or_default())?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut events = session.subscribe();
            let t0 = Instant::now();
            let output = registry
                .add_output(&session.id, &request)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tokio::time::timeout(Duration::from_secs(10), async {
                while let Ok(ev) = events.recv().await {
                    if matches!(ev, SessionEvent::OutputConnected { .. }) {
                        break;
                    }
                }
            })
            .await?;
            connected.push(t0.elapsed().as_secs_f64() * 1e3);
            let at = tokio::task::spawn_blocking(move || first.recv_timeout(Duration::from_secs(10)))
                .await??;
            pulled.push(at.duration_since(t0).as_secs_f64() * 1e3);
            let _ = player.set_state(gst::State::Null);
            let (r, sid, oid) = (registry.clone(), session.id.clone(), output.id);
            tokio::task::spawn_blocking(move || r.remove_output(&sid, &oid)).await??;
        }
        println!(
            "POST outputs -> first bytes out (output_connected): median {:.0} ms, max {:.0} ms; -> first video frame at a player pulling from the server: median {:.0} ms, max {:.0} ms ({} rounds)",
            median(&mut connected),
            connected.iter().cloned().fold(0.0, f64::max),
            median(&mut pulled),
            pulled.iter().cloned().fold(0.0, f64::max),
            pulled.len()
        );
        anyhow::ensure!(
            viewer.video_packets() > 0 && !viewer.heard().is_empty(),
            "the viewer received nothing"
        );
        registry.end(&session.id, "bench");
        Ok(())
    })
}
