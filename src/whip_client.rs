//! A minimal WHIP publisher on `webrtcbin`: live audio paced by `clocksync`, optionally with
//! H.264 video as OBS sends it. `facecast bench --barge-in` and the WHIP tests publish with it;
//! it is not a product feature (OBS, browsers and GStreamer's WHIP sink are the clients).

use gst::prelude::*;
use std::time::{Duration, Instant};

/// A WHIP client: live audio (paced by `clocksync`), optionally H.264 video as OBS sends.
pub struct Client {
    pub pipeline: gst::Pipeline,
    webrtcbin: gst::Element,
    src: gst_app::AppSrc,
}

fn promise(f: impl FnOnce(&gst::Promise)) -> Option<gst::Structure> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = gst::Promise::with_change_func(move |r| {
        let _ = tx.send(r.ok().flatten().map(|s| s.to_owned()));
    });
    f(&p);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("webrtcbin answers")
}

impl Client {
    pub fn new(with_video: bool) -> Self {
        let video = if with_video {
            "videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast ! rtph264pay pt=102 config-interval=-1 \
             ! application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000 ! w."
        } else {
            ""
        };
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src is-live=true format=time \
             caps=audio/x-raw,format=S16LE,rate=48000,channels=1,layout=interleaved \
             ! clocksync ! audioconvert ! opusenc ! rtpopuspay pt=111 \
             ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 \
             ! webrtcbin name=w bundle-policy=max-bundle {video}"
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let webrtcbin = pipeline.by_name("w").unwrap();
        let agent = webrtcbin.property::<gst::glib::Object>("ice-agent");
        agent.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]);
        let src = pipeline
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        for pad in webrtcbin.sink_pads() {
            if let Some(t) = pad.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
            {
                t.set_property(
                    "direction",
                    gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
                );
            }
        }
        Client {
            pipeline,
            webrtcbin,
            src,
        }
    }

    /// The offer, with every host candidate in it.
    pub fn offer(&self) -> String {
        let w = &self.webrtcbin;
        let reply =
            promise(|p| w.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, p]))
                .expect("an offer");
        let offer = reply
            .get::<gst_webrtc::WebRTCSessionDescription>("offer")
            .unwrap();
        promise(|p| w.emit_by_name::<()>("set-local-description", &[&offer, p]));
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            != gst_webrtc::WebRTCICEGatheringState::Complete
        {
            assert!(Instant::now() < deadline, "ICE gathering never completed");
            std::thread::sleep(Duration::from_millis(10));
        }
        w.property::<gst_webrtc::WebRTCSessionDescription>("local-description")
            .sdp()
            .as_text()
            .unwrap()
    }

    pub fn answered(&self, answer: &str) {
        let sdp = gst_sdp::SDPMessage::parse_buffer(answer.as_bytes()).unwrap();
        let desc =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
        promise(|p| {
            self.webrtcbin
                .emit_by_name::<()>("set-remote-description", &[&desc, p])
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .webrtcbin
            .property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
            != gst_webrtc::WebRTCPeerConnectionState::Connected
        {
            assert!(
                Instant::now() < deadline,
                "the WebRTC connection never came up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `samples` live from now; returns the client's running time of the first sample.
    pub fn send(&self, samples: &[i16]) -> gst::ClockTime {
        let start =
            self.pipeline.current_running_time().unwrap() + gst::ClockTime::from_mseconds(50);
        for (i, c) in samples.chunks(960).enumerate() {
            let mut bytes = Vec::with_capacity(c.len() * 2);
            c.iter()
                .for_each(|s| bytes.extend_from_slice(&s.to_le_bytes()));
            let mut buffer = gst::Buffer::from_mut_slice(bytes);
            {
                let b = buffer.get_mut().unwrap();
                b.set_pts(start + gst::ClockTime::from_mseconds(20 * i as u64));
                b.set_duration(gst::ClockTime::from_mseconds(20));
            }
            self.src.push_buffer(buffer).unwrap();
        }
        start
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
