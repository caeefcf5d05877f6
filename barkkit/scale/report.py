"""What a job tells as it goes and when it ends: a progress bar of rows, and the manifest file."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from typing import Any

from barkkit.files import atomic_output

__all__ = ["RowProgress", "write_manifest", "MANIFEST_KEYS"]

MANIFEST_KEYS = ("n", "text", "seed", "voice", "path", "status", "error", "node_id", "seconds")


class RowProgress:
    """A tqdm bar of rows on stderr (only on a terminal, nothing when quiet), counting done, skipped and failed."""

    def __init__(self, total: int, *, quiet: bool, unit: str = "row") -> None:
        self.counts: Counter[str] = Counter()
        self._bar: Any = None
        if not quiet:
            from tqdm import tqdm

            # disable=None: a bar only on a terminal, never in logs or pipes
            # mininterval=0: rows take seconds, so every one is drawn (tqdm skips updates within 0.1 s otherwise)
            self._bar = tqdm(total=total, unit=unit, dynamic_ncols=True, disable=None, leave=False, mininterval=0)

    def add(self, status: str) -> None:
        self.counts[status] += 1
        if self._bar is not None:
            self._bar.set_postfix({key: self.counts[key] for key in ("done", "skipped", "failed")}, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "RowProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_manifest(path: str | os.PathLike, results: Iterable[dict[str, Any]]) -> None:
    """One JSON line per row, in row order, with every key of ``MANIFEST_KEYS`` (``error`` only where failed).

    Written atomically: a manifest on disk is always a whole one.
    """
    ordered = sorted(results, key=lambda result: result["n"])
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for result in ordered:
            line = {key: result.get(key) for key in MANIFEST_KEYS if key != "error" or result.get("error")}
            handle.write(json.dumps(line) + "\n")
