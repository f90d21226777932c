//! A WHEP viewer: one `webrtcbin` answering the viewer's offer, fed from the session's encoded
//! video and audio tees through per-viewer payloaders (numbered with the viewer's payload types).

use super::pipeline::{Encoded, SessionPipeline, Tap};
use crate::config::{Config, VideoCodec};
use crate::signalling::{MediaPlan, OfferPlan};
use anyhow::{anyhow, Context};
use gst::prelude::*;

pub struct Viewer {
    pub webrtcbin: gst::Element,
    /// Everything added to the pipeline for this viewer, webrtcbin included.
    elements: Vec<gst::Element>,
    /// The encoded streams feeding the viewer.
    taps: Vec<Tap>,
    /// The offer's m-line mids, for trickled candidates.
    pub mids: Vec<Option<String>>,
}

impl Viewer {
    /// Adds a viewer to `pipeline` and answers `offer`. On failure nothing is left behind.
    pub async fn connect(
        id: &str,
        session: &SessionPipeline,
        config: &Config,
        offer: gst_sdp::SDPMessage,
        plan: &OfferPlan,
    ) -> anyhow::Result<(Viewer, String)> {
        let mids = offer
            .medias()
            .map(|m| m.attribute_val("mid").map(String::from))
            .collect();
        let webrtcbin = super::webrtc::webrtcbin(&format!("viewer-{id}"), config)?;
        let mut viewer = Viewer {
            webrtcbin: webrtcbin.clone(),
            elements: vec![webrtcbin.clone()],
            taps: Vec::new(),
            mids,
        };
        let result = viewer.negotiate(session, config, offer, plan).await;
        match result {
            Ok(answer) => Ok((viewer, answer)),
            Err(e) => {
                viewer.disconnect(session);
                Err(e)
            }
        }
    }

    fn add_branch(
        &mut self,
        session: &SessionPipeline,
        stream: Encoded,
        payloader: &str,
        media: &MediaPlan,
        caps: gst::Caps,
    ) -> anyhow::Result<()> {
        let queue = gst::ElementFactory::make("queue")
            .property("max-size-time", 500_000_000u64)
            .property_from_str("leaky", "downstream")
            .build()?;
        let pay = gst::ElementFactory::make(payloader)
            .property("pt", media.payload as u32)
            .build()
            .with_context(|| format!("GStreamer element '{payloader}' is missing"))?;
        if payloader == "rtph264pay" {
            // Parameter sets with every keyframe, packets out as soon as a frame is in.
            pay.set_property("config-interval", -1i32);
            pay.set_property_from_str("aggregate-mode", "zero-latency");
        }
        session.pipeline.add_many([&queue, &pay])?;
        self.elements.push(queue.clone());
        self.elements.push(pay.clone());
        queue.link(&pay)?;
        let templ = self
            .webrtcbin
            .pad_template("sink_%u")
            .context("webrtcbin has no sink_%u template")?;
        let sink = self
            .webrtcbin
            .request_pad(&templ, None, Some(&caps))
            .context("webrtcbin refused a sink pad")?;
        pay.static_pad("src")
            .unwrap()
            .link(&sink)
            .map_err(|e| anyhow!("cannot link {payloader} to webrtcbin: {e:?}"))?;
        if let Some(transceiver) =
            sink.property::<Option<gst_webrtc::WebRTCRTPTransceiver>>("transceiver")
        {
            transceiver.set_property(
                "direction",
                gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
            );
        }
        queue.sync_state_with_parent()?;
        pay.sync_state_with_parent()?;
        let tap = session.tap(stream, &queue.static_pad("sink").unwrap())?;
        self.taps.push(tap);
        Ok(())
    }

    async fn negotiate(
        &mut self,
        session: &SessionPipeline,
        config: &Config,
        offer: gst_sdp::SDPMessage,
        plan: &OfferPlan,
    ) -> anyhow::Result<String> {
        let pipeline = &session.pipeline;
        super::webrtc::start_in(&self.webrtcbin, pipeline, config)?;
        if let Some(video) = &plan.video {
            let (encoding, payloader) = match config.video.codec {
                VideoCodec::Vp8 => ("VP8", "rtpvp8pay"),
                VideoCodec::H264 => ("H264", "rtph264pay"),
            };
            let mut caps = gst::Caps::builder("application/x-rtp")
                .field("media", "video")
                .field("encoding-name", encoding)
                .field("clock-rate", 90000i32)
                .field("payload", video.payload as i32);
            if config.video.codec == VideoCodec::H264 {
                // Answer with the profile the viewer asked for: our constrained-baseline stream
                // decodes as any of the 42xx profiles a browser offers.
                caps = caps.field("packetization-mode", "1");
                if let Some(p) = &video.profile_level_id {
                    caps = caps.field("profile-level-id", p.as_str());
                }
            }
            self.add_branch(session, Encoded::Video, payloader, video, caps.build())?;
        }
        if let Some(audio) = &plan.audio {
            let caps = gst::Caps::builder("application/x-rtp")
                .field("media", "audio")
                .field("encoding-name", "OPUS")
                .field("clock-rate", 48000i32)
                .field("payload", audio.payload as i32)
                .build();
            self.add_branch(session, Encoded::Audio, "rtpopuspay", audio, caps)?;
        }

        let sdp = super::webrtc::answer(&self.webrtcbin, offer).await?;

        // A new viewer needs a keyframe now, not at the next scheduled one.
        if let Some(tap) = self.taps.first() {
            tap.request_keyframe();
        }
        Ok(sdp)
    }

    /// Adds trickled remote candidates.
    pub fn add_candidates(&self, candidates: &[crate::signalling::TrickleCandidate]) {
        super::webrtc::add_candidates(&self.webrtcbin, candidates);
    }

    /// Detaches the viewer from the running pipeline and removes its elements.
    pub fn disconnect(&mut self, session: &SessionPipeline) {
        for tap in self.taps.drain(..) {
            session.untap(tap);
        }
        session.retire(self.elements.drain(..));
    }
}
