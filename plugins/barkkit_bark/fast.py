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
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from barkkit_bark.kernels import (
    DECODE_KERNELS,
    Int8Linear,
    cpu_features,
    decode_kernel_for,
    decode_step_timer,
    measure,
    quantize_int8,
)

__all__ = ["use_bf16_attention", "DECODE_STEPS", "fixed_shape_decode", "prepare_fast", "fast_kernels"]


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
    kernel = _forced_decode_kernel() or decode_kernel_for(features)
    quantize_int8(model, decode_kernel=kernel or "fp32")  # "fp32" keeps both weights until measured
    if kernel is None and causal:
        kernel = _faster_decode_kernel(model)
    use_bf16_attention(model, features.bf16_matmul)
    model.kernels = {"linears": f"int8 (fbgemm {features.fbgemm})" if features.fbgemm else "int8 (torch._int_mm)",
                     "attention": "bf16 blocks" if features.bf16_matmul else "fp32"}
    if causal:
        model.kernels.update(decode=kernel, kv_cache="bf16")
    return model


def _forced_decode_kernel() -> str | None:
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

    shape = f"{model.config.n_layer}x{model.config.n_embd}x{model.config.output_vocab_size}"
    times = measure(f"fast decode step {shape}", {"int_mm": using("int_mm"), "fp32": using("fp32")})
    kernel = min(times, key=times.get)
    for layer in layers:
        layer.decode_kernel = kernel
        if kernel != "fp32":
            layer.weight_fp32 = None
    return kernel
