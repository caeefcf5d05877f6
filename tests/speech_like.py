"""A speech-like test signal, for tests that need a recording but may not read real audio."""

from __future__ import annotations

import numpy as np


def speechy(seconds: float, rate: int, channels: int = 1, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """A chirp with a syllable-like envelope plus ``noise`` (its amplitude): (n,) or (n, channels), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    signal = 0.3 * envelope * np.sin(2 * np.pi * (150 + 300 * t) * t) + noise * rng.standard_normal(t.size)
    if channels == 1:
        return signal.astype(np.float32)
    return np.stack([signal * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)
