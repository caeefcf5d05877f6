"""Time Bark implementations side by side, in one process, on the same random weights, text and lengths.

    python benchmarks/run.py [--large] [--seconds 3] [--voice v2/en_speaker_6] [--rounds 1] [--batch 8 [--shortcuts]] [--device cuda]

Builds bark-small-shaped random weights (``--large``: bark's 24 x 1024) in Suno's checkpoint format, then runs, per
round, stage by stage and in a rotating order: the reference (``bark==0.1.5``, KV caching on, as ``bark.api`` calls it),
transformers' ``BarkModel`` sub-models, and barkkit in ``exact`` and ``fast`` mode. Lengths are fixed (no early
stop): ``--seconds`` of audio is ``round(seconds x 49.9)`` semantic tokens and 75 coarse frames a second.
Prints, per stage: seconds (median over rounds), tokens per second, real-time factor (seconds per second of audio),
peak resident memory over the stage's start, and the ratio to the reference measured in the same round.
``--batch N`` also times ``N`` texts through barkkit fast mode as one batch against ``N`` single runs, and says how
the time splits between prefills, decode steps and fine passes (``--shortcuts``: with the context shortcuts that
fast mode does not take, to see what they would change).
``--device cuda`` runs everything on a GPU (the reference under its own bf16 autocast; barkkit fast mode in bf16
with decode steps replayed as CUDA graphs; memory is then the peak of torch's allocations on the GPU). Use
``--rounds 3`` there: the first round includes capturing the graphs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H  # noqa: E402

TEXT = "Hello, my name is Suno. And, uh, I like pizza. But I also have other interests such as playing tic tac toe."
BATCH_TEXTS = [
    TEXT,
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Bark can also laugh, sigh and hum a little tune when it wants to.",
    "Please leave a message after the tone, and we will call you back.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "Numbers like forty two are read out in full by the text model.",
    "A short sentence.",
    "Every batch item keeps its own voice, its own seed and its own length.",
]


def run_round(runners: list[H.Runner], text: str, voice, n_tokens: int, seed: int, rotate: int,
              device: str = "cpu") -> tuple[dict[str, dict[str, H.StageTiming]], dict[str, dict[str, np.ndarray]]]:
    """One round, interleaved by stage: every implementation's semantic stage back to back (in a rotating order),
    then every coarse stage on its own semantic tokens, and so on. Load from other processes then hits all
    implementations of a stage alike, which keeps the ratios honest on a shared machine.

    Returns the timings and every implementation's tokens per stage."""
    order = runners[rotate % len(runners):] + runners[: rotate % len(runners)]
    timings: dict[str, dict[str, H.StageTiming]] = {r.name: {} for r in runners}
    tokens: dict[str, dict[str, np.ndarray]] = {r.name: {} for r in runners}
    for r in order:
        tokens[r.name]["semantic"], timings[r.name]["semantic"] = H.time_stage(
            lambda: r.semantic(text, voice, seed, n_tokens), len, device)
    for r in order:
        tokens[r.name]["coarse"], timings[r.name]["coarse"] = H.time_stage(
            lambda: r.coarse(tokens[r.name]["semantic"], voice, seed + 1), lambda x: x.size, device)
        if tokens[r.name]["coarse"].shape[1] != H.expected_lengths(n_tokens)[1]:
            raise RuntimeError(f"{r.name}: made {tokens[r.name]['coarse'].shape[1]} coarse frames")
    for r in order:
        tokens[r.name]["fine"], timings[r.name]["fine"] = H.time_stage(
            lambda: r.fine(tokens[r.name]["coarse"], voice, seed + 2), lambda x: x[2:].size, device)
    for r in order:
        if r.decode is not None:
            _, timings[r.name]["decode"] = H.time_stage(lambda: r.decode(tokens[r.name]["fine"]), len, device)
    return timings, tokens


def same_tokens(rounds: list[dict[str, dict[str, np.ndarray]]], name: str) -> str:
    """How many rounds gave exactly the reference's tokens, per stage (each stage fed its own earlier tokens)."""
    parts = []
    for stage in ("semantic", "coarse", "fine"):
        same = sum(np.array_equal(r[name][stage], r["reference"][stage]) for r in rounds)
        parts.append(f"{stage} {same}/{len(rounds)}")
    return ", ".join(parts)


def machine(device: str = "cpu") -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f"{torch.cuda.get_device_name(device)}, " if torch.device(device).type == "cuda" else ""
    return (f"{gpu}{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}), Python {platform.python_version()}")


