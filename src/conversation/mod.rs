//! The conversation layer: what turns a language model's token stream into speech the avatar
//! can say, sentence by sentence, with a mood per sentence, and what it remembers.
//!
//! - [`sse`]: the `text/event-stream` framing of OpenAI-compatible streaming responses, and the
//!   content deltas inside it.
//! - [`sentences`]: splits streamed text into sentences as soon as each is complete.
//! - [`mood`]: the emotion a sentence shows, from an emitted tag or a small lexicon.
//! - [`llm`]: the streaming client for OpenAI-compatible endpoints.
//! - [`history`]: conversation memory: the budget of turns sent back, and Redis.
//! - [`chat`]: one session's conversation: the running reply, speaking it, remembering it.
//! - [`scripted`]: a scripted OpenAI-compatible server, for tests and `facecast bench --chat`.
//!

pub mod chat;
pub mod history;
pub mod llm;
pub mod mood;
pub mod scripted;
pub mod sentences;
pub mod sse;
