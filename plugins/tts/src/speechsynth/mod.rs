//! `speechsynth`: text in, speech out, with every phoneme announced in-band.
//!
//! Text arrives on the `sink` pad (`text/x-raw, format=utf8`, one utterance per buffer), from the
//! `text` property (for `gst-launch-1.0`), or from the `say` action signal. Utterances are spoken
//! in order, back to back: the audio timeline has no gaps between them. Audio leaves as
//! `audio/x-raw, format=S16LE, channels=1` at the engine's rate (22050 Hz for espeak-ng).
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
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

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
