"""The ``vocos`` decoder: Bark's fine tokens through Vocos (Siuzdak, 2023) instead of EnCodec's own decoder.

Vocos predicts STFT coefficients from the EnCodec codebook embeddings and inverts them; on EnCodec tokens it is
often cleaner than EnCodec's decoder. Optional: ``pip install 'barkkit[vocos]'`` (the ``vocos`` package, which
imports torchaudio). Checkpoint: ``charactr/vocos-encodec-24khz`` (``config.yaml`` + ``pytorch_model.bin``).

The ``vocos`` package's own loader builds an ``EncodecFeatures`` that downloads EnCodec's pretrained weights even
though decoding tokens needs only the codebooks; here the backbone and head are built from ``config.yaml`` and the
codebooks come from the checkpoint (``feature_extractor.codebook_weights``), or, if it lacks them, from the
model's EnCodec weights. Nothing is downloaded but the checkpoint itself, through ``barkkit.weights``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from barkkit.constants import N_FINE_CODEBOOKS, SAMPLE_RATE
from barkkit.errors import PluginError, WeightsError
from barkkit.stage import Decoder, ModelRef, Progress
from barkkit.tokens import Audio, FineTokens
from barkkit.weights import DEFAULT_MODEL, MODEL_ALIASES, is_local, load_state_dict, resolve_file

__all__ = ["VocosDecoder", "VocosCodes", "DEFAULT_VOCOS", "CONFIG_FILE", "WEIGHTS_FILE"]

DEFAULT_VOCOS = "charactr/vocos-encodec-24khz"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "pytorch_model.bin"
BANDWIDTH_KBPS = 6.0  # Bark's 8 codebooks
# Classes config.yaml may name: never import an arbitrary class path from a file.
BACKBONES = {"vocos.models.VocosBackbone", "vocos.models.VocosResNetBackbone"}
HEADS = {"vocos.heads.ISTFTHead", "vocos.heads.IMDCTSymExpHead", "vocos.heads.IMDCTCosHead"}


def _import_vocos() -> Any:
    try:
        import vocos.heads
        import vocos.models
    except Exception as exc:  # ImportError, or torchaudio failing to load inside it (OSError, RuntimeError)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PluginError(
            f"the vocos decoder needs the vocos package: pip install 'barkkit[vocos]' (import failed: {reason})"
        ) from None
    return vocos


def _vocos_files(model: ModelRef) -> tuple[Path, Path]:
    """config.yaml and pytorch_model.bin for a model reference.

    A folder holding them (or a ``vocos/`` subfolder that does) is used as it is; a hub id other than Bark's own
    repositories is taken to be a Vocos repository; anything else (``bark``, ``bark-small``, a Bark folder) uses
    ``charactr/vocos-encodec-24khz``.
    """
    model = DEFAULT_MODEL if model is None else model
    if is_local(model):
        folder = Path(model) if Path(model).is_dir() else Path(model).parent
        for candidate in (folder, folder / "vocos"):
            if (candidate / CONFIG_FILE).is_file() and (candidate / WEIGHTS_FILE).is_file():
                return candidate / CONFIG_FILE, candidate / WEIGHTS_FILE
        source: str | os.PathLike = DEFAULT_VOCOS
    elif str(model) in MODEL_ALIASES or str(model) in MODEL_ALIASES.values():
        source = DEFAULT_VOCOS
    else:
        source = model
    return resolve_file(source, CONFIG_FILE), resolve_file(source, WEIGHTS_FILE)


def _build(config: dict[str, Any], section: str, allowed: set[str]) -> nn.Module:
    vocos = _import_vocos()
    entry = config.get(section) or {}
    class_path = entry.get("class_path", "")
    if class_path not in allowed:
        raise WeightsError(f"vocos config: {section} class '{class_path}' is not one of {', '.join(sorted(allowed))}")
    module_name, class_name = class_path.rsplit(".", 1)
    module = vocos.models if module_name == "vocos.models" else vocos.heads
    try:
        return getattr(module, class_name)(**(entry.get("init_args") or {}))
    except TypeError as exc:
        raise WeightsError(f"vocos config: bad init_args for {class_path} ({exc})") from None


class VocosCodes(nn.Module):
    """Codes (K, B, T) -> audio (B, T x hop): codebook embeddings summed, Vocos backbone, Fourier head."""

    def __init__(self, codebooks: torch.Tensor, backbone: nn.Module, head: nn.Module, bandwidth_id: int | None) -> None:
        super().__init__()
        self.register_buffer("codebooks", codebooks)  # (K * 1024, 128): codebook k at rows k*1024 ... k*1024+1023
        self.backbone = backbone
        self.head = head
        self.bandwidth_id = bandwidth_id

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(codes.shape[0], device=codes.device).view(-1, 1, 1) * 1024
        features = F.embedding(codes + offsets, self.codebooks).sum(dim=0).transpose(1, 2)  # (B, 128, T)
        kwargs = {}
        if self.bandwidth_id is not None:
            kwargs["bandwidth_id"] = torch.tensor([self.bandwidth_id], device=codes.device)
        return self.head(self.backbone(features, **kwargs))


class VocosDecoder(Decoder):
    """Vocos on EnCodec tokens at 6 kbps: (8, T) codes to 24 kHz audio, T x 320 samples.

    Decodes in one pass: its layers are non-causal, so chunks would not give the one-pass result; memory grows by
    about 240 MB per minute of audio (measured on CPU, float32), 60 MB for 10 s.
    """

    name: ClassVar[str] = "vocos"
    sample_rate: ClassVar[int] = SAMPLE_RATE
    can_encode: ClassVar[bool] = False

    def __init__(self, model: VocosCodes) -> None:
        self.model = model

    @classmethod
    def load(cls, model: ModelRef = None, *, device: str | torch.device = "cpu", mode: str = "exact") -> "VocosDecoder":
        import yaml

        _import_vocos()
        config_path, weights_path = _vocos_files(model)
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            raise WeightsError(f"{config_path}: not a readable vocos config ({exc})") from None
        if not isinstance(config, dict):
            raise WeightsError(f"{config_path}: not a vocos config (expected feature_extractor, backbone and head)")
        features = config.get("feature_extractor") or {}
        if not str(features.get("class_path", "")).endswith("EncodecFeatures"):
            raise WeightsError(f"{config_path}: this Vocos does not decode EnCodec tokens; use charactr/vocos-encodec-24khz")
        bandwidths = [float(b) for b in (features.get("init_args") or {}).get("bandwidths", [1.5, 3.0, 6.0, 12.0])]
        if BANDWIDTH_KBPS not in bandwidths:
            raise WeightsError(f"{config_path}: this Vocos was not trained for 6 kbps (8 codebooks), only {bandwidths}")
        backbone, head = _build(config, "backbone", BACKBONES), _build(config, "head", HEADS)
        adanorm = getattr(backbone, "adanorm", False)
        state = load_state_dict(weights_path)
        codebooks = state.get("feature_extractor.codebook_weights")
        if codebooks is None:  # a checkpoint without the codebooks: take them from the model's EnCodec weights
            from barkkit_encodec.checkpoints import load_codec

            codebooks = load_codec(model).codebooks.reshape(-1, 128)
        if codebooks.shape[0] < N_FINE_CODEBOOKS * 1024:
            raise WeightsError(f"{weights_path}: codebook_weights has {codebooks.shape[0]} rows; 8 codebooks need 8192")
        for prefix, module in (("backbone.", backbone), ("head.", head)):
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(part, strict=True)
            except RuntimeError as exc:
                raise WeightsError(
                    f"{weights_path}: the {prefix[:-1]} weights do not match {config_path} ({str(exc).splitlines()[0]})"
                ) from None
        vocos_codes = VocosCodes(codebooks[: N_FINE_CODEBOOKS * 1024].float(), backbone, head,
                                 bandwidths.index(BANDWIDTH_KBPS) if adanorm else None)
        return cls(vocos_codes.eval().to(device))

    def decode(self, tokens: FineTokens, *, progress: Progress | None = None) -> Audio:
        tokens = tokens if isinstance(tokens, FineTokens) else FineTokens(tokens)
        device = self.model.codebooks.device
        codes = torch.from_numpy(np.array(tokens)).to(device)[:, None]  # (8, 1, T)
        with torch.inference_mode():
            audio = self.model(codes)[0]  # (T * 320,)
        if progress:
            progress(len(tokens), len(tokens))
        return Audio(audio.float().cpu().numpy(), self.sample_rate)
