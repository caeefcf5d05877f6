"""Fast mode: the speed-ups barkkit takes when a pipeline is loaded with ``mode="fast"``.

Each one is measured against exact mode (``benchmarks/agreement.py``: KL divergence and top-1 agreement of every
stage's next-token distribution under teacher forcing; ``benchmarks/run.py``: time). What fast mode changes:

- int8 weights: every linear layer (attention, MLP, output heads) holds int8 weights, one scale per output channel
  (``Int8Linear``). A decode step reads a quarter of fp32's bytes, one weight read for all the batch's rows, with
  the kernel this CPU runs fastest (``barkkit_bark.kernels``: fbgemm with 8-bit activations on VNNI, 7-bit on
  AVX2 and AVX-512 without it, where 8 bits could saturate; elsewhere ``torch._int_mm`` or fp32, timed at load).
  Prefills use fbgemm's int8 GEMMs. Activations are quantized per call (many rows) or per token (decode), so batch
  rows stay independent. Embeddings and layer norms stay fp32.
- bf16 attention for many queries (prefills, fine passes), only where bf16 matrix units run (AVX512-BF16, AMX;
  emulated bf16 is 20x slower than fp32, so AVX2 CPUs keep fp32):
  ``blocked_attention_bf16``, 128 queries a block, about 2x PyTorch's fp32 kernel. Alone it moves the
  next-token distributions by KL < 1e-4 nats (top-1 >= 99.9%). Decode steps (one query) keep fp32 attention:
  PyTorch's bf16 one-query kernels are slower than its fp32 ones here.
- a bf16 KV cache on a CPU (``GPT.cache_dtype``): a decode step is bound by reading the cache, so keys and values
  are stored in bf16 and each step upcasts the slots it reads for the fp32 kernel (12 layers x 850 slots: 2.2 ->
  1.75 ms a step). Alone it moves the next-token distributions by KL < 1e-4 nats (top-1 100%); the cache takes
  half the memory.
- the coarse stage's decode steps compute only the 1024 head rows of the codebook sampled next.
- the batched engine (``barkkit_bark.engine``) for every run, batch of one or many: static KV cache, prefill one row
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

import os
from collections.abc import Callable

import torch
import torch.nn as nn

from barkkit_bark.kernels import (
    DECODE_KERNELS,
    CpuFeatures,
    Int8Linear,
    cpu_features,
    decode_kernel_for,
    decode_step_timer,
    int_mm_works,
    measure,
    quantize_int8,
)
from barkkit_bark.model import SelfAttention

__all__ = ["use_bf16_attention", "prepare_fast", "fast_kernels", "forced_decode_kernel"]


def use_bf16_attention(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Let the fast engine compute the attention of many queries (prefills, fine passes) in bf16 blocks."""
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.bf16_attention = enabled
    return model


def prepare_fast(model: nn.Module) -> nn.Module:
    """Make a loaded Bark model fast-mode ready, in place: on a CPU int8 linears with the decode kernel this machine
    runs fastest (``barkkit_bark.kernels``), a bf16 KV cache, and bf16 attention where the CPU multiplies bf16 in
    hardware; bfloat16 on an accelerator. What was chosen is left in ``model.kernels``."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        model = model.to(torch.bfloat16)  # CUDA & co.: bf16 matrix units; int8 dynamic quantization is CPU-only
        model.kernels = {"linears": "bf16", "attention": "bf16"}
        return model
    features = cpu_features()
    causal = hasattr(model, "new_caches")
    if causal:  # bf16 keys and values, upcast per step (see GPT.cache_dtype): a step reads half the bytes
        model.cache_dtype = torch.bfloat16
    kernel = forced_decode_kernel() or decode_kernel_for(features)
    quantize_int8(model, decode_kernel=kernel or "fp32")  # "fp32" keeps both weights until measured
    if kernel is None and causal:
        kernel = _faster_decode_kernel(model)
    use_bf16_attention(model, features.bf16_matmul)
    model.kernels = fast_kernels(features, kernel if causal else None)
    return model


def fast_kernels(features: CpuFeatures, decode: str | None) -> dict[str, str]:
    """What fast mode computes with on a CPU with ``features`` (``barkkit info``); ``decode``: a causal model's
    one-token kernel (None: the fine model, which never decodes one token)."""
    kernels = {"linears": f"int8 (fbgemm {features.fbgemm})" if features.fbgemm else "int8 (torch._int_mm)",
               "attention": "bf16 blocks" if features.bf16_matmul else "fp32"}
    if decode is not None:
        kernels.update(decode=decode, kv_cache="bf16")
    return kernels


def forced_decode_kernel() -> str | None:
    """``BARKKIT_DECODE_KERNEL``: pin the one-token kernel (one of ``DECODE_KERNELS``) instead of choosing it."""
    forced = os.environ.get("BARKKIT_DECODE_KERNEL")
    if forced and forced not in DECODE_KERNELS:
        from barkkit.errors import PipelineError

        raise PipelineError(f"BARKKIT_DECODE_KERNEL={forced} is not a decode kernel; use one of {', '.join(DECODE_KERNELS)}")
    return forced or None


def _faster_decode_kernel(model: nn.Module) -> str:
    """No fbgemm here (ARM, ...): time a decode step with ``torch._int_mm`` and with the fp32 weights, keep the
    faster (``barkkit_bark.kernels.measure``: once per machine and model shape), and drop the other's weights."""
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
