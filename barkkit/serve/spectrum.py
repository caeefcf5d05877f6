"""The long-term spectrum the web page draws for a detected clip, with EnCodec's 600 Hz lines standing out.

Bark's decoder leaves narrow spectral lines at every multiple of 600 Hz (``barkkit_detect.features`` explains
why). This is a picture of them for people, not a feature: the mean power of 2 s Hann frames of the clip at 16 kHz
(0.5 Hz bins, so each multiple of 600 Hz is one bin), in dB, and the same minus its running median over ~100 Hz
(how far each bin stands above its neighbourhood). Both are reduced to ``points`` columns for drawing: the level
by its mean, the prominence by its maximum, so that a 0.5 Hz line survives the reduction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from barkkit.audio import resample
from barkkit.tokens import Audio

__all__ = ["long_term_spectrum", "COMB_HZ"]

COMB_HZ = 600.0
_RATE = 16_000
_N_FFT = 32_000  # 0.5 Hz bins
_HOP = 8_000
_MAX_HZ = 7_000.0


def long_term_spectrum(audio: Audio, *, points: int = 1400) -> dict[str, Any]:
    """``{"hz_per_point", "level_db", "prominence_db", "comb_hz"}``: the clip's long-term spectrum up to 7 kHz."""
    from scipy.ndimage import median_filter

    samples = np.asarray(resample(audio, _RATE).samples, dtype=np.float64)
    samples = samples - samples.mean() if samples.size else samples
    if samples.size < _N_FFT:
        frames = (samples * np.hanning(samples.size))[None, :]  # one frame, zero-padded to 0.5 Hz bins
    else:
        starts = range(0, samples.size - _N_FFT + 1, _HOP)
        frames = np.stack([samples[s : s + _N_FFT] for s in starts][:64]) * np.hanning(_N_FFT)  # (F, N_FFT), first 32 s
    spectrum = np.fft.rfft(frames, n=_N_FFT, axis=1)
    level = 10.0 * np.log10(np.mean(np.abs(spectrum) ** 2, axis=0) + 1e-12)  # (N_FFT/2+1,) dB
    prominence = level - median_filter(level, size=201, mode="nearest")
    n_bins = int(_MAX_HZ * _N_FFT / _RATE)
    per_point = max(1, n_bins // points)
    usable = (n_bins // per_point) * per_point
    level_points = level[:usable].reshape(-1, per_point).mean(axis=1)
    prominence_points = prominence[:usable].reshape(-1, per_point).max(axis=1)
    return {
        "hz_per_point": per_point * _RATE / _N_FFT,
        "level_db": np.round(level_points - level_points.max(), 2).tolist(),
        "prominence_db": np.round(prominence_points, 2).tolist(),
        "comb_hz": [COMB_HZ * k for k in range(1, int(_MAX_HZ // COMB_HZ) + 1)],
    }
