//! WHEP and WHIP (WebRTC-HTTP Egress and Ingestion Protocols) without sockets: what we read
//! from a viewer's or a publisher's SDP offer and from trickled ICE fragments.
//!
//! A session encodes once (VP8 or H.264 video, Opus audio) for all its viewers, so an offer is
//! usable when it can receive at least one of them; each viewer gets its own payloaders,
//! numbered with the payload types its offer chose.

use crate::config::VideoCodec;

/// What to send a viewer on one of its offer's m-lines.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaPlan {
    /// Index of the m-line in the offer.
    pub mline: u32,
    pub mid: Option<String>,
    /// The payload type the offer gave our codec.
    pub payload: u8,
    /// H.264 only: the profile-level-id the offer asked for with that payload type.
    pub profile_level_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct OfferPlan {
    pub video: Option<MediaPlan>,
    pub audio: Option<MediaPlan>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignallingError {
    #[error("malformed SDP offer: {0}")]
    Malformed(String),
    #[error("the offer has nothing we can send: it must receive {0} video or Opus audio")]
    NothingToSend(&'static str),
    #[error("malformed trickle ICE fragment: {0}")]
    MalformedFragment(String),
    #[error("the offer sends no audio we can decode: it must send Opus audio (video alone is not enough)")]
    NothingToReceive,
}

/// What a publisher's offer sends us: its Opus audio (any video m-line is answered but
/// dropped, as OBS sends H.264 alongside its audio).
#[derive(Debug, Clone, PartialEq)]
pub struct PublishPlan {
    pub audio: MediaPlan,
}

/// Parses a WHIP offer and finds the Opus audio m-line we will receive.
pub fn plan_publish(sdp: &str) -> Result<(gst_sdp::SDPMessage, PublishPlan), SignallingError> {
    let message = parse(sdp)?;
    for (index, media) in message.medias().enumerate() {
        if rejected(media) || media.media() != Some("audio") {
            continue;
        }
        // The publisher must be willing to send.
        if media.attribute_val("recvonly").is_some() || media.attribute_val("inactive").is_some() {
            continue;
        }
        let opus = media
            .attributes()
            .filter(|a| a.key() == "rtpmap")
            .find_map(|a| {
                let (pt, encoding) = a.value()?.split_once(' ')?;
                encoding
                    .to_ascii_lowercase()
                    .starts_with("opus/48000")
                    .then(|| pt.parse::<u8>().ok())
                    .flatten()
            });
        if let Some(payload) = opus {
            return Ok((
                message.clone(),
                PublishPlan {
                    audio: MediaPlan {
                        mline: index as u32,
                        mid: media.attribute_val("mid").map(String::from),
                        payload,
                        profile_level_id: None,
                    },
                },
            ));
        }
    }
    Err(SignallingError::NothingToReceive)
}

fn parse(sdp: &str) -> Result<gst_sdp::SDPMessage, SignallingError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(SignallingError::Malformed(
            "it does not start with v=0".into(),
        ));
    }
    let message = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
        .map_err(|_| SignallingError::Malformed("GStreamer's SDP parser rejected it".into()))?;
    if message.medias_len() == 0 {
        return Err(SignallingError::Malformed("it has no m-lines".into()));
    }
    Ok(message)
}

/// Whether an offered m-line is switched off. Port 0 means that, except on a `bundle-only`
/// line (RFC 8843): webrtcbin's `max-bundle` offers all but the first m-line that way, and
/// they are as live as the first.
fn rejected(media: &gst_sdp::SDPMediaRef) -> bool {
    media.port() == 0 && media.attribute_val("bundle-only").is_none()
}

