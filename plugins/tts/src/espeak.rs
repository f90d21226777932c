//! espeak-ng through libespeak-ng, with the phoneme events it reports.
//!
//! espeak-ng keeps its voice, parameters and output buffer in process-global state, so one
//! synthesis runs at a time in a process: [`synthesize`] takes a process-wide lock for the whole
//! call. Synthesis runs many times faster than real time, so sessions queue for a few
//! milliseconds, not for the length of each other's sentences.
//!
//! Timing comes from espeak-ng itself: with `espeakINITIALIZE_PHONEME_EVENTS` every phoneme is
//! reported with `sample`, the index of the output sample at which it starts. Nothing is guessed.

use espeakng_sys as sys;
use std::cell::RefCell;
use std::ffi::{c_int, c_short, c_void, CStr, CString};
use std::sync::Mutex;

/// How to speak.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceParams {
    /// espeak-ng voice or language name: `en`, `en-us`, `fa`, `de`, `en+f3`, …
    pub voice: String,
    /// Words per minute, 80..=450.
    pub rate: u32,
    /// Base pitch, 0..=100 (50 is the voice's normal).
    pub pitch: u32,
}

impl Default for VoiceParams {
    fn default() -> Self {
        Self {
            voice: "en".into(),
            rate: sys::espeakRATE_NORMAL,
            pitch: 50,
        }
    }
}

/// A phoneme and the output sample at which it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedPhoneme {
    pub sample: u64,
    /// IPA, e.g. `aʊ`.
    pub ipa: String,
}

