use super::*;
use crate::config::Config;
use crate::metrics::Metrics;
use facecast_avatars::store::AvatarStore;
use std::sync::atomic::Ordering;

pub(super) fn registry(config: Config) -> Arc<Registry> {
    gst::init().unwrap();
    crate::plugins::register().ok();
    Registry::new(Arc::new(config), Arc::new(Metrics::new()))
}

async fn next_event(
    rx: &mut broadcast::Receiver<SessionEvent>,
    want: fn(&SessionEvent) -> bool,
) -> SessionEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ev = rx.recv().await.expect("event stream open");
            if want(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event within 5 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_error_ends_only_its_session() {
    let registry = registry(Config::default());
    let broken = registry.create(CreateSession::default()).await.unwrap();
    let healthy = registry.create(CreateSession::default()).await.unwrap();
    let mut events = broken.subscribe();
    // What an element posts when it fails while streaming.
    let lipsync = broken.pipeline.lipsync.clone();
    lipsync
        .post_message(
            gst::message::Error::builder(gst::StreamError::Failed, "simulated failure")
                .src(&lipsync)
                .build(),
        )
        .unwrap();
    let ev = next_event(&mut events, |e| matches!(e, SessionEvent::Error { .. })).await;
    assert!(matches!(ev, SessionEvent::Error { message } if message.contains("simulated failure")));
    next_event(&mut events, |e| {
        matches!(e, SessionEvent::SessionEnded { .. })
    })
    .await;
    assert!(registry.get(&broken.id).is_err());
    assert!(registry.get(&healthy.id).is_ok());
    // The other session keeps producing frames.
    let produced = || {
        registry
            .metrics
            .frames_produced
            .with_label_values(&[&healthy.id])
            .get()
    };
    let before = produced();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = produced();
    assert!(after >= before + 15, "{before} -> {after} frames in 1 s");
}

/// A configuration with the test model, and the astronaut registered as `session-astro` (once
/// per process).
fn photo_config() -> Config {
    use facecast_avatars::registration::{register, RegisterOptions};
    facecast_testkit::wav2lip_model();
    let (portrait, models) = (facecast_testkit::portrait(), facecast_testkit::models_dir());
    static DATA: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    let store =
        AvatarStore::init_global(DATA.get_or_init(|| tempfile::tempdir().unwrap()).path(), 4);
    REGISTERED.call_once(|| {
        let mut options = RegisterOptions::new(
            "session-astro",
            &portrait,
            &models.join("yunet_n_dynamic.onnx"),
        );
        options.replace = true;
        register(store, &options, &mut |_, _| {}).unwrap();
    });
    let mut config = Config {
        models_dir: models,
        ..Config::default()
    };
    config.lipsync.model = Some("wav2lip_w025_seed7.onnx".into());
    config.lipsync.threads = 1;
    // Frames wait for the model: on a busy test machine a frame budget would repeat frames and
    // make admission refuse sessions, which is not what these tests are about (the budget has
    // its own tests in the lipsync crate, on a test clock).
    config.lipsync.frame_budget_ms = 0;
    config
}

/// A session of the astronaut registered by [`photo_config`].
fn photo() -> CreateSession {
    CreateSession {
        avatar: Some("session-astro".into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photo_avatar_sessions_past_the_devices_capacity_get_busy_and_the_builtin_face_does_not_count(
) {
    let mut config = photo_config();
    // One 25 fps session fits in 90 % of 30 frames/s; a second does not.
    config.lipsync.capacity_fps = Some(30.0);
    config.lipsync.batch_size = 2;
    // Frames wait for the model (none repeated, `photo_config`): only the capacity refuses,
    // however loaded this machine is (lateness is admission's own unit test).
    let registry = registry(config);
    let first = registry.create(photo()).await.unwrap();
    let refused = registry.create(photo()).await.err().unwrap();
    let api = crate::error::ApiError::from(refused);
    assert_eq!(api.status, warp::http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.code, "cpu_busy");
    assert_eq!(api.retry_after, Some(10));
    assert!(api.message.contains("25 of 27 frames/s"), "{}", api.message);
    // The built-in face needs no model: it is not refused.
    let builtin = registry.create(CreateSession::default()).await.unwrap();
    // The first session's share comes back when it ends.
    registry.end(&first.id, "test over");
    drop(first);
    let again = registry.create(photo()).await.unwrap();
    registry.end(&again.id, "test over");
    registry.end(&builtin.id, "test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_avatar_session_talks_with_wav2lip() {
    let mut config = photo_config();
    config.lipsync.batch_size = 3;
    let registry = registry(config);
    let session = registry.create(photo()).await.unwrap();
    assert_eq!(session.info().engine, "wav2lip");
    let mut events = session.subscribe();
    let inferred = || -> u64 {
        gstfacecastlipsync::wav2lip_batcher::loaded()
            .iter()
            .filter(|m| m.key().max_batch == 3)
            .map(|m| m.stats.frames.load(Ordering::Relaxed))
            .sum()
    };
    let produced = || {
        registry
            .metrics
            .frames_produced
            .with_label_values(&[&session.id])
            .get()
    };
    // Silence first: frames flow, and the idle photo is inferred only once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (idle_frames, idle_inferred) = (produced(), inferred());
    assert!(idle_frames >= 20, "{idle_frames} frames in 1.5 s");
    assert!(
        idle_inferred <= 3,
        "{idle_inferred} inferences while silent"
    );
    session.say("Hello there, how are you today?", None);
    next_event(&mut events, |e| {
        matches!(e, SessionEvent::SpeechStarted { .. })
    })
    .await;
    next_event(&mut events, |e| {
        matches!(e, SessionEvent::SpeechEnded { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Speech runs through the model frame by frame, and the stream keeps its pace.
    let spoken = inferred() - idle_inferred;
    assert!(
        spoken >= 25,
        "only {spoken} frames inferred for about 2 s of speech"
    );
    let caps = session
        .pipeline
        .lipsync
        .static_pad("src")
        .unwrap()
        .current_caps()
        .unwrap();
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    assert_eq!((info.width(), info.height()), (512, 512));
    registry.end(&session.id, "test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_reaped_and_silent_viewers_dropped() {
    let registry = registry(Config {
        idle_timeout_secs: 0,
        viewer_connect_timeout_secs: 1,
        ..Config::default()
    });
    let watched = registry.create(CreateSession::default()).await.unwrap();
    let idle = registry.create(CreateSession::default()).await.unwrap();
    let offer = crate::signalling::tests::webrtcbin_offer().await;
    let (viewer, _answer) = registry.add_viewer(&watched.id, &offer).await.unwrap();
    registry.reap_idle();
    assert!(
        registry.get(&idle.id).is_err(),
        "an unwatched session survived the reaper"
    );
    assert!(registry.get(&watched.id).is_ok());
    // This viewer (a canned offer) never connects: it is dropped after the deadline.
    let mut events = watched.subscribe();
    let ev = next_event(&mut events, |e| {
        matches!(e, SessionEvent::ViewerLeft { .. })
    })
    .await;
    assert_eq!(ev, SessionEvent::ViewerLeft { viewer });
    assert_eq!(watched.viewer_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_is_exact_under_concurrent_creates() {
    let registry = registry(Config {
        max_sessions: 8,
        ..Config::default()
    });
    let first = registry.create(CreateSession::default()).await.unwrap();
    let creates: Vec<_> = (0..64)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.create(CreateSession::default()).await })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for c in creates {
        match c.await.unwrap() {
            Ok(_) => created += 1,
            Err(SessionError::Full(8)) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((created, refused), (7, 57));
    assert_eq!(registry.list().len(), 8);
    // An ended session frees its slot, exactly one.
    assert!(registry.end(&first.id, "test over"));
    registry.create(CreateSession::default()).await.unwrap();
    assert!(matches!(
        registry.create(CreateSession::default()).await,
        Err(SessionError::Full(8))
    ));
    registry.end_all("test over");
    assert_eq!(registry.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lip_sync_model_repeats_frames_reports_once_and_the_session_goes_on() {
    let mut config = photo_config();
    // Every batch fails inside ONNX Runtime once real audio (even silence) comes in.
    facecast_testkit::faulty_wav2lip_model();
    config.lipsync.model = Some("wav2lip_faulty.onnx".into());
    config.lipsync.batch_size = 2;
    let registry = registry(config);
    let session = registry.create(photo()).await.unwrap();
    let metric = |m: &prometheus::IntCounterVec| m.with_label_values(&[&session.id]).get();
    let metrics = registry.metrics.clone();
    // The failure is reported as it happens (an `error` event, counted in this metric, which
    // the same bus handler increments): wait for it.
    tokio::time::timeout(Duration::from_secs(10), async {
        while metric(&metrics.lipsync_errors) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a lip-sync error reported within 10 s");
    // The stream goes on at its pace, every frame the previous one, and no further report
    // for the same run of failures.
    let mut events = session.subscribe();
    let before = metric(&metrics.frames_produced);
    let repeated_before = metric(&metrics.frames_repeated);
    session.say("Still here.", None);
    next_event(&mut events, |e| {
        matches!(e, SessionEvent::SpeechEnded { .. })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let produced = metric(&metrics.frames_produced) - before;
    let repeated = metric(&metrics.frames_repeated) - repeated_before;
    assert!(produced >= 25, "{produced} frames");
    assert!(
        repeated + 5 >= produced,
        "{repeated} of {produced} repeated"
    );
    assert_eq!(metric(&metrics.lipsync_errors), 1);
    assert!(registry.get(&session.id).is_ok(), "the session ended");
    registry.end(&session.id, "test over");
}
