"""Connecting to a Ray cluster, and sizing an actor pool to it."""

from __future__ import annotations

import logging
import os
from typing import Any

from barkkit.errors import BarkkitError

__all__ = ["import_ray", "connect", "default_actors", "WORKER_ENV_PREFIXES"]

# Settings workers need to find what the driver finds (voices, plugins, the hub cache): Ray's workers start from
# the raylet's environment, not the driver's, so these travel with the job.
WORKER_ENV_PREFIXES = ("BARKKIT_", "HF_", "HUGGINGFACE_", "OMP_WAIT_POLICY")


def import_ray() -> Any:
    """``ray`` with Ray Data, or one error line saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BarkkitError("--ray needs Ray: pip install 'barkkit[ray]' (ray[data,serve])") from None
    return ray


def _worker_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith(WORKER_ENV_PREFIXES)}


def connect(address: str) -> Any:
    """Join the cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``) or start one here (``local``).

    Returns the ``ray`` module. A driver already connected (a test, a notebook) is left as it is.
    """
    # Ray's C++ core logs warnings a command line should not show (no route to 8.8.8.8 on a private network,
    # constructor arguments held in the object store); its errors still reach the job as exceptions.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray = import_ray()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its "execution finished" notes and the like
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # barkkit draws its own bar of rows done, skipped and failed
    context.print_on_execution_start = False
    if ray.is_initialized():
        return ray
    target = None if address == "local" else address
    options: dict[str, Any] = {"runtime_env": {"env_vars": _worker_env()}, "logging_level": logging.WARNING,
                               "log_to_driver": False, "configure_logging": True}
    if target is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=target, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BarkkitError(f"cannot reach a Ray cluster at '{address}' ({first}); start one with `ray start --head`, "
                           "or give --ray local") from None
    return ray


def default_actors(ray: Any, threads: int) -> int:
    """One actor per ``threads`` CPUs of each live node (at least one node must have that many)."""
    per_node = [int(node.get("Resources", {}).get("CPU", 0)) // threads for node in ray.nodes() if node.get("Alive")]
    actors = sum(per_node)
    if actors < 1:
        raise BarkkitError(f"no node of the cluster has {threads} CPU(s) for an actor; give fewer --threads")
    return actors


def first_barkkit_error(exc: BaseException) -> BarkkitError | None:
    """The ``BarkkitError`` inside a Ray error (a task's or an actor's constructor's), if there is one."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BarkkitError):
            return current
        stack.extend([getattr(current, "cause", None), current.__cause__, current.__context__])
    return None
