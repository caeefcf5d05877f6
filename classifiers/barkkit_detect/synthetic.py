"""Synthetic non-speech negatives for training: signals that put exact lines where EnCodec's comb sits.

A steady tone, a harmonic tone, a click train, DTMF, a metronome or a loop repeats exactly, so its spectrum (and
the rounding noise of its samples) holds lines at multiples of its repetition rate, 600 Hz multiples included,
standing far above a floor that is otherwise empty. None went through EnCodec; the detector must learn that a
spectrum made *only* of lines is not the trace. Each kind is one source, so leave-one-source-out scores every kind
with a model that never saw it. The tests build their own stress suite independently (other generators, seeds).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from barkkit_detect.dataset import Clip

__all__ = ["KINDS", "synthetic_signal", "write_synthetic_clips"]

RATES = (16_000, 22_050, 24_000, 44_100, 48_000)


def _tone(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    freq = float(rng.choice([600.0 * rng.integers(1, 12), 75.0 * rng.integers(1, 90), rng.uniform(20.0, 7500.0)]))
    return np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.3))


def _harmonic(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f0 = float(rng.choice([rng.uniform(40.0, 1000.0), 600.0 / rng.integers(1, 13), 600.0 * rng.uniform(0.9, 1.1)]))
    tilt = rng.uniform(0.0, 2.0)
    return sum(k**-tilt * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) for k in range(1, int(7500 / f0) + 1))


def _clicks(t: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    period = max(2, int(rate / rng.uniform(1.0, 200.0)))
    signal = np.zeros(t.size)
    signal[:: period] = 1.0
    if rng.random() < 0.5:  # a short ringing click instead of one sample
        signal = np.convolve(signal, np.exp(-np.arange(64) / rng.uniform(2, 20)) * np.sin(np.arange(64) * rng.uniform(0.1, 2.5)))[: t.size]
    return signal


def _dtmf(t: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    low, high = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
    signal = np.zeros(t.size)
    step = int(rate * rng.uniform(0.1, 0.4))
    for start in range(0, t.size, 2 * step):
        tt = t[start : start + step]
        signal[start : start + step] = np.sin(2 * np.pi * rng.choice(low) * tt) + np.sin(2 * np.pi * rng.choice(high) * tt)
    return signal


def _metronome(t: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    beat = int(rate * 60 / rng.uniform(40, 200))
    tick = np.sin(2 * np.pi * rng.uniform(800, 3000) * t[: int(0.03 * rate)]) * np.exp(-np.arange(int(0.03 * rate)) / (0.005 * rate))
    signal = np.zeros(t.size + tick.size)
    for start in range(0, t.size, beat):
        signal[start : start + tick.size] += tick
    return signal[: t.size]


def _noise(t: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    kind = rng.integers(0, 4)
    if kind == 0:
        return rng.standard_normal(t.size)
    if kind == 1:  # brown
        return np.cumsum(rng.standard_normal(t.size)) * 0.01
    if kind == 2:  # digital: random bits, few levels
        return rng.integers(-2, 3, t.size).astype(np.float64)
    loop = rng.standard_normal(int(rate / rng.uniform(1.0, 50.0)) + 1)  # a looped noise buffer (exactly periodic)
    return np.tile(loop, t.size // loop.size + 1)[: t.size]


def _music(t: np.ndarray, rng: np.random.Generator, rate: int) -> np.ndarray:
    signal = np.zeros(t.size)
    note = int(rate * rng.uniform(0.12, 0.6))
    for start in range(0, t.size, note):
        tt = t[: min(note * 2, t.size - start)]
        for semitone in rng.choice(np.arange(-12, 24), size=rng.integers(1, 4)):
            f0 = 440.0 * 2 ** (semitone / 12)
            partials = sum(k**-1.2 * np.sin(2 * np.pi * f0 * k * tt) for k in range(1, int(7000 / f0) + 1))
            signal[start : start + tt.size] += partials * np.exp(-tt * rng.uniform(1.0, 8.0))
    return signal


KINDS: dict[str, Callable[..., np.ndarray]] = {
    "tone": lambda t, rng, rate: _tone(t, rng),
    "harmonic": lambda t, rng, rate: _harmonic(t, rng),
    "clicks": _clicks,
    "dtmf": _dtmf,
    "metronome": _metronome,
    "noise": _noise,
    "music": _music,
}


def synthetic_signal(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One random signal of ``kind``: (float32 samples (n,), rate); sometimes under a faint noise floor."""
    rate = int(rng.choice(RATES))
    t = np.arange(int(rng.uniform(1.0, 12.0) * rate)) / rate
    signal = np.asarray(KINDS[kind](t, rng, rate), dtype=np.float64)
    signal = signal / (np.max(np.abs(signal)) + 1e-12) * rng.uniform(0.05, 0.9)
    if rng.random() < 0.3:
        signal = signal + rng.standard_normal(t.size) * 10 ** (-rng.uniform(40, 90) / 20)
    return signal.astype(np.float32), rate


def write_synthetic_clips(folder: str | os.PathLike, per_kind: int, seed: int = 0) -> list[Clip]:
    """Write ``per_kind`` signals of every kind as 24-bit FLAC under ``folder``: clips labelled ``synthetic``."""
    import soundfile

    folder = Path(folder)
    clips = []
    rng = np.random.default_rng(seed)
    for kind in KINDS:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_kind):
            samples, rate = synthetic_signal(kind, rng)
            path = folder / kind / f"{i}.flac"
            soundfile.write(path, samples, rate, subtype="PCM_24")
            clips.append(Clip(path, "synthetic", f"synthetic/{kind}"))
    return clips
