//! Moves phoneme times from one voice's recording of a text onto another voice's recording of
//! the same text (espeak-ng's timed phonemes onto a Piper voice's audio, which has none).
//!
//! The two voices say the same phonemes in the same order but not at the same pace: Piper's
//! durations are drawn at random each time, and its pauses are shorter than espeak-ng's (about
//! 120 ms against 330 ms after "Hello!"). Stretching one speech span linearly over the other
//! ended the pause after "Hello!" 185 ms late in Piper's audio, so the mouth stayed shut while
//! the word after it sounded. So the two loudness envelopes are aligned by dynamic time warping
//! (10 ms frames), and the reference's pauses are placed where the warp puts them. Between
//! pauses the times are stretched straight: following the warp there too squeezed some
//! syllables to nothing where the voices' loudness differs inside a word (in 40 runs of
//! `tests/elements.rs a_piper_voice_moves_the_lips` the jaw opened 5–8 times; stretched
//! straight throughout, 6–9 times; placing only the pauses, 7–10 times).

use crate::espeak::{TimedPhoneme, Utterance};
use crate::pauses;

/// Frames per second of the loudness envelopes (10 ms frames).
const FRAMES_PER_SEC: u32 = 100;
/// Loudness below the loudest frame that counts as silence, in dB.
const FLOOR_DB: f32 = 50.0;
/// The cost of a frame matched away from the straight stretch, per unit of the utterance's
/// length it is off by (loudness differences cost 0..1 per frame). Only a tie-breaker: where
/// one voice says a word more slowly, the match must stay off the straight line until the
/// next pause rather than skip part of the word to get back to it.
const DIAGONAL_PULL: f32 = 0.01;
/// The cost of one voice waiting while the other goes on (a horizontal or vertical step).
const STEP_PENALTY: f32 = 0.02;
/// Longest envelope aligned (60 s): beyond it the straight stretch alone is used.
const MAX_FRAMES: usize = 6000;

/// `reference`'s phonemes, timed on `target` (16-bit mono at `rate`).
pub fn map_phonemes(reference: &Utterance, target: &[i16], rate: u32) -> Vec<TimedPhoneme> {
    let (r0, r1) = speech_span(&reference.samples);
    let (t0, t1) = speech_span(target);
    let r_rate = reference.sample_rate as f64;
    let t_rate = rate as f64;
    // Both spans in seconds from their own start.
    let (r_len, t_len) = ((r1 - r0) as f64 / r_rate, (t1 - t0) as f64 / t_rate);
    let anchors = anchors(reference, (r0, r1), &target[t0..t1], rate);
    let last = target.len().saturating_sub(1) as f64;
    reference
        .phonemes
        .iter()
        .map(|p| {
            let t = p.sample as f64 / r_rate - r0 as f64 / r_rate;
            let mapped = if (0.0..=r_len).contains(&t) {
                through(&anchors, t)
            } else {
                // Outside the speech (a leading or trailing pause): the straight stretch.
                t * t_len / r_len.max(1e-9)
            };
            TimedPhoneme {
                sample: (t0 as f64 + mapped * t_rate).clamp(0.0, last) as u64,
                ipa: p.ipa.clone(),
            }
        })
        .collect()
}

/// Matching times (reference, target), in seconds from each speech span's start: both starts,
/// each end of a reference pause and where the warp puts it, and both ends, in order.
fn anchors(
    reference: &Utterance,
    (r0, r1): (usize, usize),
    target: &[i16],
    rate: u32,
) -> Vec<(f64, f64)> {
    let r_rate = reference.sample_rate as f64;
    let spoken = &reference.samples[r0..r1];
    let (r_len, t_len) = (
        spoken.len() as f64 / r_rate,
        target.len() as f64 / rate as f64,
    );
    let mut anchors = vec![(0.0, 0.0)];
    let warp = Warp::new(
        &envelope(spoken, reference.sample_rate),
        &envelope(target, rate),
    );
    if let Some(warp) = warp {
        for pause in pauses::pauses(spoken, reference.sample_rate) {
            for edge in [pause.start, pause.end] {
                let at = edge as f64 / r_rate;
                let (last_r, last_t) = *anchors.last().expect("starts with one");
                if at > last_r && at < r_len {
                    anchors.push((at, warp.map(at).clamp(last_t, t_len)));
                }
            }
        }
    }
    anchors.push((r_len, t_len));
    anchors
}

