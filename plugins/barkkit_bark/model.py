"""Bark's transformers: one causal GPT (semantic and coarse stages) and one non-causal FineGPT (fine stage).

The layers and parameter names are those of Suno's ``bark/model.py`` and ``bark/model_fine.py`` (themselves nanoGPT),
so a Suno state dict loads as it is (minus the ``_orig_mod.`` prefix). What differs is how the causal model is
run: a static KV cache written in place, a prefill pass separate from the one-token decode pass, and no work whose
result is dropped (only the last position goes through the final layer norm and the head).

Shapes: B batch, T new positions, S positions in the cache, C = n_embd, nh heads, hs = C // nh head size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

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
    """Preallocated keys and values of one attention layer, written in place as positions are computed.

    ``k`` and ``v`` have shape (B, nh, max_len, hs); positions [0, length) are valid.
    """

    def __init__(self, batch: int, n_head: int, max_len: int, head_size: int, *, dtype: torch.dtype, device: torch.device):
        shape = (batch, n_head, max_len, head_size)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) at positions [start, start + T); return the valid keys and values (B, nh, S, hs)."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention: causal (with an optional KV cache) or, for the fine model, bidirectional."""

    # Fast mode's engine (barkkit_bark.batch) reads this: attention of many queries in bf16 matrix products.
    # Set by barkkit_bark.fast.prepare_fast on CPUs that multiply bf16 in hardware; exact mode never does.
    bf16_attention: bool = False

    def __init__(self, config: GPTConfig, *, causal: bool) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v of all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.causal = causal

    def forward(
        self,
        x: torch.Tensor,
        *,
        cache: KVCache | None = None,
        start: int = 0,
        last_only: bool = False,
    ) -> torch.Tensor:
        """x (B, T, C) at positions [start, start + T) -> (B, T, C), or (B, 1, C) for the last position only."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            past_k, past_v = cache.update(start, k, v)  # (B, nh, S, hs), S = start + T
            if start > 0:  # decode: attend to everything cached (prefill attends to the fresh k, v below)
                k, v = past_k, past_v
        mask = None
        if last_only and T > 1:
            # Only the last query is needed (the final layer of a prefill): it sees every key, so no mask.
            q = q[:, :, -1:]  # (B, nh, 1, hs)
            is_causal, T = False, 1
        else:
            # A causal block at 0 uses the square causal mask; a one-token decode sees every cached position.
            is_causal = self.causal and start == 0 and T > 1
            if self.causal and start > 0 and T > 1:  # several new tokens after a cached prefix
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)  # (T, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.c_proj(y)


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

    def forward(
        self, x: torch.Tensor, *, cache: KVCache | None = None, start: int = 0, last_only: bool = False
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C), or (B, 1, C) when ``last_only``."""
        attended = self.attn(self.ln_1(x), cache=cache, start=start, last_only=last_only)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        x = x + attended
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Bark's causal model (semantic and coarse stages): token ids -> logits of the next token.

    Use: ``caches = model.new_caches(B, max_len)``, then ``model.prefill(embeddings, caches)`` once and
    ``model.decode(tokens, start, caches)`` per new token. Both return the logits of the last position only.
    """

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
        weight = self.lm_head.weight
        return [
            KVCache(batch, c.n_head, max_len or c.block_size, c.n_embd // c.n_head, dtype=weight.dtype, device=weight.device)
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

    def _run(
        self,
        tok_emb: torch.Tensor,
        start: int,
        caches: list[KVCache] | None,
        trim_last_layer: bool = False,
        all_logits: bool = False,
    ) -> torch.Tensor:
        T = tok_emb.shape[1]
        if start + T > self.config.block_size:
            raise ValueError(f"positions up to {start + T} exceed the block size {self.config.block_size}")
        x = tok_emb + self.transformer.wpe.weight[start : start + T]  # (B, T, C)
        layers = self.transformer.h
        for i, block in enumerate(layers):
            cache = caches[i] if caches is not None else None
            x = block(x, cache=cache, start=start, last_only=trim_last_layer and i == len(layers) - 1)
        if all_logits:
            return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        x = self.transformer.ln_f(x[:, -1])  # (B, C): only the last position is sampled from
        return self.lm_head(x)  # (B, V)

    def prefill(
        self, tok_emb: torch.Tensor, caches: list[KVCache] | None = None, *, trim_last_layer: bool = False
    ) -> torch.Tensor:
        """Embeddings (B, T, C) of a prompt at positions [0, T) -> logits (B, V) of the next token; fills ``caches``.

        ``trim_last_layer`` runs the last layer for the final position only (its keys and values are still cached):
        1/n_layer less work, but the logits then differ from Suno's in the last float bits, because a one-row matrix
        product rounds differently from a many-row one. Exact mode keeps it off: its prefill logits, and so the first
        token of every window, are computed exactly as Suno's code computes them.
        """
        return self._run(tok_emb, 0, caches, trim_last_layer)

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

    def forward(self, pred_idx: int, idx: torch.Tensor, *, first_row: int = 0) -> torch.Tensor:
        """Codes (B, T, n_codes_total) -> logits (B, T - first_row, V) of codebook ``pred_idx`` at rows first_row.."""
        B, T, n_codes = idx.shape
        if not self.config.n_codes_given <= pred_idx < self.config.n_codes_total:
            raise ValueError(f"the fine model predicts codebooks {self.config.n_codes_given}..{self.config.n_codes_total - 1}, not {pred_idx}")
        if T > self.config.block_size:
            raise ValueError(f"{T} frames exceed the block size {self.config.block_size}")
        # Summed over the last dim of one stacked tensor, as Suno's code does, so the sums round alike.
        tok_emb = torch.stack(
            [wte(idx[:, :, i]) for i, wte in enumerate(self.transformer.wtes[: pred_idx + 1])], dim=-1
        ).sum(dim=-1)  # (B, T, C)
        x = tok_emb + self.transformer.wpe.weight[:T]  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x[:, first_row:])  # (B, T', C): rows before first_row are never sampled
        return self.lm_heads[pred_idx - self.config.n_codes_given](x)  # (B, T', V)
