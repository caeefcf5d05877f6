"""Validated token types and audio.

Each type wraps a read-only numpy array and checks shape, dtype and range once, on construction, so nothing
downstream re-checks. ``np.asarray(tokens)`` gives the array (int64 for tokens, float32 for audio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from barkkit.constants import CODEBOOK_SIZE, N_COARSE_CODEBOOKS, N_FINE_CODEBOOKS, SEMANTIC_VOCAB_SIZE
from barkkit.errors import TokenError

__all__ = ["Tokens", "SemanticTokens", "CoarseTokens", "FineTokens", "Audio", "Text", "kind_name"]

Text = str
"""What the first stage consumes: plain text."""


class Tokens:
    """An immutable, validated integer array. Subclasses fix the shape and the value range."""

    n_codebooks: ClassVar[int | None] = None  # None: 1-D (T,); else 2-D (n_codebooks, T)
    vocab_size: ClassVar[int]
    kind: ClassVar[str]  # "semantic", "coarse", "fine": also the voice key prefix (`{kind}_prompt`)

    __slots__ = ("_array",)
    _array: np.ndarray

    def __init__(self, data: Any, *, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        if isinstance(data, Tokens):
            data = data._array
        try:
            array = np.asarray(data)
        except Exception as exc:  # ragged lists, objects numpy cannot hold
            raise TokenError(f"{where}{self.kind} tokens must be an integer array ({exc})") from None
        if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
            raise TokenError(
                f"{where}{self.kind} tokens must be integers, got dtype {array.dtype}; convert with .astype(np.int64)"
            )
        if self.n_codebooks is None:
            if array.ndim != 1:
                raise TokenError(f"{where}{self.kind} tokens must have shape (T,), got {array.shape}")
        elif array.ndim != 2 or array.shape[0] != self.n_codebooks:
            raise TokenError(
                f"{where}{self.kind} tokens must have shape ({self.n_codebooks}, T), got {array.shape}"
            )
        if array.size:
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= self.vocab_size:
                bad = low if low < 0 else high
                raise TokenError(
                    f"{where}{self.kind} token {bad} is out of range: values must be in [0, {self.vocab_size - 1}]"
                )
        array = array.astype(np.int64, copy=True)
        array.flags.writeable = False
        self._array = array

    # numpy interoperability -------------------------------------------------------------------------------
    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None:
            return self._array if not copy else self._array.copy()
        return self._array.astype(dtype)

    @property
    def array(self) -> np.ndarray:
        """The read-only int64 array: (T,) for semantic tokens, (n_codebooks, T) otherwise."""
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    def __len__(self) -> int:
        """Number of time steps T."""
        return self._array.shape[-1]

    def __getitem__(self, index: Any) -> np.ndarray:
        return self._array[index]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return np.array_equal(self._array, other._array)

    # Unhashable, as numpy arrays are (equality is by value). typeshed types object.__hash__ as a method, so
    # mypy refuses None here although Python defines `__hash__ = None` as the way to say it.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


class SemanticTokens(Tokens):
    """Semantic tokens, shape (T,), values in [0, 10000), 49.9 per second of audio."""

    vocab_size = SEMANTIC_VOCAB_SIZE
    kind = "semantic"

    @property
    def duration_s(self) -> float:
        from barkkit.constants import SEMANTIC_RATE_HZ

        return len(self) / SEMANTIC_RATE_HZ


class CoarseTokens(Tokens):
    """The first two EnCodec codebooks, shape (2, T), values in [0, 1024), 75 frames per second."""

    n_codebooks = N_COARSE_CODEBOOKS
    vocab_size = CODEBOOK_SIZE
    kind = "coarse"


class FineTokens(Tokens):
    """All eight EnCodec codebooks, shape (8, T), values in [0, 1024), 75 frames per second."""

    n_codebooks = N_FINE_CODEBOOKS
    vocab_size = CODEBOOK_SIZE
    kind = "fine"


@dataclass(frozen=True, eq=False)
class Audio:
    """Mono audio: ``samples`` float32 of shape (n,), and ``sample_rate`` in Hz.

    Samples are not clipped: Bark's decoder output can exceed 1.0 (see ``barkkit.audio`` for how files are written).
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples)
        if not np.issubdtype(samples.dtype, np.floating):
            raise TokenError(f"audio samples must be floating point, got dtype {samples.dtype}")
        if samples.ndim != 1:
            raise TokenError(f"audio must be mono with shape (n,), got {samples.shape}; average the channels first")
        if not np.all(np.isfinite(samples)):
            raise TokenError("audio holds NaN or infinite samples")
        if isinstance(self.sample_rate, bool) or int(self.sample_rate) != self.sample_rate or self.sample_rate <= 0:
            raise TokenError(f"sample rate must be a positive integer, got {self.sample_rate!r}")
        samples = samples.astype(np.float32, copy=True)
        samples.flags.writeable = False
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "sample_rate", int(self.sample_rate))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.samples if dtype is None else self.samples.astype(dtype)

    def __len__(self) -> int:
        return self.samples.shape[0]

    @property
    def duration_s(self) -> float:
        return len(self) / self.sample_rate

    def __repr__(self) -> str:
        return f"Audio({len(self)} samples, {self.sample_rate} Hz, {self.duration_s:.2f} s)"


_KIND_NAMES: dict[type, str] = {
    str: "text",
    SemanticTokens: "semantic",
    CoarseTokens: "coarse",
    FineTokens: "fine",
    Audio: "audio",
}


def kind_name(kind: type) -> str:
    """A readable name for a value type that stages consume or produce ("text", "semantic", ...)."""
    return _KIND_NAMES.get(kind, kind.__name__)
