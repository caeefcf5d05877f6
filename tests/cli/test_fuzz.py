"""The command line on hostile input: every command, each input surface, under a memory limit.

A subprocess (``tests/cli/fuzz_driver.py``, limited with RLIMIT_AS) writes the fixtures and runs every case of
``tests/cli/fuzz_cases.py`` through the real entry point: a sweep that takes every hostile value once, then random
pairs from a fixed seed. For each case this test asserts what the README promises of bad input:

- the exit status is 0, 1 or 2 (2: a usage error), and nothing escaped as a traceback;
- a failure prints exactly one ``Error:`` line (``detect`` reports unreadable files per file instead, exit 1),
  a success none, and no ``Error: unexpected ...`` (every reachable fault has its own message);
- no file changed, appeared or vanished but the command's intended outputs (inputs and fixtures untouched), and
  no temporary file stayed;
- the case's peak resident memory stayed under ``MEMORY_BOUND_MB``.

``BARKKIT_FUZZ_SEED`` and ``BARKKIT_FUZZ_CASES`` pick other random cases (default: seed 0, 60 cases).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

MEMORY_BOUND_MB = 1200  # per case, peak resident; the whole process is also capped at ADDRESS_SPACE_GB
ADDRESS_SPACE_GB = 8
RANDOM_CASES = int(os.environ.get("BARKKIT_FUZZ_CASES", "60"))
SEED = int(os.environ.get("BARKKIT_FUZZ_SEED", "0"))


def _limit_memory() -> None:
    limit = ADDRESS_SPACE_GB << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    root = tmp_path_factory.mktemp("fuzz")
    output = root / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(root / "hf-cache"), "HF_HOME": str(root / "hf-home"), "COLUMNS": "110"}
    for variable in ("BARKKIT_PLUGINS", "BARKKIT_BLOCK_PLUGINS", "BARKKIT_VOICE_PATH", "BARKKIT_DEBUG"):
        env.pop(variable, None)
    process = subprocess.run(
        [sys.executable, "-m", "tests.cli.fuzz_driver", str(root), str(SEED), str(RANDOM_CASES), str(output)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, preexec_fn=_limit_memory,
    )
    lines = output.read_text().splitlines() if output.exists() else []
    assert process.returncode == 0, f"the driver died after {len(lines)} cases:\n{process.stderr[-3000:]}"
    return [json.loads(line) for line in lines]


def _problems(case: dict) -> list[str]:
    problems = []
    code, stderr = case["exit_code"], case["stderr"]
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    if case["exception"]:
        problems.append(f"an exception escaped:\n{case['exception']}")
    if code not in (0, 1, 2):
        problems.append(f"exit status {code}")
    if "Traceback" in stderr + case["stdout"]:
        problems.append("a traceback was printed")
    if code == 0 and errors:
        problems.append("succeeded but printed an Error line")
    if code != 0 and len(errors) != 1 and not (case["args"][:1] == ["detect"] and code == 1 and not errors):
        problems.append(f"failed with {len(errors)} Error lines")
    if any(line.startswith("Error: unexpected") for line in errors):
        problems.append("an 'unexpected' error: the fault has no message of its own")
    if case["changed"]:
        problems.append(f"changed files it should not have: {case['changed']}")
    if case["temporaries"]:
        problems.append(f"left temporary files: {case['temporaries']}")
    if case["peak_mb"] is not None and case["peak_mb"] > MEMORY_BOUND_MB:
        problems.append(f"peak memory {case['peak_mb']:.0f} MB, over {MEMORY_BOUND_MB} MB")
    return problems


def test_every_command_survives_hostile_input(results: list[dict]) -> None:
    assert len(results) > 200  # the sweep and the random cases all ran
    failures = []
    for case in results:
        problems = _problems(case)
        if problems:
            failures.append(f"{case['name']}: barkkit {' '.join(map(repr, case['args']))} env={case['env']} -> "
                            f"exit {case['exit_code']}\n  stderr: {case['stderr'][-600:]!r}\n  - " + "\n  - ".join(problems))
    assert not failures, f"{len(failures)} of {len(results)} cases went wrong:\n\n" + "\n\n".join(failures[:25])


def test_the_sweep_reaches_working_runs_and_refusals(results: list[dict]) -> None:
    """The suite is not vacuous: the working baselines write their outputs, and hostile values are refused."""
    by_name = {case["name"]: case for case in results}
    for command in ("generate", "semantic", "coarse", "fine", "decode", "voices_make", "batch"):
        baseline = by_name[f"sweep:baseline:{command}"]
        assert baseline["exit_code"] == 0, baseline
    refused = sum(case["exit_code"] != 0 for case in results)
    assert refused > len(results) / 2
