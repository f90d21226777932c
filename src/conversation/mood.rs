//! The mood of a sentence, for the avatar's expression while it says it.
//!
//! Two sources, in this order: a tag the language model was asked to start sentences with
//! (`[happy]`, `[concerned:0.8]`; stripped before speaking, so it is never read aloud), else a
//! small lexicon of English and Persian cue words with negation, exclamation and question
//! handling. Either runs in microseconds, so the first sentence is not delayed.

use facecast_common::Emotion;

/// The emotion and intensity (0..=1) of one sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mood {
    pub emotion: Emotion,
    pub intensity: f32,
}

impl Mood {
    pub const NEUTRAL: Mood = Mood {
        emotion: Emotion::Neutral,
        intensity: 0.3,
    };
}

/// Cue words (lower case; Persian as written) and how strongly each signals its emotion.
const LEXICON: &[(Emotion, &[&str])] = &[
    (
        Emotion::Happy,
        &[
            "great",
            "glad",
            "happy",
            "wonderful",
            "excellent",
            "congratulations",
            "love",
            "delighted",
            "fantastic",
            "awesome",
            "enjoy",
            "pleased",
            "thank",
            "good",
            "excited",
            "nice",
            "خوشحال",
            "عالی",
            "تبریک",
            "ممنون",
            "متشکرم",
            "خوب",
        ],
    ),
    (
        Emotion::Confident,
        &[
            "definitely",
            "certainly",
            "clearly",
            "recommend",
            "strong",
            "will",
            "sure",
            "guarantee",
            "proven",
            "confident",
            "absolutely",
            "solid",
            "best",
            "should",
            "قطعا",
            "حتما",
            "مطمئن",
            "پیشنهاد",
        ],
    ),
    (
        Emotion::Thoughtful,
        &[
            "consider",
            "perhaps",
            "maybe",
            "might",
            "depends",
            "think",
            "however",
            "although",
            "option",
            "options",
            "question",
            "let's see",
            "on the other hand",
            "wonder",
            "possibly",
            "شاید",
            "بستگی",
            "فکر",
            "اما",
        ],
    ),
    (
        Emotion::Concerned,
        &[
            "sorry",
            "unfortunately",
            "risk",
            "risky",
            "worry",
            "worried",
            "careful",
            "loss",
            "lose",
            "problem",
            "difficult",
            "danger",
            "warning",
            "afraid",
            "bad",
            "debt",
            "volatile",
            "error",
            "متاسفانه",
            "ببخشید",
            "خطر",
            "ریسک",
            "نگران",
            "مشکل",
        ],
    ),
];

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "don't", "doesn't", "isn't", "won't", "نه", "نمی",
];

/// Strips a leading `[emotion]` or `[emotion:intensity]` tag; returns it (if it names an
/// emotion) and the text to speak.
pub fn strip_tag(sentence: &str) -> (Option<Mood>, &str) {
    let trimmed = sentence.trim_start();
    let Some(rest) = trimmed.strip_prefix('[') else {
        return (None, sentence);
    };
    let Some(close) = rest.find(']') else {
        return (None, sentence);
    };
    let tag = &rest[..close];
    let (name, intensity) = match tag.split_once(':') {
        Some((n, i)) => (n, i.trim().parse::<f32>().ok()),
        None => (tag, None),
    };
    match name.trim().parse::<Emotion>() {
        Ok(emotion) => (
            Some(Mood {
                emotion,
                intensity: intensity.unwrap_or(0.6).clamp(0.0, 1.0),
            }),
            rest[close + 1..].trim_start(),
        ),
        Err(_) => (None, sentence),
    }
}

/// The mood of a sentence from its words.
pub fn classify(sentence: &str) -> Mood {
    let lower = sentence.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{200c}'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut scores = [0f32; 5];
    let index = |e: Emotion| Emotion::ALL.iter().position(|&x| x == e).unwrap_or(0);
    for (emotion, cues) in LEXICON {
        for cue in *cues {
            let hits: Vec<usize> = if cue.contains(' ') {
                lower.match_indices(cue).map(|_| usize::MAX).collect()
            } else {
                words
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.starts_with(cue) && w.len() <= cue.len() + 3)
                    .map(|(i, _)| i)
                    .collect()
            };
            for at in hits {
                // "not good" is no reason to beam: a negated positive cue reads as concern.
                let negated = at != usize::MAX
                    && (at.saturating_sub(2)..at).any(|j| NEGATIONS.contains(&words[j]));
                match (emotion, negated) {
                    (Emotion::Happy | Emotion::Confident, true) => {
                        scores[index(Emotion::Concerned)] += 1.0
                    }
                    (e, _) => scores[index(*e)] += 1.0,
                }
            }
        }
    }
    if sentence.contains('!') {
        scores[index(Emotion::Happy)] *= 1.3;
        scores[index(Emotion::Confident)] += 0.3;
    }
    if sentence.trim_end().ends_with(['?', '؟']) {
        scores[index(Emotion::Thoughtful)] += 0.8;
    }
    let (best, &score) = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .expect("five scores");
    if score < 0.75 {
        return Mood::NEUTRAL;
    }
    Mood {
        emotion: Emotion::ALL[best],
        intensity: (0.4 + 0.2 * score).min(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_and_stripped() {
        assert_eq!(
            strip_tag("[happy] Great to see you!"),
            (
                Some(Mood {
                    emotion: Emotion::Happy,
                    intensity: 0.6
                }),
                "Great to see you!"
            )
        );
        let (mood, text) = strip_tag("[concerned:0.9]That is a risk.");
        assert_eq!(mood.unwrap().intensity, 0.9);
        assert_eq!(text, "That is a risk.");
        assert_eq!(strip_tag("[note] keep"), (None, "[note] keep"));
        assert_eq!(strip_tag("No tag here."), (None, "No tag here."));
        assert_eq!(strip_tag("[happy"), (None, "[happy"));
    }

    #[test]
    fn cue_words_pick_the_mood() {
        let e = |s: &str| classify(s).emotion;
        assert_eq!(
            e("Congratulations, that is wonderful news!"),
            Emotion::Happy
        );
        assert_eq!(
            e("I definitely recommend a diversified index fund."),
            Emotion::Confident
        );
        assert_eq!(
            e("Unfortunately, that carries a real risk of loss."),
            Emotion::Concerned
        );
        assert_eq!(
            e("Perhaps you could consider other options?"),
            Emotion::Thoughtful
        );
        assert_eq!(e("The meeting is at three."), Emotion::Neutral);
        assert_eq!(e("That is not good."), Emotion::Concerned);
        assert_eq!(
            e("متاسفانه این سرمایه گذاری ریسک دارد."),
            Emotion::Concerned
        );
        assert_eq!(e("تبریک! عالی است."), Emotion::Happy);
    }

    #[test]
    fn it_takes_microseconds() {
        let sentence = "Unfortunately, I think that investment carries a real risk, so consider other options.";
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(classify(sentence));
        }
        let per = started.elapsed() / 1000;
        assert!(
            per < std::time::Duration::from_millis(1),
            "{per:?} per sentence"
        );
    }
}
