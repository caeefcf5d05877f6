"""What a ``barkkit serve`` process is told on its command line: one frozen dataclass the app reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    """Settings of the speech server (the ``barkkit serve`` options; see its ``--help``).

    ``model``, ``mode``, ``spec`` and ``device`` say what to load (``load_pipeline`` / ``Pipeline.from_spec``);
    the rest bound what a request may ask and how requests are batched.
    """

    model: str | None = None
    mode: str | None = None  # None: the spec's mode, else "exact"
    spec: str | None = None
    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 8
    max_wait_ms: float = 50.0
    max_queue: int = 64
    max_input_chars: int = 4096
    max_upload_mb: float = 25.0
    data_dir: Path = Path("barkkit-data")
    # voice making (POST /v1/voices), as `barkkit voices make` takes them: the audio-to-semantic stage (None: the
    # only one installed) and hubert.semantic's weights
    semantic_stage: str | None = None
    hubert: str | None = None
    quantizer: str | None = None
    shutdown_timeout_s: float = 30.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def voices_dir(self) -> Path:
        """Where uploaded voices live: ``<data_dir>/voices/<id>.npz``."""
        return Path(self.data_dir) / "voices"
