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

use gst::glib;
use gst::prelude::*;

mod ahead;
mod imp;

/// Which synthesiser speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstFacecastSpeechEngine")]
pub enum SpeechEngine {
    /// espeak-ng: light, every language it knows, robotic.
    #[default]
    #[enum_value(name = "espeak-ng: formant voices, many languages", nick = "espeak")]
    Espeak,
    /// A Piper neural voice (ONNX): natural, one language per voice.
    #[enum_value(name = "Piper: neural ONNX voices", nick = "piper")]
    Piper,
}

glib::wrapper! {
    pub struct SpeechSynth(ObjectSubclass<imp::SpeechSynth>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "speechsynth",
        gst::Rank::NONE,
        SpeechSynth::static_type(),
    )
}
