"""The row engine: several inputs through one causal Bark model together, each with its own length, voice and seed.

The stage modules' generation loops (``generate_semantic``, ``generate_coarse``) drive a runner, one loop for a
single run and a batch, exact and fast mode: fast mode's ``CausalRunner`` (any number of rows), exact mode's
``ExactRunner`` (one row, the reference's arithmetic) or ``speculative.DraftedRunner`` (the same tokens, drafted).
Exact mode batches by running one row at a time, so that its tokens stay the reference's.

How rows stay independent (a row gets the tokens it gets alone, up to float rounding):
- prefill runs one row at a time, causal over that row's own cache slots (right-aligned at a common end slot);
- decode runs all rows together, one token each; each row attends only to its own slots (left padding skipped);
- each row samples with its own ``torch.Generator`` and draws only while it is still generating, so its generator
  reaches the next stage in the state a single run leaves it in;
- int8 activations are quantized per call (prefill: one row) or per token (decode), never across rows.

Shapes: B rows, T new positions, S cache slots, C width, nh heads, hs head size, V vocabulary.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from barkkit.errors import PipelineError
from barkkit_bark.sampling import filter_logits

__all__ = ["CausalRunner", "ExactRunner", "sample_rows", "check_batch", "check_generator", "DECODE_STEPS", "fixed_shape_decode"]


class CausalRunner:
    """A causal Bark GPT with a static KV cache of ``batch`` rows x ``size`` slots, driven through the model's cache
    API (``GPT.prefill``, ``GPT.extend``).

    Prefill runs one row at a time (causal over that row's own slots, right-aligned at a common end slot); decode
    runs all rows together, one token each, each row attending to its own slots only (left padding skipped). A
    row's numbers therefore never depend on the other rows (int8 activations are quantized per call or per token).
    """

    def __init__(self, model: nn.Module, batch: int, size: int, *, decode: str = "eager") -> None:
        self.model = model
        self.caches = model.new_caches(batch, size)
        # decode steps in fixed shapes, compiled or as CUDA graphs (fixed_shape_decode)
        self.fixed_step = fixed_shape_decode(decode, type(model).extend_fixed, self.caches)

    def prefill_row(self, row: int, emb: torch.Tensor, end: int, head_rows: slice | None = None) -> torch.Tensor:
        """Row ``row``'s prompt embeddings (1, L, C) at positions 0..L-1, into slots [end - L, end) -> logits (1, V).

        The last layer runs the final position only (1/n_layer less work; a rounding-level change)."""
        return self.model.prefill(emb, self.caches, row=row, end=end, trim_last_layer=True, head_rows=head_rows)

    def prefill(self, rows: Sequence[torch.Tensor], end: int) -> torch.Tensor:
        """Each row's embeddings (1, L_i, C) at positions 0..L_i - 1, in slots ending at ``end`` -> logits (B, V)."""
        return torch.cat([self.prefill_row(i, emb, end) for i, emb in enumerate(rows)])

    def step(self, tokens: torch.Tensor, pos: torch.Tensor, slot: int, first_slots: Sequence[int] | None = None,
             head_rows: slice | None = None) -> torch.Tensor:
        """One token per row, ids (B,) at positions ``pos`` (B, 1), into cache slot ``slot`` -> the logits (B, V)
        (or only ``head_rows``). ``first_slots``: each row's first slot (its left padding before; None: every row
        from slot 0)."""
        tok_emb = self.model.embed(tokens[:, None])  # (B, 1, C)
        first_slots = list(first_slots or [0] * tok_emb.shape[0])
        if self.fixed_step is not None:
            device = tok_emb.device
            first, at = torch.tensor(first_slots, device=device), torch.tensor([slot], device=device)
            return self.fixed_step(self.model, self.caches, tok_emb, pos, at, first, head_rows)
        # one attention call per row even without padding: PyTorch's CPU kernel rounds a many-row call differently
        # from a one-row one, and int8 activations can turn that last bit into a different token
        return self.model.extend(tok_emb, pos, self.caches, slot, first_slots=first_slots, head_rows=head_rows)

    def shift_rows(self, rows: Sequence[int], pad: Sequence[int], total: int, by: int) -> None:
        """Move ``rows``' keys/values from slots [pad, total) to [pad + by, total + by) (exact copies)."""
        for cache in self.caches:
            for i in rows:
                for t in cache.tensors():
                    t[i, :, pad[i] + by : total + by] = t[i, :, pad[i] : total].clone()


class ExactRunner:
    """One row through a causal Bark GPT with the reference's arithmetic, behind ``CausalRunner``'s interface.

    Every layer runs every prompt position (as Suno's code does), each decode step is one fp32 token attended in
    one call, and logits are computed in full and then sliced (``head_rows``), so that the tokens are the
    reference's. Exact mode never keeps a cache across prompts.
    """

    def __init__(self, model: nn.Module, size: int) -> None:
        self.model = model
        self.caches = model.new_caches(1, size)

    def prefill_row(self, row: int, emb: torch.Tensor, end: int, head_rows: slice | None = None) -> torch.Tensor:
        """The row's prompt (1, L, C) at positions and slots 0..L-1 (``end`` = L) -> logits (1, V)."""
        if row != 0 or end != emb.shape[1]:
            raise ValueError("exact mode runs one row, its prompt from slot 0")
        return logit_rows(self.model.prefill(emb, self.caches), head_rows)

    def prefill(self, rows: Sequence[torch.Tensor], end: int) -> torch.Tensor:
        return self.prefill_row(0, rows[0], end)

    def step(self, tokens: torch.Tensor, pos: torch.Tensor, slot: int, first_slots: Sequence[int] | None = None,
             head_rows: slice | None = None) -> torch.Tensor:
        """The row's token (1,) at position ``pos`` (1, 1) = slot ``slot`` -> logits (1, V)."""
        return logit_rows(self.model.extend(self.model.embed(tokens[:, None]), pos, self.caches, slot), head_rows)


def logit_rows(logits: torch.Tensor, rows: slice | None) -> torch.Tensor:
    """Logits (B, V) -> only the entries ``rows`` (B, len) (all where None)."""
    return logits if rows is None else logits[:, rows]


def sample_rows(logits: torch.Tensor, generators: Sequence[torch.Generator], temp: float,
                top_k: int | None = None, top_p: float | None = None, *,
                exact_top_p: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of ``logits`` (B, V), row i drawn with ``generators[i]``; returns (tokens (B,), probs).

    The reference's filters; the nucleus cut in numpy as the reference computes it (``exact_top_p``, exact mode)
    or in torch (no host round trip per step). A row's draw is the reference's single-row draw.
    """
    logits = filter_logits(logits.float(), top_k=top_k, top_p=top_p, exact_top_p=exact_top_p)
    probs = F.softmax(logits / temp, dim=-1)
    tokens = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
    return tokens, probs


def check_batch(stage: Any, values: Sequence[Any], voices: Sequence[Any],
                 generators: Sequence[torch.Generator]) -> None:
    """One voice and one generator per input, each generator on the stage's device."""
    if not (len(values) == len(voices) == len(generators)):
        raise PipelineError(f"got {len(values)} inputs, {len(voices)} voices and {len(generators)} generators; give one each")
    for generator in generators:
        check_generator(generator, stage.device)


def check_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    if generator is None:
        raise PipelineError("a Bark stage needs a torch.Generator: run it through a Pipeline or pass generator=")
    if generator.device.type != device.type:
        raise PipelineError(
            f"the random generator is on {generator.device} but the model is on {device}; create the generator "
            f"on the model's device (Pipeline(..., device=...))"
        )
    return generator


# decode steps in fixed shapes (CUDA graphs, torch.compile) ----------------------------------------
DECODE_STEPS = ("eager", "compile", "cuda_graphs")  # how fast mode can run its decode steps (fixed_shape_decode)


def fixed_shape_decode(how: str, step: Callable[..., torch.Tensor],
                       caches: Sequence[Any]) -> Callable[..., torch.Tensor] | None:
    """``step`` (``GPT.extend_fixed``, one decode step in fixed shapes) made fast for ``caches``.

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
