//! The mel spectrogram exactly as Wav2Lip computes it (its `audio.py`), so a published Wav2Lip
//! model sees the features it was trained on.
//!
//! 16 kHz audio → pre-emphasis 0.97 → STFT (n_fft 800, hop 200, periodic Hann window 800,
//! centred with reflect padding) → magnitude → Slaney mel filterbank (80 bins, 55–7600 Hz,
//! Slaney area normalisation) → `20·log10(max(1e-5, S)) − 20` → `clip(8·(S + 100)/100 − 4, −4, 4)`.
//! That is 80 mel frames per second; video frame `i` at `fps` uses the 16 frames starting at
//! `int(i · 80 / fps)`. Checked against librosa (`tests/fixtures/mel_reference.txt`).

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

pub const SAMPLE_RATE: u32 = 16000;
pub const N_FFT: usize = 800;
pub const HOP: usize = 200;
pub const N_MELS: usize = 80;
pub const FMIN: f64 = 55.0;
pub const FMAX: f64 = 7600.0;
pub const PREEMPHASIS: f64 = 0.97;
/// Mel frames per second of audio.
#[cfg(test)]
pub const FRAMES_PER_SECOND: f64 = SAMPLE_RATE as f64 / HOP as f64;
/// Mel frames one video frame's window spans.
pub const WINDOW_FRAMES: usize = 16;

/// Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let (min_log_hz, logstep) = (1000.0, (6.4f64).ln() / 27.0);
    if hz >= min_log_hz {
        min_log_hz / f_sp + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let (min_log_hz, logstep) = (1000.0, (6.4f64).ln() / 27.0);
    let min_log_mel = min_log_hz / f_sp;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// The 80 × 401 Slaney-normalised triangular filterbank.
fn mel_filterbank() -> Vec<Vec<f64>> {
    let n_bins = N_FFT / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|i| i as f64 * SAMPLE_RATE as f64 / N_FFT as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(FMIN), hz_to_mel(FMAX));
    let mel_f: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    (0..N_MELS)
        .map(|m| {
            let (f0, f1, f2) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
            let norm = 2.0 / (f2 - f0);
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - f0) / (f1 - f0);
                    let upper = (f2 - f) / (f2 - f1);
                    lower.min(upper).max(0.0) * norm
                })
                .collect()
        })
        .collect()
}

/// Computes Wav2Lip mel spectrograms of 16 kHz mono audio.
pub struct MelSpectrogram {
    fft: Arc<dyn RealToComplex<f64>>,
    window: Vec<f64>,
    /// Each filter's non-zero span: its first FFT bin and weights (the rest are zero).
    filters: Vec<(usize, Vec<f64>)>,
    magnitudes: Vec<f64>,
    frame: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl Default for MelSpectrogram {
    fn default() -> Self {
        Self::new()
    }
}

impl MelSpectrogram {
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
        // Periodic Hann, as scipy's get_window('hann', N, fftbins=True).
        let window = (0..N_FFT)
            .map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / N_FFT as f64).cos())
            .collect();
        Self {
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            frame: vec![0.0; N_FFT],
            fft,
            window,
            filters: mel_filterbank()
                .into_iter()
                .map(|f| {
                    let first = f.iter().position(|&w| w != 0.0).unwrap_or(0);
                    let last = f.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
                    (first, f[first..last].to_vec())
                })
                .collect(),
            magnitudes: vec![0.0; N_FFT / 2 + 1],
        }
    }

    /// The normalised mel spectrogram of `audio` (16 kHz): `frames × 80`, one row per hop
    /// (`1 + len / 200` rows). The engine streams instead; this whole-clip form is the one the
    /// librosa reference is checked against.
    #[cfg(test)]
    pub fn compute(&mut self, audio: &[f32]) -> Vec<[f32; N_MELS]> {
        if audio.is_empty() {
            return Vec::new();
        }
        // Pre-emphasis: y[n] = x[n] − 0.97 x[n−1].
        let emphasized: Vec<f64> = (0..audio.len())
            .map(|i| {
                audio[i] as f64
                    - if i > 0 {
                        PREEMPHASIS * audio[i - 1] as f64
                    } else {
                        0.0
                    }
            })
            .collect();
        // Centre with reflect padding (numpy's "reflect": the edge sample is not repeated).
        let pad = N_FFT / 2;
        let n = emphasized.len() as isize;
        let reflect = |i: isize| -> f64 {
            if n == 1 {
                return emphasized[0];
            }
            let period = 2 * (n - 1);
            let mut j = i.rem_euclid(period);
            if j >= n {
                j = period - j;
            }
            emphasized[j as usize]
        };
        let n_frames = 1 + emphasized.len() / HOP;
        let mut out = Vec::with_capacity(n_frames);
        for f in 0..n_frames {
            let start = (f * HOP) as isize - pad as isize;
            out.push(self.row(|k| reflect(start + k as isize)));
        }
        out
    }

    /// `n` consecutive mel frames of a window cut out of a longer signal: `audio` holds the
    /// sample just before the first frame (for the pre-emphasis) and then `(n − 1) · 200 + 800`
    /// samples; frame `f` covers `audio[1 + 200 f ..][..800]`. On a whole signal this gives the
    /// same rows as [`compute`](Self::compute) away from its two padded ends.
    pub fn compute_window(&mut self, audio: &[f32], n: usize) -> Vec<[f32; N_MELS]> {
        let needed = 1 + (n.max(1) - 1) * HOP + N_FFT;
        if n == 0 || audio.len() < needed {
            return Vec::new();
        }
        (0..n)
            .map(|f| {
                let base = 1 + f * HOP;
                self.row(|k| audio[base + k] as f64 - PREEMPHASIS * audio[base + k - 1] as f64)
            })
            .collect()
    }

    /// One normalised mel row from the 800 (pre-emphasised) samples `sample(0..800)`.
    fn row(&mut self, sample: impl Fn(usize) -> f64) -> [f32; N_MELS] {
        for (k, x) in self.frame.iter_mut().enumerate() {
            *x = sample(k) * self.window[k];
        }
        self.fft
            .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
            .expect("buffer sizes come from the plan");
        let mut row = [0f32; N_MELS];
        for (mag, c) in self.magnitudes.iter_mut().zip(&self.spectrum) {
            *mag = c.norm();
        }
        for (m, (first, weights)) in self.filters.iter().enumerate() {
            let energy: f64 = weights
                .iter()
                .zip(&self.magnitudes[*first..])
                .map(|(w, a)| w * a)
                .sum();
            let db = 20.0 * energy.max(1e-5).log10() - 20.0;
            row[m] = (8.0 * (db + 100.0) / 100.0 - 4.0).clamp(-4.0, 4.0) as f32;
        }
        row
    }
}

