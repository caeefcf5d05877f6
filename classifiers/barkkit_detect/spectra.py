"""Long-term spectra of a clip: where narrow, steady spectral lines stand out of the sound around them.

The first four views are computed from Hann-windowed frames of ``N_FFT`` samples (2 s at 16 kHz: 0.5 Hz per bin)
hopped by ``HOP`` (0.5 s), the fifth from Slepian-tapered ones; all kept up to ``MAX_BIN`` (7.5 kHz). Each view is a
per-bin array:

- ``residual``: log of the mean power minus its running median over ``FLOOR_BINS`` (about 100 Hz): how far each bin
  stands above its neighbourhood. Loud frames dominate the mean.
- ``log_residual``: the same for the mean of the *log* power (a geometric mean): every frame counts alike, so a line
  that is steady through quiet passages stands out even when loud vowels swamp it in the arithmetic mean.
- ``coherence``: ``|sum X_t conj(X_t-L)| / sum |X_t| |X_t-L|`` over frames ``L = N_FFT / HOP`` apart (2 s, sharing
  no sample). A steady line advances its phase by the same angle every 2 s, so its coherence is near 1; noise and
  speech give about ``1/sqrt(pairs)``.
  Power alone cannot tell a steady line from a loud narrow burst; phase can (a cyclostationary measure).
- ``square_residual``: the residual of the *squared* signal. A decoder whose upsampling gain varies with the output
  sample's phase modulates the signal's variance with the period 1/600 s without adding a line of its own; the
  square turns that periodic variance into lines (the second-order, cyclostationary trace).
- ``short_log_power`` and ``short_residual``: log power of 1 s Hann frames 0.25 s apart (1 Hz bins, up to
  ``SHORT_MAX_HZ``), and its residual (mean-power plus mean-log-power residuals over a 100 Hz running median): half
  the line height over the floor of the 2 s frames, but four times the frames, so a 1-2 s clip's floor is estimated
  from a dozen frames instead of one (``teeth`` reads its statistics from it; the spacing search reads it too).
- ``taper_residual``: the residual of a multitaper estimate (``TAPERS`` Slepian tapers of half-bandwidth
  ``TAPER_NW`` / 2 s, i.e. +-1.25 Hz, on 2 s frames 1 s apart). A single Hann periodogram scatters by about 5.6 dB per
  bin, which drowns a 2 s clip's few-dB teeth and lets chance peaks win the spacing search; four tapers average that
  scatter down by half while a line keeps its height. On 45 two-second Bark renders played 0.95-1.05x, the spacing
  search found the true spacing (within 0.3 Hz) in 72% of copies on the Hann views and in 83% with this view added.

Clips shorter than one frame are windowed at their own length and zero-padded (one frame); coherence is all zero for clips under 4 s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["LongTermSpectra", "long_term_spectra", "N_FFT", "HOP", "BIN_HZ", "MAX_BIN", "SHORT_BIN_HZ", "median_floor"]

RATE = 16_000
N_FFT = 32_000
HOP = 8_000
BIN_HZ = RATE / N_FFT  # 0.5 Hz
MAX_BIN = 15_000  # 7.5 kHz: every comb tooth searched (11 x 660 Hz = 7.26 kHz) with room for the floor's median
FLOOR_BINS = 201
TAPER_NW = 2.5  # time-half-bandwidth product: +-1.25 Hz on 2 s frames
TAPERS = 4
TAPER_HOP = 16_000  # 1 s: taper frames are already smooth estimates, so they need less overlap than the Hann ones
TAPER_STEP = 1_600  # a clip shorter than a frame is tapered at its length rounded down to 0.1 s: at most 20 taper
# sets to compute (each costs ~30 ms, more than scoring the clip), so a folder of short clips stays fast
SHORT_N = RATE  # 1 s frames (1 Hz bins) ...
SHORT_HOP = RATE // 4  # ... 0.25 s apart
SHORT_MAX_HZ = 7_600.0
SHORT_BIN_HZ = RATE / SHORT_N
COHERENCE_LAG = N_FFT // HOP  # frames that share no sample: overlapping frames would look coherent at every bin
_CHUNK = 32  # frames per FFT call: bounds the memory of long files


@dataclass
class LongTermSpectra:
    """Per-bin arrays (MAX_BIN,) float64 of one clip; bin i is i * BIN_HZ Hz."""

    power: np.ndarray
    residual: np.ndarray
    log_residual: np.ndarray
    coherence: np.ndarray
    square_residual: np.ndarray
    taper_residual: np.ndarray
    n_frames: int
    short_log_power: np.ndarray  # (frames, bins) of 1 s frames, SHORT_BIN_HZ apart up to SHORT_MAX_HZ
    short_residual: np.ndarray  # (bins,)


def _floor(values: np.ndarray) -> np.ndarray:
    from scipy.ndimage import median_filter

    return median_filter(values, size=FLOOR_BINS, mode="nearest")


def median_floor(values: np.ndarray, bin_hz: float) -> np.ndarray:
    """The running median of ``values`` over about 100 Hz of bins ``bin_hz`` wide."""
    from scipy.ndimage import median_filter

    return median_filter(values, size=int(100 / bin_hz) | 1, mode="nearest")


def short_log_power(samples: np.ndarray) -> np.ndarray:
    """Log power of 1 s Hann frames 0.25 s apart: (frames, bins) float64 up to ``SHORT_MAX_HZ``."""
    import scipy.fft

    n_bins = int(SHORT_MAX_HZ * SHORT_N / RATE)
    if samples.shape[0] < SHORT_N:
        frames = np.zeros((1, SHORT_N), dtype=np.float32)
        frames[0, : samples.shape[0]] = samples * np.hanning(samples.shape[0]).astype(np.float32)
    else:
        count = 1 + (samples.shape[0] - SHORT_N) // SHORT_HOP
        frames = np.lib.stride_tricks.sliding_window_view(samples, SHORT_N)[::SHORT_HOP][:count] * np.hanning(SHORT_N).astype(np.float32)
    spectrum = scipy.fft.rfft(frames, axis=1, workers=1)[:, :n_bins]
    return np.log(spectrum.real.astype(np.float64) ** 2 + spectrum.imag.astype(np.float64) ** 2 + 1e-12)


def short_residuals(log_power: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of a stack of 1 s frames' log power (frames, bins): the mean power's residual, the mean log power's, and the
    mean power's floor (each (bins,))."""
    mean_log = np.log(np.exp(log_power).mean(axis=0) + 1e-12)
    log_mean = log_power.mean(axis=0)
    floor = median_floor(mean_log, SHORT_BIN_HZ)
    return mean_log - floor, log_mean - median_floor(log_mean, SHORT_BIN_HZ), floor


