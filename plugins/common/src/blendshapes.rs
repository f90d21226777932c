//! ARKit's 52 blendshapes: the expression vocabulary shared by Audio2Face-3D, VRM/Ready Player Me
//! avatars and our own parametric renderer. Each weight is in 0..=1.

use std::ops::{Index, IndexMut};
use std::str::FromStr;

macro_rules! blendshapes {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// One of ARKit's 52 face blendshapes, in ARKit's documented order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Blendshape { $($variant),+ }

        impl Blendshape {
            /// Every blendshape, in index order.
            pub const ALL: [Blendshape; 52] = [$(Blendshape::$variant),+];

            /// The ARKit name, e.g. `jawOpen`.
            pub fn name(self) -> &'static str {
                match self { $(Blendshape::$variant => $name),+ }
            }
        }
    };
}

blendshapes! {
    EyeBlinkLeft => "eyeBlinkLeft", EyeLookDownLeft => "eyeLookDownLeft",
    EyeLookInLeft => "eyeLookInLeft", EyeLookOutLeft => "eyeLookOutLeft",
    EyeLookUpLeft => "eyeLookUpLeft", EyeSquintLeft => "eyeSquintLeft",
    EyeWideLeft => "eyeWideLeft", EyeBlinkRight => "eyeBlinkRight",
    EyeLookDownRight => "eyeLookDownRight", EyeLookInRight => "eyeLookInRight",
    EyeLookOutRight => "eyeLookOutRight", EyeLookUpRight => "eyeLookUpRight",
    EyeSquintRight => "eyeSquintRight", EyeWideRight => "eyeWideRight",
    JawForward => "jawForward", JawLeft => "jawLeft", JawRight => "jawRight",
    JawOpen => "jawOpen", MouthClose => "mouthClose", MouthFunnel => "mouthFunnel",
    MouthPucker => "mouthPucker", MouthLeft => "mouthLeft", MouthRight => "mouthRight",
    MouthSmileLeft => "mouthSmileLeft", MouthSmileRight => "mouthSmileRight",
    MouthFrownLeft => "mouthFrownLeft", MouthFrownRight => "mouthFrownRight",
    MouthDimpleLeft => "mouthDimpleLeft", MouthDimpleRight => "mouthDimpleRight",
    MouthStretchLeft => "mouthStretchLeft", MouthStretchRight => "mouthStretchRight",
    MouthRollLower => "mouthRollLower", MouthRollUpper => "mouthRollUpper",
    MouthShrugLower => "mouthShrugLower", MouthShrugUpper => "mouthShrugUpper",
    MouthPressLeft => "mouthPressLeft", MouthPressRight => "mouthPressRight",
    MouthLowerDownLeft => "mouthLowerDownLeft", MouthLowerDownRight => "mouthLowerDownRight",
    MouthUpperUpLeft => "mouthUpperUpLeft", MouthUpperUpRight => "mouthUpperUpRight",
    BrowDownLeft => "browDownLeft", BrowDownRight => "browDownRight",
    BrowInnerUp => "browInnerUp", BrowOuterUpLeft => "browOuterUpLeft",
    BrowOuterUpRight => "browOuterUpRight", CheekPuff => "cheekPuff",
    CheekSquintLeft => "cheekSquintLeft", CheekSquintRight => "cheekSquintRight",
    NoseSneerLeft => "noseSneerLeft", NoseSneerRight => "noseSneerRight",
    TongueOut => "tongueOut",
}

