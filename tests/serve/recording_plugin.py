"""A real, small audio-to-semantic plugin stage for the voice-upload tests (Bark ships no such model).

It reads the recording's loudness in 20 ms frames (Bark's semantic tokens run at ~50 a second) and quantizes the
log energy into the semantic vocabulary: deterministic, and different for different recordings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from barkkit import Audio, SemanticTokens, Stage, hookimpl


class LoudnessSemantic(Stage):
    name = "test.loudness_semantic"
    consumes = Audio
    produces = SemanticTokens

    def run(self, value: Audio, *, voice: Any = None, generator: torch.Generator, progress: Any = None, **options: Any) -> SemanticTokens:
        samples = np.asarray(value.samples, dtype=np.float64)
        hop = max(1, value.sample_rate // 50)
        frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
        energy_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)  # (T,) from -100 to 0 dB
        return SemanticTokens(np.clip((energy_db + 100) * 99, 0, 9_999).astype(np.int64))


@hookimpl
def register_stages(register: Any) -> None:
    register(LoudnessSemantic)
