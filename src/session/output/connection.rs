//! One attempt at an output: a small pipeline of its own, from two `appsrc`s (H.264 and AAC,
//! fed by [`super::feed`]) through a muxer to the server or file.
//!
//! ```text
//! rtmp    appsrc ! h264parse ─ flvmux streamable ! rtmp2sink       (FLV: H.264 + AAC)
//!         appsrc ! aacparse ──┘
//! srt     appsrc ! h264parse ─ mpegtsmux ! srtsink                 (MPEG-TS over SRT)
//! record  appsrc ! h264parse ─ mp4mux fragment-duration=1000 ! filesink   (fragmented MP4)
//! ```
//!
//! A fragmented MP4 is readable up to its last whole fragment whatever happens to the server
//! (a crash, SIGKILL, a full disk), so a recording is never lost, only its last second.

use super::target::{OutputKind, Target};
use crate::session::bus::BusStream;
use crate::session::pipeline::Encoded;
use anyhow::Context;
use gst::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the feed pushes a connection's media. Pushing never blocks: a connection that falls
/// more than two seconds behind loses its oldest buffers.
#[derive(Clone)]
pub struct Inlet {
    video: gst_app::AppSrc,
    audio: gst_app::AppSrc,
}

impl Inlet {
    pub fn push(&self, stream: Encoded, caps: Option<&gst::CapsRef>, buffer: gst::Buffer) {
        let src = match stream {
            Encoded::Aac => &self.audio,
            _ => &self.video,
        };
        if let Some(caps) = caps {
            if src.caps().as_deref() != Some(caps) {
                src.set_caps(Some(&caps.to_owned()));
            }
        }
        // A refused push means the connection is failing; its bus says why.
        let _ = src.push_buffer(buffer);
    }

    fn end(&self) {
        let _ = self.video.end_of_stream();
        let _ = self.audio.end_of_stream();
    }
}

pub struct Connection {
    pub pipeline: gst::Pipeline,
    pub inlet: Inlet,
    sink: gst::Element,
    /// Bytes handed to the sink (for sinks that count nothing themselves).
    handed: Arc<AtomicU64>,
}

fn make(factory: &str) -> anyhow::Result<gst::Element> {
    gst::ElementFactory::make(factory).build().with_context(|| {
        format!("GStreamer element '{factory}' is missing: run scripts/install-deps.sh")
    })
}

