//! `facecast serve` end to end in headless Chromium: two sessions play at once over WHEP, speech
//! raises the received audio energy and sends its events, DELETE ends a stream.
//!
//! The page (`tests/browser/e2e.html`) is served by this test from its own origin, so the
//! server's CORS answers are exercised too, and reports a JSON summary back here.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use warp::Filter;

/// Stops a child process we started, by PID (SIGTERM, then SIGKILL).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(codec: &str) -> (Reaped, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_facecast"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FACECAST_VIDEO_CODEC", codec)
        .env("FACECAST_LOG", "info")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("facecast serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("facecast serving on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
        .to_owned();
    (Reaped(child), url)
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
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Chromium is not installed: run scripts/install-deps.sh (Debian package chromium)");
    let (_server, server_url) = start_server(codec);

    // The page's own origin: serves the page and receives its report.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let page = warp::path!("e2e.html").and(warp::fs::file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/e2e.html"
    )));
    let report = warp::path!("report")
        .and(warp::post())
        .and(warp::body::bytes())
        .map(move |b: bytes::Bytes| {
            let _ = tx.send(String::from_utf8_lossy(&b).into_owned());
            "ok"
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(page.or(report)).incoming(listener).run());

    let profile = tempfile::tempdir().unwrap();
    let _browser = Reaped(
        Command::new(chromium)
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
                &format!("--user-data-dir={}", profile.path().display()),
                &format!("http://{page_addr}/e2e.html?server={server_url}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts"),
    );

    let text = tokio::time::timeout(Duration::from_secs(120), rx.recv())
        .await
        .expect("the page reported within 120 s")
        .unwrap();
    eprintln!("browser report ({codec}): {text}");
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
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
