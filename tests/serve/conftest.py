"""A real ``barkkit serve`` app on a free loopback port, over tiny random Bark weights in Suno's file format.

The server runs uvicorn in a thread of the test process (the ``cli`` tests start ``barkkit serve`` itself as a
process); clients talk to it over HTTP exactly as they would to a deployed one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from barkkit import load_pipeline, load_plugins
from barkkit_encodec.checkpoints import write_encodec_checkpoint
from tests.plugins.barkkit_bark.conftest import tiny_models, write_suno_folder
from tests.serve import recording_plugin

VOICES = ("test/alpha", "test/beta")
FAST = {"max_gen_duration_s": 0.6}  # every request's options: short clips keep the suite quick


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Suno's checkpoint names, the vocabulary and a random EnCodec of the real architecture: a folder users have."""
    folder = write_suno_folder(tmp_path_factory.mktemp("bark-tiny"), tiny_models(seed=3))
    write_encodec_checkpoint(folder)
    return folder


@pytest.fixture(scope="session")
def voice_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Preset voices for BARKKIT_VOICE_PATH: random token histories of Bark's shapes."""
    folder = tmp_path_factory.mktemp("voices")
    rng = np.random.default_rng(7)
    for name in VOICES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{name}.npz", semantic_prompt=rng.integers(0, 10_000, 120),
                 coarse_prompt=rng.integers(0, 1024, (2, 180)), fine_prompt=rng.integers(0, 1024, (8, 180)))
    return folder


@pytest.fixture(scope="session")
def serve_plugins(voice_folder: Path) -> Any:
    """The installed plugins plus an audio-to-semantic stage; presets from ``voice_folder``."""
    saved = os.environ.get("BARKKIT_VOICE_PATH")
    os.environ["BARKKIT_VOICE_PATH"] = str(voice_folder)  # the folder source reads it when registered
    try:
        plugins = load_plugins(extra=[recording_plugin])
        _ = plugins.voice_sources  # register now, while the variable is set
    finally:
        if saved is None:
            os.environ.pop("BARKKIT_VOICE_PATH", None)
        else:
            os.environ["BARKKIT_VOICE_PATH"] = saved
    return plugins


@pytest.fixture(scope="session")
def fast_pipeline(model_folder: Path, serve_plugins: Any) -> Any:
    return load_pipeline(model_folder, mode="fast", plugins=serve_plugins)


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
        self.app = app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def make_server(pipeline: Any, tmp_path: Path, model_folder: Path, serve_plugins: Any, **settings: Any) -> ServerThread:
    from barkkit.serve import PipelineHolder, ServeSettings, create_app

    settings = ServeSettings(model=str(model_folder), mode="fast", data_dir=tmp_path / "data",
                             semantic_stage=recording_plugin.LoudnessSemantic.name, **settings)
    holder = PipelineHolder.from_pipeline(
        pipeline, mode="fast", model=str(model_folder),
        loader=lambda mode: load_pipeline(model_folder, mode=mode, plugins=serve_plugins))
    return ServerThread(create_app(holder, settings))


@pytest.fixture(scope="session")
def server(fast_pipeline: Any, tmp_path_factory: pytest.TempPathFactory, model_folder: Path, serve_plugins: Any) -> Iterator[ServerThread]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared 2-core machine
    with make_server(fast_pipeline, tmp_path_factory.mktemp("serve"), model_folder, serve_plugins,
                     max_batch=8, max_wait_ms=30, max_upload_mb=1) as running:
        yield running
    torch.set_num_threads(threads)


@pytest.fixture
def client(server: ServerThread) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