/// `t` carried through the piecewise-straight map between `anchors`.
fn through(anchors: &[(f64, f64)], t: f64) -> f64 {
    let at = anchors
        .windows(2)
        .position(|w| t <= w[1].0)
        .unwrap_or(anchors.len().saturating_sub(2));
    let ((a_r, a_t), (b_r, b_t)) = (anchors[at], anchors[(at + 1).min(anchors.len() - 1)]);
    if b_r - a_r <= 1e-9 {
        return a_t;
    }
    a_t + (t - a_r) * (b_t - a_t) / (b_r - a_r)
}

/// Where speech starts and ends in `samples`: the first and last sample louder than 2 % of
/// the loudest, or the whole span for silence.
pub fn speech_span(samples: &[i16]) -> (usize, usize) {
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

/// Loudness per 10 ms frame, 0 (`FLOOR_DB` below the loudest frame, or quieter) to 1 (the
/// loudest).
fn envelope(samples: &[i16], rate: u32) -> Vec<f32> {
    let hop = (rate / FRAMES_PER_SEC).max(1) as usize;
    let db: Vec<f32> = samples
        .chunks(hop)
        .map(|c| {
            let power = c.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / c.len() as f64;
            (10.0 * (power + 1e-9).log10()) as f32
        })
        .collect();
    let loudest = db.iter().copied().fold(f32::MIN, f32::max);
    db.iter()
        .map(|&d| ((d - loudest + FLOOR_DB) / FLOOR_DB).clamp(0.0, 1.0))
        .collect()
}

/// A monotonic map from the reference envelope's frames to the target's.
struct Warp {
    /// For each reference frame, the first target frame matched to it: where it starts.
    target_frame: Vec<f64>,
}

impl Warp {
    /// Aligns `a` (reference) with `b` (target); `None` where either is empty or too long.
    fn new(a: &[f32], b: &[f32]) -> Option<Self> {
        let (n, m) = (a.len(), b.len());
        if n == 0 || m == 0 || n > MAX_FRAMES || m > MAX_FRAMES {
            return None;
        }
        // Cumulative costs, row by row, and the step taken into each cell:
        // 0 diagonal, 1 from the frame above (reference moves), 2 from the left (target moves).
        let mut step = vec![0u8; n * m];
        let mut above = vec![f32::INFINITY; m];
        let mut row = vec![f32::INFINITY; m];
        let along = |i: usize, n: usize| i as f32 / (n.max(2) - 1) as f32;
        for i in 0..n {
            for j in 0..m {
                let cost = (a[i] - b[j]).abs() + DIAGONAL_PULL * (along(j, m) - along(i, n)).abs();
                let (best, from) = if i == 0 && j == 0 {
                    (0.0, 0)
                } else {
                    let diagonal = if i > 0 && j > 0 {
                        above[j - 1]
                    } else {
                        f32::INFINITY
                    };
                    let up = if i > 0 {
                        above[j] + STEP_PENALTY
                    } else {
                        f32::INFINITY
                    };
                    let left = if j > 0 {
                        row[j - 1] + STEP_PENALTY
                    } else {
                        f32::INFINITY
                    };
                    if diagonal <= up && diagonal <= left {
                        (diagonal, 0)
                    } else if up <= left {
                        (up, 1)
                    } else {
                        (left, 2)
                    }
                };
                row[j] = cost + best;
                step[i * m + j] = from;
            }
            std::mem::swap(&mut above, &mut row);
        }
        // Back from the last pair of frames to the first; the last visit to a reference frame
        // on the way back is its first target frame.
        let mut target_frame = vec![0f64; n];
        let (mut i, mut j) = (n - 1, m - 1);
        loop {
            target_frame[i] = j as f64;
            if i == 0 && j == 0 {
                break;
            }
            match step[i * m + j] {
                0 => {
                    i -= 1;
                    j -= 1;
                }
                1 => i -= 1,
                _ => j -= 1,
            }
        }
        Some(Self { target_frame })
    }

    /// The target time (seconds from its speech's start) of reference time `t`.
    fn map(&self, t: f64) -> f64 {
        let f = (t * FRAMES_PER_SEC as f64).max(0.0);
        let last = self.target_frame.len() - 1;
        let i = (f.floor() as usize).min(last);
        let next = (i + 1).min(last);
        let frac = (f - i as f64).min(1.0);
        let frame = self.target_frame[i] + (self.target_frame[next] - self.target_frame[i]) * frac;
        frame / FRAMES_PER_SEC as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16 kHz speech: each item a syllable of that many seconds (a 200 Hz tone, loud for its
    /// first 70 % and 12 dB softer after), or a pause of that many seconds.
    fn speech(items: &[Item]) -> Vec<i16> {
        let mut out = Vec::new();
        for item in items {
            let (secs, syllable) = match *item {
                Item::Syllable(s) => (s, true),
                Item::Pause(s) => (s, false),
            };
            let n = (secs * 16000.0) as usize;
            for k in 0..n {
                let tone = (k as f64 * 2.0 * std::f64::consts::PI * 200.0 / 16000.0).sin();
                let level = match (syllable, k < n * 7 / 10) {
                    (false, _) => 0.0,
                    (true, true) => 8000.0,
                    (true, false) => 2000.0,
                };
                out.push((tone * level) as i16);
            }
        }
        out
    }

    #[derive(Clone, Copy)]
    enum Item {
        Syllable(f64),
        Pause(f64),
    }

    fn words(syllable: f64, pause: f64, second: f64) -> Vec<Item> {
        let mut items = vec![Item::Syllable(syllable); 4];
        items.push(Item::Pause(pause));
        items.extend(vec![Item::Syllable(second); 8]);
        items
    }

    fn phoneme(sample: u64) -> TimedPhoneme {
        TimedPhoneme {
            sample,
            ipa: "a".into(),
        }
    }

    #[test]
    fn a_pause_lands_on_the_other_voices_pause() {
        // Reference: 4 syllables of 100 ms, a 350 ms pause, 8 syllables of 100 ms. Target:
        // syllables of 90 ms, a 120 ms pause, then syllables of 110 ms. Phonemes at the
        // reference's start, 50 ms into its pause, and at the third syllable after it.
        let reference = Utterance {
            sample_rate: 16000,
            samples: speech(&words(0.1, 0.35, 0.1)),
            phonemes: vec![phoneme(0), phoneme(7200), phoneme(15200)],
        };
        let target = speech(&words(0.09, 0.12, 0.11));
        let mapped: Vec<f64> = map_phonemes(&reference, &target, 16000)
            .iter()
            .map(|p| p.sample as f64 / 16000.0)
            .collect();
        assert_eq!(mapped[0], 0.0);
        // The target's pause is 0.36..0.48 s, its third syllable after it starts at 0.70 s.
        // A straight stretch would put these at 0.39 and 0.83 s: the second two syllables
        // late.
        assert!((0.36..0.48).contains(&mapped[1]), "{mapped:?}");
        assert!((mapped[2] - 0.70).abs() <= 0.03, "{mapped:?}");
    }

    #[test]
    fn where_loudness_says_nothing_the_times_stretch_straight() {
        // Reference: silence 0..100, speech 100..300; target: speech 50..450 (1 kHz: 10-sample
        // frames).
        let mut reference = Utterance {
            sample_rate: 1000,
            samples: vec![0; 400],
            phonemes: vec![phoneme(100), phoneme(200)],
        };
        reference.samples[100..300].fill(1000);
        let mut target = vec![0i16; 500];
        target[50..450].fill(-2000);
        let mapped: Vec<u64> = map_phonemes(&reference, &target, 1000)
            .iter()
            .map(|p| p.sample)
            .collect();
        assert_eq!(mapped, [50, 250]);
    }

    #[test]
    fn silence_and_empty_speech_map_without_panicking() {
        let reference = Utterance {
            sample_rate: 16000,
            samples: vec![0; 1600],
            phonemes: vec![phoneme(0), phoneme(800), phoneme(5000)],
        };
        let mapped = map_phonemes(&reference, &[], 16000);
        assert!(mapped.iter().all(|p| p.sample == 0));
        let mapped = map_phonemes(&reference, &vec![0; 3200], 16000);
        assert_eq!(mapped.len(), 3);
        assert!(mapped.windows(2).all(|w| w[0].sample <= w[1].sample));
    }
}
