//! Where an utterance is silent, and so where its phonemes really end.
//!
//! Engines announce where each phoneme starts, not where its sound stops. Taking "until the
//! next phoneme" as its end makes the last sound before a pause (a comma, a full stop, a
//! breath) last through the whole pause, and the mouth stays open in silence. So the audio
//! itself is read: stretches of at least [`MIN_PAUSE`] whose 10 ms windows are all quiet
//! (below [`QUIET_DB`] under the utterance's loudest window) are pauses. A phoneme ends where
//! a pause begins inside it, and one announced inside a pause starts where the pause ends.
//! Shorter silences (the closure of a stop consonant) stay part of their phoneme, so the lips
//! do not flap inside words.

use crate::espeak::Utterance;
use std::ops::Range;

/// The shortest silence read as a pause, in seconds.
pub const MIN_PAUSE: f64 = 0.100;
/// A window is quiet when its level is this many dB below the loudest window.
pub const QUIET_DB: f64 = 35.0;
const WINDOW: f64 = 0.010;

/// The pauses of `samples` at `rate`, as sample ranges, in order.
pub fn pauses(samples: &[i16], rate: u32) -> Vec<Range<u64>> {
    let window = ((rate as f64 * WINDOW) as usize).max(1);
    let levels: Vec<f64> = samples
        .chunks(window)
        .map(|w| (w.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect();
    let loudest = levels.iter().cloned().fold(0.0, f64::max);
    if loudest <= 0.0 {
        // All silent: one pause, the whole of it.
        let whole = 0..samples.len() as u64;
        return if whole.is_empty() {
            Vec::new()
        } else {
            vec![whole]
        };
    }
    let quiet = loudest * 10f64.powf(-QUIET_DB / 20.0);
    let min_windows = (MIN_PAUSE / WINDOW).ceil() as usize;
    let mut out = Vec::new();
    let mut run_start = None;
    for (i, &level) in levels
        .iter()
        .chain(std::iter::once(&f64::INFINITY))
        .enumerate()
    {
        match (level < quiet, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                if i - start >= min_windows {
                    let end = (i * window).min(samples.len());
                    out.push((start * window) as u64..end as u64);
                }
                run_start = None;
            }
            _ => {}
        }
    }
    out
}

/// Each phoneme's sounding span `(start, end)` in samples, in the order announced.
pub fn phoneme_spans(utterance: &Utterance) -> Vec<(u64, u64)> {
    let total = utterance.samples.len() as u64;
    let pauses = pauses(&utterance.samples, utterance.sample_rate);
    let phonemes = &utterance.phonemes;
    phonemes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut start = p.sample.min(total);
            let mut end = phonemes.get(i + 1).map_or(total, |n| n.sample).max(start);
            // Announced inside a pause: it sounds from the pause's end, if at all.
            if let Some(pause) = pauses.iter().find(|r| r.contains(&start)) {
                start = pause.end.min(end);
            }
            // A pause begins inside it: its sound stops there.
            if let Some(pause) = pauses.iter().find(|r| r.start > start && r.start < end) {
                end = pause.start;
            }
            (start, end.max(start))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::espeak::TimedPhoneme;

    fn tone(n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| ((i as f64 * 0.3).sin() * 8000.0) as i16)
            .collect()
    }

    #[test]
    fn pauses_are_long_quiet_stretches() {
        let rate = 10_000;
        // 200 ms of sound, 300 ms of near-silence, 50 ms of silence inside sound, sound.
        let mut s = tone(2000);
        s.extend((0..3000).map(|i| (i % 3) as i16 - 1));
        s.extend(tone(1000));
        s.extend(vec![0; 500]);
        s.extend(tone(1000));
        let p = pauses(&s, rate);
        assert_eq!(p, vec![2000..5000], "{p:?}");
        assert_eq!(pauses(&[0; 100], rate), vec![0..100]);
        assert!(pauses(&[], rate).is_empty());
    }

    #[test]
    fn the_sound_before_a_pause_ends_with_it() {
        let mut samples = tone(2000);
        samples.extend(vec![0; 3000]);
        samples.extend(tone(2000));
        let p = |sample, ipa: &str| TimedPhoneme {
            sample,
            ipa: ipa.into(),
        };
        let u = Utterance {
            sample_rate: 10_000,
            samples,
            // "oʊ" runs into the pause; "aɪ" is announced 100 ms before its sound.
            phonemes: vec![p(0, "h"), p(1000, "oʊ"), p(4000, "aɪ"), p(6000, "m")],
        };
        assert_eq!(
            phoneme_spans(&u),
            vec![(0, 1000), (1000, 2000), (5000, 6000), (6000, 7000)]
        );
    }
}
