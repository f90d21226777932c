//! Prometheus metrics of the server, served as text at `GET /metrics`.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    registry: Registry,
    pub sessions_active: IntGauge,
    pub viewers: IntGauge,
    /// Frames out of `lipsync`, per session.
    pub frames_produced: IntCounterVec,
    /// Frames discarded before the encoder because it fell behind, per session.
    pub frames_dropped: IntCounterVec,
    /// From a `say` request to the first lip-synced frame of it leaving the encoder.
    pub say_to_first_frame: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("facecast".into()), None).expect("valid prefix");
        let sessions_active = IntGauge::new("sessions_active", "Sessions running now").unwrap();
        let viewers = IntGauge::new("viewers", "WebRTC viewers connected now").unwrap();
        let frames_produced = IntCounterVec::new(
            Opts::new("frames_produced_total", "Video frames produced by lipsync"),
            &["session"],
        )
        .unwrap();
        let frames_dropped = IntCounterVec::new(
            Opts::new(
                "frames_dropped_total",
                "Video frames dropped before the encoder",
            ),
            &["session"],
        )
        .unwrap();
        let say_to_first_frame = Histogram::with_opts(
            HistogramOpts::new(
                "say_to_first_frame_seconds",
                "Time from a say request to its first lip-synced frame out of the encoder",
            )
            .buckets(vec![
                0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0,
            ]),
        )
        .unwrap();
        for c in [
            Box::new(sessions_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(viewers.clone()),
            Box::new(frames_produced.clone()),
            Box::new(frames_dropped.clone()),
            Box::new(say_to_first_frame.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            sessions_active,
            viewers,
            frames_produced,
            frames_dropped,
            say_to_first_frame,
        }
    }

    /// Forgets a finished session's series.
    pub fn remove_session(&self, id: &str) {
        let _ = self.frames_produced.remove_label_values(&[id]);
        let _ = self.frames_dropped.remove_label_values(&[id]);
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
