"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports huggingface_hub (it reads these once): no test may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Before torch loads OpenMP: idle threads sleep instead of spinning, which otherwise starves the other process
# (pytest-xdist workers, subprocess CLI tests) on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Kernel choices measured at load time (barkkit_bark.kernels.measure) go to a cache of this run, not the user's;
# the process that made it (pytest-xdist's workers inherit the variable) removes it at exit.
if "BARKKIT_KERNEL_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _kernel_cache_dir = tempfile.mkdtemp(prefix="barkkit-kernels-")
    os.environ["BARKKIT_KERNEL_CACHE"] = os.path.join(_kernel_cache_dir, "kernels.json")
    atexit.register(shutil.rmtree, _kernel_cache_dir, ignore_errors=True)

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PROMPTS_DIR = SHARED_DATA / "bark_prompts"
VOCAB_FILE = SHARED_DATA / "vocab" / "bert-base-multilingual-cased.txt"
DETECTOR_DATA = SHARED_DATA / "detector"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def prompts_dir() -> Path:
    """Bark's 271 real voice prompts (../shared/data/bark_prompts)."""
    return _require(PROMPTS_DIR)


@pytest.fixture(scope="session")
def vocab_file() -> Path:
    """The real bert-base-multilingual-cased WordPiece vocabulary."""
    return _require(VOCAB_FILE)


@pytest.fixture(scope="session")
def detector_data() -> Path:
    return _require(DETECTOR_DATA)


@pytest.fixture(autouse=True)
def hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test gets its own empty huggingface_hub cache, offline; fill it with ``tests.hub_cache``.

    Subprocesses inherit it through HF_HUB_CACHE/HF_HUB_OFFLINE. Plugin selection starts from the defaults.
    """
    import huggingface_hub.constants as hub_constants

    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(cache / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for variable in ("BARKKIT_PLUGINS", "BARKKIT_BLOCK_PLUGINS", "BARKKIT_VOICE_PATH"):
        monkeypatch.delenv(variable, raising=False)
    return cache
