//! A session's bus as a `Stream` of messages for its task on the tokio runtime.
//!
//! GStreamer posts from streaming threads; a sync handler forwards each message into a channel
//! the session's task reads. The handler first runs `on_post` on the posting thread, for what
//! must happen before the next buffer moves (timing a `say`). Dropping the stream unsets the
//! handler, so nothing is left holding the channel or the session.

use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub struct BusStream {
    bus: gst::Bus,
    messages: mpsc::UnboundedReceiver<gst::Message>,
}

impl BusStream {
    pub fn new(bus: gst::Bus, on_post: impl Fn(&gst::Message) + Send + Sync + 'static) -> Self {
        let (tx, messages) = mpsc::unbounded_channel();
        bus.set_sync_handler(move |_, msg| {
            on_post(msg);
            let _ = tx.send(msg.clone());
            gst::BusSyncReply::Drop
        });
        Self { bus, messages }
    }
}

impl BusStream {
    /// A message already posted, if any, without waiting.
    pub fn try_next(&mut self) -> Option<gst::Message> {
        self.messages.try_recv().ok()
    }
}

impl Stream for BusStream {
    type Item = gst::Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.messages.poll_recv(cx)
    }
}

impl Drop for BusStream {
    fn drop(&mut self) {
        self.bus.unset_sync_handler();
    }
}
