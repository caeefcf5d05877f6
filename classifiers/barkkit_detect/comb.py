"""EnCodec's line comb in a clip's long-term spectra: search its spacing, measure its teeth and their rivals.

EnCodec 24 kHz's decoder upsamples its 75 Hz code frames by strides 8, 5, 4 and 2 (75 -> 600 -> 3000 -> 12000 ->
24000 Hz). Each stage leaves a faint pattern periodic in the stage's output rate: lines at every multiple of 600 Hz
(3000 Hz lines are among them; 12 kHz is above the 8 kHz analysed), and weaker ones at multiples of the 75 Hz frame
rate. Audio played fast or slow, or written with a wrong rate in its header, moves the whole comb by the same factor,
so the spacing is searched over ``SPACING_RANGE`` (``SEARCH_STEP`` apart, reading each tooth at its exact
frequency by linear interpolation between bins, so that the search does not pick chance peaks). Most audio is
played at its true speed, or with one of the usual wrong rates (24 kHz read as 22.05 kHz, 48 as 44.1): those
``KNOWN_SPACINGS`` are measured on their own, and the comb is measured at the searched spacing only where its teeth
stand clearly higher (by ``SEARCH_MARGIN``) than at the best known one.

Rivals that also put lines on the comb are measured at the same spacing: half-way between teeth; the harmonics of
every fundamental dividing the spacing (spacing / 2 ... / 12, e.g. mains hum, codec frames) *off* the comb; how
line-rich the whole spectrum is (a tone, a click train or rounding noise of a synthetic signal has lines
everywhere); and how much of the total power the comb holds (a harmonic tone at 600 Hz is *all* comb, EnCodec's
trace is a whisper under the sound).
"""

from __future__ import annotations

import numpy as np

from barkkit_detect.spectra import BIN_HZ, MAX_BIN, LongTermSpectra

__all__ = ["COMB_FEATURE_NAMES", "comb_features", "search_spacing", "search_view", "SPACING_RANGE", "KNOWN_SPACINGS"]

NOMINAL_SPACING = 600.0
SPACING_RANGE = (570.0, 630.0)  # +-5% speed; the usual wrong header rates are KNOWN_SPACINGS
SEARCH_STEP = 0.05  # tooth 11 then moves 0.55 Hz per step, about one bin
KNOWN_SPACINGS = (600.0, 600.0 * 22_050 / 24_000, 600.0 * 24_000 / 22_050)
SEARCH_FROM = 2  # the search skips teeth 1 and 2 (600, 1200 Hz)
SEARCH_MARGIN = 0.75  # nepers of mean tooth height in ``search_view`` the search must win by (v4: 0.25 -> 0.5 on two views, fewer chance peaks off 600 Hz; v5: 0.75 on three)
N_TEETH = 11
SUB_DIVISORS = (2, 3, 4, 5, 6, 8, 10, 12)  # 300, 200, 150, 120, 100, 75, 60, 50 Hz at 600
LINE_LEVEL = 3.0  # a bin 3 nepers (26 dB) above its neighbourhood's median counts as a line
LOW_BIN = int(100 / BIN_HZ)

_SPACINGS = np.arange(SPACING_RANGE[0], SPACING_RANGE[1] + SEARCH_STEP / 2, SEARCH_STEP)
_TEETH = np.arange(1, N_TEETH + 1)
_OFFSETS = np.array([-1, 0, 1])

COMB_FEATURE_NAMES: list[str] = (
    [f"tooth_{k}" for k in _TEETH]
    + ["comb_mean", "comb_median", "comb_low_mean", "comb_high_mean", "log_comb_mean", "log_comb_median"]
    + ["square_comb_mean", "square_comb_median", "coherence_excess"]
    + ["known_comb_mean", "log_known_comb_mean", "search_comb_mean", "search_peak_z", "spacing_offset"]
    + ["half_comb_mean"]
    + [f"off_comb_div{d}_mean" for d in SUB_DIVISORS]
    + ["comb_excess", "line_density", "residual_p99", "comb_power_share_db", "top_power_share_db", "comb_spacing_hz"]
)


def _bins(freqs: np.ndarray) -> np.ndarray:
    return np.clip(np.round(freqs / BIN_HZ).astype(np.int64), 1, MAX_BIN - 2)


