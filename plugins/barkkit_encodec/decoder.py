"""The ``encodec`` decoder: Bark's fine tokens (8, T) to 24 kHz audio, and audio back to codes for voices."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from barkkit.audio import resample
from barkkit.constants import N_FINE_CODEBOOKS, SAMPLE_RATE
from barkkit.errors import AudioError
from barkkit.stage import Decoder, ModelRef, Progress
from barkkit.tokens import Audio, FineTokens
from barkkit_encodec.checkpoints import load_codec
from barkkit_encodec.model import Codec

__all__ = ["EncodecDecoder", "DEFAULT_CHUNK_FRAMES"]

DEFAULT_CHUNK_FRAMES = 150
"""Frames decoded at a time (2 s of audio). Measured on 2 CPU cores for 60 s of audio (benchmarks/encodec_chunks.py):
one pass 10.8 s and +857 MB, chunks of 150 frames 4.4 s and +82 MB; chunked and one-pass audio differ by at most
1e-7 (float rounding, about 1e-6 of the peak)."""


class EncodecDecoder(Decoder):
    """EnCodec 24 kHz at 6 kbps (8 codebooks), as Bark's reference decodes, in plain torch (no torchaudio).

    ``Decoder.load(model)`` reads the weights from a folder (``encodec_24khz-d7cc33bc.th`` first, else a
    transformers BarkModel or EncodecModel checkpoint), a model name (``bark``, ``bark-small``) or a hub id.
    ``mode`` does not change the codec: it always runs in float32.
    """

    name: ClassVar[str] = "encodec"
    sample_rate: ClassVar[int] = SAMPLE_RATE
    can_encode: ClassVar[bool] = True

    def __init__(self, codec: Codec, *, chunk_frames: int | None = DEFAULT_CHUNK_FRAMES) -> None:
        self.codec = codec
        self.chunk_frames = chunk_frames

    @classmethod
    def load(cls, model: ModelRef = None, *, device: str | torch.device = "cpu", mode: str = "exact") -> "EncodecDecoder":
        return cls(load_codec(model, device=device))

    @property
    def device(self) -> torch.device:
        return self.codec.codebooks.device

    def decode(self, tokens: FineTokens, *, progress: Progress | None = None) -> Audio:
        """Codes (8, T) -> mono audio of T x 320 samples at 24 kHz (not clipped: it can exceed 1.0)."""
        tokens = tokens if isinstance(tokens, FineTokens) else FineTokens(tokens)
        codes = torch.from_numpy(np.array(tokens)).to(self.device)[:, None]  # (8, 1, T)
        with torch.inference_mode():
            audio = self.codec.decode(codes, chunk_frames=self.chunk_frames, progress=progress)  # (1, 1, T * 320)
        return Audio(audio[0, 0].float().cpu().numpy(), self.sample_rate)

    def encode(self, audio: Audio) -> FineTokens:
        """Mono audio at any rate -> codes (8, ceil(n / 320)) at 6 kbps (resampled to 24 kHz first)."""
        if len(audio) == 0:
            raise AudioError("cannot encode empty audio")
        audio = resample(audio, self.sample_rate)
        samples = torch.from_numpy(np.array(audio.samples, dtype=np.float32)).to(self.device)[None, None]  # (1, 1, n)
        with torch.inference_mode():
            codes = self.codec.encode(samples)  # (8, 1, T)
        return FineTokens(codes[:N_FINE_CODEBOOKS, 0].cpu().numpy())
