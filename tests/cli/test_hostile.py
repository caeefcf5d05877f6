"""Each hostile input of issue 18, through the command line: what is refused, what the message says, what is
left on disk. Most run the toy plugin's stages (no weights); the ones about Bark's own files run tiny models."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from barkkit import load_plugins
from barkkit.cli import cli
from barkkit.files import TEMP_MARK
from tests.core import toy_plugin

TOY = ["--semantic-stage", "toy.semantic", "--coarse-stage", "toy.coarse", "--fine-stage", "toy.fine", "--decoder", "toy.decoder"]


@pytest.fixture
def run():
    cli.use_plugins(load_plugins(extra=[toy_plugin]))  # the built-in plugins and the toy one
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli, [str(a) for a in args], input=input)

    yield invoke
    cli.use_plugins(None)


@pytest.fixture(scope="module")
def bark_folder(tmp_path_factory) -> Path:
    """Tiny random Bark checkpoints in Suno's format with the real vocabulary (or a small one); no codec."""
    from tests.plugins.barkkit_bark.conftest import tiny_models, write_suno_folder

    return write_suno_folder(tmp_path_factory.mktemp("bark"), tiny_models())


def error_line(result, *needles):
    """The one line a failure prints, checked for ``needles``."""
    assert result.exit_code in (1, 2), result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "unexpected" not in lines[0], result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _tokens(path, **arrays):
    np.savez(path, **arrays)
    return path


