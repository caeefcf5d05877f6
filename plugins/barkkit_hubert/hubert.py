"""HuBERT base as the recipe uses it: transformers' ``HubertModel``, the hidden state after transformer layer 9.

fairseq's ``output_layer=9`` (what the quantizer was trained on) is the output of the 9th transformer layer, which
is ``hidden_states[9]`` in transformers (``hidden_states[0]`` is the input to the first layer), not the last layer
(HuBERT base has 12). So the layers after the 9th are dropped when loading: the model's last hidden state is then
that very tensor, and 3 of 12 layers are not computed.

Weights come from a local transformers folder (``config.json`` with ``model.safetensors`` or ``pytorch_model.bin``)
or a hub id, through ``barkkit.weights`` (the hub cache, offline mode, one clear error for a missing file), and are
read with safetensors or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from barkkit.errors import WeightsError
from barkkit.weights import load_exactly, load_state_dict, read_json, resolve_file

__all__ = ["DEFAULT_HUBERT", "OUTPUT_LAYER", "SAMPLE_RATE", "WEIGHT_FILES", "load_hubert", "hubert_state_dict", "write_hubert"]

DEFAULT_HUBERT = "facebook/hubert-base-ls960"
OUTPUT_LAYER = 9  # fairseq's output_layer: the quantizer reads the 9th transformer layer's output
SAMPLE_RATE = 16_000
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_NORM = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}


def hubert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``HubertModel`` state dict from a checkpoint's: the ``hubert.`` prefix of task models (``HubertForCTC``)
    removed, and the positional convolution's weight norm named as today's parametrization (``weight_g``/``weight_v``
    in files saved before transformers 4.33, as ``facebook/hubert-base-ls960``'s)."""
    prefixed = any(key.startswith("hubert.") for key in state)
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if prefixed:
            if not key.startswith("hubert."):
                continue  # a task head (lm_head, projector...): not part of HubertModel
            key = key[len("hubert.") :]
        for old, new in _WEIGHT_NORM.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        converted[key] = value
    return converted


def _config(model: str | os.PathLike) -> "object":
    from transformers import HubertConfig

    config_path = resolve_file(model, "config.json")
    values = read_json(config_path)  # type: ignore[arg-type]
    if values.get("model_type") not in (None, "hubert"):
        raise WeightsError(f"{config_path}: model_type is '{values['model_type']}', not 'hubert'; --hubert needs a HuBERT model")
    try:
        config = HubertConfig.from_dict(values)
    except Exception as exc:  # a config transformers cannot build a model from
        raise WeightsError(f"{config_path}: not a usable HuBERT config ({type(exc).__name__}: {exc})") from None
    if config.num_hidden_layers < OUTPUT_LAYER:
        raise WeightsError(
            f"{config_path}: the model has {config.num_hidden_layers} transformer layers; the quantizer reads layer "
            f"{OUTPUT_LAYER}, so HuBERT needs at least {OUTPUT_LAYER}"
        )
    return config


def load_hubert(model: str | os.PathLike = DEFAULT_HUBERT, *, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A ``HubertModel`` (eval, float32, on ``device``) with the weights ``model`` refers to, cut after layer 9.

    ``model`` is a hub id or a local folder saved by ``save_pretrained`` (a ``HubertForCTC`` checkpoint works too:
    its ``hubert.*`` tensors are used). Its ``last_hidden_state`` for a raw 16 kHz waveform (1, n) is the recipe's
    features (1, T, hidden_size), T = 1 + (n - 400) // 320.
    """
    from transformers import HubertModel

    config = _config(model)
    weights = resolve_file(model, WEIGHT_FILES)
    state = hubert_state_dict(load_state_dict(weights))  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weight_norm's deprecation notes
        hubert = HubertModel(config)
    load_exactly(hubert, state, f"{weights}: the weights do not fit the HuBERT model of its config.json")
    hubert.encoder.layers = hubert.encoder.layers[:OUTPUT_LAYER]
    return hubert.eval().to(device)


# test helpers -----------------------------------------------------------------------------------------------------
def write_hubert(folder: str | os.PathLike, *, hidden_size: int = 32, num_hidden_layers: int = 10, seed: int = 0) -> Path:
    """Save a tiny random-weight ``HubertModel`` (HuBERT base's layout, small widths) with ``save_pretrained``.

    Ten layers by default, so that layer 9 is not the last. Returns the folder.
    """
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = HubertModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    folder = Path(folder)
    model.save_pretrained(folder)
    return folder
