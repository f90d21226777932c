//! Who speaks: espeak-ng's formant voices, or a Piper neural voice. Both give the same thing —
//! 16-bit mono audio and the phonemes in it, each with the sample it starts at — so
//! `speechsynth` streams either the same way.

use crate::espeak::{self, TtsError, Utterance, VoiceParams};
use crate::piper::{PiperError, PiperVoice};
use std::sync::Arc;

/// The pace `speed` 1.0 stands for, in espeak-ng's words per minute.
const NORMAL_RATE: f32 = 175.0;

pub enum Speaker {
    Espeak(VoiceParams),
    Piper {
        voice: Arc<PiperVoice>,
        /// 1.0: the voice's own pace.
        speed: f32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(transparent)]
    Espeak(#[from] TtsError),
    #[error(transparent)]
    Piper(#[from] PiperError),
}

impl SynthError {
    /// Nothing to say: not a failure, the utterance is skipped.
    pub fn is_empty_text(&self) -> bool {
        matches!(
            self,
            SynthError::Espeak(TtsError::EmptyText)
                | SynthError::Piper(PiperError::Tts(TtsError::EmptyText))
        )
    }
}

impl Speaker {
    /// An espeak-ng voice, checked.
    pub fn espeak(params: VoiceParams) -> Result<Self, SynthError> {
        espeak::check_voice(&params.voice)?;
        Ok(Speaker::Espeak(params))
    }

    /// A Piper voice (name or path), loaded once per process; `rate` in words per minute.
    pub fn piper(voice: &str, rate: u32) -> Result<Self, SynthError> {
        Ok(Speaker::Piper {
            voice: PiperVoice::get(voice)?,
            speed: rate as f32 / NORMAL_RATE,
        })
    }

    pub fn sample_rate(&self) -> Result<u32, SynthError> {
        match self {
            Speaker::Espeak(_) => Ok(espeak::sample_rate()?),
            Speaker::Piper { voice, .. } => Ok(voice.sample_rate()),
        }
    }

    pub fn synthesize(&self, text: &str) -> Result<Utterance, SynthError> {
        match self {
            Speaker::Espeak(params) => Ok(espeak::synthesize(text, params)?),
            Speaker::Piper { voice, speed } => Ok(voice.synthesize(text, *speed)?),
        }
    }
}
