"""Where in a file the trace is: coarse windows, then each range's edges refined with shorter windows and snapped
to the sound.

A window is flagged when most of the sound it holds carries the trace, so a range built from ``window``-second
pieces (``trace_ranges``: each flagged piece stands for its middle ``hop`` seconds) can put an edge up to about half a
window off, depending on how much Bark a piece needs before it is flagged. Around each edge inside the file, short
pieces (``FINE_FRACTION`` of the window, at least ``MIN_FINE`` seconds: 2 s for 4 s windows) are scored every
``FINE_STEP`` seconds over one window's span; the edge moves to where their flags switch from off to on (a step fit,
robust to a stray flag); where none is flagged (too little sound in them) the coarse edge stays. A trace exists only
where there is sound, so an edge that lands in a pause (a Bark clip's leading or trailing silence, the gap before
the next speaker) is then moved inwards to where the sound starts or ends (``snap_to_sound``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from barkkit.detection import trace_ranges

__all__ = ["refine_segments", "snap_to_sound", "FINE_STEP", "FINE_FRACTION"]

FINE_STEP = 0.25  # seconds between short pieces
FINE_FRACTION = 0.5  # a short piece is half a window ...
MIN_FINE = 1.5  # ... but at least this long (shorter pieces hold too few frames for a steady verdict)
# (1 s pieces were measured too, benchmarks/segments_splice.py: closer median edges, but more stray flags in human
# speech next to a sentence drag an edge out by more than 1 s)
SOUND_FRAME = 0.05  # seconds per loudness frame when snapping an edge to sound
SOUND_SHARE = 0.03  # a frame sounds when its RMS is above this share of the file's loud frames (99th percentile)
FLAG_SHARE = 0.25  # a piece is flagged once about this share of it carries the trace (measured: lines stay lines
# when human speech is added, so a piece need not be mostly Bark); the switch is moved inwards by as much
MERGE_GAP = 0.5  # windows: ranges closer than this many windows are one range (a quiet stretch inside a sentence)

Score = Callable[[np.ndarray], "float | None"]


def _piece(samples: np.ndarray, rate: int, centre: float, length: float) -> np.ndarray | None:
    start, size = int(round((centre - length / 2) * rate)), int(round(length * rate))
    if start < 0 or start + size > samples.shape[0]:
        return None
    return samples[start : start + size]


def _edge(samples: np.ndarray, rate: int, score: Score, threshold: float, edge: float, span: float, length: float, inward: int) -> float:
    """The refined edge near ``edge`` (``inward`` +1 for a range's start, -1 for its end).

    A short piece is flagged when its centre lies inside the traced part, so the flags of pieces centred across the
    edge should switch from off (outside) to on (inside) once. The edge goes where a single switch agrees with the
    most flags (a step fit: a stray flagged piece outside or a missed one inside does not move it far); ties go to
    the switch nearest the coarse edge, and with no piece flagged the coarse edge stays.
    """
    offsets = np.arange(-span / 2, span / 2 + FINE_STEP / 2, FINE_STEP)
    centres = edge + inward * offsets  # from outside the range inwards
    flagged = np.zeros(centres.size, dtype=bool)
    for i, centre in enumerate(centres):
        piece = _piece(samples, rate, float(centre), length)
        p = None if piece is None else score(piece)
        flagged[i] = p is not None and p >= threshold
    if not flagged.any():
        return edge
    # switch before piece k: pieces [0, k) outside (should be off), [k, n) inside (should be on)
    agree = np.array([np.sum(~flagged[:k]) + np.sum(flagged[k:]) for k in range(centres.size + 1)])
    best = np.flatnonzero(agree == agree.max())
    switches = np.concatenate([[centres[0] - inward * FINE_STEP / 2], (centres[:-1] + centres[1:]) / 2, [centres[-1] + inward * FINE_STEP / 2]])
    switch = float(switches[best[np.argmin(np.abs(switches[best] - edge))]])
    return switch + inward * (0.5 - FLAG_SHARE) * length  # where the piece's centre crossed, moved to where its trace began


def _sounding(samples: np.ndarray, rate: int) -> np.ndarray:
    """Which ``SOUND_FRAME``-second frames of ``samples`` (n,) sound: (n_frames,) bool."""
    hop = max(1, int(round(SOUND_FRAME * rate)))
    n = samples.shape[0] // hop
    if n == 0:
        return np.zeros(0, dtype=bool)
    rms = np.sqrt(np.mean(np.square(samples[: n * hop].reshape(n, hop), dtype=np.float64), axis=1))
    return rms > SOUND_SHARE * np.percentile(rms, 99)


def snap_to_sound(
    sounding: np.ndarray, start: float, end: float, limit: float, inner_start: bool, inner_end: bool
) -> tuple[float, float]:
    """(start, end) with an edge that lies in a pause moved inwards, at most ``limit`` seconds, to where sound
    starts (or ends). ``sounding``: (n_frames,) bool of ``SOUND_FRAME``-second frames; ``inner_*``: the edge is
    inside the file (an edge at the file's start or end stays). An edge in sound, or with no sound within
    ``limit``, stays."""
    steps = int(round(limit / SOUND_FRAME))
    if inner_start:
        i = int(round(start / SOUND_FRAME))
        onset = next((k for k in range(i, min(i + steps, sounding.size)) if sounding[k]), None)
        if onset is not None and onset * SOUND_FRAME < end:
            start = onset * SOUND_FRAME
    if inner_end:
        j = int(round(end / SOUND_FRAME)) - 1
        offset = next((k for k in range(min(j, sounding.size - 1), max(j - steps, -1), -1) if sounding[k]), None)
        if offset is not None and (offset + 1) * SOUND_FRAME > start:
            end = (offset + 1) * SOUND_FRAME
    return start, end


def refine_segments(samples: np.ndarray, rate: int, windows: list[dict[str, Any]], threshold: float, window: float, hop: float, score: Score) -> list[dict[str, Any]]:
    """``trace_ranges`` of ``windows``, with every edge inside the file refined by short pieces.

    Args:
        samples: the audio the windows were cut from, (n,) at ``rate``.
        score: bark_probability of a piece of ``samples`` (None: no verdict).
    """
    ranges: list[dict[str, Any]] = []
    for r in trace_ranges(windows, threshold, hop):
        if ranges and r["start"] - ranges[-1]["end"] < MERGE_GAP * window:
            ranges[-1] = {**ranges[-1], "end": r["end"], "bark_probability": max(ranges[-1]["bark_probability"], r["bark_probability"])}
        else:
            ranges.append(r)
    duration = samples.shape[0] / rate
    length = min(window, max(MIN_FINE, FINE_FRACTION * window))
    sounding = _sounding(samples, rate)
    refined = []
    for r in ranges:
        start, end = r["start"], r["end"]
        if start > 0.0:
            start = _edge(samples, rate, score, threshold, start, window, length, +1)
        if end < duration:
            end = _edge(samples, rate, score, threshold, end, window, length, -1)
        start, end = snap_to_sound(sounding, start, end, window / 2, start > 0.0, end < duration)
        if end > start:
            refined.append({**r, "start": round(max(0.0, start), 3), "end": round(min(duration, end), 3)})
    merged: list[dict[str, Any]] = []
    for r in refined:
        if merged and r["start"] <= merged[-1]["end"]:
            merged[-1] = {**merged[-1], "end": max(merged[-1]["end"], r["end"]), "bark_probability": max(merged[-1]["bark_probability"], r["bark_probability"])}
        else:
            merged.append(r)
    return merged
