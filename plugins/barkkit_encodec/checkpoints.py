"""EnCodec weights: find them, read them safely, convert them to ``barkkit_encodec.model.Codec``.

Three formats hold the same 24 kHz model:

- the original checkpoint ``encodec_24khz-d7cc33bc.th`` (the ``encodec`` package's plain state dict:
  ``decoder.model.3.convtr.convtr.weight_g``, ``quantizer.vq.layers.0._codebook.embed``, ...);
- transformers' ``EncodecModel`` (``decoder.layers.3.conv.weight_g`` or, since transformers 4.3x,
  ``...conv.parametrizations.weight.original0``; ``quantizer.layers.0.codebook.embed``), standalone
  (``facebook/encodec_24khz``) or inside a ``BarkModel`` under ``codec_model.`` with its config in ``codec_config``
  (``suno/bark``, ``suno/bark-small``);
- folded in memory (``Codec``): weight norm applied once, the first K codebooks stacked in ``codebooks``.

The renames are the ones transformers' ``convert_encodec_checkpoint_to_pytorch.py`` documents. Files are read with
``weights_only`` torch loading or safetensors; nothing is unpickled.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from barkkit.errors import WeightsError
from barkkit.weights import DEFAULT_MODEL, load_state_dict, load_torch_file, read_json, resolve_file
from barkkit_encodec.model import Codec, CodecConfig

__all__ = [
    "ORIGINAL_CHECKPOINT",
    "TRANSFORMERS_WEIGHTS",
    "convert_original_keys",
    "fold_weight_norm",
    "codec_state_dict",
    "config_from_dict",
    "read_codec_weights",
    "load_codec",
    "random_original_state_dict",
    "write_encodec_checkpoint",
    "save_encodec_checkpoint",
    "reference_codec",
]

ORIGINAL_CHECKPOINT = "encodec_24khz-d7cc33bc.th"
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
BARK_PREFIX = "codec_model."

_ORIGINAL_RENAMES = [
    (re.compile(r"^(encoder|decoder)\.model\."), r"\1.layers."),
    (re.compile(r"\.conv\.conv\."), ".conv."),
    (re.compile(r"\.convtr\.convtr\."), ".conv."),
    (re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\."), r"quantizer.layers.\1.codebook."),
]


def convert_original_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the ``encodec`` package's keys to transformers' ``EncodecModel`` layout (tensors unchanged)."""
    converted = {}
    for key, value in state.items():
        for pattern, replacement in _ORIGINAL_RENAMES:
            key = pattern.sub(replacement, key)
        converted[key] = value
    return converted


