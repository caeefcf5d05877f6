"""The same batch through ``barkkit generate --ray`` on 1 and on 2 actors of this machine: rows per minute.

    python benchmarks/scale.py [--rows 8] [--seconds 2] [--mode fast] [--large] [--rounds 1]

Builds bark-small-shaped random weights (``--large``: bark's 24 x 1024) in Suno's format with a random EnCodec,
starts a local Ray cluster with this machine's cores, and runs the batch (fixed lengths: no early stop) as the
command line does (``barkkit.scale.generation.run_generation_job``) on: 1 actor x 1 thread, 1 actor x all threads,
and one 1-thread actor per core, in a rotating order per round. For each: the job's wall time (median over
rounds), rows per minute, and the mean per-row seconds the manifest reports. Separately, in this process: what one
actor pays once (importing torch and barkkit in a fresh process, loading the pipeline, quantizing in fast mode).
The machine's load average is printed before and after: on a shared machine it says how far to trust the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402
from run import machine  # noqa: E402

TEXTS = ["Hello, my name is Suno. And, uh, I like pizza.", "The quick brown fox jumps over the lazy dog.",
         "It was a bright cold day in April, and the clocks were striking thirteen.", "Call me Ishmael."]


def build_folder(folder: Path, large: bool) -> Path:
    from barkkit_encodec.checkpoints import write_encodec_checkpoint

    size = "large" if large else "small"
    H.write_checkpoints(H.build_reference_models(size), folder, size)
    write_encodec_checkpoint(folder)
    return folder


def startup_costs(spec: dict) -> dict[str, float]:
    """What each new actor pays before its first row: a fresh process's imports, then loading the pipeline."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, barkkit, barkkit_bark, barkkit_encodec, ray"], check=True)
    imports = time.perf_counter() - start
    from barkkit.pipeline import Pipeline

    before = H.rss_mb()
    start = time.perf_counter()
    pipeline = Pipeline.from_spec(spec)
    load = time.perf_counter() - start
    return {"imports": imports, "load": load, "memory": H.rss_mb() - before, "pipeline": pipeline}


def run_job(rows, spec: dict, options: dict, actors: int, threads: int) -> dict[str, float]:
    from barkkit.scale.generation import run_generation_job

    start = time.perf_counter()
    results = run_generation_job(rows, spec, options, address="local", actors=actors, threads=threads, quiet=True)
    wall = time.perf_counter() - start
    failed = [r for r in results if r["status"] != "done"]
    if failed:
        raise SystemExit(f"rows failed: {failed[0]['error']}")
    return {"wall": wall, "row": statistics.mean(r["seconds"] for r in results), "nodes": len({r["node_id"] for r in results})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per row")
    parser.add_argument("--mode", choices=["exact", "fast"], default="fast")
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    import ray

    from barkkit.scale.rows import BatchRow

    cores = os.cpu_count() or 1
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(Path(tmp) / "model", args.large)
        spec = {"model": str(folder), "mode": args.mode}
        options = {"max_gen_duration_s": args.seconds, "allow_early_stop": False}
        costs = startup_costs(spec)
        print(f"per actor, once: imports in a fresh process {costs['imports']:.2f} s, pipeline load "
              f"({args.mode}{', quantizing' if args.mode == 'fast' else ''}) {costs['load']:.2f} s, "
              f"+{costs['memory']:.0f} MB resident")
        del costs
        # a throwaway cluster in this process: no token file written to ~/.ray (Ray 2.5x makes one by default)
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        print(f"{args.rows} rows of {args.seconds:g} s, {args.mode} mode, {'bark' if args.large else 'bark-small'} shapes")
        configs = [(1, 1), (1, cores), (cores, 1)]
        timings: dict[tuple[int, int], list[dict[str, float]]] = {config: [] for config in configs}
        for round_ in range(args.rounds):
            for actors, threads in configs[round_ % 3:] + configs[: round_ % 3]:
                out = Path(tmp) / f"out_{actors}x{threads}_{round_}"
                out.mkdir()
                rows = [BatchRow(n=i + 1, text=TEXTS[i % len(TEXTS)], voice=None, seed=100 + i,
                                 path=str(out / f"clip_{i + 1}.wav")) for i in range(args.rows)]
                timings[(actors, threads)].append(run_job(rows, spec, options, actors, threads))
        print(f"{'actors x threads':>16s} {'wall s':>8s} {'rows/min':>9s} {'s/row (manifest)':>17s}")
        for (actors, threads), runs in timings.items():
            wall = statistics.median(run["wall"] for run in runs)
            row = statistics.median(run["row"] for run in runs)
            print(f"{f'{actors} x {threads}':>16s} {wall:8.1f} {60 * args.rows / wall:9.1f} {row:17.2f}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        ray.shutdown()


if __name__ == "__main__":
    main()
