//! A real Piper voice (`en_US-joe-medium`, from PyPI via scripts/fetch-test-assets.sh) speaking
//! through `ort`: its audio, and the phoneme timing mapped onto it from espeak-ng.

use gstfacecasttts::espeak::{self, VoiceParams};
use gstfacecasttts::piper::PiperVoice;
use std::sync::Arc;

/// The test voice, with ONNX Runtime loaded; fails loudly, saying how to get them.
fn voice() -> Arc<PiperVoice> {
    let voice = facecast_testkit::piper_voice();
    PiperVoice::get(voice.to_str().unwrap()).expect("the Piper voice loads")
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| (s as f64).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

#[test]
fn piper_speaks_a_sentence_with_timed_phonemes() {
    let voice = voice();
    let text = "Hello! I am your financial assistant. How can I help you today?";
    let utt = voice.synthesize(text, 1.0).unwrap();
    assert_eq!(utt.sample_rate, 22050);
    let secs = utt.samples.len() as f64 / utt.sample_rate as f64;
    // About 12 words: two to six seconds of speech at any sane pace.
    assert!((2.0..6.0).contains(&secs), "{secs:.2} s");
    let loudness = rms(&utt.samples);
    assert!(
        loudness > 500.0,
        "the voice is (nearly) silent: RMS {loudness:.0}"
    );

    // The same phonemes as espeak-ng's own reading, in order, inside the audio.
    let reference = espeak::synthesize(
        text,
        &VoiceParams {
            voice: "en-us".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let names = |p: &[espeak::TimedPhoneme]| p.iter().map(|p| p.ipa.clone()).collect::<Vec<_>>();
    assert_eq!(names(&utt.phonemes), names(&reference.phonemes));
    assert!(utt.phonemes.len() >= 30, "{} phonemes", utt.phonemes.len());
    assert!(utt.phonemes.windows(2).all(|w| w[0].sample <= w[1].sample));
    assert!(utt
        .phonemes
        .iter()
        .all(|p| (p.sample as usize) < utt.samples.len()));
    let visemes: std::collections::HashSet<_> = utt
        .phonemes
        .iter()
        .map(|p| facecast_common::Viseme::from_ipa(&p.ipa))
        .collect();
    assert!(
        visemes.len() >= 8,
        "only {} distinct visemes",
        visemes.len()
    );

    // The timing lands on Piper's sound: most vowels start where the audio is loud. Piper's
    // sound is random (its noise scales), one reading from the next: counted over three
    // readings, not one, so that the test measures the timing and not the dice.
    let (mut voiced, mut vowels) = (0, 0);
    for reading in 0..3 {
        let utt = if reading == 0 {
            utt.clone()
        } else {
            voice.synthesize(text, 1.0).unwrap()
        };
        let loudness = rms(&utt.samples);
        let window = (0.06 * utt.sample_rate as f64) as usize;
        for p in utt
            .phonemes
            .iter()
            .filter(|p| facecast_common::Viseme::from_ipa(&p.ipa).is_vowel())
        {
            let at = p.sample as usize;
            vowels += 1;
            if rms(&utt.samples[at..(at + window).min(utt.samples.len())]) > loudness * 0.3 {
                voiced += 1;
            }
        }
    }
    assert!(
        voiced * 10 >= vowels * 8,
        "only {voiced} of {vowels} vowels (three readings) start on loud audio"
    );
}

#[test]
fn speed_and_bad_input() {
    let voice = voice();
    let normal = voice
        .synthesize("This is a test of the speaking rate.", 1.0)
        .unwrap();
    let fast = voice
        .synthesize("This is a test of the speaking rate.", 2.0)
        .unwrap();
    let ratio = fast.samples.len() as f64 / normal.samples.len() as f64;
    assert!(
        (0.35..0.7).contains(&ratio),
        "twice the speed gave {ratio:.2} of the length"
    );
    assert!(voice.synthesize("   ", 1.0).is_err());
    assert_eq!(voice.language(), "en");
}
