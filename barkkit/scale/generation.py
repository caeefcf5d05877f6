"""Batch generation as a Ray Data job: rows to an actor pool, each actor holding one loaded ``Pipeline``.

Every row is generated with its own seed and voice through ``Pipeline.generate_batch`` (whose rows equal one-row
runs token for token), so the clips are the local ``--batch``'s whatever actor, node or batch a row lands in.
The decoder's float sums depend on the number of torch threads, so byte-equal audio needs the same ``--threads``
on both sides (tokens are equal regardless).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from barkkit.errors import BarkkitError
from barkkit.scale.cluster import connect, default_actors
from barkkit.scale.outputs import is_complete_audio
from barkkit.scale.pool import JsonRowsWorker, one_line, run_pool
from barkkit.scale.report import RowProgress, write_manifest
from barkkit.scale.rows import BatchRow

if TYPE_CHECKING:
    from barkkit.audio import PeakPolicy

__all__ = ["make_clips", "GenerationWorker", "run_generation_job"]


def _result(row: BatchRow, status: str, *, seconds: float = 0.0, node_id: str | None = None,
            error: str | None = None) -> dict[str, Any]:
    result = {**row.as_dict(), "status": status, "node_id": node_id, "seconds": round(seconds, 3)}
    if error is not None:
        result["error"] = error
    return result


def make_clips(pipeline: Any, rows: Sequence[BatchRow], options: dict[str, Any], *, pcm16: bool = False,
               peak: PeakPolicy = "scale", node_id: str | None = None) -> list[dict[str, Any]]:
    """Generate ``rows`` together and write each clip atomically; one result per row, ``done`` or ``failed``.

    A row the library refuses (empty text, unknown voice or option) fails alone: the batch is then made again
    row by row, so the library's own message names what was wrong with each.
    """
    from barkkit.audio import save_audio

    start = time.perf_counter()
    try:
        generations = pipeline.generate_batch([row.text for row in rows], voices=[row.voice for row in rows],
                                              seeds=[row.seed for row in rows], **options)
    except Exception as exc:
        if len(rows) > 1:
            return [result for row in rows for result in make_clips(pipeline, [row], options, pcm16=pcm16, peak=peak,
                                                                   node_id=node_id)]
        return [_result(rows[0], "failed", seconds=time.perf_counter() - start, node_id=node_id, error=one_line(exc))]
    share = (time.perf_counter() - start) / len(rows)
    results = []
    for row, generation in zip(rows, generations, strict=True):
        saved = time.perf_counter()
        try:
            if generation.audio is None:
                raise BarkkitError("the pipeline has no decoder, so it made no audio; name one with --decoder")
            save_audio(row.path, generation.audio, pcm16=pcm16, peak=peak)
        except Exception as exc:
            results.append(_result(row, "failed", seconds=share, node_id=node_id, error=one_line(exc)))
            continue
        results.append(_result(row, "done", seconds=share + time.perf_counter() - saved, node_id=node_id))
    return results


class GenerationWorker(JsonRowsWorker):
    """A pool actor: loads the pipeline once (``Pipeline.from_spec``), then makes the clips of each call's rows."""

    def setup(self, spec: dict[str, Any], options: dict[str, Any], threads: int, pcm16: bool, peak: PeakPolicy) -> None:
        import ray
        import torch

        from barkkit.pipeline import Pipeline

        torch.set_num_threads(threads)
        self.pipeline = Pipeline.from_spec(spec)
        self.options, self.pcm16, self.peak = options, pcm16, peak
        self.node_id = ray.get_runtime_context().get_node_id()

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return make_clips(self.pipeline, [BatchRow(**row) for row in rows], self.options, pcm16=self.pcm16,
                          peak=self.peak, node_id=self.node_id)


def run_generation_job(
    rows: Sequence[BatchRow],
    spec: dict[str, Any],
    options: dict[str, Any],
    *,
    address: str,
    actors: int | None = None,
    threads: int = 1,
    rows_per_call: int = 1,
    pcm16: bool = False,
    peak: PeakPolicy = "scale",
    manifest: str | Path | None = None,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Make every row's clip on the Ray cluster at ``address``; returns one result per row (the manifest's lines).

    A row whose output already reads as whole audio is ``skipped`` and its file left untouched; the others go to
    a pool of ``actors`` actors (default: one per ``threads`` CPUs of each node), each loading ``spec``'s pipeline.
    """
    results: list[dict[str, Any]] = []
    todo: list[BatchRow] = []
    try:
        _run(rows, results, todo, spec, options, address=address, actors=actors, threads=threads,
             rows_per_call=rows_per_call, pcm16=pcm16, peak=peak, quiet=quiet)
    finally:  # a job that fails part-way still tells what it made
        if manifest is not None:
            write_manifest(manifest, results)
    return sorted(results, key=lambda result: result["n"])


def _run(rows: Sequence[BatchRow], results: list[dict[str, Any]], todo: list[BatchRow], spec: dict[str, Any],
         options: dict[str, Any], *, address: str, actors: int | None, threads: int, rows_per_call: int, pcm16: bool,
         peak: PeakPolicy, quiet: bool) -> None:
    with RowProgress(len(rows), quiet=quiet) as progress:
        for row in rows:
            if is_complete_audio(row.path):
                results.append(_result(row, "skipped"))
                progress.add("skipped")
            else:
                todo.append(row)
        if todo:
            ray = connect(address)
            pool_size = actors if actors is not None else default_actors(ray, threads)
            worker_kwargs = {"spec": spec, "options": options, "threads": threads, "pcm16": pcm16, "peak": peak}
            for result in run_pool(ray, [row.as_dict() for row in todo], GenerationWorker, worker_kwargs,
                                   actors=pool_size, threads=threads, rows_per_call=rows_per_call):
                results.append(result)
                progress.add(result["status"])
