"""CPU kernels for Bark's transformers, chosen by what the machine has: int8 linears, bf16 attention, the choice.

What decides (``cpu_features``): the instruction sets torch and its libraries will actually run, not only what the
CPU has. ``ATEN_CPU_CAPABILITY`` caps ATen's vectorised kernels, ``FBGEMM_ENABLE_INSTRUCTIONS`` fbgemm's int8 ones,
``ONEDNN_MAX_CPU_ISA`` oneDNN's (bf16 matrix products) and ``MKL_ENABLE_INSTRUCTIONS`` MKL's fp32 ones; so an
AVX-512 machine told ``AVX2`` everywhere runs, and chooses, what an AVX2-only CPU would.

The choices, measured (``benchmarks/micro.py``; a bark-small decode step = 48 linears, 85 M weights, one row):
- One-token decode steps are bound by reading the weights. fbgemm's int8 kernel with a fixed input scale reads a
  quarter of fp32's bytes on every x86 ISA it has (AVX2, AVX-512, VNNI): 3.5-3.9 ms against 18 ms in fp32 on one
  core of an AMD EPYC, with AVX-512 VNNI and forced to AVX2 alike. Without VNNI, fbgemm multiplies u8 x s8 pairs
  into saturating int16 sums (``vpmaddubsw``), so there activations are quantized to 7 bits (u7: pairs sum to at
  most 2 x 127 x 128, which fits) instead of 8. ``torch._int_mm`` (oneDNN) is exact but costs 11 ms with VNNI and
  21 ms without (as much as fp32), and ``_weight_int8pack_mm`` 52 ms: neither is chosen where fbgemm exists.
  Where it does not (ARM: no fbgemm), ``torch._int_mm`` and fp32 are timed on the model at load time
  (``measure``) and the faster is kept.
- Many rows (prefills, fine passes): fbgemm's dynamic int8 GEMM, ~2x fp32 without VNNI and ~6x with it.
- Attention of many queries in bf16 only where oneDNN multiplies bf16 in hardware (AVX512-BF16, AMX): elsewhere
  bf16 is emulated, 20x slower than fp32 (887-position prefill: 450 ms against 31 ms a layer, forced AVX2).

Shapes: M rows, K inputs, N outputs; B batch, nh heads, T queries, S keys, hs head size.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from barkkit_bark.native import attention

__all__ = ["CpuFeatures", "cpu_features", "DECODE_KERNELS", "decode_kernel_for", "many_rows_kernel_for",
           "native_attention_for", "native_attention_measured_faster",
           "Int8Linear", "quantize_int8", "OneDnnLinear", "onednn_linear_works", "onednn_twin",
           "fast_kernels", "forced_decode_kernel", "faster_decode_kernel",
           "blocked_attention_bf16", "measure", "kernel_cache_path", "decode_step_timer", "int_mm_works"]

# How an Int8Linear runs one-token rows: fbgemm with 8-bit (VNNI) or 7-bit activations, oneDNN's exact int32 sums,
# or the fp32 weights (kept only where no int8 kernel is faster).
DECODE_KERNELS = ("fbgemm_u8", "fbgemm_u7", "int_mm", "fp32")


@dataclass(frozen=True)
class CpuFeatures:
    """What this process's torch will run on this CPU (after any ``*_ISA`` / ``*_INSTRUCTIONS`` caps)."""

    cpu: str  # the CPU's model name
    arch: str  # x86_64, aarch64, ...
    aten: str  # ATen's vectorised kernels: AVX512, AVX2, DEFAULT, SVE256, ...
    fbgemm: str | None  # fbgemm's int8 kernels: "avx512_vnni", "avx512", "avx2"; None where fbgemm is absent
    bf16_matmul: bool  # oneDNN multiplies bf16 matrices in hardware (AVX512-BF16 or AMX), not emulated
    caps: tuple[tuple[str, str], ...]  # the environment variables that capped an ISA, as (name, value)
    int8_exact_mm: bool = False  # torch._int_mm (oneDNN) sums int8 products exactly: VNNI (AVX-512 or AVX), or ARM

    @property
    def vnni(self) -> bool:
        """int8 dot products summed in int32 (AVX512-VNNI): full 8-bit activations cannot saturate."""
        return self.fbgemm == "avx512_vnni"

    def describe(self) -> str:
        caps = ", ".join(f"{k}={v}" for k, v in self.caps) or "none"
        return (f"{self.cpu} ({self.arch}); ATen {self.aten}; fbgemm {self.fbgemm or 'absent'}; oneDNN int8 "
                f"{'exact (VNNI)' if self.int8_exact_mm else 'saturating'}; bf16 matrix units "
                f"{'yes' if self.bf16_matmul else 'no'}; ISA caps: {caps}")


