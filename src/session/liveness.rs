//! Viewer liveness: a viewer that vanishes without `DELETE` is noticed and dropped. When its
//! ICE connection fails or closes, when it says goodbye in RTCP (BYE) or falls silent there
//! (timeout, about 20 s), or when it never connects within the deadline.

use gst::prelude::*;
use std::time::Duration;

/// Calls `gone(why)` (from a streaming thread or a timer task) when the viewer behind
/// `webrtcbin` is gone. Must run inside the tokio runtime (it starts the deadline timer).
pub fn watch(
    webrtcbin: &gst::Element,
    connect_deadline: Duration,
    gone: impl Fn(&'static str) + Clone + Send + Sync + 'static,
) {
    let on_state = gone.clone();
    webrtcbin.connect_notify(Some("connection-state"), move |w, _| {
        use gst_webrtc::WebRTCPeerConnectionState as S;
        if matches!(w.property::<S>("connection-state"), S::Failed | S::Closed) {
            on_state("connection failed");
        }
    });
    match webrtcbin
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("rtpbin"))
    {
        Some(rtpbin) => {
            for (signal, why) in [("on-bye-ssrc", "RTCP BYE"), ("on-timeout", "RTCP timeout")] {
                let on_rtcp = gone.clone();
                rtpbin.connect(signal, false, move |_| {
                    on_rtcp(why);
                    None
                });
            }
        }
        None => tracing::warn!("webrtcbin has no rtpbin: viewers are dropped only on ICE failure"),
    }
    let webrtcbin = webrtcbin.downgrade();
    tokio::spawn(async move {
        tokio::time::sleep(connect_deadline).await;
        let connected = webrtcbin.upgrade().is_some_and(|w| {
            w.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state")
                == gst_webrtc::WebRTCPeerConnectionState::Connected
        });
        if !connected {
            gone("never connected");
        }
    });
}
