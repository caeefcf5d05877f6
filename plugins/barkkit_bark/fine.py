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
import torch.nn as nn
from torch.nn import functional as F

from barkkit.constants import CODEBOOK_SIZE, N_FINE_CODEBOOKS
from barkkit.errors import PipelineError
from barkkit.stage import Progress
from barkkit.tokens import CoarseTokens, FineTokens
from barkkit.voice import Voice
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

__all__ = ["FineStage", "FineOptions", "generate_fine", "generate_fine_batch"]

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


@torch.inference_mode()
def generate_fine(
    model: FineGPT,
    coarse: np.ndarray,
    voice: Voice | None,
    generator: torch.Generator,
    options: FineOptions,
    *,
    progress: Progress | None = None,
) -> np.ndarray:
    """Coarse codes (n_coarse, T) -> fine codes (8, T); the first n_coarse codebooks are kept as given."""
    temp = options.fine_temp
    device = model.transformer.wpe.weight.device
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
    n_loops = max(0, int(np.ceil((n_frames - (WINDOW - n_history)) / STRIDE))) + 1

    x = torch.from_numpy(codes.T.copy()).to(device)  # (N, 8), N >= 1024
    n_total = x.shape[0]
    for n in range(n_loops):
        start = min(n * STRIDE, n_total - WINDOW)
        start_fill = min(n_history + n * STRIDE, n_total - STRIDE)
        first_row = start_fill - start  # rows before it were filled by an earlier window or the voice
        window = x[start : start + WINDOW][None]  # (1, 1024, 8), a view: writes land in x
        for codebook in range(n_coarse, N_FINE_CODEBOOKS):
            logits = model(codebook, window, first_row=first_row)[0, :, :CODEBOOK_SIZE]  # (1024 - first_row, 1024)
            if temp is None:
                predicted = torch.argmax(logits, dim=-1)
            else:
                probs = F.softmax(logits / temp, dim=-1)
                # One draw per row in row order: the same draws as the reference's one multinomial call per row.
                predicted = torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
            window[0, first_row:, codebook] = predicted
        if progress is not None:
            progress(n + 1, n_loops)
    fine = x.T.cpu().numpy()[:, n_history:]  # (8, T + padding)
    return fine[:, :n_frames]


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
        if not self.exact:  # fast mode: the row engine, as a batch of one (barkkit_bark.engine)
            return self.run_batch([value], voices=[voice], generators=[generator], progress=progress, **options)[0]
        return FineTokens(generate_fine(self.model, value.array, voice, generator, opts, progress=progress))

    def run_fast_batch(self, values: Sequence[Any], *, voices: Sequence[Voice | None],
                       generators: Sequence[torch.Generator], progress: Progress | None = None,
                       **options: Any) -> list[Any]:
        """``FineStage.run_batch`` in fast mode: the reference's 1024-frame windows, int8 weights, one row at a time."""
        check_batch(self, values, voices, generators)
        values = [CoarseTokens(v) for v in values]
        check_coarse_input(values)
        opts = make_options(FineOptions, options)
        codes = generate_fine_batch(self.model, [v.array for v in values], voices, generators, opts, progress=progress)
        return [FineTokens(c) for c in codes]


@torch.inference_mode()
def generate_fine_batch(model: nn.Module, coarses: Sequence[np.ndarray], voices: Sequence[Voice | None],
                        generators: Sequence[torch.Generator], options: FineOptions, *, pad_to_window: bool = True,
                        max_history: int = 512,
                        choose: Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                        progress: Progress | None = None) -> list[np.ndarray]:
    """Fine codes (8, T) for each row, the reference's 1024-frame windows at stride 512 (or unpadded, fast).

    ``choose(row, codebook, frames, logits)`` picks the codes of one pass: ``frames`` (F,) are the clip's frame index
    of each logits row (F, 1024) (negative: the voice's history; from T on: padding); by default sampled at
    ``fine_temp`` with the row's generator, or argmax (benchmarks feed known codes instead).
    """
    temp = options.fine_temp
    device = model.transformer.wpe.weight.device
    rows = []
    for coarse, voice in zip(coarses, voices):
        coarse = np.asarray(coarse, np.int64)
        n_coarse, T = coarse.shape
        arr = np.vstack([coarse, np.full((N_FINE_CODEBOOKS - n_coarse, T), CODEBOOK_SIZE, np.int64)])
        n_history = 0
        if voice is not None and max_history > 0:
            hist = voice.fine.array.astype(np.int64)[:, -max_history:]
            arr = np.hstack([hist, arr])
            n_history = hist.shape[1]
        n_pad = 0
        if arr.shape[1] < 1024 and pad_to_window:
            n_pad = 1024 - arr.shape[1]
            arr = np.hstack([arr, np.full((N_FINE_CODEBOOKS, n_pad), CODEBOOK_SIZE, np.int64)])
        n_loops = max(0, int(np.ceil((T - (1024 - n_history)) / 512))) + 1
        rows.append({"arr": torch.from_numpy(arr.T.copy()).to(device), "n_history": n_history, "n_pad": n_pad,
                     "n_loops": n_loops, "n_coarse": n_coarse, "T": T})
    # Rows run one at a time: the fine model is compute-bound over hundreds of frames, so batching gains nothing,
    # and alone each row's numbers are exactly what a single run computes.
    for row_index, (r, generator) in enumerate(zip(rows, generators)):
        arr, n_coarse = r["arr"], r["n_coarse"]
        L = arr.shape[0]
        W = min(1024, L)
        for n in range(r["n_loops"]):
            start = min(n * 512, L - W)
            fill = min(r["n_history"] + n * 512, L - 512) if L >= 1024 else r["n_history"]
            rel = fill - start
            buf = arr[start : start + W][None].clone()  # (1, W, 8)
            for nn_ in range(n_coarse, N_FINE_CODEBOOKS):
                logits = model(nn_, buf, first_row=rel, trim_last_layer=True)[0, :, :CODEBOOK_SIZE]  # (W - rel, 1024)
                if choose is not None:
                    frames = torch.arange(start + rel, start + W, device=device) - r["n_history"]
                    preds = choose(row_index, nn_, frames, logits)
                elif temp is None:
                    preds = logits.argmax(-1)
                else:
                    probs = F.softmax(logits.float() / temp, dim=-1)
                    preds = torch.multinomial(probs, 1, generator=generator)[:, 0]
                buf[0, rel:, nn_] = preds
            arr[start + rel : start + W, n_coarse:] = buf[0, rel:, n_coarse:]
        if progress is not None:
            progress(row_index + 1, len(rows))
    outs = []
    for r in rows:
        arr = r["arr"].T.cpu().numpy()[:, r["n_history"]:]
        if r["n_pad"]:
            arr = arr[:, : -r["n_pad"]]
        outs.append(arr[:, : r["T"]].copy())
    return outs
