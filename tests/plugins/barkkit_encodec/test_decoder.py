"""The encodec decoder against Bark's reference `codec_decode`, in every weight format, chunked and not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from barkkit.errors import WeightsError
from barkkit.pipeline import Pipeline
from barkkit.plugins import load_plugins
from barkkit.tokens import Audio, FineTokens
from barkkit_encodec.checkpoints import ORIGINAL_CHECKPOINT, load_codec
from barkkit_encodec.decoder import EncodecDecoder
from tests.hub_cache import add_to_hub_cache
from tests.plugins.barkkit_encodec.conftest import PROMPTS


@pytest.fixture(scope="module")
def decoder(original_codec) -> EncodecDecoder:
    folder, _ = original_codec
    return load_plugins().decoders.get("encodec").load(folder)


def reference_decode(model: torch.nn.Module, fine: np.ndarray) -> np.ndarray:
    """Bark's own `codec_decode`, with `model` as its loaded codec (int64 codes, as its fine stage returns;
    torch cannot index with the uint16 that `announcer.npz` stores)."""
    import bark.generation as generation

    previous = generation.models.get("codec")
    generation.models["codec"] = model
    try:
        with torch.inference_mode():
            return generation.codec_decode(fine.astype(np.int64))
    finally:
        if previous is None:
            generation.models.pop("codec", None)
        else:
            generation.models["codec"] = previous


def test_registered_by_name_with_its_properties():
    decoder_class = load_plugins().decoders.get("encodec")
    assert decoder_class is EncodecDecoder
    assert decoder_class.sample_rate == 24_000 and decoder_class.can_encode


@pytest.mark.parametrize("name", PROMPTS)
def test_matches_the_reference_codec_decode(decoder, original_codec, fine_prompts, name):
    _, model = original_codec
    fine = fine_prompts[name]
    expected = reference_decode(model, fine)
    audio = decoder.decode(FineTokens(fine))
    assert isinstance(audio, Audio) and audio.sample_rate == 24_000
    assert len(audio) == fine.shape[1] * 320 == expected.shape[0]
    peak = np.abs(expected).max()
    # The random codec must give a signal worth comparing: not silent, not constant.
    assert peak > 1e-3 and expected.std() > 0.01 * peak
    error = np.abs(audio.samples - expected).max()
    assert error < 1e-4 * peak, f"{name}: max error {error:.3g} at peak {peak:.3g}"


@pytest.mark.parametrize("frames", [0, 1, 3, 8])
def test_very_short_sequences_match_the_reference(decoder, original_codec, fine_prompts, frames):
    """Shorter than the first convolution's kernel: the padding must still be the reference's."""
    fine = fine_prompts["v2/en_speaker_1"][:, :frames]
    audio = decoder.decode(FineTokens(fine))
    assert len(audio) == frames * 320
    if frames:
        expected = np.atleast_1d(reference_decode(original_codec[1], fine))
        assert np.abs(audio.samples - expected).max() < 1e-4 * np.abs(expected).max()


def test_different_codes_decode_differently(decoder, fine_prompts):
    a, b = (decoder.decode(FineTokens(fine_prompts[n][:, :100])).samples for n in PROMPTS[:2])
    assert np.abs(a - b).max() > 0.1 * np.abs(a).max()


def test_chunked_decode_equals_one_pass(original_codec, fine_prompts):
    folder, _ = original_codec
    codes = torch.from_numpy(fine_prompts["v2/de_speaker_3"].astype(np.int64))[:, None]
    codec = load_codec(folder)
    calls = []
    with torch.inference_mode():
        whole = codec.decode(codes)
        chunked = codec.decode(codes, chunk_frames=64, progress=lambda done, total: calls.append((done, total)))
    total = codes.shape[-1]
    assert total > 3 * 64 and chunked.shape == whole.shape
    assert (chunked - whole).abs().max() < 1e-5 * whole.abs().max()
    assert calls[-1] == (total, total) and len(calls) == -(-total // 64)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_chunk_boundaries_do_not_matter(original_codec, fine_prompts):
    """Chunks of any size (down to the 7-frame minimum) and a ragged last chunk give the one-pass result."""
    folder, _ = original_codec
    codes = torch.from_numpy(fine_prompts["v2/en_speaker_1"][:, :61].astype(np.int64))[:, None]
    codec = load_codec(folder)
    with torch.inference_mode():
        whole = codec.decode(codes)
        for chunk in (1, 7, 10, 60):
            assert (codec.decode(codes, chunk_frames=chunk) - whole).abs().max() < 1e-5 * whole.abs().max()


def test_transformers_layout_is_what_the_conversion_makes(original_codec, transformers_codec, fine_prompts):
    """transformers' EncodecModel, given the converted original weights, decodes as the reference does: so the
    renames are right, independently of barkkit's own model."""
    _, model = original_codec
    _, hf_model = transformers_codec
    fine = fine_prompts["announcer"].astype(np.int64)
    with torch.inference_mode():
        codes = torch.from_numpy(fine)[:, None]
        hf_audio = hf_model.decoder(hf_model.quantizer.decode(codes))[0, 0].numpy()
    expected = reference_decode(model, fine)
    assert np.abs(hf_audio - expected).max() < 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("fmt", ["encodec_model_folder", "bark_model_folder", "bark_model_bin", "bark_sharded",
                                 "bark_without_config", "checkpoint_file"])
