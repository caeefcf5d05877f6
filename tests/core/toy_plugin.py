"""A small but real plugin for testing the core: stages and a decoder that need no weights.

Each stage draws from the run's generator, so seeds matter exactly as they do for Bark's stages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from barkkit import Audio, CoarseTokens, Decoder, FineTokens, SemanticTokens, Stage, hookimpl
from barkkit.voice import VoiceSource


class ToySemantic(Stage):
    name = "toy.semantic"
    consumes = str
    produces = SemanticTokens
    options = {"tokens_per_char": 2, "temperature": 1.0}

    def run(self, value: str, *, voice: Any = None, generator: torch.Generator, progress: Any = None, **options: Any) -> SemanticTokens:
        n = max(1, len(value) * options.get("tokens_per_char", 2))
        tokens = torch.randint(0, 10_000, (n,), generator=generator)
        if voice is not None:  # continue from the voice: its last token first
            tokens[0] = int(voice.semantic[-1]) if len(voice.semantic) else tokens[0]
        if progress:
            progress(n, n)
        return SemanticTokens(tokens.numpy())


class ToyCoarse(Stage):
    name = "toy.coarse"
    consumes = SemanticTokens
    produces = CoarseTokens
    options = {"temperature": 1.0}

    def run(self, value: SemanticTokens, *, voice: Any = None, generator: torch.Generator, progress: Any = None, **options: Any) -> CoarseTokens:
        frames = int(round(len(value) * 75 / 49.9))
        return CoarseTokens(torch.randint(0, 1024, (2, frames), generator=generator).numpy())


class ToyFine(Stage):
    name = "toy.fine"
    consumes = CoarseTokens
    produces = FineTokens

    def run(self, value: CoarseTokens, *, voice: Any = None, generator: torch.Generator, progress: Any = None, **options: Any) -> FineTokens:
        rest = torch.randint(0, 1024, (6, len(value)), generator=generator).numpy()
        return FineTokens(np.concatenate([np.asarray(value), rest]))


class ToyDecoder(Decoder):
    name = "toy.decoder"
    sample_rate = 24_000

    def decode(self, tokens: FineTokens, *, progress: Any = None) -> Audio:
        # A tone per frame whose pitch follows the first codebook: 320 samples per frame, as EnCodec's.
        t = np.arange(320) / self.sample_rate
        frames = [0.3 * np.sin(2 * np.pi * (100 + code) * t) for code in np.asarray(tokens)[0]]
        return Audio(np.concatenate(frames) if frames else np.zeros(0), self.sample_rate)


class ToyVoices(VoiceSource):
    name = "toy.voices"

    def __init__(self, voices: dict[str, Any] | None = None) -> None:
        self.voices = voices or {}

    def names(self) -> list[str]:
        return sorted(self.voices)

    def find(self, name: str) -> Any:
        return self.voices.get(name)


@hookimpl
def register_stages(register: Any) -> None:
    register(ToySemantic)
    register(ToyCoarse)
    register(ToyFine)


@hookimpl
def register_decoders(register: Any) -> None:
    register(ToyDecoder)


TOY_SPEC = {"semantic": "toy.semantic", "coarse": "toy.coarse", "fine": "toy.fine", "decoder": "toy.decoder"}
