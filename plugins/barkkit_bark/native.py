"""Fast mode's compiled CPU kernels (``csrc/``), built once per machine with its C++ compiler.

PyTorch ships no CPU kernel for the one thing a fast-mode decode step needs beyond its int8 linears: attention of
one query over a compact KV cache. Without it, each step upcasts every cached slot of its bf16 cache to a new fp32
tensor and reads that again (capped at AVX2, 1.9 of a coarse step's 8.8 ms went to the copy, 1.2 to the attention).
``decode_attention`` widens each cached row in registers as it reads it, and ``decode_attention_int8`` does so for
an int8 cache (a scale per row, head and slot: half a bf16 cache's bytes), writing the step's own key and value
into it first. ``gelu`` keeps a decode step's row on its thread (PyTorch's wakes its thread pool for 3072 values).
``decode_block`` runs a whole transformer block of a decode step (layer norms, fbgemm's int8 linears, attention over
the cache, GELU, residuals) in one call, bit for bit what the modules compute one operator at a time: their ~40 calls
from Python a block cost 1.4-2 ms of a 5-8 ms coarse step. ``attention`` (many queries, fp32) is chosen where
PyTorch runs 8-lane AVX2, and timed against PyTorch's elsewhere without bf16 units
(``kernels.native_attention_for``): register-blocked, it beats PyTorch's flash kernel, most on causal prompts.

The sources are compiled by ``torch.utils.cpp_extension`` (the compiler and ninja) the first time a process asks
for them, 10-25 s, and kept in torch's extension cache (``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``),
so later loads take milliseconds. Where they cannot be built (no compiler, a read-only cache) or ``BARKKIT_NATIVE=0``,
``native_ops`` returns None and fast mode keeps PyTorch's kernels, as ``barkkit info`` then says.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

__all__ = ["native_ops", "decode_attention", "decode_attention_int8", "decode_block", "attention", "gelu", "described",
           "HEAD_SIZES", "GELU_MAX_VALUES"]

HEAD_SIZES = (8, 16, 32, 64, 128)  # what both attention kernels are compiled for (Bark's models: 64)
# Most values fast mode sends through the native GELU (a decode batch of 8 rows is 24576); more go to PyTorch's
# kernel, which splits them over its thread pool.
GELU_MAX_VALUES = 1 << 15

_ATTENTION = "barkkit_bark.native (the int8 cache read at its own size, widened in registers)"
_GELU = "barkkit_bark.native (a decode step's rows on one thread)"
_BLOCK = "barkkit_bark.native (each block in one call: layer norms, fbgemm's int8 linears, attention, MLP)"
_MANY_QUERIES = "fp32, barkkit_bark.native (6 x 16 register tiles, online softmax, causal tiles stop at the diagonal)"

_CSRC = Path(__file__).parent / "csrc"
_SOURCES = [str(_CSRC / name) for name in ("decode_attention.cpp", "attention.cpp", "gelu.cpp", "decode_block.cpp")]
_reason: str | None = None


def _flags() -> list[str]:
    """-O3, and on x86-64 AVX2 + FMA where the CPU has them (the vector code then runs 8 lanes a register)."""
    # torch rebuilds when sources or flags change, so the flags carry a digest of every file in csrc/, headers too
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sorted(_CSRC.iterdir()))).hexdigest()[:16]
    flags = ["-O3", "-std=c++17", f"-DBARKKIT_CSRC={digest}", *_openmp()]
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            cpu = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpu = ""
        if " avx2" in cpu and " fma" in cpu:
            flags += ["-mavx2", "-mfma"]
    return flags


def _openmp() -> list[str]:
    """-fopenmp where torch runs OpenMP from a libgomp the compiler links against (Linux); elsewhere (Apple's clang
    has no OpenMP) at::parallel_for's pragmas are left out and the kernels run on the calling thread."""
    return ["-fopenmp"] if platform.system() == "Linux" else []


@functools.cache
def native_ops() -> object | None:
    """``torch.ops.barkkit_native`` after building or loading the kernels, or None where they cannot be had
    (``described`` then says why)."""
    global _reason
    if _switched_off():
        _reason = "BARKKIT_NATIVE=0"
        return None
    _put_ninja_on_path()
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its import warns of no CUDA runtime: these kernels are CPU-only
    try:
        from torch.utils import cpp_extension

        cpp_extension.load("barkkit_native", _SOURCES, extra_cflags=_flags(), extra_ldflags=_openmp(),
                           is_python_module=False, verbose=False)
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as error:
        _reason = f"native kernel not built: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        return None
    finally:
        quiet.setLevel(level)
    return torch.ops.barkkit_native