impl Blendshape {
    /// The blendshapes speech moves. `lipsync` owns these; the idle animation and emotions
    /// leave them alone (smile and frown are emotion's, and speech blends over them).
    pub const SPEECH: [Blendshape; 19] = [
        Blendshape::JawOpen,
        Blendshape::JawForward,
        Blendshape::MouthClose,
        Blendshape::MouthFunnel,
        Blendshape::MouthPucker,
        Blendshape::MouthStretchLeft,
        Blendshape::MouthStretchRight,
        Blendshape::MouthRollLower,
        Blendshape::MouthRollUpper,
        Blendshape::MouthShrugLower,
        Blendshape::MouthShrugUpper,
        Blendshape::MouthPressLeft,
        Blendshape::MouthPressRight,
        Blendshape::MouthLowerDownLeft,
        Blendshape::MouthLowerDownRight,
        Blendshape::MouthUpperUpLeft,
        Blendshape::MouthUpperUpRight,
        Blendshape::TongueOut,
        Blendshape::CheekPuff,
    ];
}

/// An unknown blendshape name.
#[derive(Debug, thiserror::Error)]
#[error("unknown ARKit blendshape name '{0}'")]
pub struct UnknownBlendshape(pub String);

impl FromStr for Blendshape {
    type Err = UnknownBlendshape;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Blendshape::ALL
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBlendshape(s.to_owned()))
    }
}

/// A full set of 52 weights, indexable by [`Blendshape`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlendshapeWeights(pub [f32; 52]);

impl Default for BlendshapeWeights {
    fn default() -> Self {
        BlendshapeWeights([0.0; 52])
    }
}

impl Index<Blendshape> for BlendshapeWeights {
    type Output = f32;
    fn index(&self, b: Blendshape) -> &f32 {
        &self.0[b as usize]
    }
}

impl IndexMut<Blendshape> for BlendshapeWeights {
    fn index_mut(&mut self, b: Blendshape) -> &mut f32 {
        &mut self.0[b as usize]
    }
}

impl BlendshapeWeights {
    /// Builds weights from `(blendshape, weight)` pairs; the rest are 0.
    pub fn from_pairs(pairs: &[(Blendshape, f32)]) -> Self {
        let mut w = Self::default();
        for &(b, v) in pairs {
            w[b] = v;
        }
        w
    }

    /// The non-zero weights, by name (for logs and metas).
    pub fn iter_named(&self) -> impl Iterator<Item = (&'static str, f32)> + '_ {
        Blendshape::ALL
            .iter()
            .map(|&b| (b.name(), self[b]))
            .filter(|&(_, v)| v != 0.0)
    }

    /// `self + other * k`, clamped to 0..=1.
    pub fn add_scaled(&mut self, other: &BlendshapeWeights, k: f32) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = (*a + b * k).clamp(0.0, 1.0);
        }
    }

    /// Moves every weight towards `target` by the fraction `alpha` (0 = stay, 1 = jump).
    pub fn approach(&mut self, target: &BlendshapeWeights, alpha: f32) {
        for (a, t) in self.0.iter_mut().zip(target.0.iter()) {
            *a += (t - *a) * alpha;
        }
    }

    /// Replaces the speech blendshapes with those of `speech`, leaving the rest.
    pub fn set_speech_from(&mut self, speech: &BlendshapeWeights) {
        for b in Blendshape::SPEECH {
            self[b] = speech[b];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifty_two_unique_names_round_trip() {
        let mut names: Vec<_> = Blendshape::ALL.iter().map(|b| b.name()).collect();
        for (i, b) in Blendshape::ALL.iter().enumerate() {
            assert_eq!(*b as usize, i);
            assert_eq!(b.name().parse::<Blendshape>().unwrap(), *b);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 52);
        assert!("jawopen".parse::<Blendshape>().is_err());
    }

    #[test]
    fn approach_and_add_scaled() {
        let mut w = BlendshapeWeights::default();
        let t = BlendshapeWeights::from_pairs(&[(Blendshape::JawOpen, 1.0)]);
        w.approach(&t, 0.25);
        assert!((w[Blendshape::JawOpen] - 0.25).abs() < 1e-6);
        w.add_scaled(&t, 2.0);
        assert_eq!(w[Blendshape::JawOpen], 1.0);
        assert_eq!(w.iter_named().count(), 1);
    }
}
