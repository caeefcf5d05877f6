"""The allocator tuning the command line applies to its own process (``barkkit.allocator``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")

# Three 12 MB tensors alive together, then freed, 20 times: the pattern of a fine pass's MLP. Prints page faults.
WORKLOAD = """
import resource, sys, torch
from barkkit.allocator import tune_allocator
tuned = tune_allocator() if sys.argv[1] == "tune" else False
def work():
    return [torch.empty(3_000_000).fill_(1.0) for _ in range(3)]
work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    work()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(mode: str, **env: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0] == "True", int(out[1])


def _huge_pages_always() -> bool:
    """Transparent huge pages for every mapping: then fresh mmaps fault per 2 MB, and there is little to save."""
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[always]" in path.read_text()


def test_tuning_keeps_large_tensors_from_page_faulting_again():
    tuned, tuned_faults = _run("tune")
    untouched, default_faults = _run("leave")
    assert tuned and not untouched
    if not _huge_pages_always():
        assert tuned_faults < default_faults / 2, (tuned_faults, default_faults)


def test_a_users_own_glibc_setting_wins():
    assert _run("tune", MALLOC_TRIM_THRESHOLD_="131072")[0] is False


def test_the_command_line_tunes_its_own_process(monkeypatch):
    import barkkit.cli as command_line

    calls = []
    monkeypatch.setattr(command_line, "tune_allocator", lambda: calls.append("tuned"))
    monkeypatch.setattr(command_line.cli, "main", lambda **kwargs: calls.append("ran"))
    command_line.main()
    assert calls == ["tuned", "ran"]
