"""Band-aware comb statistics: the comb's teeth counted only where the audio has sound, at two resolutions and
over time.

``comb`` measures eleven teeth whatever the audio holds. A clip band-limited to 3.4 kHz (a telephone line, an 8 kHz
resampling, a low-bitrate MP3) has no sound above its cut-off, and the residual of an empty band is noise: averaging
its teeth with the audible ones dilutes the trace. Here a tooth counts only where the local spectral floor is within
``BAND_DROP`` nepers (about 30 dB) of the floor at 0.3-3 kHz, and the spacing is searched on those teeth alone.

Three views of the same statistic (a tooth's height: residual plus log residual, read at the tooth):

- ``L_*``: the 2 s frames of ``spectra`` (0.5 Hz bins): sharp lines, few frames.
- ``M_*``: 1 s frames 0.25 s apart (1 Hz bins): half the line height over the floor, but four times the frames, so
  the floor of a 1-2 s clip is estimated from a dozen frames instead of one.
- ``C_*``: the ``M`` statistic over 4 s stretches 2 s apart (max, median, min over time), so a trace that holds
  through part of a clip only (a Bark sentence in a longer recording) still counts.
- ``T_*``: the multitaper view of ``spectra`` (``taper_residual``) at the long view's spacing: lower scatter per
  bin, which a 1-2 s clip (one 2 s frame) needs most.

Each view also reads controls (the same statistic at a third, a half and two thirds of the way between teeth), so
a sound with lines everywhere (hum, buzz, a tone) does not read as a comb. A clip with no audible tooth above
1.2 kHz is read on teeth 3-4 anyway (the statistic stays defined; such a clip gets a low ``n_avail``).
"""

from __future__ import annotations

import numpy as np

from barkkit_detect.comb import search_spacing
from barkkit_detect.spectra import BIN_HZ, SHORT_BIN_HZ, LongTermSpectra, short_residuals

__all__ = ["TEETH_FEATURE_NAMES", "teeth_features", "comb_statistics", "BAND_DROP"]

BAND_DROP = 7.0  # nepers (about 30 dB) under the 0.3-3 kHz floor: above that the band is taken as empty
CHUNK_FRAMES = 13  # 4 s of short frames ...
CHUNK_STEP = 8  # ... every 2 s
_TEETH = np.arange(1, 12)
_CONTROL_OFFSETS = (-0.5, -1 / 3, 1 / 3)
_TAPER_STATS = ("s_avail", "s_med", "ctrl_mean", "s_excess", "s_z")  # the taper view, at the long view's spacing
_STATS = ("n_avail", "s_all", "s_avail", "se_avail", "s_med", "ctrl_mean", "ctrl_p90", "s_excess", "s_z")

TEETH_FEATURE_NAMES: list[str] = (
    ["L_zpk"] + [f"L_{s}" for s in _STATS] + [f"M_{s}" for s in _STATS[1:]] + ["C_max", "C_med", "C_min"] + [f"T_{s}" for s in _TAPER_STATS]
)


def _exact(values: np.ndarray, freqs: np.ndarray, bin_hz: float) -> np.ndarray:
    """``values`` read at exact frequencies (linear interpolation between bins)."""
    position = freqs / bin_hz
    low = np.floor(position).astype(np.int64)
    frac = position - low
    return values[low] * (1 - frac) + values[low + 1] * frac


def _peak(values: np.ndarray, freqs: np.ndarray, bin_hz: float) -> np.ndarray:
    """Largest value within +-1 bin of each frequency."""
    bins = np.round(freqs / bin_hz).astype(np.int64)
    return np.maximum(np.maximum(values[bins - 1], values[bins]), values[bins + 1])


def _audible(floor: np.ndarray, bin_hz: float) -> np.ndarray:
    """Which teeth (at 600 Hz spacing, (11,) bool) lie where the band holds sound; teeth 1-2 never count."""
    reference = float(np.median(floor[int(300 / bin_hz) : int(3000 / bin_hz)]))
    use = floor[np.round(600.0 * _TEETH / bin_hz).astype(np.int64)] > reference - BAND_DROP
    use[:2] = False
    if use.sum() < 2:
        use[2:4] = True
    return use


