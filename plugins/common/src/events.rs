//! In-band events that travel with the audio, so that what they describe stays aligned with the
//! samples it describes through `tee`, `queue` and any element that forwards serialized events.
//!
//! - `facecast/phoneme` — sent by `speechsynth` just before the audio buffer in which the phoneme
//!   starts. `pts` and `duration` are in the same time base as that stream's buffer timestamps
//!   (the stream's segment), so a receiver converts them with the pad's segment like buffer PTS.
//! - `facecast/emotion` — "from here on, look like this"; serialized, so it takes effect at the
//!   point of the stream where it was sent. Anyone may send it (an application with
//!   `pad.push_event`, or `speechsynth` when an utterance carries an emotion).

use crate::emotion::Emotion;
use crate::viseme::Viseme;

pub const PHONEME_EVENT: &str = "facecast/phoneme";
pub const EMOTION_EVENT: &str = "facecast/emotion";

/// Element message (on the bus) `speechsynth` posts when an utterance starts sounding:
/// fields `text` (string) and `running-time` (u64 ns, where its first sample plays).
pub const SPEECH_STARTED_MESSAGE: &str = "facecast/speech-started";
/// Element message posted when an utterance stops sounding: `text`, `running-time`, and
/// `interrupted` (bool: cut short by `interrupt`).
pub const SPEECH_ENDED_MESSAGE: &str = "facecast/speech-ended";

/// A malformed facecast event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("{event} event lacks field '{field}' or has the wrong type")]
    MissingField {
        event: &'static str,
        field: &'static str,
    },
    #[error(transparent)]
    Emotion(#[from] crate::emotion::UnknownEmotion),
}

/// One phoneme with its exact position in the audio stream.
#[derive(Debug, Clone, PartialEq)]
pub struct PhonemeEvent {
    pub pts: gst::ClockTime,
    pub duration: gst::ClockTime,
    /// The phoneme in IPA, as the TTS engine named it.
    pub phoneme: String,
    pub viseme: Viseme,
}

impl PhonemeEvent {
    pub fn to_event(&self) -> gst::Event {
        let s = gst::Structure::builder(PHONEME_EVENT)
            .field("pts", self.pts.nseconds())
            .field("duration", self.duration.nseconds())
            .field("phoneme", self.phoneme.as_str())
            .field("viseme", self.viseme.name())
            .build();
        gst::event::CustomDownstream::new(s)
    }

    /// `None` when the event is not a phoneme event.
    pub fn parse(event: &gst::EventRef) -> Option<Result<Self, EventError>> {
        let s = event.structure().filter(|s| s.name() == PHONEME_EVENT)?;
        let missing = |field| EventError::MissingField {
            event: PHONEME_EVENT,
            field,
        };
        Some((|| {
            let phoneme: String = s.get("phoneme").map_err(|_| missing("phoneme"))?;
            let viseme = s
                .get::<&str>("viseme")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| Viseme::from_ipa(&phoneme));
            Ok(PhonemeEvent {
                pts: gst::ClockTime::from_nseconds(s.get("pts").map_err(|_| missing("pts"))?),
                duration: gst::ClockTime::from_nseconds(
                    s.get("duration").map_err(|_| missing("duration"))?,
                ),
                phoneme,
                viseme,
            })
        })())
    }
}

/// "Show this emotion at this intensity (0..=1) from here on."
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmotionEvent {
    pub emotion: Emotion,
    pub intensity: f32,
}

impl EmotionEvent {
    pub fn to_event(&self) -> gst::Event {
        let s = gst::Structure::builder(EMOTION_EVENT)
            .field("emotion", self.emotion.name())
            .field("intensity", self.intensity as f64)
            .build();
        gst::event::CustomDownstream::new(s)
    }

    /// `None` when the event is not an emotion event.
    pub fn parse(event: &gst::EventRef) -> Option<Result<Self, EventError>> {
        let s = event.structure().filter(|s| s.name() == EMOTION_EVENT)?;
        Some((|| {
            let emotion = s
                .get::<&str>("emotion")
                .map_err(|_| EventError::MissingField {
                    event: EMOTION_EVENT,
                    field: "emotion",
                })?
                .parse()?;
            let intensity = s.get::<f64>("intensity").unwrap_or(1.0) as f32;
            Ok(EmotionEvent {
                emotion,
                intensity: intensity.clamp(0.0, 1.0),
            })
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        gst::init().unwrap();
        let p = PhonemeEvent {
            pts: gst::ClockTime::from_mseconds(184),
            duration: gst::ClockTime::from_mseconds(116),
            phoneme: "oʊ".into(),
            viseme: Viseme::OH,
        };
        let ev = p.to_event();
        assert!(ev.is_serialized());
        assert_eq!(PhonemeEvent::parse(&ev).unwrap().unwrap(), p);
        assert!(EmotionEvent::parse(&ev).is_none());

        let e = EmotionEvent {
            emotion: Emotion::Concerned,
            intensity: 0.5,
        };
        assert_eq!(EmotionEvent::parse(&e.to_event()).unwrap().unwrap(), e);

        let bad = gst::event::CustomDownstream::new(
            gst::Structure::builder(EMOTION_EVENT)
                .field("emotion", "furious")
                .build(),
        );
        assert!(EmotionEvent::parse(&bad).unwrap().is_err());
    }
}
