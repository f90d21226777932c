//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gst::prelude::*;

pub fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstfacecasttts::plugin_register_static().unwrap();
        gstfacecastavatar::plugin_register_static().unwrap();
        gstfacecastlipsync::plugin_register_static().unwrap();
    });
}

/// Runs `pipeline` to EOS (or fails the test with the bus error), then stops it.
pub fn run_to_eos(pipeline: &gst::Pipeline, timeout_s: u64) {
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(timeout_s),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("pipeline neither finished nor failed in time");
    pipeline.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("pipeline error: {} ({:?})", e.error(), e.debug());
    }
}

/// Every buffer the appsink `name` of `pipeline` receives, collected as they come.
pub fn collect_buffers(
    pipeline: &gst::Pipeline,
    name: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<gst::Buffer>>> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = out.clone();
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element named {name}"))
        .downcast::<gst_app::AppSink>()
        .expect("an appsink")
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let s = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    o.lock().unwrap().push(s.buffer_owned().unwrap());
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    out
}

/// Runs a pipeline on its test clock up to `until`: each time `waiters` live elements wait on
/// the clock, the clock jumps to the earliest wait and releases it (a `crank`), and the released
/// element is given its turn to wait again. The live elements then run as they would in real time on an infinitely fast machine: none falls
/// behind while another is busy. Fails if they stop waiting on the clock (an error, a deadlock).
pub fn run_clock_to(clock: &gst_check::TestClock, waiters: u32, until: gst::ClockTime) {
    loop {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while clock.peek_id_count() < waiters {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {waiters} elements waited on the clock at {} for 30 s",
                clock.peek_id_count(),
                clock.time()
            );
            std::thread::yield_now();
        }
        let next = clock
            .peek_next_pending_id()
            .map(|id| id.time())
            .expect("a pending clock wait");
        if next > until {
            if clock.time() < until {
                clock.set_time(until);
            }
            return;
        }
        if next > clock.time() {
            clock.set_time(next);
        }
        // Let the released element do its work and wait again before time moves on (one that
        // goes on to block elsewhere, as an aggregator with all its inputs does, is not waited
        // for beyond a moment).
        let before = clock.peek_id_count();
        clock.process_next_clock_id();
        let settle = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while clock.peek_id_count() < before && std::time::Instant::now() < settle {
            std::thread::yield_now();
        }
    }
}

/// The pauses inside speech, as the tests define them: stretches of at least 120 ms whose
/// 10 ms windows are all 40 dB or more below the loudest window, with sound on both sides.
/// Returned as (start, end) in seconds.
pub fn inner_pauses(samples: &[f32], rate: u32) -> Vec<(f64, f64)> {
    let window = (rate / 100) as usize;
    let levels: Vec<f32> = samples
        .chunks(window)
        .map(|w| (w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32).sqrt())
        .collect();
    let loudest = levels.iter().cloned().fold(0.0, f32::max);
    let quiet = loudest / 100.0;
    let mut out = Vec::new();
    let mut start = None;
    let mut heard = false;
    for (i, &l) in levels.iter().enumerate() {
        if l < quiet {
            start.get_or_insert(i);
        } else {
            if let Some(s) = start.take() {
                if heard && i - s >= 12 {
                    out.push((s as f64 * 0.01, i as f64 * 0.01));
                }
            }
            heard = true;
        }
    }
    out
}

/// Frames (at `fps`) whose middle lies in a pause from 80 ms after its sound stops to 80 ms
/// before the next sound: there the mouth must be closed.
pub fn frames_in_pauses(pauses: &[(f64, f64)], fps: f64, frames: usize) -> Vec<usize> {
    (0..frames)
        .filter(|&n| {
            let mid = (n as f64 + 0.5) / fps;
            pauses
                .iter()
                .any(|&(s, e)| mid >= s + 0.080 && mid <= e - 0.080)
        })
        .collect()
}

/// Stops a child process we started, by PID (SIGTERM, then SIGKILL).
pub struct Reaped(pub std::process::Child);

impl Reaped {
    /// Kills it at once (SIGKILL), as a crash would.
    pub fn crash(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        use std::time::Duration;
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let _ = std::process::Command::new("kill")
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

/// What the server wrote to stderr so far (its log), shown again on the test's stderr.
pub type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// `facecast serve` on a free loopback port with `env` added (`FACECAST_LOG=info` unless
/// given): the process, its base URL and its log.
pub fn serve(env: &[(&str, &str)]) -> (Reaped, String, Log) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_facecast"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FACECAST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("facecast serve starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Log::default();
    let keep = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let mut log = keep.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("facecast serving on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
        .to_owned();
    (Reaped(child), url, log)
}
