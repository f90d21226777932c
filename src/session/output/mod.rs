//! Outputs: the session restreamed to RTMP/RTMPS and SRT servers, or recorded to a file.
//!
//! - [`target`]: the URL checked, and redacted (an output URL is a secret).
//! - [`feed`]: the output's taps on the session's H.264 and AAC.
//! - [`connection`]: one attempt: its own pipeline from the feed to the server or file.
//!
//! An [`Output`] is supervised by a task of its own: it opens a connection, watches its bus,
//! and when the server refuses or drops it, tells the session's clients and tries again after
//! a wait that doubles from `outputs.reconnect_initial_ms` to `reconnect_max_ms`. A recording
//! that fails (a full disk) stops with an error instead: its file stays playable. Nothing an
//! output does can end its session or hold up its viewers and other outputs.

pub mod connection;
pub mod feed;
pub mod target;

use super::bus::BusStream;
use super::{Session, SessionEvent};
use crate::config::OutputsConfig;
use crate::metrics::Metrics;
use connection::Connection;
use feed::Feed;
use futures_util::StreamExt;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
pub use target::{OutputKind, Target, TargetError};
use tokio::sync::watch;

/// Where an output is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputState {
    /// Started; nothing has reached the server yet (an SRT listener waits for a caller).
    Connecting,
    /// Media is flowing to the server or file.
    Connected,
    /// The server refused or dropped the stream: waiting to try again.
    Reconnecting,
    /// Stopped on request, or with its session.
    Stopped,
    /// Stopped by an error it cannot retry (a recording's disk).
    Failed,
}

/// An output as the API shows it: the URL only redacted.
#[derive(Debug, Clone, Serialize)]
pub struct OutputInfo {
    pub id: String,
    pub kind: OutputKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A recording's file name (`GET /api/v1/recordings/{name}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    pub state: OutputState,
    /// The last error, until the output connects again.
    pub error: Option<String>,
    pub reconnects: u64,
    pub bytes_sent: u64,
}

struct Status {
    state: OutputState,
    error: Option<String>,
}

pub struct Output {
    pub id: String,
    pub target: Target,
    /// A recording's file.
    file: Option<PathBuf>,
    status: Mutex<Status>,
    bytes_sent: AtomicU64,
    reconnects: AtomicU64,
    feed: Mutex<Option<Feed>>,
    connection: Mutex<Option<Connection>>,
    stop: watch::Sender<bool>,
}

impl Output {
    pub fn info(&self) -> OutputInfo {
        let status = self.status.lock().unwrap();
        OutputInfo {
            id: self.id.clone(),
            kind: self.target.kind,
            url: (self.target.kind != OutputKind::Record).then(|| self.target.redacted().into()),
            recording: self
                .file
                .as_ref()
                .and_then(|f| f.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
            state: status.state,
            error: status.error.clone(),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
        }
    }

    pub fn state(&self) -> OutputState {
        self.status.lock().unwrap().state
    }

    fn set_state(&self, state: OutputState, error: Option<String>) {
        let mut status = self.status.lock().unwrap();
        status.state = state;
        if error.is_some() || state == OutputState::Connected {
            status.error = error;
        }
    }

    /// Stops the output now and waits (up to two seconds) for its muxer to write what it
    /// holds; its task then reports it stopped. Blocking. When this returns the output has
    /// left the session's pipeline, whichever of this and the output's task took it out: the
    /// caller may stop that pipeline next.
    pub fn stop(&self, session: &Session) {
        let _ = self.stop.send(true);
        if let Some(feed) = self.feed.lock().unwrap().as_ref() {
            feed.disconnect();
        }
        if let Some(c) = self.connection.lock().unwrap().take() {
            c.finish(Duration::from_secs(2));
        }
        self.detach_feed(session);
    }

    /// Takes the feed out of the session. The lock is held until it is out, so a second
    /// caller waits for the first rather than finding nothing and going on while the feed's
    /// elements are still stopping.
    fn detach_feed(&self, session: &Session) {
        let mut feed = self.feed.lock().unwrap();
        if let Some(mut f) = feed.take() {
            f.detach(session.pipeline());
        }
    }
}

/// The metric labels of an output: never its URL.
fn labels<'a>(session: &'a str, output: &'a Output) -> [&'a str; 3] {
    [session, &output.id, output.target.kind.name()]
}

