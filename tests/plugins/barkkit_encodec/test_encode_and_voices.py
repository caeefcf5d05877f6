"""Encoding audio to codes, and making voices from recordings (with and without an audio-to-semantic stage)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

from barkkit import Stage, hookimpl
from barkkit.audio import load_audio
from barkkit.cli import CliState
from barkkit.cli.voices_make import make
from barkkit.errors import PluginError
from barkkit.plugins import load_plugins
from barkkit.tokens import Audio, SemanticTokens
from barkkit.voice import Voice, load_token_file
from barkkit.voice_making import encode_recording, make_voice, semantic_stage_names
from barkkit_encodec.decoder import EncodecDecoder
from tests.speech_like import speechy


@pytest.fixture(scope="module")
def decoder(original_codec) -> EncodecDecoder:
    return EncodecDecoder.load(original_codec[0])


def test_encode_matches_the_encodec_package(decoder, original_codec):
    _, model = original_codec
    samples = speechy(1.5, 24_000)[:-123]  # not a whole number of frames: the strided convs pad the end
    x = torch.from_numpy(samples)[None, None]
    codes = decoder.encode(Audio(samples, 24_000))
    with torch.inference_mode():
        (expected, _), = model.encode(x)  # (1, 8, T) at 6 kbps
        latents, expected_latents = decoder.codec.encoder(x), model.encoder(x)
    assert codes.shape == (8, int(np.ceil(samples.size / 320))) == tuple(expected.shape[1:])
    assert (latents - expected_latents).abs().max() < 1e-5 * expected_latents.abs().max()
    assert np.array_equal(np.asarray(codes), expected[0].numpy())


def test_quantizer_matches_the_encodec_package(decoder, original_codec):
    """A random encoder's latents hardly vary, so check the residual quantizer on latents that do."""
    _, model = original_codec
    latents = torch.randn(2, 128, 300, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        codes = decoder.codec.quantize(latents)
        expected = model.quantizer.encode(latents, model.frame_rate, 6.0)  # (8, B, T)
    assert codes.shape == expected.shape == (8, 2, 300)
    assert torch.equal(codes, expected)
    assert all(len(torch.unique(codes[k])) > 100 for k in range(8))


def test_any_rate_channels_and_format_encodes(decoder, tmp_path):
    path = tmp_path / "stereo_16k.flac"
    soundfile.write(path, speechy(2.0, 16_000, channels=2), 16_000)
    audio = load_audio(path)
    assert audio.sample_rate == 16_000
    codes = decoder.encode(audio)
    assert codes.shape == (8, int(np.ceil(2.0 * 24_000 / 320)))
    # The decoder resamples as load_audio does: asking for 24 kHz up front gives the same codes.
    assert codes == decoder.encode(load_audio(path, sample_rate=24_000))


class EnergySemantic(Stage):
    """Test-only audio-to-semantic stage: one token per 1/49.9 s, the frame's loudness in 10,000 steps."""

    name = "test.audio_semantic"
    consumes = Audio
    produces = SemanticTokens

    def run(self, value, *, voice=None, generator, progress=None, **options):
        hop = value.sample_rate / 49.9
        frames = [value.samples[int(i * hop): int((i + 1) * hop)] for i in range(int(len(value) / hop))]
        rms = np.array([np.sqrt(np.mean(f.astype(np.float64) ** 2)) for f in frames])
        return SemanticTokens(np.minimum(rms * 20_000, 9_999).astype(np.int64))


class AudioSemanticPlugin:
    @hookimpl
    def register_stages(self, register):
        register(EnergySemantic)


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "me.wav"
    soundfile.write(path, speechy(3.0, 22_050, channels=2, seed=1), 22_050, subtype="PCM_16")
    return path


def test_without_an_audio_to_semantic_stage_no_voice_is_invented(original_codec, recording):
    plugins = load_plugins(entry_points_group=None, extra=[__import__("barkkit_encodec.plugin", fromlist=["x"])])
    assert semantic_stage_names(plugins) == []
    with pytest.raises(PluginError, match="no audio-to-semantic stage.*--codes-only"):
        make_voice(recording, model=original_codec[0], plugins=plugins)
    codes = encode_recording(recording, model=original_codec[0], plugins=plugins)
    assert set(codes) == {"coarse_prompt", "fine_prompt"} and codes["fine_prompt"].shape == (8, 225)
    assert np.array_equal(np.asarray(codes["coarse_prompt"]), np.asarray(codes["fine_prompt"])[:2])


def test_with_an_audio_to_semantic_stage_a_full_voice_is_made(original_codec, recording, tmp_path):
    from barkkit_encodec import plugin as encodec_plugin

    plugins = load_plugins(entry_points_group=None, extra=[encodec_plugin, AudioSemanticPlugin()])
    assert semantic_stage_names(plugins) == ["test.audio_semantic"]
    voice = make_voice(recording, model=original_codec[0], plugins=plugins)
    assert len(voice.semantic) == int(3.0 * 49.9) and voice.fine.shape == (8, 225) and voice.coarse.shape == (2, 225)
    assert np.asarray(voice.semantic).max() > np.asarray(voice.semantic).min()  # follows the loudness
    voice.save(tmp_path / "v.npz")
    loaded = Voice.load(tmp_path / "v.npz")
    assert (loaded.semantic, loaded.coarse, loaded.fine) == (voice.semantic, voice.coarse, voice.fine)


def _invoke(plugins, *args):
    return CliRunner().invoke(make, [str(a) for a in args], obj=CliState(_plugins=plugins))


def test_cli_make_fails_clearly_then_writes_codes_only(original_codec, recording, tmp_path):
    from barkkit_encodec import plugin as encodec_plugin

    plugins = load_plugins(entry_points_group=None, extra=[encodec_plugin])
    out = tmp_path / "voice.npz"
    result = _invoke(plugins, recording, "-o", out, "-m", original_codec[0])
    assert result.exit_code != 0 and isinstance(result.exception, PluginError)
    assert "--codes-only" in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists() and not list(tmp_path.glob(".voice.npz*"))
    result = _invoke(plugins, recording, "-o", out, "-m", original_codec[0], "--codes-only")
    assert result.exit_code == 0, result.output
    tokens = load_token_file(out)
    assert set(tokens) == {"coarse_prompt", "fine_prompt"} and tokens["fine_prompt"].shape == (8, 225)


def test_cli_make_writes_a_full_voice_with_a_semantic_stage(original_codec, recording, tmp_path):
    from barkkit_encodec import plugin as encodec_plugin

    plugins = load_plugins(entry_points_group=None, extra=[encodec_plugin, AudioSemanticPlugin()])
    out = tmp_path / "voice.npz"
    result = _invoke(plugins, recording, "-o", out, "-m", original_codec[0])
    assert result.exit_code == 0, result.output
    voice = Voice.load(out)
    assert voice.fine.shape == (8, 225) and len(voice.semantic) == int(3.0 * 49.9)
    assert "wrote" in result.stderr


def test_cli_make_needs_an_npz_output(original_codec, recording, tmp_path):
    result = _invoke(load_plugins(entry_points_group=None), recording, "-o", tmp_path / "voice.wav", "--codes-only")
    assert result.exit_code != 0 and ".npz" in str(result.exception)
