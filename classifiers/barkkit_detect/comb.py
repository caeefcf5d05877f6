"""EnCodec's line comb in a clip's long-term spectra: search its spacing, measure its teeth and their rivals.

EnCodec 24 kHz's decoder upsamples its 75 Hz code frames by strides 8, 5, 4 and 2 (75 -> 600 -> 3000 -> 12000 ->
24000 Hz). Each stage leaves a faint pattern periodic in the stage's output rate: lines at every multiple of 600 Hz
(3000 Hz lines are among them; 12 kHz is above the 8 kHz analysed), and weaker ones at multiples of the 75 Hz frame
rate. Audio played fast or slow, or written with a wrong rate in its header, moves the whole comb by the same factor,
so the spacing is searched over ``SPACING_RANGE`` (``SEARCH_STEP`` apart, reading each tooth at its exact
frequency by linear interpolation between bins, so that the search does not pick chance peaks). A candidate is
scored on the joint evidence of every view that sees the comb (``search_scores``): the 2 s Hann frames (mean and
log-mean power), the multitaper view, the 1 s frames, the squared signal (counted twice: a decoder's periodic gain
puts its lines there without speech's harmonics, which swamp the other views) and the 75 Hz frame-rate lines between
the teeth; a chance peak of one view rarely lines up with the others. The teeth count by ``TOOTH_WEIGHTS`` (v7:
EnCodec's teeth 3, 4 and 6 stand far taller than the rest). Most audio is
played at its true speed, or with one of the usual wrong rates (24 kHz read as 22.05 kHz, 48 as 44.1): those
``KNOWN_SPACINGS`` are measured on their own, and the comb is measured at the searched spacing only where its teeth
stand clearly higher (by ``SEARCH_MARGIN``) than at the best known one.

Rivals that also put lines on the comb are measured at the same spacing: half-way between teeth; the harmonics of
every fundamental dividing the spacing (spacing / 2 ... / 12, e.g. mains hum, codec frames) *off* the comb; how
line-rich the whole spectrum is (a tone, a click train or rounding noise of a synthetic signal has lines
everywhere); and how much of the total power the comb holds (a harmonic tone at 600 Hz is *all* comb, EnCodec's
trace is a whisper under the sound).

Some rivals sit on EnCodec's own 75 Hz lattice: the harmonics of spacing / 2 and / 4 off the comb (300 and 150 Hz)
and the half-way lines are all multiples of 75 Hz, so a Bark clip with strong frame-rate lines reads as hummed.
What tells them apart (v8): EnCodec lights the *odd* multiples of 75 Hz as well, a hum at 150 or 300 Hz never does,
so ``frame_odd_excess`` is the mean height of the odd lines less that of the even off-comb ones (all lines, and
above 1 kHz where speech harmonics thin out).

How far the search had to look (v8): ``search_margin`` is the best candidate's search score less the best known
spacing's, and ``known_peak_z`` where the best known spacing stands among all candidates. Bark at its true speed
has its comb at a known spacing; a human clip's best of 1,201 candidates is high by chance, and these two values let
the models weigh a searched comb against that chance.
"""

from __future__ import annotations

import numpy as np

from barkkit_detect.spectra import BIN_HZ, MAX_BIN, SHORT_BIN_HZ, LongTermSpectra

__all__ = ["COMB_FEATURE_NAMES", "comb_features", "frame_odd_excess", "search_spacing", "search_scores", "SPACING_RANGE", "SPACINGS", "KNOWN_SPACINGS"]