/// Parses an offer and decides which of its m-lines get our video and audio.
pub fn plan_offer(
    sdp: &str,
    codec: VideoCodec,
) -> Result<(gst_sdp::SDPMessage, OfferPlan), SignallingError> {
    let video_codec = match codec {
        VideoCodec::Vp8 => "vp8/90000",
        VideoCodec::H264 => "h264/90000",
    };
    let message = parse(sdp)?;
    let mut plan = OfferPlan::default();
    for (index, media) in message.medias().enumerate() {
        if rejected(media) {
            continue;
        }
        // We only send: the viewer must be willing to receive.
        let receives = !(media.attribute_val("sendonly").is_some()
            || media.attribute_val("inactive").is_some());
        if !receives {
            continue;
        }
        let (kind, codec) = match media.media() {
            Some("video") => ("video", video_codec),
            Some("audio") => ("audio", "opus/48000"),
            _ => continue,
        };
        // Candidate payload types for our codec, in the offer's order of preference.
        let payloads: Vec<u8> = media
            .attributes()
            .filter(|a| a.key() == "rtpmap")
            .filter_map(|a| {
                let (pt, encoding) = a.value()?.split_once(' ')?;
                encoding
                    .to_ascii_lowercase()
                    .starts_with(codec)
                    .then(|| pt.parse::<u8>().ok())
                    .flatten()
            })
            .collect();
        let fmtp = |pt: u8| {
            media.attributes().find_map(|a| {
                let (p, params) = a.value()?.split_once(' ')?;
                (a.key() == "fmtp" && p == pt.to_string()).then(|| params.to_owned())
            })
        };
        let param = |params: &str, name: &str| {
            params
                .split(';')
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        };
        let chosen = if codec == "h264/90000" {
            // Non-interleaved packetization, constrained baseline first (what we encode).
            let h264: Vec<(u8, Option<String>)> = payloads
                .iter()
                .filter_map(|&pt| {
                    let params = fmtp(pt).unwrap_or_default();
                    (param(&params, "packetization-mode").as_deref() == Some("1"))
                        .then(|| (pt, param(&params, "profile-level-id")))
                })
                .collect();
            h264.iter()
                .find(|(_, p)| {
                    p.as_deref()
                        .is_some_and(|p| p.to_ascii_lowercase().starts_with("42e0"))
                })
                .or_else(|| {
                    h264.iter()
                        .find(|(_, p)| p.as_deref().is_some_and(|p| p.starts_with("42")))
                })
                .cloned()
        } else {
            payloads.first().map(|&pt| (pt, None))
        };
        let Some((payload, profile_level_id)) = chosen else {
            continue;
        };
        let entry = MediaPlan {
            mline: index as u32,
            mid: media.attribute_val("mid").map(String::from),
            payload,
            profile_level_id,
        };
        match kind {
            "video" if plan.video.is_none() => plan.video = Some(entry),
            "audio" if plan.audio.is_none() => plan.audio = Some(entry),
            _ => {}
        }
    }
    if plan.video.is_none() && plan.audio.is_none() {
        return Err(SignallingError::NothingToSend(match codec {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H.264 (packetization-mode=1, baseline)",
        }));
    }
    Ok((message, plan))
}

/// One trickled candidate: its m-line and the `candidate:…` text.
#[derive(Debug, Clone, PartialEq)]
pub struct TrickleCandidate {
    pub mline: u32,
    pub candidate: String,
}

