"""Fast mode: what changes in a Bark model when a pipeline is loaded with ``mode="fast"`` (``prepare_fast``).

Each change is measured against exact mode by ``benchmarks/agreement.py`` (KL divergence and top-1 agreement of every
stage's next-token distribution under teacher forcing, on random weights with peaked heads) and timed by
``benchmarks/run.py``; ``docs/performance.md`` has the figures per CPU kind. On a CPU:

- int8 linear layers (attention, MLP, output heads), one scale per output channel (``kernels.Int8Linear``). A
  one-token decode step reads a quarter of fp32's bytes, with the kernel chosen for the CPU
  (``kernels.decode_kernel_for``: fbgemm with 8-bit activations where it has VNNI, 7-bit where 8 could saturate;
  elsewhere ``torch._int_mm`` or fp32, timed at load). Prefills and fine passes run fbgemm's int8 GEMMs: about 2x
  fp32 without VNNI, 6x with it; where only oneDNN has VNNI (AVX-VNNI without AVX-512), ``torch._int_mm``: about
  4.5x fp32 (``kernels.many_rows_kernel_for``). Activations are quantized per call (many rows) or per token
  (decode), so batch rows stay independent. Embeddings and layer norms stay fp32. Cost: KL ~0.0015 (semantic,
  coarse) and ~0.011 (fine) with 8-bit activations, ~0.005 (semantic, coarse) with 7-bit.
- bf16 attention of many queries (prefills, fine passes) where the CPU multiplies bf16 in hardware (AVX512-BF16,
  AMX): ``kernels.blocked_attention_bf16``, about 2x PyTorch's fp32 kernel. Emulated bf16 is 20x slower than fp32,
  so other CPUs keep fp32: where PyTorch runs AVX2 (elsewhere where timed faster at load), through
  ``barkkit_bark.native``'s register-blocked kernel (``kernels.native_attention_for``), which also skips the causal
  square's upper half that PyTorch's blocks compute. Decode steps (one query) keep fp32 attention: PyTorch's bf16
  one-query kernels are slower than its fp32 ones. Cost: KL < 1e-4.
- a compact KV cache (``GPT.cache_dtype``): a decode step is bound by reading weights and cache, so keys and values
  are kept in int8 with a scale per row, head and slot where ``barkkit_bark.native``'s decode kernel reads them
  (it writes the step's own key and value into the cache and widens each cached row in registers as it reads it),
  else in bf16, upcast per step for PyTorch's fp32 attention. Capped at AVX2, the native bf16 kernel took ~1.2 ms
  off a 7 ms coarse step at 890 cached positions, the int8 cache ~0.7 ms more (min of alternating batches). GELU
  runs there too: PyTorch's kernel wakes its thread pool for a decode step's single row. Cost: KL < 1e-4 (bf16)
  and < 0.001 (int8) against an fp32 cache.
- the coarse stage's decode steps compute only the 1024 head rows of the codebook sampled next.
- the row engine (``engine.CausalRunner``) for a single run and a batch alike: prefill one row at a time, decode all
  rows together (one weight read for every row; each row's attention in its own call, so a row computes exactly
  what it computes alone), sampling in torch (top-p without a host round trip).
- the last layer of a prefill (and of a fine pass) runs only the positions that are read out; the others are still
  keys and values: 1/n_layer less work, the same numbers up to float rounding.
- coarse windows whose input only extends what the KV cache holds keep the cache instead of prefilling again (the
  same tokens at the same positions; only rounding differs, which is why exact mode does not).

On CUDA: bf16 weights (dynamic int8 quantization is CPU-only) and decode steps in fixed shapes captured as CUDA
graphs (``engine.fixed_shape_decode``; ``BarkStage.fast_decode``), or ``torch.compile`` on request. Neither by
default on a CPU, where a compiled step (fbgemm's packed weights do not trace) is no faster than the eager one and
costs ~30 s of compiling.

Measured and not taken (same script; ``benchmarks/shortcuts.py`` wraps them): fine windows not padded to 1024
frames (KL 0.51: the non-causal model attends to the padding frames), a shorter coarse history (630 -> 315: KL 10),
a longer coarse window (60 -> 120: KL 4.7), fewer fine voice frames (512 -> 256: KL 13). Random models have no
learned locality, so these may be much milder with Bark's checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from barkkit_bark.kernels import (
    cpu_features,
    decode_kernel_for,
    fast_kernels,
    faster_decode_kernel,
    forced_decode_kernel,
    many_rows_kernel_for,
    native_attention_for,
    native_attention_measured_faster,
    quantize_int8,
)
from barkkit_bark.model import use_bf16_attention, use_native_kernels
from barkkit_bark.native import HEAD_SIZES, described, native_ops

__all__ = ["prepare_fast"]


def prepare_fast(model: nn.Module) -> nn.Module:
    """Make a loaded Bark model fast-mode ready, in place: on a CPU int8 linears with the decode kernel this machine
    runs fastest, an int8 or bf16 KV cache, and bf16 or native attention where the CPU favours them; bfloat16 on an
    accelerator. What was chosen is left in ``model.kernels``."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        model = model.to(torch.bfloat16)  # CUDA & co.: bf16 matrix units; int8 dynamic quantization is CPU-only
        model.kernels = {"linears": "bf16", "attention": "bf16"}
        return model
    features = cpu_features()
    causal = hasattr(model, "new_caches")
    kernel = forced_decode_kernel() or decode_kernel_for(features)
    # "fp32" keeps both weights until measured
    quantize_int8(model, decode_kernel=kernel or "fp32", many_rows=many_rows_kernel_for(features))
    if kernel is None and causal:
        kernel = faster_decode_kernel(model)
    use_bf16_attention(model, features.bf16_matmul)
    built, head_size = native_ops() is not None, model.config.n_embd // model.config.n_head
    fits = built and head_size in HEAD_SIZES  # the native kernels serve this model
    many_queries = native_attention_for(features)
    if many_queries is None:  # AVX-512 without bf16 units, ARM: time it
        many_queries = fits and native_attention_measured_faster(model.config.n_head, head_size)
    use_native_kernels(model, built, many_queries)
    if causal:  # a decode step reads the whole cache (see GPT.cache_dtype): int8 where the native kernel reads it,
        model.cache_dtype = torch.int8 if fits else torch.bfloat16  # else bf16, upcast per step: 1/2 or 1/4 of fp32
    native = described(causal, head_size, many_queries, blocks=(kernel or "").startswith("fbgemm"))
    model.kernels = fast_kernels(features, kernel if causal else None, native)
    return model
