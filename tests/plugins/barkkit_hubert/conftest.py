"""Tiny random HuBERT (a transformers folder, 10 layers) and quantizers in both file layouts, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from barkkit_hubert.hubert import write_hubert
from barkkit_hubert.quantizer import Quantizer, QuantizerInfo, write_quantizer
from tests.speech_like import speechy as speech_like

HIDDEN = 32  # the tiny HuBERT's width, so the quantizer's input size


def speechy(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """``tests.speech_like.speechy`` with more noise (0.05): (n,) or (n, channels), float32."""
    return speech_like(seconds, rate, channels, seed, noise=0.05)


def peaked_state(info: QuantizerInfo, seed: int) -> dict[str, torch.Tensor]:
    """Random quantizer weights with the input and output layers scaled up, so that tokens vary from frame to frame
    (PyTorch's default initialisation gives nearly the same token everywhere)."""
    torch.manual_seed(seed)
    state = Quantizer(info).state_dict()
    state["lstm.weight_ih_l0"] *= 20
    state["fc.weight"] *= 30
    if info.version == 1:
        state["intermediate.weight"] *= 20
    return state


@pytest.fixture(scope="session")
def hubert_folder(tmp_path_factory) -> Path:
    return write_hubert(tmp_path_factory.mktemp("hubert"), hidden_size=HIDDEN, num_hidden_layers=10, seed=3)


@pytest.fixture(scope="session")
def quantizers(tmp_path_factory) -> dict[str, Path]:
    """{"v0": no .info entry (an old file), "v0_info": version 0 with .info, "v1": version 1 with .info,
    "v1_bare": version 1 without .info}; small sizes (hidden 24, intermediate 48), Bark's 10,000 outputs."""
    folder = tmp_path_factory.mktemp("quantizers")
    v0, v1 = QuantizerInfo(HIDDEN, 24, 10_000, 0), QuantizerInfo(HIDDEN, 24, 10_000, 1, intermediate_size=48)
    return {
        "v0": write_quantizer(folder / "quantifier_v0.pth", v0, with_info=False, state=peaked_state(v0, 1)),
        "v0_info": write_quantizer(folder / "quantifier_v0_info.pth", v0, state=peaked_state(v0, 2)),
        "v1": write_quantizer(folder / "quantifier_V1.pth", v1, state=peaked_state(v1, 3)),
        "v1_bare": write_quantizer(folder / "quantifier_V1_bare.pth", v1, with_info=False, state=peaked_state(v1, 4)),
    }


@pytest.fixture(scope="session")
def codec_folder(tmp_path_factory) -> Path:
    from barkkit_encodec.checkpoints import write_encodec_checkpoint

    folder = tmp_path_factory.mktemp("codec")
    write_encodec_checkpoint(folder, seed=5)
    return folder
