//! The other ends of the session's connections, for `facecast bench` and the tests: minimal
//! WebRTC peers on `webrtcbin` (a WHIP publisher that sends a voice, a WHEP viewer that
//! receives and decodes the session's audio) and a scripted transcription endpoint. They are
//! not product features (browsers, OBS, GStreamer's WHIP/WHEP elements and real recognisers
//! are); they exist so that benchmarks and tests cross real WebRTC and HTTP on loopback.

mod transcriber;
mod whep;
mod whip;

pub use transcriber::transcriber;
#[cfg(test)]
pub use transcriber::{scripted_transcriber, Transcribed};
pub use whep::WhepClient;
pub use whip::WhipClient;

use gst::prelude::*;
use std::time::{Duration, Instant};

fn promise(f: impl FnOnce(&gst::Promise)) -> Option<gst::Structure> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = gst::Promise::with_change_func(move |r| {
        let _ = tx.send(r.ok().flatten().map(|s| s.to_owned()));
    });
    f(&p);
    rx.recv_timeout(Duration::from_secs(5))
        .expect("webrtcbin answers")
}

/// Makes `webrtcbin` use loopback, so the peers meet on 127.0.0.1.
fn on_loopback(webrtcbin: &gst::Element) {
    let agent = webrtcbin.property::<gst::glib::Object>("ice-agent");
    agent.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]);
}

/// Creates and sets the local offer, and returns it with every host candidate in it.
fn local_offer(w: &gst::Element) -> String {
    let reply = promise(|p| w.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, p]))
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

/// Sets the server's answer and waits until the connection is up.
fn answered(w: &gst::Element, answer: &str) {
    let sdp = gst_sdp::SDPMessage::parse_buffer(answer.as_bytes()).unwrap();
    let desc = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
    promise(|p| w.emit_by_name::<()>("set-remote-description", &[&desc, p]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
        != gst_webrtc::WebRTCPeerConnectionState::Connected
    {
        assert!(
            Instant::now() < deadline,
            "the WebRTC connection never came up ({} {:?}, ICE {:?})",
            w.name(),
            w.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state"),
            w.property::<gst_webrtc::WebRTCICEConnectionState>("ice-connection-state"),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
