"""The fine stage: coarse codes (2, T) -> all eight codebooks (8, T) (Suno's ``generate_fine``).

Codebooks 3..8 start as 1024 (padding). Up to 512 frames of the voice's fine codes are prepended, and the input is
padded with 1024 to at least 1024 frames, since the non-causal model always reads 1024 frames. Windows of 1024
frames at a stride of 512 are filled in turn; in each, codebooks 3..8 are predicted one after the other, each from
one forward pass, at temperature ``fine_temp`` (argmax where it is None) for every frame not yet filled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from barkkit.constants import CODEBOOK_SIZE, N_FINE_CODEBOOKS
from barkkit.errors import PipelineError
from barkkit.stage import Progress
from barkkit.tokens import CoarseTokens, FineTokens
from barkkit.voice import Voice
from barkkit_bark.certified import certain_draws
from barkkit_bark.common import (
    BarkStage,
    defaults_of,
    help_of,
    make_options,
    option_field,
)
from barkkit_bark.engine import check_batch, check_generator
from barkkit_bark.model import FineGPT
from barkkit_bark.sampling import check_temperature

__all__ = ["FineStage", "FineOptions", "generate_fine", "fine_input"]

WINDOW = 1024  # frames the fine model reads at once
STRIDE = 512  # frames between windows; also the most voice frames prepended
PAD = CODEBOOK_SIZE  # the "not yet predicted" code


@dataclass(frozen=True)
class FineOptions:
    """The fine stage's options: the reference's ``generate_fine`` temperature, with its default."""

    fine_temp: float | None = option_field(0.5, "Fine stage temperature, or none for the most likely code (argmax).")

    def __post_init__(self) -> None:
        check_temperature("fine_temp", self.fine_temp, allow_none=True)


def check_coarse_input(values: Sequence[CoarseTokens]) -> None:
    if any(len(value) == 0 for value in values):
        raise PipelineError("no coarse codes to refine; the coarse stage produced an empty sequence")


FineChooser = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor]
"""``choose(row, codebook, frames, logits)`` picks the codes of one pass: ``frames`` (F,) are the clip's frame index of
each logits row (F, 1024) (negative: the voice's history; from T on: padding)."""


def fine_input(coarse: np.ndarray, voice: Voice | None) -> tuple[np.ndarray, int]:
    """Coarse codes (n_coarse, T) -> the frames the fine model reads (N, 8), N >= 1024: the voice's last 512 fine
    frames, the coarse codes with codebooks 3..8 unknown (PAD), PAD frames up to a full window; and the number of
    voice frames before the clip."""
    coarse = np.asarray(coarse, dtype=np.int64)
    n_coarse, n_frames = coarse.shape
    codes = np.vstack([coarse, np.full((N_FINE_CODEBOOKS - n_coarse, n_frames), PAD, dtype=np.int64)])  # (8, T)
    n_history = 0
    if voice is not None:
        history = voice.fine.array[:, -STRIDE:].astype(np.int64)  # (8, H), H <= 512
        codes = np.hstack([history, codes])
        n_history = history.shape[1]
    n_padding = max(0, WINDOW - codes.shape[1])  # the model always reads a full window
    codes = np.hstack([codes, np.full((N_FINE_CODEBOOKS, n_padding), PAD, dtype=np.int64)])
    return codes.T.copy(), n_history


@torch.inference_mode()
def generate_fine(model: FineGPT, coarses: Sequence[np.ndarray], voices: Sequence[Voice | None],
                  generators: Sequence[torch.Generator], options: FineOptions, *, trim_last_layer: bool = False,
                  twin: FineGPT | None = None, choose: FineChooser | None = None,
                  progress: Progress | None = None) -> list[np.ndarray]:
    """Coarse codes (n_coarse, T) -> fine codes (8, T) for each row; the first n_coarse codebooks are kept as given.

    Rows run one at a time, in exact and fast mode alike: the fine model is compute-bound over 1024 frames, so
    batching rows gains nothing, and alone each row computes exactly what a single run computes. Each pass samples
    at ``fine_temp`` with the row's generator (argmax where it is None), or as ``choose`` says (benchmarks feed
    known codes). ``trim_last_layer`` (fast mode): ``FineGPT.forward``. ``twin`` (exact mode): the model on faster
    fp32 kernels, whose draws a pass keeps where rounding cannot have changed them (``certified``); otherwise the
    pass runs again on ``model``.
    """
    temp = options.fine_temp
    device = model.transformer.wpe.weight.device
    inputs = [fine_input(coarse, voice) for coarse, voice in zip(coarses, voices, strict=True)]
    n_loops = [max(0, int(np.ceil((np.shape(c)[1] - (WINDOW - h)) / STRIDE))) + 1 for c, (_, h) in zip(coarses, inputs)]
    outputs, done = [], 0
    for row, ((codes, n_history), coarse, generator) in enumerate(zip(inputs, coarses, generators)):
        n_coarse, n_frames = np.shape(coarse)
        x = torch.from_numpy(codes).to(device)  # (N, 8)
        n_total = x.shape[0]
        for n in range(n_loops[row]):
            start = min(n * STRIDE, n_total - WINDOW)
            first_row = min(n_history + n * STRIDE, n_total - STRIDE) - start  # rows before: filled already
            window = x[start : start + WINDOW][None]  # (1, 1024, 8), a view: writes land in x
            for codebook in range(n_coarse, N_FINE_CODEBOOKS):
                predicted = None
                if twin is not None and choose is None:  # exact mode on faster kernels, where the draws are certain
                    fast = twin(codebook, window, first_row=first_row, trim_last_layer=True)
                    predicted = certain_draws(fast[0, :, :CODEBOOK_SIZE], temp, generator)
                if predicted is None:
                    logits = model(codebook, window, first_row=first_row, trim_last_layer=trim_last_layer)
                    logits = logits[0, :, :CODEBOOK_SIZE]  # (1024 - first_row, 1024)
                    if choose is not None:
                        frames = torch.arange(start + first_row, start + WINDOW, device=device) - n_history
                        predicted = choose(row, codebook, frames, logits)
                    else:
                        predicted = draw_codes(logits, temp, generator)
                window[0, first_row:, codebook] = predicted
            done += 1
            if progress is not None:
                progress(done, sum(n_loops))
        outputs.append(x.T.cpu().numpy()[:, n_history : n_history + n_frames].copy())  # (8, T)
    return outputs


def draw_codes(logits: torch.Tensor, temp: float | None, generator: torch.Generator) -> torch.Tensor:
    """Logits (R, 1024) -> one code per frame (R,): the reference's draw at ``temp``, or the argmax where None."""
    if temp is None:
        return torch.argmax(logits, dim=-1)
    probs = F.softmax(logits.float() / temp, dim=-1)  # (bf16 logits on a GPU in fast mode)
    # One draw per frame in frame order: the reference's one multinomial call per row.
    return torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]


