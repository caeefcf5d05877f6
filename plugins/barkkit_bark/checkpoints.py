"""Bark's weight files: reading and writing Suno's checkpoints and transformers' BarkModel folders.

Two formats hold the same three transformers ("text" = semantic, "coarse", "fine"):

- Suno's checkpoints (``text.pt``, ``coarse.pt``, ``fine.pt`` small; ``text_2.pt``, ``coarse_2.pt``, ``fine_2.pt``
  large): a dict with ``model_args``, ``model`` (a state dict whose keys start with ``_orig_mod.``) and a numpy
  ``best_val_loss``. Read with ``weights_only=True`` plus the numpy scalar globals, nothing else.
- transformers' ``BarkModel``: ``config.json`` (``semantic_config``, ``coarse_acoustics_config``,
  ``fine_acoustics_config``) and ``model.safetensors`` (read selectively: only the sub-model's tensors),
  a sharded ``model.safetensors.index.json``, or ``pytorch_model.bin``; parameter names are mapped to Suno's.

Every problem (missing file or key, wrong shape, truncated file, a pickled object) is one-line ``WeightsError``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from barkkit.constants import (
    COARSE_INFER_TOKEN,
    CODEBOOK_SIZE,
    CONTEXT_WINDOW_SIZE,
    N_COARSE_CODEBOOKS,
    N_FINE_CODEBOOKS,
    SEMANTIC_INFER_TOKEN,
    SEMANTIC_PAD_TOKEN,
    SEMANTIC_VOCAB_SIZE,
)
from barkkit.errors import WeightsError
from barkkit.weights import (
    DEFAULT_MODEL,
    is_local,
    load_state_dict,
    load_torch_file,
    read_json,
    resolve_file,
)
from barkkit_bark.model import GPT, FineGPT, GPTConfig

__all__ = [
    "Kind",
    "SUNO_FILES",
    "TRANSFORMERS_PREFIX",
    "save_suno_checkpoint",
    "save_transformers_checkpoint",
    "to_transformers_state_dict",
    "from_transformers_state_dict",
    "read_suno_checkpoint",
    "read_transformers_checkpoint",
    "load_model",
    "build_model",
    "WeightFiles",
    "find_weights",
]

Kind = Literal["text", "coarse", "fine"]
KINDS: tuple[Kind, ...] = ("text", "coarse", "fine")

SUNO_FILES: dict[str, tuple[str, str]] = {
    "text": ("text_2.pt", "text.pt"),
    "coarse": ("coarse_2.pt", "coarse.pt"),
    "fine": ("fine_2.pt", "fine.pt"),
}
"""Suno's file names per model, large first: a folder that holds both sizes gives the large models."""

TRANSFORMERS_PREFIX = {"text": "semantic", "coarse": "coarse_acoustics", "fine": "fine_acoustics"}
TRANSFORMERS_CONFIG_KEY = {"text": "semantic_config", "coarse": "coarse_acoustics_config", "fine": "fine_acoustics_config"}
_SUNO_PREFIX = "_orig_mod."
_CONFIG_FIELDS = ("block_size", "input_vocab_size", "output_vocab_size", "n_layer", "n_head", "n_embd", "bias")

# Suno's parameter names <-> transformers' (after the sub-model prefix), the mapping of transformers'
# convert_suno_to_hf.py written as whole names: {i} is a layer or codebook index, {p} "weight" or "bias".
_NAME_PAIRS: list[tuple[str, str]] = [
    ("transformer.wte.weight", "input_embeds_layer.weight"),
    ("transformer.wtes.{i}.weight", "input_embeds_layers.{i}.weight"),
    ("transformer.wpe.weight", "position_embeds_layer.weight"),
    ("transformer.ln_f.{p}", "layernorm_final.{p}"),
    ("transformer.h.{i}.ln_1.{p}", "layers.{i}.layernorm_1.{p}"),
    ("transformer.h.{i}.ln_2.{p}", "layers.{i}.layernorm_2.{p}"),
    ("transformer.h.{i}.attn.c_attn.{p}", "layers.{i}.attn.att_proj.{p}"),
    ("transformer.h.{i}.attn.c_proj.{p}", "layers.{i}.attn.out_proj.{p}"),
    ("transformer.h.{i}.mlp.c_fc.{p}", "layers.{i}.mlp.in_proj.{p}"),
    ("transformer.h.{i}.mlp.c_proj.{p}", "layers.{i}.mlp.out_proj.{p}"),
    ("lm_head.weight", "lm_head.weight"),
    ("lm_heads.{i}.weight", "lm_heads.{i}.weight"),
]


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(pattern)


