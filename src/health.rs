//! Readiness: can this process build the sessions it is configured for? Shared by
//! `GET /health/ready` and the server's start-up.

use crate::config::{Config, VideoCodec};
use facecast_onnx::Device;
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
            if !crate::session::encoders::nvenc() {
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
    /// With lip-sync GPUs (`device = "cuda:N"` or `devices`): why one is not usable (gone, or
    /// its driver does not answer NVML), for each that is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_error: Option<String>,
}

impl Readiness {
    pub fn check(config: &Config) -> Self {
        let missing_elements: Vec<&str> = required_elements(config.video.codec)
            .into_iter()
            .filter(|f| gst::ElementFactory::find(f).is_none())
            .collect();
        let errors: Vec<String> = config
            .lipsync_devices()
            .into_iter()
            .filter_map(|device| match device {
                Device::Cuda(n) => facecast_gpu::nvml::read(n.max(0) as u32)
                    .err()
                    .map(|e| format!("{device}: {e}")),
                Device::Cpu => None,
            })
            .collect();
        let gpu_error = (!errors.is_empty()).then(|| errors.join("; "));
        let ready = missing_elements.is_empty() && gpu_error.is_none();
        Self {
            status: if ready { "ready" } else { "not_ready" },
            missing_elements,
            gpu_error,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.missing_elements.is_empty() && self.gpu_error.is_none()
    }
}
