//! The voice a planned session speaks with, checked before anything is built: an espeak-ng
//! voice must exist; a Piper voice is loaded (once per process, so this blocks: call it off the
//! async runtime) and must speak the session's language.

use crate::config::Config;
use gstfacecasttts::piper::PiperVoice;
use gstfacecasttts::SpeechEngine;

#[derive(Debug, Clone, thiserror::Error)]
pub enum VoiceError {
    #[error("{0}")]
    Unknown(String),
    #[error("the Piper voice {name} speaks '{speaks}', but this session's language is '{lang}'; use a voice of that language, or tts espeak")]
    LanguageMismatch {
        name: String,
        speaks: String,
        lang: String,
    },
}

/// The voice the `speechsynth` element gets: the espeak-ng voice as asked, or the checked
/// Piper voice's file (so the element speaks the very voice checked here).
pub fn resolve(
    config: &Config,
    tts: SpeechEngine,
    lang: &str,
    voice: Option<&str>,
) -> Result<Option<String>, VoiceError> {
    match tts {
        SpeechEngine::Espeak => {
            gstfacecasttts::espeak::check_voice(voice.unwrap_or(lang))
                .map_err(|e| VoiceError::Unknown(e.to_string()))?;
            Ok(voice.map(str::to_owned))
        }
        SpeechEngine::Piper => {
            let name = voice.unwrap_or(&config.speech.piper_voice);
            let path = gstfacecasttts::piper::locate(name, &config.models_dir);
            let loaded =
                PiperVoice::get_at(&path).map_err(|e| VoiceError::Unknown(e.to_string()))?;
            let speaks = loaded.language();
            let base = |l: &str| l.split(['-', '_']).next().unwrap_or("").to_owned();
            if base(speaks) != base(lang) {
                return Err(VoiceError::LanguageMismatch {
                    name: name.to_owned(),
                    speaks: speaks.to_owned(),
                    lang: lang.to_owned(),
                });
            }
            Ok(Some(path.to_string_lossy().into_owned()))
        }
    }
}
