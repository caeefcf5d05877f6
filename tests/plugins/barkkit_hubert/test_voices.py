"""Voices from recordings with hubert.semantic: in Python (barkkit.voice_making) and with `barkkit voices make`,
then used by `barkkit generate --voice`, and shown with where each part came from."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

from barkkit.audio import load_audio
from barkkit.cli import cli
from barkkit.errors import AudioError, PluginError
from barkkit.plugins import load_plugins
from barkkit.voice import SOURCE_NOTE_KEY, Voice, read_source_note
from barkkit.voice_making import CODEC_SECONDS, make_voice, semantic_stage_names
from barkkit_encodec.decoder import EncodecDecoder
from barkkit_hubert.stage import HubertSemantic
from tests.core import toy_plugin

from .conftest import speechy

TOY = ["--semantic-stage", "toy.semantic", "--coarse-stage", "toy.coarse", "--fine-stage", "toy.fine", "--decoder", "toy.decoder"]


@pytest.fixture
def recording(tmp_path):
    """3 s of stereo sound at 22.05 kHz, 16-bit FLAC: not the rate, channel count or format HuBERT wants."""
    path = tmp_path / "me.flac"
    soundfile.write(path, speechy(3.0, 22_050, channels=2, seed=1), 22_050, subtype="PCM_16")
    return path


@pytest.fixture
def run():
    cli.use_plugins(load_plugins(extra=[toy_plugin]))
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli, [str(a) for a in args])
    cli.use_plugins(None)


def test_python_voice_from_the_stage_and_voice_making(recording, hubert_folder, quantizers, codec_folder):
    plugins = load_plugins()
    assert semantic_stage_names(plugins) == ["hubert.semantic"]
    voice = make_voice(recording, model=codec_folder, plugins=plugins, hubert=hubert_folder, quantizer=quantizers["v1"])
    stage = HubertSemantic.load(hubert=hubert_folder, quantizer=quantizers["v1"])
    audio = load_audio(recording)
    assert voice.semantic == stage.run(audio, generator=torch.Generator())  # the file in blocks = the file whole
    assert voice.fine == EncodecDecoder.load(codec_folder).encode(audio) and voice.fine.shape == (8, 225)
    assert np.array_equal(np.asarray(voice.coarse), np.asarray(voice.fine)[:2])
    assert make_voice(recording, model=codec_folder, plugins=plugins, semantic_stage=stage).semantic == voice.semantic
    assert "hubert.semantic" in voice.note["semantic"] and str(quantizers["v1"]) in voice.note["semantic"]


def test_cli_makes_a_voice_that_generate_uses_and_show_explains(run, recording, hubert_folder, quantizers, codec_folder, tmp_path):
    out = tmp_path / "voice.npz"
    result = run("voices", "make", recording, "-o", out, "--model", codec_folder, "--hubert", hubert_folder,
                 "--quantizer", quantizers["v0"])
    assert result.exit_code == 0, result.output
    voice = Voice.load(out)
    assert len(voice.semantic) == 149 and voice.fine.shape == (8, 225)
    with np.load(out) as npz:
        assert set(npz.files) == {"semantic_prompt", "coarse_prompt", "fine_prompt", SOURCE_NOTE_KEY}
    note = read_source_note(out)
    assert str(recording) in note["recording"] and str(codec_folder) in note["fine"]

    shown = run("voices", "show", out)
    assert shown.exit_code == 0, shown.output
    lines = {line.split(":")[0]: line for line in shown.output.splitlines()}
    assert "hubert.semantic" in lines["semantic"] and str(hubert_folder) in lines["semantic"]
    assert "encodec" in lines["coarse"] and "encodec" in lines["fine"] and str(recording) in lines["made from"]

    tokens = tmp_path / "hello.npz"
    result = run("generate", "hello", "-o", tmp_path / "hello.wav", "--voice", out, "--save-tokens", tokens, "--seed", 1, *TOY)
    assert result.exit_code == 0, result.output
    assert Voice.load(tokens).semantic[0] == voice.semantic[-1]  # the toy stage continues from the voice's last token


def test_codes_only_files_say_where_their_codes_came_from(run, recording, codec_folder, tmp_path):
    out = tmp_path / "codes.npz"
    assert run("voices", "make", recording, "-o", out, "-m", codec_folder, "--codes-only").exit_code == 0
    shown = run("voices", "show", out)
    assert shown.exit_code == 0 and "not a whole voice" in shown.output
    assert f"fine:     (8, 225)  <- encodec ({codec_folder}), 8 codebooks at 6 kbps of all of {recording}" in shown.output


def test_old_voices_without_a_note_still_load_and_show(run, tmp_path):
    old = tmp_path / "old.npz"
    np.savez(old, semantic_prompt=np.arange(50), coarse_prompt=np.zeros((2, 75), np.int64), fine_prompt=np.zeros((8, 75), np.int64))
    assert Voice.load(old).note is None and read_source_note(old) == {}
    shown = run("voices", "show", old)
    assert shown.exit_code == 0 and "semantic: 50 tokens" in shown.output and "<-" not in shown.output


def test_cli_refuses_silence_with_one_line_and_writes_nothing(run, hubert_folder, quantizers, codec_folder, tmp_path):
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(48_000, np.float32), 16_000)
    out = tmp_path / "voice.npz"
    result = run("voices", "make", silent, "-o", out, "-m", codec_folder, "--hubert", hubert_folder, "--quantizer", quantizers["v0"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(silent) in lines[0] and "silent" in lines[0]
    assert not out.exists() and "Traceback" not in result.output


def test_a_missing_recording_is_reported_before_weights_load(run, tmp_path):
    result = run("voices", "make", tmp_path / "nope.wav", "-o", tmp_path / "v.npz")  # no weights anywhere: still this
    assert result.exit_code == 1 and "nope.wav: no such file" in result.stderr


def test_defaults_are_the_hub_files_and_offline_says_how_to_get_them(run, recording, codec_folder, tmp_path):
    result = run("voices", "make", recording, "-o", tmp_path / "v.npz", "-m", codec_folder)
    assert result.exit_code == 1
    assert "facebook/hubert-base-ls960" in result.stderr and "hf download" in result.stderr
    result = run("voices", "make", recording, "-o", tmp_path / "v.npz", "-m", codec_folder, "--hubert", tmp_path / "nope")
    assert result.exit_code == 1 and "nope" in result.stderr


def test_hubert_options_are_for_hubert_semantic_only(recording, hubert_folder, codec_folder):
    from tests.plugins.barkkit_encodec.test_encode_and_voices import AudioSemanticPlugin

    plugins = load_plugins(extra=[AudioSemanticPlugin()])
    with pytest.raises(PluginError, match="takes no option.*hubert"):
        make_voice(recording, model=codec_folder, plugins=plugins, semantic_stage="test.audio_semantic", hubert=hubert_folder)


def test_a_long_recording_keeps_the_codec_tail_and_all_semantic_tokens(hubert_folder, quantizers, codec_folder, tmp_path):
    path = tmp_path / "long.wav"
    soundfile.write(path, speechy(CODEC_SECONDS + 4.0, 16_000, seed=4), 16_000)
    voice = make_voice(path, model=codec_folder, hubert=hubert_folder, quantizer=quantizers["v0"])
    assert len(voice.semantic) == 1 + (int((CODEC_SECONDS + 4.0) * 16_000) - 400) // 320  # over the whole recording
    assert len(voice.fine) == CODEC_SECONDS * 75  # the last 10 s
    assert "the last 10.0 s" in voice.note["fine"]


def test_too_short_recording_is_refused_in_python(hubert_folder, quantizers, codec_folder, tmp_path):
    path = tmp_path / "short.wav"
    soundfile.write(path, speechy(0.5, 16_000), 16_000)
    with pytest.raises(AudioError, match=r"short\.wav: the recording is 0\.50 s long"):
        make_voice(path, model=codec_folder, hubert=hubert_folder, quantizer=quantizers["v0"])


def test_bark_generates_with_the_made_voice(run, recording, hubert_folder, quantizers, tmp_path):
    """One folder with tiny random Bark checkpoints and EnCodec's: the voice made from it drives a real generation."""
    from barkkit_encodec.checkpoints import write_encodec_checkpoint
    from tests.plugins.barkkit_bark.conftest import tiny_models, write_suno_folder

    bark = write_suno_folder(tmp_path / "bark", tiny_models(seed=11), best_val_loss=2.5)
    write_encodec_checkpoint(bark, seed=5)
    voice_path = tmp_path / "me.npz"
    made = run("voices", "make", recording, "-o", voice_path, "-m", bark, "--hubert", hubert_folder, "--quantizer", quantizers["v1"])
    assert made.exit_code == 0, made.output
    out, tokens = tmp_path / "hello.wav", tmp_path / "hello.npz"
    result = run("generate", "Hi.", "-o", out, "-m", bark, "--voice", voice_path, "--seed", 0, "--save-tokens", tokens,
                 "--max-gen-duration-s", 0.5, "--no-early-stop")
    assert result.exit_code == 0, result.output
    generated = Voice.load(tokens)
    assert len(generated.fine) > 0 and soundfile.info(out).frames == 320 * len(generated.fine)
    again = tmp_path / "again.npz"
    assert run("generate", "Hi.", "-o", tmp_path / "x.wav", "-m", bark, "--seed", 0, "--save-tokens", again,
               "--max-gen-duration-s", 0.5, "--no-early-stop").exit_code == 0
    assert Voice.load(again).coarse != generated.coarse  # the voice changed what was generated
