//! An output's hold on the session: the encoded H.264 and AAC, each through a leaky queue into
//! an `appsink`, handed to whichever connection the output has now.
//!
//! The connection is a pipeline of its own ([`super::connection`]): a server that refuses,
//! stalls or drops it fails that pipeline only, and its errors never travel back up the
//! session's tees to its encoders and viewers. The feed stays while the output reconnects, so
//! reconnecting never touches the session's encoders.
//!
//! Each connection's timestamps start at 0 at its first keyframe (audio before it is left
//! out), with video and audio shifted alike, so A/V sync is kept across reconnects.

use super::connection::Inlet;
use crate::session::pipeline::{running_time_on, Encoded, SessionPipeline, Tap};
use anyhow::Context;
use gst::prelude::*;
use std::sync::{Arc, Mutex};

/// The connection being fed, if any, and where its timeline starts.
#[derive(Default)]
struct Current {
    inlet: Option<Inlet>,
    /// The session running time of the connection's first keyframe.
    start: Option<gst::ClockTime>,
}

pub struct Feed {
    taps: Vec<Tap>,
    elements: Vec<gst::Element>,
    current: Arc<Mutex<Current>>,
}

impl Feed {
    /// Taps the session's H.264 and AAC (starting their encoders if nothing else uses them).
    pub fn attach(session: &SessionPipeline, name: &str) -> anyhow::Result<Feed> {
        let mut feed = Feed {
            taps: Vec::new(),
            elements: Vec::new(),
            current: Arc::default(),
        };
        let result = [Encoded::H264, Encoded::Aac]
            .into_iter()
            .try_for_each(|stream| feed.add(session, name, stream));
        match result {
            Ok(()) => Ok(feed),
            Err(e) => {
                feed.detach(session);
                Err(e)
            }
        }
    }

    fn add(
        &mut self,
        session: &SessionPipeline,
        name: &str,
        stream: Encoded,
    ) -> anyhow::Result<()> {
        // A second of encoded media at most: a connection that cannot take it loses the
        // oldest, the session never waits.
        let queue = gst::ElementFactory::make("queue")
            .name(format!("{name}-{stream:?}-queue"))
            .property("max-size-time", gst::ClockTime::SECOND.nseconds())
            .property("max-size-buffers", 0u32)
            .property("max-size-bytes", 0u32)
            .property_from_str("leaky", "downstream")
            .build()?;
        let sink = gst_app::AppSink::builder()
            .name(format!("{name}-{stream:?}"))
            .sync(false)
            .async_(false)
            .enable_last_sample(false)
            .build();
        let current = self.current.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let pad = sink.static_pad("sink").expect("appsink has a sink pad");
                    forward(&current, stream, &pad, &sample);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        session
            .pipeline
            .add_many([&queue, sink.upcast_ref()])
            .context("cannot add an output's branch")?;
        self.elements.push(queue.clone());
        self.elements.push(sink.clone().upcast());
        queue.link(&sink)?;
        sink.sync_state_with_parent()?;
        queue.sync_state_with_parent()?;
        let tap = session.tap(
            stream,
            &queue.static_pad("sink").expect("queues have a sink"),
        )?;
        self.taps.push(tap);
        Ok(())
    }

    /// Feeds `inlet` from the next keyframe on (asking the encoder for one now).
    pub fn connect(&self, inlet: Inlet) {
        *self.current.lock().unwrap() = Current {
            inlet: Some(inlet),
            start: None,
        };
        if let Some(video) = self.taps.first() {
            video.request_keyframe();
        }
    }

    /// Stops feeding the connection; it is the caller's to finish or close.
    pub fn disconnect(&self) -> Option<Inlet> {
        std::mem::take(&mut *self.current.lock().unwrap()).inlet
    }

    /// Leaves the session (an encoder nothing else uses stops).
    pub fn detach(&mut self, session: &SessionPipeline) {
        self.disconnect();
        for tap in self.taps.drain(..) {
            session.untap(tap);
        }
        // Sinks before their queues: while the session pauses on its way to a stop, an
        // appsink holds its queue's thread waiting to preroll, and stopping that queue first
        // would wait for that thread for ever.
        session.retire(self.elements.drain(..).rev());
    }
}

/// Hands one encoded buffer to the current connection, on its own timeline.
fn forward(current: &Mutex<Current>, stream: Encoded, pad: &gst::Pad, sample: &gst::Sample) {
    let Some(buffer) = sample.buffer() else {
        return;
    };
    let Some(pts) = buffer.pts() else { return };
    let at = running_time_on(pad, pts);
    let mut current = current.lock().unwrap();
    let Current { inlet, start } = &mut *current;
    let Some(inlet) = inlet.as_ref() else { return };
    let start = match (stream, *start) {
        (_, Some(s)) => s,
        // The connection begins with a keyframe, and audio waits for it.
        (Encoded::H264, None) if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) => {
            *start = Some(at);
            at
        }
        _ => return,
    };
    let Some(pts) = at.checked_sub(start) else {
        return;
    };
    let mut out = buffer.copy();
    {
        let out = out.make_mut();
        out.set_pts(pts);
        // Neither encoder reorders frames: decode time is presentation time.
        out.set_dts(pts);
    }
    inlet.push(stream, sample.caps(), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::session::tests::registry;
    use crate::session::CreateSession;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A session on its way to a stop pauses first, and a paused appsink holds its queue's
    /// thread until it plays again. The feed must still leave (an output stopping while its
    /// session ends once hung the server here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_leaves_while_its_sinks_hold_their_queues() {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        (config.video.width, config.video.height) = (256, 256);
        config.data_dir = data.path().to_owned();
        let registry = registry(config);
        let session = registry.create(CreateSession::default()).await.unwrap();
        let mut feed = Feed::attach(session.pipeline(), "held").unwrap();
        let (arrived, arrivals) = mpsc::channel();
        for sink in feed.elements.iter().filter(|e| e.is::<gst_app::AppSink>()) {
            let arrived = arrived.clone();
            sink.static_pad("sink")
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
                    let _ = arrived.send(pad.parent_element().unwrap().name());
                    gst::PadProbeReturn::Remove
                });
            sink.set_state(gst::State::Paused).unwrap();
        }
        let mut held: Vec<_> = (0..2)
            .map(|_| arrivals.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        held.sort();
        assert_eq!(held, ["held-Aac", "held-H264"]);

        let (done, detached) = mpsc::channel();
        let s = session.clone();
        std::thread::spawn(move || {
            feed.detach(s.pipeline());
            let _ = done.send(());
        });
        detached
            .recv_timeout(Duration::from_secs(10))
            .expect("the feed did not leave the session within 10 s");
        registry.end(&session.id, "done");
    }
}
