//! `facecast serve` end to end in headless Chromium: two sessions play at once over WHEP, speech
//! raises the received audio energy and sends its events, DELETE ends a stream.
//!
//! The page (`tests/browser/e2e.html`) is served by this test from its own origin, so the
//! server's CORS answers are exercised too, and reports a JSON summary back here.

mod common;

use gst::prelude::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use warp::Filter;

use common::{serve, Reaped};

fn start_server(codec: &str) -> (Reaped, String) {
    start_server_with(codec, &[])
}

fn start_server_with(codec: &str, env: &[(&str, &str)]) -> (Reaped, String) {
    let mut env = env.to_vec();
    env.push(("FACECAST_VIDEO_CODEC", codec));
    let (server, url, _log) = serve(&env);
    (server, url)
}

/// Headless Chromium (Debian's package) opening `url`, with the flags WebRTC on loopback
/// needs (../shared/FACTS.md) and `extra` ones; stopped when dropped.
fn chromium(url: &str, extra: &[&str]) -> (Reaped, tempfile::TempDir) {
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Chromium is not installed: run scripts/install-deps.sh (Debian package chromium)");
    let profile = tempfile::tempdir().unwrap();
    let user_data = format!("--user-data-dir={}", profile.path().display());
    let browser = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-loopback-in-peer-connection",
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            &user_data,
        ])
        .args(extra)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    (Reaped(browser), profile)
}

/// Serves `tests/browser/{page}` from an origin of the test's own, and passes on what the
/// page POSTs to `/report`. Returns the page's address.
async fn serve_test_page(
    page: &'static str,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(page);
    let page = warp::path(page)
        .and(warp::path::end())
        .and(warp::fs::file(file));
    let report = warp::path!("report")
        .and(warp::post())
        .and(warp::body::bytes())
        .map(move |b: bytes::Bytes| {
            let _ = tx.send(String::from_utf8_lossy(&b).into_owned());
            "ok"
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(page.or(report)).incoming(listener).run());
    (addr, rx)
}

/// Opens `tests/browser/{page}?{query}` (served by [`serve_test_page`]) in Chromium and
/// returns its JSON report, with the browser still running.
async fn test_page_report(
    page: &'static str,
    query: &str,
    within: Duration,
) -> ((Reaped, tempfile::TempDir), serde_json::Value) {
    let (page_addr, mut rx) = serve_test_page(page).await;
    let browser = chromium(&format!("http://{page_addr}/{page}?{query}"), &[]);
    let text = tokio::time::timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{page} reported nothing within {within:?}"))
        .unwrap();
    eprintln!("{page} report: {text}");
    (browser, serde_json::from_str(&text).unwrap())
}

/// The body of `GET {url}`.
async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// One browser run at a time: two at once would share two cores and miss the 10 s bound.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_sessions_play_speak_and_end_vp8() {
    scenario("vp8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_sessions_play_speak_and_end_h264() {
    scenario("h264").await;
}

async fn scenario(codec: &str) {
    let _one_at_a_time = BROWSER.lock().await;
    let (_server, server_url) = start_server(codec);
    // The page's own origin: serves the page and receives its report.
    let (_browser, r) = test_page_report(
        "e2e.html",
        &format!("server={server_url}"),
        Duration::from_secs(120),
    )
    .await;
    assert!(r.get("error").is_none(), "page error: {}", r["error"]);
    assert!(
        r["frames_a"].as_u64().unwrap() >= 100,
        "session A decoded {} frames in 10 s",
        r["frames_a"]
    );
    assert!(
        r["frames_b"].as_u64().unwrap() >= 100,
        "session B decoded {} frames in 10 s",
        r["frames_b"]
    );
    assert!(r["seconds_to_100"].as_f64().unwrap() <= 10.0);
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(512), Some(512))
    );
    // 20 ms Opus packets flow from the start (silence while idle).
    assert!(
        r["audio_packets_a"].as_u64().unwrap() > 50,
        "no audio received: {}",
        r["audio_packets_a"]
    );
    assert_eq!(r["say_status"], 202);
    let events: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        events.contains(&"speech_started") && events.contains(&"speech_ended"),
        "{events:?}"
    );
    let (silence, speech) = (
        r["silence_energy_per_s"].as_f64().unwrap(),
        r["speech_energy_per_s"].as_f64().unwrap(),
    );
    assert!(
        speech > 10.0 * silence.max(1e-9) && speech > 1e-4,
        "audio energy: silence {silence}, speech {speech}"
    );
    assert_eq!(r["delete_status"], 204);
    assert_eq!(
        r["b_frames_after_delete"], 0,
        "the deleted session kept streaming"
    );
    assert_eq!(
        r["a_frames_still_growing"], true,
        "the other session stopped too"
    );
    assert_eq!(r["whep_delete_status"], 204);
    assert!(
        r["vanished_viewer_dropped_after_s"].is_number(),
        "a viewer that closed without DELETE was not dropped within 60 s"
    );
}

