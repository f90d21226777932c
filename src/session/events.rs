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
    /// A WHIP client started publishing its voice to the session.
    PublisherJoined {
        publisher: String,
    },
    PublisherLeft {
        publisher: String,
    },
    /// The person publishing started speaking (confirmed by the voice activity detector).
    UserSpeechStarted,
    /// … and their turn ended (after the end-of-turn silence); how long they spoke.
    UserSpeechEnded {
        duration_ms: u64,
    },
    /// What they said: partial results as they form, then the final one.
    Transcript {
        text: String,
        #[serde(rename = "final")]
        is_final: bool,
        language: String,
    },
    /// They spoke while the avatar was talking: it stopped. `after_ms`: from the onset of
    /// their speech (as the server received it) to where the avatar's voice was cut: its
    /// first frame of speech held the voice, confirmed speech interrupted the answer.
    BargeIn {
        after_ms: u64,
    },
    /// An output's media reaches its server (or file).
    OutputConnected {
        output: String,
    },
    /// An output's server refused or dropped it, or its file could not be written; the
    /// message never holds the output's URL or key.
    OutputError {
        output: String,
        message: String,
    },
    /// … and it tries again in `in_ms` (attempt 1, 2, …).
    OutputReconnecting {
        output: String,
        attempt: u64,
        in_ms: u64,
    },
    /// The output stopped: on request, with its session, or (`error`) for good.
    OutputStopped {
        output: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
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