/// Starts output `id` of `session` towards `target` and supervises it until it is stopped.
/// Blocking (the session's encoders may start): call off the async runtime.
pub fn start(
    session: &Arc<Session>,
    id: String,
    target: Target,
    recordings: PathBuf,
    config: &OutputsConfig,
    metrics: Arc<Metrics>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Arc<Output>> {
    let file = (target.kind == OutputKind::Record).then(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        recordings.join(format!("{}-{id}-{secs}.mp4", session.id))
    });
    if let Some(dir) = file.as_ref().and_then(|f| f.parent()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let feed = Feed::attach(session.pipeline(), &format!("output-{id}"))?;
    let (stop, stopped) = watch::channel(false);
    let output = Arc::new(Output {
        id,
        target,
        file,
        status: Mutex::new(Status {
            state: OutputState::Connecting,
            error: None,
        }),
        bytes_sent: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        feed: Mutex::new(Some(feed)),
        connection: Mutex::new(None),
        stop,
    });
    let supervisor = Supervisor {
        output: output.clone(),
        session: Arc::downgrade(session),
        session_id: session.id.clone(),
        config: config.clone(),
        metrics,
        stopped,
    };
    runtime.spawn(supervisor.run());
    Ok(output)
}

struct Supervisor {
    output: Arc<Output>,
    session: Weak<Session>,
    session_id: String,
    config: OutputsConfig,
    metrics: Arc<Metrics>,
    stopped: watch::Receiver<bool>,
}

/// How one connection ended.
enum Ended {
    Stopped,
    Failed(String),
}

impl Supervisor {
    fn emit(&self, event: SessionEvent) {
        if let Some(s) = self.session.upgrade() {
            s.emit(event);
        }
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    async fn run(self) {
        let o = self.output.clone();
        let labels = labels(&self.session_id, &o);
        let mut wait = Duration::from_millis(self.config.reconnect_initial_ms);
        let max_wait = Duration::from_millis(self.config.reconnect_max_ms);
        let mut attempt = 0u64;
        let mut generation = 0u64;
        let failed = loop {
            if self.is_stopped() {
                break None;
            }
            generation += 1;
            let ended = match self.connect(generation).await {
                Ok(bus) => self.watch(bus, &mut attempt, &mut wait).await,
                Err(e) => Ended::Failed(o.target.scrub(&format!("{e:#}"))),
            };
            let message = match ended {
                Ended::Stopped => break None,
                Ended::Failed(message) => message,
            };
            self.metrics
                .output_connected
                .with_label_values(&labels)
                .set(0);
            // The failed connection goes; the feed stays for the next one.
            let feed_gone = match o.feed.lock().unwrap().as_ref() {
                Some(feed) => {
                    feed.disconnect();
                    false
                }
                None => true,
            };
            let failed = o.connection.lock().unwrap().take();
            if let Some(c) = failed {
                let _ = tokio::task::spawn_blocking(move || c.close()).await;
            }
            if self.is_stopped() || feed_gone {
                break None;
            }
            tracing::warn!(session = %self.session_id, output = %o.id, "output failed: {message}");
            self.emit(SessionEvent::OutputError {
                output: o.id.clone(),
                message: message.clone(),
            });
            if o.target.kind == OutputKind::Record {
                break Some(message);
            }
            attempt += 1;
            o.reconnects.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .output_reconnects
                .with_label_values(&labels)
                .inc();
            o.set_state(OutputState::Reconnecting, Some(message));
            self.emit(SessionEvent::OutputReconnecting {
                output: o.id.clone(),
                attempt,
                in_ms: wait.as_millis() as u64,
            });
            let mut stopped = self.stopped.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped.wait_for(|s| *s) => break None,
            }
            wait = (wait * 2).min(max_wait);
        };
        // Stopped by request (the stopper finished the connection) or failed for good.
        let last = o.connection.lock().unwrap().take();
        if let Some(c) = last {
            let _ = tokio::task::spawn_blocking(move || c.finish(Duration::from_secs(2))).await;
        }
        if let Some(session) = self.session.upgrade() {
            let o = o.clone();
            let _ = tokio::task::spawn_blocking(move || o.detach_feed(&session)).await;
        }
        match &failed {
            Some(message) => o.set_state(OutputState::Failed, Some(message.clone())),
            None => o.set_state(OutputState::Stopped, None),
        }
        self.metrics.remove_output(&labels);
        tracing::info!(session = %self.session_id, output = %o.id, "output stopped");
        self.emit(SessionEvent::OutputStopped {
            output: o.id.clone(),
            error: failed,
        });
    }

    /// Opens a connection and starts feeding it; returns its bus.
    async fn connect(&self, generation: u64) -> anyhow::Result<BusStream> {
        let o = self.output.clone();
        let name = format!("output-{}-{}-{generation}", self.session_id, o.id);
        let (connection, bus) = tokio::task::spawn_blocking(move || {
            Connection::open(&name, &o.target, o.file.as_deref())
        })
        .await??;
        let o = &self.output;
        if self.is_stopped() {
            let _ = tokio::task::spawn_blocking(move || connection.close()).await;
            anyhow::bail!("stopped");
        }
        if let Some(feed) = o.feed.lock().unwrap().as_ref() {
            feed.connect(connection.inlet.clone());
        }
        *o.connection.lock().unwrap() = Some(connection);
        Ok(bus)
    }

    /// Follows a connection until it fails or the output is stopped, keeping its state and
    /// byte count up to date.
    async fn watch(&self, mut bus: BusStream, attempt: &mut u64, wait: &mut Duration) -> Ended {
        let o = self.output.clone();
        let labels = labels(&self.session_id, &o);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        // The byte count of this connection starts from what earlier ones sent.
        let before = o.bytes_sent.load(Ordering::Relaxed);
        let mut stopped = self.stopped.clone();
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return Ended::Stopped,
                msg = bus.next() => match msg.as_ref().map(|m| m.view()) {
                    Some(gst::MessageView::Error(e)) => {
                        return Ended::Failed(o.target.scrub(&crate::error::describe_bus_error(e)));
                    }
                    Some(gst::MessageView::Eos(_)) | None => {
                        return Ended::Failed("the output's stream ended".into());
                    }
                    _ => {}
                },
                _ = tick.tick() => {
                    let sent = o
                        .connection
                        .lock()
                        .unwrap()
                        .as_ref()
                        .map(|c| c.bytes_sent())
                        .unwrap_or(0);
                    let total = before + sent;
                    let counted = o.bytes_sent.swap(total, Ordering::Relaxed);
                    self.metrics
                        .output_bytes
                        .with_label_values(&labels)
                        .inc_by(total.saturating_sub(counted));
                    if sent > 0 && o.state() != OutputState::Connected {
                        o.set_state(OutputState::Connected, None);
                        self.metrics.output_connected.with_label_values(&labels).set(1);
                        *attempt = 0;
                        *wait = Duration::from_millis(self.config.reconnect_initial_ms);
                        tracing::info!(session = %self.session_id, output = %o.id, "output connected: {}", o.target.redacted());
                        self.emit(SessionEvent::OutputConnected { output: o.id.clone() });
                    }
                }
            }
        }
    }
}
