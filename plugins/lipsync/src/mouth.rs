//! From phoneme timing to natural mouth motion.
//!
//! Two effects make lips look like speech rather than flapping:
//! - **Co-articulation**: the mouth is always on its way between sounds, and it prepares the
//!   next one early (lips round for the "u" in "you" during the "y"). The target at time `t` is a
//!   blend of the visemes around `t`, leaning forward in time; sounds whose shape must be met
//!   exactly (closures of p/b/m, lip-teeth contact of f/v) dominate the blend while they sound.
//! - **Dynamics**: muscles accelerate and stop. Each blendshape follows its target with a fast
//!   attack and a slower release, so the mouth snaps open for a vowel and relaxes after it.
//! - **Pauses**: when the sound stops (a comma, a full stop, a breath), the mouth closes: sounds
//!   already past no longer pull on it, and it relaxes quickly to rest, closed within 80 ms.

use crate::timeline::PhonemeTimeline;
use facecast_common::{Blendshape as B, BlendshapeWeights, Viseme};

/// Sample offsets (ms) around the frame time and their weights: forward-leaning anticipation.
const KERNEL: [(i64, f32); 7] = [
    (-40, 0.06),
    (-20, 0.14),
    (0, 0.26),
    (20, 0.22),
    (40, 0.16),
    (60, 0.10),
    (80, 0.06),
];

/// How far after a frame's start the co-articulation kernel looks.
pub const LOOKAHEAD: gst::ClockTime = gst::ClockTime::from_mseconds(80);

const ATTACK_TAU: f32 = 0.030;
const RELEASE_TAU: f32 = 0.055;
/// Release into a pause: faster, so the jaw is closed (below 0.05) 80 ms after the sound stops.
const REST_TAU: f32 = 0.022;

/// The co-articulated mouth target at running time `t`. In silence only what is coming pulls
/// on the mouth (it prepares the next sound), not what has been said.
pub fn coarticulated_target(phonemes: &PhonemeTimeline, t: gst::ClockTime) -> BlendshapeWeights {
    let mut target = BlendshapeWeights::default();
    let silent = phonemes.at(t) == Viseme::Sil;
    for (offset_ms, weight) in KERNEL {
        if silent && offset_ms < 0 {
            continue;
        }
        let at = if offset_ms >= 0 {
            t + gst::ClockTime::from_mseconds(offset_ms as u64)
        } else {
            t.saturating_sub(gst::ClockTime::from_mseconds((-offset_ms) as u64))
        };
        target.add_scaled(&phonemes.at(at).mouth_pose(), weight);
    }
    // The sound right now wins where its shape is a hard constraint.
    match phonemes.at(t) {
        Viseme::PP => {
            target[B::JawOpen] *= 0.25;
            target[B::MouthClose] = target[B::MouthClose].max(0.45);
            target[B::MouthPressLeft] = target[B::MouthPressLeft].max(0.5);
            target[B::MouthPressRight] = target[B::MouthPressRight].max(0.5);
        }
        Viseme::FF => {
            target[B::JawOpen] = target[B::JawOpen].min(0.12);
            target[B::MouthRollLower] = target[B::MouthRollLower].max(0.55);
        }
        _ => {}
    }
    target
}

/// Per-blendshape attack/release smoothing of the speech blendshapes.
#[derive(Debug, Clone, Default)]
pub struct MouthDynamics {
    current: BlendshapeWeights,
}

impl MouthDynamics {
    /// One frame of `dt` seconds towards `target` while speaking.
    #[cfg(test)]
    pub fn step(&mut self, target: &BlendshapeWeights, dt: f32) -> &BlendshapeWeights {
        self.step_in(target, dt, false)
    }

    /// One frame towards `target`; `resting` (in a pause) relaxes faster.
    pub fn step_in(
        &mut self,
        target: &BlendshapeWeights,
        dt: f32,
        resting: bool,
    ) -> &BlendshapeWeights {
        let attack = 1.0 - (-dt / ATTACK_TAU).exp();
        let release_tau = if resting { REST_TAU } else { RELEASE_TAU };
        let release = 1.0 - (-dt / release_tau).exp();
        for b in B::SPEECH {
            let (c, t) = (self.current[b], target[b]);
            let k = if t > c { attack } else { release };
            self.current[b] = c + (t - c) * k;
        }
        &self.current
    }

    pub fn reset(&mut self) {
        self.current = BlendshapeWeights::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::TimedViseme;
    use gst::ClockTime as T;

    fn timeline(items: &[(u64, u64, Viseme)]) -> PhonemeTimeline {
        let mut p = PhonemeTimeline::default();
        for &(s, e, v) in items {
            p.push(TimedViseme {
                start: T::from_mseconds(s),
                end: T::from_mseconds(e),
                viseme: v,
            });
        }
        p
    }

    #[test]
    fn vowel_opens_with_anticipation_and_closes_after() {
        let p = timeline(&[(200, 400, Viseme::AA)]);
        let mut dyn_ = MouthDynamics::default();
        let mut jaw = Vec::new();
        for i in 0..25 {
            let t = T::from_mseconds(i * 40);
            jaw.push(dyn_.step(&coarticulated_target(&p, t), 0.04)[B::JawOpen]);
        }
        assert!(jaw[..3].iter().all(|&j| j < 0.01), "{jaw:?}");
        // Starts opening a frame early (anticipation), peaks inside the vowel.
        assert!(jaw[4] > 0.02, "{jaw:?}");
        let peak = jaw
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert!((5..=10).contains(&peak) && jaw[peak] > 0.5, "{jaw:?}");
        assert!(jaw[15] < 0.05, "{jaw:?}");
    }

    #[test]
    fn the_jaw_closes_in_a_pause() {
        // "ah" until 300 ms, a pause, "ah" again from 600 ms.
        let p = timeline(&[(100, 300, Viseme::AA), (600, 800, Viseme::AA)]);
        let mut dyn_ = MouthDynamics::default();
        for i in 0..25u64 {
            let mid = T::from_mseconds(i * 40 + 20);
            let resting = p.at(mid) == Viseme::Sil;
            let jaw = dyn_.step_in(&coarticulated_target(&p, mid), 0.04, resting)[B::JawOpen];
            if (380..=520).contains(&mid.mseconds()) {
                assert!(jaw < 0.05, "jaw {jaw} at {mid} in the pause");
            }
            if mid.mseconds() == 260 || mid.mseconds() == 700 {
                assert!(jaw > 0.3, "jaw {jaw} at {mid} while speaking");
            }
        }
    }

    #[test]
    fn bilabial_closes_the_lips_between_vowels() {
        let p = timeline(&[
            (0, 200, Viseme::AA),
            (200, 280, Viseme::PP),
            (280, 480, Viseme::AA),
        ]);
        let mid = coarticulated_target(&p, T::from_mseconds(240));
        let vowel = coarticulated_target(&p, T::from_mseconds(100));
        assert!(mid[B::JawOpen] < 0.25 * vowel[B::JawOpen] + 0.05);
        assert!(mid[B::MouthClose] >= 0.45);
    }
}
