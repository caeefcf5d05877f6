"""Bark's transformers: one causal GPT (semantic and coarse stages) and one non-causal FineGPT (fine stage).

The layers and parameter names are those of Suno's ``bark/model.py`` and ``bark/model_fine.py`` (themselves nanoGPT),
so a Suno state dict loads as it is (minus the ``_orig_mod.`` prefix). What differs is how the causal model is
run: a static KV cache written in place, a prefill pass separate from the one-token decode pass, and no work whose
result is dropped (only the last position goes through the final layer norm and the head). Exact mode runs them
with Suno's arithmetic; fast mode's batched engine (``barkkit_bark.engine``) runs the same modules with its own cache
layout (a row per input), int8 linears and bf16 attention (``barkkit_bark.fast``).

Shapes: B batch, T new positions, S positions in the cache, C = n_embd, nh heads, hs = C // nh head size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

from barkkit_bark.kernels import blocked_attention_bf16

__all__ = ["GPTConfig", "KVCache", "GPT", "FineGPT"]


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


class KVCache:
    """Preallocated keys and values of one attention layer, ``k`` and ``v`` (B, nh, max_len, hs), written in place.

    The exact engine fills slots [0, length) of every row together; fast mode's batched engine
    (``barkkit_bark.engine``) prefills one row at a time, right-aligned at a common end slot, and decodes all rows
    together.
    """

    def __init__(self, batch: int, n_head: int, max_len: int, head_size: int, *, dtype: torch.dtype, device: torch.device):
        shape = (batch, n_head, max_len, head_size)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, slots: slice | torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               row: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) at ``slots`` (of every row, or of ``row`` only: a one-row prefill) -> the keys
        and values up to ``slots.stop`` (B, nh, S, hs).

        ``slots`` as a tensor of T slot indices (a static-shape decode step: compiled, CUDA graphs): written there,
        and the whole cache comes back, the same shapes and addresses at every step.
        """
        if isinstance(slots, torch.Tensor):
            self.k.index_copy_(2, slots, k)
            self.v.index_copy_(2, slots, v)
            return self.k, self.v
        rows = slice(None) if row is None else slice(row, row + 1)
        self.k[rows, :, slots] = k
        self.v[rows, :, slots] = v
        return self.k[rows, :, : slots.stop], self.v[rows, :, : slots.stop]


class SelfAttention(nn.Module):
    """Multi-head self-attention: causal (with an optional KV cache) or, for the fine model, bidirectional."""

    # Fast mode reads this: attention of many queries in bf16 matrix products (barkkit_bark.fast). Set by
    # barkkit_bark.fast.prepare_fast on CPUs that multiply bf16 in hardware; exact mode never does.
    bf16_attention: bool = False

    def __init__(self, config: GPTConfig, *, causal: bool) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v of all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.causal = causal

    def forward(
        self,
        x: torch.Tensor,
        *,
        cache: KVCache | None = None,
        slots: slice | torch.Tensor | None = None,
        row: int | None = None,
        first_slots: Sequence[int] | None = None,
        first_query: int = 0,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, C), written to ``cache`` at ``slots`` -> (B, T - first_query, C).

        Every position is a key; queries from ``first_query`` on (a causal model only trims to its last position,
        which sees every key). A prefill (cache slots from 0, or one ``row``) attends to its own new keys; later
        positions attend to everything cached up to them. ``first_slots`` (one new position per row, the batched
        engine's left-padded rows): row i attends to the slots from ``first_slots[i]`` on only. Each row then reads
        only its own keys, and computes exactly what it computes alone. ``attn_mask`` (B, 1, T, S) (a static-shape
        decode step, ``slots`` a tensor): every cache slot is a key, and the mask says which each row sees.
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            cached_k, cached_v = cache.update(slots, k, v, row)  # (B, nh, S, hs)
            if attn_mask is not None or (row is None and slots.start > 0):  # not a prefill: the cache is keys too
                k, v = cached_k, cached_v
        S = k.shape[2]
        if first_query:
            q, T = q[:, :, first_query:], T - first_query  # (B, nh, T', hs)
        is_causal, mask = self.causal and T > 1, None
        if is_causal and S > T:  # several new positions after cached ones (exact mode checking drafted tokens)
            mask, is_causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T), False
        # A cache kept in another dtype than the queries' (fast mode on a CPU: bf16, GPT.cache_dtype) is read at its
        # own size and attended in the queries' precision; to(...) is a no-op otherwise.
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=attn_mask)  # (B, nh, T, hs)
        elif first_slots is not None:
            y = torch.cat([F.scaled_dot_product_attention(q[i : i + 1], k[i : i + 1, :, first:].to(q.dtype),
                                                          v[i : i + 1, :, first:].to(q.dtype))
                           for i, first in enumerate(first_slots)])  # (B, nh, 1, hs)
        elif self.bf16_attention and T > 1 and mask is None:  # fast mode's prefills and fine passes
            y = blocked_attention_bf16(q, k, v, causal=is_causal)
        else:
            y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, is_causal=is_causal)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))  # heads side by side again


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block. The causal model's layer norms follow ``bias``; the fine model's always have one."""

    def __init__(self, config: GPTConfig, *, causal: bool) -> None:
        super().__init__()
        norm_bias = config.bias if causal else True
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=norm_bias)
        self.attn = SelfAttention(config, causal=causal)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=norm_bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, *, first_query: int = 0, **attention: Any) -> torch.Tensor:
        """x (B, T, C) -> (B, T - first_query, C); ``attention``: cache, slots, row, first_slots, attn_mask
        (``SelfAttention``)."""
        attended = self.attn(self.ln_1(x), first_query=first_query, **attention)
        x = (x[:, first_query:] if first_query else x) + attended
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Bark's causal model (semantic and coarse stages): token ids -> logits of the next token.

    Use: ``caches = model.new_caches(B, max_len)``, then ``model.prefill(embeddings, caches)`` once and
    ``model.decode(tokens, start, caches)`` per new token. Both return the logits of the last position only.
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

    def _run(self, tok_emb: torch.Tensor, start: int, caches: list[KVCache] | None, all_logits: bool = False) -> torch.Tensor:
        T = tok_emb.shape[1]
        if start + T > self.config.block_size:
            raise ValueError(f"positions up to {start + T} exceed the block size {self.config.block_size}")
        x = tok_emb + self.transformer.wpe.weight[start : start + T]  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            cache = caches[i] if caches is not None else None
            x = block(x, cache=cache, slots=slice(start, start + T))
        if all_logits:
            return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        x = self.transformer.ln_f(x[:, -1])  # (B, C): only the last position is sampled from
        return self.lm_head(x)  # (B, V)

    def prefill(self, tok_emb: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """Embeddings (B, T, C) of a prompt at positions [0, T) -> logits (B, V) of the next token; fills ``caches``.

        Every layer runs every position, as Suno's code does: the prefill logits, and so the first token of every
        window, are computed exactly as the reference computes them. (Fast mode runs the last layer for the final
        position only: a one-row matrix product can round differently from a many-row one.)
        """
        return self._run(tok_emb, 0, caches)

    def decode(self, idx: torch.Tensor, start: int, caches: list[KVCache], *, all_logits: bool = False) -> torch.Tensor:
        """New tokens, ids (B, T) at positions [start, start + T) (usually T = 1) -> logits (B, V) after the last.

        ``all_logits``: the logits after every new token, (B, T, V) (exact mode's check of drafted tokens).
        """
        return self._run(self.embed(idx), start, caches, all_logits=all_logits)


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
