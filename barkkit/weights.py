"""Where weights come from, and loading them without unpickling arbitrary objects.

A model reference is a local folder, a model name (``bark``, ``bark-small``) or a Hugging Face hub id
(``owner/name``). Hub files go through ``huggingface_hub``: its cache, its progress bars, and its offline mode
(``HF_HUB_OFFLINE=1``); when the hub's host refuses or cannot be resolved, files come from the cache at once
instead of after huggingface_hub's retries. A file that is neither cached nor reachable is one clear error that
names the files and how to get them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from barkkit.errors import WeightsError
from barkkit.files import check_input_file

__all__ = [
    "MODEL_ALIASES",
    "load_exactly",
    "DEFAULT_MODEL",
    "hub_id",
    "hub_download",
    "is_local",
    "resolve_file",
    "load_torch_file",
    "load_state_dict",
    "read_json",
    "numpy_scalar_globals",
]

MODEL_ALIASES = {"bark": "suno/bark", "bark-small": "suno/bark-small"}
DEFAULT_MODEL = "bark-small"


def is_local(model: str | os.PathLike) -> bool:
    """True when ``model`` names an existing local folder (or file)."""
    return Path(model).exists()


def hub_id(model: str | os.PathLike) -> str:
    """The hub repository id for a model name or hub id; a clear error for anything else."""
    name = str(model)
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")):
        return name
    raise WeightsError(
        f"model '{name}' is not a local folder, a model name ({', '.join(MODEL_ALIASES)}) or a hub id (owner/name)"
    )


def hub_download(repo_id: str, filename: str, *, revision: str | None = None) -> str:
    """``huggingface_hub.hf_hub_download``, from the cache alone when the hub's host cannot be reached.

    Offline without ``HF_HUB_OFFLINE=1``, huggingface_hub retries each file for ~23 s (logging every try) before it
    falls back to its cache or fails; a connection refused or unresolvable at once tells the same thing.
    """
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, revision=revision, local_files_only=not _hub_reachable())


_REACHABLE: dict[str, tuple[float, bool]] = {}  # hub endpoint -> (when probed, reachable)


def _hub_reachable(ttl_s: float = 60.0) -> bool:
    """Whether the hub endpoint's host accepts a TCP connection within 3 s (probed at most once a minute).

    Behind a proxy (``HTTPS_PROXY``, ``ALL_PROXY``) the host may be unreachable directly but reachable through it:
    then huggingface_hub decides, as always."""
    import socket
    import time
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # huggingface_hub's own offline mode, or a proxy: leave it to huggingface_hub
    endpoint = urlparse(constants.ENDPOINT)
    seen = _REACHABLE.get(constants.ENDPOINT)
    if seen is None or time.monotonic() - seen[0] > ttl_s:
        port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
        try:
            socket.create_connection((endpoint.hostname, port), timeout=3).close()
            reachable = True
        except OSError:
            reachable = False
        seen = _REACHABLE[constants.ENDPOINT] = (time.monotonic(), reachable)
    return seen[1]


def _describe(model: str | os.PathLike) -> str:
    name = str(model)
    return f"'{name}' (hub {MODEL_ALIASES[name]})" if name in MODEL_ALIASES else f"'{name}'"


def resolve_file(
    model: str | os.PathLike,
    candidates: str | Sequence[str],
    *,
    revision: str | None = None,
    required: bool = True,
) -> Path | None:
    """Find the first of ``candidates`` (file names relative to the model root) and return its local path.

    A local folder is searched as it is; a model name or hub id is looked up in the huggingface_hub cache and
    downloaded when missing (unless offline). With ``required=False`` a file that does not exist returns None;
    a file that exists on the hub but cannot be fetched is an error either way.
    """
    names = [candidates] if isinstance(candidates, str) else list(candidates)
    if is_local(model):
        folder = Path(model)
        if folder.is_file():
            folder = folder.parent
        for name in names:
            if (folder / name).is_file():
                return folder / name
        if not required:
            return None
        raise WeightsError(f"{folder}: none of {', '.join(names)} found; the folder must hold one of them")

    repo_id = hub_id(model)
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    unreachable: list[str] = []
    for name in names:
        try:
            return Path(hub_download(repo_id, name, revision=revision))
        except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError in recent huggingface_hub)
            unreachable.append(name)
        except EntryNotFoundError:
            continue  # the repository has no such file: try the next candidate
        except RepositoryNotFoundError:
            raise WeightsError(f"model {_describe(model)}: no such repository on the hub (or it is private)") from None
        except (OSError, ValueError) as exc:
            if "offline" in str(exc).lower() or "connect" in str(exc).lower():
                unreachable.append(name)
            else:
                raise WeightsError(f"model {_describe(model)}: cannot fetch {name}: {exc}") from None
    if unreachable:
        raise WeightsError(
            f"model {_describe(model)}: {' or '.join(unreachable)} is not in the local cache and the hub cannot be "
            f"reached (offline or HF_HUB_OFFLINE=1); fetch the model once online with `hf download {repo_id}` "
            f"(or only this file: `hf download {repo_id} {unreachable[0]}`), or pass a local folder that holds it"
        )
    if not required:
        return None
    raise WeightsError(f"model {_describe(model)}: the hub repository {repo_id} holds none of {', '.join(names)}")


def numpy_scalar_globals() -> list[Any]:
    """The numpy globals a checkpoint may name to store a numpy scalar (Suno's ``best_val_loss``), nothing more.

    numpy 1 pickles scalars as ``numpy.core.multiarray.scalar``, numpy 2 as ``numpy._core.multiarray.scalar``;
    both name ``numpy.dtype`` and the concrete dtype class.
    """
    scalar = np.array(0.0)[()].__reduce__()[0]  # numpy's scalar reconstructor, whatever its module is called
    allowed: list[Any] = [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
    ]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType"):
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


@contextlib.contextmanager
def _numpy_scalars_allowed() -> Iterator[None]:
    with torch.serialization.safe_globals(numpy_scalar_globals()):
        yield


def load_torch_file(path: str | os.PathLike, *, allow_numpy_scalars: bool = False, mmap: bool = True) -> Any:
    """``torch.load`` with ``weights_only=True`` (and ``mmap`` where the file allows), errors made clear.

    Tensors, containers and plain values load; any other pickled object (a class, a function) is refused without
    being run. ``allow_numpy_scalars`` also admits numpy scalars, which Suno's checkpoints hold.
    """
    path = check_input_file(path, "checkpoint file", WeightsError)
    context = _numpy_scalars_allowed() if allow_numpy_scalars else contextlib.nullcontext()
    with context:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            if found:
                raise WeightsError(
                    f"{path}: refused to load: it holds a pickled object ({found.group(1)}) that is not plain weights"
                ) from None
            raise WeightsError(f"{path}: not a readable checkpoint, truncated or corrupt") from None
        except RuntimeError as exc:
            if mmap and "mmap" in str(exc).lower():
                return load_torch_file(path, allow_numpy_scalars=allow_numpy_scalars, mmap=False)
            raise WeightsError(f"{path}: not a readable checkpoint, truncated or corrupt ({str(exc).split('. ')[0]})") from None
        except Exception as exc:  # EOFError, struct.error, BadZipFile...: whatever a damaged file raises
            raise WeightsError(f"{path}: not a readable checkpoint, truncated or corrupt ({type(exc).__name__}: {exc})") from None


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object (a config, a checkpoint index); a clear error naming the file otherwise."""
    path = check_input_file(path, "JSON file", WeightsError)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_safetensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {key[len(prefix) :]: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}  # noqa: SIM118 (a safetensors handle, not a dict)
    except Exception as exc:  # safetensors raises its own error types for truncated or corrupt files
        raise WeightsError(f"{path}: not a readable safetensors file, truncated or corrupt ({exc})") from None


def load_state_dict(
    path: str | os.PathLike, prefix: str = "", *, model: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint whose names start with ``prefix``, with the prefix removed.

    ``path`` is a ``.safetensors`` file (only those tensors are read), a sharded checkpoint's ``*.index.json``
    (only the shards that hold them are read: beside the index, or fetched through ``model`` when it is a hub
    reference), or a torch file, loaded with ``weights_only`` (a top-level ``state_dict`` entry is unwrapped).
    """
    path = Path(path)
    if path.name.endswith(".index.json"):
        weight_map = read_json(path).get("weight_map")
        if not isinstance(weight_map, Mapping):
            raise WeightsError(f"{path}: not a checkpoint index (no weight_map)")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted({file for key, file in weight_map.items() if key.startswith(prefix)}):
            shard_path = path.parent / shard
            if not shard_path.is_file():
                if model is None or is_local(model):
                    raise WeightsError(f"{path}: shard {shard} is missing; it must lie beside the index")
                shard_path = resolve_file(model, shard)
            state.update(load_state_dict(shard_path, prefix))
        return state
    if path.suffix == ".safetensors":
        return _read_safetensors(path, prefix)
    loaded = load_torch_file(path)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(loaded).__name__}")
    return {key[len(prefix) :]: value for key, value in loaded.items() if key.startswith(prefix) and torch.is_tensor(value)}


def load_exactly(module: torch.nn.Module, state: Mapping[str, torch.Tensor], fault: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with the tensors as float32; a size mismatch, or a missing or
    unexpected tensor, is a WeightsError: ``fault`` (which file, what it should fit) and torch's first reason."""
    try:
        module.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        detail = lines[0] if lines else str(exc).splitlines()[0]
        raise WeightsError(f"{fault} ({detail})") from None
