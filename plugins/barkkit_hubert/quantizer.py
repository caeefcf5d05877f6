"""The community quantizer: HuBERT features (T, 768) -> Bark semantic tokens (T,), and its files.

The model (gitmylo/bark-voice-cloning-HuBERT-quantizer, ``hubert/customtokenizer.py``): a two-layer
``nn.LSTM(input_size, hidden_size, batch_first=True)``, for version 1 an ``intermediate`` ``nn.Linear(hidden_size,
4096)``, then ``fc = nn.Linear(hidden_size or 4096, output_size)``, log-softmax and argmax per frame.

Two file layouts, both a zip written by ``torch.save(state_dict)``:

- old files (``quantifier_hubert_base_ls960.pth``, ``..._14.pth``): the state dict alone, version 0 with the default
  sizes (768 in, 1024 hidden, 10000 out);
- newer files add a JSON entry ``<file stem>/.info`` to the same zip: ``{"input_size", "hidden_size", "output_size",
  "version"}``. The reference reads any entry whose name ends in ``/.info`` (a renamed file keeps its old stem).

Reading never unpickles anything but tensors (``barkkit.weights.load_torch_file``). Sizes are read from the tensors
(the intermediate width too: 4096 in the published files); an ``.info`` entry must agree with them, and the output
must be Bark's 10,000 semantic tokens.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from barkkit.constants import SEMANTIC_VOCAB_SIZE
from barkkit.errors import WeightsError
from barkkit.weights import is_local, load_exactly, load_torch_file, resolve_file

__all__ = [
    "DEFAULT_QUANTIZER",
    "QuantizerInfo",
    "Quantizer",
    "resolve_quantizer",
    "read_info_entry",
    "load_quantizer",
    "write_quantizer",
]

DEFAULT_QUANTIZER = "GitMylo/bark-voice-cloning:quantifier_hubert_base_ls960_14.pth"
"""The hub file the recipe's own code downloads by default (version 0, trained 14 epochs on English Bark renders)."""

LSTM_LAYERS = 2


@dataclass(frozen=True)
class QuantizerInfo:
    """The sizes of a quantizer: the fields of the ``.info`` entry, plus the intermediate width (version 1)."""

    input_size: int = 768
    hidden_size: int = 1024
    output_size: int = SEMANTIC_VOCAB_SIZE
    version: int = 0
    intermediate_size: int = 4096  # version 1 only; not in the .info entry

    def info_json(self) -> str:
        """The ``.info`` entry the recipe writes (without the intermediate width, which it fixes at 4096)."""
        fields = asdict(self)
        del fields["intermediate_size"]
        return json.dumps(fields)


