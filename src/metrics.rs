//! Prometheus metrics of the server, served as text at `GET /metrics`.

use facecast_avatars::store::AvatarStore;
use gstfacecastlipsync::wav2lip_batcher;
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use std::sync::atomic::Ordering;

pub struct Metrics {
    registry: Registry,
    pub sessions_active: IntGauge,
    pub viewers: IntGauge,
    /// Frames out of `lipsync`, per session.
    pub frames_produced: IntCounterVec,
    /// Frames discarded before the encoder because it fell behind, per session.
    pub frames_dropped: IntCounterVec,
    /// Frames `lipsync` showed again because their own was late (past the frame budget) or
    /// failed, per session.
    pub frames_repeated: IntCounterVec,
    /// Lip-sync engine failures (runs of failed frames), per session.
    pub lipsync_errors: IntCounterVec,
    /// Frames a second reserved by photo-avatar sessions, per lip-sync device.
    pub lipsync_reserved_fps: prometheus::GaugeVec,
    /// From a `say` request to the first lip-synced frame of it leaving the encoder.
    pub say_to_first_frame: Histogram,
    /// WHIP publishers connected now.
    pub publishers: IntGauge,
    /// Barge-ins, and the time from the person's speech onset to the avatar's voice being cut.
    pub barge_ins: IntCounter,
    pub barge_in_seconds: Histogram,
    /// From the onset of a person's speech to the VAD confirming the turn.
    pub vad_seconds: Histogram,
    /// From the end of a person's speech to its final transcript (VAD end-of-turn silence and
    /// recognition).
    pub asr_seconds: Histogram,
    /// Per output (labels session, output, kind; never its URL): connected now (1) or not,
    /// bytes sent, reconnections.
    pub output_connected: IntGaugeVec,
    pub output_bytes: IntCounterVec,
    pub output_reconnects: IntCounterVec,
    /// Per GPU (labels gpu, name), read through NVML when scraped; none without NVML.
    gpu: GpuGauges,
    // Mirrors of counters kept by the avatar store and the shared lip-sync models, brought up
    // to date when scraped.
    avatar_cache_hits: IntCounter,
    avatar_cache_misses: IntCounter,
    wav2lip_frames: IntCounter,
    wav2lip_frames_expired: IntCounter,
    wav2lip_batches: IntCounter,
    wav2lip_inference_seconds: Counter,
    wav2lip_frames_composed: IntCounter,
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
        let frames_repeated = IntCounterVec::new(
            Opts::new(
                "frames_repeated_total",
                "Frames lipsync showed again because their own was late or failed",
            ),
            &["session"],
        )
        .unwrap();
        let lipsync_errors = IntCounterVec::new(
            Opts::new(
                "lipsync_errors_total",
                "Lip-sync engine failures (each run of failed frames once); the session goes on",
            ),
            &["session"],
        )
        .unwrap();
        let lipsync_reserved_fps = prometheus::GaugeVec::new(
            Opts::new(
                "lipsync_reserved_fps",
                "Frames a second reserved by photo-avatar sessions on the lip-sync device",
            ),
            &["device"],
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
        let counter = |name: &str, help: &str| IntCounter::new(name, help).unwrap();
        let publishers = IntGauge::new("publishers", "WHIP publishers connected now").unwrap();
        let barge_ins = counter("barge_ins_total", "Times a person interrupted the avatar");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).unwrap()
        };
        let barge_in_seconds = histogram(
            "barge_in_seconds",
            "From a person's speech onset to the avatar's voice being cut (held or interrupted)",
            vec![0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0],
        );
        let vad_seconds = histogram(
            "vad_seconds",
            "From a person's speech onset to the voice activity detector confirming the turn (min_interrupt_ms included)",
            vec![0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0],
        );
        let asr_seconds = histogram(
            "asr_seconds",
            "From the end of a person's speech to its final transcript",
            vec![0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0],
        );
        let gpu = GpuGauges::new();
        let output_labels = ["session", "output", "kind"];
        let output_connected = IntGaugeVec::new(
            Opts::new(
                "output_connected",
                "Whether an output's media reaches its server or file (1) or not (0)",
            ),
            &output_labels,
        )
        .unwrap();
        let output_bytes = IntCounterVec::new(
            Opts::new(
                "output_bytes_sent_total",
                "Bytes an output sent to its server or wrote to its file",
            ),
            &output_labels,
        )
        .unwrap();
        let output_reconnects = IntCounterVec::new(
            Opts::new(
                "output_reconnects_total",
                "Times an output's server refused or dropped it and it tried again",
            ),
            &output_labels,
        )
        .unwrap();
        let avatar_cache_hits = counter(
            "avatar_cache_hits_total",
            "Avatar opens served from the in-memory cache",
        );
        let avatar_cache_misses = counter(
            "avatar_cache_misses_total",
            "Avatar opens that read the cache file from disk",
        );
        let wav2lip_frames = counter(
            "wav2lip_frames_total",
            "Frames run through the lip-sync model",
        );
        let wav2lip_frames_expired = counter(
            "wav2lip_frames_expired_total",
            "Frames left out of a lip-sync batch: they would have been ready after their deadline",
        );
        let wav2lip_batches = counter("wav2lip_batches_total", "Lip-sync model runs (batches)");
        let wav2lip_frames_composed = counter(
            "wav2lip_frames_composed_on_gpu_total",
            "Output frames made on the GPU (the avatar frame there, the model's output blended in, one download)",
        );
        let wav2lip_inference_seconds = Counter::new(
            "wav2lip_inference_seconds_total",
            "Time spent running the lip-sync model",
        )
        .unwrap();
        for c in [
            Box::new(avatar_cache_hits.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(avatar_cache_misses.clone()),
            Box::new(wav2lip_frames.clone()),
            Box::new(wav2lip_frames_expired.clone()),
            Box::new(wav2lip_batches.clone()),
            Box::new(wav2lip_inference_seconds.clone()),
            Box::new(wav2lip_frames_composed.clone()),
            Box::new(sessions_active.clone()),
            Box::new(viewers.clone()),
            Box::new(frames_produced.clone()),
            Box::new(frames_dropped.clone()),
            Box::new(frames_repeated.clone()),
            Box::new(lipsync_errors.clone()),
            Box::new(lipsync_reserved_fps.clone()),
            Box::new(say_to_first_frame.clone()),
            Box::new(publishers.clone()),
            Box::new(barge_ins.clone()),
            Box::new(barge_in_seconds.clone()),
            Box::new(vad_seconds.clone()),
            Box::new(asr_seconds.clone()),
            Box::new(output_connected.clone()),
            Box::new(output_bytes.clone()),
            Box::new(output_reconnects.clone()),
        ]
        .into_iter()
        .chain(gpu.collectors())
        {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            sessions_active,
            viewers,
            frames_produced,
            frames_dropped,
            frames_repeated,
            lipsync_errors,
            lipsync_reserved_fps,
            say_to_first_frame,
            publishers,
            barge_ins,
            barge_in_seconds,
            vad_seconds,
            asr_seconds,
            output_connected,
            output_bytes,
            output_reconnects,
            gpu,
            avatar_cache_hits,
            avatar_cache_misses,
            wav2lip_frames,
            wav2lip_frames_expired,
            wav2lip_batches,
            wav2lip_inference_seconds,
            wav2lip_frames_composed,
        }
    }

    /// Brings the mirrored counters up to date.
    fn refresh(&self) {
        let catch_up = |c: &IntCounter, total: u64| c.inc_by(total.saturating_sub(c.get()));
        let store = AvatarStore::global();
        catch_up(&self.avatar_cache_hits, store.hits());
        catch_up(&self.avatar_cache_misses, store.misses());
        let (mut frames, mut expired, mut batches, mut us, mut composed) = (0, 0, 0, 0, 0);
        for model in wav2lip_batcher::loaded() {
            frames += model.stats.frames.load(Ordering::Relaxed);
            expired += model.stats.expired.load(Ordering::Relaxed);
            batches += model.stats.batches.load(Ordering::Relaxed);
            us += model.stats.inference_us.load(Ordering::Relaxed);
            composed += model.stats.composed.load(Ordering::Relaxed);
        }
        catch_up(&self.wav2lip_frames_composed, composed);
        catch_up(&self.wav2lip_frames, frames);
        catch_up(&self.wav2lip_frames_expired, expired);
        catch_up(&self.wav2lip_batches, batches);
        let secs = us as f64 / 1e6;
        self.wav2lip_inference_seconds
            .inc_by((secs - self.wav2lip_inference_seconds.get()).max(0.0));
        self.gpu.refresh(&facecast_gpu::nvml::read_all());
    }

    /// Forgets a finished session's series.
    pub fn remove_session(&self, id: &str) {
        let _ = self.frames_produced.remove_label_values(&[id]);
        let _ = self.frames_dropped.remove_label_values(&[id]);
        let _ = self.frames_repeated.remove_label_values(&[id]);
        let _ = self.lipsync_errors.remove_label_values(&[id]);
    }

    /// Forgets a stopped output's series.
    pub fn remove_output(&self, labels: &[&str; 3]) {
        let _ = self.output_connected.remove_label_values(labels);
        let _ = self.output_bytes.remove_label_values(labels);
        let _ = self.output_reconnects.remove_label_values(labels);
    }

    pub fn render(&self) -> String {
        self.refresh();
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

/// The GPUs' NVML readings as gauges.
struct GpuGauges {
    utilization: IntGaugeVec,
    memory_used: IntGaugeVec,
    memory_total: IntGaugeVec,
    temperature: IntGaugeVec,
    power: prometheus::GaugeVec,
    encoder: IntGaugeVec,
    decoder: IntGaugeVec,
}

impl GpuGauges {
    fn new() -> Self {
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["gpu", "name"]).unwrap()
        };
        Self {
            utilization: gauge(
                "gpu_utilization_percent",
                "Percent of time a kernel ran on the GPU (NVML)",
            ),
            memory_used: gauge("gpu_memory_used_bytes", "GPU memory in use (NVML)"),
            memory_total: gauge("gpu_memory_total_bytes", "GPU memory in all (NVML)"),
            temperature: gauge("gpu_temperature_celsius", "GPU temperature (NVML)"),
            power: prometheus::GaugeVec::new(
                Opts::new("gpu_power_watts", "GPU power draw (NVML)"),
                &["gpu", "name"],
            )
            .unwrap(),
            encoder: gauge(
                "gpu_encoder_utilization_percent",
                "NVENC utilisation (NVML)",
            ),
            decoder: gauge(
                "gpu_decoder_utilization_percent",
                "NVDEC utilisation (NVML)",
            ),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.utilization.clone()),
            Box::new(self.memory_used.clone()),
            Box::new(self.memory_total.clone()),
            Box::new(self.temperature.clone()),
            Box::new(self.power.clone()),
            Box::new(self.encoder.clone()),
            Box::new(self.decoder.clone()),
        ]
    }

    fn refresh(&self, readings: &[facecast_gpu::nvml::GpuReading]) {
        for r in readings {
            let index = r.index.to_string();
            let labels = [index.as_str(), r.name.as_str()];
            let set = |g: &IntGaugeVec, v: Option<i64>| match v {
                Some(v) => g.with_label_values(&labels).set(v),
                None => {
                    let _ = g.remove_label_values(&labels);
                }
            };
            set(&self.utilization, r.utilization_percent.map(i64::from));
            set(&self.memory_used, r.memory_used_bytes.map(|b| b as i64));
            set(&self.memory_total, r.memory_total_bytes.map(|b| b as i64));
            set(&self.temperature, r.temperature_celsius.map(i64::from));
            set(&self.encoder, r.encoder_percent.map(i64::from));
            set(&self.decoder, r.decoder_percent.map(i64::from));
            if let Some(w) = r.power_watts {
                self.power.with_label_values(&labels).set(w);
            }
        }
    }
}
