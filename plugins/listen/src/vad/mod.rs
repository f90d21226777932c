//! `vad`: marks where a person speaks in the audio passing through (Silero VAD).
//!
//! ```text
//! gst-launch-1.0 -m pulsesrc ! audioconvert ! audioresample ! audio/x-raw,rate=16000,channels=1 \
//!     ! vad end-silence-ms=600 ! fakesink
//! ```
//!
//! The audio passes unchanged. Where a turn of speech is confirmed, and where it has ended, a
//! serialized `facecast/user-speech` event goes downstream ahead of the audio and the same
//! structure is posted on the bus (see `facecast_common::UserSpeechEvent`). The first frame
//! of speech is announced too, as a possible start (`confirmed=false`), and so is a possible
//! start that came to nothing: an application that must react within a frame (barge-in) acts
//! on these; a recogniser waits for the confirmed turn.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct Vad(ObjectSubclass<imp::Vad>) @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "vad", gst::Rank::NONE, Vad::static_type())
}
