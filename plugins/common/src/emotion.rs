//! Emotions and the facial expressions that show them.
//!
//! An emotion is a target expression (a few blendshape weights scaled by an intensity).
//! [`ExpressionBlender`] eases the face towards the current target with a first-order lag so a
//! change of mood reads as a change of expression, not a cut.

use crate::blendshapes::{Blendshape as B, BlendshapeWeights};
use std::fmt;
use std::str::FromStr;

/// The moods the conversation layer can ask the avatar to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Emotion {
    #[default]
    Neutral,
    Happy,
    Confident,
    Thoughtful,
    Concerned,
}

impl Emotion {
    pub const ALL: [Emotion; 5] = [
        Emotion::Neutral,
        Emotion::Happy,
        Emotion::Confident,
        Emotion::Thoughtful,
        Emotion::Concerned,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Emotion::Neutral => "neutral",
            Emotion::Happy => "happy",
            Emotion::Confident => "confident",
            Emotion::Thoughtful => "thoughtful",
            Emotion::Concerned => "concerned",
        }
    }

    /// The expression at full intensity.
    pub fn expression(self) -> BlendshapeWeights {
        let pairs: &[(B, f32)] = match self {
            Emotion::Neutral => &[],
            Emotion::Happy => &[
                (B::MouthSmileLeft, 0.75),
                (B::MouthSmileRight, 0.75),
                (B::CheekSquintLeft, 0.5),
                (B::CheekSquintRight, 0.5),
                (B::EyeSquintLeft, 0.4),
                (B::EyeSquintRight, 0.4),
                (B::BrowOuterUpLeft, 0.15),
                (B::BrowOuterUpRight, 0.15),
            ],
            Emotion::Confident => &[
                (B::MouthSmileLeft, 0.3),
                (B::MouthSmileRight, 0.38),
                (B::EyeSquintLeft, 0.15),
                (B::EyeSquintRight, 0.15),
                (B::BrowDownLeft, 0.1),
                (B::BrowDownRight, 0.1),
                (B::JawForward, 0.1),
            ],
            Emotion::Thoughtful => &[
                (B::BrowInnerUp, 0.35),
                (B::BrowDownLeft, 0.3),
                (B::EyeLookUpLeft, 0.3),
                (B::EyeLookUpRight, 0.3),
                (B::EyeLookOutLeft, 0.2),
                (B::EyeLookInRight, 0.2),
                (B::MouthLeft, 0.2),
                (B::EyeSquintLeft, 0.15),
                (B::EyeSquintRight, 0.15),
            ],
            Emotion::Concerned => &[
                (B::BrowInnerUp, 0.65),
                (B::BrowDownLeft, 0.35),
                (B::BrowDownRight, 0.35),
                (B::MouthFrownLeft, 0.5),
                (B::MouthFrownRight, 0.5),
                (B::EyeSquintLeft, 0.1),
                (B::EyeSquintRight, 0.1),
            ],
        };
        BlendshapeWeights::from_pairs(pairs)
    }
}

impl fmt::Display for Emotion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown emotion name.
#[derive(Debug, thiserror::Error)]
#[error("unknown emotion '{0}' (expected one of neutral, happy, confident, thoughtful, concerned)")]
pub struct UnknownEmotion(pub String);

impl FromStr for Emotion {
    type Err = UnknownEmotion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Emotion::ALL
            .into_iter()
            .find(|e| e.name() == lower)
            .ok_or_else(|| UnknownEmotion(s.to_owned()))
    }
}

/// Eases the current expression towards the target of the latest emotion.
#[derive(Debug, Clone)]
pub struct ExpressionBlender {
    current: BlendshapeWeights,
    target: BlendshapeWeights,
    /// Time constant of the first-order lag, in seconds: after one `tau` the face has moved 63 %
    /// of the way, after three 95 %.
    tau: f32,
}

impl Default for ExpressionBlender {
    fn default() -> Self {
        Self::new(0.35)
    }
}

impl ExpressionBlender {
    pub fn new(tau_seconds: f32) -> Self {
        Self {
            current: BlendshapeWeights::default(),
            target: BlendshapeWeights::default(),
            tau: tau_seconds.max(1e-3),
        }
    }

    /// Sets the emotion to ease towards; `intensity` is clamped to 0..=1.
    pub fn set_target(&mut self, emotion: Emotion, intensity: f32) {
        let mut target = BlendshapeWeights::default();
        target.add_scaled(&emotion.expression(), intensity.clamp(0.0, 1.0));
        self.target = target;
    }

    /// Advances time by `dt` seconds and returns the expression now.
    pub fn advance(&mut self, dt: f32) -> &BlendshapeWeights {
        let alpha = 1.0 - (-dt.max(0.0) / self.tau).exp();
        self.current.approach(&self.target, alpha);
        &self.current
    }

    pub fn current(&self) -> &BlendshapeWeights {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_insensitively() {
        assert_eq!("Happy".parse::<Emotion>().unwrap(), Emotion::Happy);
        assert!("angry".parse::<Emotion>().is_err());
    }

    #[test]
    fn changes_ease_in_rather_than_jump() {
        let mut b = ExpressionBlender::new(0.35);
        b.set_target(Emotion::Happy, 1.0);
        let first = b.advance(0.04)[B::MouthSmileLeft];
        assert!(
            first > 0.0 && first < 0.15,
            "one frame moves a little: {first}"
        );
        for _ in 0..50 {
            b.advance(0.04);
        }
        assert!((b.current()[B::MouthSmileLeft] - 0.75).abs() < 0.01);
        b.set_target(Emotion::Concerned, 0.5);
        for _ in 0..100 {
            b.advance(0.04);
        }
        assert!(b.current()[B::MouthSmileLeft] < 0.01);
        assert!((b.current()[B::MouthFrownLeft] - 0.25).abs() < 0.01);
    }
}
