//! The Wav2Lip model's audio input for each video frame: 16 mel frames (0.2 s) starting at
//! `int(i · 80 / fps)`, from the audio timeline resampled to 16 kHz.
//!
//! Consecutive video frames' windows overlap by 80 % (16 mel rows, 3.2 new ones a frame at
//! 25 fps), and the rows' 800-sample FFT windows overlap by 75 %. Computed afresh per frame,
//! each 16 kHz sample was resampled about 19 times and each row transformed 5 times, which
//! made this the largest part of `lipsync`'s own work per frame in a busy server. So the rows
//! and the 16 kHz samples of the current stream are kept: each is computed once, with the same
//! arithmetic (a row depends only on its index and the audio, which is complete once the frame
//! is ready).

use crate::mel::{MelSpectrogram, HOP, N_FFT, N_MELS, SAMPLE_RATE, WINDOW_FRAMES};
use crate::resample::SincResampler;
use crate::timeline::AudioTimeline;
use std::collections::VecDeque;

/// The mel input's length: 80 bins × 16 frames.
pub const MEL_WINDOW_LEN: usize = N_MELS * WINDOW_FRAMES;
/// 16 kHz samples one mel row reads: the sample before (pre-emphasis), then its FFT window.
const ROW_SAMPLES: usize = 1 + N_FFT;
/// Mel row k is centred on sample 200 k; its FFT window starts 400 samples earlier.
const WINDOW_LEAD: i64 = (N_FFT / 2) as i64 + 1;

#[derive(Default)]
pub struct MelWindows {
    mel: MelSpectrogram,
    resampler: Option<(u32, SincResampler)>,
    /// Source-rate samples being resampled (scratch).
    source: Vec<f32>,
    /// The stream the kept rows and samples belong to: its origin and source rate.
    stream: Option<(gst::ClockTime, u32)>,
    /// Mel rows `first_row..`, normalised.
    first_row: i64,
    rows: VecDeque<[f32; N_MELS]>,
    /// 16 kHz samples `first_sample..` (index 0 at the origin).
    first_sample: i64,
    samples: Vec<f32>,
}

impl MelWindows {
    /// The window of the video frame starting at running time `start`, as the model takes it:
    /// [1, 80, 16], mel bins by time. `origin` is the running time of audio sample 0.
    pub fn window(
        &mut self,
        audio: &AudioTimeline,
        origin: gst::ClockTime,
        start: gst::ClockTime,
    ) -> Vec<f32> {
        let since = start.saturating_sub(origin).nseconds();
        // Wav2Lip: int(i · 80 / fps), i.e. the mel frame at the frame's start.
        let k0 = (since as u128 * (SAMPLE_RATE as u128 / HOP as u128) / 1_000_000_000) as i64;
        let stream = (origin, audio.rate());
        if self.stream != Some(stream) || k0 < self.first_row {
            self.stream = Some(stream);
            self.rows.clear();
            self.samples.clear();
        }
        // Rows before this window are done with.
        while self.first_row < k0 && self.rows.pop_front().is_some() {
            self.first_row += 1;
        }
        if self.rows.is_empty() {
            self.first_row = k0;
        }
        while self.first_row + (self.rows.len() as i64) < k0 + WINDOW_FRAMES as i64 {
            let k = self.first_row + self.rows.len() as i64;
            let from = k * HOP as i64 - WINDOW_LEAD;
            self.ensure_samples(audio, origin, from, ROW_SAMPLES);
            let at = (from - self.first_sample) as usize;
            let row = self
                .mel
                .compute_window(&self.samples[at..at + ROW_SAMPLES], 1)[0];
            self.rows.push_back(row);
        }
        // Samples before this window's first row are done with too.
        let keep_from = k0 * HOP as i64 - WINDOW_LEAD;
        if keep_from > self.first_sample {
            let drop = ((keep_from - self.first_sample) as usize).min(self.samples.len());
            self.samples.drain(..drop);
            self.first_sample += drop as i64;
        }
        let mut out = vec![0f32; MEL_WINDOW_LEN];
        for (t, row) in self.rows.iter().take(WINDOW_FRAMES).enumerate() {
            for (m, &v) in row.iter().enumerate() {
                out[m * WINDOW_FRAMES + t] = v;
            }
        }
        out
    }

