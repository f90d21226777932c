//! Sentence boundaries in streamed text.
//!
//! Speech can start as soon as the first sentence is complete, so text is split while it
//! streams in. A boundary is a terminator (`. ! ? …` and the Persian/Arabic `؟ ۔`, CJK `。！？`)
//! followed by whitespace — so "3.14", "e.g.x" and a terminator at the very end of what has
//! arrived so far wait for more text. A full stop after a known abbreviation ("Dr.", "e.g.") or
//! a single initial ("J.") is not a boundary. A blank line always is. A run of text with no
//! boundary is cut at a comma or space once it grows past `max_chars`, so one endless sentence
//! cannot hold speech back.
//!
//! [`SentenceSplitter::early_first_clause`] also ends the first piece at its first clause mark
//! (`, ; : ، ؛` followed by a space): the avatar starts talking a few tokens into the answer
//! ("Sure," … "I can help with that.") instead of after the whole first sentence; the pause
//! a comma asks for hides the seam.

/// Abbreviations that are only abbreviations before a number ("No. 5", "Fig. 2"): "no." and
/// "fig." otherwise end sentences.
const NUMBER_ABBREVIATIONS: &[&str] = &["no", "nr", "fig", "vol", "pp"];

/// Words that end with a full stop without ending the sentence (lower case, without the dot).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd",
    "co", "corp", "approx", "dept", "est", "fig", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
    "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "a.m", "p.m", "mt", "ave",
];

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '؟' | '۔' | '。' | '！' | '？')
}

/// Characters that may follow a terminator inside the sentence: closing quotes and brackets.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '»' | '*')
}

pub struct SentenceSplitter {
    buf: String,
    max_chars: usize,
    /// Until the first piece leaves: a clause mark ends it too.
    clause_ends_first: bool,
}

fn is_clause_mark(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '،' | '؛')
}

impl Default for SentenceSplitter {
    fn default() -> Self {
        Self::new(240)
    }
}

impl SentenceSplitter {
    pub fn new(max_chars: usize) -> Self {
        Self {
            buf: String::new(),
            max_chars: max_chars.max(16),
            clause_ends_first: false,
        }
    }

    /// The first piece ends at its first clause mark already (see the module's notes).
    pub fn early_first_clause(mut self) -> Self {
        self.clause_ends_first = true;
        self
    }

