"""Labelled clips for training and evaluating the detector.

A data folder either holds a ``manifest.csv`` (columns ``path`` relative to the folder and ``label``; ``source``
is optional) or subfolders named after the labels (``bark/``, ``real/``, ``other_tts/``), searched recursively.
Only ``bark`` is positive: ``real`` (human speech), ``other_tts`` (speech synthesised by anything but Bark),
``encodec_family`` (not Bark, but decoded by EnCodec 24 kHz: VALL-E, EnCodec resyntheses), ``vocos`` (EnCodec tokens,
Bark's among them, decoded by Vocos) and ``synthetic`` (generated non-speech) are negatives for ``bark``.
``TRACE_LABELS`` are the labels whose audio went through EnCodec's decoder (the ``encodec_trace`` target).

A manifest row whose ``license`` or ``note`` says the clip is for non-commercial use only (``CC BY-NC``) is read as
evaluation-only: it is scored in every evaluation but never fitted, so no shipped model learns from it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from barkkit.audio import AUDIO_EXTENSIONS
from barkkit.errors import BarkkitError

__all__ = ["Clip", "read_clips", "POSITIVE", "LABELS", "TRACE_LABELS", "find_audio_files"]

POSITIVE = "bark"
LABELS = ("bark", "real", "other_tts", "encodec_family", "vocos", "synthetic")
TRACE_LABELS = ("bark", "encodec_family")
_EVALUATION_ONLY = ("cc by-nc", "non-commercial")


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    source: str
    trainable: bool = True  # False: evaluation only (its licence forbids training a shipped model on it)

    @property
    def is_bark(self) -> bool:
        return self.label == POSITIVE

    @property
    def has_trace(self) -> bool:
        """Whether the clip went through EnCodec 24 kHz's decoder."""
        return self.label in TRACE_LABELS


def find_audio_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and audio files found recursively in folders (sorted within each folder)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            found.append(path)
    return found


def read_clips(folder: str | os.PathLike) -> list[Clip]:
    """The labelled clips of a data folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BarkkitError(f"{folder}: no such data folder; give a folder with manifest.csv or bark/ and real/ subfolders")
    manifest = folder / "manifest.csv"
    clips: list[Clip] = []
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if "path" not in row or "label" not in row:
                    raise BarkkitError(f"{manifest}: needs 'path' and 'label' columns")
                source = row.get("source") or Path(row["path"]).parent.name
                terms = f"{row.get('license') or ''} {row.get('note') or ''}".lower()
                trainable = not any(term in terms for term in _EVALUATION_ONLY)
                clips.append(Clip(folder / row["path"], row["label"].strip(), source.strip(), trainable))
    else:
        for label in LABELS:
            for path in find_audio_files([folder / label]) if (folder / label).is_dir() else []:
                relative = path.relative_to(folder / label)
                source = relative.parts[0] if len(relative.parts) > 1 else label
                clips.append(Clip(path, label, source))
    unknown = sorted({clip.label for clip in clips} - set(LABELS))
    if unknown:
        raise BarkkitError(f"{folder}: unknown labels {', '.join(unknown)}; use {', '.join(LABELS)}")
    if not clips:
        raise BarkkitError(f"{folder}: no labelled clips; add manifest.csv or bark/ and real/ subfolders with audio")
    return clips
