"""Torch devices named by users: checked once, with an error that says what to use instead."""

from __future__ import annotations

import torch

from barkkit.errors import PipelineError

__all__ = ["check_device"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:1", "mps", ...) as a ``torch.device`` that this machine has.

    Raises PipelineError for a name torch does not know or a device that is not here (torch's own errors say
    neither what to do nor, for a missing GPU, which device was asked for).
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise PipelineError(f"unknown device '{device}'; use cpu, cuda, cuda:N (a GPU's index) or mps") from None
    if resolved.type not in ("cpu", "cuda", "mps", "xpu"):  # "meta" holds no values; others run no Bark
        raise PipelineError(f"device '{device}' cannot run Bark; use cpu, cuda, cuda:N (a GPU's index) or mps")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else f"torch {torch.__version__} finds no CUDA GPU (or no NVIDIA driver) on this machine")
            raise PipelineError(f"device '{device}': {why}; use --device cpu")
        if resolved.index is not None and resolved.index >= count:
            raise PipelineError(f"device '{device}': this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise PipelineError(f"device '{device}': MPS (Apple GPUs) is not available here; use --device cpu")
    return resolved