_CAP_VARS = ("ATEN_CPU_CAPABILITY", "FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
# fbgemm's own names for FBGEMM_ENABLE_INSTRUCTIONS (fbgemm/src/Utils.cc), by what they allow
_FBGEMM_CAPS = {"AVX2": "avx2", "AVX512": "avx512", "AVX512_256": "avx512", "AVX512_E1": "avx512_vnni",
                "AVX512_E1_256": "avx512_vnni"}
_FBGEMM_ORDER = ("avx2", "avx512", "avx512_vnni")


def _probe(name: str) -> bool:
    """One of ``torch.cpu``'s CPUID probes (private, so False where this torch lacks it)."""
    return bool(getattr(torch.cpu, name, lambda: False)())


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> CpuFeatures:
    """Detect the ISAs this process runs: the CPU's features, capped by the libraries' environment variables."""
    caps = tuple((name, os.environ[name]) for name in _CAP_VARS if os.environ.get(name))
    fbgemm = None
    if "fbgemm" in torch.backends.quantized.supported_engines and _probe("_is_avx2_supported"):
        fbgemm = "avx512_vnni" if _probe("_is_vnni_supported") else "avx512" if _probe("_is_avx512_supported") else "avx2"
        cap = _FBGEMM_CAPS.get(os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper())
        if cap is not None and _FBGEMM_ORDER.index(cap) < _FBGEMM_ORDER.index(fbgemm):
            fbgemm = cap
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    bf16 = ((_probe("_is_avx512_bf16_supported") or _probe("_is_amx_tile_supported"))
            and any(word in onednn_cap for word in ("ALL", "BF16", "AMX", "FP16", "AVX10")))
    return CpuFeatures(cpu=_cpu_name(), arch=platform.machine(), aten=torch.backends.cpu.get_cpu_capability(),
                       fbgemm=fbgemm, bf16_matmul=bf16, caps=caps, int8_exact_mm=int_mm_works())


def many_rows_kernel_for(features: CpuFeatures) -> str:
    """The int8 kernel for many rows at once (prefills, fine passes): fbgemm's dynamic GEMM, except where only
    oneDNN has VNNI (CPUs with AVX-VNNI but no AVX-512, e.g. Intel Core 12th-14th gen, whose fbgemm runs its AVX2
    kernel): there ``torch._int_mm`` multiplies twice as fast (887-token prefill layer, one core: 8.3 against
    17.8 ms; fp32 39 ms) and sums exactly, with an 8-bit scale per row."""
    return "int_mm" if features.fbgemm is not None and not features.vnni and features.int8_exact_mm else "fbgemm"


def native_attention_for(features: CpuFeatures) -> bool | None:
    """Whether fast mode's fp32 attention of many queries (prefills, fine passes) goes through
    ``barkkit_bark.native``: never where bf16 blocks do it; yes where ATen runs AVX2 (capped at AVX2, one thread:
    1024 frames 36 against PyTorch's 41 ms, a causal 887-token prompt 15 against 24, as the kernel stops each tile at
    the diagonal); None elsewhere (AVX-512 without bf16 units, ARM): ``native_attention_measured_faster`` decides
    at load, as the kernel's 8 lanes may lose to PyTorch's 16 there (on an AMD Zen 5 they win: 35 against 40 ms,
    15 against 24)."""
    if features.bf16_matmul:
        return False
    return True if features.aten == "AVX2" else None


def native_attention_measured_faster(n_head: int, head_size: int) -> bool:
    """Time one fine-pass-like attention (512 queries, non-causal: the kernel's weaker case) natively and through
    PyTorch's kernel (``measure``: once per machine) -> whether the native kernel was faster."""
    q, k, v = torch.randn(3, 1, n_head, 512, head_size).unbind(0)
    times = measure(f"attention of 512 queries, {n_head} heads of {head_size}",
                    {"native": lambda: attention(q, k, v, False),
                     "pytorch": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)})
    return times["native"] < times["pytorch"]


