"""Run fuzz cases in this process, one after another, and record what each did.

    python -m tests.cli.fuzz_driver ROOT SEED COUNT RESULTS.jsonl

Run by ``tests/cli/test_fuzz.py`` in a subprocess under a memory limit (RLIMIT_AS). It writes the fixtures
(``tests/cli/fuzz_fixtures.py``) under ROOT/fixtures, then runs the sweep and COUNT random cases of SEED
(``tests/cli/fuzz_cases.py``), one JSON line of results per case. Each case runs through the
command line's own entry (``cli.main``, as the ``barkkit`` script does, under click's test runner for the streams)
in its own empty folder. Recorded per case: the exit status, the output, any exception that escaped, the peak
resident memory of the case (the kernel's high-water mark, reset before each case) and every file of the fixtures
and the case folder that was created, changed or removed.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
import traceback
from pathlib import Path
from typing import Any

Snapshot = dict[str, tuple[int, int, int, int]]


def snapshot(*roots: Path) -> Snapshot:
    """Every node under ``roots`` (links not followed): mode, size, change time and inode."""
    nodes: Snapshot = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                info = os.lstat(path)
                nodes[path] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino)
    return nodes


def changed(before: Snapshot, after: Snapshot) -> list[str]:
    return sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))


def _reset_peak_memory() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")  # resets VmHWM, the peak resident set (Linux 4.0+)
        return True
    except OSError:
        return False


def _peak_memory_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _setup(folder: Path, steps: list[list[str]], fixtures: Path) -> None:
    for kind, name, *rest in steps:
        path = folder / name
        if kind == "file":
            path.write_bytes(b"old contents\n")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "device":
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        elif kind == "dir":
            path.mkdir()
        elif kind == "socket":
            server = socket.socket(socket.AF_UNIX)
            try:
                server.bind(str(path))
            except OSError:  # too long a path for a socket: the case then writes over a regular file
                path.write_bytes(b"")
            server.close()
        elif kind == "link":
            path.symlink_to(rest[0])
        elif kind == "copy":
            path.write_bytes(Path(rest[0].replace("{fix}", str(fixtures))).read_bytes())


def _fill(value: str, fixtures: Path, folder: Path) -> str:
    return value.replace("{fix}", str(fixtures)).replace("{case}", str(folder))


def run_case(index: int, case: dict[str, Any], fixtures: Path, work: Path) -> dict[str, Any]:
    from click.testing import CliRunner

    from barkkit.cli import cli

    folder = work / f"{index:04d}"
    folder.mkdir()
    _setup(folder, case["setup"], fixtures)
    allowed = set()
    for pattern in case["outputs"]:
        for path in folder.glob(pattern) if "*" in pattern else [folder / pattern]:
            allowed.update({str(path), os.path.realpath(path)})
    args = [_fill(arg, fixtures, folder) for arg in case["args"]]
    env = {key: _fill(value, fixtures, folder) for key, value in case["env"].items()}
    before = snapshot(fixtures, folder)
    saved_env = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    os.chdir(folder)
    cli.use_plugins(None)  # plugins are loaded again, under this case's environment
    measured = _reset_peak_memory()
    start = time.perf_counter()
    try:
        result = CliRunner().invoke(cli, args, input=bytes.fromhex(case["stdin"]) if case["stdin"] else None,
                                    catch_exceptions=True)
    finally:
        seconds = time.perf_counter() - start
        os.chdir(work)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    after = snapshot(fixtures, folder)
    for pattern in case["outputs"]:  # outputs made by the command (a glob matched nothing before it ran)
        for path in folder.glob(pattern) if "*" in pattern else []:
            allowed.update({str(path), os.path.realpath(path)})
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    return {
        "name": case["name"], "args": args, "env": env, "exit_code": result.exit_code,
        "stdout": result.stdout[-3000:], "stderr": result.stderr[-3000:],
        "exception": None if escaped is None else "".join(traceback.format_exception(escaped))[-3000:],
        "peak_mb": _peak_memory_mb() if measured else None, "seconds": round(seconds, 3),
        "changed": [path for path in changed(before, after) if path not in allowed],
        "temporaries": [path for path in after if ".barkkit-tmp-" in path],
    }


def main(root: str, seed: str, count: str, results_file: str) -> None:
    import torch

    from tests.cli import fuzz_cases, fuzz_fixtures

    torch.set_num_threads(1)
    fixtures, work = Path(root) / "fixtures", Path(root) / "work"
    made = fuzz_fixtures.build(fixtures)
    work.mkdir()
    cases = fuzz_cases.sweep(made["device"]) + fuzz_cases.cases(int(seed), int(count), made["device"])
    with open(results_file, "w") as results:  # a line per case, so what ran is kept should a case kill the process
        for index, case in enumerate(cases):
            results.write(json.dumps(run_case(index, case.to_json(), fixtures, work)) + "\n")
            results.flush()


if __name__ == "__main__":
    main(*sys.argv[1:5])
