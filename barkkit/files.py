"""Reading and writing files safely: only regular files, and never a half-written output.

Inputs (``check_input_file``) must be regular files, or links to them: a folder, a device such as ``/dev/zero``,
a FIFO or a socket is refused with what it is, instead of being read forever or reported as missing.

Outputs (``check_writable``, ``atomic_output``) are regular files too. A path that is a device, FIFO, socket or
folder is refused; a symbolic link is written through: the file it points to is replaced, and the link stays (the
temporary file lies beside that file, so the final move never crosses file systems). Output is written to a
temporary file named ``.NAME.barkkit-tmp-PID-XXXX`` beside the target and moved into place only when complete. The
command line removes it on Ctrl-C and SIGTERM; one that a SIGKILL left behind is removed by the next write of the
same file, once the process ``PID`` is gone.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from barkkit.errors import BarkkitError

__all__ = ["atomic_output", "check_writable", "check_input_file", "check_distinct", "remove_stale_temporaries",
           "node_kind", "TEMP_MARK"]

TEMP_MARK = ".barkkit-tmp-"
"""Part of every temporary output's name: ``.NAME.barkkit-tmp-PID-XXXX``."""


def node_kind(mode: int) -> str:
    """What a file system node is, for messages: "a folder", "a character device", "a FIFO (named pipe)", ..."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def check_input_file(path: str | os.PathLike, what: str = "file", error: type[BarkkitError] = BarkkitError) -> Path:
    """``path`` as a file to read: it exists and is a regular file (or a link to one); ``error`` otherwise.

    ``what`` names the file in messages ("token file", "audio file", ...).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode  # follows links
    except FileNotFoundError:
        dangling = " (a link to a file that does not exist)" if path.is_symlink() else ""
        raise error(f"{path}: no such file{dangling}") from None
    except OSError as exc:  # a loop of links, a file where a folder is expected, a path too long
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        article = "an" if what[:1] in "aeiou" else "a"
        raise error(f"{path}: is {node_kind(mode)}, not {article} {what}; give a regular file")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: not readable (permission denied)")
    return path


def _target(path: Path) -> Path:
    """Where a write to ``path`` lands: ``path`` itself, or the file at the end of its chain of links."""
    if not path.is_symlink():
        return path
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:  # a link to a file yet to be made: writing makes it
        return Path(os.path.realpath(path))
    except OSError:
        raise OSError(f"{path} is a loop of symbolic links") from None


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any long work, when ``path`` cannot be written as a regular file.

    Returns the file that writing ``path`` replaces: ``path``, or the target of a symbolic link.
    """
    path = Path(path)
    try:
        target = _target(path)
    except OSError as exc:  # a name too long, a loop of links, a file where a folder should be
        raise BarkkitError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    via = f" (a link to {target})" if target != path else ""
    try:
        mode: int | None = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise BarkkitError(f"{path}{via}: cannot be written ({exc.strerror or exc})") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise BarkkitError(f"{path}{via}: is {node_kind(mode)}; barkkit writes only regular files, so give a file name")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise BarkkitError(f"{path}{via}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (mode is not None and not os.access(target, os.W_OK)):
        raise BarkkitError(f"{path}{via}: not writable")
    return target


def check_distinct(outputs: Mapping[str, str | os.PathLike | None],
                   inputs: Mapping[str, str | os.PathLike | None] | None = None) -> None:
    """Refuse, before any work, two outputs that name one file, or an output that is one of the ``inputs``.

    Keys are how the command line names each path (``-o``, ``--save-tokens``, ``--voice file``...); ``None`` values
    are skipped. Links and hard links to one file count as the same file.
    """
    seen: dict[tuple, tuple[str, Path]] = {}
    for label, value in outputs.items():
        if value is None:
            continue
        key = _file_key(Path(value))
        if key in seen:
            raise BarkkitError(f"{seen[key][0]} and {label} name the same file {value}; give each output its own name")
        seen[key] = (label, Path(value))
    for label, value in (inputs or {}).items():
        if value is not None and _file_key(Path(value)) in seen:
            out_label, out = seen[_file_key(Path(value))]
            raise BarkkitError(f"{out_label} {out} is the {label} this command reads; write to another file")


def _file_key(path: Path) -> tuple:
    """One key per file: its device and inode when it exists (links, hard links), else where writing would land."""
    try:
        info = path.stat()
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", info.st_dev, info.st_ino)


@contextmanager
def atomic_output(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``'s target; move it into place only when the block succeeds.

    ``suffix`` keeps the extension libraries look at (``np.savez`` appends ``.npz`` otherwise). Refuses what
    ``check_writable`` refuses; a symbolic link ``path`` is written through (see the module docstring).
    """
    target = check_writable(path)
    remove_stale_temporaries(target)
    prefix = f".{target.name}{TEMP_MARK}{os.getpid()}-"
    handle, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix or target.suffix, dir=target.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file owner-only (0600): give it the mode a plain open() would, or the replaced file's
        os.chmod(tmp, stat.S_IMODE(target.stat().st_mode) if target.exists() else _new_file_mode())
        check_writable(path)  # still a regular file (or nothing) at the moment it is replaced
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of writes of ``target`` whose process is gone (a SIGKILL leaves them).

    Returns the paths removed. Only names of the form ``.NAME.barkkit-tmp-PID-...`` beside ``target`` are touched.
    """
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    start = f".{target.name}{TEMP_MARK}"
    removed: list[Path] = []
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.startswith(start)]
    except OSError:
        return removed
    for entry in entries:
        pid = entry.name[len(start):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # another process's file, or gone already: leave it
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a number no process can have: leave its file alone)
    return True


def _new_file_mode() -> int:
    """The permissions a newly created file gets here: 0666 less the process's umask."""
    umask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return 0o666 & ~umask