def decode_kernel_for(features: CpuFeatures) -> str | None:
    """The int8 kernel for one-token rows that needs no measuring, or None where ``measure`` must decide."""
    if features.fbgemm is None:
        return None
    return "fbgemm_u8" if features.vnni else "fbgemm_u7"


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (per output channel, symmetric) and int8 activations quantized per call.

    Many rows at once (prefill, fine stage: one batch row per call): fbgemm's dynamic-quantized linear, which
    quantizes the call's activations with one scale (7 bits: ``reduce_range``). One token per row (decode): each
    row is quantized with its own scale, so a row's result does not depend on the other rows of a batch, by
    ``decode_kernel`` (``DECODE_KERNELS``):
    - "fbgemm_u8" / "fbgemm_u7": each row divided by its largest magnitude and quantized with one fixed scale to
      8 bits (VNNI: int32 sums) or 7 (no VNNI: int16 pair sums that 8 bits could saturate), the output multiplied
      back. One weight read for all the batch's rows.
    - "int_mm": ``torch._int_mm``, exact int32 sums where the CPU has VNNI or no fbgemm (ARM). Without VNNI, x86's
      oneDNN kernel saturates int16 pair sums (measured: errors of 10^5 on full-range int8), so fbgemm machines
      never decode through it: a head read one codebook at a time (``rows``) gets its own packed rows instead.
    - "fp32": the original fp32 weight (a machine where no int8 kernel beats it; prefills stay int8).
    ``packed=False``: no fbgemm copy of the weights unless the decode kernel is fbgemm's (a decode-only twin). A bias
    is added after fbgemm's per-row rescale, in every path.
    """

    def __init__(self, linear: nn.Linear, *, decode_kernel: str = "int_mm", packed: bool = True,
                 many_rows: str = "fbgemm") -> None:
        super().__init__()
        from torch.ao.quantization import per_channel_dynamic_qconfig

        if decode_kernel not in DECODE_KERNELS:
            raise ValueError(f"unknown decode kernel {decode_kernel!r}; one of {', '.join(DECODE_KERNELS)}")
        # The weight is quantized once, as fbgemm's dynamic linear quantizes it (per channel, symmetric qint8).
        observer = per_channel_dynamic_qconfig.weight()
        weight = linear.weight.detach().float()
        observer(weight)
        scales, zero_points = observer.calculate_qparams()
        qweight = torch.quantize_per_channel(weight, scales.double(), zero_points.long(), 0, torch.qint8)
        self.register_buffer("w_int8", qweight.int_repr().t(), persistent=False)  # (K, N), a transposed view
        self.register_buffer("w_scale", qweight.q_per_channel_scales().float(), persistent=False)  # (N,)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        fbgemm = decode_kernel.startswith("fbgemm")
        # packed without the bias: fbgemm would add it before the per-row rescale, so it is added after, here
        self.packed = _prepack(qweight, None) if packed or fbgemm else None
        self.decode_kernel = decode_kernel
        self.many_rows = many_rows  # "fbgemm" or "int_mm" (many_rows_kernel_for)
        self.weight_fp32 = weight if decode_kernel == "fp32" else None
        self._row_packs: dict[tuple[int, int], object] = {}  # fbgemm packs of output rows (a coarse head's codebook)

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """x (..., K) -> (..., N), or only the outputs ``rows`` (a head read one codebook at a time)."""
        if self.many_rows == "int_mm" and x.dim() == 3 and x.shape[1] > 1:  # (B, T, K): exact sums, a scale per row
            return self._int_mm(x.reshape(-1, x.shape[-1]), rows).view(*x.shape[:2], -1)
        if self.packed is not None and x.dim() == 3 and x.shape[1] > 1:  # (B, T, K): one fbgemm call per batch row
            dynamic = torch.ops.quantized.linear_dynamic
            if x.shape[0] == 1:  # the same single call, without stacking a copy
                y = dynamic(x, self.packed, reduce_range=True)
            else:
                y = torch.stack([dynamic(row, self.packed, reduce_range=True) for row in x])
            y = y if self.bias is None else y + self.bias
            return y if rows is None else y[..., rows]
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (M, K), one token per row
        kernel = self.decode_kernel
        if kernel.startswith("fbgemm") and torch.compiler.is_compiling():
            kernel = "int_mm"  # (packed weights do not trace)
        if kernel == "fp32":
            w, b = self.weight_fp32, self.bias
            if rows is not None:
                w, b = w[rows], None if b is None else b[rows]
            y = torch.nn.functional.linear(x2, w, b)
        elif kernel.startswith("fbgemm"):
            # In place where the arithmetic allows: a decode step makes ~50 of these calls, and each op costs about
            # a microsecond of dispatch on top of the weight read.
            peak = x2.abs().amax(1, keepdim=True).clamp_min_(1e-12)  # (M, 1)
            levels = _LEVELS[kernel]  # rows in [-1, 1] -> u8 1..255, or u7 1..127
            packed = self.packed if rows is None else self._packed_rows(rows)
            y = _fbgemm_fixed_scale(x2 / peak, 1 / levels, levels + 1, packed).mul_(peak)
            if self.bias is not None:
                y += self.bias if rows is None else self.bias[rows]
        else:
            y = self._int_mm(x2, rows)
        return y.view(*shape[:-1], y.shape[-1])

    @property
    def decode_levels(self) -> int | None:
        """The levels a decode row in [-1, 1] is quantized to where fbgemm decodes it: 127 (u8 1..255, VNNI) or 63
        (u7 1..127); None for the other decode kernels."""
        return _LEVELS.get(self.decode_kernel) if self.packed is not None else None

    def _packed_rows(self, rows: slice) -> object:
        """fbgemm's packed weights of the output rows ``rows`` alone (made once per slice, then kept)."""
        key = (rows.start, rows.stop)
        if key not in self._row_packs:
            weight = self.w_int8[:, rows].t().contiguous()  # (n, K)
            zero = torch.zeros(weight.shape[0], dtype=torch.long)
            qweight = torch._make_per_channel_quantized_tensor(weight, self.w_scale[rows].double(), zero, 0)
            self._row_packs[key] = _prepack(qweight, None)
        return self._row_packs[key]

    def _int_mm(self, x2: torch.Tensor, rows: slice | None) -> torch.Tensor:
        """(M, K) -> (M, N or len(rows)) through ``torch._int_mm``: exact int32 sums, scaled back."""
        w_int8, w_scale, bias = self.w_int8, self.w_scale, self.bias
        if rows is not None:  # views: only these columns are read
            w_int8, w_scale, bias = w_int8[:, rows], w_scale[rows], None if bias is None else bias[rows]
        scale = x2.abs().amax(1, keepdim=True).clamp_min_(1e-12).div_(127.0)  # (M, 1)
        q = (x2 / scale).round_().to(torch.int8)
        y = torch._int_mm(q, w_int8).float().mul_(scale).mul_(w_scale)  # (M, N), scaled back in place
        return y if bias is None else y + bias


