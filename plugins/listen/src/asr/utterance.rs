//! The audio of one turn: kept from the pre-roll on, cut where a turn runs too long, bounded
//! everywhere else (an hour of silence keeps only the last few seconds).

use gst::ClockTime;
use std::collections::VecDeque;

/// 16 kHz mono samples.
const RATE: u64 = 16_000;
/// How much recent audio is kept while nobody speaks, to reach back to a turn's `from`: more
/// than `vad`'s largest pre-roll plus its confirmation delay.
const HISTORY: usize = 12 * RATE as usize;

pub fn samples_to_time(n: u64) -> ClockTime {
    ClockTime::from_nseconds(n * 1_000_000_000 / RATE)
}

fn time_to_samples(t: ClockTime) -> u64 {
    t.nseconds() * RATE / 1_000_000_000
}

/// What happened to the turn being collected as audio arrived.
#[derive(Debug, PartialEq)]
pub enum Collected {
    /// Audio to pass on to the recogniser of the open turn.
    Audio(Vec<i16>),
    /// The open turn reached the longest utterance: recognise it so far (`end`), then go on.
    Cut { end: ClockTime },
}

#[derive(Default)]
pub struct Utterances {
    /// Recent audio, and the time of its first sample.
    history: VecDeque<i16>,
    history_at: ClockTime,
    /// The open turn: where its current part began, and how many samples it has.
    open: Option<(ClockTime, u64)>,
}

impl Utterances {
    /// Adds audio at `at`. While a turn is open, returns what goes to its recogniser.
    pub fn push(&mut self, at: ClockTime, samples: &[i16], max: ClockTime) -> Vec<Collected> {
        let end_of_history = self.history_at + samples_to_time(self.history.len() as u64);
        if self.history.is_empty() || at.absdiff(end_of_history) > samples_to_time(160) {
            // A gap or a jump in time: the history no longer reaches back continuously.
            self.history.clear();
            self.history_at = at;
        }
        self.history.extend(samples);
        let excess = self.history.len().saturating_sub(HISTORY);
        self.history.drain(..excess);
        self.history_at += samples_to_time(excess as u64);

        let Some((part_start, mut n)) = self.open else {
            return Vec::new();
        };
        let max_samples = time_to_samples(max).max(RATE / 2);
        let mut out = Vec::new();
        let mut rest = samples;
        let mut start = part_start;
        while !rest.is_empty() {
            let room = (max_samples - n) as usize;
            if room == 0 {
                let end = start + samples_to_time(n);
                out.push(Collected::Cut { end });
                start = end;
                n = 0;
                continue;
            }
            let take = room.min(rest.len());
            out.push(Collected::Audio(rest[..take].to_vec()));
            n += take as u64;
            rest = &rest[take..];
        }
        self.open = Some((start, n));
        out
    }

    /// Opens a turn from `from`: returns the audio already heard since then.
    pub fn open(&mut self, from: ClockTime) -> Vec<i16> {
        let skip = time_to_samples(from.saturating_sub(self.history_at)) as usize;
        let kept: Vec<i16> = self.history.iter().skip(skip).copied().collect();
        let from = from.max(self.history_at);
        self.open = Some((from, kept.len() as u64));
        kept
    }

    /// Where the open turn's current part began.
    pub fn part_start(&self) -> Option<ClockTime> {
        self.open.map(|(s, _)| s)
    }

    /// Closes the open turn.
    pub fn close(&mut self) -> Option<ClockTime> {
        self.open.take().map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_reaches_back_to_its_pre_roll() {
        let mut u = Utterances::default();
        let max = ClockTime::from_seconds(30);
        let second: Vec<i16> = (0..16_000).map(|i| i as i16).collect();
        assert!(u.push(ClockTime::ZERO, &second, max).is_empty());
        // The turn starts 0.75 s in: the last quarter second is already there.
        let kept = u.open(ClockTime::from_mseconds(750));
        assert_eq!(kept.len(), 4_000);
        assert_eq!(kept[0], 12_000);
        let more = u.push(ClockTime::from_seconds(1), &[7; 160], max);
        assert_eq!(more, vec![Collected::Audio(vec![7; 160])]);
        assert_eq!(u.close(), Some(ClockTime::from_mseconds(750)));
    }

    #[test]
    fn a_long_turn_is_cut_into_parts() {
        let mut u = Utterances::default();
        let max = ClockTime::from_seconds(1);
        u.push(ClockTime::ZERO, &[0; 160], max);
        u.open(ClockTime::ZERO);
        let out = u.push(samples_to_time(160), &[1; 20_000], max);
        assert_eq!(
            out[1],
            Collected::Cut {
                end: ClockTime::from_seconds(1)
            }
        );
        assert_eq!(u.part_start(), Some(ClockTime::from_seconds(1)));
        let audio: usize = out
            .iter()
            .map(|c| match c {
                Collected::Audio(a) => a.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(audio, 20_000);
    }

    #[test]
    fn an_hour_of_silence_keeps_only_the_history() {
        let mut u = Utterances::default();
        let max = ClockTime::from_seconds(30);
        let chunk = [0i16; 320];
        for i in 0..(3600 * 50) {
            u.push(samples_to_time(i * 320), &chunk, max);
        }
        assert_eq!(u.history.len(), HISTORY);
        assert!(u.history.capacity() < 2 * HISTORY);
    }
}