_TO_TRANSFORMERS = [(_compile(suno), hf) for suno, hf in _NAME_PAIRS]
_FROM_TRANSFORMERS = [(_compile(hf), suno) for suno, hf in _NAME_PAIRS]


def _rename(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.fullmatch(name)
        if match:
            return template.format(**match.groupdict())
    return None


def to_transformers_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Suno parameter names -> transformers' (without the sub-model prefix); causal-mask buffers dropped."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if re.fullmatch(r"transformer\.h\.\d+\.attn\.bias", name):  # a causal-mask buffer, not a weight
            continue
        new = _rename(name, _TO_TRANSFORMERS)
        if new is None:
            raise WeightsError(f"parameter '{name}' is not part of a Bark model")
        out[new] = tensor
    return out


def from_transformers_state_dict(state: Mapping[str, torch.Tensor], *, source: str = "weights") -> dict[str, torch.Tensor]:
    """transformers' parameter names (without the sub-model prefix) -> Suno's; causal-mask buffers dropped."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if re.fullmatch(r"layers\.\d+\.attn\.bias", name):  # the causal mask, a buffer, not a weight
            continue
        new = _rename(name, _FROM_TRANSFORMERS)
        if new is None:
            raise WeightsError(f"{source}: unexpected weight '{name}' for a Bark model")
        out[new] = tensor
    return out


# --- configs --------------------------------------------------------------------------------------------------
def _config_from_suno_args(model_args: Any, kind: Kind, source: str) -> GPTConfig:
    if not isinstance(model_args, Mapping):
        raise WeightsError(f"{source}: 'model_args' is not a mapping; not a Suno Bark checkpoint")
    args = dict(model_args)
    if "input_vocab_size" not in args and "vocab_size" in args:  # older checkpoints name one vocabulary
        args["input_vocab_size"] = args["output_vocab_size"] = args.pop("vocab_size")
    fields = list(_CONFIG_FIELDS) + (["n_codes_total", "n_codes_given"] if kind == "fine" else [])
    missing = [name for name in fields if name not in args and name != "bias"]
    if missing:
        raise WeightsError(f"{source}: model_args lacks {', '.join(missing)}; not a complete Bark {kind} checkpoint")
    try:
        values = {name: (bool(args[name]) if name == "bias" else _whole(args[name])) for name in fields if name in args}
    except (TypeError, ValueError, OverflowError):
        raise WeightsError(f"{source}: model_args holds a size that is not a whole number; not a valid Bark checkpoint") from None
    config = GPTConfig(**values)
    _check_config(config, kind, source)
    return config


def _whole(value: Any) -> int:
    if isinstance(value, bool) or float(value) != int(value):
        raise ValueError(value)
    return int(value)


# What the engine indexes in each model: ids it feeds in (input) and logits it reads (output), at least.
_MIN_VOCAB = {"text": (SEMANTIC_INFER_TOKEN + 1, SEMANTIC_PAD_TOKEN + 1),
              "coarse": (COARSE_INFER_TOKEN + 1, SEMANTIC_VOCAB_SIZE + N_COARSE_CODEBOOKS * CODEBOOK_SIZE),
              "fine": (CODEBOOK_SIZE + 1, CODEBOOK_SIZE)}
_BARK_VOCAB = {(129_600, 10_048): "text (semantic)", (12_096, 12_096): "coarse", (1_056, 1_056): "fine"}


def _check_config(config: GPTConfig, kind: Kind, source: str) -> None:
    """One-line errors for a config Bark's engine cannot run: sizes that do not fit together, vocabularies too
    small for the ids the ``kind`` model is given (another model's file, such as text.pt and coarse.pt swapped)."""
    for name in ("n_layer", "n_head", "n_embd", "block_size", "input_vocab_size", "output_vocab_size"):
        if getattr(config, name) < 1:
            raise WeightsError(f"{source}: {name} is {getattr(config, name)}; it must be at least 1")
    if config.n_embd % config.n_head:
        raise WeightsError(f"{source}: n_embd {config.n_embd} is not a multiple of n_head {config.n_head}; the "
                           "attention heads must split the width evenly")
    if config.block_size < CONTEXT_WINDOW_SIZE:
        raise WeightsError(f"{source}: block_size {config.block_size} is less than the {CONTEXT_WINDOW_SIZE} positions "
                           "Bark's windows use")
    vocab = (config.input_vocab_size, config.output_vocab_size)
    needed = _MIN_VOCAB[kind]
    if vocab[0] < needed[0] or vocab[1] < needed[1]:
        other = _BARK_VOCAB.get(vocab)
        hint = f"; these are the sizes of Bark's {other} model: is the file in the wrong place?" if other else ""
        raise WeightsError(f"{source}: vocabularies of {vocab[0]:,} in and {vocab[1]:,} out, but Bark's {kind} model "
                           f"needs at least {needed[0]:,} and {needed[1]:,}{hint}")
    if kind == "fine" and not (config.n_codes_total == N_FINE_CODEBOOKS and 1 <= config.n_codes_given < N_FINE_CODEBOOKS):
        raise WeightsError(f"{source}: n_codes_total {config.n_codes_total} and n_codes_given {config.n_codes_given}; "
                           f"Bark's fine model has {N_FINE_CODEBOOKS} codebooks, of which 1 to 7 are given")


def _config_from_transformers(sub: Any, kind: Kind, source: str) -> GPTConfig:
    if not isinstance(sub, Mapping):
        raise WeightsError(f"{source}: no {TRANSFORMERS_CONFIG_KEY[kind]} in config.json; not a transformers BarkModel folder")
    names = {"num_layers": "n_layer", "num_heads": "n_head", "hidden_size": "n_embd"}
    args = {names.get(key, key): value for key, value in sub.items()}
    args.setdefault("bias", True)  # transformers' default
    args.setdefault("block_size", 1024)
    return _config_from_suno_args(args, kind, source)


def build_model(config: GPTConfig, kind: Kind, device: str | torch.device = "cpu") -> GPT | FineGPT:
    """A model of ``kind`` on ``device``: randomly initialised, or on ``meta`` without storage and without init."""
    with torch.device(device), _SkipInit() if torch.device(device).type == "meta" else contextlib.nullcontext():
        return FineGPT(config) if kind == "fine" else GPT(config)


class _SkipInit(TorchFunctionMode):
    """``torch.nn.init`` calls return their tensor untouched: a meta tensor has no values to fill, and
    ``nn.init.normal_`` on one goes through PyTorch's Python decompositions, whose first use imports
    ``torch._dynamo`` (0.8 s of every command's start)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]  # (they take the tensor first, by keyword when dispatched)
        return func(*args, **(kwargs or {}))


# --- reading ----------------------------------------------------------------------------------------------------
def _check_and_fill(
    state: dict[str, torch.Tensor], config: GPTConfig, kind: Kind, source: str
) -> dict[str, torch.Tensor]:
    """Check names and shapes against the model ``config`` describes; fill tied fine weights. One-line errors."""
    layers = {int(found.group(1)) for name in state if (found := re.match(r"transformer\.h\.(\d+)\.", name))}
    if len(layers) != config.n_layer:  # before building the model: a config may claim a million layers
        raise WeightsError(f"{source}: the config says {config.n_layer} layers but the file holds weights of "
                           f"{len(layers)}; the file does not match its own model_args/config")
    expected = build_model(config, kind, "meta").state_dict()
    if kind == "fine":
        # Suno's FineGPT ties head i to embedding i + 1; a file may hold either name (transformers keeps one).
        for i in range(config.n_codes_total - config.n_codes_given):
            head, embedding = f"lm_heads.{i}.weight", f"transformer.wtes.{i + 1}.weight"
            if head in state:  # loading in order, Suno's model ends with the head's values in the shared tensor
                state[embedding] = state[head]
            elif embedding in state:
                state[head] = state[embedding]
    state = {name: tensor for name, tensor in state.items() if not name.endswith(".attn.bias")}
    missing = [name for name in expected if name not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"{source}: missing weight '{missing[0]}'{more}; not a complete Bark {kind} checkpoint")
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise WeightsError(f"{source}: unexpected weight '{unexpected[0]}'{more} for a Bark {kind} model")
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise WeightsError(f"{source}: '{name}' is a {type(tensor).__name__}, not a tensor")
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise WeightsError(
                f"{source}: weight '{name}' has shape {tuple(tensor.shape)} but the model's config needs "
                f"{tuple(expected[name].shape)}; the file does not match its own model_args/config"
            )
        if not tensor.is_floating_point():
            raise WeightsError(f"{source}: weight '{name}' has dtype {tensor.dtype}, not floating point")
    return state


def read_suno_checkpoint(path: str | os.PathLike, kind: Kind) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """Config and (checked, Suno-named) state dict of one Suno checkpoint file."""
    path = Path(path)
    checkpoint = load_torch_file(path, allow_numpy_scalars=True)
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint or "model_args" not in checkpoint:
        raise WeightsError(f"{path}: not a Suno Bark checkpoint (a dict with 'model_args' and 'model')")
    config = _config_from_suno_args(checkpoint["model_args"], kind, str(path))
    model_state = checkpoint["model"]
    if not isinstance(model_state, Mapping):
        raise WeightsError(f"{path}: 'model' is not a state dict")
    state = {(k[len(_SUNO_PREFIX) :] if k.startswith(_SUNO_PREFIX) else k): v for k, v in model_state.items()}
    return config, _check_and_fill(state, config, kind, str(path))


def read_transformers_checkpoint(
    config_path: Path, weights_path: Path, kind: Kind, *, model: str | os.PathLike | None = None
) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """Config and (checked, Suno-named) state dict of one sub-model of a transformers BarkModel checkpoint.

    ``weights_path`` is ``model.safetensors``, ``model.safetensors.index.json`` (its shards are resolved next to
    it, or through ``model`` for hub files) or ``pytorch_model.bin``. Only the sub-model's tensors are read.
    """
    data = read_json(config_path)
    sub, prefix = data.get(TRANSFORMERS_CONFIG_KEY[kind]), TRANSFORMERS_PREFIX[kind] + "."
    if sub is None and data.get("model_type") == TRANSFORMERS_PREFIX[kind]:
        sub, prefix = data, ""  # a folder of this sub-model alone (BarkSemanticModel.save_pretrained)
    config = _config_from_transformers(sub, kind, str(config_path))
    raw = load_state_dict(weights_path, prefix, model=model)
    if not raw:
        raise WeightsError(f"{weights_path}: holds no '{prefix}*' weights; not a transformers BarkModel checkpoint")
    state = from_transformers_state_dict(raw, source=str(weights_path))
    return config, _check_and_fill(state, config, kind, str(weights_path))


# --- finding and loading ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightFiles:
    """Where one sub-model's weights are: Suno's ``checkpoint``, or transformers' ``config`` + ``weights``."""

    kind: Kind
    checkpoint: Path | None = None
    config: Path | None = None
    weights: Path | None = None


def find_weights(model: str | os.PathLike | None, kind: Kind) -> WeightFiles:
    """Resolve ``model`` (a local folder, ``bark``/``bark-small`` or a hub id) to the files of sub-model ``kind``.

    A folder with ``config.json`` is read as transformers' BarkModel, otherwise as Suno's checkpoints (large ones
    first). Hub models go through ``barkkit.weights.resolve_file`` (huggingface_hub's cache, its offline mode).
    """
    model = DEFAULT_MODEL if model is None else model
    weights_names = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
    if is_local(model):
        folder = Path(model)
        if folder.is_file():
            raise WeightsError(f"{folder}: give the folder that holds the weights, not a file")
        if (folder / "config.json").is_file():
            return WeightFiles(kind, config=folder / "config.json", weights=resolve_file(folder, weights_names))
        checkpoint = resolve_file(folder, SUNO_FILES[kind], required=False)
        if checkpoint is None:
            raise WeightsError(
                f"{folder}: no Bark {kind} weights: expected {' or '.join(SUNO_FILES[kind])} (Suno's checkpoints) "
                "or config.json + model.safetensors (transformers' BarkModel)"
            )
        return WeightFiles(kind, checkpoint=checkpoint)
    try:
        config = resolve_file(model, "config.json", required=False)
    except WeightsError as exc:  # offline and not cached: the repository may still be in Suno's format
        config, unreachable = None, exc
    else:
        unreachable = None
    if config is not None:
        return WeightFiles(kind, config=config, weights=resolve_file(model, weights_names))
    try:
        return WeightFiles(kind, checkpoint=resolve_file(model, SUNO_FILES[kind]))
    except WeightsError:
        if unreachable is not None:
            raise unreachable from None  # neither format is cached: say how to fetch transformers' files
        raise


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in memory aligned like torch's own allocations (64 bytes), copied only where it is not.

    MKL's matrix products round differently depending on the alignment of their operands; safetensors hands out
    tensors at arbitrary file offsets. Aligned weights make the logits bit-identical to a model whose weights
    torch allocated itself (Suno's reference), which exact mode needs.
    """
    return tensor if tensor.data_ptr() % 64 == 0 else tensor.clone(memory_format=torch.contiguous_format)


def load_model(
    model: str | os.PathLike | None, kind: Kind, *, device: str | torch.device = "cpu"
) -> GPT | FineGPT:
    """Load sub-model ``kind`` ("text", "coarse" or "fine") of ``model`` in float32, in eval mode, on ``device``."""
    files = find_weights(model, kind)
    if files.checkpoint is not None:
        config, state = read_suno_checkpoint(files.checkpoint, kind)
    else:
        config, state = read_transformers_checkpoint(files.config, files.weights, kind, model=model)
    # Built on the meta device and given the loaded tensors (gpt-fast's way): no random init, no second copy.
    module = build_model(config, kind, "meta")
    state = {name: _aligned(tensor.to(torch.float32)) for name, tensor in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    if isinstance(module, FineGPT):
        module.tie_weights()
    return module.to(device).eval().requires_grad_(False)


# --- writing ------------------------------------------------------------------------------------------------------
def save_suno_checkpoint(
    path: str | os.PathLike, model: GPT | FineGPT, *, best_val_loss: float = 1.0
) -> Path:
    """Write ``model`` the way Suno's training did: ``model_args``, ``_orig_mod.``-prefixed ``model``, numpy loss.

    Used by the tests to make real-format checkpoints of tiny random models; the file loads with Suno's
    ``bark.generation._load_model`` as well as with ``load_model``.
    """
    from barkkit.files import atomic_output

    config = model.config
    model_args: dict[str, Any] = {name: getattr(config, name) for name in _CONFIG_FIELDS}
    model_args["dropout"] = 0.0
    if isinstance(model, FineGPT):
        model_args.update(n_codes_total=config.n_codes_total, n_codes_given=config.n_codes_given)
    checkpoint = {
        "model_args": model_args,
        "model": {_SUNO_PREFIX + name: tensor for name, tensor in model.state_dict().items()},
        "iter_num": 0,
        "best_val_loss": np.float64(best_val_loss),  # a numpy scalar, as in Suno's files
    }
    with atomic_output(path, suffix=".pt") as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def _transformers_sub_config(config: GPTConfig, kind: Kind) -> dict[str, Any]:
    sub = {
        "block_size": config.block_size,
        "input_vocab_size": config.input_vocab_size,
        "output_vocab_size": config.output_vocab_size,
        "num_layers": config.n_layer,
        "num_heads": config.n_head,
        "hidden_size": config.n_embd,
        "bias": config.bias,
        "dropout": 0.0,
    }
    if kind == "fine":
        sub.update(n_codes_total=config.n_codes_total, n_codes_given=config.n_codes_given)
    return sub


def save_transformers_checkpoint(
    folder: str | os.PathLike,
    text: GPT,
    coarse: GPT,
    fine: FineGPT,
    *,
    codec_config: Any = None,
    vocab_file: str | os.PathLike | None = None,
) -> Path:
    """Write the three models as a transformers ``BarkModel`` folder, with transformers' own ``save_pretrained``.

    The weights are mapped to transformers' names and loaded into ``BarkModel``'s sub-models, so the folder is
    exactly what transformers writes (``config.json`` + ``model.safetensors``). ``codec_config`` (an
    ``EncodecConfig``; default: transformers' 24 kHz EnCodec) sets the codec sub-model, which is left randomly
    initialised: the codec's weights belong to the decoder plugin. ``vocab_file`` is copied in as ``vocab.txt``.
    """
    import shutil

    from transformers import BarkConfig, BarkModel, EncodecConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bark_config = BarkConfig(
        semantic_config=_transformers_sub_config(text.config, "text"),
        coarse_acoustics_config=_transformers_sub_config(coarse.config, "coarse"),
        fine_acoustics_config=_transformers_sub_config(fine.config, "fine"),
        codec_config=(codec_config or EncodecConfig()).to_dict(),
    )
    bark = BarkModel(bark_config)
    for kind, module, target in (("text", text, bark.semantic), ("coarse", coarse, bark.coarse_acoustics), ("fine", fine, bark.fine_acoustics)):
        state = to_transformers_state_dict(module.state_dict())
        missing, unexpected = target.load_state_dict(state, strict=False)
        missing = [name for name in missing if not name.endswith("attn.bias")]
        if missing or unexpected:
            raise WeightsError(f"cannot map the {kind} model to transformers: missing {missing}, unexpected {unexpected}")
    bark.save_pretrained(folder)
    if vocab_file is not None:
        shutil.copyfile(vocab_file, folder / "vocab.txt")
    return folder

