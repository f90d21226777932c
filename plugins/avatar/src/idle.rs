//! Idle life: what keeps a silent face from looking like a photograph.
//!
//! Blinks come at random intervals (people blink every 2–10 s, sometimes twice in a row), the
//! chest rises and falls about 15 times a minute, the head sways by a few degrees on slow
//! incommensurate sines, and the eyes make small saccades: quick jumps to a nearby point,
//! held for a second or two, mostly back towards the viewer. Everything is driven by stream time
//! and a seeded generator, so a given seed always animates the same way (tests rely on it).

use facecast_common::{AvatarPose, Blendshape as B};
use std::f32::consts::TAU;

/// Blink shape: lids close in 70 ms, stay shut 30 ms, reopen in 130 ms.
const BLINK_CLOSE: f32 = 0.07;
const BLINK_HOLD: f32 = 0.03;
const BLINK_OPEN: f32 = 0.13;
const BREATHS_PER_SECOND: f32 = 0.25;
/// A saccade's jump: fast (about 40 ms to cover most of the way).
const SACCADE_TAU: f32 = 0.015;

pub struct IdleAnimator {
    rng: fastrand::Rng,
    time: f32,
    next_blink: f32,
    blink_start: Option<f32>,
    gaze: (f32, f32),
    gaze_target: (f32, f32),
    next_saccade: f32,
    /// Phase offsets of the sway sines, so two avatars with different seeds move differently.
    phases: [f32; 4],
}

impl IdleAnimator {
    pub fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let phases = [
            rng.f32() * TAU,
            rng.f32() * TAU,
            rng.f32() * TAU,
            rng.f32() * TAU,
        ];
        let next_blink = 0.8 + rng.f32() * 2.0;
        let next_saccade = 0.5 + rng.f32() * 1.5;
        Self {
            rng,
            time: 0.0,
            next_blink,
            blink_start: None,
            gaze: (0.0, 0.0),
            gaze_target: (0.0, 0.0),
            next_saccade,
            phases,
        }
    }

    /// The lid closure (0 open ..= 1 shut) at `t` for a blink that started at `start`.
    fn blink_curve(t: f32, start: f32) -> Option<f32> {
        let d = t - start;
        if d < 0.0 {
            Some(0.0)
        } else if d < BLINK_CLOSE {
            Some(d / BLINK_CLOSE)
        } else if d < BLINK_CLOSE + BLINK_HOLD {
            Some(1.0)
        } else if d < BLINK_CLOSE + BLINK_HOLD + BLINK_OPEN {
            let k = (d - BLINK_CLOSE - BLINK_HOLD) / BLINK_OPEN;
            Some(1.0 - k * k * (3.0 - 2.0 * k))
        } else {
            None
        }
    }

    /// Advances to `time` seconds (monotonic; earlier times are treated as "now") and returns
    /// the idle pose, with all speech and emotion blendshapes at 0.
    pub fn pose_at(&mut self, time: f32) -> AvatarPose {
        let dt = (time - self.time).max(0.0);
        self.time = self.time.max(time);
        let t = self.time;

        // Blinks.
        if self.blink_start.is_none() && t >= self.next_blink {
            self.blink_start = Some(t);
        }
        let mut blink = 0.0;
        if let Some(start) = self.blink_start {
            match Self::blink_curve(t, start) {
                Some(v) => blink = v,
                None => {
                    self.blink_start = None;
                    // One blink in six is followed quickly by a second.
                    let gap = if self.rng.u8(0..6) == 0 {
                        0.25 + self.rng.f32() * 0.2
                    } else {
                        2.0 + self.rng.f32() * 4.5
                    };
                    self.next_blink = t + gap;
                }
            }
        }

        // Saccades: a new fixation point every 0.6–3 s; half of them return to the viewer.
        if t >= self.next_saccade {
            self.gaze_target = if self.rng.bool() {
                (0.0, 0.0)
            } else {
                ((self.rng.f32() - 0.5) * 0.5, (self.rng.f32() - 0.5) * 0.3)
            };
            self.next_saccade = t + 0.6 + self.rng.f32() * 2.4;
        }
        let k = 1.0 - (-dt / SACCADE_TAU).exp();
        self.gaze.0 += (self.gaze_target.0 - self.gaze.0) * k;
        self.gaze.1 += (self.gaze_target.1 - self.gaze.1) * k;

        let p = self.phases;
        let breath = 0.5 - 0.5 * (TAU * BREATHS_PER_SECOND * t + p[0]).cos();
        let mut pose = AvatarPose {
            breath,
            head_yaw: 0.05 * (TAU * 0.071 * t + p[1]).sin() + 0.02 * (TAU * 0.23 * t + p[2]).sin(),
            head_pitch: 0.03 * (TAU * 0.053 * t + p[3]).sin() - 0.01 * breath,
            head_roll: 0.03 * (TAU * 0.089 * t + p[2]).sin(),
            head_x: 0.004 * (TAU * 0.061 * t + p[3]).sin(),
            head_y: -0.004 * breath,
            ..AvatarPose::default()
        };
        let w = &mut pose.weights;
        w[B::EyeBlinkLeft] = blink;
        w[B::EyeBlinkRight] = blink;
        let (gx, gy) = self.gaze;
        // Screen right (+x) is the avatar's left: its left eye looks out, its right eye in.
        w[B::EyeLookOutLeft] = gx.max(0.0);
        w[B::EyeLookInRight] = gx.max(0.0);
        w[B::EyeLookInLeft] = (-gx).max(0.0);
        w[B::EyeLookOutRight] = (-gx).max(0.0);
        w[B::EyeLookDownLeft] = gy.max(0.0);
        w[B::EyeLookDownRight] = gy.max(0.0);
        w[B::EyeLookUpLeft] = (-gy).max(0.0);
        w[B::EyeLookUpRight] = (-gy).max(0.0);
        pose
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blinks_at_natural_intervals_and_breathes() {
        let mut a = IdleAnimator::new(7);
        let fps = 25.0;
        let mut blink_onsets = Vec::new();
        let mut was_closed = false;
        let (mut min_breath, mut max_breath) = (1.0f32, 0.0f32);
        for i in 0..(60.0 * fps) as usize {
            let pose = a.pose_at(i as f32 / fps);
            let closed = pose.weights[B::EyeBlinkLeft] > 0.5;
            if closed && !was_closed {
                blink_onsets.push(i as f32 / fps);
            }
            was_closed = closed;
            min_breath = min_breath.min(pose.breath);
            max_breath = max_breath.max(pose.breath);
            assert!(pose.head_roll.abs() < 0.05 && pose.head_yaw.abs() < 0.08);
            assert_eq!(pose.weights[B::JawOpen], 0.0);
        }
        // A minute holds roughly 8–30 blinks.
        assert!(
            (8..=30).contains(&blink_onsets.len()),
            "{} blinks",
            blink_onsets.len()
        );
        assert!(min_breath < 0.05 && max_breath > 0.95);
    }

    #[test]
    fn same_seed_same_motion() {
        let (mut a, mut b) = (IdleAnimator::new(3), IdleAnimator::new(3));
        for i in 0..200 {
            assert_eq!(a.pose_at(i as f32 * 0.04), b.pose_at(i as f32 * 0.04));
        }
    }
}