class FineStage(BarkStage):
    """Coarse codes (2, T) -> all eight codebooks (8, T) with Bark's fine model (``bark.fine``)."""

    name: ClassVar[str] = "bark.fine"
    consumes: ClassVar[type] = CoarseTokens
    produces: ClassVar[type] = FineTokens
    kind = "fine"
    Options = FineOptions
    options: ClassVar[dict[str, Any]] = defaults_of(FineOptions)
    option_help: ClassVar[dict[str, str]] = help_of(FineOptions)

    def run(
        self,
        value: CoarseTokens,
        *,
        voice: Voice | None = None,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> FineTokens:
        """Fine codes for ``value``; ``fine_temp=None`` takes the most likely code instead of sampling."""
        value = CoarseTokens(value)
        check_coarse_input([value])
        opts = make_options(FineOptions, options)
        generator = check_generator(generator, self.device)
        codes = generate_fine(self.model, [value.array], [voice], [generator], opts, trim_last_layer=not self.exact,
                              twin=self.twin, progress=progress)
        return FineTokens(codes[0])

    def run_fast_batch(self, values: Sequence[Any], *, voices: Sequence[Voice | None],
                       generators: Sequence[torch.Generator], progress: Progress | None = None,
                       **options: Any) -> list[Any]:
        """``FineStage.run_batch`` in fast mode: the same loop as a single run, over every row."""
        check_batch(self, values, voices, generators)
        values = [CoarseTokens(v) for v in values]
        check_coarse_input(values)
        opts = make_options(FineOptions, options)
        codes = generate_fine(self.model, [v.array for v in values], voices, generators, opts, trim_last_layer=True,
                              progress=progress)
        return [FineTokens(c) for c in codes]