NOMINAL_SPACING = 600.0
SPACING_RANGE = (570.0, 630.0)  # +-5% speed; the usual wrong header rates are KNOWN_SPACINGS
SEARCH_STEP = 0.05  # tooth 11 then moves 0.55 Hz per step, about one bin
KNOWN_SPACINGS = (600.0, 600.0 * 22_050 / 24_000, 600.0 * 24_000 / 22_050)
SEARCH_FROM = 2  # the search skips teeth 1 and 2 (600, 1200 Hz)
SEARCH_MARGIN = 2.0  # nepers of ``search_scores`` the search must win by (v4: 0.5 on two views; v5: 0.75 on three; v6: 2.0 on seven)
SQUARE_WEIGHT = 2.0  # the squared signal's view counts twice in the search
FRAME_RATE_DIVISOR = 8  # EnCodec's 75 Hz frame rate is the comb's spacing / 8
N_TEETH = 11
# Weights of teeth 1-11 in the spacing search. EnCodec's teeth are not alike: on the 1 s frames of the clean Bark
# clips, teeth 3, 4 and 6 stand a median 4.3-4.9 nepers over the floor, tooth 10 2.4, the others 1.3-1.8 (VALL-E
# and EnCodec resyntheses show the same profile, human speech 0.5-0.7 everywhere), so an equal-weight mean dilutes
# the three tall ones with six weak ones. Weighting by the height (a matched filter) lets the true spacing stand out.
TOOTH_WEIGHTS = np.array([1.0, 1.0, 3.0, 3.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.5, 1.0])
SUB_DIVISORS = (2, 3, 4, 5, 6, 8, 10, 12)  # 300, 200, 150, 120, 100, 75, 60, 50 Hz at 600
LINE_LEVEL = 3.0  # a bin 3 nepers (26 dB) above its neighbourhood's median counts as a line
LOW_BIN = int(100 / BIN_HZ)

SPACINGS = np.arange(SPACING_RANGE[0], SPACING_RANGE[1] + SEARCH_STEP / 2, SEARCH_STEP)
_TEETH = np.arange(1, N_TEETH + 1)
_OFFSETS = np.array([-1, 0, 1])

