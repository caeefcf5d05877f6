"""Loading HuBERT and the quantizer: local files, hub references through the cache, and one clear line for each
bad file (missing, truncated, wrong shapes, an .info entry that disagrees, pickled code)."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from barkkit.errors import WeightsError
from barkkit_hubert.hubert import load_hubert
from barkkit_hubert.quantizer import DEFAULT_QUANTIZER, Quantizer, QuantizerInfo, load_quantizer, write_quantizer
from barkkit_hubert.stage import HubertSemantic
from tests.hub_cache import add_to_hub_cache

from .conftest import HIDDEN

SMALL = QuantizerInfo(HIDDEN, 24, 10_000, 0)


def _one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    for needle in needles:
        assert needle in message, message


def test_both_layouts_load_with_their_sizes(quantizers):
    assert load_quantizer(quantizers["v0"]).info == QuantizerInfo(HIDDEN, 24, 10_000, 0)
    v1 = load_quantizer(quantizers["v1"])
    assert v1.info == QuantizerInfo(HIDDEN, 24, 10_000, 1, intermediate_size=48) and v1.intermediate is not None
    with zipfile.ZipFile(quantizers["v1"]) as archive:  # the recipe's layout: <stem>/.info beside data.pkl
        assert json.loads(archive.read("quantifier_V1/.info")) == {"input_size": HIDDEN, "hidden_size": 24, "output_size": 10_000, "version": 1}
        assert "quantifier_V1/data.pkl" in archive.namelist()


def test_hub_references_go_through_the_cache(hub_cache, hubert_folder, quantizers):
    add_to_hub_cache(hub_cache, "GitMylo/bark-voice-cloning", {"quantifier_hubert_base_ls960_14.pth": quantizers["v0"]})
    add_to_hub_cache(hub_cache, "facebook/hubert-base-ls960", {name: hubert_folder / name for name in ("config.json", "model.safetensors")})
    stage = HubertSemantic.load()  # the defaults: facebook/hubert-base-ls960 and GitMylo/...:quantifier_hubert_base_ls960_14.pth
    assert stage.source == {"hubert": "facebook/hubert-base-ls960", "quantizer": DEFAULT_QUANTIZER}
    assert stage.quantizer.info == QuantizerInfo(HIDDEN, 24, 10_000, 0)


def test_offline_and_not_cached_says_what_to_fetch(hubert_folder):
    with pytest.raises(WeightsError) as error:
        load_quantizer("GitMylo/bark-voice-cloning:quantifier_hubert_base_ls960_14.pth")
    _one_line(error, "quantifier_hubert_base_ls960_14.pth", "hf download GitMylo/bark-voice-cloning")
    with pytest.raises(WeightsError) as error:
        load_hubert("facebook/hubert-base-ls960")
    _one_line(error, "config.json", "hf download facebook/hubert-base-ls960")


def test_missing_files(tmp_path, hubert_folder):
    with pytest.raises(WeightsError) as error:
        load_quantizer(tmp_path / "nope.pth")
    _one_line(error, "nope.pth", "no such file")
    with pytest.raises(WeightsError) as error:
        load_hubert(tmp_path)
    _one_line(error, "config.json")


def test_truncated_quantizer(tmp_path, quantizers):
    data = quantizers["v1"].read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as error:
        load_quantizer(cut)
    _one_line(error, "cut.pth", "truncated or corrupt")


def test_truncated_hubert(tmp_path, hubert_folder):
    import shutil

    folder = tmp_path / "hubert"
    shutil.copytree(hubert_folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(WeightsError) as error:
        load_hubert(folder)
    _one_line(error, "model.safetensors", "truncated or corrupt")


def test_pickled_code_is_refused_unrun(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "x": Payload()}, path)
    with pytest.raises(WeightsError) as error:
        load_quantizer(path)
    _one_line(error, "evil.pth", "refused to load", "pickled object")


def test_pickled_code_in_hubert_weights_is_refused_unrun(tmp_path, hubert_folder):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    folder = tmp_path / "hubert"
    folder.mkdir()
    (folder / "config.json").write_text((hubert_folder / "config.json").read_text())
    torch.save({"masked_spec_embed": torch.zeros(HIDDEN), "x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(WeightsError) as error:
        load_hubert(folder)
    _one_line(error, "pytorch_model.bin", "refused to load", "pickled object")


def test_info_that_disagrees_with_the_tensors(tmp_path):
    state = Quantizer(SMALL).state_dict()
    path = write_quantizer(tmp_path / "liar.pth", QuantizerInfo(HIDDEN, 1024, 10_000, 0), state=state)
    with pytest.raises(WeightsError) as error:
        load_quantizer(path)
    _one_line(error, "liar.pth", ".info entry says hidden_size=1024", "tensors have 24")
    path = write_quantizer(tmp_path / "v1liar.pth", QuantizerInfo(HIDDEN, 24, 10_000, 1), state=state)
    with pytest.raises(WeightsError) as error:
        load_quantizer(path)
    _one_line(error, "v1liar.pth", "version=1", "tensors have 0")


def test_wrong_shapes(tmp_path):
    state = Quantizer(SMALL).state_dict()
    state["fc.weight"] = torch.zeros(10_000, 12)  # the LSTM gives 24 values a frame
    with pytest.raises(WeightsError) as error:
        load_quantizer(write_quantizer(tmp_path / "shapes.pth", SMALL, with_info=False, state=state))
    _one_line(error, "shapes.pth", "do not fit", "fc.weight")
    wrong_vocab = Quantizer(QuantizerInfo(HIDDEN, 24, 500, 0)).state_dict()
    with pytest.raises(WeightsError) as error:
        load_quantizer(write_quantizer(tmp_path / "vocab.pth", SMALL, with_info=False, state=wrong_vocab))
    _one_line(error, "vocab.pth", "500 tokens", "10000")
    with pytest.raises(WeightsError) as error:
        load_quantizer(write_quantizer(tmp_path / "other.pth", SMALL, with_info=False, state={"w": torch.zeros(3)}))
    _one_line(error, "other.pth", "not a HuBERT quantizer", "lstm.weight_ih_l0")


def test_quantizer_must_read_hubert_width(tmp_path, hubert_folder):
    path = write_quantizer(tmp_path / "wide.pth", QuantizerInfo(768, 24, 10_000, 0))
    with pytest.raises(WeightsError) as error:
        HubertSemantic.load(hubert=hubert_folder, quantizer=path)
    _one_line(error, "wide.pth", "reads 768 features", f"gives {HIDDEN}")


def test_hubert_weights_that_do_not_fit_its_config(tmp_path, hubert_folder):
    import shutil

    folder = tmp_path / "hubert"
    shutil.copytree(hubert_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 48}))
    with pytest.raises(WeightsError) as error:
        load_hubert(folder)
    _one_line(error, "model.safetensors", "do not fit")
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 6}))
    with pytest.raises(WeightsError) as error:
        load_hubert(folder)
    _one_line(error, "6 transformer layers", "layer 9")


def test_legacy_weight_norm_names_and_a_ctc_checkpoint_load(tmp_path, hubert_folder):
    """facebook/hubert-base-ls960's pytorch_model.bin names the positional conv's weight norm weight_g/weight_v;
    HubertForCTC checkpoints put everything under hubert.; both load, with weights_only."""
    from safetensors.torch import load_file

    state = load_file(hubert_folder / "model.safetensors")
    legacy = {}
    for key, value in state.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v")
        legacy[f"hubert.{key}"] = value
    legacy["lm_head.weight"] = torch.zeros(4, HIDDEN)
    folder = tmp_path / "ctc"
    folder.mkdir()
    (folder / "config.json").write_text((hubert_folder / "config.json").read_text())
    torch.save(legacy, folder / "pytorch_model.bin")
    model, reference = load_hubert(folder), load_hubert(hubert_folder)
    x = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x).last_hidden_state, reference(x).last_hidden_state)


def test_one_folder_holding_hubert_and_its_quantizer(tmp_path, hubert_folder, quantizers):
    import shutil

    folder = tmp_path / "both"
    shutil.copytree(hubert_folder, folder)
    shutil.copyfile(quantizers["v1"], folder / "quantifier_V1.pth")
    stage = HubertSemantic.load(folder)  # as a pipeline spec's `model` would
    assert stage.quantizer.info.version == 1 and stage.source["quantizer"].endswith("quantifier_V1.pth")
    shutil.copyfile(quantizers["v0"], folder / "another.pth")
    with pytest.raises(WeightsError) as error:
        HubertSemantic.load(folder)
    _one_line(error, "several quantizer files", "quantizer=")