_LEVELS = {"fbgemm_u8": 127, "fbgemm_u7": 63}  # the fixed activation scale's levels of each fbgemm decode kernel
_fbgemm_fixed_scale = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32  # x, x scale, x zero point, W


def _prepack(qweight: torch.Tensor, bias: torch.Tensor | None) -> object | None:
    """The quantized engine's packed weights (fbgemm on x86, qnnpack on ARM), or None where the engine cannot pack
    per-channel weights: such a layer then runs every call through its decode kernel."""
    try:
        return torch.ops.quantized.linear_prepack(qweight, bias)
    except RuntimeError:
        return None


@functools.cache
def int_mm_works() -> bool:
    """Whether this torch's CPU kernel for ``torch._int_mm`` (int8 x int8 -> int32) exists and sums exactly: x86's
    oneDNN kernel without VNNI saturates 16-bit pair sums on full-range values."""
    a = torch.full((17, 64), 127, dtype=torch.int8)
    try:
        product = torch._int_mm(a, torch.full((64, 8), -128, dtype=torch.int8))
    except (RuntimeError, NotImplementedError):
        return False
    return bool((product == 64 * 127 * -128).all())


def quantize_int8(model: nn.Module, *, decode_kernel: str = "int_mm", packed: bool = True,
                  many_rows: str = "fbgemm") -> nn.Module:
    """Replace every nn.Linear of ``model`` (blocks and output heads) with an ``Int8Linear``, in place.

    The layers are quantized and packed on a thread per core: those kernels run on one core each (a bark-small
    model: 0.67-0.74 s on one core, 0.43-0.45 s on two; the same int8 weights).
    """
    linears = [(module, name, child) for module in model.modules() for name, child in module.named_children()
               if type(child) is nn.Linear]
    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        quantized = list(pool.map(lambda e: Int8Linear(e[2], decode_kernel=decode_kernel, packed=packed,
                                                       many_rows=many_rows), linears))
    for (module, name, _), layer in zip(linears, quantized):
        setattr(module, name, layer)
    return model


