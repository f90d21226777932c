//! Turns from frame probabilities: when speech is confirmed and when a turn has ended. Pure
//! (no audio, no model), so the rules are tested on their own.
//!
//! Speech may have begun at the first frame at or above `threshold` (a [`Turn::Possible`]: a
//! listener that must react fast, such as barge-in, can hold the avatar's voice there), and is
//! confirmed once
//! `min_speech` of frames at or above it have followed without a silence of `end_silence`
//! between them; a candidate followed by as much silence as the speech it needs is dropped
//! (a cough or a click is not a turn, nor the start of the next one). The turn ends once a run of frames below
//! `threshold - 0.15` (Silero's hysteresis) has lasted `end_silence`; the speech itself ended
//! with the last frame at or above `threshold` (the model's probability lingers a frame or
//! three after the sound stops).

use gst::ClockTime;

/// Silence that drops an unconfirmed start, at least (else `min_speech`).
const UNCONFIRMED_SILENCE: ClockTime = ClockTime::from_mseconds(100);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnRules {
    pub threshold: f32,
    pub min_speech: ClockTime,
    pub end_silence: ClockTime,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Turn {
    /// A frame of speech with no turn open: it may be the start of one.
    Possible { start: ClockTime },
    /// The possible start was a click or a breath: no turn began at `start`.
    Dismissed { start: ClockTime },
    /// Speech confirmed; it began at `start`.
    Started { start: ClockTime },
    /// The turn that began at `start` ended at `end` (`end_silence` ago).
    Ended { start: ClockTime, end: ClockTime },
}

#[derive(Debug, Default)]
pub struct TurnTracker {
    /// First speech frame of a candidate or confirmed turn.
    start: Option<ClockTime>,
    /// Speech heard since `start`.
    speech: ClockTime,
    confirmed: bool,
    /// Where the current run of silence began.
    silence_from: Option<ClockTime>,
    /// The end of the last frame at or above the threshold.
    last_speech_end: Option<ClockTime>,
}

impl TurnTracker {
    /// Feeds one frame (`at`, `duration`) of probability `p`; returns what it decided.
    pub fn frame(
        &mut self,
        rules: &TurnRules,
        at: ClockTime,
        duration: ClockTime,
        p: f32,
    ) -> Option<Turn> {
        let end = at + duration;
        if p >= rules.threshold {
            self.silence_from = None;
            self.last_speech_end = Some(end);
            let new = self.start.is_none();
            let start = *self.start.get_or_insert(at);
            self.speech += duration;
            if !self.confirmed && self.speech >= rules.min_speech {
                self.confirmed = true;
                return Some(Turn::Started { start });
            }
            return new.then_some(Turn::Possible { start });
        }
        let start = self.start?;
        if p >= rules.threshold - 0.15 {
            // In between: neither new speech nor the start of the silence that ends a turn.
            return None;
        }
        let silence_from = *self.silence_from.get_or_insert(at);
        let silent = end.saturating_sub(silence_from);
        if !self.confirmed && silent >= rules.min_speech.max(UNCONFIRMED_SILENCE) {
            // A click or a breath, then quiet: not the start of a turn. (Kept, it would make
            // a turn confirmed later seem to start at the click.)
            *self = Self::default();
            return Some(Turn::Dismissed { start });
        }
        if silent < rules.end_silence {
            return None;
        }
        let confirmed = self.confirmed;
        let speech_end = self.last_speech_end.unwrap_or(silence_from);
        *self = Self::default();
        confirmed.then_some(Turn::Ended {
            start,
            end: speech_end,
        })
    }

    /// Whether a confirmed turn is open.
    pub fn speaking(&self) -> bool {
        self.confirmed
    }

    /// Ends an open turn at `at` (end of stream, or the stream being reset); a possible start
    /// not yet confirmed is dismissed (a listener holding something for it lets go).
    pub fn finish(&mut self, at: ClockTime) -> Option<Turn> {
        let turn = match (self.start, self.confirmed) {
            (Some(start), true) => Some(Turn::Ended {
                start,
                end: self.last_speech_end.or(self.silence_from).unwrap_or(at),
            }),
            (Some(start), false) => Some(Turn::Dismissed { start }),
            (None, _) => None,
        };
        *self = Self::default();
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: ClockTime = ClockTime::from_mseconds(32);

    fn run(probs: &[f32]) -> Vec<(usize, Turn)> {
        let rules = TurnRules {
            threshold: 0.5,
            min_speech: ClockTime::from_mseconds(96),
            end_silence: ClockTime::from_mseconds(320),
        };
        let mut t = TurnTracker::default();
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| t.frame(&rules, FRAME * i as u64, FRAME, p).map(|d| (i, d)))
            .collect()
    }

    #[test]
    fn a_turn_starts_where_speech_does_and_ends_where_it_stops() {
        let mut p = vec![0.0; 5];
        p.extend([0.9; 20]);
        p.extend([0.05; 15]);
        let turns = run(&p);
        assert_eq!(
            turns,
            vec![
                (5, Turn::Possible { start: FRAME * 5 }),
                (7, Turn::Started { start: FRAME * 5 }),
                (
                    34,
                    Turn::Ended {
                        start: FRAME * 5,
                        end: FRAME * 25
                    }
                )
            ]
        );
    }

    #[test]
    fn a_click_is_not_a_turn_and_short_pauses_do_not_end_one() {
        // Two frames of speech: below the minimum, possible and then dismissed.
        let mut p = vec![0.9, 0.9];
        p.extend([0.0; 20]);
        assert_eq!(
            run(&p),
            vec![
                (
                    0,
                    Turn::Possible {
                        start: ClockTime::ZERO
                    }
                ),
                (
                    5,
                    Turn::Dismissed {
                        start: ClockTime::ZERO
                    }
                )
            ]
        );
        // A 200 ms pause inside speech (below the 320 ms end of turn) keeps the turn open,
        // and frames between the two thresholds neither extend nor end it.
        let mut p = vec![0.9; 5];
        p.extend([0.0; 6]);
        p.extend([0.9; 5]);
        p.extend([0.4; 3]);
        p.extend([0.0; 12]);
        let turns = run(&p);
        assert_eq!(turns.len(), 3, "{turns:?}");
        assert_eq!(
            turns[2].1,
            Turn::Ended {
                start: ClockTime::ZERO,
                end: FRAME * 16
            }
        );
    }

    #[test]
    fn a_click_before_speech_does_not_move_its_start() {
        let mut p = vec![0.9];
        p.extend([0.0; 10]);
        p.extend([0.9; 10]);
        p.extend([0.0; 12]);
        let turns = run(&p);
        assert_eq!(
            turns,
            vec![
                (
                    0,
                    Turn::Possible {
                        start: ClockTime::ZERO
                    }
                ),
                (
                    4,
                    Turn::Dismissed {
                        start: ClockTime::ZERO
                    }
                ),
                (11, Turn::Possible { start: FRAME * 11 }),
                (13, Turn::Started { start: FRAME * 11 }),
                (
                    30,
                    Turn::Ended {
                        start: FRAME * 11,
                        end: FRAME * 21
                    }
                ),
            ]
        );
    }

    #[test]
    fn the_end_of_the_stream_ends_an_open_turn() {
        let rules = TurnRules {
            threshold: 0.5,
            min_speech: FRAME,
            end_silence: ClockTime::from_seconds(1),
        };
        let mut t = TurnTracker::default();
        t.frame(&rules, ClockTime::ZERO, FRAME, 0.9);
        assert!(t.speaking());
        assert_eq!(
            t.finish(FRAME),
            Some(Turn::Ended {
                start: ClockTime::ZERO,
                end: FRAME
            })
        );
        assert_eq!(t.finish(FRAME), None);
        // A possible start is let go of at the end.
        let rules = TurnRules {
            min_speech: FRAME * 3,
            ..rules
        };
        assert_eq!(
            t.frame(&rules, ClockTime::ZERO, FRAME, 0.9),
            Some(Turn::Possible {
                start: ClockTime::ZERO
            })
        );
        assert_eq!(
            t.finish(FRAME),
            Some(Turn::Dismissed {
                start: ClockTime::ZERO
            })
        );
    }
}