def _peak(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Largest value within +-1 bin of each bin: shape of ``bins``."""
    return values[bins[..., None] + _OFFSETS].max(axis=-1)


def _argpeak(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """The bin (within +-1) holding the largest value, for each bin."""
    near = bins[..., None] + _OFFSETS
    return np.take_along_axis(near, values[near].argmax(axis=-1)[..., None], axis=-1)[..., 0]


def _exact(values: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """``values`` read at exact frequencies (linear interpolation between bins): shape of ``freqs``."""
    position = freqs / BIN_HZ
    low = np.floor(position).astype(np.int64)
    frac = position - low
    return values[low] * (1 - frac) + values[low + 1] * frac


def search_view(spectra: LongTermSpectra) -> np.ndarray:
    """What the spacing search reads (MAX_BIN,): residual + log_residual + taper_residual (nepers, three views summed,
    so a chance peak must appear in all of them; the taper view's lower scatter is what finds short clips' combs)."""
    return spectra.residual + spectra.log_residual + spectra.taper_residual


def search_spacing(spectra: LongTermSpectra) -> tuple[float, np.ndarray, float]:
    """The spacing (Hz) to measure the comb at, the search score of every candidate, and the known spacing's score.

    A candidate's score is its teeth's mean height in ``search_view``, read at their exact frequencies, from
    the third tooth up (below 1.8 kHz voiced speech's own harmonics swamp the comb and only add chance to the search).
    """
    view = search_view(spectra)
    freqs = _SPACINGS[:, None] * _TEETH[None, SEARCH_FROM:]  # (C, N_TEETH - SEARCH_FROM)
    score = _exact(view, freqs).mean(axis=1)
    known = np.array(KNOWN_SPACINGS)
    known_bins = _bins(known[:, None] * _TEETH[None, :])
    known_score = _peak(view, known_bins).mean(axis=1)
    best_known = int(np.argmax(known_score))
    best = int(np.argmax(score))
    known_exact = _exact(view, known[best_known] * _TEETH[SEARCH_FROM:]).mean()
    spacing = float(_SPACINGS[best]) if score[best] > known_exact + SEARCH_MARGIN else float(known[best_known])
    return spacing, score, float(known_score[best_known])


def _off_comb(spacing: float, divisor: int) -> np.ndarray:
    """Bins of the harmonics of spacing / divisor below the last tooth that are not themselves teeth."""
    harmonics = np.arange(2, N_TEETH * divisor + 1)
    harmonics = harmonics[harmonics % divisor != 0]
    return _bins(harmonics * spacing / divisor)


def comb_features(spectra: LongTermSpectra) -> np.ndarray:
    """The values named by ``COMB_FEATURE_NAMES``: float64 (len(COMB_FEATURE_NAMES),)."""
    spacing, scores, known_score = search_spacing(spectra)
    teeth_bins = _bins(spacing * _TEETH)
    teeth = _peak(spectra.residual, teeth_bins)
    log_teeth = _peak(spectra.log_residual, teeth_bins)
    square_teeth = _peak(spectra.square_residual, teeth_bins)
    coherence = spectra.coherence[_argpeak(spectra.residual, teeth_bins)]
    band = slice(LOW_BIN, int(teeth_bins[-1]) + 2)
    coherence_excess = float(coherence.mean() - np.median(spectra.coherence[band]))
    known_bins = _bins(min(KNOWN_SPACINGS, key=lambda k: abs(k - spacing)) * _TEETH)
    spread = float(np.std(scores)) + 1e-9
    half = _peak(spectra.residual, _bins(spacing * (_TEETH - 0.5))).mean()
    subs = np.array([_peak(spectra.residual, _off_comb(spacing, d)).mean() for d in SUB_DIVISORS])
    rivals = [half, *(v for d, v in zip(SUB_DIVISORS, subs) if d != 8)]  # EnCodec's own 75 Hz lines are no rival
    off = np.ones(MAX_BIN, dtype=bool)
    off[(teeth_bins[:, None] + np.arange(-2, 3)).ravel()] = False
    off[: band.start] = off[band.stop :] = False
    residual_off = spectra.residual[off]
    power_band = spectra.power[band]
    total = float(power_band.sum()) + 1e-20
    comb_power = float(spectra.power[(teeth_bins[:, None] + _OFFSETS).ravel()].sum())
    top = np.sort(power_band)[-max(1, power_band.size // 200) :].sum()  # the loudest 0.5% of bins
    return np.array(
        [
            *teeth, teeth.mean(), np.median(teeth), teeth[:5].mean(), teeth[5:].mean(), log_teeth.mean(), np.median(log_teeth),
            square_teeth.mean(), np.median(square_teeth), coherence_excess,
            _peak(spectra.residual, known_bins).mean(), _peak(spectra.log_residual, known_bins).mean(), scores.max() / 3,
            (scores.max() - np.median(scores)) / spread, min(abs(spacing / k - 1.0) for k in KNOWN_SPACINGS),
            half, *subs,
            teeth.mean() - max(rivals), float(np.mean(residual_off > LINE_LEVEL)), float(np.percentile(residual_off, 99)),
            10 * np.log10(comb_power / total + 1e-20), 10 * np.log10(top / total + 1e-20), spacing,
        ],
        dtype=np.float64,
    )  # fmt: skip
