//! Band-limited resampling of the audio timeline to the 16 kHz the Wav2Lip mel expects.
//!
//! Audio reaches `lipsync` at whatever rate its source has (22.05 kHz from espeak-ng, 48 kHz
//! from a WebRTC microphone). Only the samples of the mel rows not computed yet are needed per
//! frame (640 at 25 fps), at fractional positions, so a windowed-sinc interpolator evaluated on
//! demand is both simpler and cheaper than a streaming resampler.
//!
//! Output sample `n` sits at source position `n · from / to`, whose fraction takes only
//! `to / gcd(from, to)` values (320 from 22.05 kHz, 1 from 48 kHz). For such rates the 32 tap
//! weights of every fraction, and their sum, are worked out once ([`SincResampler::output`]):
//! a sample is then one dot product, where looking the kernel up per tap (the table is larger
//! than a core's L1 cache) made resampling the largest part of `lipsync`'s own work per frame.

/// Taps on each side of the interpolation point.
const HALF_TAPS: i64 = 16;

/// Kernel samples per unit of distance in the lookup table.
const TABLE_STEPS: usize = 1024;

/// Taps per output sample.
const TAPS: usize = 2 * HALF_TAPS as usize;

/// Most fractions whose weights are worked out in advance (32 KB of weights per 128).
const MAX_PHASES: i64 = 1024;

/// Evaluates a band-limited signal between its samples.
pub struct SincResampler {
    /// The windowed-sinc kernel at distances 0, 1/TABLE_STEPS, … HALF_TAPS (it is symmetric):
    /// evaluating sin and cos for every tap costs more than the rest of a frame's work.
    table: Vec<f64>,
    from: i64,
    to: i64,
    /// gcd(from, to): output positions `n · from` fall on multiples of it.
    step: i64,
    /// Per fraction of a source sample (`to / step` of them); empty where there would be more
    /// than `MAX_PHASES` (then `output` uses `at`).
    phases: Vec<Phase>,
}

/// The tap weights of one fraction, and their sum.
struct Phase {
    weights: [f64; TAPS],
    sum: f64,
}