class OneDnnLinear(nn.Module):
    """An fp32 linear layer multiplied by oneDNN (``torch.ops.mkldnn._linear_pointwise``) on the very same weight
    tensor: no copy, no repacking.

    PyTorch multiplies fp32 through MKL, which on AMD CPUs runs none of its AVX-512 code: on an AMD EPYC (Zen 5,
    two threads) oneDNN takes 9.2 against 19.5 ms for a bark-small step's 48 linears, 19 against 37 ms for 9
    rows at once and 0.40 against 0.88 s for 887 rows (1.15-2x capped at AVX2). The sums run in another order, so
    results differ from MKL's in the last bits (2.6e-6 on logits of magnitude 3 after 12 layers): exact mode keeps
    them only where they cannot change a draw (``barkkit_bark.certified``) and in its checks of drafted tokens, which
    already sum in another order than one-token steps.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) -> (..., N)."""
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


@functools.cache
def onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's fp32 linear on the CPU and it computes what ``F.linear`` does."""
    if not torch.backends.mkldnn.is_available():
        return False
    x, w = torch.randn(3, 64, generator=torch.Generator().manual_seed(0)), torch.eye(64)[:8]
    try:
        y = torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
    return bool(torch.allclose(y, x[:, :8]))


def onednn_twin(model: nn.Module) -> nn.Module | None:
    """A twin of ``model`` whose nn.Linear layers are ``OneDnnLinear`` layers on the same weights (every parameter
    shared, nothing copied), or None where this torch has no oneDNN fp32 linear."""
    if not onednn_linear_works():
        return None
    twin = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})  # new modules, the same parameters
    for module in list(twin.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, OneDnnLinear(child))
    return twin


def blocked_attention_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                           block: int = 128) -> torch.Tensor:
    """Attention of many queries in bf16 matrix products, ``block`` queries at a time: (B, nh, T, hs) queries,
    (B, nh, S, hs) keys and values -> (B, nh, T, hs) float32. ``causal``: query t (the last T of S positions) sees
    keys up to S - T + t.

    Why not ``F.scaled_dot_product_attention``: on a CPU its kernels compute in fp32 whatever the input dtype, and
    fp32 runs at a fifth of the bf16 matrix units' rate on AVX512-BF16 (1024-position fine pass 18 -> 7.8 ms a
    layer, 887-position causal prefill 10.3 -> 5.1 ms). A block's scores stay in cache (128 queries measured best
    between 64 and 512), and a causal block skips the keys after its last query and masks only its diagonal tile.
    The softmax runs in fp32 inside PyTorch's bf16 kernel; inputs, scores and probabilities are rounded to bf16
    (benchmarks/agreement.py: KL < 1e-4 nats against fp32 attention).
    """
    T, S = q.shape[2], k.shape[2]
    # contiguous copies once, so that every block's slices are plain batched matrices (no copy per product)
    q = (q * q.shape[-1] ** -0.5).to(torch.bfloat16, memory_format=torch.contiguous_format)
    k, v = (t.to(torch.bfloat16, memory_format=torch.contiguous_format) for t in (k, v))  # (B, nh, S, hs)
    kt = k.transpose(-1, -2)  # (B, nh, hs, S), a view
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    later = torch.ones(block, block, dtype=torch.bool, device=q.device).triu_(1) if causal else None  # (block, block)
    for t0 in range(0, T, block):
        t1 = min(T, t0 + block)
        end = S - T + t1 if causal else S  # keys this block can see
        scores = q[:, :, t0:t1] @ kt[..., :end]  # (B, nh, t1 - t0, end)
        if causal:  # only the last t1 - t0 keys can lie after a query of the block
            scores[..., end - (t1 - t0):].masked_fill_(later[: t1 - t0, : t1 - t0], -math.inf)
        out[:, :, t0:t1] = torch.softmax(scores, dim=-1) @ v[:, :, :end]
    return out


