"""The allocator tuning the command line applies to its own process (``barkkit.allocator``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

LIBC, LIBC_VERSION = platform.libc_ver()
pytestmark = pytest.mark.skipif(LIBC != "glibc" or tuple(int(p) for p in LIBC_VERSION.split(".")[:2]) < (2, 33),
                                reason="tunes glibc's malloc only (and these tests read glibc 2.33's mallinfo2)")

# A 28 MB tensor (under glibc's largest mmap threshold, 32 MB), then freed. Prints whether the tuning applied, the
# bytes glibc holds in mmapped blocks while the tensor lives, and the free bytes its heap keeps afterwards (mallinfo2).
WORKLOAD = """
import ctypes, sys, torch
from barkkit.allocator import tune_allocator
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
tuned = tune_allocator() if sys.argv[1] == "tune" else False
before = libc.mallinfo2().hblkhd
x = torch.empty(7_000_000)
mapped = libc.mallinfo2().hblkhd - before
del x
print(tuned, mapped, libc.mallinfo2().fordblks)
"""
SIZE = 28_000_000


def _run(mode: str, **env: str) -> tuple[bool, int, int]:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


def test_tuned_large_tensors_come_from_the_heap_and_their_memory_stays_for_the_next():
    tuned, mapped, kept = _run("tune")
    assert tuned and mapped < SIZE <= kept  # served from the heap, kept there once freed: no fresh pages next time
    untouched, mapped, kept = _run("leave")
    assert not untouched and mapped >= SIZE > kept  # glibc's default: a fresh mapping, handed back when freed


def test_a_users_own_glibc_setting_wins():
    assert _run("tune", MALLOC_TRIM_THRESHOLD_="131072")[0] is False


def test_the_command_line_tunes_its_own_process(monkeypatch):
    import barkkit.cli as command_line

    calls = []
    monkeypatch.setattr(command_line, "tune_allocator", lambda: calls.append("tuned"))
    monkeypatch.setattr(command_line.cli, "main", lambda **kwargs: calls.append("ran"))
    command_line.main()
    assert calls == ["tuned", "ran"]
