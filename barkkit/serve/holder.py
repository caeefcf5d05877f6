"""The server's models: one pipeline per mode, loaded in the background, so ``/health`` can answer meanwhile.

A ``PipelineHolder`` is what ``create_app`` serves. Build it from settings (``PipelineHolder.from_settings``: the
``--model``/``--spec`` of ``barkkit serve``) or around a pipeline already built (``PipelineHolder.from_pipeline``,
for tests and for wrappers such as a Ray Serve replica that loads its own). The other mode's pipeline, when a
request asks for it, is loaded once on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from barkkit.errors import PipelineError, WeightsError
from barkkit.pipeline import MODES, Pipeline, read_spec_file
from barkkit.plugins import Plugins, load_plugins
from barkkit.serve.settings import ServeSettings

__all__ = ["PipelineHolder"]

Loader = Callable[[str], Pipeline]


class PipelineHolder:
    """Pipelines by mode, and whether the default one is loaded (``ready``) or failed (``error``).

    Args:
        loader: builds the pipeline of a mode (``"exact"`` or ``"fast"``).
        mode: the default mode, loaded by ``start_loading``.
        model: what ``model`` requests are told, and where voice making finds codec weights.
        plugins: the plugins that resolve voices, detectors and voice-making stages.
    """

    def __init__(self, loader: Loader, *, mode: str = "exact", model: str | None = None,
                 plugins: Plugins | None = None) -> None:
        self.loader = loader
        self.mode = mode
        self.model = model
        self.plugins = plugins or load_plugins()
        self._pipelines: dict[str, Pipeline] = {}
        # three locks: the event loop takes only _start_lock (briefly), never one held through a load
        self._lock = threading.Lock()  # loading pipelines
        self._start_lock = threading.Lock()
        self._detector_lock = threading.Lock()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._detector: Any = None
        self._loading: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: ServeSettings, *, plugins: Plugins | None = None) -> "PipelineHolder":
        spec: dict[str, Any] = read_spec_file(Path(settings.spec)) if settings.spec else {}
        if settings.model:
            spec["model"] = settings.model
        spec.setdefault("device", settings.device)
        spec.setdefault("decoder", "encodec")  # a speech server needs audio: fail at start, not at the first request
        plugins = plugins or load_plugins()

        def load(mode: str) -> Pipeline:
            return Pipeline.from_spec({**spec, "mode": mode}, plugins=plugins)

        mode = settings.mode or spec.get("mode", "exact")
        return cls(load, mode=mode, model=spec.get("model"), plugins=plugins)

    @classmethod
    def from_pipeline(cls, pipeline: Pipeline, *, mode: str = "exact", model: str | None = None,
                      loader: Loader | None = None) -> "PipelineHolder":
        """A holder around a loaded pipeline of ``mode``; ``loader`` builds the other mode (None: it is refused)."""

        def refuse(other: str) -> Pipeline:
            raise PipelineError(f"this server serves mode '{mode}' only; start it with --mode {other} for that")

        holder = cls(loader or refuse, mode=mode, model=model, plugins=pipeline.plugins)
        holder._pipelines[mode] = pipeline
        holder.ready.set()
        return holder

    def start_loading(self) -> threading.Thread | None:
        """Load the default mode's pipeline on a thread (``ready`` is set when done, ``error`` on failure).

        Called by the app's lifespan, and again by ``/health`` and the first requests (a host that runs no lifespan
        still loads); only the first call starts a thread.
        """
        def load() -> None:
            try:
                self.get(self.mode)
            except BaseException as exc:  # reported by /health and by the serve command
                self.error = exc
            finally:
                self.ready.set()

        with self._start_lock:
            if self.ready.is_set() or self._loading is not None:
                return None
            self._loading = threading.Thread(target=load, name="barkkit-load", daemon=True)
        self._loading.start()
        return self._loading

    @property
    def loaded(self) -> bool:
        return self.ready.is_set() and self.error is None

    def get(self, mode: str | None = None) -> Pipeline:
        """The pipeline of ``mode`` (default: the server's), loading it on first use."""
        mode = mode or self.mode
        if mode not in MODES:
            raise PipelineError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
        with self._lock:
            pipeline = self._pipelines.get(mode)
            if pipeline is None:
                pipeline = self.loader(mode)
                if pipeline.decoder is None:
                    raise WeightsError("the pipeline has no audio decoder, so it cannot speak; give a model with codec "
                                       "weights (encodec_24khz-d7cc33bc.th) or name a decoder in the spec")
                self._pipelines[mode] = pipeline
        return pipeline

    def detector(self, name: str = "bark-detector") -> Any:
        """The detector (loaded once): the registered ``name``, with its bundled model."""
        with self._detector_lock:
            if self._detector is None:
                self._detector = self.plugins.detectors.get(name).load()
        return self._detector
