//! Mouth shapes estimated from the audio alone, for speech that arrives without phoneme events
//! (a microphone, a WAV file, another TTS).
//!
//! Per video frame we look at ~40 ms of audio: its loudness against an adaptive noise floor and
//! peak (so quiet and loud speakers both reach a full range), and its spectrum: where the
//! energy sits (centroid) and how much of it is hiss above 3 kHz. Loud → the jaw opens; energy
//! low in the spectrum with little hiss → rounded lips (o, u); energy high with hiss → a
//! fricative (s, f, sh) with teeth nearly closed; bright voiced sound → spread lips (e, i).

use facecast_common::{Blendshape as B, BlendshapeWeights};
use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

/// Below this level (dBFS) there is no speech, whatever the adaptive floor says.
const ABSOLUTE_FLOOR_DB: f32 = -55.0;

pub struct AudioMouthEstimator {
    rate: u32,
    fft: Arc<dyn RealToComplex<f32>>,
    fft_len: usize,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
    /// Slowly adapting noise floor and speech peak, in dBFS.
    floor_db: f32,
    peak_db: f32,
}

impl AudioMouthEstimator {
    pub fn new(rate: u32) -> Self {
        // About 32 ms of audio per analysis, as a power of two.
        let fft_len = ((rate as f32 * 0.032) as usize).next_power_of_two().max(64);
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(fft_len);
        let window = (0..fft_len)
            .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / fft_len as f32).cos())
            .collect();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Self {
            rate,
            input: vec![0.0; fft_len],
            fft,
            fft_len,
            window,
            spectrum,
            scratch,
            floor_db: -60.0,
            peak_db: -20.0,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Estimates the mouth for `samples` (the audio around one video frame), `dt` seconds after
    /// the previous call (for the adaptive levels).
    pub fn estimate(&mut self, samples: &[f32], dt: f32) -> BlendshapeWeights {
        let mut mouth = BlendshapeWeights::default();
        if samples.is_empty() {
            return mouth;
        }
        let rms = (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt();
        let db = 20.0 * rms.max(1e-6).log10();

        // The floor follows quiet passages quickly and loud ones very slowly; the peak the
        // opposite, so both track a speaker within a second or two.
        let (fast, slow) = (1.0 - (-dt / 0.3).exp(), 1.0 - (-dt / 8.0).exp());
        self.floor_db += (db - self.floor_db) * if db < self.floor_db { fast } else { slow * 0.2 };
        self.peak_db += (db - self.peak_db) * if db > self.peak_db { fast } else { slow };
        self.peak_db = self.peak_db.max(self.floor_db + 20.0);

        if db < ABSOLUTE_FLOOR_DB || db < self.floor_db + 6.0 {
            return mouth;
        }
        let level =
            ((db - self.floor_db - 6.0) / (self.peak_db - self.floor_db - 6.0)).clamp(0.0, 1.0);

        // Spectrum of the centre of the window.
        let n = self.fft_len.min(samples.len());
        let offset = (samples.len() - n) / 2;
        self.input.iter_mut().for_each(|x| *x = 0.0);
        for i in 0..n {
            self.input[i] = samples[offset + i] * self.window[i];
        }
        if self
            .fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
            .is_err()
        {
            return mouth;
        }
        let hz_per_bin = self.rate as f32 / self.fft_len as f32;
        let (mut total, mut weighted, mut hiss) = (0.0f32, 0.0f32, 0.0f32);
        for (i, c) in self.spectrum.iter().enumerate().skip(1) {
            let hz = i as f32 * hz_per_bin;
            if !(80.0..=8000.0).contains(&hz) {
                continue;
            }
            let p = c.norm_sqr();
            total += p;
            weighted += p * hz;
            if hz > 3000.0 {
                hiss += p;
            }
        }
        if total <= 0.0 {
            return mouth;
        }
        let centroid = weighted / total;
        let hiss = hiss / total;

        let fricative = ((hiss - 0.25) / 0.4).clamp(0.0, 1.0);
        let rounded = ((1000.0 - centroid) / 600.0).clamp(0.0, 1.0) * (1.0 - fricative);
        let spread = ((centroid - 1400.0) / 1600.0).clamp(0.0, 1.0) * (1.0 - fricative);

        mouth[B::JawOpen] = (level.powf(0.8) * 0.75 * (1.0 - 0.75 * fricative)).min(0.8);
        mouth[B::MouthFunnel] = 0.55 * rounded * level.sqrt();
        mouth[B::MouthPucker] = 0.45 * rounded * level.sqrt();
        let stretch = (0.45 * spread + 0.4 * fricative) * level.sqrt();
        mouth[B::MouthStretchLeft] = stretch;
        mouth[B::MouthStretchRight] = stretch;
        mouth[B::MouthLowerDownLeft] = 0.3 * level * (1.0 - rounded);
        mouth[B::MouthLowerDownRight] = 0.3 * level * (1.0 - rounded);
        mouth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: &[f32], amp: f32, n: usize, phase0: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = (i + phase0) as f32 / rate as f32;
                hz.iter()
                    .map(|f| (std::f32::consts::TAU * f * t).sin())
                    .sum::<f32>()
                    * amp
                    / hz.len() as f32
            })
            .collect()
    }

    #[test]
    fn silence_closes_loud_voice_opens_and_shape_follows_spectrum() {
        let rate = 16000;
        let mut est = AudioMouthEstimator::new(rate);
        let frame = 640;
        for _ in 0..25 {
            let m = est.estimate(&vec![0.0; frame], 0.04);
            assert_eq!(m[B::JawOpen], 0.0);
        }
        // A bright vowel-like sound (formants ~700 and 1200 Hz with harmonics).
        let mut opened = 0.0f32;
        for k in 0..25 {
            let s = tone(
                rate,
                &[150.0, 300.0, 700.0, 1200.0, 2500.0],
                0.3,
                frame,
                k * frame,
            );
            opened = opened.max(est.estimate(&s, 0.04)[B::JawOpen]);
        }
        assert!(opened > 0.3, "jaw {opened}");
        // A low, dark sound is rounded.
        let s = tone(rate, &[150.0, 300.0, 450.0], 0.3, frame, 0);
        let m = est.estimate(&s, 0.04);
        assert!(m[B::MouthFunnel] > 0.2 && m[B::MouthFunnel] > m[B::MouthStretchLeft]);
        // Hiss is a fricative: jaw nearly shut, lips spread.
        let mut rng = fastrand_like(7);
        let hiss: Vec<f32> = (0..frame)
            .map(|i| {
                let t = i as f32 / rate as f32;
                0.2 * (std::f32::consts::TAU * 5000.0 * t).sin() + 0.1 * (rng() - 0.5)
            })
            .collect();
        let m = est.estimate(&hiss, 0.04);
        assert!(
            m[B::JawOpen] < 0.25 && m[B::MouthStretchLeft] > 0.1,
            "{m:?}"
        );
    }

    /// A tiny LCG so the test needs no extra crate.
    fn fastrand_like(seed: u32) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32
        }
    }
}