# measuring -------------------------------------------------------------------------------------------------------
def kernel_cache_path() -> Path:
    """Where measured choices are kept: ``$BARKKIT_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/barkkit/kernels.json``."""
    if os.environ.get("BARKKIT_KERNEL_CACHE"):
        return Path(os.environ["BARKKIT_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "barkkit" / "kernels.json"


def measure(question: str, candidates: dict[str, Callable[[], object]], *, repeats: int = 5) -> dict[str, float]:
    """CPU seconds per call of each candidate (the best of ``repeats`` after one warm-up call), for ``question``.

    CPU time, not wall time: on a machine busy with other work, a call that waits for a core is not charged for
    the wait (wall time there once made an int8 draft step look slower than the fp32 step it is 5x faster than).

    Answers are kept per machine (CPU, ISA caps, torch version, threads) in ``kernel_cache_path()``, so a question
    is timed once per machine; a cache that cannot be read or written only costs the timing again.
    """
    features = cpu_features()
    key = hashlib.sha256(json.dumps([question, sorted(candidates), asdict(features), torch.__version__,
                                     torch.get_num_threads()]).encode()).hexdigest()[:24]
    path = kernel_cache_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), dict) and set(known[key]) == set(candidates):
        return {name: float(seconds) for name, seconds in known[key].items()}
    times = {}
    for name, call in candidates.items():
        call()
        best = math.inf
        for _ in range(repeats):
            start = time.process_time()
            call()
            best = min(best, time.process_time() - start)
        times[name] = best
    try:
        known = known if isinstance(known, dict) else {}
        known[key] = times
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(path)
    except OSError:
        pass
    return times


def decode_step_timer(model: nn.Module, *, cached: int = 64, tokens: int = 1) -> Callable[[], torch.Tensor]:
    """A call that runs one decode step of ``tokens`` new tokens (1: a plain step; more: exact mode's check of
    drafted tokens) of a causal model (anything with ``new_caches``, ``prefill`` and ``decode``) after ``cached``
    positions, always into the same cache slots: what ``measure`` times."""
    weight = model.transformer.wpe.weight
    caches = model.new_caches(1, cached + tokens)
    with torch.inference_mode():
        model.prefill(torch.zeros(1, cached, weight.shape[1], dtype=weight.dtype, device=weight.device), caches)
    token = torch.zeros(1, tokens, dtype=torch.long, device=weight.device)

    @torch.inference_mode()
    def step() -> torch.Tensor:
        return model.decode(token, cached, caches, all_logits=tokens > 1)

    return step


# fast mode's choices -----------------------------------------------------------------------------------------------
def fast_kernels(features: CpuFeatures, decode: str | None, native: dict[str, str] | None = None) -> dict[str, str]:
    """What fast mode computes with on a CPU with ``features`` (``barkkit info``); ``decode``: a causal model's
    one-token kernel (None: the fine model, which never decodes one token); ``native``: what runs through
    ``barkkit_bark.native`` (``native.described``)."""
    many = many_rows_kernel_for(features)
    linears = f"int8 (fbgemm {features.fbgemm})" if features.fbgemm else "int8 (torch._int_mm)"
    if many == "int_mm":
        linears = f"int8 (many rows: torch._int_mm, oneDNN VNNI; one token: fbgemm {features.fbgemm})"
    kernels = {"linears": linears,
               "attention": "bf16 blocks" if features.bf16_matmul else "fp32"}
    if decode is not None:
        kernels.update(decode=decode, kv_cache="bf16")
    kernels.update(native or {})
    return kernels


def forced_decode_kernel() -> str | None:
    """``BARKKIT_DECODE_KERNEL``: pin the one-token kernel (one of ``DECODE_KERNELS``) instead of choosing it."""
    forced = os.environ.get("BARKKIT_DECODE_KERNEL")
    if forced and forced not in DECODE_KERNELS:
        from barkkit.errors import PipelineError

        raise PipelineError(f"BARKKIT_DECODE_KERNEL={forced} is not a decode kernel; use one of {', '.join(DECODE_KERNELS)}")
    return forced or None


def faster_decode_kernel(model: nn.Module) -> str:
    """No fbgemm here (ARM, ...): time a decode step of ``model`` (int8, quantized with ``decode_kernel="fp32"``)
    with ``torch._int_mm`` and with the fp32 weights, keep the faster (``measure``: once per machine and model
    shape), and drop the other's weights."""
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]

    def using(kernel: str) -> Callable[[], object]:
        step = decode_step_timer(model)

        def call() -> object:
            for layer in layers:
                layer.decode_kernel = kernel
            return step()

        return call

    if not int_mm_works():
        return "fp32"
    shape = f"{model.config.n_layer}x{model.config.n_embd}x{model.config.output_vocab_size}"
    times = measure(f"fast decode step {shape}", {"int_mm": using("int_mm"), "fp32": using("fp32")})
    kernel = min(times, key=times.get)
    for layer in layers:
        layer.decode_kernel = kernel
        if kernel != "fp32":
            layer.weight_fp32 = None
    return kernel
