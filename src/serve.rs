//! `facecast serve`: the HTTP server, its session reaper and its clean shutdown.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::Registry;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (default: configs/facecast.toml if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8080 (overrides the configuration and FACECAST_LISTEN).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if !config.web_dir.join("index.html").is_file() {
        tracing::warn!(
            "no web client at {}: only the API is served",
            config.web_dir.display()
        );
    }
    prepare_lipsync(&config)?;
    prepare_speech(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(Arc::new(config)))
}

/// Opens the avatar store and, when a lip-sync model is configured, loads ONNX Runtime and the
/// model now ("cold loading"): the first session then starts without waiting for them, and a
/// model that cannot load stops the server at start instead of failing every session.
pub(crate) fn prepare_lipsync(config: &Config) -> anyhow::Result<()> {
    use facecast_avatars::store::AvatarStore;
    use gstfacecastlipsync::wav2lip_batcher::{self, ModelKey};
    let store = AvatarStore::init_global(&config.data_dir, config.avatar_cache_capacity);
    tracing::info!("avatars in {}", store.dir().display());
    let l = &config.lipsync;
    // The detector (registration) and the lip-sync model share one ONNX Runtime.
    let runtime = facecast_onnx::runtime(l.onnxruntime.as_deref());
    // stdout's first line is the address (scripts and tests read it): these notes go to stderr.
    let Some(model) = config.wav2lip_model() else {
        if let Err(e) = runtime {
            tracing::warn!("{e}: avatar registration and engine wav2lip are unavailable");
        }
        eprintln!("no lip-sync model configured: registered avatars cannot talk (see README, 'Photo and video avatars')");
        return Ok(());
    };
    runtime.context("lipsync.model is set, so ONNX Runtime is needed")?;
    // One model per device, each with its own batch worker: sessions are placed on them.
    for (i, device) in config.lipsync_devices().into_iter().enumerate() {
        let mut key = ModelKey::new(&model, device, l.batch_size, l.batch_wait_ms, l.threads);
        key.io = config.wav2lip_io();
        key.workers = l.workers as usize;
        key.gpu_frames_mb = l.gpu_frames_mb as usize;
        let shared = wav2lip_batcher::shared(&key).with_context(|| {
            format!(
                "cannot load the lip-sync model {} on {device}",
                model.display()
            )
        })?;
        if i == 0 {
            for note in &shared.inferred_names {
                eprintln!("lip-sync model {}: {note}", model.display());
            }
        }
        eprintln!(
            "lip-sync model {} loaded on {device} in {:.2} s, face inputs {}",
            model.display(),
            shared.load_time.as_secs_f64(),
            shared.face_inputs
        );
    }
    Ok(())
}

/// Loads the default Piper voice now when sessions speak with Piper by default, so a missing
/// voice stops the server at start rather than refusing every session.
fn prepare_speech(config: &Config) -> anyhow::Result<()> {
    if config.speech.engine != gstfacecasttts::SpeechEngine::Piper {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let path = gstfacecasttts::piper::locate(&config.speech.piper_voice, &config.models_dir);
    let voice =
        gstfacecasttts::piper::PiperVoice::get_at(&path).context("speech.engine is piper")?;
    eprintln!(
        "Piper voice {} loaded in {:.2} s",
        voice.path().display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let registry = Registry::new(config.clone(), Arc::new(Metrics::new()));

    registry.spawn_reaper(Duration::from_secs(5));
    let readiness = crate::health::Readiness::check(&config);
    if !readiness.missing_elements.is_empty() {
        tracing::warn!(
            "sessions cannot start: GStreamer elements missing: {} (run scripts/install-deps.sh)",
            readiness.missing_elements.join(", ")
        );
    }
    if let Some(e) = &readiness.gpu_error {
        tracing::warn!("the configured GPU is not usable: {e}");
    }
    if config.video.codec == crate::config::VideoCodec::H264 {
        // A start-up note, like the model's: on stderr, shown whatever the log level.
        eprintln!(
            "H.264 encoder: {}",
            crate::session::encoders::h264_encoder_at_start()
        );
    }

    let routes = crate::routes::routes(registry.clone());
    println!("facecast serving on http://{}", listener.local_addr()?);
    // On a signal, end the sessions first: that tells viewers and closes event sockets, which
    // graceful shutdown would otherwise wait for.
    let ending = registry.clone();
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move {
            shutdown_signal().await;
            let _ =
                tokio::task::spawn_blocking(move || ending.end_all("server shutting down")).await;
        })
        .run()
        .await;
    let ending = registry.clone();
    let _ = tokio::task::spawn_blocking(move || ending.end_all("server shutting down")).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
