//! A minimal WHEP viewer on `webrtcbin`: receives VP8 (or H.264) video and Opus audio, counts
//! the video packets, decodes the audio and keeps it, laid out on the viewer's own timeline.
//! The drive-mode and output tests watch with it.

use crate::config::VideoCodec;
use gst::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Received audio, 48 kHz mono, as a player plays it: decoded samples one after the other,
/// with silence where the timestamps jump ahead by more than a packet (lost packets). The
/// receiver's jitter buffer re-times buffers from their arrival (its clock-skew estimate moves
/// under load), so placing each buffer at its timestamp would overlap neighbours and cut audio
/// that was received.
#[derive(Default)]
struct Heard {
    /// Where the samples received so far should end, by the timestamps.
    next: Option<gst::ClockTime>,
    samples: Vec<i16>,
}

/// A forward jump in the timestamps larger than this is a gap, not re-timing.
const GAP: gst::ClockTime = gst::ClockTime::from_mseconds(60);

pub struct WhepClient {
    pipeline: gst::Pipeline,
    webrtcbin: gst::Element,
    heard: Arc<Mutex<Heard>>,
    video_packets: Arc<AtomicU64>,
}

impl WhepClient {
    /// A viewer asking for VP8.
    #[cfg(test)]
    pub fn new() -> Self {
        Self::receiving(VideoCodec::Vp8)
    }

    /// A viewer asking for `codec`.
    pub fn receiving(codec: VideoCodec) -> Self {
        let pipeline = gst::Pipeline::new();
        let webrtcbin = gst::ElementFactory::make("webrtcbin")
            .property_from_str("bundle-policy", "max-bundle")
            .build()
            .expect("webrtcbin");
        pipeline.add(&webrtcbin).unwrap();
        super::on_loopback(&webrtcbin);
        let video = match codec {
            VideoCodec::Vp8 => {
                "application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96"
            }
            VideoCodec::H264 => "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=102,packetization-mode=(string)1,profile-level-id=(string)42e01f",
        };
        for caps in [
            video,
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
        let video_packets = Arc::new(AtomicU64::new(0));
        let counted = video_packets.clone();
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
                            let pts = buffer.pts();
                            if let (Some(pts), Some(next)) = (pts, heard.next) {
                                let gap = pts.saturating_sub(next);
                                if gap > GAP {
                                    let missing = (gap.nseconds() * 48 / 1_000_000) as usize;
                                    let len = heard.samples.len();
                                    heard.samples.resize(len + missing, 0);
                                }
                            }
                            let before = heard.samples.len();
                            heard.samples.extend(
                                map.chunks_exact(2)
                                    .map(|c| i16::from_le_bytes([c[0], c[1]])),
                            );
                            let added = (heard.samples.len() - before) as u64;
                            heard.next = pts
                                .map(|p| p + gst::ClockTime::from_nseconds(added * 1_000_000 / 48));
                            Ok(gst::FlowSuccess::Ok)
                        })
                        .build(),
                );
            }
            if !is_audio {
                let counted = counted.clone();
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                });
            }
            bin.sync_state_with_parent().unwrap();
            pad.link(&bin.static_pad("sink").unwrap()).unwrap();
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        WhepClient {
            pipeline,
            webrtcbin,
            heard,
            video_packets,
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

    /// Video RTP packets received so far.
    pub fn video_packets(&self) -> u64 {
        self.video_packets.load(Ordering::Relaxed)
    }

    /// The audio received so far, 48 kHz mono, from the first sample (see [`Heard`]).
    pub fn heard(&self) -> Vec<i16> {
        self.heard.lock().unwrap().samples.clone()
    }
}

impl Drop for WhepClient {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