impl Connection {
    /// Builds and starts the pipeline for `target` (`file`: a recording's path), with its bus
    /// read from before it starts (a refused connection can fail it at once). Blocking: an
    /// SRT caller connects here.
    pub fn open(
        name: &str,
        target: &Target,
        file: Option<&Path>,
    ) -> anyhow::Result<(Connection, BusStream)> {
        let pipeline = gst::Pipeline::with_name(name);
        let appsrc = |name: &str| {
            gst_app::AppSrc::builder()
                .name(name)
                .format(gst::Format::Time)
                .is_live(false)
                .block(false)
                .max_time(2 * gst::ClockTime::SECOND)
                .max_bytes(0)
                .max_buffers(0)
                .leaky_type(gst_app::AppLeakyType::Downstream)
                .build()
        };
        let video = appsrc("video");
        let audio = appsrc("audio");
        let h264parse = make("h264parse")?;
        let aacparse = make("aacparse")?;
        let (mux, sink) = match target.kind {
            OutputKind::Rtmp => {
                let mux = gst::ElementFactory::make("flvmux")
                    .property("streamable", true)
                    .build()
                    .context("GStreamer element 'flvmux' is missing")?;
                let sink = gst::ElementFactory::make("rtmp2sink")
                    .property("location", target.secret_url())
                    .property("async-connect", true)
                    .property("sync", false)
                    // RTMP's default 128-byte chunks cost a write each; servers (nginx,
                    // YouTube, Twitch) take larger ones.
                    .property("chunk-size", 4096u32)
                    .build()
                    .context("GStreamer element 'rtmp2sink' is missing")?;
                (mux, sink)
            }
            OutputKind::Srt => {
                let mux = gst::ElementFactory::make("mpegtsmux")
                    .property("alignment", 7i32)
                    .build()
                    .context("GStreamer element 'mpegtsmux' is missing")?;
                let sink = gst::ElementFactory::make("srtsink")
                    .property("uri", target.secret_url())
                    .property("wait-for-connection", false)
                    .property("auto-reconnect", false)
                    .property("sync", false)
                    .build()
                    .context("GStreamer element 'srtsink' is missing")?;
                (mux, sink)
            }
            OutputKind::Record => {
                let file = file.context("a recording needs a file")?;
                let mux = gst::ElementFactory::make("mp4mux")
                    .property("fragment-duration", 1000u32)
                    .build()
                    .context("GStreamer element 'mp4mux' is missing")?;
                let sink = gst::ElementFactory::make("filesink")
                    .property("location", file.to_string_lossy().as_ref())
                    .property("sync", false)
                    .build()?;
                (mux, sink)
            }
        };
        pipeline.add_many([
            video.upcast_ref(),
            audio.upcast_ref(),
            &h264parse,
            &aacparse,
            &mux,
            &sink,
        ])?;
        gst::Element::link_many([video.upcast_ref(), &h264parse, &mux])?;
        gst::Element::link_many([audio.upcast_ref(), &aacparse, &mux])?;
        mux.link(&sink)?;
        let handed = Arc::new(AtomicU64::new(0));
        let counter = handed.clone();
        sink.static_pad("sink")
            .expect("sinks have a sink pad")
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(b) = info.buffer() {
                    counter.fetch_add(b.size() as u64, Ordering::Relaxed);
                }
                gst::PadProbeReturn::Ok
            });
        let mut bus = BusStream::new(pipeline.bus().expect("pipelines have a bus"), |_| {});
        let connection = Connection {
            pipeline,
            inlet: Inlet { video, audio },
            sink,
            handed,
        };
        if connection.pipeline.set_state(gst::State::Playing).is_err() {
            connection.close();
            // The element that refused to start said why on the bus.
            let why = std::iter::from_fn(|| bus.try_next()).find_map(|m| match m.view() {
                gst::MessageView::Error(e) => Some(crate::error::describe_bus_error(e)),
                _ => None,
            });
            anyhow::bail!(
                "the output could not start: {}",
                why.as_deref().unwrap_or("no reason given")
            );
        }
        Ok((connection, bus))
    }

    /// Bytes that left for the server (the sink's own count where it keeps one), or were
    /// written to the file.
    pub fn bytes_sent(&self) -> u64 {
        let stats = self
            .sink
            .find_property("stats")
            .and_then(|_| self.sink.property::<Option<gst::Structure>>("stats"));
        let counted = stats.and_then(|s| {
            ["out-bytes-total", "bytes-sent-total"]
                .iter()
                .find_map(|f| {
                    s.get::<u64>(*f)
                        .ok()
                        .or_else(|| s.get::<i64>(*f).ok().map(|v| v.max(0) as u64))
                })
        });
        counted.unwrap_or_else(|| self.handed.load(Ordering::Relaxed))
    }

    /// Ends the stream properly (the muxer writes what it holds), waiting at most `within`,
    /// then stops.
    pub fn finish(self, within: Duration) {
        let (done, ended) = std::sync::mpsc::sync_channel(1);
        self.sink
            .static_pad("sink")
            .expect("sinks have a sink pad")
            .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if matches!(info.event().map(|e| e.type_()), Some(gst::EventType::Eos)) {
                    let _ = done.try_send(());
                }
                gst::PadProbeReturn::Ok
            });
        self.inlet.end();
        let _ = ended.recv_timeout(within);
        self.close();
    }

    /// Stops at once.
    pub fn close(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