impl SincResampler {
    /// A resampler from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Self {
        // Leave a little transition band below the lower Nyquist frequency.
        let cutoff = (to as f64 / from as f64).min(1.0) * 0.94;
        let table = (0..=HALF_TAPS as usize * TABLE_STEPS + 1)
            .map(|i| kernel(cutoff, i as f64 / TABLE_STEPS as f64))
            .collect();
        let (from, to) = (from.max(1) as i64, to.max(1) as i64);
        let step = gcd(from, to);
        let mut resampler = Self {
            table,
            from,
            to,
            step,
            phases: Vec::new(),
        };
        if to / step <= MAX_PHASES {
            resampler.phases = (0..to / step)
                .map(|p| {
                    // The weights `at` gives taps i = centre - 15 ..= centre + 16 at this
                    // fraction, in that order, and their sum in the same order.
                    let fraction = (p * step) as f64 / to as f64;
                    let mut phase = Phase {
                        weights: [0.0; TAPS],
                        sum: 0.0,
                    };
                    for (k, w) in phase.weights.iter_mut().enumerate() {
                        *w = resampler.kernel(fraction + (HALF_TAPS - 1) as f64 - k as f64);
                        phase.sum += *w;
                    }
                    phase
                })
                .collect();
        }
        resampler
    }

    /// Output sample `n` (at the `to` rate, index 0 at source index 0), where `src[0]` is
    /// source index `first`; samples outside `src` count as silence. The same as
    /// [`at`](Self::at) at `n · from / to`, with the fraction taken exactly.
    pub fn output(&self, src: &[f32], first: i64, n: i64) -> f32 {
        if self.phases.is_empty() {
            return self.at(src, first, n as f64 * self.from as f64 / self.to as f64);
        }
        let position = n * self.from;
        let centre = position.div_euclid(self.to);
        let phase = &self.phases[(position.rem_euclid(self.to) / self.step) as usize];
        let weights = &phase.weights;
        let start = centre - HALF_TAPS + 1 - first;
        let acc: f64 = match usize::try_from(start)
            .ok()
            .and_then(|s| src.get(s..s + TAPS))
        {
            // All taps inside: one dot product.
            Some(taps) => taps
                .iter()
                .zip(weights)
                .fold(0.0, |acc, (&s, &w)| acc + s as f64 * w),
            None => (0..TAPS).fold(0.0, |acc, k| {
                match usize::try_from(start + k as i64)
                    .ok()
                    .and_then(|i| src.get(i))
                {
                    Some(&s) => acc + s as f64 * weights[k],
                    None => acc,
                }
            }),
        };
        let norm = phase.sum;
        if norm.abs() > 1e-9 {
            (acc / norm) as f32
        } else {
            0.0
        }
    }

    fn kernel(&self, x: f64) -> f64 {
        let t = x.abs() * TABLE_STEPS as f64;
        let i = t as usize;
        match (self.table.get(i), self.table.get(i + 1)) {
            (Some(a), Some(b)) => a + (b - a) * (t - i as f64),
            _ => 0.0,
        }
    }

    /// Source samples needed on each side of a position.
    pub fn margin() -> i64 {
        HALF_TAPS + 1
    }

    /// The signal at fractional source index `pos`, where `src[0]` is source index `first`.
    /// Samples outside `src` count as silence.
    pub fn at(&self, src: &[f32], first: i64, pos: f64) -> f32 {
        let centre = pos.floor() as i64;
        let mut acc = 0.0f64;
        let mut norm = 0.0f64;
        for i in centre - HALF_TAPS + 1..=centre + HALF_TAPS {
            let x = pos - i as f64;
            let w = self.kernel(x);
            norm += w;
            if let Some(&s) = usize::try_from(i - first).ok().and_then(|k| src.get(k)) {
                acc += s as f64 * w;
            }
        }
        // Normalising by the kernel's sum keeps a constant signal's level exact.
        if norm.abs() > 1e-9 {
            (acc / norm) as f32
        } else {
            0.0
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The Hann-windowed sinc with cut-off `c` at distance `x`.
fn kernel(c: f64, x: f64) -> f64 {
    let sinc = if x.abs() < 1e-9 {
        1.0
    } else {
        let a = std::f64::consts::PI * c * x;
        a.sin() / a
    };
    // Hann window over the taps.
    let t = x / HALF_TAPS as f64;
    let window = if t.abs() >= 1.0 {
        0.0
    } else {
        0.5 + 0.5 * (std::f64::consts::PI * t).cos()
    };
    c * sinc * window
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: f64, freq: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (std::f64::consts::TAU * freq * i as f64 / rate).sin() as f32)
            .collect()
    }

    #[test]
    fn a_tone_survives_44k_to_16k() {
        let src = sine(44100.0, 440.0, 44100);
        let r = SincResampler::new(44100, 16000);
        let mut worst = 0f32;
        for j in 1000..2000 {
            let t = j as f64 / 16000.0;
            let got = r.at(&src, 0, t * 44100.0);
            let want = (std::f64::consts::TAU * 440.0 * t).sin() as f32;
            worst = worst.max((got - want).abs());
        }
        assert!(worst < 0.01, "error {worst}");
    }

    #[test]
    fn tones_above_the_new_nyquist_are_removed() {
        let src = sine(48000.0, 12000.0, 48000);
        let r = SincResampler::new(48000, 16000);
        let peak = (1000..2000)
            .map(|j| r.at(&src, 0, j as f64 * 3.0).abs())
            .fold(0f32, f32::max);
        assert!(peak < 0.05, "aliasing peak {peak}");
    }

    #[test]
    fn outputs_are_the_interpolator_at_their_positions() {
        let src = sine(22050.0, 523.0, 22050);
        // 22.05 and 44.1 kHz have their fractions worked out in advance; 44.056 kHz has too
        // many and interpolates as `at` does.
        for from in [22050u32, 44100, 48000, 8000, 44056] {
            let r = SincResampler::new(from, 16000);
            let mut worst = 0f32;
            // From before the source's start (silence) to past its end.
            for n in -40..16000i64 {
                let pos = n as f64 * from as f64 / 16000.0;
                worst = worst.max((r.output(&src, 5, n) - r.at(&src, 5, pos)).abs());
            }
            assert!(worst < 1e-6, "{from} Hz: differs by {worst}");
        }
    }

    #[test]
    fn same_rate_is_identity_and_outside_is_silence() {
        let src = sine(16000.0, 300.0, 200);
        let r = SincResampler::new(16000, 16000);
        for i in 20..180 {
            assert!((r.at(&src, 0, i as f64) - src[i]).abs() < 0.03);
        }
        assert_eq!(r.at(&src, 1000, 0.0), 0.0);
    }
}
