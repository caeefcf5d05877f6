"""Fast mode: the speed-ups barkkit takes when a pipeline is loaded with ``mode="fast"``.

Each one is measured against exact mode (``benchmarks/agreement.py``: KL divergence and top-1 agreement of every
stage's next-token distribution under teacher forcing; ``benchmarks/run.py``: time). What fast mode changes:

- int8 weights: every linear layer (attention, MLP, output heads) holds int8 weights, one scale per output channel
  (``Int8Linear``). A decode step reads a quarter of fp32's bytes (fbgemm on VNNI CPUs, one weight read for all
  the batch's rows), and prefills use fbgemm's int8 GEMMs. Activations are quantized per call (many rows) or per
  token (decode), so batch rows stay independent. Embeddings and layer norms stay fp32.
- bf16 attention for many queries (prefills, fine passes), on CPUs with bf16 matrix units (AVX512-BF16, AMX):
  ``blocked_attention_bf16``, 128 queries a block, about 2x PyTorch's fp32 kernel. Alone it moves the
  next-token distributions by KL < 1e-4 nats (top-1 >= 99.9%). Decode steps (one query) keep fp32 attention:
  PyTorch's bf16 one-query kernels are slower than its fp32 ones here.
- a bf16 KV cache on a CPU (``GPT.cache_dtype``): a decode step is bound by reading the cache, so keys and values
  are stored in bf16 and each step upcasts the slots it reads for the fp32 kernel (12 layers x 850 slots: 2.2 ->
  1.75 ms a step). Alone it moves the next-token distributions by KL < 1e-4 nats (top-1 100%); the cache takes
  half the memory.
- the coarse stage's decode steps compute only the 1024 head rows of the codebook sampled next.
- the batched engine (``barkkit_bark.batch``) for every run, batch of one or many: static KV cache, prefill one row
  at a time, decode all rows together (each row's attention in its own call, so a row computes exactly what it
  computes alone), sampling in torch (top-p without a host round trip).
- the last layer of a prefill (and of a fine pass) runs only the positions that are read out; the others are
  still keys and values. The same numbers up to float rounding, 1/n_layer less prefill work.
- on CUDA: bf16 weights (no int8: dynamic quantization is CPU-only), and decode steps in fixed shapes (the
  whole cache under a mask) captured as CUDA graphs (``fixed_shape_decode``; ``BarkStage.fast_decode``), or
  through ``torch.compile`` on request. Neither by default on a CPU: there a compiled step (fp32, or int8 through
  ``torch._int_mm``: fbgemm's packed weights do not trace) measured no faster than the eager one (450 bark-small
  coarse steps: fp32 11.4 vs 11.1 s, int8 3.3 vs 2.7 s), after ~30 s of compiling.
- coarse stage: a window whose input only extends what the KV cache holds (the semantic context has not slid yet,
  the history is not yet cut) keeps the cache instead of prefilling again. The same tokens at the same positions:
  only float rounding differs (prefill vs one-token matrix products), which is why exact mode does not do it.

Measured and not taken (random weights, output heads scaled x8 so distributions are peaked; int8 for comparison:
KL 0.0014 semantic, 0.0015 coarse, 0.011 fine): the fine stage without padding short clips to 1024 frames (KL 0.51,
top-1 68%: the non-causal model attends to the padding frames), a shorter coarse history (630 -> 315: KL 10), a
longer coarse window (60 -> 120: KL 4.7), fewer fine voice frames (512 -> 256: KL 13). Random models have no
learned locality, so these may be much milder with Bark's checkpoints; they remain options (coarse) or a flag of
the batched engine (``generate_fine_batch(pad_to_window=False, max_history=...)``) to be measured there.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn as nn

__all__ = ["Int8Linear", "quantize_int8", "blocked_attention_bf16", "use_bf16_attention", "cpu_has_bf16_matmul",
           "DECODE_STEPS", "fixed_shape_decode", "prepare_fast"]


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (per output channel, symmetric) and int8 activations quantized per call.

    Many rows at once (prefill, fine stage: one batch row per call): fbgemm's dynamic-quantized linear, which
    quantizes the activations of the call with one scale. One token per row (decode): each row is quantized with
    its own scale, so a row's result does not depend on the other rows of a batch. Two kernels do that:
    - fbgemm (where the CPU has VNNI and the layer prefills too, so its packed weights exist): each row is divided
      by its largest magnitude and quantized with one fixed scale, and the output multiplied back. fbgemm reads
      the weights once for 1-16 rows (8 rows: 1.8x faster than ``torch._int_mm``). VNNI sums u8 x s8 products in
      int32; without it fbgemm sums pairs in int16, which full-range activations could saturate.
    - ``torch._int_mm`` (exact integer sums) otherwise, and for a head read one codebook at a time (``rows``).
    All read the same int8 weights: a quarter of fp32's bytes per decode step. ``decode_only`` keeps no packed copy
    (half the memory); every call then takes ``torch._int_mm``.
    """

    def __init__(self, linear: nn.Linear, *, decode_only: bool = False) -> None:
        super().__init__()
        from torch.ao.quantization import per_channel_dynamic_qconfig

        # The weight is quantized once, as fbgemm's dynamic linear quantizes it (per channel, symmetric qint8:
        # zero points 0); only a layer that prefills also packs it for fbgemm.
        observer = per_channel_dynamic_qconfig.weight()
        weight = linear.weight.detach().float()
        observer(weight)
        scales, zero_points = observer.calculate_qparams()
        qweight = torch.quantize_per_channel(weight, scales.double(), zero_points.long(), 0, torch.qint8)
        self.register_buffer("w_int8", qweight.int_repr().t(), persistent=False)  # (K, N), a transposed view
        self.register_buffer("w_scale", qweight.q_per_channel_scales().float(), persistent=False)  # (N,)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = None if decode_only else torch.ops.quantized.linear_prepack(qweight, self.bias)
        # fbgemm adds the bias before the per-row rescale, so layers with a bias decode through torch._int_mm
        self.fbgemm_decode = self.packed is not None and self.bias is None and _cpu_has("_is_vnni_supported")

    def forward(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """x (..., K) -> (..., N), or only the outputs ``rows`` (a head read one codebook at a time)."""
        if self.packed is not None and x.dim() == 3 and x.shape[1] > 1:  # (B, T, K): one fbgemm call per batch row
            dynamic = torch.ops.quantized.linear_dynamic
            if x.shape[0] == 1:  # the same single call, without stacking a copy
                y = dynamic(x, self.packed, reduce_range=True)
            else:
                y = torch.stack([dynamic(row, self.packed, reduce_range=True) for row in x])
            return y if rows is None else y[..., rows]
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (M, K), one token per row
        # In place where the arithmetic allows: a decode step makes ~50 of these calls, and each op costs about a
        # microsecond of dispatch on top of the weight read.
        if rows is None and self.fbgemm_decode and not torch.compiler.is_compiling():  # (packed weights don't trace)
            peak = x2.abs().amax(1, keepdim=True).clamp_min_(1e-12)  # (M, 1)
            y = _fbgemm_fixed_scale(x2 / peak, 1 / 127, 128, self.packed).mul_(peak)  # rows in [-1, 1]: u8 1..255
            return y.view(*shape[:-1], y.shape[-1])
        w_int8, w_scale, bias = self.w_int8, self.w_scale, self.bias
        if rows is not None:  # views: only these columns are read
            w_int8, w_scale, bias = w_int8[:, rows], w_scale[rows], None if bias is None else bias[rows]
        scale = x2.abs().amax(1, keepdim=True).clamp_min_(1e-12).div_(127.0)  # (M, 1)
        q = (x2 / scale).round_().to(torch.int8)
        y = torch._int_mm(q, w_int8).float().mul_(scale * w_scale)  # int32 sums, scaled back: (M, N)
        if bias is not None:
            y = y + bias
        return y.view(*shape[:-1], y.shape[-1])


_fbgemm_fixed_scale = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32  # x, x scale, x zero point, W


def quantize_int8(model: nn.Module, *, decode_only: bool = False) -> nn.Module:
    """Replace every nn.Linear of ``model`` (blocks and output heads) with an ``Int8Linear``.

    The layers are quantized and packed on a thread per core: those kernels run on one core each, and a bark-small
    model took 0.67-0.74 s on one core against 0.43-0.45 s on this machine's two (the same int8 weights).
    """
    linears = [(module, name, child) for module in model.modules() for name, child in module.named_children()
               if type(child) is nn.Linear]
    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        quantized = list(pool.map(lambda entry: Int8Linear(entry[2], decode_only=decode_only), linears))
    for (module, name, _), layer in zip(linears, quantized):
        setattr(module, name, layer)
    return model


def blocked_attention_bf16(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool,
                           block: int = 128) -> torch.Tensor:
    """Attention of many queries in bf16 matrix products, ``block`` queries at a time: (B, nh, T, hs) queries,
    (B, nh, S, hs) keys and values -> (B, nh, T, hs) float32. ``causal``: query t (the last T of S positions) sees
    keys up to S - T + t.

    Why not ``F.scaled_dot_product_attention``: on a CPU its kernels compute in fp32 whatever the input dtype, and
    fp32 runs at a fifth of the bf16 matrix units' rate here (AVX512-BF16: 1024-position fine pass 18 -> 7.8 ms a
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


def _cpu_has(probe: str) -> bool:
    """One of ``torch.cpu``'s feature probes (private, so False where this torch lacks it)."""
    return bool(getattr(torch.cpu, probe, lambda: False)())


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    return _cpu_has("_is_avx512_bf16_supported") or _cpu_has("_is_amx_tile_supported")


def use_bf16_attention(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Let the fast engine compute the attention of many queries (prefills, fine passes) in bf16 blocks."""
    from barkkit_bark.model import SelfAttention

    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.bf16_attention = enabled
    return model


DECODE_STEPS = ("eager", "compile", "cuda_graphs")  # how fast mode can run its decode steps (fixed_shape_decode)


def fixed_shape_decode(how: str, step: Callable[..., torch.Tensor],
                       caches: Sequence[Any]) -> Callable[..., torch.Tensor] | None:
    """``step`` (``batch.static_decode_step``, one decode step in fixed shapes) made fast for ``caches``.

    - "cuda_graphs": captured as a CUDA graph once per batch shape and head rows, then replayed: a decode step is
      one graph launch instead of hundreds of kernel launches, at the cost of three steps per shape (two to warm
      up, one captured; no compiling).
    - "compile": ``torch.compile``, with CUDA graphs on a GPU (``mode="reduce-overhead"``): fused element-wise
      kernels, after ~30 s of compiling per shape and process (bark-small on this project's CPU). Compiled once
      per ``step`` and device type, so a new batch of the same shapes reuses it.
    - "eager": None (the caller runs its usual steps).
    Either way each call returns a copy of the logits (a graph's outputs are overwritten by its next replay), and
    if compiling or capturing fails, steps run eagerly from then on, with a warning.
    """
    if how == "eager":
        return None
    cuda = caches[0].k.device.type == "cuda"
    if how == "cuda_graphs":
        if not cuda:
            raise ValueError("CUDA graphs need the model on a CUDA device")
        return _falls_back(step, _CUDAGraphStep(step))
    if cuda:  # the graphs write the caches in place: their addresses must stay fixed
        for cache in caches:
            torch._dynamo.mark_static_address(cache.k)
            torch._dynamo.mark_static_address(cache.v)
    compiled = _compiled(step, cuda)

    def run(*args: Any) -> torch.Tensor:
        if cuda:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are no longer read
        return compiled(*args).clone()

    return _falls_back(step, run)


class _CUDAGraphStep:
    """A decode step captured as one CUDA graph per (input shapes, head rows), replayed with new input values.

    The step reads and writes the KV caches in place (fixed addresses) and takes every other input as a tensor, so
    that a replay computes exactly what an eager call on the same inputs computes."""

    def __init__(self, step: Callable[..., torch.Tensor]) -> None:
        self.step = step
        self.graphs: dict[Any, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def __call__(self, model: nn.Module, caches: Sequence[Any], *args: Any) -> torch.Tensor:
        *tensors, head_rows = args
        key = (tuple(t.shape for t in tensors), None if head_rows is None else (head_rows.start, head_rows.stop))
        with torch.cuda.device(tensors[0].device):  # streams of the model's GPU, whichever is current
            return self._replay(key, model, caches, tensors, head_rows)

    def _replay(self, key: Any, model: nn.Module, caches: Sequence[Any], tensors: list[torch.Tensor],
                head_rows: slice | None) -> torch.Tensor:
        if key not in self.graphs:
            inputs = [t.clone() for t in tensors]  # the graph's own input buffers
            side = torch.cuda.Stream()  # warm up off the main stream first (lazy cuBLAS set-up), as torch's docs do
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.step(model, caches, *inputs, head_rows)  # writes this step's own cache slot: replayed below
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = self.step(model, caches, *inputs, head_rows)
            self.graphs[key] = (graph, inputs, output)
        graph, inputs, output = self.graphs[key]
        for buffer, value in zip(inputs, tensors):
            buffer.copy_(value)
        graph.replay()
        return output.clone()


def _falls_back(step: Callable[..., torch.Tensor], fast: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fast`` until it raises (compile and capture errors surface at a first call), then ``step``, with a warning."""
    failed = False

    def run(*args: Any) -> torch.Tensor:
        nonlocal failed
        if not failed:
            try:
                return fast(*args)
            except Exception as error:
                failed = True
                reason = " ".join(str(error).split())[:300]
                warnings.warn(f"fast decode steps failed ({type(error).__name__}: {reason}); running them eagerly",
                              RuntimeWarning, stacklevel=2)
        return step(*args)

    return run


@functools.cache
def _compiled(step: Callable[..., torch.Tensor], cuda: bool) -> Callable[..., torch.Tensor]:
    return torch.compile(step, mode="reduce-overhead" if cuda else None, fullgraph=True, dynamic=False)


def prepare_fast(model: nn.Module) -> nn.Module:
    """Make a loaded Bark model fast-mode ready, in place: int8 linears, a bf16 KV cache (and bf16 attention where the
    CPU has bf16 matrix units) on a CPU, bfloat16 on an accelerator."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        if hasattr(model, "new_caches"):  # a causal model: bf16 keys and values, upcast per step (see GPT.cache_dtype)
            model.cache_dtype = torch.bfloat16
        return use_bf16_attention(quantize_int8(model), cpu_has_bf16_matmul())
    return model.to(torch.bfloat16)  # CUDA & co.: bf16 matrix units; int8 dynamic quantization is CPU-only
