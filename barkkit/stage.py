"""The plugin interfaces for the generation chain: ``Stage`` and ``Decoder``.

A stage turns one kind of value into the next (text -> semantic -> coarse -> fine); a decoder turns fine tokens
into audio. Each declares what it consumes and produces as class attributes, so a ``Pipeline`` checks a chain when
it is built, before any weights are read. Plugins register the classes; ``load`` builds a ready instance.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from barkkit.tokens import Audio, FineTokens

if TYPE_CHECKING:
    from barkkit.voice import Voice

__all__ = ["Stage", "Decoder", "Progress", "ModelRef"]

Progress = Callable[[int, int], None]
"""Progress callback: ``progress(done, total)`` in the stage's own units (steps, windows, frames)."""

ModelRef = str | os.PathLike | None
"""Where weights come from: a model name ("bark", "bark-small"), a hub id, a local folder, or None for a default."""


class Stage(ABC):
    """One step of the chain. Subclasses set ``name``, ``consumes``, ``produces`` and implement ``run``.

    ``options`` maps every keyword option the stage accepts to its default; the pipeline routes each option of a
    run to the stages that declare it and rejects options no stage declares.
    """

    name: ClassVar[str]
    consumes: ClassVar[type]
    produces: ClassVar[type]
    options: ClassVar[Mapping[str, Any]] = {}
    option_help: ClassVar[Mapping[str, str]] = {}  # a line per option for the command line's flags (optional)
    option_flags: ClassVar[Mapping[str, Sequence[str]]] = {}  # more spellings of an option's flag (optional)
    # keyword arguments `load` takes beyond model/device/mode (which weights to use), with their defaults
    load_options: ClassVar[Mapping[str, Any]] = {}
    # What a loaded stage computes with, for ``barkkit info`` (e.g. {"linears": "int8 (fbgemm)"}); {}: not said.
    kernels: Mapping[str, str] = {}

    @classmethod
    def load(cls, model: ModelRef = None, *, device: str | torch.device = "cpu", mode: str = "exact") -> "Stage":
        """Build the stage with its weights. Stages without weights need not override this."""
        return cls()

    @classmethod
    def kernel_plan(cls, mode: str = "exact", device: str | torch.device = "cpu") -> Mapping[str, str]:
        """What the stage would compute with in ``mode`` on this machine, said before any weights load (choices
        that are timed at load time say so); {} where the stage does not say."""
        return {}

    @abstractmethod
    def run(
        self,
        value: Any,
        *,
        voice: "Voice | None" = None,
        generator: torch.Generator,
        progress: Progress | None = None,
        **options: Any,
    ) -> Any:
        """Consume one value of type ``consumes`` and return one of type ``produces``.

        All randomness must come from ``generator``, so one seed makes a whole run repeatable.
        """

    def run_batch(
        self,
        values: Sequence[Any],
        *,
        voices: Sequence["Voice | None"],
        generators: Sequence[torch.Generator],
        progress: Progress | None = None,
        **options: Any,
    ) -> list[Any]:
        """Run several inputs, each with its own voice and generator. Stages that batch for speed override this.

        ``progress`` counts inputs done (one at a time, each from the start: a bar per input would run backwards).
        """
        out = []
        for value, voice, generator in zip(values, voices, generators, strict=True):
            out.append(self.run(value, voice=voice, generator=generator, **options))
            if progress is not None:
                progress(len(out), len(values))
        return out


class Decoder(ABC):
    """Fine tokens to audio and, where the codec allows, audio back to codes."""

    name: ClassVar[str]
    consumes: ClassVar[type] = FineTokens
    produces: ClassVar[type] = Audio
    sample_rate: ClassVar[int]
    can_encode: ClassVar[bool] = False

    @classmethod
    def load(cls, model: ModelRef = None, *, device: str | torch.device = "cpu", mode: str = "exact") -> "Decoder":
        return cls()

    @abstractmethod
    def decode(self, tokens: FineTokens, *, progress: Progress | None = None) -> Audio:
        """Decode codes of shape (8, T) into mono audio of T x (sample_rate / 75) samples."""

    def encode(self, audio: Audio) -> FineTokens:
        """Encode audio (any rate; resampled as needed) into codes of shape (8, T)."""
        from barkkit.errors import PluginError

        raise PluginError(f"decoder '{self.name}' cannot encode audio; use a decoder that can, such as 'encodec'")