class _Accumulator:
    """Sums over frames of one signal: power, log power, and the consecutive-frame cross spectrum."""

    def __init__(self) -> None:
        self.power = np.zeros(MAX_BIN)
        self.log_power = np.zeros(MAX_BIN)
        self.cross = np.zeros(MAX_BIN, dtype=np.complex128)
        self.cross_norm = np.zeros(MAX_BIN)
        self.last: np.ndarray | None = None
        self.n = 0

    def add(self, frames: np.ndarray, *, phase: bool) -> None:
        """frames: windowed (f, N_FFT) float32."""
        import scipy.fft

        spectrum = scipy.fft.rfft(frames, axis=1, workers=1)[:, :MAX_BIN]  # (f, MAX_BIN) complex64
        power = spectrum.real.astype(np.float64) ** 2 + spectrum.imag.astype(np.float64) ** 2
        self.power += power.sum(axis=0)
        self.log_power += np.log(power + 1e-12).sum(axis=0)
        self.n += frames.shape[0]
        if phase:
            joined = spectrum if self.last is None else np.concatenate([self.last, spectrum])
            current, previous = joined[COHERENCE_LAG:], joined[:-COHERENCE_LAG]
            self.cross += np.sum(current * np.conj(previous), axis=0)
            self.cross_norm += np.sum(np.abs(current) * np.abs(previous), axis=0)
            self.last = joined[-COHERENCE_LAG:]