    /// Adds streamed text; returns the sentences it completed, trimmed, in order.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Some(end) = self.boundary() {
            let rest = self.buf.split_off(end);
            let sentence = std::mem::replace(&mut self.buf, rest);
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_owned());
                self.clause_ends_first = false;
            }
        }
        out
    }

    /// The text left when the stream ends (the last sentence may lack its full stop).
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_owned())
    }

    /// Byte offset just after the first complete sentence in the buffer.
    fn boundary(&self) -> Option<usize> {
        let chars: Vec<(usize, char)> = self.buf.char_indices().collect();
        for (k, &(i, c)) in chars.iter().enumerate() {
            if c == '\n' && chars.get(k + 1).is_some_and(|&(_, n)| n == '\n') {
                return Some(i + 1);
            }
            if self.clause_ends_first && is_clause_mark(c) {
                match chars.get(k + 1) {
                    None => return None, // wait: "1,5" is not a clause
                    Some(&(end, n)) if n.is_whitespace() => return Some(end),
                    _ => {}
                }
            }
            if !is_terminator(c) {
                continue;
            }
            // Skip repeated terminators and closing quotes: "Really?!" and 'He said "no."'.
            let mut j = k + 1;
            while j < chars.len() && (is_terminator(chars[j].1) || is_closer(chars[j].1)) {
                j += 1;
            }
            let Some(&(end, next)) = chars.get(j) else {
                return None; // the next character has not arrived: wait
            };
            if !next.is_whitespace() {
                continue;
            }
            if c == '.' && self.is_abbreviation(i) {
                continue;
            }
            return Some(end);
        }
        // No boundary: cut an overlong run at its last comma, else its last space.
        if chars.len() > self.max_chars {
            let limit = chars[self.max_chars].0;
            let head = &self.buf[..limit];
            let cut = head
                .rfind([',', '،', ';', ':'])
                .map(|p| p + 1)
                .or_else(|| head.rfind(' '));
            return Some(cut.filter(|&p| p > 0).unwrap_or(limit));
        }
        None
    }

    /// Whether the full stop at byte `dot` ends an abbreviation or an initial.
    fn is_abbreviation(&self, dot: usize) -> bool {
        let before = &self.buf[..dot];
        let word = before
            .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"')
            .next()
            .unwrap_or("");
        let lower = word.to_lowercase();
        if ABBREVIATIONS.contains(&lower.as_str()) {
            return true;
        }
        if NUMBER_ABBREVIATIONS.contains(&lower.as_str()) {
            let after = self.buf[dot + 1..].trim_start();
            return after.starts_with(|c: char| c.is_ascii_digit());
        }
        // A single capital letter: an initial, as in "J. R. R. Tolkien".
        let mut letters = word.chars();
        matches!((letters.next(), letters.next()), (Some(l), None) if l.is_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_stream(pieces: &[&str]) -> Vec<String> {
        let mut s = SentenceSplitter::default();
        let mut out: Vec<String> = pieces.iter().flat_map(|p| s.push(p)).collect();
        out.extend(s.finish());
        out
    }

    #[test]
    fn sentences_complete_as_soon_as_the_next_word_starts() {
        let mut s = SentenceSplitter::default();
        assert_eq!(
            s.push("Hello there."),
            Vec::<String>::new(),
            "waits for what follows"
        );
        assert_eq!(s.push(" How are"), vec!["Hello there."]);
        assert_eq!(s.push(" you?"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("How are you?"));
    }

    #[test]
    fn abbreviations_numbers_and_initials_do_not_split() {
        let got = split_stream(&[
            "Dr. Smith paid $3.50 for it, e.g. a coffee at No. 5 Main St. in town. ",
            "J. R. R. Tolkien wrote it in 1937. Really?! Yes.",
        ]);
        assert_eq!(
            got,
            [
                "Dr. Smith paid $3.50 for it, e.g. a coffee at No. 5 Main St. in town.",
                "J. R. R. Tolkien wrote it in 1937.",
                "Really?!",
                "Yes."
            ]
        );
    }

    #[test]
    fn quotes_ellipses_and_blank_lines() {
        let got = split_stream(&["He said \"no.\" Then… silence\n\nNew paragraph"]);
        assert_eq!(
            got,
            ["He said \"no.\"", "Then…", "silence", "New paragraph"]
        );
    }

    #[test]
    fn persian_and_arabic_punctuation() {
        let got = split_stream(&["سلام! حال شما چطور است؟ من خوبم. ", "ممنون"]);
        assert_eq!(got, ["سلام!", "حال شما چطور است؟", "من خوبم.", "ممنون"]);
    }

    #[test]
    fn text_split_anywhere_gives_the_same_sentences() {
        let text = "First one. Second, with a comma! Third? سلام؟ Last";
        let whole = split_stream(&[text]);
        // Every split point, including inside multi-byte characters' neighbours.
        let chars: Vec<char> = text.chars().collect();
        for cut in 0..chars.len() {
            let a: String = chars[..cut].iter().collect();
            let b: String = chars[cut..].iter().collect();
            assert_eq!(split_stream(&[&a, &b]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn the_first_clause_can_leave_early() {
        let mut s = SentenceSplitter::default().early_first_clause();
        assert!(
            s.push("Sure,").is_empty(),
            "waits for what follows the comma"
        );
        assert_eq!(s.push(" I can help"), ["Sure,"]);
        // Only the first piece: later commas wait for the end of their sentence.
        assert!(s.push(" with that, and more").is_empty());
        assert_eq!(s.push(". Next"), ["I can help with that, and more."]);
        let mut s = SentenceSplitter::default().early_first_clause();
        assert_eq!(
            s.push("It costs $1,500, roughly. "),
            ["It costs $1,500,", "roughly."]
        );
        let mut s = SentenceSplitter::default().early_first_clause();
        assert_eq!(s.push("سلام، خوش آمدید"), ["سلام،"]);
    }

    #[test]
    fn endless_sentences_are_cut_at_a_comma() {
        let mut s = SentenceSplitter::new(40);
        let out = s.push("This sentence goes on and on, and on and on and on without end");
        assert_eq!(out, ["This sentence goes on and on,"]);
    }
}
