//! Phonemes → visemes → mouth blendshapes.
//!
//! espeak-ng reports phonemes in IPA (with `espeakINITIALIZE_PHONEME_IPA`), whatever the language,
//! so one table serves English, Persian and every other voice. The 15 viseme classes are the
//! widely used Oculus/MPEG-4 set; each has a mouth pose expressed as ARKit blendshapes.

use crate::blendshapes::{Blendshape as B, BlendshapeWeights};
use std::fmt;
use std::str::FromStr;

/// A mouth shape class shared by several phonemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Viseme {
    /// Silence: mouth at rest.
    Sil,
    /// p, b, m: lips pressed together.
    PP,
    /// f, v: lower lip under the upper teeth.
    FF,
    /// θ, ð: tongue between the teeth.
    TH,
    /// t, d: tongue behind the teeth, mouth slightly open.
    DD,
    /// k, g, ŋ, h: back of the tongue, mouth half open.
    KK,
    /// tʃ, dʒ, ʃ, ʒ: lips pushed forward.
    CH,
    /// s, z: teeth together, lips spread.
    SS,
    /// n, l: mouth slightly open.
    NN,
    /// r: lips slightly rounded.
    RR,
    /// a, ɑ, æ, ʌ: jaw wide open.
    AA,
    /// e, ɛ, ə: mid open, lips spread.
    E,
    /// i, ɪ, j: nearly closed, lips spread.
    IH,
    /// o, ɔ: open and rounded.
    OH,
    /// u, ʊ, w: rounded and pushed forward.
    OU,
}

impl Viseme {
    pub const ALL: [Viseme; 15] = [
        Viseme::Sil,
        Viseme::PP,
        Viseme::FF,
        Viseme::TH,
        Viseme::DD,
        Viseme::KK,
        Viseme::CH,
        Viseme::SS,
        Viseme::NN,
        Viseme::RR,
        Viseme::AA,
        Viseme::E,
        Viseme::IH,
        Viseme::OH,
        Viseme::OU,
    ];

