import os
import socket
import time

import numpy as np
import pytest
import torch

from barkkit.errors import WeightsError
from barkkit.weights import hub_id, load_torch_file, resolve_file
from tests.hub_cache import add_to_hub_cache


def test_a_local_folder_is_searched_in_candidate_order(tmp_path):
    (tmp_path / "b.pt").write_bytes(b"x")
    assert resolve_file(tmp_path, ["a.pt", "b.pt"]) == tmp_path / "b.pt"
    assert resolve_file(tmp_path, "a.pt", required=False) is None
    with pytest.raises(WeightsError, match="none of a.pt, c.pt found"):
        resolve_file(tmp_path, ["a.pt", "c.pt"])


def test_names_map_to_hub_ids():
    assert hub_id("bark") == "suno/bark" and hub_id("bark-small") == "suno/bark-small"
    assert hub_id("someone/bark-finetune") == "someone/bark-finetune"
    with pytest.raises(WeightsError, match="not a local folder, a model name"):
        hub_id("./no/such/folder")


def test_hub_files_come_from_the_cache_when_offline(hub_cache):
    snapshot = add_to_hub_cache(hub_cache, "suno/bark-small", {"config.json": "{}", "speaker_embeddings/x.npy": b"1"})
    assert resolve_file("bark-small", "config.json") == snapshot / "config.json"
    assert resolve_file("suno/bark-small", ["missing.bin", "config.json"]) == snapshot / "config.json"


def test_offline_and_not_cached_is_one_clear_error():
    with pytest.raises(WeightsError) as error:
        resolve_file("bark", ["text_2.pt"])
    message = str(error.value)
    assert "'bark' (hub suno/bark)" in message and "text_2.pt" in message
    assert "`hf download suno/bark`" in message and "`hf download suno/bark text_2.pt`" in message and "\n" not in message


def _refused_endpoint() -> str:
    """An http endpoint on this machine where nothing listens: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_an_unreachable_hub_is_noticed_at_once_and_the_cache_serves(hub_cache, monkeypatch):
    """Not in HF_HUB_OFFLINE mode, with no hub to reach: cached files come at once, uncached ones are the clear
    error at once (huggingface_hub alone retries each file for ~23 s first)."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_constants, "ENDPOINT", _refused_endpoint())
    snapshot = add_to_hub_cache(hub_cache, "suno/bark-small", {"config.json": "{}"})
    start = time.monotonic()
    assert resolve_file("bark-small", "config.json") == snapshot / "config.json"
    with pytest.raises(WeightsError, match="vocab.txt is not in the local cache and the hub cannot be reached"):
        resolve_file("bark-small", "vocab.txt")
    assert time.monotonic() - start < 5


def _suno_like(path, extra=None):
    checkpoint = {"model_args": {"n_layer": 1}, "model": {"_orig_mod.w": torch.ones(2)}, "best_val_loss": np.float64(2.5)}
    checkpoint.update(extra or {})
    torch.save(checkpoint, path)
    return path


def test_numpy_scalars_load_only_when_allowed(tmp_path):
    path = _suno_like(tmp_path / "text.pt")
    loaded = load_torch_file(path, allow_numpy_scalars=True)
    assert float(loaded["best_val_loss"]) == 2.5 and torch.equal(loaded["model"]["_orig_mod.w"], torch.ones(2))
    with pytest.raises(WeightsError, match="refused to load.*numpy"):
        load_torch_file(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_a_pickled_object_is_refused_without_running_it(tmp_path, capfd):
    path = _suno_like(tmp_path / "evil.pt", {"payload": _Payload()})
    with pytest.raises(WeightsError, match="refused to load: it holds a pickled object"):
        load_torch_file(path, allow_numpy_scalars=True)
    assert "should-never-run" not in capfd.readouterr().out


def test_truncated_and_garbage_files_are_clear_errors(tmp_path):
    path = _suno_like(tmp_path / "cut.pt")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError, match="cut.pt: not a readable checkpoint"):
        load_torch_file(path, allow_numpy_scalars=True)
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(WeightsError, match="junk.pt: not a readable checkpoint"):
        load_torch_file(tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="no such file"):
        load_torch_file(tmp_path / "absent.pt")


def test_state_dicts_by_prefix_from_every_layout(tmp_path):
    import json

    from safetensors.torch import save_file

    from barkkit.weights import load_state_dict, read_json

    save_file({"codec_model.w": torch.ones(2), "semantic.w": torch.zeros(3)}, tmp_path / "model.safetensors")
    assert list(load_state_dict(tmp_path / "model.safetensors", "codec_model.")) == ["w"]
    torch.save({"state_dict": {"a.w": torch.ones(1), "b.w": torch.ones(1)}}, tmp_path / "model.bin")
    assert list(load_state_dict(tmp_path / "model.bin", "b.")) == ["w"]
    save_file({"a.x": torch.ones(1)}, tmp_path / "shard-1.safetensors")
    save_file({"b.x": torch.ones(4)}, tmp_path / "shard-2.safetensors")
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a.x": "shard-1.safetensors", "b.x": "shard-2.safetensors"}}))
    (tmp_path / "shard-1.safetensors").unlink()  # a shard with none of the asked-for tensors is never opened
    assert load_state_dict(index, "b.")["x"].shape == (4,)
    with pytest.raises(WeightsError, match="shard shard-1.safetensors is missing"):
        load_state_dict(index, "a.")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(WeightsError, match="list.json: expected a JSON object"):
        read_json(tmp_path / "list.json")