def print_table(results: dict[str, list[dict[str, H.StageTiming]]], audio_s: float) -> None:
    """Per implementation and stage: median wall seconds, tokens/s, real-time factor, memory, CPU seconds, and the
    reference's time over this one's (wall and CPU), from the same rounds."""
    ref = results.get("reference")
    header = (f"{'implementation':<16} {'stage':<9} {'seconds':>8} {'tok/s':>8} {'RTF':>7} {'peak MB':>8} {'+MB':>6} "
              f"{'cpu s':>7} {'vs ref':>7} {'cpu vs ref':>10}")
    print(header)
    print("-" * len(header))

    def totals(rounds, stages, attr):
        return [sum(getattr(r[s], attr) for s in stages if s in r) for r in rounds]

    for name, rounds in results.items():
        stages = [s for s in H.STAGES if s in rounds[0]]
        for stage in [*stages, "total"]:
            use = stages if stage == "total" else [stage]
            secs = statistics.median(totals(rounds, use, "seconds"))
            cpu = statistics.median(totals(rounds, use, "cpu_seconds"))
            peak = max(r[s].peak_mb for r in rounds for s in use)
            delta = "" if stage == "total" else f"{max(r[stage].delta_mb for r in rounds):6.0f}"
            toks = rounds[0][stage].tokens if stage not in ("total", "decode") else None
            ratio = cpu_ratio = ""
            if ref is not None and all(s in ref[0] for s in use):
                ratio = f"{statistics.median(totals(ref, use, 'seconds')) / secs:6.2f}x"
                cpu_ratio = f"{statistics.median(totals(ref, use, 'cpu_seconds')) / cpu:9.2f}x"
            tps = f"{toks / secs:8.1f}" if toks else f"{'':>8}"
            print(f"{name:<16} {stage:<9} {secs:8.2f} {tps} {secs / audio_s:7.2f} {peak:8.0f} {delta:>6} {cpu:7.1f} "
                  f"{ratio:>7} {cpu_ratio:>10}")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="bark (large) shapes: 24 layers, 1024 wide")
    parser.add_argument("--seconds", type=float, default=3.0, help="audio length (fixed token counts)")
    parser.add_argument("--voice", default="v2/en_speaker_6", help="shared voice preset, or 'none'")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions (median reported)")
    parser.add_argument("--only", default="reference,transformers,exact,fast", help="implementations to run")
    parser.add_argument("--batch", type=int, default=0, help="also time N texts as one fast-mode batch vs N single runs")
    parser.add_argument("--shortcuts", action="store_true",
                        help="in the batch comparison, also take the context shortcuts fast mode does not: coarse "
                             "history 315, fine windows not padded to 1024 frames")
    parser.add_argument("--workdir", default=None, help="where to write the random checkpoints (default: a temp dir)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    parser.add_argument("--isa", choices=sorted(H.ISA_CAPS), default=None,
                        help="run everything (the reference too) as on a CPU with only this instruction set: re-runs "
                             "this script in a child process with each library's ISA cap set")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for every implementation (default: torch's; 1 makes CPU seconds a "
                             "fair measure on a machine shared with other work)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.isa is not None and not os.environ.get("BARKKIT_BENCH_ISA"):
        sys.exit(H.run_with_isa(args.isa))
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA GPU here")
    warnings.filterwarnings("ignore")
    size = "large" if args.large else "small"
    n_tokens = H.semantic_tokens_for(args.seconds)
    n_frames = H.expected_lengths(n_tokens)[1]
    audio_s = n_frames / H.COARSE_RATE_HZ
    voice = H.load_voice(args.voice)
    only = args.only.split(",")
    print(f"machine: {machine(args.device)}")
    print(f"instruction sets run: {H.libraries_isa()}")
    print(f"bark-{size} shapes, random weights; voice {args.voice}; {n_tokens} semantic tokens, {n_frames} coarse "
          f"frames = {audio_s:.2f} s of audio; {args.rounds} round(s)\n")

    tmp = tempfile.TemporaryDirectory(dir=args.workdir)
    folder = Path(tmp.name)
    t0 = time.perf_counter()
    models = H.build_reference_models(size)
    H.write_checkpoints(models, folder, size)
    from barkkit_encodec.checkpoints import save_encodec_checkpoint

    _, codec = save_encodec_checkpoint(folder)
    print(f"built and wrote weights in {time.perf_counter() - t0:.1f} s\n")

    runners: list[H.Runner] = []
    if "reference" in only:
        runners.append(H.reference_runner(models, codec, args.device))
    if "transformers" in only:
        runners.append(H.transformers_runner(models, size, args.device))
    if "exact" in only:
        runners.append(H.barkkit_runner(folder, "exact", folder, args.device))
    if "fast" in only or args.batch:
        fast = H.barkkit_runner(folder, "fast", folder, args.device)
        if "fast" in only:
            runners.append(fast)

    results: dict[str, list[dict[str, H.StageTiming]]] = {r.name: [] for r in runners}
    outputs: list[dict[str, dict[str, np.ndarray]]] = []
    for round_ in range(args.rounds):
        t = time.perf_counter()
        timings, tokens = run_round(runners, TEXT, voice, n_tokens, seed=round_, rotate=round_, device=args.device)
        for name in results:
            results[name].append(timings[name])
        outputs.append(tokens)
        print(f"  round {round_ + 1}: {time.perf_counter() - t:.1f} s", flush=True)
    print()
    print_table(results, audio_s)
    if "reference" in results:
        for name in results:
            if name != "reference":
                print(f"rounds in which {name} made exactly the reference's tokens: {same_tokens(outputs, name)}")
        print()

    if args.batch:
        batch_throughput(fast, args.batch, voice, n_tokens, audio_s, shortcuts=args.shortcuts)


def batch_throughput(runner: H.Runner, n: int, voice, n_tokens: int, audio_s: float, *,
                     shortcuts: bool = False) -> None:
    """N texts (own seeds; voices alternate between the given one and none) as one batch vs one at a time.

    Both through barkkit's stages (``run`` / ``run_batch``), semantic -> coarse -> fine, tokens only. ``shortcuts``:
    a coarse history of 315 tokens and fine windows not padded to 1024 frames (``shortcuts.py``), which cut per-row compute but move random models' outputs far (``benchmarks/agreement.py``).
    """
    from shortcuts import unpadded

    from barkkit_bark.fine import FineOptions, generate_fine

    stages = runner.extra["stages"]
    texts = [BATCH_TEXTS[i % len(BATCH_TEXTS)] for i in range(n)]
    voices = [H.to_voice(voice) if i % 2 == 0 else None for i in range(n)]
    seeds = list(range(100, 100 + n))
    sem_opts = {"allow_early_stop": False, "max_gen_duration_s": (n_tokens - 0.5) / H.SEMANTIC_RATE_HZ}
    coarse_opts = {"max_coarse_history": 315} if shortcuts else {}

    def fine(coarses: list, vs: list, gs: list[torch.Generator]) -> list[np.ndarray]:
        if shortcuts:  # each row's windows without the padding frames
            model = stages["fine"].model
            return [generate_fine(unpadded(model, c.array, v), [c.array], [v], [g], FineOptions(), trim_last_layer=True)[0]
                    for c, v, g in zip(coarses, vs, gs)]
        return [f.array for f in stages["fine"].run_batch(coarses, voices=vs, generators=gs)]

    def gens() -> list[torch.Generator]:
        return [torch.Generator(runner.extra["device"]).manual_seed(s) for s in seeds]

    device = runner.extra["device"]
    t0 = time.perf_counter()
    singles = []
    with H.engine_clock(device) as single_parts:
        for text, v, g in zip(texts, voices, gens()):
            sem = stages["semantic"].run(text, voice=v, generator=g, **sem_opts)
            coarse = stages["coarse"].run(sem, voice=v, generator=g, **coarse_opts)
            singles += fine([coarse], [v], [g])
    t_single = time.perf_counter() - t0

    def batched() -> tuple[list, float, float, float]:
        g = gens()
        t0 = time.perf_counter()
        sems = stages["semantic"].run_batch(texts, voices=voices, generators=g, **sem_opts)
        t_sem = time.perf_counter() - t0
        coarses = stages["coarse"].run_batch(sems, voices=voices, generators=g, **coarse_opts)
        t_coarse = time.perf_counter() - t0 - t_sem
        fines = fine(coarses, voices, g)
        return fines, time.perf_counter() - t0, t_sem, t_coarse

    if stages["coarse"].decode_steps != "eager":
        batched()  # compile or capture the decode steps for this batch size first (the single runs' are ready)
    with H.engine_clock(device) as batch_parts:
        fines, t_batch, t_sem, t_coarse = batched()
    same = np.mean([np.mean(a == b) for a, b in zip(fines, singles)])
    what = runner.name + (", with the shortcuts" if shortcuts else "")
    print(f"batch of {n} ({what}, tokens only): {t_batch:.1f} s batched (semantic {t_sem:.1f}, coarse "
          f"{t_coarse:.1f}, fine {t_batch - t_sem - t_coarse:.1f}) vs {t_single:.1f} s one at a time: "
          f"{t_single / t_batch:.2f}x throughput; {n * audio_s / t_batch:.2f} s of audio per second; "
          f"fine tokens equal to the single runs: {same:.3f}")
    # Prefills and fine passes are each one row's compute, batched or not; only decode steps are shared. So even
    # if the batch's decode steps cost nothing, it could not beat this ratio:
    print("where the time goes (s): " + ", ".join(
        f"{part} {single_parts[part]:.1f} alone / {batch_parts[part]:.1f} batched" for part in H.ENGINE_PARTS)
        + f", the rest {t_single - sum(single_parts.values()):.1f} / {t_batch - sum(batch_parts.values()):.1f}")
    print(f"with free batched decode steps the batch would still take {t_batch - batch_parts['decode']:.1f} s: "
          f"{t_single / (t_batch - batch_parts['decode']):.2f}x at most")


if __name__ == "__main__":
    main()
