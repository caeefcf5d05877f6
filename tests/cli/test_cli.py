"""The command line, run for real with click's runner over a toy plugin that needs no weights."""

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from barkkit import Voice, load_plugins
from barkkit.cli import cli
from tests.core import toy_plugin

TOY = ["--semantic-stage", "toy.semantic", "--coarse-stage", "toy.coarse", "--fine-stage", "toy.fine", "--decoder", "toy.decoder"]


@pytest.fixture
def run():
    cli.use_plugins(load_plugins(extra=[toy_plugin]))
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli, [str(a) for a in args], input=input)

    yield invoke
    cli.use_plugins(None)


def _one_error_line(result, *needles):
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_generate_writes_audio_and_a_voice(run, tmp_path):
    out, tokens = tmp_path / "out.wav", tmp_path / "tokens.npz"
    result = run("generate", "hello there", "-o", out, "--save-tokens", tokens, "--seed", 3, *TOY)
    assert result.exit_code == 0, result.output
    samples, rate = soundfile.read(out)
    voice = Voice.from_npz(tokens)
    assert rate == 24_000 and len(samples) == 320 * len(voice.fine)
    assert "seed 3" in result.stderr
    again = tmp_path / "again.npz"
    run("generate", "hello there", "-o", tmp_path / "again.flac", "--save-tokens", again, "--seed", 3, "--quiet", *TOY)
    assert Voice.from_npz(again).fine == voice.fine


def test_stage_commands_chain_through_token_files(run, tmp_path):
    tokens = tmp_path / "t.npz"
    assert run("semantic", "abc", "-o", tokens, "--stage", "toy.semantic", "--seed", 1, "--option", "tokens_per_char=4").exit_code == 0
    with np.load(tokens) as data:
        assert data.files == ["semantic_prompt"] and data["semantic_prompt"].shape == (12,)
    assert run("coarse", tokens, "-o", tokens, "--stage", "toy.coarse", "--seed", 1).exit_code == 0
    assert run("fine", tokens, "-o", tmp_path / "voice.npz", "--stage", "toy.fine", "-s", 1).exit_code == 0
    voice = Voice.from_npz(tmp_path / "voice.npz")
    assert len(voice.semantic) == 12 and voice.coarse.shape == (2, 18)
    result = run("decode", tmp_path / "voice.npz", "-o", tmp_path / "v.flac", "--decoder", "toy.decoder")
    assert result.exit_code == 0, result.output
    assert soundfile.info(tmp_path / "v.flac").frames == 18 * 320


def test_a_batch_file_writes_one_clip_per_line(run, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("first line\n\nsecond\n")
    result = run("generate", "--batch", lines, "-o", tmp_path / "clip_{n}.wav", "--seed", 5, "-q", *TOY)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("clip_*.wav")) == ["clip_1.wav", "clip_2.wav"]


def test_voices_list_and_show(run, prompts_dir, monkeypatch):
    monkeypatch.setenv("BARKKIT_VOICE_PATH", str(prompts_dir))
    shown = run("voices", "show", prompts_dir / "v2" / "en_speaker_1.npz")
    assert shown.exit_code == 0 and "coarse:   (2," in shown.output
    _one_error_line(run("voices", "show", "no/such_voice"), "unknown voice 'no/such_voice'")


def test_voices_show_says_what_a_partial_token_file_holds_and_lacks(run, tmp_path):
    import numpy as np

    codes_only = tmp_path / "codes.npz"  # what `voices make --codes-only` writes
    np.savez(codes_only, coarse_prompt=np.zeros((2, 30), np.int64), fine_prompt=np.zeros((8, 30), np.int64))
    shown = run("voices", "show", codes_only)
    assert shown.exit_code == 0, shown.output
    assert "not a whole voice: no semantic_prompt" in shown.output
    assert "coarse:   (2, 30)" in shown.output and "fine:     (8, 30)" in shown.output


def test_plugins_lists_what_each_plugin_provides(run):
    result = run("plugins")
    assert result.exit_code == 0
    assert any(line.split()[:2] == ["stage", "toy.semantic"] and "text -> semantic" in line for line in result.output.splitlines())
    assert "toy.decoder" in result.output and "fine -> audio" in result.output


def test_empty_text(run, tmp_path):
    _one_error_line(run("generate", "  ", "-o", tmp_path / "x.wav", *TOY), "text is empty")
    _one_error_line(run("generate", "-", "-o", tmp_path / "x.wav", *TOY, input=""), "text is empty")
    assert not list(tmp_path.iterdir())


def test_missing_input_file(run, tmp_path):
    _one_error_line(run("decode", tmp_path / "nope.npz", "-o", tmp_path / "x.wav"), "nope.npz: no such file")
    _one_error_line(run("coarse", tmp_path / "nope.npz", "-o", tmp_path / "y.npz"), "nope.npz: no such file")


