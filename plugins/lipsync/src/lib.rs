//! facecast's lip-sync plugin: `lipsync`, audio + avatar video → a talking face.
//!
//! - [`LipSync`] (`lipsync`): the aggregator that owns time (one output frame per 1/fps of
//!   audio), and [`EngineKind`], the engine it draws with.
//! - [`engine`]: the seam between timing and pixels, and the viseme engine.
//! - [`timeline`]: the audio and phonemes kept around the frame being drawn.
//! - `mouth`: co-articulation and attack/release dynamics of the mouth.
//! - `audio_features`: mouth shapes estimated from audio without phoneme events.
//! - `mel`: the Wav2Lip mel spectrogram, and `resample` to its 16 kHz; `mel_window`: the
//!   model's mel input per frame, each row computed once.
//! - [`wav2lip_model`]: a Wav2Lip-class ONNX model; [`wav2lip_batcher`]: one per process, batched
//!   by `wav2lip_worker`'s threads; [`wav2lip_output`]: a batch's outputs, shared by its frames;
//!   [`wav2lip_frames`]: output frames composed on the GPU.

mod audio_features;
pub mod engine;
mod lipsync;
mod mel;
mod mel_window;
mod mouth;
mod resample;
pub mod timeline;
pub mod wav2lip_batcher;
pub mod wav2lip_frames;
pub mod wav2lip_model;
pub mod wav2lip_output;
mod wav2lip_worker;

pub use lipsync::{EngineKind, LipSync, UnknownEngine, LIPSYNC_ERROR_MESSAGE};

gst::plugin_define!(
    facecastlipsync,
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
    lipsync::register(plugin)
}
