"""Sampling the next token exactly as Suno's ``generate_text_semantic`` / ``generate_coarse`` do.

Order per step (the reference's): top-p, then top-k, then ``softmax(logits / temp)``, then one
``torch.multinomial(probs, 1, generator=...)``. ``multinomial`` draws one exponential variate per vocabulary entry
from the generator, so the slice of logits that is sampled must have the reference's length, and each call the
reference makes must be one call here (or one row of a batched call: a (N, V) draw equals N (V,) draws in order).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["sample", "filter_logits", "top_p_remove_mask", "top_p_remove_mask_reference", "check_temperature"]


def check_temperature(name: str, value: float | None, *, allow_none: bool = False) -> None:
    """A clear error for a temperature that cannot be sampled with (the reference divides by it)."""
    from barkkit.errors import PipelineError

    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        hint = " or None for argmax" if allow_none else ""
        raise PipelineError(f"{name} must be a number above 0{hint}, got {value!r}")


def top_p_remove_mask_reference(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which logits (B, V) nucleus sampling removes, computed as Suno's code does: in numpy, in float32.

    The reference sorts with ``np.argsort`` (its tie order), takes scipy's softmax and numpy's running sum, and
    compares with ``top_p`` in float32. torch's exp, sum and cumsum round differently in the last bit, which moves
    the cut whenever the running sum lands next to ``top_p``; exact mode therefore does this step in numpy. On a
    CPU this costs no transfer; on an accelerator it is one copy of the sampled logits per step.
    """
    from scipy.special import softmax

    rows = logits.detach().to("cpu", torch.float32).numpy()
    masks = np.zeros(rows.shape, dtype=bool)
    for row, mask in zip(rows, masks):
        sorted_indices = np.argsort(row)[::-1]
        cumulative_probs = np.cumsum(softmax(row[sorted_indices]))
        remove = cumulative_probs > top_p
        remove[1:] = remove[:-1].copy()  # keep the token that crosses top_p
        remove[0] = False
        mask[sorted_indices[remove]] = True
    return torch.from_numpy(masks).to(logits.device)


def top_p_remove_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Which logits (B, V) nucleus sampling removes, with torch ops only (no host round trip).

    Same rule as the reference: sort descending (ties in the order of a stable ascending sort, reversed, as a stable
    ``np.argsort(...)[::-1]`` gives), keep tokens up to and including the first whose running probability exceeds
    ``top_p`` (compared in float32). The running sum may differ from numpy's in the last bit, so a token exactly at
    the cut can differ from the reference; fast mode uses this, exact mode ``top_p_remove_mask_reference``.
    """
    ascending, order = torch.sort(logits, dim=-1, stable=True)
    sorted_logits, order = ascending.flip(-1), order.flip(-1)  # (B, V) descending
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (B, V)
    remove_sorted = cumulative > top_p
    remove_sorted = torch.cat([torch.zeros_like(remove_sorted[:, :1]), remove_sorted[:, :-1]], dim=-1)
    return torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)


def filter_logits(logits: torch.Tensor, *, top_k: int | None, top_p: float | None,
                  exact_top_p: bool = True) -> torch.Tensor:
    """The reference's filters on logits (B, V): top-p, then top-k; removed entries become -inf.

    ``exact_top_p``: the nucleus cut computed in numpy as Suno's code does (``top_p_remove_mask_reference``);
    otherwise in torch on the logits' device (``top_p_remove_mask``, fast mode).
    """
    if top_p is not None:
        remove = top_p_remove_mask_reference(logits, top_p) if exact_top_p else top_p_remove_mask(logits, top_p)
        logits = logits.masked_fill(remove, -float("inf"))
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1) k-th largest
        logits = logits.masked_fill(logits < kth, -float("inf"))
    return logits


def sample(
    logits: torch.Tensor,
    generator: torch.Generator,
    *,
    temp: float,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of ``logits`` (B, V), as the reference does. Returns (tokens (B, 1) int64, probs (B, V)).

    ``top_p`` and ``top_k`` of None are off. The probabilities are those sampled from (after filtering), which the
    semantic stage reads for its end-of-sequence test.
    """
    probs = F.softmax(filter_logits(logits, top_k=top_k, top_p=top_p) / temp, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator), probs
