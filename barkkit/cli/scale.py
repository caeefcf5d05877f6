"""The ``--ray`` options of ``barkkit generate`` and ``barkkit detect``, and the glue to ``barkkit.scale``'s jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from barkkit.errors import BarkkitError

__all__ = ["threads_option", "ray_option", "generate_scale_options", "set_threads", "check_scale_options"]

threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="Torch threads (with --ray: per actor, which reserves as many CPUs).  [default: torch's; with --ray: 1]")
ray_option = click.option(
    "--ray", "ray_address", default=None, metavar="ADDRESS",
    help="Run on a Ray cluster: auto, host:port, or local (starts one here). Needs barkkit[ray].")


def generate_scale_options(function: Any) -> Any:
    """``--ray``, ``--actors``, ``--threads``, ``--manifest``, ``--rows-per-call`` for ``generate --batch``."""
    for option in reversed((
        ray_option,
        click.option("--actors", type=click.IntRange(min=1), default=None,
                     help="With --ray: actors, each holding one loaded pipeline.  [default: a node's CPUs / --threads, summed]"),
        threads_option,
        click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="With --ray: write one JSON line per row (n, text, seed, voice, path, status, node_id, seconds)."),
        click.option("--rows-per-call", type=click.IntRange(min=1), default=1, show_default=True,
                     help="With --ray: rows an actor generates together (a batch); more is faster in fast mode."),
    )):
        function = option(function)
    return function


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch threads in this process (left as torch set it when None)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def check_scale_options(*, batch: bool, address: str | None, actors: int | None, manifest: Path | None,
                        rows_per_call: int, save_tokens: Path | None) -> None:
    """Options that only make sense on a cluster, refused (one line) without ``--ray``, and the reverse."""
    if address is None:
        given = [name for name, value in (("--actors", actors), ("--manifest", manifest)) if value is not None]
        if rows_per_call != 1:
            given.append("--rows-per-call")
        if given:
            raise BarkkitError(f"{', '.join(given)} only work(s) with --ray ADDRESS (a Ray cluster job)")
        return
    if not batch:
        raise BarkkitError("--ray runs a batch: give --batch FILE (text lines or JSONL)")
    if save_tokens is not None:
        raise BarkkitError("--save-tokens is not available with --ray; run the batch without --ray to keep tokens")
    if manifest is not None:
        from barkkit.files import check_writable

        check_writable(manifest)


def report_generation(results: list[dict[str, Any]], *, quiet: bool) -> int:
    """Print failed rows (always) and a summary (unless quiet) on stderr; the exit status: 1 if a row failed."""
    failed = [result for result in results if result["status"] == "failed"]
    for result in failed:
        click.echo(f"failed: row {result['n']} ({result['path']}): {result['error']}", err=True)
    if not quiet:
        counts = {status: sum(r["status"] == status for r in results) for status in ("done", "skipped", "failed")}
        click.echo(f"{len(results)} row(s): {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed",
                   err=True)
    return 1 if failed else 0
