"""The rows of a batch file: what to say, with which voice and seed, into which file.

A batch file is text (one clip per non-empty line) or JSONL (one object per line with ``text`` and optionally
``voice``, ``seed``, ``out``). Row ``n`` (1-based, counting the rows kept) gets the seed ``base + n - 1`` unless
its line names one, exactly as ``Pipeline.generate_batch(texts, seeds=base)`` numbers them, so a local batch and a
Ray job given the same file and ``--seed`` make the same clips. Nothing here imports Ray.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from barkkit.errors import BarkkitError

__all__ = ["BatchRow", "read_batch_file", "batch_rows", "batch_output", "JSONL_SUFFIXES"]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
_ROW_KEYS = {"text", "voice", "seed", "out"}


@dataclass(frozen=True)
class BatchRow:
    """One clip of a batch: ``n`` (1-based), its text, voice (name or absolute .npz path, or None), seed, output."""

    n: int
    text: str
    voice: str | None
    seed: int
    path: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def batch_output(pattern: Path, n: int) -> Path:
    """Row ``n``'s output for ``-o pattern``: ``{n}`` replaced, or ``_n`` added before the extension."""
    if "{n}" in pattern.name:
        return pattern.with_name(pattern.name.replace("{n}", str(n)))
    return pattern.with_name(f"{pattern.stem}_{n}{pattern.suffix}")


def _is_jsonl(path: Path, lines: list[str]) -> bool:
    if path.suffix.lower() in JSONL_SUFFIXES:
        return True
    first = lines[0].lstrip() if lines else ""
    if not first.startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict) and "text" in json.loads(first)
    except json.JSONDecodeError:
        return False


def _jsonl_entry(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BarkkitError(f"{path}: line {number} is not JSON ({exc.msg}); give one object per line") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
        raise BarkkitError(f'{path}: line {number} needs a "text" string, e.g. {{"text": "Hello.", "seed": 3}}')
    unknown = sorted(set(entry) - _ROW_KEYS)
    if unknown:
        raise BarkkitError(f"{path}: line {number} has unknown key(s) {', '.join(unknown)}; known: text, voice, seed, out")
    seed = entry.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BarkkitError(f"{path}: line {number}: seed must be a whole number, got {seed!r}")
    for key in ("voice", "out"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise BarkkitError(f"{path}: line {number}: {key} must be a string, got {entry[key]!r}")
    return entry


def _voice_reference(voice: str | None) -> str | None:
    """A voice file given by a relative path becomes absolute, so that workers elsewhere find it; names stay."""
    if voice is None:
        return None
    candidate = Path(voice).expanduser()
    return str(candidate.resolve()) if candidate.suffix.lower() == ".npz" and candidate.is_file() else voice


def read_batch_file(path: Path, output: Path, *, seed: int, voice: str | None) -> list[BatchRow]:
    """The rows of ``path``; ``seed`` is the base seed and ``voice`` the default voice of rows without their own.

    Outputs are absolute paths (workers do not share the driver's current folder). Raises ``BarkkitError`` for a
    missing or empty file, a line that is not a JSON object with ``text``, or two rows writing one file.
    (``barkkit generate`` reads the lines itself, refusing binary files and huge lines, then calls ``batch_rows``.)
    """
    if not path.is_file():
        raise BarkkitError(f"{path}: no such batch file")
    try:
        lines = [(i + 1, line) for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()) if line.strip()]
    except UnicodeDecodeError:
        raise BarkkitError(f"{path}: not UTF-8 text; give one text per line, or JSONL") from None
    if not lines:
        raise BarkkitError(f"{path}: holds no text lines")
    return batch_rows(path, lines, output, seed=seed, voice=voice)


def batch_rows(path: Path, lines: list[tuple[int, str]], output: Path, *, seed: int, voice: str | None) -> list[BatchRow]:
    """The rows of a batch file's non-empty ``lines`` (line number, text), as ``read_batch_file`` describes."""
    jsonl = _is_jsonl(path, [line for _, line in lines])
    rows = []
    for n, (number, line) in enumerate(lines, start=1):
        entry = _jsonl_entry(path, number, line) if jsonl else {"text": line.strip()}
        out = Path(entry["out"]) if entry.get("out") else batch_output(output, n)
        rows.append(BatchRow(
            n=n,
            text=entry["text"],
            voice=_voice_reference(entry.get("voice", voice)),
            seed=int(entry["seed"]) if entry.get("seed") is not None else seed + n - 1,
            path=os.path.abspath(out.expanduser()),
        ))
    seen: dict[str, int] = {}
    for row in rows:
        if row.path in seen:
            raise BarkkitError(f"{path}: rows {seen[row.path]} and {row.n} both write {row.path}; give each row its own output")
        seen[row.path] = row.n
    return rows