/// The first mel frame of video frame `i`'s window at `fps` (Wav2Lip: `int(i · 80 / fps)`),
/// moved back so the 16-frame window fits in `n_frames` (as Wav2Lip does at the end).
#[cfg(test)]
pub fn window_start(i: u64, fps: f64, n_frames: usize) -> usize {
    let start = (i as f64 * FRAMES_PER_SECOND / fps) as usize;
    start.min(n_frames.saturating_sub(WINDOW_FRAMES))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// librosa's output for the same recipe and signal (scripts/make-mel-fixture.py).
    fn reference() -> (Vec<f32>, usize, usize, Vec<f32>) {
        let text = include_str!("../tests/fixtures/mel_reference.txt");
        let mut lines = text.lines().filter(|l| !l.starts_with('#'));
        let header = lines.next().unwrap();
        let n: usize = header.strip_prefix("samples ").unwrap().parse().unwrap();
        let samples: Vec<f32> = lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse::<f64>().unwrap() as f32)
            .collect();
        assert_eq!(samples.len(), n);
        let dims: Vec<usize> = lines
            .next()
            .unwrap()
            .strip_prefix("mel ")
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let mel: Vec<f32> = lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        (samples, dims[0], dims[1], mel)
    }

    #[test]
    fn matches_librosa_to_1e4() {
        let (samples, bins, frames, expected) = reference();
        let got = MelSpectrogram::new().compute(&samples);
        assert_eq!((bins, got.len()), (N_MELS, frames));
        let mut worst = 0f32;
        for (t, row) in got.iter().enumerate() {
            for (m, &v) in row.iter().enumerate() {
                // The fixture is [bins, frames], row-major.
                worst = worst.max((v - expected[m * frames + t]).abs());
            }
        }
        eprintln!("largest difference from librosa: {worst}");
        // The fixture's input went through f32 here; its values keep 7 decimals.
        assert!(worst < 1e-4, "largest difference from librosa: {worst}");
    }

    #[test]
    fn a_window_matches_the_whole_signal() {
        let (samples, _, _, _) = reference();
        let mut mel = MelSpectrogram::new();
        let whole = mel.compute(&samples);
        // Frames 5..21: frame f is centred on sample 200 f, so it starts at 200 f − 400.
        let first = 5 * HOP - N_FFT / 2 - 1;
        let window = mel.compute_window(&samples[first..first + 1 + 15 * HOP + N_FFT], 16);
        assert_eq!(window.len(), 16);
        for (f, row) in window.iter().enumerate() {
            for (a, b) in row.iter().zip(&whole[5 + f]) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        assert!(mel.compute_window(&samples[..100], 16).is_empty());
    }

    #[test]
    fn window_start_follows_wav2lip() {
        assert_eq!(window_start(0, 25.0, 100), 0);
        assert_eq!(window_start(1, 25.0, 100), 3);
        assert_eq!(window_start(10, 25.0, 100), 32);
        // Near the end the last 16 frames are taken.
        assert_eq!(window_start(30, 25.0, 100), 84);
        assert_eq!(MelSpectrogram::new().compute(&[]).len(), 0);
    }
}
