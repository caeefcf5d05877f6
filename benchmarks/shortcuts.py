"""Shortcuts fast mode does not take, for measuring what they would change (``agreement.py``, ``run.py --shortcuts``).

Each wraps an input or a model the library's own loops are given, so the loops hold no benchmark-only switches:

- ``unpadded``: the fine model reading only a clip's real frames, not the reference's padding to a 1024-frame
  window (the non-causal model attends to the padding frames, so this moves the outputs);
- ``shorter_history``: a voice whose fine prompt keeps only its last frames (the fine stage reads up to 512).

A shorter coarse history is an option of the coarse stage already (``max_coarse_history``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from barkkit.constants import CODEBOOK_SIZE
from barkkit.tokens import CoarseTokens, FineTokens
from barkkit.voice import Voice
from barkkit_bark.fine import fine_input


class unpadded(nn.Module):
    """The fine model run, for one clip's coarse codes (n_coarse, T) and voice, on the real frames of each window
    only (the voice's and the clip's, ``fine_input``); the logits of the padding frames after them are zeros
    (sampled, then dropped with the padding: no real frame ever reads them)."""

    def __init__(self, model: nn.Module, coarse: np.ndarray, voice: Voice | None) -> None:
        super().__init__()
        codes, _ = fine_input(coarse, voice)  # (N, 8)
        self.model, self.n_real = model, int((codes[:, 0] != CODEBOOK_SIZE).sum())
        self.transformer = model.transformer  # where the loop looks for the device

    def forward(self, pred_idx: int, idx: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        logits = self.model(pred_idx, idx[:, : self.n_real], **kwargs)  # (B, n_real - first_row, V)
        missing = idx.shape[1] - self.n_real
        return torch.cat([logits, logits.new_zeros(logits.shape[0], missing, logits.shape[2])], dim=1) if missing > 0 else logits


def shorter_history(voice: Voice | None, frames: int) -> Voice | None:
    """``voice`` with only the last ``frames`` frames of its fine prompt (and of its coarse prompt, which must cover
    the same audio; the fine stage reads only the fine one). No voice: none."""
    if voice is None:
        return None
    return dataclasses.replace(voice, coarse=CoarseTokens(voice.coarse.array[:, -frames:]),
                               fine=FineTokens(voice.fine.array[:, -frames:]))