def test_every_weight_format_decodes_alike(fmt, decoder, original_codec, transformers_codec, bark_codec_folder,
                                           fine_prompts, tmp_path):
    if fmt == "encodec_model_folder":
        model_ref = transformers_codec[0]
    elif fmt == "bark_model_folder":
        model_ref = bark_codec_folder
    elif fmt == "bark_model_bin":  # pytorch_model.bin variant of the Bark checkpoint
        from safetensors.torch import load_file

        torch.save(load_file(str(bark_codec_folder / "model.safetensors")), tmp_path / "pytorch_model.bin")
        (tmp_path / "config.json").write_text((bark_codec_folder / "config.json").read_text())
        model_ref = tmp_path
    elif fmt == "bark_sharded":  # model.safetensors.index.json: only the shard holding codec_model.* is read
        from safetensors.torch import load_file

        tensors = load_file(str(bark_codec_folder / "model.safetensors"))
        (tmp_path / "model-00002-of-00002.safetensors").write_bytes((bark_codec_folder / "model.safetensors").read_bytes())
        (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"semantic shard: never read")
        weight_map = {k: "model-00002-of-00002.safetensors" for k in tensors if k.startswith("codec_model.")}
        weight_map["semantic.lm_head.weight"] = "model-00001-of-00002.safetensors"
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        (tmp_path / "config.json").write_text((bark_codec_folder / "config.json").read_text())
        model_ref = tmp_path
    elif fmt == "bark_without_config":  # codec_model.* names tell a BarkModel apart
        (tmp_path / "model.safetensors").write_bytes((bark_codec_folder / "model.safetensors").read_bytes())
        model_ref = tmp_path
    else:
        model_ref = original_codec[0] / ORIGINAL_CHECKPOINT
    fine = FineTokens(fine_prompts["announcer"])
    other = EncodecDecoder.load(model_ref)
    assert np.abs(other.decode(fine).samples - decoder.decode(fine).samples).max() < 1e-6


def test_folder_prefers_the_original_checkpoint(original_codec, bark_codec_folder, tmp_path):
    (tmp_path / ORIGINAL_CHECKPOINT).write_bytes((original_codec[0] / ORIGINAL_CHECKPOINT).read_bytes())
    for name in ("model.safetensors", "config.json"):
        (tmp_path / name).write_bytes(b"not read")  # would fail if it were read
    assert EncodecDecoder.load(tmp_path).codec is not None


def test_model_names_resolve_through_the_hub_cache(hub_cache, bark_codec_folder, fine_prompts, decoder):
    add_to_hub_cache(hub_cache, "suno/bark-small", {
        "config.json": bark_codec_folder / "config.json",
        "model.safetensors": bark_codec_folder / "model.safetensors",
    })
    fine = FineTokens(fine_prompts["announcer"][:, :50])
    from_hub = EncodecDecoder.load("bark-small")
    assert np.abs(from_hub.decode(fine).samples - decoder.decode(fine).samples).max() < 1e-6


def test_missing_weights_offline_is_one_clear_error():
    with pytest.raises(WeightsError) as error:
        EncodecDecoder.load("bark")
    assert "suno/bark" in str(error.value) and "\n" not in str(error.value)


def test_a_folder_without_codec_weights_says_what_it_needs(tmp_path):
    with pytest.raises(WeightsError, match=f"{ORIGINAL_CHECKPOINT}.*BarkModel"):
        EncodecDecoder.load(tmp_path)


def test_a_checkpoint_with_pickled_objects_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("should never run",))

    torch.save({"decoder.layers.0.conv.bias": torch.zeros(1), "evil": Payload()}, tmp_path / ORIGINAL_CHECKPOINT)
    with pytest.raises(WeightsError, match="refused to load"):
        EncodecDecoder.load(tmp_path)


def test_a_codec_of_another_kind_is_a_clear_error(transformers_codec, tmp_path):
    folder, _ = transformers_codec
    config = json.loads((folder / "config.json").read_text())
    config.update(normalize=True, chunk_length_s=1.0, sampling_rate=48_000, audio_channels=2)  # the 48 kHz model
    for name in ("model.safetensors",):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="causal mono 24 kHz"):
        EncodecDecoder.load(tmp_path)


def test_truncated_weights_are_a_clear_error(original_codec, tmp_path):
    data = (original_codec[0] / ORIGINAL_CHECKPOINT).read_bytes()
    (tmp_path / ORIGINAL_CHECKPOINT).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        EncodecDecoder.load(tmp_path)


def test_a_pipeline_spec_runs_the_decoder_by_name(original_codec, fine_prompts, decoder, tmp_path):
    folder, _ = original_codec
    fine = FineTokens(fine_prompts["announcer"][:, :40])
    spec = {"semantic": False, "coarse": False, "fine": False, "decoder": "encodec", "model": str(folder)}
    (tmp_path / "pipeline.toml").write_text(
        f'[pipeline]\nsemantic = false\ncoarse = false\nfine = false\ndecoder = {{ name = "encodec", model = "{folder}" }}\n'
    )
    for pipeline in (Pipeline.from_spec(spec), Pipeline.from_spec(tmp_path / "pipeline.toml")):
        generation = pipeline.run(fine)
        assert generation.sample_rate == 24_000 and len(generation.audio) == 40 * 320
        assert np.abs(generation.audio.samples - decoder.decode(fine).samples).max() < 1e-6
