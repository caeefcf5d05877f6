"""Weights: Suno's checkpoints and transformers' BarkModel folders, model names through the hub cache, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from barkkit.errors import WeightsError
from barkkit.pipeline import load_pipeline
from barkkit.weights import load_torch_file
from barkkit_bark.checkpoints import load_model, save_suno_checkpoint
from tests.hub_cache import add_to_hub_cache

from .conftest import tiny_models


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_suno_checkpoint_is_written_the_real_way(suno_folder: Path, models) -> None:
    checkpoint = load_torch_file(suno_folder / "fine.pt", allow_numpy_scalars=True)
    assert set(checkpoint) >= {"model_args", "model", "best_val_loss"}
    assert isinstance(checkpoint["best_val_loss"], np.floating)
    assert all(key.startswith("_orig_mod.") for key in checkpoint["model"])
    assert checkpoint["model_args"]["n_codes_total"] == 8 and checkpoint["model_args"]["bias"] is False
    for kind, model in zip(("text", "coarse", "fine"), models):
        assert _same_weights(load_model(suno_folder, kind), model)


def test_transformers_folder_loads_the_same_weights(transformers_folder: Path, models) -> None:
    assert (transformers_folder / "config.json").is_file() and (transformers_folder / "model.safetensors").is_file()
    for kind, model in zip(("text", "coarse", "fine"), models):
        assert _same_weights(load_model(transformers_folder, kind), model)


def test_pytorch_model_bin_and_sharded_safetensors(tmp_path: Path, transformers_folder: Path, models) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(transformers_folder / "model.safetensors")
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    shutil.copy(transformers_folder / "config.json", bin_folder)
    torch.save(state, bin_folder / "pytorch_model.bin")
    assert _same_weights(load_model(bin_folder, "coarse"), models[1])

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(transformers_folder / "config.json", sharded)
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in halves.items():
        save_file({key: state[key].contiguous() for key in keys}, sharded / file)
    index = {"metadata": {}, "weight_map": {key: file for file, keys in halves.items() for key in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert _same_weights(load_model(sharded, "fine"), models[2])


def test_folder_with_both_sizes_uses_the_large_models(tmp_path: Path, models) -> None:
    other = tiny_models(seed=11)[1]
    save_suno_checkpoint(tmp_path / "coarse.pt", models[1])
    save_suno_checkpoint(tmp_path / "coarse_2.pt", other)
    assert _same_weights(load_model(tmp_path, "coarse"), other)


def _resave(source: Path, target: Path, edit) -> Path:
    checkpoint = load_torch_file(source, allow_numpy_scalars=True, mmap=False)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target.parent


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["model"].pop("_orig_mod.transformer.h.1.mlp.c_fc.weight"), "missing weight 'transformer.h.1.mlp.c_fc.weight'"),
        (lambda c: c["model"].__setitem__("_orig_mod.transformer.h.0.attn.c_proj.weight", torch.zeros(32, 31)), r"has shape \(32, 31\) but the model's config needs \(32, 32\)"),
        (lambda c: c["model_args"].__setitem__("n_embd", 48), "has shape"),
        (lambda c: c["model_args"].pop("n_layer"), "model_args lacks n_layer"),
        (lambda c: c["model"].__setitem__("_orig_mod.extra.weight", torch.zeros(1)), "unexpected weight 'extra.weight'"),
        (lambda c: c.pop("model"), "not a Suno Bark checkpoint"),
    ],
)
def test_bad_suno_checkpoints_are_one_line_errors(edit, message: str, tmp_path: Path, suno_folder: Path) -> None:
    folder = _resave(suno_folder / "coarse.pt", tmp_path / "coarse.pt", edit)
    with pytest.raises(WeightsError, match=message) as error:
        load_model(folder, "coarse")
    assert "\n" not in str(error.value) and "coarse.pt" in str(error.value)


def test_truncated_files_are_clear_errors(tmp_path: Path, suno_folder: Path, transformers_folder: Path) -> None:
    data = (suno_folder / "text.pt").read_bytes()
    (tmp_path / "text.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(tmp_path, "text")
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(transformers_folder / "config.json", folder)
    data = (transformers_folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_model(folder, "fine")


class _Payload:
    """An object whose unpickling would run code: it must never be called."""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_another_pickled_object_is_refused(tmp_path: Path, suno_folder: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = _Payload()
    payload.marker = str(marker)

    def add(checkpoint):
        checkpoint["config"] = payload

    folder = _resave(suno_folder / "fine.pt", tmp_path / "fine.pt", add)
    with pytest.raises(WeightsError, match="refused to load: it holds a pickled object"):
        load_model(folder, "fine")
    assert not marker.exists()


def test_missing_weights_name_the_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"expected text_2\.pt or text\.pt .*config\.json"):
        load_model(tmp_path, "text")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_model(tmp_path, "text")


def test_model_name_reads_the_hub_cache_offline(hub_cache: Path, transformers_folder: Path, suno_folder: Path) -> None:
    with pytest.raises(WeightsError, match="not in the local cache"):
        load_pipeline("bark-small", decoder=False)
    files = {name: transformers_folder / name for name in ("config.json", "model.safetensors", "vocab.txt")}
    add_to_hub_cache(hub_cache, "suno/bark-small", files)
    from_hub = load_pipeline("bark-small", decoder=False).run("Hello there.", seed=3, until="fine", max_gen_duration_s=0.5)
    from_folder = load_pipeline(suno_folder, decoder=False).run("Hello there.", seed=3, until="fine", max_gen_duration_s=0.5)
    assert from_hub.fine == from_folder.fine and len(from_hub.semantic) > 0


def test_hub_id_in_suno_format_reads_the_cache_offline(hub_cache: Path, suno_folder: Path) -> None:
    add_to_hub_cache(hub_cache, "someone/bark-suno", {name: suno_folder / name for name in ("coarse.pt", "fine.pt")})
    assert _same_weights(load_model("someone/bark-suno", "fine"), load_model(suno_folder, "fine"))
    with pytest.raises(WeightsError, match="config.json is not in the local cache"):
        load_model("someone/bark-suno", "text")  # text.pt was never fetched


def test_loading_builds_on_meta_without_inits_and_without_importing_torch_dynamo(suno_folder: Path) -> None:
    # nn.init on a meta tensor imports torch._dynamo (0.8 s of every command's start); loading skips those inits.
    code = ("import sys; from barkkit_bark.checkpoints import build_model, load_model; "
            f"model = load_model({str(suno_folder)!r}, 'text'); "
            "print('torch._dynamo' in sys.modules, bool(build_model(model.config, 'text').transformer.wte.weight.std() > 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]  # and a model built on the CPU is still randomly initialised
