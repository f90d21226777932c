//! In-band events that travel with the audio, so that what they describe stays aligned with the
//! samples it describes through `tee`, `queue` and any element that forwards serialized events.
//!
//! - `facecast/phoneme` — sent by `speechsynth` just before the audio buffer in which the phoneme
//!   starts. `pts` and `duration` are in the same time base as that stream's buffer timestamps
//!   (the stream's segment), so a receiver converts them with the pad's segment like buffer PTS.
//! - `facecast/emotion` — "from here on, look like this"; serialized, so it takes effect at the
//!   point of the stream where it was sent. Anyone may send it (an application with
//!   `pad.push_event`, or `speechsynth` when an utterance carries an emotion).
//! - `facecast/user-speech` — sent by `vad` where a person starts or stops speaking in the audio
//!   it hears (also posted on the bus as an element message with the same structure).
//! - `facecast/transcript` — sent by `asr` with what was said (also posted on the bus).

use crate::emotion::Emotion;
use crate::viseme::Viseme;

pub const PHONEME_EVENT: &str = "facecast/phoneme";
pub const EMOTION_EVENT: &str = "facecast/emotion";
pub const USER_SPEECH_EVENT: &str = "facecast/user-speech";
pub const TRANSCRIPT_EVENT: &str = "facecast/transcript";

/// Element message (on the bus) `speechsynth` posts when an utterance starts sounding:
/// fields `text` (string), `running-time` (u64 ns, where its first sample plays) and `duration`
/// (u64 ns, how long it lasts).
pub const SPEECH_STARTED_MESSAGE: &str = "facecast/speech-started";
/// Element message posted when an utterance stops sounding: `text`, `running-time`, `duration`
/// (how long it sounded), and `interrupted` (bool: cut short by `interrupt`).
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

/// A person started or stopped speaking, in the time base of the audio's buffer timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UserSpeechEvent {
    /// A frame of speech with no turn open: perhaps the start of one (`confirmed` false).
    /// Announced so that a listener can react before the confirmation (barge-in holds the
    /// avatar's voice here); most wait for `Started`.
    Possible { start: gst::ClockTime },
    /// The possible start at `start` was not speech after all (a click, a breath).
    Dismissed { start: gst::ClockTime },
    /// Speech was confirmed (after `vad`'s minimum speech); it began at `start`. `from` is
    /// where the audio worth keeping begins (`start` minus the pre-roll).
    Started {
        start: gst::ClockTime,
        from: gst::ClockTime,
    },
    /// The end-of-turn silence passed; the speech ended at `end`.
    Ended {
        start: gst::ClockTime,
        end: gst::ClockTime,
    },
}

impl UserSpeechEvent {
    pub fn structure(&self) -> gst::Structure {
        match *self {
            UserSpeechEvent::Possible { start } => gst::Structure::builder(USER_SPEECH_EVENT)
                .field("speaking", true)
                .field("confirmed", false)
                .field("start", start.nseconds())
                .build(),
            UserSpeechEvent::Dismissed { start } => gst::Structure::builder(USER_SPEECH_EVENT)
                .field("speaking", false)
                .field("confirmed", false)
                .field("start", start.nseconds())
                .build(),
            UserSpeechEvent::Started { start, from } => gst::Structure::builder(USER_SPEECH_EVENT)
                .field("speaking", true)
                .field("confirmed", true)
                .field("start", start.nseconds())
                .field("from", from.nseconds())
                .build(),
            UserSpeechEvent::Ended { start, end } => gst::Structure::builder(USER_SPEECH_EVENT)
                .field("speaking", false)
                .field("confirmed", true)
                .field("start", start.nseconds())
                .field("end", end.nseconds())
                .build(),
        }
    }

    pub fn to_event(&self) -> gst::Event {
        gst::event::CustomDownstream::new(self.structure())
    }

