//! `speechsynth`: text in, speech out, with every phoneme announced in-band.
//!
//! Text arrives on the `sink` pad (`text/x-raw, format=utf8`, one utterance per buffer), from the
//! `text` property (for `gst-launch-1.0`), or from the `say` action signal. Utterances are spoken
//! in order, back to back: the audio timeline has no gaps between them. Audio leaves as
//! `audio/x-raw, format=S16LE, channels=1` at the voice's rate (22050 Hz for espeak-ng and
//! Piper's medium voices).
//!
//! `engine=espeak` (default) speaks with espeak-ng; `engine=piper voice=NAME` with a Piper
//! neural voice (`NAME.onnx` + `.onnx.json`, a path or a name looked up in the models folder),
//! whose phonemes and their timing come from espeak-ng.
//!
//! Before the audio buffer in which a phoneme starts, a serialized custom downstream event
//! `facecast/phoneme` ([`facecast_common::PhonemeEvent`]) carries its exact start and duration in
//! the stream's time base and its viseme, so `lipsync` can move the lips on the phoneme's sample,
//! even after `tee` and `queue`. `push-emotion` puts a `facecast/emotion` event into the same
//! ordered stream, so a mood starts with the sentence it belongs to.
//!
//! End of stream: after the `text` property's utterance when the sink pad is not linked, or after
//! upstream's EOS. `interrupt` drops queued and current speech at once.
//!
//! ```text
//! gst-launch-1.0 speechsynth text="Hello there" language=en ! audioconvert ! autoaudiosink
//! gst-launch-1.0 speechsynth engine=piper voice=en_US-joe-medium text="Hello there" ! \
//!     audioconvert ! autoaudiosink
//! ```

use facecast_common::Emotion;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

mod ahead;
mod imp;

/// Which synthesiser speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum, serde::Deserialize)]
#[repr(u32)]
#[enum_type(name = "GstFacecastSpeechEngine")]
#[serde(rename_all = "lowercase")]
pub enum SpeechEngine {
    /// espeak-ng: light, every language it knows, robotic.
    #[default]
    #[enum_value(name = "espeak-ng: formant voices, many languages", nick = "espeak")]
    Espeak,
    /// A Piper neural voice (ONNX): natural, one language per voice.
    #[enum_value(name = "Piper: neural ONNX voices", nick = "piper")]
    Piper,
}

impl SpeechEngine {
    pub fn name(self) -> &'static str {
        match self {
            SpeechEngine::Espeak => "espeak",
            SpeechEngine::Piper => "piper",
        }
    }
}

impl std::fmt::Display for SpeechEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A speech engine name that is neither `espeak` nor `piper`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown tts '{0}' (expected espeak or piper)")]
pub struct UnknownSpeechEngine(pub String);

impl std::str::FromStr for SpeechEngine {
    type Err = UnknownSpeechEngine;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "espeak" | "espeak-ng" => Ok(SpeechEngine::Espeak),
            "piper" => Ok(SpeechEngine::Piper),
            _ => Err(UnknownSpeechEngine(s.to_owned())),
        }
    }
}

glib::wrapper! {
    pub struct SpeechSynth(ObjectSubclass<imp::SpeechSynth>) @extends gst::Element, gst::Object;
}

/// What an application that links `speechsynth` calls, checked by the compiler (the action
/// signals `say`, `interrupt` and `push-emotion` do the same for gst-launch and bindings).
impl SpeechSynth {
    /// Queues one utterance; utterances are spoken in order, back to back.
    pub fn say(&self, text: &str) {
        self.imp().say(text.to_owned());
    }

    /// Drops the current and every queued utterance at once.
    pub fn interrupt(&self) {
        self.imp().interrupt();
    }

    /// From the next queued utterance on, look like `emotion` at `intensity` (0..=1).
    pub fn push_emotion(&self, emotion: Emotion, intensity: f64) {
        self.imp().push_emotion(emotion, intensity);
    }
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "speechsynth",
        gst::Rank::NONE,
        SpeechSynth::static_type(),
    )
}