class Quantizer(nn.Module):
    """LSTM (2 layers) -> [intermediate Linear, version 1] -> Linear -> log-softmax -> argmax, per frame.

    ``tokens`` runs a window of frames and carries the LSTM state to the next window, so a long recording can be
    fed window by window with the same result as one pass over all its frames.
    """

    def __init__(self, info: QuantizerInfo = QuantizerInfo()) -> None:
        super().__init__()
        self.info = info
        self.lstm = nn.LSTM(info.input_size, info.hidden_size, LSTM_LAYERS, batch_first=True)
        self.intermediate = nn.Linear(info.hidden_size, info.intermediate_size) if info.version == 1 else None
        self.fc = nn.Linear(info.intermediate_size if info.version == 1 else info.hidden_size, info.output_size)

    def forward(self, features: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, Any]:
        """Features (1, T, input_size) -> (log-probabilities (1, T, output_size), the LSTM state after them)."""
        x, state = self.lstm(features, state)  # (1, T, hidden_size)
        if self.intermediate is not None:
            x = self.intermediate(x)  # (1, T, 4096)
        return torch.log_softmax(self.fc(x), dim=-1), state

    @torch.inference_mode()
    def tokens(self, features: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Features (1, T, input_size) -> (tokens (T,) int64, LSTM state to pass with the next window)."""
        log_probs, state = self(features, state)
        return log_probs[0].argmax(dim=-1), state


# files ------------------------------------------------------------------------------------------------------------
def resolve_quantizer(reference: str | os.PathLike) -> Path:
    """A local quantizer file for ``reference``: a local file, or ``hub-id:filename`` (fetched through the hub cache)."""
    text = str(reference)
    if is_local(text):
        path = Path(text)
        if path.is_dir():
            raise WeightsError(f"{path}: is a folder; --quantizer takes the quantizer file itself (a .pth), or hub-id:filename")
        return path
    repo, sep, filename = text.rpartition(":")
    if not sep or not repo or not filename or "/" not in repo:
        raise WeightsError(
            f"quantizer '{text}': no such file, and not hub-id:filename (e.g. {DEFAULT_QUANTIZER})"
        )
    return resolve_file(repo, filename)  # type: ignore[return-value]


def read_info_entry(path: Path) -> dict[str, Any] | None:
    """The ``*/.info`` JSON entry of a quantizer zip, or None when it has none (an old file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith("/.info")]
            if not names:
                return None
            raw = archive.read(names[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise WeightsError(f"{path}: not a readable quantizer file, truncated or corrupt ({exc})") from None
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"{path}: its {names[0]} entry is not JSON ({exc}); it should hold the quantizer's sizes") from None
    if not isinstance(info, dict):
        raise WeightsError(f"{path}: its {names[0]} entry is not a JSON object")
    return info


def _shape(state: Mapping[str, torch.Tensor], key: str, path: Path) -> tuple[int, ...]:
    if key not in state:
        held = ", ".join(sorted(state)[:4]) or "no tensors"
        raise WeightsError(f"{path}: not a HuBERT quantizer: no {key} tensor (it holds {held}, ...)")
    return tuple(state[key].shape)


def _info_from_tensors(state: Mapping[str, torch.Tensor], path: Path) -> QuantizerInfo:
    """The sizes the tensors imply (LSTM input and hidden sizes, version, intermediate width, output size)."""
    four_hidden, input_size = (_shape(state, "lstm.weight_ih_l0", path) + (0, 0))[:2]
    version = 1 if any(key.startswith("intermediate.") for key in state) else 0
    fc = _shape(state, "fc.weight", path)
    intermediate = _shape(state, "intermediate.weight", path)[0] if version == 1 else 4096
    if four_hidden % 4 or len(fc) != 2:
        raise WeightsError(f"{path}: lstm.weight_ih_l0 or fc.weight has the wrong shape for the HuBERT quantizer")
    return QuantizerInfo(input_size, four_hidden // 4, fc[0], version, intermediate)


def _check_info(declared: Mapping[str, Any], found: QuantizerInfo, path: Path) -> None:
    for field in ("input_size", "hidden_size", "output_size", "version"):
        if field not in declared:
            raise WeightsError(f"{path}: its .info entry lacks '{field}' (it needs input_size, hidden_size, output_size, version)")
        if declared[field] != getattr(found, field):
            raise WeightsError(
                f"{path}: its .info entry says {field}={declared[field]!r} but the tensors have {getattr(found, field)}; "
                "the file is inconsistent (re-save it, or drop the .info entry)"
            )


def load_quantizer(reference: str | os.PathLike = DEFAULT_QUANTIZER, *, device: str | torch.device = "cpu") -> Quantizer:
    """A ready ``Quantizer`` (eval, float32, on ``device``) from a file or ``hub-id:filename``.

    Raises ``WeightsError`` (one line) for a missing or truncated file, pickled code, tensors that do not make a
    quantizer (wrong shapes, missing or unexpected names), an ``.info`` entry that disagrees with the tensors, or an
    output that is not Bark's 10,000 semantic tokens.
    """
    path = resolve_quantizer(reference)
    state = load_torch_file(path)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"{path}: expected a quantizer state dict (names to tensors), got {type(state).__name__}")
    found = _info_from_tensors(state, path)
    declared = read_info_entry(path)
    if declared is not None:
        _check_info(declared, found, path)
    if found.version not in (0, 1):
        raise WeightsError(f"{path}: quantizer version {found.version} is unknown (0 or 1)")
    if found.output_size != SEMANTIC_VOCAB_SIZE:
        raise WeightsError(
            f"{path}: the quantizer outputs {found.output_size} tokens; Bark's semantic vocabulary has {SEMANTIC_VOCAB_SIZE}"
        )
    quantizer = Quantizer(found)
    load_exactly(quantizer, state, f"{path}: tensors do not fit a {LSTM_LAYERS}-layer LSTM quantizer")
    return quantizer.eval().to(device)


# test helpers -----------------------------------------------------------------------------------------------------
def write_quantizer(
    path: str | os.PathLike,
    info: QuantizerInfo = QuantizerInfo(),
    *,
    with_info: bool = True,
    seed: int = 0,
    state: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a random-weight quantizer in the recipe's format: ``torch.save(state_dict)``, and with ``with_info`` its
    ``<stem>/.info`` JSON entry appended to the zip, as the recipe's ``CustomTokenizer.save`` does. Returns the path.

    ``state`` replaces the random weights (to write a broken file). Needs torch only.
    """
    path = Path(path)
    if state is None:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            state = Quantizer(info).state_dict()
        finally:
            torch.random.set_rng_state(generator_state)
    torch.save(dict(state), path)
    if with_info:
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(f"{path.stem}/.info", info.info_json())
    return path
