"""The example plugin, installed as a user would install it and found through its entry point."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from barkkit import Voice

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parrot_site(tmp_path_factory):
    """pip-install examples/barkkit_parrot into a folder of its own (no network, no dependencies)."""
    target = tmp_path_factory.mktemp("parrot-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(REPO / "examples" / "barkkit_parrot")],
        check=True, capture_output=True,
    )
    return target


def _barkkit(site, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "barkkit", *map(str, args)], env=env, capture_output=True, text=True)


def test_the_installed_plugin_is_listed(parrot_site):
    result = _barkkit(parrot_site, "plugins")
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:2] == ["stage", "parrot.semantic"] and line.split()[-1] == "parrot" for line in result.stdout.splitlines())


def test_it_swaps_the_semantic_stage_on_the_command_line(parrot_site, prompts_dir, tmp_path):
    voice_file = prompts_dir / "v2" / "en_speaker_6.npz"
    out = tmp_path / "tokens.npz"
    result = _barkkit(parrot_site, "semantic", "twelve chars", "--stage", "parrot.semantic", "--voice", voice_file, "-o", out, "--seed", 1)
    assert result.returncode == 0, result.stderr
    tokens = np.load(out)["semantic_prompt"]
    voice = np.asarray(Voice.from_npz(voice_file).semantic)
    assert len(tokens) == 48 and set(tokens.tolist()) <= set(voice.tolist())
    without_voice = _barkkit(parrot_site, "semantic", "hi", "--stage", "parrot.semantic", "-o", tmp_path / "x.npz")
    assert without_voice.returncode == 1 and without_voice.stderr.strip() == "Error: parrot.semantic repeats a voice's tokens: give a voice with --voice"
    assert not (tmp_path / "x.npz").exists()


def test_blocking_the_plugin_by_name(parrot_site, monkeypatch):
    monkeypatch.setenv("BARKKIT_BLOCK_PLUGINS", "parrot")
    result = _barkkit(parrot_site, "plugins")
    assert result.returncode == 0 and "parrot.semantic" not in result.stdout
