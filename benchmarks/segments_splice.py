"""How close ``barkkit detect --segments`` puts the edges of Bark sentences spliced into human speech.

Builds splices as the test does (tests/classifiers/barkkit_detect: a Ydoit Bark sentence between stretches of
LibriSpeech speech, the Resemblyzer clips of ``../shared/data/detector``), scores them with ``Detector.windows``
and ``Detector.segments`` (what the CLI runs), and reports the share of splices with both edges within +-1 s and
+-1.5 s of the sentence's sounding part, and the median and 90th-percentile edge error. The truth is the sounding
part (50 ms frames above 3% of the clip's loudest frame): a clip's leading or trailing silence carries no trace.

    .venv/bin/python benchmarks/segments_splice.py [--limit 46] [--window 4 --hop 1] [--json out.json]
"""

from __future__ import annotations

import os

for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "detector"
RATE = 24_000


def sounding_part(samples: np.ndarray, rate: int = RATE, min_run: float = 0.25) -> tuple[float, float]:
    """(start, end) seconds of a clip's sounding part: 50 ms frames above 3% of the loudest frame's RMS, without a
    lone blip at either end (a run of sound shorter than ``min_run`` s after a pause of 0.5 s or more: some Bark clips
    end with a 0.1 s click after seconds of silence, which no detector can place; ``min_run=0`` keeps them)."""
    hop = int(0.05 * rate)
    frames = np.sqrt(np.mean(samples[: samples.shape[0] // hop * hop].reshape(-1, hop) ** 2, axis=1))
    sounding = np.flatnonzero(frames > 0.03 * frames.max())
    runs = np.split(sounding, np.flatnonzero(np.diff(sounding) > 10) + 1)  # runs of sound split by >= 0.5 s pauses
    while len(runs) > 1 and runs[0].size * 0.05 < min_run:
        runs = runs[1:]
    while len(runs) > 1 and runs[-1].size * 0.05 < min_run:
        runs = runs[:-1]
    return float(runs[0][0] * 0.05), float((runs[-1][-1] + 1) * 0.05)


def splices(limit: int, min_run: float = 0.25) -> list[tuple[str, np.ndarray, tuple[float, float]]]:
    """(name, samples at 24 kHz, truth) of up to ``limit`` splices: Bark sentences at varied offsets."""
    from barkkit.audio import load_audio

    with open(SHARED / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    bark = [r for r in rows if r["source"] == "Ydoit/bark" and float(r["duration_s"]) >= 2.5][::2][:limit]
    human = [load_audio(SHARED / r["path"], sample_rate=RATE) for r in rows if r["source"] == "resemble-ai/Resemblyzer"]
    pool = np.concatenate([h.samples for h in human])
    out = []
    for i, row in enumerate(bark):
        clip = load_audio(SHARED / row["path"], sample_rate=RATE).samples
        at = 5.0 + (i * 7919 % 60) / 10  # 5-11 s of human speech before the sentence, never on a whole second
        after = 6.0 + (i * 104729 % 50) / 10
        begin = int((i * 15 * RATE) % (pool.shape[0] - 40 * RATE))  # a different stretch of speech each time
        cut = begin + int(at * RATE)
        before_part, after_part = pool[begin:cut], pool[cut : cut + int(after * RATE)]
        samples = np.concatenate([before_part, clip, after_part]).astype(np.float32)
        s, e = sounding_part(clip, min_run=min_run)
        out.append((Path(row["path"]).name, samples, (at + s, at + e)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=46)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--hop", type=float, default=1.0)
    parser.add_argument("--keep-blips", action="store_true", help="count a lone click at a clip's end as sound")
    parser.add_argument("--json", type=Path, default=None, help="write every splice's truth and ranges here")
    args = parser.parse_args()
    from barkkit.audio import Audio
    from barkkit_detect import Detector

    detector = Detector.load()
    errors, records, t0, seconds = [], [], time.perf_counter(), 0.0
    for name, samples, truth in splices(args.limit, 0.0 if args.keep_blips else 0.25):
        audio = Audio(samples, RATE)
        windows = detector.windows(audio, args.window, args.hop)
        ranges = detector.segments(audio, windows, detector.threshold, args.window, args.hop)
        seconds += samples.shape[0] / RATE
        # the range that overlaps the sentence most (none: both edges count as the whole sentence off)
        overlap = [min(r["end"], truth[1]) - max(r["start"], truth[0]) for r in ranges]
        best = ranges[int(np.argmax(overlap))] if ranges and max(overlap) > 0 else None
        err = (abs(best["start"] - truth[0]), abs(best["end"] - truth[1])) if best else (truth[1] - truth[0],) * 2
        errors.append(err)
        records.append({"clip": name, "truth": truth, "ranges": ranges, "errors": err})
        found = [(r["start"], r["end"]) for r in ranges]
        print(f"{name:14s} truth {truth[0]:6.2f}-{truth[1]:6.2f}  ranges {found}  err {err[0]:.2f} {err[1]:.2f}")
    worst = np.array([max(e) for e in errors])
    every = np.array(errors).ravel()
    print(f"{len(errors)} splices: both edges within +-1 s {np.mean(worst <= 1.0):.0%} ({int(np.sum(worst <= 1.0))}), "
          f"+-1.5 s {np.mean(worst <= 1.5):.0%} ({int(np.sum(worst <= 1.5))}); edge error median {np.median(every):.2f} s, "
          f"90th percentile {np.percentile(every, 90):.2f} s; {seconds / (time.perf_counter() - t0):.0f}x real time")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
