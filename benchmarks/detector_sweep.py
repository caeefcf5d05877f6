"""Bark played fast or slow (or written with a wrong rate): how much of it the bundled detector still flags.

Every fourth Ydoit/bark clip of the shared data (35 clips) is read at its own rate times each speed (its samples
unchanged, as a sped-up copy or a wrong header gives them), and at the usual wrong header rates (24 kHz audio
written as 22.05 kHz, 22.05 kHz read as 24 kHz); prints the share flagged and the median comb spacing found.
These clips are in the bundled model's training data: the figure says whether the spacing search holds, not what
recall on unseen Bark is (that is the leave-one-source-out report of ``barkkit detector train``).

    .venv/bin/python benchmarks/detector_sweep.py [--speeds 0.95,0.97,...]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "detector"
SPEEDS = (1.0, 0.95, 0.97, 0.99, 0.999, 1.001, 1.01, 1.03, 1.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", default=",".join(map(str, SPEEDS)), help="comma-separated playback speeds")
    args = parser.parse_args()
    from barkkit import Audio
    from barkkit.audio import load_audio
    from barkkit_detect import Detector

    if not (SHARED / "manifest.csv").is_file():
        raise SystemExit(f"{SHARED}: no shared detector data here")
    with open(SHARED / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["source"] == "Ydoit/bark"][::4]
    clips = [load_audio(SHARED / r["path"]) for r in rows]
    detector = Detector.load()
    cases = [(f"speed {s}", float(s)) for s in args.speeds.split(",")] + [("written at 22.05 kHz", 22_050 / 24_000), ("24 kHz read as 26.1 kHz", 24_000 / 22_050)]
    print(f"{len(clips)} Ydoit/bark clips, threshold {detector.threshold:.3f}")
    for name, factor in cases:
        results = [detector.detect(Audio(a.samples, int(round(a.sample_rate * factor)))) for a in clips]
        flagged = [r for r in results if r["is_bark"]]
        spacing = np.median([r["comb_spacing_hz"] for r in flagged]) if flagged else float("nan")
        print(f"{name:26s} flagged {100 * len(flagged) / len(results):5.1f}%   median spacing {spacing:7.2f} Hz (expected {600 * factor:7.2f})")


if __name__ == "__main__":
    main()
