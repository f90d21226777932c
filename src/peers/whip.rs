//! A minimal WHIP publisher on `webrtcbin`: live audio paced by `clocksync`, optionally with
//! H.264 video as OBS sends it. `facecast bench --barge-in` and the WHIP tests publish with it.

use gst::prelude::*;

/// A WHIP client: live audio (paced by `clocksync`), optionally H.264 video as OBS sends.
pub struct WhipClient {
    pub pipeline: gst::Pipeline,
    webrtcbin: gst::Element,
    src: gst_app::AppSrc,
}

impl WhipClient {
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
        super::on_loopback(&webrtcbin);
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
        WhipClient {
            pipeline,
            webrtcbin,
            src,
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

    /// The system-clock time at which the sample of running time `at` leaves the client (its
    /// pipeline's base time and latency added): where a sound is "in the input", on the clock
    /// the session's pipeline shares.
    pub fn sent_at(&self, at: gst::ClockTime) -> gst::ClockTime {
        let mut latency = gst::query::Latency::new();
        let client_latency = if self.pipeline.query(&mut latency) {
            latency.result().1
        } else {
            gst::ClockTime::ZERO
        };
        self.pipeline.base_time().unwrap_or_default() + at + client_latency
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

impl Drop for WhipClient {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