/// Reads an `application/trickle-ice-sdpfrag` body (RFC 8840): `a=mid:` lines select the m-line
/// (by the offer's mids), `a=candidate:` lines follow. With no mid, m-line 0 is assumed (bundle).
pub fn parse_trickle(
    fragment: &str,
    mids: &[Option<String>],
) -> Result<Vec<TrickleCandidate>, SignallingError> {
    let mut mline = 0u32;
    let mut out = Vec::new();
    for line in fragment.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(mid) = line.strip_prefix("a=mid:") {
            mline = mids
                .iter()
                .position(|m| m.as_deref() == Some(mid))
                .ok_or_else(|| SignallingError::MalformedFragment(format!("unknown mid '{mid}'")))?
                as u32;
        } else if let Some(c) = line.strip_prefix("a=") {
            if c.starts_with("candidate:") {
                out.push(TrickleCandidate {
                    mline,
                    candidate: c.to_owned(),
                });
            }
        } else if !(line.starts_with("m=") || line.starts_with("c=")) {
            return Err(SignallingError::MalformedFragment(format!(
                "unexpected line '{line}'"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gst::prelude::*;

    /// The shape of a Chromium recvonly offer (trimmed).
    pub const CHROME_OFFER: &str = "v=0\r\no=- 46117317 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11\r\n\
a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 rtx/90000\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n";

    /// A real recvonly offer (VP8 + Opus), written by a local webrtcbin.
    pub async fn webrtcbin_offer() -> String {
        gst::init().unwrap();
        let webrtcbin = gst::ElementFactory::make("webrtcbin").build().unwrap();
        let pipeline = gst::Pipeline::new();
        pipeline.add(&webrtcbin).unwrap();
        pipeline.set_state(gst::State::Ready).unwrap();
        for caps in [
            "application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96",
            "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111",
        ] {
            let caps: gst::Caps = caps.parse().unwrap();
            webrtcbin.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>(
                "add-transceiver",
                &[&gst_webrtc::WebRTCRTPTransceiverDirection::Recvonly, &caps],
            );
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let promise = gst::Promise::with_change_func(move |reply| {
            let offer = reply
                .unwrap()
                .unwrap()
                .get::<gst_webrtc::WebRTCSessionDescription>("offer")
                .unwrap();
            let _ = tx.send(offer.sdp().as_text().unwrap());
        });
        webrtcbin.emit_by_name::<()>("create-offer", &[&None::<gst::Structure>, &promise]);
        let sdp = rx.await.unwrap();
        pipeline.set_state(gst::State::Null).unwrap();
        sdp
    }

    #[test]
    fn chrome_offer_gets_vp8_and_opus() {
        let (_, plan) = plan_offer(CHROME_OFFER, VideoCodec::Vp8).unwrap();
        assert_eq!(
            plan.video,
            Some(MediaPlan {
                mline: 0,
                mid: Some("0".into()),
                payload: 96,
                profile_level_id: None,
            })
        );
        assert_eq!(plan.audio.unwrap().payload, 111);
        let (_, plan) = plan_offer(CHROME_OFFER, VideoCodec::H264).unwrap();
        let video = plan.video.unwrap();
        assert_eq!(video.payload, 102);
        assert_eq!(video.profile_level_id.as_deref(), Some("42e01f"));
    }

    #[test]
    fn bundle_only_lines_on_port_zero_are_live() {
        gst::init().unwrap();
        // webrtcbin's max-bundle offer: the audio rides on the video's transport.
        let offer = CHROME_OFFER.replace(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\n",
            "m=audio 0 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=bundle-only\r\n",
        );
        assert!(offer.contains("a=bundle-only"));
        let (_, plan) = plan_offer(&offer, VideoCodec::Vp8).unwrap();
        assert_eq!(plan.audio.unwrap().payload, 111);
        // A plain port 0 still switches the line off.
        let off = offer.replace("a=bundle-only\r\n", "");
        let (_, plan) = plan_offer(&off, VideoCodec::Vp8).unwrap();
        assert!(plan.audio.is_none());
    }

    #[test]
    fn offers_we_cannot_serve_are_refused() {
        assert!(matches!(
            plan_offer("hello", VideoCodec::Vp8),
            Err(SignallingError::Malformed(_))
        ));
        assert!(matches!(
            plan_offer("v=0\r\n", VideoCodec::Vp8),
            Err(SignallingError::Malformed(_))
        ));
        let send_only = CHROME_OFFER.replace("a=recvonly", "a=sendonly");
        assert!(matches!(
            plan_offer(&send_only, VideoCodec::Vp8),
            Err(SignallingError::NothingToSend(_))
        ));
        let no_vp8_no_opus = CHROME_OFFER
            .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 AV1/90000")
            .replace("opus/48000/2", "PCMU/8000");
        assert!(matches!(
            plan_offer(&no_vp8_no_opus, VideoCodec::Vp8),
            Err(SignallingError::NothingToSend(_))
        ));
        // H.264 needs packetization-mode=1.
        let single_nal = CHROME_OFFER
            .replace("packetization-mode=1", "packetization-mode=0")
            .replace("opus/48000/2", "PCMU/8000");
        assert!(matches!(
            plan_offer(&single_nal, VideoCodec::H264),
            Err(SignallingError::NothingToSend(_))
        ));
    }

    #[test]
    fn publish_offers_need_opus_audio_and_may_carry_video() {
        // OBS-like: H.264 video and Opus audio, both sendonly.
        let obs = CHROME_OFFER.replace("a=recvonly", "a=sendonly");
        let (_, plan) = plan_publish(&obs).unwrap();
        assert_eq!(plan.audio.mline, 1);
        assert_eq!(plan.audio.payload, 111);
        // A viewer's offer (receive only) publishes nothing; nor does video alone.
        assert_eq!(
            plan_publish(CHROME_OFFER).unwrap_err(),
            SignallingError::NothingToReceive
        );
        let video_only = obs.split("m=audio").next().unwrap().to_owned();
        assert_eq!(
            plan_publish(&video_only).unwrap_err(),
            SignallingError::NothingToReceive
        );
        let pcmu = obs.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 PCMU/8000");
        assert_eq!(
            plan_publish(&pcmu).unwrap_err(),
            SignallingError::NothingToReceive
        );
        assert!(matches!(
            plan_publish("hello"),
            Err(SignallingError::Malformed(_))
        ));
    }

    #[test]
    fn trickle_fragments_map_mids_to_mlines() {
        let mids = [Some("0".to_string()), Some("1".to_string())];
        let frag = "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 RTP/AVP 0\r\na=mid:1\r\n\
a=candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n";
        let c = parse_trickle(frag, &mids).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].mline, 1);
        assert!(c[0].candidate.starts_with("candidate:1 1 UDP"));
        assert!(parse_trickle("a=mid:7\r\n", &mids).is_err());
        assert!(parse_trickle("garbage", &mids).is_err());
    }
}
