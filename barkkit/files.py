"""Writing files so that a failure never leaves a half-written output behind."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from barkkit.errors import BarkkitError

__all__ = ["atomic_output", "check_writable"]


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any long work, when ``path`` cannot be written."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise BarkkitError(f"{path}: is a folder; give a file name")
    if not folder.is_dir():
        raise BarkkitError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise BarkkitError(f"{path}: not writable")
    return path


@contextmanager
def atomic_output(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only when the block succeeds.

    ``suffix`` keeps the extension libraries look at (``np.savez`` appends ``.npz`` otherwise).
    """
    path = check_writable(path)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent or ".")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file owner-only (0600): give it the mode a plain open() would, or the replaced file's
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else _new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _new_file_mode() -> int:
    """The permissions a newly created file gets here: 0666 less the process's umask."""
    umask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return 0o666 & ~umask
