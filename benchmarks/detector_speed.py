"""How much faster than real time the Bark-audio detector scores files, on one CPU core.

Times ``Detector.score(path)`` end to end (reading and decoding the file, resampling to 16 kHz, features, the
classifier) with every thread pool limited to one thread, over the shared detector clips when present (FLAC at 16,
22.05 and 24 kHz) plus 44.1 kHz stereo MP3 and Ogg copies written to a temporary folder, and reports audio seconds
per wall-clock second. The goal is at least 100x real time.

    .venv/bin/python benchmarks/detector_speed.py [--limit 60] [--repeats 3]
"""

from __future__ import annotations

import os

for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[variable] = "1"  # before numpy, torch or numba load their thread pools

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "detector"


def _test_signal(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 25))
    return (0.2 * voice * np.clip(np.sin(2 * np.pi * 3 * t), 0, None) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="shared clips to time (spread over all sources)")
    parser.add_argument("--repeats", type=int, default=3, help="passes; the fastest counts")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass
    from threadpoolctl import threadpool_limits

    from barkkit_detect import Detector

    threadpool_limits(1)
    detector = Detector.load()
    with tempfile.TemporaryDirectory() as tmp:
        files: list[Path] = []
        if SHARED.is_dir():
            clips = sorted(p for p in SHARED.rglob("*.flac"))
            files += clips[:: max(1, len(clips) // args.limit)][: args.limit]
        for i, (suffix, fmt, subtype) in enumerate(((".mp3", "MP3", "MPEG_LAYER_III"), (".ogg", "OGG", "VORBIS"), (".wav", "WAV", "PCM_16"))):
            path = Path(tmp) / f"stereo_44k{suffix}"
            signal = _test_signal(20.0, 44_100, i)
            soundfile.write(path, np.stack([signal, signal], axis=1), 44_100, format=fmt, subtype=subtype)
            files.append(path)
        durations = {p: soundfile.info(str(p)).duration for p in files}
        seconds = sum(durations.values())
        detector.score(files[0])  # imports and first-call set-up are not what we measure
        best = float("inf")
        by_kind: dict[str, float] = {}
        for _ in range(args.repeats):
            start = time.perf_counter()
            for path in files:
                t0 = time.perf_counter()
                detector.score(path)
                kind = path.suffix
                by_kind[kind] = by_kind.get(kind, 0.0) + time.perf_counter() - t0
            best = min(best, time.perf_counter() - start)
    print(f"detector {detector.name} ({detector.features.name} v{detector.features.version}), 1 thread")
    print(f"{len(files)} files, {seconds:.1f} s of audio, best of {args.repeats}: {best:.2f} s -> {seconds / best:.0f}x real time")
    for kind, total in sorted(by_kind.items()):
        kind_seconds = sum(d for p, d in durations.items() if p.suffix == kind)
        print(f"  {kind:6s} {kind_seconds * args.repeats / total:8.0f}x real time (mean over passes)")


if __name__ == "__main__":
    main()
