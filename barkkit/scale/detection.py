"""``barkkit detect --ray``: files scored by a pool of actors, each holding one loaded detector.

Each actor runs the local command's own per-file step (``barkkit.detection.detect_one``) in the driver's
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

from barkkit.detection import detect_one
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
            return detect_one(self.detector, path, self.cut)
        try:
            with fetched(path) as local:
                record = detect_one(self.detector, local, self.cut)
        except Exception as exc:  # the store refused or lost it: reported like an unreadable file
            return {"path": path, "error": f"{path}: cannot read it from its store ({one_line(exc)})"}
        if "error" in record:
            record["error"] = record["error"].replace(str(local), path)
        return {**record, "path": path}


def run_detection_job(
    listed: Sequence[tuple[str, str | None]],
    detector_name: str,
    model: Path | None,
    cut: float,
    *,
    address: str,
    actors: int | None = None,
    quiet: bool = False,
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Yield (result, True) for each file of ``listed`` (``detect_one``'s dict, scored on the cluster), and
    ({path, error}, False) for each entry that came with a problem (an unreadable folder), in ``listed``'s order."""
    rows = [{"n": i, "path": path} for i, (path, problem) in enumerate(listed) if problem is None]
    waiting: dict[int, tuple[dict[str, Any], bool]] = {
        i: ({"path": path, "error": f"{path}: {problem}"}, False) for i, (path, problem) in enumerate(listed) if problem}
    next_n = 0
    with RowProgress(len(rows), quiet=quiet, unit="file") as progress:
        if rows:
            ray = connect(address)
            pool_size = actors if actors is not None else default_actors(ray, 1)
            kwargs = {"detector_name": detector_name, "model": str(Path(model).resolve()) if model else None,
                      "cut": cut, "cwd": os.getcwd()}
            for result in run_pool(ray, rows, DetectionWorker, kwargs, actors=pool_size, threads=1, rows_per_call=4):
                progress.add("failed" if "error" in result["record"] else "done")
                waiting[result["n"]] = (result["record"], True)
                while next_n in waiting:  # print in the order given, as soon as the next one is in
                    yield waiting.pop(next_n)
                    next_n += 1
    while next_n in waiting:  # problems after the last file, or a job of problems only
        yield waiting.pop(next_n)
        next_n += 1
