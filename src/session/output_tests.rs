//! Outputs end to end: a session pushes to a real RTMP server (nginx with Debian's RTMP module,
//! started by the test on loopback) or an SRT peer, and the test pulls the stream back and
//! decodes it to pixels and samples.

use super::output::OutputState;
use super::plan::OutputRequest;
use super::plan::PlanError;
use super::tests::registry;
use super::whip_tests::next_event;
use super::*;
use crate::config::{Config, VideoCodec};
use crate::peers::WhepClient;
use facecast_common::AvatarPose;
use facecast_testkit::NginxRtmp;
use gstfacecastavatar::render::Renderer;

const SIZE: u32 = 256;

/// Waits for `done` to hold, checking every 20 ms; fails after `limit` saying `what`.
async fn until(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config() -> (Config, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.video.width = SIZE;
    config.video.height = SIZE;
    config.data_dir = data.path().to_owned();
    config.outputs.reconnect_initial_ms = 200;
    config.outputs.reconnect_max_ms = 800;
    (config, data)
}

fn url(url: String) -> OutputRequest {
    OutputRequest {
        url: Some(url),
        record: false,
    }
}

/// What a player pulling the stream back decoded: RGBA frames and mono samples, each with its
/// timestamp in seconds.
#[derive(Default)]
struct Pulled {
    frames: Vec<(f64, Vec<u8>)>,
    audio: Vec<(f64, Vec<f32>)>,
    rate: u32,
    /// The encoded streams' caps, as the demuxer gave them.
    video_caps: Option<gst::Caps>,
    audio_caps: Option<gst::Caps>,
}

struct Puller {
    pipeline: gst::Pipeline,
    pulled: Arc<Mutex<Pulled>>,
}

/// The sink pad of `pipeline`'s element `name`.
fn pad_of(pipeline: &gst::Pipeline, name: &str) -> gst::Pad {
    pipeline.by_name(name).unwrap().static_pad("sink").unwrap()
}

/// Calls `got` with every sample the appsink `name` of `pipeline` receives.
fn on_sample(
    pipeline: &gst::Pipeline,
    name: &str,
    got: impl Fn(&gst::Sample) + Send + Sync + 'static,
) {
    pipeline
        .by_name(name)
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    got(&s.pull_sample().map_err(|_| gst::FlowError::Eos)?);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
}

impl Puller {
    /// `source` ends in a demuxer named `d` with video and audio pads.
    fn start(source: &str, video_pad: &str, audio_pad: &str) -> Puller {
        let pipeline = gst::parse::launch(&format!(
            "{source} \
             d.{video_pad} ! queue ! h264parse name=vp ! avdec_h264 ! videoconvert ! video/x-raw,format=RGBA ! appsink name=v sync=false \
             d.{audio_pad} ! queue ! aacparse name=ap ! avdec_aac ! audioconvert ! audioresample ! audio/x-raw,format=F32LE,channels=1,rate=48000 ! appsink name=a sync=false"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let pulled = Arc::new(Mutex::new(Pulled::default()));
        let (p, vp) = (pulled.clone(), pad_of(&pipeline, "vp"));
        on_sample(&pipeline, "v", move |s| {
            let info = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
            let b = s.buffer().unwrap();
            let map = b.map_readable().unwrap();
            let stride = info.stride()[0] as usize;
            let mut rgba = Vec::new();
            for row in map.chunks(stride).take(info.height() as usize) {
                rgba.extend_from_slice(&row[..(info.width() * 4) as usize]);
            }
            let mut pulled = p.lock().unwrap();
            pulled.video_caps = vp.current_caps();
            pulled.frames.push((b.pts().unwrap().seconds_f64(), rgba));
        });
        let (p, ap) = (pulled.clone(), pad_of(&pipeline, "ap"));
        on_sample(&pipeline, "a", move |s| {
            let b = s.buffer().unwrap();
            let map = b.map_readable().unwrap();
            let samples = map
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let mut pulled = p.lock().unwrap();
            pulled.audio_caps = ap.current_caps();
            pulled.rate = 48_000;
            pulled.audio.push((b.pts().unwrap().seconds_f64(), samples));
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        Puller { pipeline, pulled }
    }

    fn rtmp(url: &str) -> Puller {
        Puller::start(
            &format!("rtmp2src location={url} ! flvdemux name=d"),
            "video",
            "audio",
        )
    }

    fn frames(&self) -> usize {
        self.pulled.lock().unwrap().frames.len()
    }

    fn stop(self) -> Pulled {
        let _ = self.pipeline.set_state(gst::State::Null);
        std::mem::take(&mut *self.pulled.lock().unwrap())
    }
}

/// Pixels of the open mouth's dark inside, in the built-in face's mouth region.
fn open_mouth_pixels(rgba: &[u8]) -> usize {
    let r = Renderer::new(SIZE, SIZE)
        .unwrap()
        .face_info(&AvatarPose::default())
        .mouth;
    let mut n = 0;
    for y in r.y..(r.y + r.h).min(SIZE) {
        for x in r.x..(r.x + r.w).min(SIZE) {
            let i = ((y * SIZE + x) * 4) as usize;
            let (red, g, b) = (rgba[i] as i32, rgba[i + 1] as i32, rgba[i + 2] as i32);
            if (45..125).contains(&red) && g < 42 && b < 52 && red > g + 35 {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restream_to_an_rtmp_server_carries_h264_and_aac_in_sync() {
    let nginx = NginxRtmp::start();
    let (config, _data) = config();
    let registry = registry(config);
    let session = registry
        .create(CreateSession {
            outputs: vec![url(nginx.url("facecast-test"))],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = session.subscribe();
    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputConnected { .. })
    })
    .await;
    let puller = Puller::rtmp(&nginx.url("facecast-test"));
    until(Duration::from_secs(10), "frames pulled back", || {
        puller.frames() >= 25
    })
    .await;
    session.say("Papa, are you far away?", None);
    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::SpeechEnded { .. })
    })
    .await;
    let after = puller.frames() + 25;
    until(Duration::from_secs(10), "a second more", || {
        puller.frames() >= after
    })
    .await;
    let pulled = puller.stop();
    registry.end(&session.id, "done");

    // H.264 and AAC.
    let video = pulled.video_caps.expect("video caps").to_string();
    let audio = pulled.audio_caps.expect("audio caps").to_string();
    assert!(video.starts_with("video/x-h264"), "{video}");
    assert!(
        audio.starts_with("audio/mpeg") && audio.contains("mpegversion=(int)4"),
        "{audio}"
    );
    // 25 fps, and as many frames as the time they span.
    let times: Vec<f64> = pulled.frames.iter().map(|f| f.0).collect();
    let mut steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    steps.sort_by(f64::total_cmp);
    let median = steps[steps.len() / 2];
    assert!((median - 0.040).abs() < 0.002, "median frame step {median}");
    let span = times[times.len() - 1] - times[0] + 0.04;
    assert!(
        (times.len() as f64 - span * 25.0).abs() <= 3.0,
        "{} frames over {span:.2} s",
        times.len()
    );
    let audio_secs: f64 =
        pulled.audio.iter().map(|a| a.1.len()).sum::<usize>() as f64 / pulled.rate as f64;
    assert!(
        (audio_secs - span).abs() < 0.3,
        "{audio_secs:.2} s of sound for {span:.2} s of video"
    );

    // Where the speech starts in the sound, and where the mouth opens in the pictures.
    let onset = pulled
        .audio
        .iter()
        .find_map(|(t, s)| {
            s.iter()
                .position(|v| v.abs() > 0.05)
                .map(|i| t + i as f64 / pulled.rate as f64)
        })
        .expect("speech in the pulled sound");
    let opens: Vec<(f64, usize)> = pulled
        .frames
        .iter()
        .map(|(t, f)| (*t, open_mouth_pixels(f)))
        .collect();
    let opened = opens
        .iter()
        .find(|(_, n)| *n > 20)
        .map(|(t, _)| *t)
        .expect("the mouth opens in the pulled pictures");
    println!("speech onset {onset:.3} s, mouth open {opened:.3} s");
    assert!(
        (opened - onset).abs() <= 0.040,
        "speech starts at {onset:.3} s but the mouth opens at {opened:.3} s: {opens:?}"
    );
}

/// How many elements made by `factory` the session's pipeline holds (by their type: elements
/// that bins make for themselves have no factory to ask).
fn count(session: &Session, factory: &str) -> usize {
    let Some(of) = gst::ElementFactory::find(factory).and_then(|f| f.load().ok()) else {
        return 0;
    };
    let kind = of.element_type();
    session
        .pipeline()
        .pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.type_() == kind)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_and_restreams_share_one_h264_encoder() {
    let nginx = NginxRtmp::start();
    let (mut config, _data) = config();
    config.video.codec = VideoCodec::H264;
    let registry = registry(config);
    let session = registry.create(CreateSession::default()).await.unwrap();
    let mut viewers = Vec::new();
    for _ in 0..2 {
        let viewer = WhepClient::receiving(VideoCodec::H264);
        let (_, answer) = registry
            .add_viewer(&session.id, &viewer.offer())
            .await
            .unwrap();
        viewers.push(
            tokio::task::spawn_blocking(move || {
                viewer.answered(&answer);
                viewer
            })
            .await
            .unwrap(),
        );
    }
    assert_eq!(count(&session, "voaacenc"), 0, "no AAC without an output");
    let mut events = session.subscribe();
    let output = registry
        .add_output(&session.id, &url(nginx.url("shared")))
        .await
        .unwrap();
    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputConnected { .. })
    })
    .await;
    for v in &viewers {
        let seen = v.video_packets();
        until(
            Duration::from_secs(5),
            "the viewers still receive video",
            || v.video_packets() > seen + 10,
        )
        .await;
    }
    assert_eq!(count(&session, "x264enc"), 1, "one H.264 encoder for all");
    assert_eq!(count(&session, "vp8enc"), 0);
    assert_eq!(count(&session, "voaacenc"), 1);
    let r = registry.clone();
    let (sid, oid) = (session.id.clone(), output.id.clone());
    tokio::task::spawn_blocking(move || r.remove_output(&sid, &oid))
        .await
        .unwrap()
        .unwrap();
    // The output's task may be the one detaching it: wait for it to say it stopped.
    next_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, SessionEvent::OutputStopped { .. })
    })
    .await;
    assert_eq!(
        count(&session, "voaacenc"),
        0,
        "AAC stops with the last output"
    );
    assert_eq!(count(&session, "x264enc"), 1, "the viewers' encoder stays");
    let v = &viewers[0];
    let seen = v.video_packets();
    until(Duration::from_secs(5), "the viewers keep receiving", || {
        v.video_packets() > seen + 10
    })
    .await;
    registry.end(&session.id, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vp8_session_encodes_h264_only_while_an_output_needs_it() {
    let (config, _data) = config();
    let registry = registry(config);
    let session = registry.create(CreateSession::default()).await.unwrap();
    assert_eq!(
        (count(&session, "vp8enc"), count(&session, "x264enc")),
        (1, 0)
    );
    let mut events = session.subscribe();
    let recording = registry
        .add_output(
            &session.id,
            &OutputRequest {
                url: None,
                record: true,
            },
        )
        .await
        .unwrap();
    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputConnected { .. })
    })
    .await;
    assert_eq!(
        (count(&session, "x264enc"), count(&session, "voaacenc")),
        (1, 1)
    );
    let r = registry.clone();
    let (sid, oid) = (session.id.clone(), recording.id.clone());
    tokio::task::spawn_blocking(move || r.remove_output(&sid, &oid))
        .await
        .unwrap()
        .unwrap();
    next_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, SessionEvent::OutputStopped { error: None, .. })
    })
    .await;
    assert_eq!(
        (count(&session, "x264enc"), count(&session, "voaacenc")),
        (0, 0)
    );
    assert_eq!(count(&session, "vp8enc"), 1);
    registry.end(&session.id, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_whose_server_dies_reconnects_and_the_session_goes_on() {
    let mut nginx = NginxRtmp::start();
    let (config, _data) = config();
    let registry = registry(config);
    let session = registry.create(CreateSession::default()).await.unwrap();
    let viewer = WhepClient::new();
    let (_, answer) = registry
        .add_viewer(&session.id, &viewer.offer())
        .await
        .unwrap();
    let viewer = tokio::task::spawn_blocking(move || {
        viewer.answered(&answer);
        viewer
    })
    .await
    .unwrap();
    let mut events = session.subscribe();
    registry
        .add_output(&session.id, &url(nginx.url("phoenix")))
        .await
        .unwrap();
    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputConnected { .. })
    })
    .await;

    nginx.kill();
    let error = next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputError { .. })
    })
    .await;
    println!("{error:?}");
    next_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, SessionEvent::OutputReconnecting { attempt: 1, .. })
    })
    .await;
    // While the server is gone: the viewer and the session carry on, and the output keeps
    // trying (refused each time).
    let (seen, produced) = (
        viewer.video_packets(),
        registry
            .metrics
            .frames_produced
            .with_label_values(&[&session.id])
            .get(),
    );
    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputReconnecting { attempt: 3, .. })
    })
    .await;
    assert!(viewer.video_packets() > seen + 10, "the viewer stalled");
    let now = registry
        .metrics
        .frames_produced
        .with_label_values(&[&session.id])
        .get();
    assert!(
        now > produced + 10,
        "the session stalled: {produced} → {now}"
    );
    assert!(registry.get(&session.id).is_ok());
    assert_eq!(
        session.outputs()[0].state,
        OutputState::Reconnecting,
        "{:?}",
        session.outputs()
    );

    nginx.resume();
    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputConnected { .. })
    })
    .await;
    let puller = Puller::rtmp(&nginx.url("phoenix"));
    until(
        Duration::from_secs(10),
        "frames after the reconnection",
        || puller.frames() >= 10,
    )
    .await;
    let pulled = puller.stop();
    // Each connection's timeline starts at its first keyframe.
    assert!(
        pulled.frames[0].0 < 5.0,
        "first frame at {}",
        pulled.frames[0].0
    );
    let info = &session.outputs()[0];
    assert_eq!(info.state, OutputState::Connected);
    assert!(info.reconnects >= 3, "{info:?}");
    registry.end(&session.id, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_output_is_read_back_with_srtsrc() {
    let (config, _data) = config();
    let registry = registry(config);
    let session = registry.create(CreateSession::default()).await.unwrap();
    // The test listens, the session calls (OBS's Media Source would call a listening session).
    let port = facecast_testkit::free_port();
    let puller = Puller::start(
        &format!("srtsrc uri=srt://127.0.0.1:{port}?mode=listener ! tsdemux name=d"),
        "video_0_0041",
        "audio_0_0042",
    );
    let mut events = session.subscribe();
    registry
        .add_output(
            &session.id,
            &url(format!(
                "srt://127.0.0.1:{port}?mode=caller&streamid=secretstream"
            )),
        )
        .await
        .unwrap();
    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputConnected { .. })
    })
    .await;
    until(Duration::from_secs(10), "frames over SRT", || {
        puller.frames() >= 25
    })
    .await;
    let pulled = puller.stop();
    assert!(!pulled.audio.is_empty(), "no sound over SRT");
    let video = pulled.video_caps.expect("video caps").to_string();
    assert!(video.starts_with("video/x-h264"), "{video}");
    let info = &session.outputs()[0];
    assert_eq!(
        info.url.as_deref(),
        Some(format!("srt://127.0.0.1:{port}?mode=caller&streamid=***").as_str())
    );
    assert!(info.bytes_sent > 0, "{info:?}");
    registry.end(&session.id, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_key_never_shows_and_outputs_are_limited() {
    let (mut config, _data) = config();
    config.outputs.max_outputs_per_session = 1;
    let registry = registry(config);
    let session = registry.create(CreateSession::default()).await.unwrap();
    let mut events = session.subscribe();
    // Nothing listens on port 1 (and no test's server can take it): refused, it retries.
    let port = 1;
    let key = "sk-live-7f3a9c2e1d";
    let info = registry
        .add_output(
            &session.id,
            &url(format!("rtmp://user:hunter22@127.0.0.1:{port}/live/{key}")),
        )
        .await
        .unwrap();
    let mut seen = vec![serde_json::to_string(&info).unwrap()];
    for _ in 0..2 {
        let ev = next_event(&mut events, Duration::from_secs(10), |e| {
            matches!(
                e,
                SessionEvent::OutputError { .. } | SessionEvent::OutputReconnecting { .. }
            )
        })
        .await;
        seen.push(serde_json::to_string(&ev).unwrap());
    }
    seen.push(serde_json::to_string(&session.info()).unwrap());
    seen.push(registry.metrics.render());
    let all = seen.join("\n");
    println!("{all}");
    assert!(all.contains("output_error"), "{all}");
    for secret in [key, "hunter22"] {
        assert!(!all.contains(secret), "'{secret}' shown:\n{all}");
    }
    assert!(all.contains(&format!("rtmp://***@127.0.0.1:{port}/live/***")));
    // One output is the limit here.
    let second = registry
        .add_output(
            &session.id,
            &OutputRequest {
                url: None,
                record: true,
            },
        )
        .await;
    assert!(
        matches!(
            second,
            Err(SessionError::Plan(PlanError::TooManyOutputs(1)))
        ),
        "{:?}",
        second.map(|i| i.id)
    );
    registry.end(&session.id, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_whose_disk_is_full_stops_with_an_error_and_the_session_goes_on() {
    let (config, data) = config();
    let registry = registry(config.clone());
    let session = registry.create(CreateSession::default()).await.unwrap();
    let mut events = session.subscribe();
    // The recording's file (named by the second it starts) is /dev/full: every write fails
    // with ENOSPC, as on a full disk.
    let dir = data.path().join("full");
    std::fs::create_dir_all(&dir).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for secs in now - 1..now + 30 {
        std::os::unix::fs::symlink(
            "/dev/full",
            dir.join(format!("{}-o1-{secs}.mp4", session.id)),
        )
        .unwrap();
    }
    let (s, runtime) = (session.clone(), tokio::runtime::Handle::current());
    let metrics = registry.metrics.clone();
    let output = tokio::task::spawn_blocking(move || {
        super::output::start(
            &s,
            "o1".into(),
            super::output::Target::record(),
            dir,
            &config.outputs,
            metrics,
            &runtime,
        )
    })
    .await
    .unwrap()
    .unwrap();
    let stopped = next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::OutputStopped { .. })
    })
    .await;
    println!("{stopped:?}");
    assert!(
        matches!(&stopped, SessionEvent::OutputStopped { error: Some(e), .. } if e.contains("space")),
        "{stopped:?}"
    );
    assert_eq!(output.state(), OutputState::Failed);
    assert_eq!(output.info().reconnects, 0, "a recording does not retry");
    let produced = || {
        registry
            .metrics
            .frames_produced
            .with_label_values(&[&session.id])
            .get()
    };
    let before = produced();
    until(Duration::from_secs(5), "the session goes on", || {
        produced() > before + 10
    })
    .await;
    assert_eq!(
        count(&session, "x264enc"),
        0,
        "its encoders stopped with it"
    );
    registry.end(&session.id, "done");
}