COMB_FEATURE_NAMES: list[str] = (
    [f"tooth_{k}" for k in _TEETH]
    + ["comb_mean", "comb_median", "comb_low_mean", "comb_high_mean", "log_comb_mean", "log_comb_median"]
    + ["square_comb_mean", "square_comb_median", "coherence_excess"]
    + ["known_comb_mean", "log_known_comb_mean", "search_comb_mean", "search_peak_z", "spacing_offset"]
    + ["half_comb_mean"]
    + [f"off_comb_div{d}_mean" for d in SUB_DIVISORS]
    + ["comb_excess", "line_density", "residual_p99", "comb_power_share_db", "top_power_share_db"]
    + ["frame_odd_excess", "frame_odd_excess_high", "search_margin", "known_peak_z", "comb_spacing_hz"]
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


def _mean_at(values: np.ndarray, spacings: np.ndarray, multiples: np.ndarray, bin_hz: float = BIN_HZ, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean (``weights``: weighted mean) of ``values`` (bins ``bin_hz`` wide) read at every spacing times ``multiples``:
    (len(spacings),)."""
    position = spacings[:, None] * multiples[None] / bin_hz
    low = np.floor(position).astype(np.int64)
    frac = position - low
    read = values[low] * (1 - frac) + values[low + 1] * frac
    return read.mean(axis=1) if weights is None else read @ (weights / weights.sum())


def search_scores(spectra: LongTermSpectra, teeth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The search score of every candidate in ``SPACINGS`` (C,) and of each of ``KNOWN_SPACINGS`` (3,), on ``teeth``
    (tooth numbers, e.g. 3..11).

    A score sums, read at exact frequencies: the teeth's mean height (weighted by ``TOOTH_WEIGHTS``, since v7) in the
    2 s frames' mean and log-mean residuals, the multitaper residual, the 1 s frames' residual and (``SQUARE_WEIGHT``
    times) the squared signal's residual, and the mean height of the 75 Hz frame-rate lines between those teeth in
    the first three. Measured on the degraded
    Bark copies of the training data (two augmentation seeds), the true spacing of those played 0.95-1.05x was found
    in 91-93% with these against 83-84% on the first three views alone (v5), and in 98-99% of the others (94-95%).
    """
    teeth = np.asarray(teeth)
    lines = np.arange(FRAME_RATE_DIVISOR * teeth.min(), FRAME_RATE_DIVISOR * teeth.max() + 1)
    lines = lines[lines % FRAME_RATE_DIVISOR != 0] / FRAME_RATE_DIVISOR  # in units of the spacing
    long = spectra.residual + spectra.log_residual + spectra.taper_residual
    weights = TOOTH_WEIGHTS[teeth - 1]

    def score(spacings: np.ndarray) -> np.ndarray:
        return (
            _mean_at(long, spacings, teeth, weights=weights)
            + _mean_at(spectra.short_residual, spacings, teeth, SHORT_BIN_HZ, weights)
            + SQUARE_WEIGHT * _mean_at(spectra.square_residual, spacings, teeth, weights=weights)
            + _mean_at(long, spacings, lines)
        )

    return score(SPACINGS), score(np.array(KNOWN_SPACINGS))


def search_spacing(spectra: LongTermSpectra, teeth: np.ndarray = _TEETH[SEARCH_FROM:]) -> tuple[float, np.ndarray]:
    """The spacing (Hz) to measure the comb at and the search score of every candidate (``search_scores`` on
    ``teeth``; by default the third up: below 1.8 kHz voiced speech's own harmonics swamp the comb and only add
    chance).

    The best known spacing is kept unless the best candidate's score beats it by ``SEARCH_MARGIN``."""
    score, known = search_scores(spectra, teeth)
    return _chosen_spacing(score, known), score


def _chosen_spacing(score: np.ndarray, known: np.ndarray) -> float:
    best_known, best = int(np.argmax(known)), int(np.argmax(score))
    return float(SPACINGS[best]) if score[best] > known[best_known] + SEARCH_MARGIN else float(KNOWN_SPACINGS[best_known])


def _off_comb(spacing: float, divisor: int) -> np.ndarray:
    """Bins of the harmonics of spacing / divisor below the last tooth that are not themselves teeth."""
    harmonics = np.arange(2, N_TEETH * divisor + 1)
    harmonics = harmonics[harmonics % divisor != 0]
    return _bins(harmonics * spacing / divisor)


def frame_odd_excess(spectra: LongTermSpectra, spacing: float, above_hz: float = 0.0) -> float:
    """Mean height (residual plus log residual, peak within +-1 bin) of the odd multiples of the frame rate
    (spacing / 8) above ``above_hz``, less that of its even multiples that are not teeth (150 Hz apart at 600)."""
    height = spectra.residual + spectra.log_residual
    k = np.arange(1, N_TEETH * FRAME_RATE_DIVISOR + 1)
    freqs = k * spacing / FRAME_RATE_DIVISOR
    band = freqs > above_hz
    odd, even = band & (k % 2 == 1), band & (k % 2 == 0) & (k % FRAME_RATE_DIVISOR != 0)
    return float(_peak(height, _bins(freqs[odd])).mean() - _peak(height, _bins(freqs[even])).mean())


def comb_features(spectra: LongTermSpectra) -> np.ndarray:
    """The values named by ``COMB_FEATURE_NAMES``: float64 (len(COMB_FEATURE_NAMES),)."""
    scores, known = search_scores(spectra, _TEETH[SEARCH_FROM:])
    spacing = _chosen_spacing(scores, known)
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
            _peak(spectra.residual, known_bins).mean(), _peak(spectra.log_residual, known_bins).mean(), scores.max() / 6,
            (scores.max() - np.median(scores)) / spread, min(abs(spacing / k - 1.0) for k in KNOWN_SPACINGS),
            half, *subs,
            teeth.mean() - max(rivals), float(np.mean(residual_off > LINE_LEVEL)), float(np.percentile(residual_off, 99)),
            10 * np.log10(comb_power / total + 1e-20), 10 * np.log10(top / total + 1e-20),
            frame_odd_excess(spectra, spacing), frame_odd_excess(spectra, spacing, 1000.0),
            scores.max() - known.max(), (known.max() - np.median(scores)) / spread, spacing,
        ],
        dtype=np.float64,
    )  # fmt: skip
