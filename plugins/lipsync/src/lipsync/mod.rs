//! `lipsync`: audio + avatar video → the avatar, talking.
//!
//! An aggregator with two sink pads, `audio` (raw audio, any rate, S16LE or F32LE) and `video`
//! (the avatar, RGBA, e.g. from `avatarsrc`), and one video `src` pad.
//!
//! **Time follows the audio.** Output frame *n* covers `[t0 + n/fps, t0 + (n+1)/fps)` of the
//! audio's running time, where `t0` is where the audio starts: exactly one frame per 1/fps of
//! audio, PTS strictly increasing with a constant duration, no gap where one utterance ends and
//! the next begins (a gap in the audio is read as silence and filled with idle frames). Each
//! output frame starts from the latest avatar frame at or before its time. The stream ends when
//! the audio ends. In a live pipeline, frames keep coming through silence when no audio arrives.
//!
//! **The mouth** comes from the engine (`engine=viseme`): from `facecast/phoneme` events when
//! the audio carries them (exact timing), otherwise from the audio's loudness and spectrum.
//! `facecast/emotion` events on the audio pad set the expression, eased in over a few frames.
//! Output frames carry the face meta with the pose they show.
//!
//! **Live, one failed batch never ends the stream.** A frame the engine failed is replaced by
//! the previous frame (`frames-repeated` counts them), and one `facecast/lipsync-error` element
//! message (field `message`) is posted per run of failed frames. With `frame-budget` ms set
//! (default 0: off), a frame not finished within that time of being handed over is replaced
//! too. The budget counts from the hand-over, and each late frame holds the element for the
//! whole budget: a stream whose frames all take longer falls to 1000/budget frames a second
//! (seen on a GPU, see README), so set it only well above the engine's latency. Offline (not
//! live), every frame is waited for and a failure is an error.
//!
//! ```text
//! gst-launch-1.0 lipsync name=ls ! videoconvert ! autovideosink \
//!     avatarsrc ! ls.video \
//!     speechsynth text="Hello there" ! tee name=t ! queue ! ls.audio  t. ! queue ! audioconvert ! autoaudiosink
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

pub use imp::LIPSYNC_ERROR_MESSAGE;

/// How the talking face is produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFacecastLipSyncEngine")]
pub enum EngineKind {
    /// Mouth blendshapes from phonemes or audio; redraws the parametric avatar.
    #[default]
    #[enum_value(
        name = "Viseme: blendshapes from phonemes/audio, parametric avatar",
        nick = "viseme"
    )]
    Viseme,
    /// A Wav2Lip-class ONNX model repaints the face of photo and video avatars.
    #[enum_value(
        name = "Wav2Lip: an ONNX model repaints the mouth of photo/video avatars",
        nick = "wav2lip"
    )]
    Wav2lip,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Viseme => "viseme",
            EngineKind::Wav2lip => "wav2lip",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An engine name that is neither `viseme` nor `wav2lip`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown engine '{0}' (expected viseme or wav2lip)")]
pub struct UnknownEngine(pub String);

impl std::str::FromStr for EngineKind {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viseme" => Ok(EngineKind::Viseme),
            "wav2lip" => Ok(EngineKind::Wav2lip),
            _ => Err(UnknownEngine(s.to_owned())),
        }
    }
}

glib::wrapper! {
    pub struct LipSync(ObjectSubclass<imp::LipSync>) @extends gst_base::Aggregator, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "lipsync",
        gst::Rank::NONE,
        LipSync::static_type(),
    )
}