/// A Piper voice saying `text`, 48 kHz mono.
fn spoken(text: &str) -> Vec<i16> {
    common::init();
    let voice = facecast_testkit::piper_voice();
    let pipeline = gst::parse::launch(&format!(
        "speechsynth engine=piper voice={} text=\"{text}\" ! audioconvert ! audioresample ! \
         audio/x-raw,format=S16LE,rate=48000,channels=1 ! appsink name=out sync=false",
        voice.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut samples = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let map = sample.buffer().unwrap().map_readable().unwrap();
        samples.extend(
            map.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
    samples
}

/// The real web client (`web/`, served by the server) in Chromium, its microphone fed from a
/// WAV of a spoken question: `?talk=1` publishes it over WHIP; the question is detected,
/// transcribed (scripted endpoint), asked (scripted model) and the answer spoken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_hears_a_spoken_question_and_answers_it() {
    let _one_at_a_time = BROWSER.lock().await;
    facecast_testkit::vad_model();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("question.wav");
    let mut samples = vec![0i16; 48_000];
    samples.extend(spoken("What can you do for me"));
    samples.extend(vec![0i16; 3 * 48_000]);
    facecast_testkit::write_wav(&wav, 48_000, &samples);

    let openai =
        facecast_testkit::ScriptedOpenai::start("what can you do for me", "I can talk with you.");
    let (_server, server_url) = start_server_with(
        "vp8",
        &[
            ("FACECAST_ASR_BASE_URL", &openai.base_url),
            ("FACECAST_LLM_BASE_URL", &openai.base_url),
        ],
    );
    let fake_capture = format!("--use-file-for-fake-audio-capture={}", wav.display());
    let _browser = chromium(
        &format!("{server_url}/?talk=1"),
        &["--use-fake-device-for-media-stream", &fake_capture],
    );
    // The microphone's question reaches the recogniser as a WAV, then the model as a question.
    let requests = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::time::Instant::now() < deadline {
            let Ok(r) = openai.requests.recv_timeout(Duration::from_secs(1)) else {
                continue;
            };
            let text = String::from_utf8_lossy(&r).into_owned();
            let chat = text.contains("/chat/completions");
            seen.push((text, r));
            if chat {
                break;
            }
        }
        seen
    })
    .await
    .unwrap();
    let transcription = requests
        .iter()
        .find(|(t, _)| t.starts_with("POST /v1/audio/transcriptions"))
        .expect("the recogniser got no audio from the browser's microphone");
    let at = transcription
        .1
        .windows(4)
        .position(|w| w == b"RIFF")
        .unwrap();
    let posted = hound::WavReader::new(std::io::Cursor::new(&transcription.1[at..])).unwrap();
    assert!(
        posted.len() as f64 / 16_000.0 > 0.8,
        "{} samples posted",
        posted.len()
    );
    let chat = requests
        .iter()
        .find(|(t, _)| t.contains("/chat/completions"))
        .expect("the transcript was not asked to the model");
    assert!(chat.0.contains("what can you do for me"), "{}", chat.0);
    // The answer is spoken: a say reached the encoder.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = get_text(&client, &format!("{server_url}/metrics")).await;
        let spoken = metrics
            .lines()
            .find_map(|l| l.strip_prefix("facecast_say_to_first_frame_seconds_count "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let published = metrics.contains("facecast_publishers 1");
        if spoken >= 1 {
            assert!(published, "no publisher counted: {metrics}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the answer was never spoken"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The embeddable player (`/embed/{id}?background=…`) in an `<iframe>` of another origin, as a
/// customer's page (or OBS's Browser Source) shows it: it plays the session with sound and
/// shows no controls, on the chroma-key background asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embed_page_plays_the_stream_with_no_controls() {
    let _one_at_a_time = BROWSER.lock().await;
    let (_server, server_url) = start_server("vp8");
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("{server_url}/api/v1/sessions"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    // Both addresses serve the player; the root without `embed=1` is still the client.
    for (path, wanted) in [
        (format!("/embed/{id}"), "/embed.js"),
        (format!("/?embed=1&session={id}"), "/embed.js"),
        ("/".to_owned(), "/app.js"),
    ] {
        let page = get_text(&client, &format!("{server_url}{path}")).await;
        assert!(
            page.contains(wanted),
            "{path} is not the page with {wanted}"
        );
    }

    let (_browser, r) = test_page_report(
        "embed.html",
        &format!("server={server_url}&session={id}"),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(r["state"], "playing", "{r}");
    assert!(r["framesDecoded"].as_u64().unwrap() >= 50, "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(512), Some(512))
    );
    assert_eq!(r["controls"], 0, "controls shown: {r}");
    assert_eq!(r["muted"], false, "{r}");
    assert_eq!(r["background"], "rgb(0, 255, 0)");
    let metrics = get_text(&client, &format!("{server_url}/metrics")).await;
    assert!(metrics.contains("facecast_viewers 1"), "{metrics}");
}
