//! The conversation layer: what turns a language model's token stream into speech the avatar
//! can say, sentence by sentence, with a mood per sentence, and what it remembers.
//!
//! - [`sse`]: the `text/event-stream` framing of OpenAI-compatible streaming responses, and the
//!   content deltas inside it.
//! - [`sentences`]: splits streamed text into sentences as soon as each is complete.
//! - [`mood`]: the emotion a sentence shows, from an emitted tag or a small lexicon.
//! - [`llm`]: the streaming client for OpenAI-compatible endpoints.
//! - [`history`]: conversation memory: the budget of turns sent back, and Redis.
//! - [`assistant`]: what answers: the model, personas and memory, built from the configuration.
//! - [`chat`]: one session's conversation: the running reply, speaking it, remembering it.
//! - [`scripted`]: a scripted OpenAI-compatible server, for tests and `facecast bench --chat`.
//!
//! A conversation knows nothing of sessions, pipelines or HTTP: it talks through the narrow
//! [`Speaker`] trait, which a session implements.

pub mod assistant;
pub mod chat;
pub mod history;
pub mod llm;
pub mod mood;
pub mod scripted;
pub mod sentences;
pub mod sse;

use facecast_common::Emotion;

/// What a conversation tells the people in it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConversationEvent {
    /// A piece of the answer, as it streams in.
    ReplyDelta { text: String },
    /// The whole answer, once the stream ended.
    ReplyDone { text: String },
    /// Something went wrong (the model, the memory); what was said stays said.
    Error { message: String },
}

/// What a conversation needs of the session it runs in.
pub trait Speaker: Send + Sync + 'static {
    /// Queues `text` to be said, with the mood it starts with.
    fn say(&self, text: &str, mood: Option<(Emotion, f64)>);
    /// Tells the session's clients.
    fn emit(&self, event: ConversationEvent);
    /// The language the session speaks (for apologies).
    fn language(&self) -> &str;
}
