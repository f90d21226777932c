//! `say` → first lip-synced frame out of the encoder, per session: the figure the
//! `facecast_say_to_first_frame_seconds` histogram and `facecast bench --serve` report.
//!
//! A `say` is noted when asked; `speechsynth`'s speech-started message gives the running time
//! its audio starts at; the first encoded frame ending after that time completes it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many recent figures a session keeps (for benchmarks).
const KEPT: usize = 1000;

/// A `say` waiting for its first frame: when it was asked, and (once speech started) the
/// running time its audio starts at.
struct PendingSay {
    asked: Instant,
    starts_at: Option<gst::ClockTime>,
}

#[derive(Default)]
pub struct SayTiming {
    pending: Mutex<VecDeque<PendingSay>>,
    /// The latest say → first frame latencies.
    latencies: Mutex<VecDeque<Duration>>,
    /// When those first frames left the encoder (for `facecast bench --chat`).
    first_frames: Mutex<VecDeque<Instant>>,
}

fn keep<T>(list: &Mutex<VecDeque<T>>, item: T) {
    let mut list = list.lock().unwrap();
    if list.len() == KEPT {
        list.pop_front();
    }
    list.push_back(item);
}

impl SayTiming {
    pub fn asked(&self) {
        self.pending.lock().unwrap().push_back(PendingSay {
            asked: Instant::now(),
            starts_at: None,
        });
    }

    /// Speech started at running time `at`: it belongs to the oldest say still waiting.
    pub fn speech_started(&self, at: gst::ClockTime) {
        let mut pending = self.pending.lock().unwrap();
        if let Some(p) = pending.iter_mut().find(|p| p.starts_at.is_none()) {
            p.starts_at = Some(at);
        }
    }

    /// Interrupted: the waiting says will never be heard.
    pub fn clear(&self) {
        self.pending.lock().unwrap().clear();
    }

    /// An encoded frame ending at running time `end` left the encoder; returns the latencies
    /// of the says it completes.
    pub fn frame_left(&self, end: gst::ClockTime) -> Vec<Duration> {
        let mut done = Vec::new();
        let mut pending = self.pending.lock().unwrap();
        while let Some(p) = pending.front() {
            match p.starts_at {
                Some(start) if end > start => {
                    let latency = p.asked.elapsed();
                    pending.pop_front();
                    keep(&self.latencies, latency);
                    keep(&self.first_frames, Instant::now());
                    done.push(latency);
                }
                _ => break,
            }
        }
        done
    }

    pub fn latencies(&self) -> Vec<Duration> {
        self.latencies.lock().unwrap().iter().copied().collect()
    }

    pub fn first_frames(&self) -> Vec<Instant> {
        self.first_frames.lock().unwrap().iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gst::ClockTime as T;

    #[test]
    fn a_say_completes_on_the_first_frame_after_its_speech_starts() {
        let t = SayTiming::default();
        t.asked();
        t.asked();
        assert!(
            t.frame_left(T::from_mseconds(40)).is_empty(),
            "no speech yet"
        );
        t.speech_started(T::from_mseconds(100));
        assert!(t.frame_left(T::from_mseconds(80)).is_empty());
        assert_eq!(t.frame_left(T::from_mseconds(120)).len(), 1);
        t.speech_started(T::from_mseconds(900));
        assert_eq!(t.frame_left(T::from_mseconds(920)).len(), 1);
        assert_eq!((t.latencies().len(), t.first_frames().len()), (2, 2));
        t.asked();
        t.clear();
        t.speech_started(T::from_mseconds(1000));
        assert!(t.frame_left(T::from_mseconds(2000)).is_empty());
    }
}
