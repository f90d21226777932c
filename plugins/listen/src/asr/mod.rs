//! `asr`: the words of each turn of speech that `vad` marks.
//!
//! ```text
//! gst-launch-1.0 -m filesrc location=question.wav ! wavparse ! audioconvert ! audioresample \
//!     ! audio/x-raw,rate=16000,channels=1 ! vad ! asr engine=pocketsphinx ! fakesink
//! ```
//!
//! The audio passes unchanged. Each turn (from the `facecast/user-speech` start event's `from`,
//! pre-roll included, to its end) goes to the recogniser; what it hears goes downstream as
//! `facecast/transcript` events and is posted on the bus with the same structure
//! (`facecast_common::TranscriptEvent`), partial results first where the engine has them. A
//! turn longer than `max-utterance-secs` is cut there and recognised in parts. A failed
//! recognition is a warning on the bus (`facecast/asr-error` element message too), and the
//! next turn is tried again.
//!
//! - `openai`: any OpenAI-compatible `/v1/audio/transcriptions` endpoint (whisper.cpp server,
//!   faster-whisper/Speaches, vLLM); each turn is posted as a WAV file.
//! - `pocketsphinx`: offline US English with Debian's model, through its GStreamer element;
//!   partial hypotheses as the turn goes on.

use gst::glib;
use gst::prelude::*;

mod imp;
mod openai;
mod pocketsphinx;
mod utterance;

/// Which recogniser `asr` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[enum_type(name = "FacecastAsrEngine")]
pub enum AsrEngine {
    /// The embedded offline English recogniser (needs no set-up).
    #[default]
    #[enum_value(
        name = "pocketsphinx: offline US English (Debian's model)",
        nick = "pocketsphinx"
    )]
    Pocketsphinx,
    #[enum_value(
        name = "openai: an OpenAI-compatible /v1/audio/transcriptions endpoint",
        nick = "openai"
    )]
    Openai,
}

impl AsrEngine {
    pub fn name(self) -> &'static str {
        match self {
            AsrEngine::Pocketsphinx => "pocketsphinx",
            AsrEngine::Openai => "openai",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown speech recogniser '{0}' (openai or pocketsphinx)")]
pub struct UnknownAsrEngine(pub String);

impl std::str::FromStr for AsrEngine {
    type Err = UnknownAsrEngine;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pocketsphinx" => Ok(AsrEngine::Pocketsphinx),
            "openai" => Ok(AsrEngine::Openai),
            other => Err(UnknownAsrEngine(other.into())),
        }
    }
}

/// The bus message a failed recognition posts: field `message` (string).
pub const ASR_ERROR_MESSAGE: &str = "facecast/asr-error";

glib::wrapper! {
    pub struct Asr(ObjectSubclass<imp::Asr>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "asr", gst::Rank::NONE, Asr::static_type())
}