    /// `None` when the structure is not a user-speech event or message.
    pub fn from_structure(s: &gst::StructureRef) -> Option<Result<Self, EventError>> {
        if s.name() != USER_SPEECH_EVENT {
            return None;
        }
        let time = |field: &'static str| {
            s.get::<u64>(field)
                .map(gst::ClockTime::from_nseconds)
                .map_err(|_| EventError::MissingField {
                    event: USER_SPEECH_EVENT,
                    field,
                })
        };
        Some((|| {
            let speaking = s
                .get::<bool>("speaking")
                .map_err(|_| EventError::MissingField {
                    event: USER_SPEECH_EVENT,
                    field: "speaking",
                })?;
            // Without `confirmed` (older senders), a turn is meant.
            let confirmed = s.get::<bool>("confirmed").unwrap_or(true);
            Ok(if !confirmed {
                let start = time("start")?;
                if speaking {
                    UserSpeechEvent::Possible { start }
                } else {
                    UserSpeechEvent::Dismissed { start }
                }
            } else if speaking {
                UserSpeechEvent::Started {
                    start: time("start")?,
                    from: time("from")?,
                }
            } else {
                UserSpeechEvent::Ended {
                    start: time("start")?,
                    end: time("end")?,
                }
            })
        })())
    }

    /// `None` when the event is not a user-speech event.
    pub fn parse(event: &gst::EventRef) -> Option<Result<Self, EventError>> {
        Self::from_structure(event.structure()?)
    }
}

/// What a person said, recognised from one utterance (or a part of a long one).
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptEvent {
    pub text: String,
    /// `false` for a partial result that a later one replaces.
    pub is_final: bool,
    /// The language it was recognised in (BCP 47 or ISO 639-1, as configured).
    pub language: String,
    /// Where the recognised audio begins and ends (buffer timestamps).
    pub start: gst::ClockTime,
    pub end: gst::ClockTime,
}

impl TranscriptEvent {
    pub fn structure(&self) -> gst::Structure {
        gst::Structure::builder(TRANSCRIPT_EVENT)
            .field("text", self.text.as_str())
            .field("final", self.is_final)
            .field("language", self.language.as_str())
            .field("start", self.start.nseconds())
            .field("end", self.end.nseconds())
            .build()
    }

    pub fn to_event(&self) -> gst::Event {
        gst::event::CustomDownstream::new(self.structure())
    }

    /// `None` when the structure is not a transcript.
    pub fn from_structure(s: &gst::StructureRef) -> Option<Result<Self, EventError>> {
        if s.name() != TRANSCRIPT_EVENT {
            return None;
        }
        let missing = |field| EventError::MissingField {
            event: TRANSCRIPT_EVENT,
            field,
        };
        Some((|| {
            Ok(TranscriptEvent {
                text: s.get::<String>("text").map_err(|_| missing("text"))?,
                is_final: s.get::<bool>("final").map_err(|_| missing("final"))?,
                language: s.get::<String>("language").unwrap_or_default(),
                start: gst::ClockTime::from_nseconds(
                    s.get::<u64>("start").map_err(|_| missing("start"))?,
                ),
                end: gst::ClockTime::from_nseconds(
                    s.get::<u64>("end").map_err(|_| missing("end"))?,
                ),
            })
        })())
    }

    /// `None` when the event is not a transcript.
    pub fn parse(event: &gst::EventRef) -> Option<Result<Self, EventError>> {
        Self::from_structure(event.structure()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_events_round_trip() {
        gst::init().unwrap();
        let ms = gst::ClockTime::from_mseconds;
        for e in [
            UserSpeechEvent::Possible { start: ms(1200) },
            UserSpeechEvent::Dismissed { start: ms(1200) },
            UserSpeechEvent::Started {
                start: ms(1200),
                from: ms(900),
            },
            UserSpeechEvent::Ended {
                start: ms(1200),
                end: ms(2500),
            },
        ] {
            assert_eq!(UserSpeechEvent::parse(&e.to_event()).unwrap().unwrap(), e);
        }
        let t = TranscriptEvent {
            text: "book a table".into(),
            is_final: true,
            language: "en".into(),
            start: ms(900),
            end: ms(2500),
        };
        assert_eq!(TranscriptEvent::parse(&t.to_event()).unwrap().unwrap(), t);
        assert!(TranscriptEvent::parse(&t.to_event()).is_some());
        assert!(UserSpeechEvent::parse(&t.to_event()).is_none());
    }

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
