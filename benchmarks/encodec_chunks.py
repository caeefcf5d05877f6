"""Chunked vs one-pass EnCodec decoding: peak memory, time and agreement, each setting in a fresh process.

    python benchmarks/encodec_chunks.py [--seconds 60] [--chunks 0,75,250,750]

Random weights (the architecture is fixed, so speed and memory are those of the real model). Chunk 0 = one pass.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from barkkit_encodec.checkpoints import load_codec
folder, frames, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
codec = load_codec(folder)
codes = torch.from_numpy(np.random.default_rng(0).integers(0, 1024, (8, 1, frames)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with torch.inference_mode():
    audio = codec.decode(codes, chunk_frames=chunk or None)[0, 0].numpy()
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
np.save(sys.argv[4], audio)
print(json.dumps({"chunk": chunk, "seconds": elapsed, "peak_mb": peak / 1024, "growth_mb": (peak - before) / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--chunks", default="0,75,250,750")
    args = parser.parse_args()
    import numpy as np

    from barkkit_encodec.checkpoints import write_encodec_checkpoint

    frames = int(args.seconds * 75)
    with tempfile.TemporaryDirectory() as folder:
        write_encodec_checkpoint(folder)
        results, outputs = [], {}
        for chunk in (int(c) for c in args.chunks.split(",")):
            out = f"{folder}/audio_{chunk}.npy"
            line = subprocess.run([sys.executable, "-c", CHILD, folder, str(frames), str(chunk), out],
                                  check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results.append(json.loads(line))
            outputs[chunk] = np.load(out)
        reference = outputs[results[0]["chunk"]]
        peak = float(np.abs(reference).max())
        print(f"{frames} frames ({args.seconds:.0f} s of audio), peak {peak:.4f}")
        print("chunk_frames  time_s  peak_rss_mb  decode_growth_mb  max_abs_diff_vs_first  identical")
        for result in results:
            out = outputs[result["chunk"]]
            diff = float(np.abs(out - reference).max())
            print(f"{result['chunk'] or 'one pass':>12}  {result['seconds']:6.2f}  {result['peak_mb']:11.0f}  "
                  f"{result['growth_mb']:16.0f}  {diff:21.3g}  {np.array_equal(out, reference)}")


if __name__ == "__main__":
    main()