/// One synthesised utterance: 16-bit mono PCM and its phonemes.
#[derive(Debug, Clone, Default)]
pub struct Utterance {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
    pub phonemes: Vec<TimedPhoneme>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TtsError {
    #[error("nothing to say: the text is empty")]
    EmptyText,
    #[error("text contains a NUL byte")]
    NulInText,
    #[error("espeak-ng has no voice for language '{0}'")]
    UnknownVoice(String),
    #[error("espeak-ng could not start: is the package espeak-ng-data installed?")]
    Init,
    #[error("espeak-ng failed to synthesise the text (error {0})")]
    Synth(i32),
}

struct Engine {
    sample_rate: u32,
}

/// The process's single espeak-ng instance; `None` until first used.
static ENGINE: Mutex<Option<Engine>> = Mutex::new(None);

thread_local! {
    /// Where the synthesis callback (which runs on the synthesising thread) puts its output.
    static COLLECTOR: RefCell<Option<Utterance>> = const { RefCell::new(None) };
}

unsafe extern "C" fn synth_callback(
    wav: *mut c_short,
    numsamples: c_int,
    events: *mut sys::espeak_EVENT,
) -> c_int {
    COLLECTOR.with(|c| {
        let mut c = c.borrow_mut();
        let Some(utt) = c.as_mut() else { return };
        if !wav.is_null() && numsamples > 0 {
            // SAFETY: espeak-ng hands us `numsamples` valid samples for the duration of the call.
            let samples = unsafe { std::slice::from_raw_parts(wav, numsamples as usize) };
            utt.samples.extend_from_slice(samples);
        }
        let mut ev = events;
        while !ev.is_null() {
            // SAFETY: the list is terminated by an event of type LIST_TERMINATED.
            let e = unsafe { &*ev };
            if e.type_ == sys::espeak_EVENT_TYPE_espeakEVENT_LIST_TERMINATED {
                break;
            }
            if e.type_ == sys::espeak_EVENT_TYPE_espeakEVENT_PHONEME {
                // SAFETY: for phoneme events `id.string` holds up to 8 bytes of name.
                let raw = unsafe { e.id.string };
                let bytes: Vec<u8> = raw
                    .iter()
                    .take_while(|&&b| b != 0)
                    .map(|&b| b as u8)
                    .collect();
                let ipa = String::from_utf8_lossy(&bytes).into_owned();
                if !ipa.is_empty() {
                    utt.phonemes.push(TimedPhoneme {
                        sample: e.sample.max(0) as u64,
                        ipa,
                    });
                }
            }
            ev = unsafe { ev.add(1) };
        }
    });
    0
}

fn engine(guard: &mut Option<Engine>) -> Result<&Engine, TtsError> {
    if guard.is_none() {
        let options = (sys::espeakINITIALIZE_PHONEME_EVENTS
            | sys::espeakINITIALIZE_PHONEME_IPA
            | sys::espeakINITIALIZE_DONT_EXIT) as c_int;
        // SAFETY: called once, under the engine lock; a null path means the default data dir.
        let rate = unsafe {
            sys::espeak_Initialize(
                sys::espeak_AUDIO_OUTPUT_AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                options,
            )
        };
        if rate <= 0 {
            return Err(TtsError::Init);
        }
        unsafe { sys::espeak_SetSynthCallback(Some(synth_callback)) };
        *guard = Some(Engine {
            sample_rate: rate as u32,
        });
    }
    Ok(guard.as_ref().unwrap())
}

/// The sample rate espeak-ng produces (22050 Hz with the standard data).
pub fn sample_rate() -> Result<u32, TtsError> {
    let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    Ok(engine(&mut guard)?.sample_rate)
}

/// Checks that espeak-ng has `voice`, without synthesising.
pub fn check_voice(voice: &str) -> Result<(), TtsError> {
    let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    engine(&mut guard)?;
    set_voice(voice)
}

fn set_voice(voice: &str) -> Result<(), TtsError> {
    let name = CString::new(voice).map_err(|_| TtsError::UnknownVoice(voice.into()))?;
    // SAFETY: engine initialised by the caller, name is a valid C string.
    let err = unsafe { sys::espeak_SetVoiceByName(name.as_ptr()) };
    if err != sys::espeak_ERROR_EE_OK {
        return Err(TtsError::UnknownVoice(voice.into()));
    }
    Ok(())
}

/// Speaks `text` with `params`, returning all of its audio and phonemes.
pub fn synthesize(text: &str, params: &VoiceParams) -> Result<Utterance, TtsError> {
    if text.trim().is_empty() {
        return Err(TtsError::EmptyText);
    }
    let ctext = CString::new(text).map_err(|_| TtsError::NulInText)?;
    let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let sample_rate = engine(&mut guard)?.sample_rate;
    set_voice(&params.voice)?;
    // SAFETY: engine initialised; parameters are plain integers.
    unsafe {
        sys::espeak_SetParameter(
            sys::espeak_PARAMETER_espeakRATE,
            params
                .rate
                .clamp(sys::espeakRATE_MINIMUM, sys::espeakRATE_MAXIMUM) as c_int,
            0,
        );
        sys::espeak_SetParameter(
            sys::espeak_PARAMETER_espeakPITCH,
            params.pitch.min(100) as c_int,
            0,
        );
    }
    COLLECTOR.with(|c| {
        *c.borrow_mut() = Some(Utterance {
            sample_rate,
            ..Default::default()
        })
    });
    let bytes = ctext.as_bytes_with_nul();
    // SAFETY: text is NUL-terminated UTF-8; synchronous mode returns after the last callback.
    let err = unsafe {
        sys::espeak_Synth(
            bytes.as_ptr() as *const c_void,
            bytes.len(),
            0,
            sys::espeak_POSITION_TYPE_POS_CHARACTER,
            0,
            sys::espeakCHARS_UTF8,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    let utterance = COLLECTOR
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    drop(guard);
    if err != sys::espeak_ERROR_EE_OK {
        return Err(TtsError::Synth(err));
    }
    Ok(utterance)
}

/// Clause-ending punctuation as Piper voices were trained with it (Persian and Arabic marks
/// mapped to their Latin counterparts).
fn clause_mark(c: char) -> Option<char> {
    match c {
        '.' | ',' | ';' | ':' | '!' | '?' => Some(c),
        '،' => Some(','),
        '؛' => Some(';'),
        '؟' => Some('?'),
        '…' => Some('.'),
        _ => None,
    }
}

/// The IPA phonemes of `text` in `voice`, with stress marks, clause by clause: each clause's
/// phonemes followed by its closing punctuation, clauses separated by a space — the form
/// Piper voices are trained on.
pub fn phonemize(text: &str, voice: &str) -> Result<String, TtsError> {
    if text.trim().is_empty() {
        return Err(TtsError::EmptyText);
    }
    let ctext = CString::new(text).map_err(|_| TtsError::NulInText)?;
    let bytes = ctext.as_bytes();
    let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    engine(&mut guard)?;
    set_voice(voice)?;
    let start = ctext.as_ptr() as *const c_void;
    let mut cursor = start;
    let mut out = String::new();
    while !cursor.is_null() {
        let from = cursor as usize - start as usize;
        // SAFETY: `cursor` points into the NUL-terminated `ctext`, which outlives the loop;
        // espeak-ng advances it (or sets it to NULL at the end) and returns a string it owns,
        // valid until the next call.
        let phonemes = unsafe {
            let p = sys::espeak_TextToPhonemes(
                &mut cursor,
                sys::espeakCHARS_UTF8 as c_int,
                sys::espeakPHONEMES_IPA as c_int,
            );
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let to = if cursor.is_null() {
            bytes.len()
        } else {
            cursor as usize - start as usize
        };
        // espeak-ng reads a little past the clause it translated; its closing mark is the last
        // punctuation in that span followed by a space or the end ("1,500" is not a clause).
        let span = String::from_utf8_lossy(&bytes[from.min(to)..to]);
        let chars: Vec<char> = span.chars().collect();
        let at_end = cursor.is_null();
        let mark = (0..chars.len()).rev().find_map(|i| {
            let closes = chars.get(i + 1).map_or(at_end, |n| n.is_whitespace());
            clause_mark(chars[i]).filter(|_| closes)
        });
        let phonemes = phonemes.trim();
        if phonemes.is_empty() && mark.is_none() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(phonemes);
        out.extend(mark);
    }
    drop(guard);
    Ok(out)
}

/// Names of the voices espeak-ng has (for error messages and `--help`).
pub fn voice_names() -> Vec<String> {
    let mut guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    if engine(&mut guard).is_err() {
        return Vec::new();
    }
    let mut names = Vec::new();
    // SAFETY: returns a NULL-terminated array owned by espeak-ng.
    unsafe {
        let mut list = sys::espeak_ListVoices(std::ptr::null_mut());
        while !list.is_null() && !(*list).is_null() {
            let v = &**list;
            if !v.name.is_null() {
                names.push(CStr::from_ptr(v.name).to_string_lossy().into_owned());
            }
            list = list.add(1);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_phonemes_come_with_sample_positions() {
        let utt = synthesize("hello how are you", &VoiceParams::default()).unwrap();
        assert_eq!(utt.sample_rate, 22050);
        let secs = utt.samples.len() as f64 / utt.sample_rate as f64;
        assert!((0.5..1.5).contains(&secs), "{secs} s");
        let names: Vec<_> = utt.phonemes.iter().map(|p| p.ipa.as_str()).collect();
        assert!(names.len() >= 8, "{names:?}");
        assert!(utt.phonemes.windows(2).all(|w| w[0].sample <= w[1].sample));
        assert!(utt
            .phonemes
            .iter()
            .all(|p| (p.sample as usize) <= utt.samples.len()));
    }

    #[test]
    fn phonemes_keep_stress_and_clause_marks() {
        let p = phonemize("Hello there! I have $1,500, my friend.", "en-us").unwrap();
        assert!(p.starts_with("həlˈoʊ ðˈɛɹ!"), "{p}");
        assert!(p.contains("θˈaʊzənd"), "numbers are read out: {p}");
        assert!(p.ends_with("fɹˈɛnd."), "{p}");
        assert_eq!(
            p.matches(',').count(),
            1,
            "the comma inside 1,500 is not a clause: {p}"
        );
        let fa = phonemize("سلام، چطورید؟", "fa").unwrap();
        assert!(fa.contains(',') && fa.ends_with('?'), "{fa}");
    }

    #[test]
    fn persian_speaks_and_unknown_languages_are_named() {
        let fa = VoiceParams {
            voice: "fa".into(),
            ..Default::default()
        };
        let utt = synthesize("سلام چطورید؟", &fa).unwrap();
        assert!(utt.phonemes.len() >= 10, "{:?}", utt.phonemes);
        let bad = VoiceParams {
            voice: "xx-nonexistent".into(),
            ..Default::default()
        };
        assert_eq!(
            synthesize("hi", &bad).unwrap_err(),
            TtsError::UnknownVoice("xx-nonexistent".into())
        );
        assert_eq!(synthesize("  ", &fa).unwrap_err(), TtsError::EmptyText);
    }
}