def _search(spectra: LongTermSpectra, teeth: np.ndarray) -> tuple[float, float]:
    """The spacing read on ``teeth`` (``comb.search_spacing``) and how sharply its search scores peak."""
    spacing, score = search_spacing(spectra, teeth)
    return spacing, float((score.max() - np.median(score)) / (score.std() + 1e-9))


def comb_statistics(
    residual: np.ndarray, log_residual: np.ndarray, floor: np.ndarray, bin_hz: float, spacing: float | None = None, search: LongTermSpectra | None = None
) -> dict[str, float]:
    """The band-aware statistics (``_STATS``, plus ``spacing`` and ``zpk`` when the spacing is searched) of one view.

    Either ``spacing`` is given, or it is searched (``comb.search_scores``) on the audible teeth of ``search``."""
    use = _audible(floor, bin_hz)
    zpk = float("nan")
    if spacing is None:
        if search is None:
            raise ValueError("comb_statistics needs a spacing or the spectra to search it in")
        spacing, zpk = _search(search, _TEETH[use])
    heights = _peak(residual, spacing * _TEETH, bin_hz) + _peak(log_residual, spacing * _TEETH, bin_hz)
    exact = _exact(residual, spacing * _TEETH, bin_hz) + _exact(log_residual, spacing * _TEETH, bin_hz)
    between = np.concatenate([spacing * (_TEETH[use] + o) for o in _CONTROL_OFFSETS])
    control = _peak(residual, between, bin_hz) + _peak(log_residual, between, bin_hz)
    audible = heights[use]
    return {
        "spacing": spacing, "zpk": zpk, "n_avail": float(use.sum()), "s_all": float(heights[2:].mean()),
        "s_avail": float(audible.mean()), "se_avail": float(exact[use].mean()), "s_med": float(np.median(audible)),
        "ctrl_mean": float(control.mean()), "ctrl_p90": float(np.quantile(control, 0.9)),
        "s_excess": float(audible.mean() - control.mean()),
        "s_z": float((audible - control.mean()).sum() / (control.std() + 1e-6) / np.sqrt(audible.size)),
    }  # fmt: skip


def _short_view(log_power: np.ndarray, spacing: float) -> dict[str, float]:
    """``comb_statistics`` of a stack of short frames' log power (frames, bins), at ``spacing``."""
    mean_residual, log_residual, floor = short_residuals(log_power)
    return comb_statistics(mean_residual, log_residual, floor, SHORT_BIN_HZ, spacing)


def teeth_features(samples: np.ndarray, spectra: LongTermSpectra) -> np.ndarray:
    """The values named by ``TEETH_FEATURE_NAMES`` for prepared audio (float32 (n,) at 16 kHz) and its spectra (which
    since v6 carry the 1 s frames too: ``samples`` is no longer read)."""
    log_power = np.log(spectra.power + 1e-12)
    floor = log_power - spectra.residual
    long = comb_statistics(spectra.residual, spectra.log_residual, floor, BIN_HZ, search=spectra)
    tapered = comb_statistics(spectra.taper_residual, np.zeros_like(floor), floor, BIN_HZ, long["spacing"])
    short = spectra.short_log_power
    medium = _short_view(short, long["spacing"])
    if short.shape[0] >= CHUNK_FRAMES + CHUNK_STEP:  # at least two 4 s stretches
        chunks = [_short_view(short[s : s + CHUNK_FRAMES], long["spacing"])["s_avail"] for s in range(0, short.shape[0] - CHUNK_FRAMES + 1, CHUNK_STEP)]
    else:
        chunks = [medium["s_avail"]]
    return np.array(
        [long["zpk"], *(long[s] for s in _STATS), *(medium[s] for s in _STATS[1:]), max(chunks), float(np.median(chunks)), min(chunks),
         *(tapered[s] for s in _TAPER_STATS)],
        dtype=np.float64,
    )
