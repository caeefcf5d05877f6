"""Reading a recording in blocks, so that its length does not set the memory it takes.

``AudioStream(path)`` reads what libsndfile reads (wav, flac, ogg, mp3, ...) block by block, mixed to mono float32
at the file's own rate: the same samples as ``barkkit.audio.load_audio``, which reads the whole file. Formats only
librosa's audioread fallback reads (m4a, ...) cannot be streamed: they are read whole, as ``load_audio`` does.

``TailKeeper`` keeps the last N seconds of a stream as it passes through.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from barkkit.audio import load_audio, mpeg_notes_silenced
from barkkit.errors import AudioError
from barkkit.files import check_input_file
from barkkit.tokens import Audio

__all__ = ["AudioStream", "TailKeeper", "BLOCK_S"]

BLOCK_S = 2.0  # seconds a block holds


class AudioStream:
    """A mono recording read in blocks: ``sample_rate``, ``frames`` (samples per channel) and ``blocks()``."""

    def __init__(self, path: str | os.PathLike, *, block_s: float = BLOCK_S) -> None:
        self.path = check_input_file(path, "audio file", AudioError)
        self.block_s = block_s
        self._whole: Audio | None = None
        try:
            import soundfile

            with mpeg_notes_silenced(self.path):
                info = soundfile.info(str(self.path))
            self.sample_rate, self.frames = int(info.samplerate), int(info.frames)
        except Exception:  # not for libsndfile: read it whole through librosa (or fail with load_audio's message)
            self._whole = load_audio(self.path)
            self.sample_rate, self.frames = self._whole.sample_rate, len(self._whole)
        if self.frames == 0:
            raise AudioError(f"{self.path}: holds no audio samples")

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks of ``block_s`` seconds (the last one shorter). ``AudioError`` for bad samples."""
        if self._whole is not None:
            yield np.asarray(self._whole.samples)
            return
        block = max(1, int(self.block_s * self.sample_rate))
        try:
            for data in _silenced_blocks(self.path, block):
                samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                if not np.all(np.isfinite(samples)):
                    raise AudioError(f"{self.path}: holds NaN or infinite samples")
                yield samples
        except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError: a damaged file
            raise AudioError(f"{self.path}: not a readable audio file ({str(exc).splitlines()[0] if str(exc) else exc})") from None


def _silenced_blocks(path: Path, block: int) -> Iterator[np.ndarray]:
    """``soundfile.blocks``, with libmpg123's notes on a damaged MP3 silenced while each block decodes (never
    while the caller holds a block)."""
    import soundfile

    with mpeg_notes_silenced(path):
        handle = soundfile.SoundFile(str(path))
    with handle:
        while True:
            with mpeg_notes_silenced(path):
                data = handle.read(block, dtype="float32", always_2d=True)
            if not len(data):
                return
            yield data


class TailKeeper:
    """Passes blocks through (``through(blocks)``) and keeps the last ``seconds`` of them (``audio()``)."""

    def __init__(self, seconds: float, sample_rate: int) -> None:
        self.capacity = max(1, int(round(seconds * sample_rate)))
        self.sample_rate = sample_rate
        self._blocks: list[np.ndarray] = []
        self._held = 0
        self.total = 0  # samples seen

    def through(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            self._keep(block)
            yield block

    def _keep(self, block: np.ndarray) -> None:
        self.total += block.size
        self._blocks.append(np.array(block[-self.capacity :], dtype=np.float32))
        self._held += self._blocks[-1].size
        while self._held - self._blocks[0].size >= self.capacity:  # the oldest block is no longer needed
            self._held -= self._blocks.pop(0).size

    def audio(self) -> Audio:
        """The last ``seconds`` seen (all of it when the stream was shorter)."""
        samples = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.float32)
        return Audio(samples[-self.capacity :], self.sample_rate)
