"""``barkkit serve --ray``: the speech server as a Ray Serve deployment, N replicas behind Serve's HTTP proxy.

Each replica builds the very app ``barkkit serve`` runs (``barkkit.serve.create_app`` around its own
``PipelineHolder``), so routes and responses are the same; Ray Serve's proxy, on the head node at ``--host`` and
``--port``, spreads requests over the replicas, and restarts a replica whose process dies. Each replica reserves
``threads`` CPUs and uses as many torch threads.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from barkkit.scale.cluster import connect

__all__ = ["build_app", "deploy", "serve_until_stopped", "APP_NAME"]

APP_NAME = "barkkit"


def build_app(settings: Any, threads: int) -> Any:
    """On a replica: the FastAPI app of ``barkkit serve`` for ``settings``, its models loading in the background."""
    import torch

    from barkkit.serve import PipelineHolder, create_app

    torch.set_num_threads(threads)
    return create_app(PipelineHolder.from_settings(settings), settings)


def _builder(settings: Any, threads: int) -> Callable[[], Any]:
    def build() -> Any:  # a plain function: Ray Serve calls it on each replica as it starts
        return build_app(settings, threads)

    return build


def _absolute(settings: Any) -> Any:
    """Settings whose local paths (model folder, spec, data folder) name the same files from any replica's folder."""
    def local(value: Any) -> Any:
        return str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value

    return dataclasses.replace(settings, model=local(settings.model), spec=local(settings.spec),
                               data_dir=Path(settings.data_dir).expanduser().resolve())


def deploy(settings: Any, *, address: str, replicas: int, threads: int = 1) -> Any:
    """Deploy ``replicas`` copies of the server on the cluster at ``address``; returns Ray Serve's handle.

    The proxy listens on the head node only (``HeadOnly``): one address for clients, and nodes sharing a host (a
    test cluster) do not fight over the port.
    """
    connect(address)
    from ray import serve

    settings = _absolute(settings)

    serve.start(proxy_location="HeadOnly", http_options={"host": settings.host, "port": settings.port})
    server = serve.ingress(_builder(settings, threads))(type("BarkkitServer", (), {}))
    deployment = serve.deployment(name="BarkkitServer", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": threads})(server)
    return serve.run(deployment.bind(), name=APP_NAME, route_prefix="/", blocking=False)


def serve_until_stopped(settings: Any, *, address: str, replicas: int, threads: int = 1,
                        announce: Callable[[str], None] = print) -> None:
    """Deploy, say where, and keep the deployment until SIGINT or SIGTERM, then remove it from the cluster."""
    from ray import serve

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deploy(settings, address=address, replicas=replicas, threads=threads)
        announce(f"serving http://{settings.host}:{settings.port} with {replicas} replica(s) on Ray; Ctrl-C stops")
        stop.wait()
    finally:
        serve.delete(APP_NAME)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
