//! facecast's speech plugin: `speechsynth`, text to speech with exact phoneme timing.
//!
//! - [`espeak`]: the espeak-ng engine (process-wide, serialised), its phoneme events, and its
//!   phonemizer.
//! - [`piper`]: Piper neural voices (ONNX, through `ort`), phonemes and timing from espeak-ng.
//! - `speaker`: either of them, behind one interface.
//! - `pauses`: where an utterance is silent, so that its phonemes end where their sound does.
//! - [`SpeechSynth`] (`speechsynth`): the GStreamer element that queues utterances and streams
//!   their audio with `facecast/phoneme` events in-band, and [`SpeechEngine`], which engine speaks.

pub mod espeak;
mod pauses;
pub mod piper;
mod speaker;
mod speechsynth;

pub use speechsynth::{SpeechEngine, SpeechSynth, UnknownSpeechEngine};

gst::plugin_define!(
    facecasttts,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

fn plugin_init(plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> {
    speechsynth::register(plugin)
}
