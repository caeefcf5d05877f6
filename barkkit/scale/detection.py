"""``barkkit detect --ray``: files scored by a pool of actors, each holding one loaded detector.

Each actor runs the local command's own per-file step (``barkkit.detection.score_record``) in the driver's
current folder where that folder exists (always on a one-machine cluster), so every line, an unreadable file's
message included, is the one the local command prints. Lines come back in the order of the files given. A file
named by URL (``s3://bucket/clip.wav``, ``file:///...``) is copied from its store by the actor that scores it
(``barkkit.scale.remote_files``), and its line names the URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from barkkit.detection import score_record
from barkkit.scale.cluster import connect, default_actors
from barkkit.scale.pool import JsonRowsWorker, one_line, run_pool
from barkkit.scale.remote_files import fetched, is_uri
from barkkit.scale.report import RowProgress

__all__ = ["DetectionWorker", "run_detection_job"]


class DetectionWorker(JsonRowsWorker):
    """A pool actor: loads the named detector once, then scores each call's files."""

    def setup(self, detector_name: str, model: str | None, cut: float, cwd: str) -> None:
        import torch

        from barkkit.plugins import load_plugins

        torch.set_num_threads(1)
        if os.path.isdir(cwd):  # paths as the user gave them, relative ones included
            os.chdir(cwd)
        self.detector = load_plugins().detectors.get(detector_name).load(model)
        self.cut = cut

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"n": row["n"], "record": self._record(row["path"])} for row in rows]

    def _record(self, path: str) -> dict[str, Any]:
        if not is_uri(path):
            return score_record(self.detector, path, self.cut)
        try:
            with fetched(path) as local:
                record = score_record(self.detector, local, self.cut)
        except Exception as exc:  # the store refused or lost it: reported like an unreadable file
            return {"path": path, "error": f"{path}: cannot read it from its store ({one_line(exc)})"}
        if "error" in record:
            record["error"] = record["error"].replace(str(local), path)
        return {**record, "path": path}


def run_detection_job(
    files: Sequence[Path | str],
    detector_name: str,
    model: Path | None,
    cut: float,
    *,
    address: str,
    actors: int | None = None,
    quiet: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield each file's record (``score_record``'s dict) in the order of ``files``, scored on the cluster."""
    ray = connect(address)
    pool_size = actors if actors is not None else default_actors(ray, 1)
    kwargs = {"detector_name": detector_name, "model": str(Path(model).resolve()) if model else None, "cut": cut,
              "cwd": os.getcwd()}
    rows = [{"n": i, "path": str(path)} for i, path in enumerate(files)]
    waiting: dict[int, dict[str, Any]] = {}
    next_n = 0
    with RowProgress(len(rows), quiet=quiet, unit="file") as progress:
        for result in run_pool(ray, rows, DetectionWorker, kwargs, actors=pool_size, threads=1, rows_per_call=4):
            progress.add("failed" if "error" in result["record"] else "done")
            waiting[result["n"]] = result["record"]
            while next_n in waiting:  # print in the order given, as soon as the next one is in
                yield waiting.pop(next_n)
                next_n += 1
