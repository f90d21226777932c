//! What `lipsync` knows of the audio: its samples (mono, on the running-time axis) and the
//! phonemes announced for it. Both are kept only as far back as the engine needs.

use facecast_common::Viseme;
use gst::prelude::*;
use std::collections::VecDeque;

/// Mono audio samples placed on the running-time axis, continuous by construction.
#[derive(Debug, Clone)]
pub struct AudioTimeline {
    rate: u32,
    /// Running time of `samples[0]`; `None` until the first audio arrives.
    start: Option<gst::ClockTime>,
    samples: VecDeque<f32>,
}

impl AudioTimeline {
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            start: None,
            samples: VecDeque::new(),
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn start(&self) -> Option<gst::ClockTime> {
        self.start
    }

    fn time_of(&self, sample: u64) -> gst::ClockTime {
        self.start.unwrap_or(gst::ClockTime::ZERO)
            + gst::ClockTime::SECOND
                .mul_div_floor(sample, self.rate as u64)
                .unwrap_or_default()
    }

    /// Index of the sample at running time `t` (may be negative or beyond the end).
    fn index_of(&self, t: gst::ClockTime) -> i64 {
        let start = self.start.unwrap_or(gst::ClockTime::ZERO);
        let (d, neg) = if t >= start {
            (t - start, false)
        } else {
            (start - t, true)
        };
        let n = d
            .nseconds()
            .mul_div_round(self.rate as u64, gst::ClockTime::SECOND.nseconds())
            .unwrap_or(0) as i64;
        if neg {
            -n
        } else {
            n
        }
    }

    /// Running time just after the last sample; `None` before any audio.
    pub fn end(&self) -> Option<gst::ClockTime> {
        self.start?;
        Some(self.time_of(self.samples.len() as u64))
    }

    /// Appends samples that start at running time `at`. A gap is filled with silence (the
    /// timeline stays continuous); samples overlapping what is already there are dropped.
    pub fn append(&mut self, at: gst::ClockTime, samples: &[f32]) {
        if self.start.is_none() {
            self.start = Some(at);
        }
        let idx = self.index_of(at);
        let len = self.samples.len() as i64;
        if idx > len {
            self.samples
                .extend(std::iter::repeat_n(0.0, (idx - len) as usize));
        }
        let skip = (len - idx).max(0) as usize;
        if skip < samples.len() {
            self.samples.extend(&samples[skip..]);
        }
    }

    /// Extends the timeline with silence up to `t` (for gaps announced without buffers).
    pub fn extend_silence_to(&mut self, t: gst::ClockTime) {
        if self.start.is_none() {
            self.start = Some(t);
            return;
        }
        let idx = self.index_of(t);
        let len = self.samples.len() as i64;
        if idx > len {
            self.samples
                .extend(std::iter::repeat_n(0.0, (idx - len) as usize));
        }
    }

    /// The samples in `[from, to)`, zero where the timeline has none.
    pub fn window(&self, from: gst::ClockTime, to: gst::ClockTime, out: &mut Vec<f32>) {
        out.clear();
        let (a, b) = (self.index_of(from), self.index_of(to));
        let len = self.samples.len() as i64;
        for i in a..b.max(a) {
            out.push(if (0..len).contains(&i) {
                self.samples[i as usize]
            } else {
                0.0
            });
        }
    }

    /// `count` samples starting `offset` samples after (or, negative, before) the sample at
    /// running time `at`, zero where the timeline has none. Sample-exact, unlike [`window`]
    /// (Self::window), which rounds both ends to the nearest sample.
    pub fn samples_from(&self, at: gst::ClockTime, offset: i64, count: usize, out: &mut Vec<f32>) {
        out.clear();
        let a = self.index_of(at) + offset;
        let len = self.samples.len() as i64;
        out.extend((a..a + count as i64).map(|i| {
            if (0..len).contains(&i) {
                self.samples[i as usize]
            } else {
                0.0
            }
        }));
    }

    /// Forgets samples before running time `t`.
    pub fn trim_before(&mut self, t: gst::ClockTime) {
        let idx = self.index_of(t);
        if idx > 0 {
            let n = (idx as usize).min(self.samples.len());
            self.samples.drain(..n);
            self.start = Some(self.time_of(n as u64));
        }
    }
}

/// One announced phoneme on the running-time axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedViseme {
    pub start: gst::ClockTime,
    pub end: gst::ClockTime,
    pub viseme: Viseme,
}

/// The phonemes announced so far, in time order.
#[derive(Debug, Clone, Default)]
pub struct PhonemeTimeline {
    items: VecDeque<TimedViseme>,
    /// Has this stream ever announced phonemes? Then silence between them means "mouth at
    /// rest", and the audio-analysis fallback is not used.
    announced: bool,
}

impl PhonemeTimeline {
    pub fn push(&mut self, item: TimedViseme) {
        self.announced = true;
        // Keep order even if a producer sends slightly out of order.
        let pos = self
            .items
            .iter()
            .rposition(|i| i.start <= item.start)
            .map_or(0, |p| p + 1);
        self.items.insert(pos, item);
    }

    pub fn announced(&self) -> bool {
        self.announced
    }

    /// The viseme sounding at `t`, or silence.
    pub fn at(&self, t: gst::ClockTime) -> Viseme {
        self.items
            .iter()
            .rev()
            .find(|i| i.start <= t)
            .filter(|i| t < i.end)
            .map_or(Viseme::Sil, |i| i.viseme)
    }

    pub fn trim_before(&mut self, t: gst::ClockTime) {
        while self.items.front().is_some_and(|i| i.end < t) {
            self.items.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gst::ClockTime as T;

    #[test]
    fn gaps_become_silence_and_overlaps_are_dropped() {
        let mut tl = AudioTimeline::new(1000);
        tl.append(T::from_mseconds(100), &[1.0; 10]);
        assert_eq!(tl.end(), Some(T::from_mseconds(110)));
        tl.append(T::from_mseconds(115), &[2.0; 5]);
        tl.append(T::from_mseconds(118), &[3.0; 4]);
        assert_eq!(tl.end(), Some(T::from_mseconds(122)));
        let mut w = Vec::new();
        tl.window(T::from_mseconds(108), T::from_mseconds(123), &mut w);
        assert_eq!(
            w,
            [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 0.0]
        );
        tl.trim_before(T::from_mseconds(115));
        assert_eq!(tl.start(), Some(T::from_mseconds(115)));
        assert_eq!(tl.end(), Some(T::from_mseconds(122)));
    }

    #[test]
    fn phoneme_lookup() {
        let mut p = PhonemeTimeline::default();
        p.push(TimedViseme {
            start: T::from_mseconds(100),
            end: T::from_mseconds(200),
            viseme: Viseme::AA,
        });
        p.push(TimedViseme {
            start: T::from_mseconds(50),
            end: T::from_mseconds(100),
            viseme: Viseme::PP,
        });
        assert_eq!(p.at(T::from_mseconds(60)), Viseme::PP);
        assert_eq!(p.at(T::from_mseconds(150)), Viseme::AA);
        assert_eq!(p.at(T::from_mseconds(250)), Viseme::Sil);
        assert_eq!(p.at(T::from_mseconds(10)), Viseme::Sil);
        assert!(p.announced());
    }
}
