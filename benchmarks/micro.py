"""Microbenchmarks: which fast-mode ideas pay on this CPU.

    python benchmarks/micro.py [--quick]

Times one linear layer at Bark's shapes (rows M = 1..8 for decode, 256/887/1024 for prefill and the fine stage)
in fp32, int8 dynamic quantization (``torch.ao.nn.quantized.dynamic.Linear``, fbgemm), bf16 and fp16 weights, and
the cost of ``torch.compile`` on one decoder block. Prints GFLOP/s and the ratio to fp32.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768), (768, 10048)]


def bench(fn, min_time: float = 0.2, min_reps: int = 3) -> float:
    """Median-of-runs seconds for one call of ``fn``."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def linear_table(rows: list[int], shapes: list[tuple[int, int]]) -> None:
    print(f"{'M':>5} {'K x N':>12} | {'fp32 ms':>8} {'GF/s':>6} | {'int8 ms':>8} {'x':>5} | {'bf16 ms':>8} {'x':>5} | {'fp16 ms':>8} {'x':>5}")
    for k, n in shapes:
        lin = nn.Linear(k, n, bias=False)
        q = torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)[0]
        w16 = lin.weight.detach().to(torch.bfloat16)
        wh = lin.weight.detach().to(torch.float16)
        for m in rows:
            x = torch.randn(m, k)
            x16 = x.to(torch.bfloat16)
            xh = x.to(torch.float16)
            with torch.inference_mode():
                t32 = bench(lambda: F.linear(x, lin.weight))
                t8 = bench(lambda: q(x))
                tb = bench(lambda: F.linear(x16, w16))
                th = bench(lambda: F.linear(xh, wh))
            gf = 2 * m * k * n / t32 / 1e9
            print(
                f"{m:>5} {f'{k}x{n}':>12} | {t32 * 1e3:8.3f} {gf:6.1f} | {t8 * 1e3:8.3f} {t32 / t8:5.2f} | "
                f"{tb * 1e3:8.3f} {t32 / tb:5.2f} | {th * 1e3:8.3f} {t32 / th:5.2f}"
            )


def compile_cost() -> None:
    """Compile time and per-call gain of torch.compile on a decode-sized 12-layer MLP+attention stand-in."""

    class Block(nn.Module):
        def __init__(self, d: int = 768) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(self.ln1(x)).chunk(3, -1)
            x = x + self.proj(v * torch.sigmoid(q * k))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    model = nn.Sequential(*[Block() for _ in range(12)]).eval()
    x = torch.randn(1, 1, 768)
    with torch.inference_mode():
        eager = bench(lambda: model(x))
        t0 = time.perf_counter()
        compiled = torch.compile(model)
        compiled(x)
        ctime = time.perf_counter() - t0
        tc = bench(lambda: compiled(x))
    print(f"torch.compile 12 blocks, 1 row: eager {eager * 1e3:.2f} ms, compiled {tc * 1e3:.2f} ms, compile {ctime:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow: compiles)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    rows = [1, 8, 887] if args.quick else [1, 2, 4, 8, 64, 256, 887, 1024]
    linear_table(rows, SHAPES[:2] if args.quick else SHAPES)
    if args.compile:
        compile_cost()


if __name__ == "__main__":
    main()
