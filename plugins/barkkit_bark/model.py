"""Bark's transformers: one causal GPT (semantic and coarse stages) and one non-causal FineGPT (fine stage).

The layers and parameter names are those of Suno's ``bark/model.py`` and ``bark/model_fine.py`` (themselves nanoGPT),
so a Suno state dict loads as it is (minus the ``_orig_mod.`` prefix). What differs is how the causal model is
run, through one cache API (``GPT.prefill``, ``GPT.extend``): a static KV cache written in place, a prefill pass
separate from the decode passes, and no work whose result is dropped (only the last position goes through the final
layer norm and the head). Exact mode runs it with Suno's arithmetic; fast mode's row engine
(``barkkit_bark.engine``) runs the same modules with int8 linears and bf16 attention (``barkkit_bark.fast``).

Shapes: B batch, T new positions, S positions in the cache, C = n_embd, nh heads, hs = C // nh head size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from barkkit_bark.kernels import Int8Linear, blocked_attention_bf16
from barkkit_bark.native import (
    GELU_MAX_VALUES,
    HEAD_SIZES,
    attention,
    decode_attention,
    decode_attention_int8,
    decode_block,
    gelu,
)

__all__ = ["GPTConfig", "KVCache", "GPT", "FineGPT", "use_bf16_attention", "use_native_kernels"]


@dataclass
class GPTConfig:
    """Hyperparameters of one Bark transformer (Suno's ``model_args`` with the vocabulary split in two)."""

    block_size: int = 1024  # most positions the model has embeddings for
    input_vocab_size: int = 10_048  # semantic model: 129_600 (text + semantic ids); coarse 12_096; fine 1_056
    output_vocab_size: int = 10_048  # semantic model: 10_048; coarse 12_096; fine 1_024
    n_layer: int = 12  # bark-small 12, bark 24
    n_head: int = 12  # bark-small 12, bark 16
    n_embd: int = 768  # bark-small 768, bark 1024
    bias: bool = False  # biases in the linear layers (and the causal model's layer norms); Suno's models have none
    n_codes_total: int = 8  # FineGPT only: codebooks in the input
    n_codes_given: int = 1  # FineGPT only: codebooks never predicted (head i predicts codebook n_codes_given + i)


def quantize_vectors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., hs) -> int8 (..., hs) and a scale (...) each, max |x| / 127: the int8 KV cache's format, computed as
    the native decode kernel computes it for the slot it writes."""
    scale = x.abs().amax(-1).clamp_min(1e-12) / 127
    return (x / scale[..., None]).round().to(torch.int8), scale


class KVCache:
    """Preallocated keys and values of one attention layer, ``k`` and ``v`` (B, nh, max_len, hs), written in place.

    Slots are the cache's own positions. Exact mode fills every row from slot 0 (slot = position); fast mode's row
    engine (``barkkit_bark.engine``) prefills one row at a time right-aligned at a common end slot, so a row's
    position is its slot less its left padding. An int8 cache (fast mode where the native decode kernel reads it)
    keeps each (row, head, slot) vector with its own scale, ``k_scale`` and ``v_scale`` (B, nh, max_len): x = q *
    scale, q in [-127, 127], scale = max|x| / 127.
    """

    def __init__(self, batch: int, n_head: int, max_len: int, head_size: int, *, dtype: torch.dtype, device: torch.device):
        shape = (batch, n_head, max_len, head_size)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.k_scale: torch.Tensor | None = None
        self.v_scale: torch.Tensor | None = None
        if dtype == torch.int8:
            self.k_scale = torch.zeros(shape[:3], device=device)
            self.v_scale = torch.zeros(shape[:3], device=device)

    def tensors(self) -> list[torch.Tensor]:
        """Everything kept per slot (slots on dim 2): keys, values, and an int8 cache's scales."""
        return [t for t in (self.k, self.v, self.k_scale, self.v_scale) if t is not None]

    def write(self, rows: slice, slots: slice, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write k, v (B, nh, T, hs) at ``slots`` of ``rows``."""
        for cache, scale, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            if scale is None:
                cache[rows, :, slots] = x
            else:
                cache[rows, :, slots], scale[rows, :, slots] = quantize_vectors(x)

    def write_at(self, slot: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write k, v (B, nh, 1, hs) at slot ``slot`` (1,) of every row, in shapes that never change."""
        for cache, scale, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            if scale is None:
                cache.index_copy_(2, slot, x.to(cache.dtype))
            else:
                quantized, peak = quantize_vectors(x)
                cache.index_copy_(2, slot, quantized)
                scale.index_copy_(2, slot, peak)

    def read(self, stop: int | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row's keys and values in slots [0, stop) (None: all) in ``dtype``: (B, nh, S, hs), an int8 cache's
        scaled back."""
        out = []
        for cache, scale in ((self.k, self.k_scale), (self.v, self.v_scale)):
            x = cache[:, :, :stop].to(dtype)  # a no-op where the cache is already in dtype
            out.append(x if scale is None else x * scale[:, :, :stop, None])
        return out[0], out[1]


class SelfAttention(nn.Module):
    """Multi-head self-attention, one method per way the models run it:

    - ``forward``: bidirectional over its own positions (the fine model);
    - ``prefill``: causal over a prompt's own positions, keys and values written to a cache;
    - ``extend``: new positions after cached ones (a decode step, or exact mode checking drafted tokens);
    - ``extend_fixed``: one new position per row against the whole cache under a mask, in shapes that never change
      (what ``torch.compile`` and CUDA graphs need).
    """

    # Fast mode reads this: attention of many queries in bf16 matrix products. Set by barkkit_bark.fast.prepare_fast
    # on CPUs that multiply bf16 in hardware; exact mode never does.
    bf16_attention: bool = False
    # Fast mode reads this too: one-query steps over an int8 or bf16 cache through barkkit_bark.native's kernels,
    # which widen the cache as they read it instead of upcasting a copy. Set by use_native_kernels.
    native_decode_attention: bool = False
    # And this: attention of many queries in fp32 through barkkit_bark.native's register-blocked kernel, where
    # kernels.native_attention_for chose it (CPUs whose PyTorch runs 8-lane AVX2). Set by use_native_kernels.
    native_attention: bool = False

    def __init__(self, config: GPTConfig, *, causal: bool) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v of all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.causal = causal

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> q, k, v (B, nh, T, hs)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        """Heads (B, nh, T, hs) side by side again, projected -> (B, T, C)."""
        B, _, T, _ = y.shape
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))

    def _many_queries(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        if self.bf16_attention:  # fast mode where bf16 runs in hardware: barkkit_bark.kernels
            return blocked_attention_bf16(q, k, v, causal=causal)
        if self.native_attention and q.device.type == "cpu" and q.dtype == torch.float32:
            return attention(q, k, v, causal)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def forward(self, x: torch.Tensor, first_query: int = 0) -> torch.Tensor:
        """x (B, T, C), every position a key -> (B, T - first_query, C) for the queries from ``first_query`` on."""
        q, k, v = self._qkv(x)
        return self._out(self._many_queries(q[:, :, first_query:], k, v, causal=False))

    def prefill(self, x: torch.Tensor, cache: KVCache, rows: slice, end: int, last_only: bool = False) -> torch.Tensor:
        """A prompt x (B, T, C) at positions 0..T-1, causal, its keys and values into ``rows``' slots
        [end - T, end) -> (B, T, C), or (B, 1, C) for the last position only (``last_only``: it sees every key)."""
        T = x.shape[1]
        q, k, v = self._qkv(x)
        cache.write(rows, slice(end - T, end), k, v)
        if last_only:
            return self._out(F.scaled_dot_product_attention(q[:, :, -1:], k, v))
        return self._out(self._many_queries(q, k, v, causal=True))

    def extend(self, x: torch.Tensor, cache: KVCache, slot: int, first_slots: Sequence[int] | None = None) -> torch.Tensor:
        """New positions x (B, T, C) into slots [slot, slot + T) of every row -> (B, T, C).

        Each new position sees the cached slots before it and the new ones up to itself. ``first_slots``: row i
        sees the slots from ``first_slots[i]`` on only (the row engine's left-padded rows), one attention call a
        row, so that each row computes exactly what it computes alone; None: every row from slot 0, in one call.
        A cache kept in another dtype than the queries' (fast mode on a CPU: int8 or bf16) is read at its own size
        and attended in the queries' precision.
        """
        B, T, _ = x.shape
        q, k, v = self._qkv(x)
        firsts = list(first_slots or [0] * B)
        native = T == 1 and self.native_decode_attention and cache.k.device.type == "cpu"
        if native and cache.k.dtype == torch.int8:  # the kernel writes the new slot itself
            return self._out(decode_attention_int8(q, k, v, cache, firsts, slot))
        cache.write(slice(None), slice(slot, slot + T), k, v)
        if native and cache.k.dtype == torch.bfloat16:
            return self._out(decode_attention(q, cache.k, cache.v, firsts, slot + 1))
        keys, values = cache.read(slot + T, q.dtype)  # (B, nh, S, hs), S = slot + T
        if first_slots is not None:
            y = torch.cat([F.scaled_dot_product_attention(q[i : i + 1], keys[i : i + 1, :, first:], values[i : i + 1, :, first:])
                           for i, first in enumerate(first_slots)])  # (B, nh, T, hs)
        else:
            S = slot + T  # new position t sees slots up to slot + t
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=slot) if T > 1 else None
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self._out(y)

    def extend_fixed(self, x: torch.Tensor, cache: KVCache, slot: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One new position per row, x (B, 1, C), into slot ``slot`` (1,); every cache slot is a key and ``mask``
        (B, 1, 1, S) says which each row sees -> (B, 1, C). Only tensor values change from step to step."""
        q, k, v = self._qkv(x)
        cache.write_at(slot, k, v)
        keys, values = cache.read(None, q.dtype)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self._out(y)


class MLP(nn.Module):
    # Fast mode on a CPU: a decode step's GELU through barkkit_bark.native, which keeps its rows on the calling thread
    # (PyTorch's kernel wakes its thread pool for them). Set by use_native_kernels.
    native_gelu: bool = False

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        native = (self.native_gelu and h.device.type == "cpu" and h.dtype == torch.float32
                  and h.numel() <= GELU_MAX_VALUES)
        return self.c_proj(gelu(h) if native else F.gelu(h))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block. The causal model's layer norms follow ``bias``; the fine model's always have one.

    One method per attention method (``SelfAttention``), the MLP after each.
    """

    # A decode step's whole block in one barkkit_bark.native call, where its linears decode through fbgemm and the
    # cache is int8 (fast mode) or fp32 (exact mode's drafting twin): the block's weights as native.decode_block
    # takes them (None: module by module). Set by use_native_kernels.
    native_decode: tuple | None = None

    def __init__(self, config: GPTConfig, *, causal: bool) -> None:
        super().__init__()
        norm_bias = config.bias if causal else True
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=norm_bias)
        self.attn = SelfAttention(config, causal=causal)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=norm_bias)
        self.mlp = MLP(config)

    def _then_mlp(self, x: torch.Tensor, attended: torch.Tensor, first_query: int = 0) -> torch.Tensor:
        x = (x[:, first_query:] if first_query else x) + attended
        return x + self.mlp(self.ln_2(x))

    def forward(self, x: torch.Tensor, first_query: int = 0) -> torch.Tensor:
        return self._then_mlp(x, self.attn(self.ln_1(x), first_query), first_query)

    def prefill(self, x: torch.Tensor, cache: KVCache, rows: slice, end: int, last_only: bool = False) -> torch.Tensor:
        attended = self.attn.prefill(self.ln_1(x), cache, rows, end, last_only)
        return self._then_mlp(x, attended, x.shape[1] - 1 if last_only else 0)

    def extend(self, x: torch.Tensor, cache: KVCache, slot: int, first_slots: Sequence[int] | None = None) -> torch.Tensor:
        if (self.native_decode is not None and x.shape[1] == 1 and cache.k.dtype in (torch.int8, torch.float32)
                and not x.requires_grad):
            return decode_block(self.native_decode, x, cache, list(first_slots or []), slot)
        return self._then_mlp(x, self.attn.extend(self.ln_1(x), cache, slot, first_slots))

    def extend_fixed(self, x: torch.Tensor, cache: KVCache, slot: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._then_mlp(x, self.attn.extend_fixed(self.ln_1(x), cache, slot, mask))


class GPT(nn.Module):
    """Bark's causal model (semantic and coarse stages): token ids -> logits of the next token.

    The cache API: ``caches = model.new_caches(B, size)``; ``model.prefill(embeddings, caches)`` once per prompt;
    ``model.extend(embeddings, positions, caches, slot)`` per new token (or per run of drafted tokens). Both return
    the logits after the last position (or only the rows ``head_rows`` of them).
    """

    # The dtype of new KV caches; None: the embeddings' (the model's own). Fast mode on a CPU keeps keys and values
    # in bf16 (barkkit_bark.fast.prepare_fast): a decode step reads the cache at half the bytes.
    cache_dtype: torch.dtype | None = None

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.input_vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config, causal=True) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.output_vocab_size, bias=False)

    def new_caches(self, batch: int, max_len: int | None = None) -> list[KVCache]:
        """Empty KV caches, one per layer, for ``batch`` sequences of up to ``max_len`` positions (block size)."""
        c = self.config
        weight = self.transformer.wpe.weight  # (the head may be int8 in fast mode; embeddings never are)
        return [
            KVCache(batch, c.n_head, max_len or c.block_size, c.n_embd // c.n_head, dtype=self.cache_dtype or weight.dtype,
                    device=weight.device)
            for _ in range(c.n_layer)
        ]

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> token embeddings (B, T, C)."""
        return self.transformer.wte(idx)

    def embed_merged(self, idx: torch.Tensor, n_merged: int = 256) -> torch.Tensor:
        """Bark's "merge_context" prompt: ids (B, 2n + R) -> (B, n + R, C), the first two blocks of n summed.

        The semantic stage reads 256 text ids and 256 history ids as one 256-position block of summed embeddings.
        """
        wte = self.transformer.wte
        merged = wte(idx[:, :n_merged]) + wte(idx[:, n_merged : 2 * n_merged])  # (B, n, C)
        return torch.cat([merged, wte(idx[:, 2 * n_merged :])], dim=1)  # (B, n + R, C)

    def head(self, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Hidden states (..., C) -> logits (..., V), or only the logits ``rows`` (the coarse stage samples from
        one codebook's 1024 rows a step)."""
        x = self.transformer.ln_f(x)
        if rows is None:
            return self.lm_head(x)
        if isinstance(self.lm_head, nn.Linear):
            return F.linear(x, self.lm_head.weight[rows])
        return self.lm_head(x, rows)  # fast mode's Int8Linear reads only those rows' weights

    def _check_fits(self, end: int) -> None:
        if end > self.config.block_size:
            raise ValueError(f"positions up to {end} exceed the block size {self.config.block_size}")

    def prefill(self, tok_emb: torch.Tensor, caches: list[KVCache] | None = None, *, row: int | None = None,
                end: int | None = None,
                trim_last_layer: bool = False, head_rows: slice | None = None) -> torch.Tensor:
        """A prompt's embeddings (B, T, C) at positions 0..T-1 -> logits (B, V) of the next token, filling the
        caches' slots [end - T, end) (``end`` defaults to T) of every row, or of ``row`` only (the row engine);
        without ``caches``, the logits alone.

        By default every layer runs every position, as Suno's code does, so the first token of every window is
        computed exactly as the reference computes it. ``trim_last_layer`` (fast mode): the last layer runs the
        final position's query only, 1/n_layer less work (a one-row product can round differently).
        """
        T = tok_emb.shape[1]
        self._check_fits(T)
        end = T if end is None else end
        caches = self.new_caches(tok_emb.shape[0], end) if caches is None else caches
        rows = slice(None) if row is None else slice(row, row + 1)
        x = tok_emb + self.transformer.wpe.weight[:T]  # (B, T, C)
        last = len(self.transformer.h) - 1
        for i, (block, cache) in enumerate(zip(self.transformer.h, caches)):
            x = block.prefill(x, cache, rows, end, last_only=trim_last_layer and i == last)
        return self.head(x[:, -1], head_rows)  # (B, V): only the last position is sampled from

    def extend(self, tok_emb: torch.Tensor, pos: torch.Tensor, caches: list[KVCache], slot: int, *,
               first_slots: Sequence[int] | None = None, all_logits: bool = False,
               head_rows: slice | None = None) -> torch.Tensor:
        """New tokens' embeddings (B, T, C) at positions ``pos`` (B, T), into cache slots [slot, slot + T) ->
        logits (B, V) after the last (``all_logits``: after each, (B, T, V), exact mode's check of drafted tokens).
        ``first_slots``: SelfAttention.extend."""
        # a row's position is its slot less its left padding, so slots bound positions: an int check, no host read of
        # ``pos`` (on an accelerator that would be a sync every step)
        self._check_fits(slot + tok_emb.shape[1])
        x = tok_emb + self.transformer.wpe(pos)  # (B, T, C)
        for block, cache in zip(self.transformer.h, caches):
            x = block.extend(x, cache, slot, first_slots)
        return self.head(x if all_logits else x[:, -1], head_rows)

    def decode(self, idx: torch.Tensor, start: int, caches: list[KVCache], *, all_logits: bool = False) -> torch.Tensor:
        """Token ids (1, T) at positions and slots [start, start + T) -> logits (``extend``); exact mode's step."""
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)[None]
        return self.extend(self.embed(idx), pos, caches, start, all_logits=all_logits)

    def extend_fixed(self, caches: Sequence[KVCache], tok_emb: torch.Tensor, pos: torch.Tensor, slot: torch.Tensor,
                     first: torch.Tensor, head_rows: slice | None) -> torch.Tensor:
        """One decode step in fixed shapes, what ``torch.compile`` and CUDA graphs need: embeddings (B, 1, C) at
        positions ``pos`` (B, 1) go into cache slot ``slot`` (1,); row i attends to slots first[i]..slot of the
        whole cache under a mask -> logits (B, V). From step to step only tensor values change."""
        x = tok_emb + self.transformer.wpe(pos)
        keys = torch.arange(caches[0].k.shape[2], device=x.device)  # (S,)
        mask = ((keys >= first[:, None]) & (keys <= slot))[:, None, None]  # (B, 1, 1, S)
        for block, cache in zip(self.transformer.h, caches):
            x = block.extend_fixed(x, cache, slot, mask)
        return self.head(x[:, -1], head_rows)


class FineGPT(nn.Module):
    """Bark's fine model: all 8 codebooks (B, T, 8) -> logits (B, T, V) of codebook ``pred_idx``.

    Bidirectional attention; the input embedding is the sum of the embeddings of codebooks 0..pred_idx; head
    ``pred_idx - n_codes_given`` reads out, and shares its weight with the embedding of codebook ``pred_idx``.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wtes=nn.ModuleList(
                    [nn.Embedding(config.input_vocab_size, config.n_embd) for _ in range(config.n_codes_total)]
                ),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config, causal=False) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_heads = nn.ModuleList(
            [
                nn.Linear(config.n_embd, config.output_vocab_size, bias=False)
                for _ in range(config.n_codes_given, config.n_codes_total)
            ]
        )
        self.tie_weights()

    def tie_weights(self) -> None:
        """Head i and the embedding of codebook i + 1 are one tensor, as in Suno's FineGPT."""
        for i, head in enumerate(self.lm_heads):
            self.transformer.wtes[i + 1].weight = head.weight

    def forward(self, pred_idx: int, idx: torch.Tensor, *, first_row: int = 0, trim_last_layer: bool = False) -> torch.Tensor:
        """Codes (B, T, n_codes_total) -> logits (B, T - first_row, V) of codebook ``pred_idx`` at rows first_row..

        ``trim_last_layer`` (fast mode): the last layer runs its queries for rows first_row.. only (the others are
        still keys and values): 1/n_layer less work, but a many-row matrix product of another size can round
        differently, so exact mode runs every row as Suno's code does.
        """
        B, T, n_codes = idx.shape
        if not self.config.n_codes_given <= pred_idx < self.config.n_codes_total:
            raise ValueError(f"the fine model predicts codebooks {self.config.n_codes_given}..{self.config.n_codes_total - 1}, not {pred_idx}")
        if self.config.block_size < T:
            raise ValueError(f"{T} frames exceed the block size {self.config.block_size}")
        # Summed over the last dim of one stacked tensor, as Suno's code does, so the sums round alike.
        tok_emb = torch.stack(
            [wte(idx[:, :, i]) for i, wte in enumerate(self.transformer.wtes[: pred_idx + 1])], dim=-1
        ).sum(dim=-1)  # (B, T, C)
        x = tok_emb + self.transformer.wpe.weight[:T]  # (B, T, C)
        last = len(self.transformer.h) - 1
        for i, block in enumerate(self.transformer.h):
            x = block(x, first_query=first_row if trim_last_layer and i == last else 0)
        if not trim_last_layer:
            x = x[:, first_row:]  # (B, T', C): rows before first_row are never sampled
        x = self.transformer.ln_f(x)
        return self.lm_heads[pred_idx - self.config.n_codes_given](x)  # (B, T', V)


def use_native_kernels(model: nn.Module, enabled: bool = True, many_queries: bool = False) -> nn.Module:
    """Let ``model`` run GELU, and its one-query steps over a bf16 cache, through ``barkkit_bark.native``, in place;
    ``many_queries``: its prefills' and fine passes' fp32 attention too (attention only for the head sizes the
    kernels are compiled for)."""
    for module in model.modules():
        if isinstance(module, SelfAttention):
            fits = enabled and model.config.n_embd // module.n_head in HEAD_SIZES
            module.native_decode_attention = fits
            module.native_attention = fits and many_queries
        elif isinstance(module, MLP):
            module.native_gelu = enabled
    for module in model.modules():
        if isinstance(module, Block):
            module.native_decode = decode_block_weights(module) if enabled and module.attn.native_decode_attention else None
    return model


def decode_block_weights(block: Block) -> tuple | None:
    """``block``'s weights in ``native.decode_block``'s order, or None where its linears do not all decode through
    fbgemm with the same activation levels (then it decodes module by module)."""
    linears = (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)
    if not all(isinstance(linear, Int8Linear) for linear in linears):
        return None
    levels = {linear.decode_levels for linear in linears}
    if len(levels) != 1 or None in levels:
        return None
    c_attn, attn_proj, c_fc, mlp_proj = linears
    return (block.ln_1.weight, block.ln_1.bias, c_attn.packed, c_attn.bias, attn_proj.packed, attn_proj.bias,
            block.ln_2.weight, block.ln_2.bias, c_fc.packed, c_fc.bias, mlp_proj.packed, mlp_proj.bias, levels.pop())


def use_bf16_attention(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Let ``model`` compute the attention of many queries (prefills, fine passes) in bf16 blocks, in place."""
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.bf16_attention = enabled
    return model
