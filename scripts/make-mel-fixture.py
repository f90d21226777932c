#!/usr/bin/env python3
"""Writes plugins/lipsync/tests/fixtures/mel_reference.txt: an independent reference for the
Wav2Lip mel spectrogram (librosa, the recipe of Wav2Lip's audio.py with reflect padding as in
the librosa 0.7 it was trained with), which the Rust implementation must match to 1e-4.

Run once by hand (pip install librosa==0.10.2.post1); the output is committed, so tests need
no Python. The input is a deterministic test signal: a voiced sweep with harmonics, a
fricative-like burst and a silent gap, 0.6 s at 16 kHz.
"""
import pathlib

import librosa
import numpy as np
from scipy import signal

SR, N_FFT, HOP, WIN = 16000, 800, 200, 800
t = np.arange(int(0.6 * SR)) / SR
f0 = 120 + 80 * t / t[-1]
phase = 2 * np.pi * np.cumsum(f0) / SR
voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * 0.3 * np.minimum(1, t / 0.05)
burst = np.sin(2 * np.pi * 4500 * t) * np.sin(2 * np.pi * 37 * t) * 0.2 * ((t > 0.35) & (t < 0.45))
wav = np.where((t > 0.25) & (t < 0.3), 0.0, voiced) + burst
wav = wav.astype(np.float64)

emphasized = signal.lfilter([1, -0.97], [1], wav)
D = librosa.stft(y=emphasized, n_fft=N_FFT, hop_length=HOP, win_length=WIN, center=True, pad_mode="reflect")
mel_basis = librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=80, fmin=55, fmax=7600, dtype=np.float64)
S = 20 * np.log10(np.maximum(1e-5, mel_basis @ np.abs(D))) - 20
S = np.clip(8 * (S + 100) / 100 - 4, -4, 4)  # [80, frames]

out = pathlib.Path(__file__).resolve().parent.parent / "plugins/lipsync/tests/fixtures/mel_reference.txt"
with open(out, "w") as f:
    f.write(f"# librosa {librosa.__version__}: Wav2Lip mel of a synthetic signal; see scripts/make-mel-fixture.py\n")
    f.write(f"samples {len(wav)}\n")
    f.write(" ".join(f"{x:.9e}" for x in wav) + "\n")
    f.write(f"mel {S.shape[0]} {S.shape[1]}\n")
    f.write(" ".join(f"{x:.7f}" for x in S.flatten()) + "\n")
print(out, S.shape)