    /// The conventional short name (`sil`, `PP`, `aa`, …).
    pub fn name(self) -> &'static str {
        match self {
            Viseme::Sil => "sil",
            Viseme::PP => "PP",
            Viseme::FF => "FF",
            Viseme::TH => "TH",
            Viseme::DD => "DD",
            Viseme::KK => "kk",
            Viseme::CH => "CH",
            Viseme::SS => "SS",
            Viseme::NN => "nn",
            Viseme::RR => "RR",
            Viseme::AA => "aa",
            Viseme::E => "E",
            Viseme::IH => "ih",
            Viseme::OH => "oh",
            Viseme::OU => "ou",
        }
    }

    /// Is this a vowel (the mouth opens for it)?
    pub fn is_vowel(self) -> bool {
        matches!(
            self,
            Viseme::AA | Viseme::E | Viseme::IH | Viseme::OH | Viseme::OU
        )
    }

    /// Classifies one IPA phoneme as espeak-ng prints it (`ˈaʊ`, `tʃ`, `uː`, `_:`…).
    /// Stress and length marks are ignored; diphthongs take the shape of their first vowel.
    pub fn from_ipa(phoneme: &str) -> Viseme {
        let core: String = phoneme
            .chars()
            .filter(|c| {
                !matches!(
                    c,
                    'ˈ' | 'ˌ' | 'ː' | 'ˑ' | '\u{0303}' | '\u{0329}' | '\u{032f}'
                )
            })
            .collect();
        if core.starts_with("tʃ") || core.starts_with("dʒ") || core.starts_with("ts") {
            return if core.starts_with("ts") {
                Viseme::SS
            } else {
                Viseme::CH
            };
        }
        let Some(first) = core.chars().next() else {
            return Viseme::Sil;
        };
        match first {
            '_' | ' ' | '|' | '#' => Viseme::Sil,
            'p' | 'b' | 'm' | 'ɱ' => Viseme::PP,
            'f' | 'v' | 'ʋ' => Viseme::FF,
            'θ' | 'ð' => Viseme::TH,
            't' | 'd' | 'ʈ' | 'ɖ' | 'ʔ' | 'c' | 'ɟ' => Viseme::DD,
            'k' | 'g' | 'ɡ' | 'ŋ' | 'x' | 'ɣ' | 'q' | 'ɢ' | 'χ' | 'h' | 'ɦ' | 'ħ' | 'ʕ' => {
                Viseme::KK
            }
            'ʃ' | 'ʒ' | 'ɕ' | 'ʑ' => Viseme::CH,
            's' | 'z' => Viseme::SS,
            'n' | 'l' | 'ɲ' | 'ɫ' | 'ɬ' | 'ʎ' | 'ɭ' | 'ɳ' => Viseme::NN,
            'r' | 'ɹ' | 'ɾ' | 'ʁ' | 'ɻ' | 'ʀ' | 'ɚ' | 'ɝ' => Viseme::RR,
            'a' | 'ɑ' | 'ɐ' | 'æ' | 'ʌ' | 'ɶ' => Viseme::AA,
            'e' | 'ɛ' | 'ə' | 'ɜ' | 'ɘ' | 'ɵ' => Viseme::E,
            'i' | 'ɪ' | 'j' | 'y' | 'ʏ' | 'ɨ' | 'ɯ' => Viseme::IH,
            'o' | 'ɔ' | 'ɒ' | 'ø' | 'œ' => Viseme::OH,
            'u' | 'ʊ' | 'w' | 'ʉ' | 'ɥ' => Viseme::OU,
            _ => Viseme::NN,
        }
    }

    /// The mouth pose of this viseme at full strength.
    pub fn mouth_pose(self) -> BlendshapeWeights {
        let pairs: &[(B, f32)] = match self {
            Viseme::Sil => &[],
            Viseme::PP => &[
                (B::MouthClose, 0.5),
                (B::MouthPressLeft, 0.6),
                (B::MouthPressRight, 0.6),
            ],
            Viseme::FF => &[
                (B::JawOpen, 0.08),
                (B::MouthRollLower, 0.7),
                (B::MouthUpperUpLeft, 0.25),
                (B::MouthUpperUpRight, 0.25),
            ],
            Viseme::TH => &[(B::JawOpen, 0.16), (B::TongueOut, 0.45)],
            Viseme::DD => &[
                (B::JawOpen, 0.22),
                (B::MouthStretchLeft, 0.15),
                (B::MouthStretchRight, 0.15),
            ],
            Viseme::KK => &[
                (B::JawOpen, 0.26),
                (B::MouthStretchLeft, 0.1),
                (B::MouthStretchRight, 0.1),
            ],
            Viseme::CH => &[
                (B::JawOpen, 0.14),
                (B::MouthFunnel, 0.55),
                (B::MouthPucker, 0.25),
                (B::MouthShrugUpper, 0.3),
            ],
            Viseme::SS => &[
                (B::JawOpen, 0.07),
                (B::MouthStretchLeft, 0.4),
                (B::MouthStretchRight, 0.4),
                (B::MouthUpperUpLeft, 0.2),
                (B::MouthUpperUpRight, 0.2),
            ],
            Viseme::NN => &[
                (B::JawOpen, 0.18),
                (B::MouthStretchLeft, 0.08),
                (B::MouthStretchRight, 0.08),
            ],
            Viseme::RR => &[
                (B::JawOpen, 0.18),
                (B::MouthFunnel, 0.35),
                (B::MouthPucker, 0.25),
            ],
            Viseme::AA => &[
                (B::JawOpen, 0.72),
                (B::MouthLowerDownLeft, 0.35),
                (B::MouthLowerDownRight, 0.35),
                (B::MouthStretchLeft, 0.1),
                (B::MouthStretchRight, 0.1),
            ],
            Viseme::E => &[
                (B::JawOpen, 0.45),
                (B::MouthStretchLeft, 0.4),
                (B::MouthStretchRight, 0.4),
                (B::MouthLowerDownLeft, 0.2),
                (B::MouthLowerDownRight, 0.2),
            ],
            Viseme::IH => &[
                (B::JawOpen, 0.3),
                (B::MouthStretchLeft, 0.5),
                (B::MouthStretchRight, 0.5),
            ],
            Viseme::OH => &[
                (B::JawOpen, 0.52),
                (B::MouthFunnel, 0.65),
                (B::MouthPucker, 0.2),
            ],
            Viseme::OU => &[
                (B::JawOpen, 0.26),
                (B::MouthPucker, 0.8),
                (B::MouthFunnel, 0.35),
            ],
        };
        BlendshapeWeights::from_pairs(pairs)
    }
}

impl fmt::Display for Viseme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown viseme name.
#[derive(Debug, thiserror::Error)]
#[error("unknown viseme '{0}'")]
pub struct UnknownViseme(pub String);

impl FromStr for Viseme {
    type Err = UnknownViseme;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Viseme::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| UnknownViseme(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_and_persian_ipa_classify() {
        // "hello how are you" as espeak-ng reports it in IPA.
        let got: Vec<_> = ["h", "ə", "l", "ˈoʊ", "h", "ˈaʊ", "ɑːɹ", "j", "uː"]
            .iter()
            .map(|p| Viseme::from_ipa(p))
            .collect();
        use Viseme::*;
        assert_eq!(got, [KK, E, NN, OH, KK, AA, AA, IH, OU]);
        // Persian "salâm chetorid": s a l ɑ m tʃ e t o r i d.
        let fa: Vec<_> = ["s", "a", "l", "ɑ", "m", "tʃ", "e", "t", "o", "r", "i", "d"]
            .iter()
            .map(|p| Viseme::from_ipa(p))
            .collect();
        assert_eq!(fa, [SS, AA, NN, AA, PP, CH, E, DD, OH, RR, IH, DD]);
        assert_eq!(Viseme::from_ipa("_:"), Sil);
        assert_eq!(Viseme::from_ipa(""), Sil);
    }

    #[test]
    fn vowels_open_the_jaw_and_bilabials_close_it() {
        for v in Viseme::ALL {
            let jaw = v.mouth_pose()[B::JawOpen];
            if v.is_vowel() {
                assert!(jaw >= 0.25, "{v} opens the jaw");
            }
            assert_eq!(v.name().parse::<Viseme>().unwrap(), v);
        }
        assert_eq!(Viseme::PP.mouth_pose()[B::JawOpen], 0.0);
        assert!(Viseme::AA.mouth_pose()[B::JawOpen] > 0.6);
    }
}
