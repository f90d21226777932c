//! What a WHEP viewer and a WHIP publisher share: answering an offer with `webrtcbin`, and the
//! `webrtcbin` itself, set up the same way for both.

use crate::config::Config;
use anyhow::{anyhow, Context};
use gst::prelude::*;
use std::time::Duration;

/// A gst promise as a future.
async fn promise_reply(f: impl FnOnce(&gst::Promise)) -> anyhow::Result<Option<gst::Structure>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let promise = gst::Promise::with_change_func(move |reply| {
        let _ = tx.send(match reply {
            Ok(s) => Ok(s.map(|s| s.to_owned())),
            Err(e) => Err(anyhow!("webrtcbin promise failed: {e:?}")),
        });
    });
    f(&promise);
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .context("webrtcbin did not answer in time")?
        .context("webrtcbin dropped its promise")?
}

/// A `webrtcbin` named `name` with the configured STUN and TURN servers (not yet in a pipeline).
pub fn webrtcbin(name: &str, config: &Config) -> anyhow::Result<gst::Element> {
    let webrtcbin = gst::ElementFactory::make("webrtcbin")
        .name(name)
        .property_from_str("bundle-policy", "max-bundle")
        .build()
        .context("GStreamer element 'webrtcbin' is missing: run scripts/install-deps.sh")?;
    if let Some(stun) = config.ice.stun_servers.first() {
        webrtcbin.set_property("stun-server", stun);
    }
    for turn in &config.ice.turn_servers {
        webrtcbin.emit_by_name::<bool>("add-turn-server", &[turn]);
    }
    Ok(webrtcbin)
}

/// Adds `webrtcbin` to `pipeline` and starts it (with loopback ICE candidates where asked).
pub fn start_in(
    webrtcbin: &gst::Element,
    pipeline: &gst::Pipeline,
    config: &Config,
) -> anyhow::Result<()> {
    pipeline.add(webrtcbin)?;
    if config.ice_loopback() {
        // libnice skips loopback interfaces unless told about them.
        let agent = webrtcbin.property::<gst::glib::Object>("ice-agent");
        agent.emit_by_name::<bool>("add-local-ip-address", &[&"127.0.0.1"]);
    }
    webrtcbin.sync_state_with_parent()?;
    Ok(())
}

/// Sets `offer` as the remote description and answers it; the answer carries every host
/// candidate, so clients need not trickle.
pub async fn answer(
    webrtcbin: &gst::Element,
    offer: gst_sdp::SDPMessage,
) -> anyhow::Result<String> {
    let desc = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, offer);
    let reply =
        promise_reply(|p| webrtcbin.emit_by_name::<()>("set-remote-description", &[&desc, p]))
            .await?;
    if let Some(err) = reply
        .as_ref()
        .and_then(|r| r.get::<gst::glib::Error>("error").ok())
    {
        anyhow::bail!("webrtcbin rejected the offer: {err}");
    }
    let reply = promise_reply(|p| {
        webrtcbin.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, p])
    })
    .await?
    .context("webrtcbin gave no answer")?;
    if let Ok(err) = reply.get::<gst::glib::Error>("error") {
        anyhow::bail!("webrtcbin could not answer: {err}");
    }
    let answer = reply
        .get::<gst_webrtc::WebRTCSessionDescription>("answer")
        .context("webrtcbin's reply holds no answer")?;
    promise_reply(|p| webrtcbin.emit_by_name::<()>("set-local-description", &[&answer, p])).await?;

    // Answer with every host candidate in the SDP, so players need not trickle.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let handler = webrtcbin.connect_notify(Some("ice-gathering-state"), move |w, _| {
        if w.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
            == gst_webrtc::WebRTCICEGatheringState::Complete
        {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
        }
    });
    if webrtcbin.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
        != gst_webrtc::WebRTCICEGatheringState::Complete
    {
        let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
    }
    webrtcbin.disconnect(handler);
    let local = webrtcbin
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .context("no local description")?;
    let sdp = local
        .sdp()
        .as_text()
        .context("cannot write the answer SDP")?;
    Ok(sdp)
}

/// Adds trickled remote candidates to `webrtcbin`.
pub fn add_candidates(
    webrtcbin: &gst::Element,
    candidates: &[crate::signalling::TrickleCandidate],
) {
    for c in candidates {
        webrtcbin.emit_by_name::<()>("add-ice-candidate", &[&c.mline, &c.candidate]);
    }
}