# --- outputs ------------------------------------------------------------------------------------------------------
def test_an_output_that_is_a_device_or_fifo_is_refused_and_not_replaced(run, tmp_path):
    os.mkfifo(tmp_path / "fifo.wav")
    nodes = {"fifo.wav": "a FIFO (named pipe)"}
    try:  # as root: a node like /dev/full, which `barkkit semantic -o /dev/full` used to replace
        os.mknod(tmp_path / "full.npz", 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        nodes["full.npz"] = "a character device"
    except PermissionError:
        pass
    for name, kind in nodes.items():
        command = ["generate", "hi"] if name.endswith(".wav") else ["semantic", "hi", "--stage", "toy.semantic"]
        result = run(*command, "-o", tmp_path / name, *(TOY if name.endswith(".wav") else []))
        error_line(result, f"{name}: is {kind}; barkkit writes only regular files")
        assert not stat.S_ISREG(os.lstat(tmp_path / name).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(nodes)


def test_a_link_output_writes_its_target_and_help_says_so(run, tmp_path):
    (tmp_path / "clips").mkdir()
    target = tmp_path / "clips" / "take1.wav"
    target.write_bytes(b"old")
    (tmp_path / "latest.wav").symlink_to(target)
    result = run("generate", "hi", "-o", tmp_path / "latest.wav", "--seed", 1, *TOY)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "latest.wav").is_symlink() and soundfile.info(target).frames > 0
    for command in (["generate"], ["semantic"], ["coarse"], ["fine"], ["decode"], ["voices", "make"]):
        assert "A link is written through to its target" in " ".join(run(*command, "--help").output.split()), command


def test_two_outputs_naming_one_file_are_refused_before_any_work(run, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a stage ran")

    monkeypatch.setattr(toy_plugin.ToySemantic, "run", never)
    error_line(run("generate", "hi", "-o", tmp_path / "same.wav", "--save-tokens", tmp_path / "same.wav", *TOY),
               "-o and --save-tokens name the same file")
    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo\n")
    error_line(run("generate", "--batch", lines, "-o", tmp_path / "x.wav", "--save-tokens", tmp_path / "x.wav", *TOY),
               "-o (line 1) and --save-tokens (line 1) name the same file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.txt"]


def test_an_output_that_is_an_input_of_another_kind_is_refused_before_any_work(run, tmp_path, bark_folder):
    voice = _tokens(tmp_path / "voice.npz", semantic_prompt=np.arange(20), coarse_prompt=np.zeros((2, 30), np.int64),
                    fine_prompt=np.zeros((8, 30), np.int64))
    before = voice.read_bytes()
    error_line(run("semantic", "hi", "-o", voice, "--voice", voice, "--stage", "toy.semantic"),
               f"-o {voice} is the --voice file this command reads")
    error_line(run("semantic", "hi", "-o", bark_folder / "vocab.txt", "-m", bark_folder),
               "is the model file vocab.txt this command reads")
    spec = tmp_path / "spec.toml"
    spec.write_text("[pipeline]\nsemantic = 'toy.semantic'\n")
    error_line(run("semantic", "hi", "-o", spec, "--spec", spec), "is the --spec file this command reads")
    assert voice.read_bytes() == before and spec.read_text().startswith("[pipeline]")
    # --save-tokens writes a whole voice, read before anything is written: it may replace the voice it continues
    result = run("generate", "hi", "-o", tmp_path / "a.wav", "--voice", voice, "--save-tokens", voice, "--seed", 2, *TOY)
    assert result.exit_code == 0, result.output


def test_a_stage_writing_its_own_input_drops_the_arrays_it_made_stale(run, tmp_path):
    tokens = tmp_path / "same.npz"
    assert run("generate", "abc", "-o", tmp_path / "a.wav", "--save-tokens", tokens, "--seed", 1, *TOY).exit_code == 0
    with np.load(tokens) as data:
        assert sorted(data.files) == ["coarse_prompt", "fine_prompt", "semantic_prompt"]
        semantic = data["semantic_prompt"]
    result = run("coarse", tokens, "-o", tokens, "--stage", "toy.coarse", "--seed", 9)
    assert result.exit_code == 0, result.output
    assert f"left out fine_prompt of {tokens}, made from the old tokens" in result.stderr
    with np.load(tokens) as data:  # a later `decode` cannot play the old fine tokens
        assert sorted(data.files) == ["coarse_prompt", "semantic_prompt"]
        assert np.array_equal(data["semantic_prompt"], semantic)
    error_line(run("decode", tokens, "-o", tmp_path / "b.wav", "--decoder", "toy.decoder"), "missing fine_prompt")


def test_sigterm_while_writing_leaves_no_temporary_file_and_exits_143(tmp_path):
    out = tmp_path / "tokens.npz"
    script = ("import time, numpy\n"
              "import barkkit.cli as c\n"
              "from tests.core import toy_plugin\n"
              "def slow_savez(file, **arrays):\n"
              "    open(file, 'wb').write(b'x' * 1000)\n"
              "    print('writing', flush=True)\n"
              "    time.sleep(60)\n"
              "numpy.savez = slow_savez\n"
              "c.cli.use_plugins(c.load_plugins(extra=[toy_plugin]))\n"
              f"c.cli.main(['semantic', 'hi', '-o', {str(out)!r}, '--stage', 'toy.semantic'])\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "writing\n"
    assert any(TEMP_MARK in p.name for p in tmp_path.iterdir())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143 and stderr.strip().splitlines() == ["Error: terminated by SIGTERM"], stderr
    assert list(tmp_path.iterdir()) == []


# --- token files and voices ---------------------------------------------------------------------------------------
def test_voices_show_refuses_a_compressed_bomb_cheaply(run, tmp_path):
    from tests.core.test_token_headers import _bomb

    bomb = _bomb(tmp_path / "bomb.npz", (8, 10_000_000), extra={"semantic_prompt": np.zeros(10, np.int64),
                                                               "coarse_prompt": np.zeros((2, 10), np.int64)})
    start = time.perf_counter()
    error_line(run("voices", "show", bomb), "fine_prompt has shape (8, 10000000), more than the 270,000 steps")
    assert time.perf_counter() - start < 2.0


def test_decode_of_zero_frames_and_empty_inputs_say_so(run, tmp_path):
    empty = _tokens(tmp_path / "empty.npz", semantic_prompt=np.zeros(0, np.int64),
                    coarse_prompt=np.zeros((2, 0), np.int64), fine_prompt=np.zeros((8, 0), np.int64))
    error_line(run("decode", empty, "-o", tmp_path / "x.wav", "--decoder", "toy.decoder"),
               "fine_prompt is empty (shape (8, 0)): there is nothing to go on from")
    line = error_line(run("coarse", empty, "-o", tmp_path / "y.npz", "--stage", "toy.coarse"), "semantic_prompt is empty")
    assert "seed" not in line
    (tmp_path / "zero.npz").write_bytes(b"")
    error_line(run("coarse", tmp_path / "zero.npz", "-o", tmp_path / "y.npz"), "zero.npz: is empty (0 bytes)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.npz", "zero.npz"]


def test_inputs_that_exist_but_are_not_files_are_not_called_missing(run, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir.npz").mkdir()
    error_line(run("decode", "/dev/zero", "-o", tmp_path / "x.wav"), "/dev/zero: is a character device, not a token file")
    error_line(run("coarse", tmp_path / "fifo", "-o", tmp_path / "x.npz"), "fifo: is a FIFO (named pipe), not a token file")
    error_line(run("decode", tmp_path / "dir.npz", "-o", tmp_path / "x.wav"), "dir.npz: is a folder, not a token file")
    error_line(run("generate", "hi", "-o", tmp_path / "x.wav", "--voice", tmp_path / "fifo", *TOY), "is a FIFO")
    error_line(run("voices", "make", tmp_path / "fifo", "-o", tmp_path / "v.npz", "--codes-only"), "is a FIFO")


# --- text and batch files -----------------------------------------------------------------------------------------
def test_a_binary_or_non_utf8_batch_file_is_named_with_its_fault(run, tmp_path):
    binary = tmp_path / "lines.bin"
    binary.write_bytes(bytes(range(256)))
    error_line(run("generate", "--batch", binary, "-o", tmp_path / "c.wav", *TOY), "lines.bin: holds NUL bytes: a binary file")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"fine\nalso fine\ncaf\xe9\n")
    error_line(run("generate", "--batch", latin, "-o", tmp_path / "c.wav", *TOY), "latin.txt: line 3 is not UTF-8 text (byte 0xe9)")
    error_line(run("generate", "-", "-o", tmp_path / "c.wav", *TOY, input=b"\xff\xfe"), "standard input is not UTF-8 text")


def test_a_too_long_line_of_a_batch_file_is_reported_with_its_line_number(run, tmp_path, bark_folder):
    lines = tmp_path / "lines.txt"
    lines.write_text("A short line.\n\n" + "word " * 300 + "\nAnother.\n")
    error_line(run("generate", "--batch", lines, "-o", tmp_path / "c.wav", "-m", bark_folder, "--decoder", "toy.decoder"),
               "lines.txt: line 3: sentence 1 of 1 is 300 tokens long")
    lines.write_text("Fine.\n\U0001F600 \U0001F389\n")
    error_line(run("generate", "--batch", lines, "-o", tmp_path / "c.wav", "-m", bark_folder, "--decoder", "toy.decoder"),
               "lines.txt: line 2: Bark's tokenizer knows nothing in the text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.txt"]


def test_unknown_token_only_text_and_an_empty_vocabulary_are_errors(run, tmp_path, bark_folder):
    error_line(run("semantic", "\U0001F600\U0001F389", "-o", tmp_path / "t.npz", "-m", bark_folder),
               "Bark's tokenizer knows nothing in the text")
    folder = tmp_path / "empty_vocab"
    folder.mkdir()
    for name in ("text.pt", "coarse.pt", "fine.pt"):
        (folder / name).symlink_to(bark_folder / name)
    (folder / "vocab.txt").write_text("")
    error_line(run("semantic", "Hello there.", "-o", tmp_path / "t.npz", "-m", folder), "vocab.txt: the vocabulary is empty")
    assert not (tmp_path / "t.npz").exists()


# --- weights, plugins, options -----------------------------------------------------------------------------------
def test_swapped_checkpoints_name_the_file(run, tmp_path, bark_folder):
    folder = tmp_path / "swapped"
    folder.mkdir()
    for name, source in {"text.pt": "coarse.pt", "coarse.pt": "text.pt", "fine.pt": "fine.pt", "vocab.txt": "vocab.txt"}.items():
        (folder / name).symlink_to(bark_folder / source)
    tokens = _tokens(tmp_path / "t.npz", semantic_prompt=np.arange(30))
    error_line(run("coarse", tokens, "-o", tmp_path / "c.npz", "-m", folder), "swapped/coarse.pt: vocabularies of 129,600 in")
    error_line(run("semantic", "Hi.", "-o", tmp_path / "s.npz", "-m", folder), "swapped/text.pt", "Bark's coarse model")


def test_barkkit_plugins_naming_nothing_installed_says_which(run, monkeypatch):
    monkeypatch.setenv("BARKKIT_PLUGINS", "nonexistent")
    cli.use_plugins(None)
    error_line(run("plugins"), "BARKKIT_PLUGINS names no installed plugin called nonexistent; installed plugins:")


def test_a_negative_seed_is_refused_like_a_too_large_one(run, tmp_path):
    low = error_line(run("generate", "hi", "-o", tmp_path / "x.wav", "--seed", -5, *TOY), "got -5")
    high = error_line(run("generate", "hi", "-o", tmp_path / "x.wav", "--seed", 2**64, *TOY), f"got {2**64}")
    assert low.split(", got")[0] == high.split(", got")[0]
    error_line(run("voices", "make", tmp_path / "a.wav", "-o", tmp_path / "v.npz", "--seed", -1), "got -1")
    assert list(tmp_path.iterdir()) == []


def test_max_gen_duration_help_says_the_cap_is_per_sentence(run):
    for command in ("generate", "semantic"):
        text = " ".join(run(command, "--help").output.split())
        assert "Cap in seconds on each semantic generation" in text and "each sentence capped" in text