def _frames(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windowed frames as a strided view (F, N_FFT) and the window (the clip's own length when shorter)."""
    if samples.shape[0] < N_FFT:
        window = np.hanning(samples.shape[0]).astype(np.float32)
        padded = np.zeros(N_FFT, dtype=np.float32)
        padded[: samples.shape[0]] = samples * window
        return padded[None], np.ones(N_FFT, dtype=np.float32)
    n_frames = 1 + (samples.shape[0] - N_FFT) // HOP
    return np.lib.stride_tricks.sliding_window_view(samples, N_FFT)[::HOP][:n_frames], np.hanning(N_FFT).astype(np.float32)


@functools.lru_cache(maxsize=N_FFT // TAPER_STEP)
def _slepian(n: int) -> np.ndarray:
    """``TAPERS`` Slepian tapers of ``n`` samples: (TAPERS, n) float32."""
    from scipy.signal.windows import dpss

    return dpss(n, TAPER_NW, TAPERS).astype(np.float32)


def _taper_log_power(samples: np.ndarray) -> np.ndarray:
    """Log of the multitaper power (MAX_BIN,) float64, averaged over 2 s frames 1 s apart (a shorter clip: one frame of
    its length rounded down to ``TAPER_STEP``, zero-padded, so its bins stay 0.5 Hz)."""
    import scipy.fft

    n = N_FFT if samples.shape[0] >= N_FFT else samples.shape[0] // TAPER_STEP * TAPER_STEP
    if n < TAPER_STEP:
        return np.full(MAX_BIN, np.log(1e-12))
    tapers = _slepian(n)
    count = 1 + (samples.shape[0] - n) // TAPER_HOP
    power = np.zeros(MAX_BIN)
    for frame in np.lib.stride_tricks.sliding_window_view(samples, n)[::TAPER_HOP][:count]:
        spectrum = scipy.fft.rfft(tapers * frame, n=N_FFT, axis=1, workers=1)[:, :MAX_BIN]  # (TAPERS, MAX_BIN)
        power += (spectrum.real.astype(np.float64) ** 2 + spectrum.imag.astype(np.float64) ** 2).mean(axis=0)
    return np.log(power / count + 1e-12)


def long_term_spectra(samples: np.ndarray) -> LongTermSpectra:
    """The long-term views of ``samples`` (float32 (n,) at 16 kHz, as ``prepare_audio`` gives)."""
    samples = np.asarray(samples, dtype=np.float32)
    squared = np.square(samples) - np.float32(np.mean(np.square(samples))) if samples.size else samples
    direct, square = _Accumulator(), _Accumulator()
    for signal, acc, phase in ((samples, direct, True), (squared, square, False)):
        frames, window = _frames(signal)
        for start in range(0, frames.shape[0], _CHUNK):
            acc.add(frames[start : start + _CHUNK] * window, phase=phase)
    log_power = np.log(direct.power / direct.n + 1e-12)
    mean_log = direct.log_power / direct.n
    square_log = np.log(square.power / square.n + 1e-12)
    taper_log = _taper_log_power(samples)
    short = short_log_power(samples)
    short_mean, short_log, _ = short_residuals(short)
    coherence = np.abs(direct.cross) / (direct.cross_norm + 1e-20) if direct.n > COHERENCE_LAG else np.zeros(MAX_BIN)
    return LongTermSpectra(
        power=direct.power / direct.n,
        residual=log_power - _floor(log_power),
        log_residual=mean_log - _floor(mean_log),
        coherence=coherence,
        square_residual=square_log - _floor(square_log),
        taper_residual=taper_log - _floor(taper_log),
        n_frames=direct.n,
        short_log_power=short,
        short_residual=short_mean + short_log,
    )
