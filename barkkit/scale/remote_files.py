"""Audio files named by URL (``s3://``, ``gs://``, ``file://``, ...), read through pyarrow's filesystems, as Ray
Data reads them. The workers need their own access to the store (instance roles, their environment's keys)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from barkkit.audio import AUDIO_EXTENSIONS
from barkkit.errors import BarkkitError

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["is_uri", "list_audio_uris", "fetched"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_uri(path: str) -> bool:
    """``scheme://...``: a file in an object store (or ``file://``), not a local path."""
    return bool(_SCHEME.match(path))


def _filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem that holds ``uri``, and the path of ``uri`` inside it."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError (no credentials, no network), ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BarkkitError(f"{uri}: cannot open that location ({first})") from None


def list_audio_uris(uri: str) -> list[str]:
    """``uri`` itself when it is a file; the audio files under it (recursively, sorted) when it is a folder."""
    import pyarrow.fs

    filesystem, root = _filesystem(uri)
    info = filesystem.get_file_info(root)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise BarkkitError(f"{uri}: no such file or folder")
    if info.type != pyarrow.fs.FileType.Directory:
        return [uri]
    prefix = uri.rstrip("/")
    found = filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    names = sorted(item.path for item in found if item.type == pyarrow.fs.FileType.File
                   and PurePosixPath(item.path).suffix.lower() in AUDIO_EXTENSIONS)
    base = root.rstrip("/")
    return [f"{prefix}/{name[len(base):].lstrip('/')}" for name in names]


@contextmanager
def fetched(uri: str) -> Iterator[Path]:
    """The file at ``uri`` copied to a temporary local file (same extension), removed afterwards."""
    filesystem, path = _filesystem(uri)
    handle, name = tempfile.mkstemp(suffix=PurePosixPath(path).suffix)
    try:
        with os.fdopen(handle, "wb") as local, filesystem.open_input_stream(path) as remote:
            while chunk := remote.read(1 << 20):
                local.write(chunk)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