    /// Makes `samples` hold the 16 kHz samples `from..from + count`.
    fn ensure_samples(
        &mut self,
        audio: &AudioTimeline,
        origin: gst::ClockTime,
        from: i64,
        count: usize,
    ) {
        let have_end = self.first_sample + self.samples.len() as i64;
        if self.samples.is_empty() || from < self.first_sample || from > have_end {
            self.samples.clear();
            self.first_sample = from;
        }
        let have_end = self.first_sample + self.samples.len() as i64;
        let end = from + count as i64;
        if end > have_end {
            self.append_samples(audio, origin, have_end, (end - have_end) as usize);
        }
    }

    /// Appends the 16 kHz samples `first..first + count`, resampled from the timeline's rate.
    fn append_samples(
        &mut self,
        audio: &AudioTimeline,
        origin: gst::ClockTime,
        first: i64,
        count: usize,
    ) {
        let rate = audio.rate();
        if rate == SAMPLE_RATE {
            audio.samples_from(origin, first, count, &mut self.source);
            self.samples.extend_from_slice(&self.source);
            return;
        }
        let resampler = match &self.resampler {
            Some((r, res)) if *r == rate => res,
            _ => {
                &self
                    .resampler
                    .insert((rate, SincResampler::new(rate, SAMPLE_RATE)))
                    .1
            }
        };
        let step = rate as f64 / SAMPLE_RATE as f64;
        let margin = SincResampler::margin();
        let src_first = (first as f64 * step).floor() as i64 - margin;
        let span = (count as f64 * step).ceil() as usize + 2 * margin as usize + 1;
        audio.samples_from(origin, src_first, span, &mut self.source);
        for j in 0..count {
            self.samples
                .push(resampler.output(&self.source, src_first, first + j as i64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window computed afresh from its own 3,801 samples at once, as the engine did before.
    fn fresh(audio: &AudioTimeline, origin: gst::ClockTime, start: gst::ClockTime) -> Vec<f32> {
        let since = (start - origin).nseconds();
        let k0 = (since as u128 * 80 / 1_000_000_000) as i64;
        let first = k0 * HOP as i64 - WINDOW_LEAD;
        let len = 1 + (WINDOW_FRAMES - 1) * HOP + N_FFT;
        let rate = audio.rate();
        let mut source = Vec::new();
        let mut samples = Vec::new();
        if rate == SAMPLE_RATE {
            audio.samples_from(origin, first, len, &mut samples);
        } else {
            let resampler = SincResampler::new(rate, SAMPLE_RATE);
            let step = rate as f64 / SAMPLE_RATE as f64;
            let margin = SincResampler::margin();
            let src_first = (first as f64 * step).floor() as i64 - margin;
            let span = (len as f64 * step).ceil() as usize + 2 * margin as usize + 1;
            audio.samples_from(origin, src_first, span, &mut source);
            samples = (0..len)
                .map(|j| resampler.output(&source, src_first, first + j as i64))
                .collect();
        }
        let rows = MelSpectrogram::new().compute_window(&samples, WINDOW_FRAMES);
        let mut out = vec![0f32; MEL_WINDOW_LEN];
        for (t, row) in rows.iter().enumerate() {
            for (m, &v) in row.iter().enumerate() {
                out[m * WINDOW_FRAMES + t] = v;
            }
        }
        out
    }

    #[test]
    fn kept_rows_give_exactly_the_windows_computed_afresh() {
        for rate in [16_000u32, 22_050, 48_000] {
            let mut audio = AudioTimeline::new(rate);
            // Two seconds of a gliding tone with some noise, so every row differs.
            let samples: Vec<f32> = (0..rate as usize * 2)
                .map(|i| {
                    let t = i as f32 / rate as f32;
                    0.4 * (2.0 * std::f32::consts::PI * (150.0 + 200.0 * t) * t).sin()
                        + 0.05 * (((i * 7919) % 101) as f32 / 101.0 - 0.5)
                })
                .collect();
            let origin = gst::ClockTime::from_mseconds(500);
            audio.append(origin, &samples);
            let mut kept = MelWindows::default();
            for n in 0..40u64 {
                let start = origin + gst::ClockTime::from_mseconds(40 * n);
                assert_eq!(
                    kept.window(&audio, origin, start),
                    fresh(&audio, origin, start),
                    "{rate} Hz, frame {n}"
                );
            }
            // A jump forward (frames skipped) and back (a new stream at the same origin).
            let start = origin + gst::ClockTime::from_mseconds(1_400);
            assert_eq!(
                kept.window(&audio, origin, start),
                fresh(&audio, origin, start)
            );
            assert_eq!(
                kept.window(&audio, origin, origin),
                fresh(&audio, origin, origin)
            );
            assert!(
                kept.samples.len() < 5_000,
                "kept {} samples",
                kept.samples.len()
            );
        }
    }
}