def _put_ninja_on_path() -> None:
    """torch builds with the ``ninja`` on PATH; a virtual environment that was not activated has barkkit's own (the
    PyPI package) outside it."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _switched_off() -> bool:
    return os.environ.get("BARKKIT_NATIVE", "1") == "0"


def described(causal: bool, head_size: int | None = None, many_queries: bool | None = False,
              blocks: bool = True) -> dict[str, str]:
    """What fast mode computes here through these kernels, for ``barkkit info``: GELU, for a causal model its KV
    cache and how decode steps attend over it, and unless ``many_queries`` is False (``kernels.native_attention_for``;
    None: timed at load) the attention of prefills and fine passes. ``head_size`` None: the plan, nothing built
    (``kernel_plan``); else as built (or not) now, for a model with that head size. ``blocks``: whether its linears
    decode through fbgemm, which a decode step's block in one call (``decode_block``) needs."""
    if _switched_off():
        built, why = False, "BARKKIT_NATIVE=0"
    elif head_size is None:
        built, why = None, ""
    else:
        built, why = native_ops() is not None, _reason

    def choice(kernel: str, fallback: str, fits: bool = True) -> str:
        if built is None:
            return f"{kernel} where a C++ compiler builds it (once per machine), else {fallback}"
        return kernel if built and fits else f"{fallback} ({why or f'no native kernel for head size {head_size}'})"

    kernels = {"gelu": choice(_GELU, "PyTorch's")}
    fits = head_size is None or head_size in HEAD_SIZES
    if many_queries is None:
        kernels["attention"] = f"{_MANY_QUERIES} where timed faster than PyTorch's at load, else fp32 (PyTorch's)"
    elif many_queries:
        kernels["attention"] = choice(_MANY_QUERIES, "fp32 (PyTorch's kernel)", fits)
    if causal:
        kernels["decode_attention"] = choice(_ATTENTION, "upcast per step", fits)
        kernels["kv_cache"] = choice("int8, a scale per row, head and slot", "bf16", fits)
        kernels["decode_step"] = (choice(_BLOCK, "module by module", fits) if blocks
                                  else "module by module (the linears do not decode through fbgemm)")
    return kernels


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, first: list[int], stop: int) -> torch.Tensor:
    """One query per row over bf16 caches: q (B, nh, 1, hs) fp32, k and v (B, nh, S_max, hs) bf16 (whole caches);
    row b attends to slots [first[b], stop) -> (B, nh, 1, hs) fp32, the same numbers as PyTorch's fp32 attention over
    the upcast slots up to float rounding. Needs ``native_ops()``."""
    ops = native_ops()
    assert ops is not None, "decode_attention needs the native kernels (native_ops() is None)"
    return ops.decode_attention(q, k, v, first, stop).transpose(1, 2)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU with the exact erf of fp32 ``x`` (any shape), within ~2e-7 of ``torch.nn.functional.gelu``, on the
    calling thread: for a decode step's rows (up to ``GELU_MAX_VALUES``). Needs ``native_ops()``."""
    ops = native_ops()
    assert ops is not None, "gelu needs the native kernels (native_ops() is None)"
    return ops.gelu(x.contiguous())


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """fp32 attention of many queries: q (B, nh, Tq, hs), k and v (B, nh, Tk, hs), each with a contiguous last dim;
    ``causal``: query i sees keys [0, i] (Tq == Tk) -> (B, nh, Tq, hs) (a view of a (B, Tq, nh, hs) tensor), the
    same numbers as ``scaled_dot_product_attention`` up to float rounding. Needs ``native_ops()``."""
    ops = native_ops()
    assert ops is not None, "attention needs the native kernels (native_ops() is None)"
    return ops.attention(q, k, v, causal).transpose(1, 2)


def decode_attention_int8(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, cache: object, first: list[int],
                          slot: int) -> torch.Tensor:
    """One query per row over an int8 cache (``KVCache`` with ``k_scale``, ``v_scale``): the new keys and values
    k_new, v_new (B, nh, 1, hs) fp32 are quantized into ``slot`` (a scale per row, head and slot), then row b attends
    to slots [first[b], slot] -> (B, nh, 1, hs) fp32. Needs ``native_ops()``."""
    ops = native_ops()
    assert ops is not None, "decode_attention_int8 needs the native kernels (native_ops() is None)"
    return ops.decode_attention_int8(q, k_new, v_new, cache.k, cache.v, cache.k_scale, cache.v_scale, first,
                                     slot).transpose(1, 2)


def decode_block(weights: tuple, x: torch.Tensor, cache: object, first: list[int], slot: int) -> torch.Tensor:
    """One decode step of a transformer block in one call: x (B, 1, C) fp32, one new position per row into cache
    slot ``slot`` of a ``KVCache``, int8 or fp32 (row b attends to slots [first[b], slot]; ``first`` empty: every
    row from slot 0) -> (B, 1, C). ``weights``: the block's layer norms and fbgemm-packed int8 linears with the
    activation levels they decode with, as ``model.decode_block_weights`` gathers them. Needs ``native_ops()``."""
    ops = native_ops()
    assert ops is not None, "decode_block needs the native kernels (native_ops() is None)"
    B, T, C = x.shape
    y = ops.decode_block(x.view(B, C), *weights[:-1], cache.k, cache.v, cache.k_scale, cache.v_scale, first, slot,
                         weights[-1], GELU_MAX_VALUES)
    return y.view(B, T, C)
