"""The vocos decoder: parity with the vocos package on the same (random) weights, chosen by name in a pipeline."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from barkkit.errors import PluginError, WeightsError
from barkkit.pipeline import Pipeline
from barkkit.plugins import load_plugins
from barkkit.tokens import FineTokens
from tests.hub_cache import add_to_hub_cache

pytest.importorskip("vocos", exc_type=ImportError)

from barkkit_vocos.checkpoints import save_vocos_checkpoint  # noqa: E402
from barkkit_vocos.decoder import CONFIG_FILE, DEFAULT_VOCOS, WEIGHTS_FILE, VocosDecoder  # noqa: E402


@pytest.fixture(scope="module")
def vocos_folder(tmp_path_factory):
    return save_vocos_checkpoint(tmp_path_factory.mktemp("vocos"), seed=7)


@pytest.fixture(scope="module")
def decoder(vocos_folder):
    return VocosDecoder.load(vocos_folder)


@pytest.fixture(scope="module")
def fine(prompts_dir):
    return FineTokens(np.load(prompts_dir / "v2" / "en_speaker_1.npz")["fine_prompt"][:, :200])


def reference_vocos(folder, monkeypatch):
    """The vocos package's own model on these weights, built as Vocos.from_pretrained builds it, except that its
    EncodecFeatures gets an untrained EnCodec instead of downloading the pretrained one (decoding tokens uses only
    the codebooks, which the checkpoint holds)."""
    import encodec
    from vocos import Vocos

    build = encodec.EncodecModel.encodec_model_24khz
    monkeypatch.setattr(encodec.EncodecModel, "encodec_model_24khz",
                        staticmethod(lambda pretrained=True, repository=None: build(pretrained=False)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # encodec's deprecated weight_norm
        model = Vocos.from_hparams(str(folder / CONFIG_FILE))
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    state.update({f"feature_extractor.encodec.{k}": v for k, v in model.feature_extractor.encodec.state_dict().items()})
    model.load_state_dict(state)
    return model.eval()


def test_registered_by_name():
    decoder_class = load_plugins().decoders.get("vocos")
    assert decoder_class is VocosDecoder and decoder_class.sample_rate == 24_000 and not decoder_class.can_encode


def test_matches_the_vocos_package(vocos_folder, decoder, fine, monkeypatch):
    reference = reference_vocos(vocos_folder, monkeypatch)
    codes = torch.from_numpy(np.array(fine))
    with torch.inference_mode():
        features = reference.codes_to_features(codes)
        expected = reference.decode(features, bandwidth_id=torch.tensor([2]))[0].numpy()  # 2: 6 kbps
        other_bandwidth = reference.decode(features, bandwidth_id=torch.tensor([0]))[0].numpy()
    audio = decoder.decode(fine)
    assert audio.sample_rate == 24_000 and len(audio) == len(fine) * 320 == expected.size
    peak = np.abs(expected).max()
    assert peak > 1e-3 and expected.std() > 0.01 * peak
    assert np.abs(audio.samples - expected).max() < 1e-4 * peak
    assert np.abs(other_bandwidth - expected).max() > 1e-2 * peak  # so the 6 kbps choice is what matched


def test_never_builds_vocos_encodec_features(vocos_folder, monkeypatch):
    """vocos's EncodecFeatures downloads EnCodec weights when built: loading must not build one."""
    import vocos.feature_extractors

    def refuse(*args, **kwargs):
        raise AssertionError("EncodecFeatures was built (it would download)")

    monkeypatch.setattr(vocos.feature_extractors.EncodecFeatures, "__init__", refuse)
    assert VocosDecoder.load(vocos_folder) is not None


def test_a_pipeline_spec_swaps_in_vocos_by_name(vocos_folder, decoder, fine, tmp_path):
    spec = {"semantic": False, "coarse": False, "fine": False, "decoder": "vocos", "model": str(vocos_folder)}
    toml = tmp_path / "pipeline.toml"
    toml.write_text(f'semantic = false\ncoarse = false\nfine = false\ndecoder = "vocos"\nmodel = "{vocos_folder}"\n')
    expected = decoder.decode(fine).samples
    for pipeline in (Pipeline.from_spec(spec), Pipeline.from_spec(toml)):
        assert pipeline.decoder.name == "vocos"
        generation = pipeline.run(fine)
        assert generation.sample_rate == 24_000 and np.abs(generation.audio.samples - expected).max() < 1e-6


def test_a_model_folder_with_a_vocos_subfolder(vocos_folder, tmp_path):
    sub = tmp_path / "vocos"
    sub.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (sub / name).write_bytes((vocos_folder / name).read_bytes())
    assert VocosDecoder.load(tmp_path) is not None


def test_bark_model_names_use_the_default_vocos_repository(vocos_folder, hub_cache):
    with pytest.raises(WeightsError, match=DEFAULT_VOCOS):
        VocosDecoder.load("bark-small")  # offline, nothing cached: one clear error naming the repository
    add_to_hub_cache(hub_cache, DEFAULT_VOCOS, {name: vocos_folder / name for name in (CONFIG_FILE, WEIGHTS_FILE)})
    assert VocosDecoder.load("bark-small") is not None and VocosDecoder.load(None) is not None


def test_without_the_vocos_package_loading_says_how_to_install(vocos_folder, monkeypatch):
    for name in ("vocos", "vocos.models", "vocos.heads"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(PluginError) as error:
        VocosDecoder.load(vocos_folder)
    assert "pip install 'barkkit[vocos]'" in str(error.value) and "\n" not in str(error.value)
    assert load_plugins().decoders.get("vocos") is VocosDecoder  # still listed, so `barkkit plugins` shows it


def test_codebooks_come_from_the_codec_weights_when_the_checkpoint_lacks_them(tmp_path):
    from barkkit_encodec.checkpoints import load_codec, write_encodec_checkpoint

    save_vocos_checkpoint(tmp_path)
    write_encodec_checkpoint(tmp_path, seed=3)
    state = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    del state["feature_extractor.codebook_weights"]
    torch.save(state, tmp_path / WEIGHTS_FILE)
    loaded = VocosDecoder.load(tmp_path)
    assert torch.equal(loaded.model.codebooks, load_codec(tmp_path).codebooks.reshape(-1, 128))


def test_a_config_naming_other_classes_is_refused(vocos_folder, tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes((vocos_folder / WEIGHTS_FILE).read_bytes())
    config = (vocos_folder / CONFIG_FILE).read_text().replace("vocos.models.VocosBackbone", "os.system")
    (tmp_path / CONFIG_FILE).write_text(config)
    with pytest.raises(WeightsError, match="backbone class 'os.system' is not one of"):
        VocosDecoder.load(tmp_path)
