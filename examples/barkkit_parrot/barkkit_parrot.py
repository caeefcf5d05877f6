"""An example barkkit plugin: ``parrot.semantic``, a semantic stage that needs no weights.

It ignores the words and replays the voice's own semantic tokens, as many as the text would take to say
(about 4 tokens a character at Bark's 49.9 Hz, tunable with ``tokens_per_char``), starting at a random offset drawn
from the run's generator. That makes it a quick way to drive the coarse and fine stages and the decoder with real,
voice-shaped input, without a text model:

    barkkit generate "some words" --semantic-stage parrot.semantic --voice v2/en_speaker_6 -o parrot.wav
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from barkkit import BarkkitError, SemanticTokens, Stage, hookimpl
from barkkit.hookspecs import Register
from barkkit.voice import Voice


class ParrotSemantic(Stage):
    """Text -> the voice's semantic tokens, looped to the text's length."""

    name = "parrot.semantic"
    consumes = str
    produces = SemanticTokens
    options = {"tokens_per_char": 4.0}

    def run(
        self,
        value: str,
        *,
        voice: Voice | None = None,
        generator: torch.Generator,
        progress: Any = None,
        **options: Any,
    ) -> SemanticTokens:
        if voice is None or len(voice.semantic) == 0:
            raise BarkkitError("parrot.semantic repeats a voice's tokens: give a voice with --voice")
        length = max(1, round(len(value.strip()) * float(options.get("tokens_per_char", 4.0))))
        source = np.asarray(voice.semantic)
        start = int(torch.randint(0, len(source), (1,), generator=generator))
        indices = (start + np.arange(length)) % len(source)
        if progress:
            progress(length, length)
        return SemanticTokens(source[indices])


@hookimpl
def register_stages(register: Register[type[Stage]]) -> None:
    register(ParrotSemantic)