def test_a_token_file_without_the_stages_input_names_the_command_that_writes_it(run, tmp_path):
    import numpy as np

    semantic_only = tmp_path / "s.npz"
    np.savez(semantic_only, semantic_prompt=np.arange(20))
    _one_error_line(run("decode", semantic_only, "-o", tmp_path / "x.wav"),
                    "s.npz: missing fine_prompt (it holds semantic_prompt); `barkkit fine` writes it")
    _one_error_line(run("fine", semantic_only, "-o", tmp_path / "y.npz"), "missing coarse_prompt", "`barkkit coarse`")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_unknown_stage_decoder_and_voice(run, tmp_path):
    out = tmp_path / "x.wav"
    _one_error_line(run("generate", "hi", "-o", out, *TOY[:-2], "--decoder", "nope"), "unknown decoder 'nope'", "toy.decoder")
    _one_error_line(run("generate", "hi", "-o", out, "--fine-stage", "my.fine", *TOY[:4]), "unknown stage 'my.fine'")
    _one_error_line(run("generate", "hi", "-o", out, "--voice", "v9/nobody", *TOY), "unknown voice 'v9/nobody'")
    _one_error_line(run("generate", "hi", "-o", out, "--voice", tmp_path / "gone.npz", *TOY), "gone.npz: no such file")
    assert not out.exists()


def test_unknown_option_and_bad_values(run, tmp_path):
    _one_error_line(run("generate", "hi", "-o", tmp_path / "x.wav", "--waveform-temp", "0.5", *TOY), "unknown option(s) waveform_temp")
    _one_error_line(run("generate", "hi", "-o", tmp_path / "x.wav", "--seed", "abc", *TOY), "'abc' is not a valid integer")
    _one_error_line(run("generate", "hi", "-o", tmp_path / "x.mp4", *TOY), "cannot write '.mp4'")
    _one_error_line(run("generate", "hi", *TOY), "Missing option '-o'")


def test_unwritable_output_fails_before_work_and_leaves_nothing(run, tmp_path):
    _one_error_line(run("generate", "hi", "-o", tmp_path / "no" / "dir" / "x.wav", *TOY), "does not exist")
    _one_error_line(run("semantic", "hi", "-o", tmp_path, "--stage", "toy.semantic"), "is a directory")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        import os

        if os.access(readonly, os.W_OK):  # root ignores permission bits
            pytest.skip("running as a user who can write anywhere")
        _one_error_line(run("generate", "hi", "-o", readonly / "x.wav", *TOY), "not writable")
    finally:
        readonly.chmod(0o700)


def test_a_failure_mid_run_leaves_no_partial_output(run, tmp_path, monkeypatch):
    def explode(self, tokens, *, progress=None):
        raise toy_plugin.np.linalg.LinAlgError("decoder blew up")

    monkeypatch.setattr(toy_plugin.ToyDecoder, "decode", explode)
    out = tmp_path / "x.wav"
    result = run("generate", "hi", "-o", out, "--save-tokens", tmp_path / "t.npz", *TOY)
    _one_error_line(result, "LinAlgError", "decoder blew up")
    assert list(tmp_path.iterdir()) == []


def test_help_everywhere_has_examples(run):
    for command in (["generate"], ["semantic"], ["coarse"], ["fine"], ["decode"], ["voices"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Example" in result.output, command


def test_a_device_this_machine_lacks_is_one_error_line(run, tmp_path):
    out = tmp_path / "out.wav"
    _one_error_line(run("generate", "hi", "-o", out, "--device", "gpu", *TOY), "unknown device 'gpu'", "use cpu")
    tokens = tmp_path / "t.npz"
    _one_error_line(run("semantic", "abc", "-o", tokens, "--stage", "toy.semantic", "--device", "cuda:99"), "cuda:99")
    assert not out.exists() and not tokens.exists()


def test_quiet_after_the_command_name_drops_the_detect_summary(run, tmp_path):
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, np.zeros(24_000, np.float32), 24_000)
    loud, quiet = run("detect", clip), run("detect", clip, "-q")
    assert loud.exit_code == quiet.exit_code == 0
    assert "1 file(s)" in loud.stderr and quiet.stderr == ""
    assert quiet.stdout == loud.stdout


def test_ctrl_c_leaves_no_output_and_exits_130(tmp_path):
    """A real interrupt (SIGINT) in the middle of a run: one line, the shell's status for it, no file."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "out.wav"
    script = ("import time, barkkit.cli as c\n"
              "from tests.core import toy_plugin\n"
              "def run(*args, **kwargs):\n"
              "    print('running', flush=True)\n"
              "    time.sleep(60)\n"
              "toy_plugin.ToySemantic.run = run\n"
              "c.cli.use_plugins(c.load_plugins(extra=[toy_plugin]))\n"
              f"c.cli.main(['generate', 'hi', '-o', {str(out)!r}, *{TOY!r}])\n")
    # start as from a terminal, SIGINT at its default: a shell starting this suite in the background (`... &`)
    # hands every child an ignored SIGINT, which Python then keeps ignoring
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout.readline() == "running\n"  # the stage runs: interrupt it there
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and stderr.strip().splitlines() == ["Error: interrupted"], stderr
    assert list(tmp_path.iterdir()) == []


def test_voices_list_says_why_the_hub_presets_are_missing_offline(run):
    result = run("voices", "list")
    assert result.exit_code == 0, result.output
    assert "# hub:suno/bark (bark): unavailable: the voice list from hub suno/bark is not in the local cache" in result.stdout
