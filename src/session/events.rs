//! What a session tells its clients over the events WebSocket.

use crate::conversation::ConversationEvent;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    SpeechStarted {
        text: String,
    },
    SpeechEnded {
        text: String,
        interrupted: bool,
    },
    ViewerJoined {
        viewer: String,
    },
    ViewerLeft {
        viewer: String,
    },
    Error {
        message: String,
    },
    SessionEnded {
        reason: String,
    },
    /// A piece of the language model's answer, as it streams in.
    ReplyDelta {
        text: String,
    },
    /// The whole answer, once the stream ended.
    ReplyDone {
        text: String,
    },
}

impl From<ConversationEvent> for SessionEvent {
    fn from(e: ConversationEvent) -> Self {
        match e {
            ConversationEvent::ReplyDelta { text } => SessionEvent::ReplyDelta { text },
            ConversationEvent::ReplyDone { text } => SessionEvent::ReplyDone { text },
            ConversationEvent::Error { message } => SessionEvent::Error { message },
        }
    }
}
