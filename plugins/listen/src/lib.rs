//! facecast's listening plugin: what a person says to the avatar.
//!
//! - [`Vad`] (`vad`): where speech starts and ends, from Silero VAD (`silero` runs the model,
//!   `turns` decides the turns from its probabilities).
//! - [`Asr`] (`asr`): the words of each turn, from an OpenAI-compatible transcription
//!   endpoint or the embedded pocketsphinx recogniser.

mod asr;
mod silero;
mod turns;
mod vad;

pub use asr::{Asr, AsrEngine, ASR_ERROR_MESSAGE};
pub use silero::MODEL_FILE as VAD_MODEL_FILE;
pub use vad::Vad;

gst::plugin_define!(
    facecastlisten,
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
    vad::register(plugin)?;
    asr::register(plugin)
}