def fold_weight_norm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace each weight-norm pair (``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1``) by the
    plain ``weight`` it stands for: ``g * v / ||v||``, the norm taken over all dims but the first (weight norm's dim 0)."""
    folded: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        for g_name, v_name in ((".weight_g", ".weight_v"), (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            if key.endswith(g_name):
                pairs.setdefault(key[: -len(g_name)], {})["g"] = value
                break
            if key.endswith(v_name):
                pairs.setdefault(key[: -len(v_name)], {})["v"] = value
                break
        else:
            folded[key] = value
    for prefix, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise WeightsError(f"codec weights: {prefix} has only half of its weight-norm pair; the checkpoint is incomplete")
        g, v = pair["g"].float(), pair["v"].float()
        norm = v.norm(2, dim=tuple(range(1, v.dim())), keepdim=True)
        folded[f"{prefix}.weight"] = v * (g / norm)
    return folded


def codec_state_dict(state: Mapping[str, torch.Tensor], num_quantizers: int = 8) -> dict[str, torch.Tensor]:
    """A state dict for ``Codec`` from one in transformers' layout (weight norm folded, codebooks stacked).

    Keeps the encoder, the decoder and the first ``num_quantizers`` codebooks; drops the quantizer's training
    statistics (``cluster_size``, ``embed_avg``, ``inited``).
    """
    state = fold_weight_norm(state)
    result = {k: v.float() for k, v in state.items() if k.startswith(("encoder.", "decoder."))}
    try:
        result["codebooks"] = torch.stack(
            [state[f"quantizer.layers.{k}.codebook.embed"].float() for k in range(num_quantizers)]
        )
    except KeyError as exc:
        raise WeightsError(f"codec weights: codebook {exc.args[0]} is missing; need {num_quantizers} codebooks") from None
    return result


def config_from_dict(config: Mapping[str, Any] | None, *, source: str) -> CodecConfig:
    """A ``CodecConfig`` from a transformers ``EncodecConfig`` dict; a clear error for a model this codec cannot run."""
    if not config:
        return CodecConfig()
    unsupported = {
        "use_causal_conv": True,
        "norm_type": "weight_norm",
        "normalize": False,
        "chunk_length_s": None,
        "pad_mode": "reflect",
        "trim_right_ratio": 1.0,
        "use_conv_shortcut": True,
        "audio_channels": 1,
    }
    for key, expected in unsupported.items():
        if key in config and config[key] != expected:
            raise WeightsError(
                f"{source}: codec config has {key}={config[key]!r}; barkkit's encodec decoder runs the causal mono "
                f"24 kHz EnCodec model ({key}={expected!r}) that Bark uses"
            )
    values: dict[str, Any] = {}
    for spec in fields(CodecConfig):
        if spec.name in config and config[spec.name] is not None and spec.name != "num_quantizers":
            value = config[spec.name]
            values[spec.name] = tuple(value) if isinstance(value, list) else value
    codec_config = CodecConfig(**values)
    if codec_config.sampling_rate != 24_000 or codec_config.hop_length != 320:
        raise WeightsError(
            f"{source}: codec runs at {codec_config.sampling_rate} Hz with {codec_config.hop_length} samples a frame; "
            "Bark's tokens need the 24 kHz EnCodec model (320 samples a frame)"
        )
    return codec_config


# reading files ---------------------------------------------------------------------------------------------------
def _tensor_names(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return list(handle.keys())
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file, truncated or corrupt ({exc})") from None
    return list(load_state_dict(path))


def _read_transformers(model: str | os.PathLike, weights: Path, config: Mapping[str, Any] | None) -> tuple[dict, Any]:
    """Codec tensors (transformers names, prefix removed) and the codec's config dict from a transformers model.

    ``weights`` is one checkpoint file or a sharded checkpoint's ``*.index.json``; only the shards that hold codec
    tensors are read. Without a config.json, a BarkModel is told from an EncodecModel by its tensor names.
    """
    names = list(read_json(weights).get("weight_map") or {}) if weights.name.endswith(".index.json") else []
    model_type = (config or {}).get("model_type")
    if model_type == "bark":
        prefix, codec_config = BARK_PREFIX, (config or {}).get("codec_config")
    elif model_type == "encodec":
        prefix, codec_config = "", config
    else:
        names = names or _tensor_names(weights)
        prefix, codec_config = (BARK_PREFIX if any(n.startswith(BARK_PREFIX) for n in names) else ""), None
    return load_state_dict(weights, prefix, model=model), codec_config


def _load_json(path: Path | None) -> dict[str, Any] | None:
    return None if path is None else read_json(path)


def read_codec_weights(model: str | os.PathLike | None = None) -> tuple[CodecConfig, dict[str, torch.Tensor], str]:
    """Find and read EnCodec weights for a model reference; returns (config, state in transformers' layout, source).

    ``model`` is a local folder or file, a model name (``bark``, ``bark-small``: the codec inside that hub
    repository's BarkModel) or a hub id (a BarkModel or EncodecModel repository). In a folder the original
    ``encodec_24khz-d7cc33bc.th`` wins; else a transformers checkpoint (``model.safetensors``, ``pytorch_model.bin``,
    sharded or not) with its ``config.json``.
    """
    model = DEFAULT_MODEL if model is None else model
    path = Path(model)
    if path.is_file():  # a checkpoint file given directly
        if path.suffix == ".th":
            return CodecConfig(), convert_original_keys(load_state_dict(path)), str(path)
        config = _load_json(path.parent / "config.json" if (path.parent / "config.json").is_file() else None)
        state, codec_config = _read_transformers(path.parent, path, config)
        return config_from_dict(codec_config, source=str(path)), state, str(path)
    if path.is_dir():
        original = resolve_file(path, ORIGINAL_CHECKPOINT, required=False)
        if original is not None:
            return CodecConfig(), convert_original_keys(load_state_dict(original)), str(original)
        weights = resolve_file(path, TRANSFORMERS_WEIGHTS, required=False)
        if weights is None:
            raise WeightsError(
                f"{path}: no codec weights; the folder needs {ORIGINAL_CHECKPOINT} or a transformers BarkModel/"
                f"EncodecModel checkpoint ({', '.join(TRANSFORMERS_WEIGHTS[::2])} with config.json)"
            )
        config = _load_json(resolve_file(path, "config.json", required=False))
    else:
        config = _load_json(resolve_file(model, "config.json", required=False))
        weights = resolve_file(model, TRANSFORMERS_WEIGHTS)
    state, codec_config = _read_transformers(model, weights, config)
    return config_from_dict(codec_config, source=str(weights)), state, str(weights)


def load_codec(model: str | os.PathLike | None = None, *, device: str | torch.device = "cpu") -> Codec:
    """A ready ``Codec`` (eval mode, float32, on ``device``) with the weights ``model`` refers to."""
    config, state, source = read_codec_weights(model)
    if not any(key.startswith("decoder.") for key in state):
        raise WeightsError(f"{source}: holds no EnCodec weights (no decoder.* or codec_model.decoder.* tensors)")
    codec = Codec(config)
    try:
        missing, unexpected = codec.load_state_dict(codec_state_dict(state, config.num_quantizers), strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise WeightsError(f"{source}: codec weights do not fit the 24 kHz EnCodec model ({detail})") from None
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        what = "lacks" if missing else "has unexpected"
        raise WeightsError(f"{source}: codec checkpoint {what} tensors ({names}, ...); is it the 24 kHz EnCodec model?")
    return codec.eval().to(device)


# test helpers -------------------------------------------------------------------------------------------------
def random_original_state_dict(*, seed: int = 0, codebook_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A random-weight EnCodec 24 kHz state dict in the original ``encodec`` format (all 252 tensors, 32 codebooks).

    Torch only: the weights are drawn as the ``encodec`` package draws them for ``pretrained=False`` (PyTorch's
    default initialisation; weight norm starts at g = ||v||), except the codebooks, which EnCodec starts at zero
    (k-means fills them on the first training batch) and which would make every code decode alike: here they are
    N(0, ``codebook_scale``^2).
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        codec = Codec(CodecConfig(num_quantizers=32))
        codec.codebooks.normal_(0.0, codebook_scale)
    finally:
        torch.random.set_rng_state(generator_state)
    transposed = {name for name, module in codec.named_modules() if isinstance(module, torch.nn.ConvTranspose1d)}
    state: dict[str, torch.Tensor] = {}
    for name, module in codec.named_modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            part, layer, rest = name.split(".", 2)  # e.g. "decoder", "layers", "3.conv"
            wrapper = "convtr.convtr" if name in transposed else "conv.conv"
            prefix = f"{part}.model.{rest.removesuffix('.conv')}.{wrapper}"
            weight = module.weight.detach().clone()
            state[f"{prefix}.bias"] = module.bias.detach().clone()
            state[f"{prefix}.weight_g"] = weight.norm(2, dim=tuple(range(1, weight.dim())), keepdim=True)
            state[f"{prefix}.weight_v"] = weight
        elif isinstance(module, torch.nn.LSTM):
            part, layer, rest = name.split(".", 2)  # "encoder", "layers", "13.lstm"
            for key, value in module.state_dict().items():
                state[f"{part}.model.{rest}.{key}"] = value.detach().clone()
    for k, embed in enumerate(codec.codebooks):
        prefix = f"quantizer.vq.layers.{k}._codebook"
        state[f"{prefix}.inited"] = torch.ones(1)
        state[f"{prefix}.cluster_size"] = torch.zeros(embed.shape[0])
        state[f"{prefix}.embed"] = embed.clone()
        state[f"{prefix}.embed_avg"] = embed.clone()
    return state


def write_encodec_checkpoint(folder: str | os.PathLike, *, seed: int = 0, codebook_scale: float = 1.0) -> Path:
    """Write a random-weight EnCodec 24 kHz checkpoint in the original format, ``<folder>/encodec_24khz-d7cc33bc.th``.

    For tests anywhere; needs torch only (see ``random_original_state_dict``). Returns the file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ORIGINAL_CHECKPOINT
    torch.save(random_original_state_dict(seed=seed, codebook_scale=codebook_scale), path)
    return path


def save_encodec_checkpoint(folder: str | os.PathLike, *, seed: int = 0, codebook_scale: float = 1.0) -> tuple[Path, Any]:
    """``write_encodec_checkpoint``, plus the same weights as the ``encodec`` package's model (``reference_codec``),
    to inject as ``bark.generation.models["codec"]``. Needs the ``encodec`` package (and so torchaudio); use
    ``write_encodec_checkpoint`` where only the file is wanted. Returns (file, model)."""
    path = write_encodec_checkpoint(folder, seed=seed, codebook_scale=codebook_scale)
    return path, reference_codec(path.parent)


def reference_codec(folder: str | os.PathLike) -> Any:
    """The ``encodec`` package's ``EncodecModel`` (24 kHz, 6 kbps, eval) with the weights of ``folder``'s original
    checkpoint, built without its checksum check or download: what ``bark.generation.models["codec"]`` holds.
    Needs the ``encodec`` package (and so torchaudio)."""
    import warnings

    from encodec import EncodecModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # encodec uses the deprecated torch.nn.utils.weight_norm
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.load_state_dict(load_torch_file(Path(folder) / ORIGINAL_CHECKPOINT, mmap=False), strict=True)
    model.set_target_bandwidth(6.0)
    return model.eval()
