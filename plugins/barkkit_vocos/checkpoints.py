"""A random-weight Vocos checkpoint in the layout of ``charactr/vocos-encodec-24khz``, for tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from barkkit_vocos.decoder import CONFIG_FILE, WEIGHTS_FILE

__all__ = ["VOCOS_ENCODEC_CONFIG", "save_vocos_checkpoint"]

VOCOS_ENCODEC_CONFIG = """\
feature_extractor:
  class_path: vocos.feature_extractors.EncodecFeatures
  init_args:
    encodec_model: encodec_24khz
    bandwidths: [1.5, 3.0, 6.0, 12.0]
    train_codebooks: false

backbone:
  class_path: vocos.models.VocosBackbone
  init_args:
    input_channels: 128
    dim: 384
    intermediate_dim: 1152
    num_layers: 8
    adanorm_num_embeddings: 4  # len(bandwidths)

head:
  class_path: vocos.heads.ISTFTHead
  init_args:
    dim: 384
    n_fft: 1280
    hop_length: 320
    padding: same
"""
"""The released model's config.yaml (the vocos repository's configs/vocos-encodec.yaml, model part)."""


def save_vocos_checkpoint(folder: str | os.PathLike, *, seed: int = 0, codebooks: torch.Tensor | None = None) -> Path:
    """Write ``config.yaml`` and ``pytorch_model.bin`` (random weights, the real layout and sizes) into ``folder``.

    The state dict holds what the released file holds: ``feature_extractor.codebook_weights`` (16 codebooks x
    1024, 128), ``backbone.*`` and ``head.*``. ``codebooks`` (K, 1024, 128), e.g. an EnCodec checkpoint's, replaces
    the first K random codebooks. Needs the vocos package. Returns the folder.
    """
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        backbone = VocosBackbone(input_channels=128, dim=384, intermediate_dim=1152, num_layers=8, adanorm_num_embeddings=4)
        head = ISTFTHead(dim=384, n_fft=1280, hop_length=320, padding="same")
        # Per-bandwidth norms start at scale 1 / shift 0 in training; spread them so the bandwidth choice matters.
        for module in backbone.modules():
            if hasattr(module, "scale") and isinstance(module.scale, torch.nn.Embedding):
                torch.nn.init.normal_(module.scale.weight, 1.0, 0.2)
                torch.nn.init.normal_(module.shift.weight, 0.0, 0.2)
        codebook_weights = torch.randn(16 * 1024, 128)
    finally:
        torch.random.set_rng_state(generator_state)
    if codebooks is not None:
        codebook_weights[: codebooks.shape[0] * 1024] = codebooks.reshape(-1, 128)
    state = {"feature_extractor.codebook_weights": codebook_weights}
    state.update({f"backbone.{k}": v for k, v in backbone.state_dict().items()})
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    torch.save(state, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(VOCOS_ENCODEC_CONFIG, encoding="utf-8")
    return folder
