//! Readiness: can this process build the sessions it is configured for? Shared by
//! `GET /health/ready` and the server's start-up.

use crate::config::VideoCodec;
use serde::Serialize;

/// Elements every session needs with `codec`.
pub fn required_elements(codec: VideoCodec) -> Vec<&'static str> {
    let mut v = vec![
        "speechsynth",
        "avatarsrc",
        "lipsync",
        "opusenc",
        "webrtcbin",
        "rtpopuspay",
        "nicesrc",
    ];
    match codec {
        VideoCodec::Vp8 => v.extend(["vp8enc", "rtpvp8pay"]),
        VideoCodec::H264 => {
            v.extend(["h264parse", "rtph264pay"]);
            if gst::ElementFactory::find("nvh264enc").is_none() {
                v.push("x264enc");
            }
        }
    }
    v
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub status: &'static str,
    pub missing_elements: Vec<&'static str>,
}

impl Readiness {
    pub fn check(codec: VideoCodec) -> Self {
        let missing_elements: Vec<&str> = required_elements(codec)
            .into_iter()
            .filter(|f| gst::ElementFactory::find(f).is_none())
            .collect();
        Self {
            status: if missing_elements.is_empty() {
                "ready"
            } else {
                "not_ready"
            },
            missing_elements,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.missing_elements.is_empty()
    }
}
