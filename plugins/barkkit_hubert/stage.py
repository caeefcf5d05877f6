"""The ``hubert.semantic`` stage: a recording (``Audio``) -> Bark's semantic tokens, one per 20 ms.

    >>> stage = HubertSemantic.load(hubert="facebook/hubert-base-ls960",
    ...                             quantizer="GitMylo/bark-voice-cloning:quantifier_hubert_base_ls960_14.pth")
    >>> tokens = stage.run(barkkit.audio.load_audio("me.flac"), generator=torch.Generator())

Audio of any rate is resampled to 16 kHz (soxr, high quality) and given to HuBERT raw: HuBERT base was trained with
``normalize: false``, so the waveform is not normalised. ``run_stream`` takes the recording as blocks, so that
``barkkit.voice_making`` never holds a long recording in memory (see ``barkkit_hubert.windows``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch

from barkkit.devices import check_device
from barkkit.errors import AudioError, WeightsError
from barkkit.stage import ModelRef, Progress, Stage
from barkkit.tokens import Audio, SemanticTokens
from barkkit.weights import MODEL_ALIASES
from barkkit_hubert.hubert import DEFAULT_HUBERT, SAMPLE_RATE, load_hubert
from barkkit_hubert.quantizer import DEFAULT_QUANTIZER, Quantizer, load_quantizer
from barkkit_hubert.windows import WindowedTokenizer

__all__ = ["HubertSemantic"]


class HubertSemantic(Stage):
    """HuBERT (hidden state after layer 9) + the community LSTM quantizer: audio -> ``SemanticTokens``.

    Deterministic: the generator is not used. Recordings under 1 s, silent ones and ones with under 1 s louder than
    -45 dBFS are refused (``AudioError``).
    """

    name: ClassVar[str] = "hubert.semantic"
    consumes: ClassVar[type] = Audio
    produces: ClassVar[type] = SemanticTokens
    load_options: ClassVar[dict[str, Any]] = {"hubert": DEFAULT_HUBERT, "quantizer": DEFAULT_QUANTIZER}

    def __init__(self, hubert: torch.nn.Module, quantizer: Quantizer, *, source: dict[str, str] | None = None) -> None:
        if quantizer.info.input_size != hubert.config.hidden_size:
            where = (source or {}).get("quantizer", "the quantizer")
            raise WeightsError(
                f"{where}: the quantizer reads {quantizer.info.input_size} features a frame but HuBERT gives "
                f"{hubert.config.hidden_size}; use the HuBERT the quantizer was trained on (HuBERT base: 768)"
            )
        self.hubert = hubert
        self.quantizer = quantizer
        self.source = source or {}

    @classmethod
    def load(cls, model: ModelRef = None, *, device: str | torch.device = "cpu", mode: str = "exact",
             hubert: ModelRef = None, quantizer: ModelRef = None) -> "HubertSemantic":
        """Load HuBERT and the quantizer; ``mode`` changes nothing (float32 always).

        ``hubert``: a hub id or local transformers folder (default ``facebook/hubert-base-ls960``). ``quantizer``: a
        local file or ``hub-id:filename`` (default ``GitMylo/bark-voice-cloning:quantifier_hubert_base_ls960_14.pth``).
        ``model`` (what a pipeline spec's ``model`` gives) stands for ``hubert`` when that is not given; a local
        folder that also holds one quantizer ``.pth`` beside HuBERT's config.json then gives the quantizer too.
        Bark's model names (``bark``, ``bark-small``: a pipeline's default) are ignored here.
        """
        device = check_device(device)
        if model is not None and hubert is None and str(model) not in MODEL_ALIASES:  # Bark's names are not HuBERT's
            hubert = model
            if quantizer is None:
                quantizer = _quantizer_in(model)
        hubert_ref = str(hubert if hubert is not None else DEFAULT_HUBERT)
        quantizer_ref = str(quantizer if quantizer is not None else DEFAULT_QUANTIZER)
        source = {"hubert": hubert_ref, "quantizer": quantizer_ref}
        return cls(load_hubert(hubert_ref, device=device), load_quantizer(quantizer_ref, device=device), source=source)

    @classmethod
    def kernel_plan(cls, mode: str = "exact", device: str | torch.device = "cpu") -> dict[str, str]:
        """Both modes run the same float32 models (the recipe's tokens need them)."""
        return {"hubert": "fp32 (transformers HubertModel, layers 1-9)", "quantizer": "fp32 LSTM + linear"}

    @property
    def device(self) -> torch.device:
        return self.quantizer.fc.weight.device

    def describe(self) -> str:
        """Where the weights came from, for a voice's source note."""
        return f"{self.name} (hubert {self.source.get('hubert', '?')}, quantizer {self.source.get('quantizer', '?')})"

    def _features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Raw waveform (1, n) at 16 kHz -> the output of transformer layer 9 (1, T, hidden)."""
        return self.hubert(waveform).last_hidden_state  # the model is cut after layer 9

    def tokenizer(self, progress: Progress | None = None) -> WindowedTokenizer:
        """A fresh windowed tokenizer: ``feed`` 16 kHz blocks, then ``finish``."""
        return WindowedTokenizer(self._features, self.quantizer, self.device, progress)

    def run(self, value: Audio, *, voice: Any = None, generator: torch.Generator | None = None,
            progress: Progress | None = None, **options: Any) -> SemanticTokens:
        """Audio (any rate, mono) -> semantic tokens (T,), T = 1 + (n16 - 400) // 320 for n16 samples at 16 kHz."""
        from barkkit.audio import resample

        if len(value) == 0:
            raise AudioError("the recording is empty; a voice needs at least 1 s of speech (5 to 10 s is best)")
        samples = np.asarray(resample(value, SAMPLE_RATE).samples)
        tokenizer = self.tokenizer(progress)
        for start in range(0, samples.size, 2 * SAMPLE_RATE):  # in 2-s blocks: the tokenizer holds one window
            tokenizer.feed(samples[start : start + 2 * SAMPLE_RATE])
        return SemanticTokens(tokenizer.finish().numpy())

    def run_stream(self, blocks: Iterable[np.ndarray], sample_rate: int, *, generator: torch.Generator | None = None,
                   progress: Progress | None = None, **options: Any) -> SemanticTokens:
        """The same as ``run`` for a recording given as mono float32 blocks at ``sample_rate``, in bounded memory:
        the blocks are resampled as a stream (soxr gives the one-pass result exactly) and tokenised window by
        window (``WINDOW_S`` = 30 s, ``CONTEXT_S`` = 3 s on each side of the 24 s each window keeps)."""
        import soxr

        tokenizer = self.tokenizer(progress)
        resampler = None if sample_rate == SAMPLE_RATE else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            tokenizer.feed(block if resampler is None else resampler.resample_chunk(block, last=False))
        if resampler is not None:
            tokenizer.feed(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        return SemanticTokens(tokenizer.finish().numpy())


def _quantizer_in(folder: ModelRef) -> str | None:
    """The one quantizer file (``*.pth``) in a local folder that also holds HuBERT; None when there is none."""
    if folder is None or not os.path.isdir(folder):
        return None
    found = sorted(name for name in os.listdir(folder) if name.endswith(".pth"))
    if len(found) > 1:
        raise WeightsError(f"{folder}: holds several quantizer files ({', '.join(found)}); name one with quantizer=")
    return os.path.join(folder, found[0]) if found else None
