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

# Per case, peak resident memory of the whole driver process, which holds ~0.6-1.05 GB after its first runs (torch,
# the tiny models, the codec); reading the (8, 10,000,000) bomb alone would add 1.4 GB. The process is also capped at
# ADDRESS_SPACE_GB of address space, so a runaway case fails instead of taking the machine.
MEMORY_BOUND_MB = 1536
ADDRESS_SPACE_GB = 8
RANDOM_CASES = int(os.environ.get("BARKKIT_FUZZ_CASES", "60"))
SEED = int(os.environ.get("BARKKIT_FUZZ_SEED", "0"))


def _limit_memory() -> None:
    limit = ADDRESS_SPACE_GB << 30
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit if hard == resource.RLIM_INFINITY else hard))


def _environment(root: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(root / "hf-cache"), "HF_HOME": str(root / "hf-home"), "COLUMNS": "110"}
    for variable in ("BARKKIT_PLUGINS", "BARKKIT_BLOCK_PLUGINS", "BARKKIT_VOICE_PATH", "BARKKIT_DEBUG"):
        env.pop(variable, None)
    return env


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def results(fuzz_root: Path) -> list[dict]:
    output = fuzz_root / "results.jsonl"
    process = subprocess.run(
        [sys.executable, "-m", "tests.cli.fuzz_driver", str(fuzz_root), str(SEED), str(RANDOM_CASES), str(output)],
        cwd=REPO_ROOT, env=_environment(fuzz_root), capture_output=True, text=True, timeout=600,
        preexec_fn=_limit_memory,
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


# The real `barkkit` script, one process each: what runs in-process above cannot see (native libraries writing to
# file descriptor 2, the script's own start-up), under the same memory limit. (command, exit status, last line)
REAL = [
    (["voices", "make", "{fix}/audio/random.mp3", "-o", "v.npz", "--codes-only", "-m", "{fix}/models/good"], 1,
     "not a readable audio file"),
    (["voices", "show", "{fix}/tokens/bomb.npz"], 1, "more than the 270,000 steps"),
    (["semantic", "Hi.", "-o", "{fix}/nodes/fifo", "-m", "{fix}/models/good"], 1, "is a FIFO (named pipe)"),
    (["generate", "Hi.", "-o", "out.wav", "-m", "{fix}/models/good", "--seed", "1", "--max-gen-duration-s", "0.1",
      "--fine-temp", "none", "-q"], 0, None),
]


def test_the_real_command_line_prints_one_line_and_stays_in_bounds(results: list[dict], fuzz_root: Path,
                                                                   tmp_path: Path) -> None:
    barkkit = Path(sys.executable).with_name("barkkit")
    fixtures = fuzz_root / "fixtures"
    for args, status, last in REAL:
        args = [arg.replace("{fix}", str(fixtures)) for arg in args]
        before = sorted(os.listdir(tmp_path))
        process = subprocess.run([str(barkkit), *args], cwd=tmp_path, env=_environment(fuzz_root), capture_output=True,
                                 text=True, timeout=120, preexec_fn=_limit_memory)
        lines = process.stderr.splitlines()
        assert process.returncode == status, (args, process.stderr)
        if last is None:
            assert lines == [] and sorted(os.listdir(tmp_path)) == sorted([*before, "out.wav"]), process.stderr
        else:
            assert len(lines) == 1 and lines[0].startswith("Error: ") and last in lines[0], (args, process.stderr)
            assert sorted(os.listdir(tmp_path)) == before


def test_the_sweep_reaches_working_runs_and_refusals(results: list[dict]) -> None:
    """The suite is not vacuous: the working baselines write their outputs, and hostile values are refused."""
    by_name = {case["name"]: case for case in results}
    for command in ("generate", "semantic", "coarse", "fine", "decode", "voices_make", "batch"):
        baseline = by_name[f"sweep:baseline:{command}"]
        assert baseline["exit_code"] == 0, baseline
    refused = sum(case["exit_code"] != 0 for case in results)
    assert refused > len(results) / 2
