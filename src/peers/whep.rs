//! A minimal WHEP viewer on `webrtcbin`: receives VP8 video and Opus audio, decodes the audio
//! and keeps it, laid out on the viewer's own timeline. The drive-mode test listens with it.

use gst::prelude::*;
use std::sync::{Arc, Mutex};

/// Received audio, 48 kHz mono, placed by its timestamps (gaps left as silence).
#[derive(Default)]
struct Heard {
    first: Option<gst::ClockTime>,
    samples: Vec<i16>,
}

pub struct WhepClient {
    pipeline: gst::Pipeline,
    webrtcbin: gst::Element,
    heard: Arc<Mutex<Heard>>,
}

impl WhepClient {
    pub fn new() -> Self {
        let pipeline = gst::Pipeline::new();
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .expect("webrtcbin");
        pipeline.add(&webrtcbin).unwrap();
        super::on_loopback(&webrtcbin);
        for caps in [
            "application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96",
            "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111,encoding-params=(string)2",
        ] {
            let caps: gst::Caps = caps.parse().unwrap();
            webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
            );
        }
        let heard = Arc::new(Mutex::new(Heard::default()));
        let keep = heard.clone();
        let weak = pipeline.downgrade();
        webrtcbin.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let is_audio = pad
                .current_caps()
                .and_then(|c| {
                    c.structure(0)
                        .map(|s| s.get::<&str>("media") == Ok("audio"))
                })
                .unwrap_or(false);
            let branch = if is_audio {
                "rtpopusdepay ! opusdec ! audioconvert ! audioresample \
                 ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! appsink name=heard sync=false"
            } else {
                "fakesink sync=false async=false"
            };
            let bin = gst::parse::bin_from_description(branch, true).unwrap();
            pipeline.add(&bin).unwrap();
            if let Some(sink) = bin.by_name("heard") {
                let keep = keep.clone();
                sink.downcast::<gst_app::AppSink>().unwrap().set_callbacks(
                    gst_app::AppSinkCallbacks::builder()
                        .new_sample(move |sink| {
                            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                            let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                            let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                            let mut heard = keep.lock().unwrap();
                            let pts = buffer.pts().unwrap_or_default();
                            let first = *heard.first.get_or_insert(pts);
                            let at =
                                ((pts.saturating_sub(first)).nseconds() * 48 / 1_000_000) as usize;
                            if heard.samples.len() < at {
                                heard.samples.resize(at, 0);
                            }
                            heard.samples.truncate(at);
                            heard.samples.extend(
                                map.chunks_exact(2)
                                    .map(|c| i16::from_le_bytes([c[0], c[1]])),
                            );
                            Ok(gst::FlowSuccess::Ok)
                        })
                        .build(),
                );
            }
            bin.sync_state_with_parent().unwrap();
            pad.link(&bin.static_pad("sink").unwrap()).unwrap();
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        WhepClient {
            pipeline,
            webrtcbin,
            heard,
        }
    }

    /// The offer, with every host candidate in it.
    pub fn offer(&self) -> String {
        super::local_offer(&self.webrtcbin)
    }

    /// Takes the server's answer and waits until the connection is up.
    pub fn answered(&self, answer: &str) {
        super::answered(&self.webrtcbin, answer);
    }

    /// The audio received so far, 48 kHz mono, from the first sample.
    pub fn heard(&self) -> Vec<i16> {
        self.heard.lock().unwrap().samples.clone()
    }
}

impl Drop for WhepClient {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
