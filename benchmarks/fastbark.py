"""A batched Bark engine with an optional fast mode (prototype; to move into plugins/barkkit_bark).

One model class serves the three stages: ``BarkGPT`` (causal, semantic and coarse) and ``BarkFineGPT`` (non-causal),
with a static KV cache written in place and an attention mask that lets rows of a batch have their own lengths
(left padding for causal prompts, key padding for the fine stage). Each row samples with its own
``torch.Generator``, so a row's tokens do not depend on the other rows of its batch (up to float noise).

Fast mode (``FastOptions``) changes what is computed, each change measured by benchmarks/agreement.py:
- ``int8``: linear layers (and output heads) as int8 dynamic-quantized linears (fbgemm): 4 x less memory read per
  decode step, int8 GEMMs for prefill;
- ``fine_pad``: False stops padding short clips to 1024 frames in the fine stage (the model is non-causal, so the
  padding frames change the result slightly);
- ``fine_history``: fewer voice frames prepended in the fine stage (reference 512);
- ``coarse_history`` / ``coarse_window``: the coarse stage's history length (reference 630) and sliding window
  (reference 60): a shorter history makes each window's prefill cheaper, a longer window makes fewer prefills.
Reusing the coarse KV cache across windows whenever the new window's input only extends the previous one is exact
(same inputs, same positions), so it is always on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEMANTIC_VOCAB_SIZE = 10_000
CODEBOOK_SIZE = 1024
N_COARSE = 2
N_FINE = 8
SEMANTIC_RATE_HZ = 49.9
COARSE_RATE_HZ = 75
TEXT_ENCODING_OFFSET = 10_048
SEMANTIC_PAD_TOKEN = 10_000
TEXT_PAD_TOKEN = 129_595
SEMANTIC_INFER_TOKEN = 129_599
COARSE_SEMANTIC_PAD_TOKEN = 12_048
COARSE_INFER_TOKEN = 12_050
SEMANTIC_TO_COARSE = COARSE_RATE_HZ / SEMANTIC_RATE_HZ * N_COARSE


@dataclass
class FastOptions:
    int8: bool = False
    fine_pad: bool = True
    fine_history: int = 512
    coarse_history: int = 630
    coarse_window: int = 60

    @classmethod
    def exact(cls) -> "FastOptions":
        return cls()

    @classmethod
    def fast(cls) -> "FastOptions":
        return cls(int8=True, fine_pad=False, fine_history=512, coarse_history=630, coarse_window=60)


# model -----------------------------------------------------------------------------------------------------------
class KVCache(nn.Module):
    """Keys and values of every layer position, (B, nh, S, hs), written in place at the given slots."""

    def __init__(self, batch: int, n_head: int, size: int, head_dim: int, dtype: torch.dtype, device: Any) -> None:
        super().__init__()
        self.k = torch.empty(batch, n_head, size, head_dim, dtype=dtype, device=device)
        self.v = torch.empty(batch, n_head, size, head_dim, dtype=dtype, device=device)

    def update(self, slots: slice, k: torch.Tensor, v: torch.Tensor,
               row: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, nh, T, hs) at ``slots``; return what the queries attend to.

        ``row`` set: a one-row prefill into that row's slots; it attends to its own slots only, and the slots before
        them (left padding) are zeroed so that masked keys are finite for the batched decode steps.
        """
        if row is not None:
            self.k[row, :, : slots.start] = 0
            self.v[row, :, : slots.start] = 0
            self.k[row : row + 1, :, slots] = k
            self.v[row : row + 1, :, slots] = v
            return self.k[row : row + 1, :, slots], self.v[row : row + 1, :, slots]
        self.k[:, :, slots] = k
        self.v[:, :, slots] = v
        return self.k[:, :, : slots.stop], self.v[:, :, : slots.stop]


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool) -> None:
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.n_head = n_head
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, slots: slice | None, mask: torch.Tensor | None, causal: bool,
                row: int | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if self.cache is not None and slots is not None:
            k, v = self.cache.update(slots, k, v, row)  # (B, nh, S, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None and T > 1)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd: int, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, fine: bool) -> None:
        super().__init__()
        # Suno's causal models use a bias-optional LayerNorm; the fine model uses nn.LayerNorm (always a bias)
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias or fine)
        self.attn = Attention(n_embd, n_head, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias or fine)
        self.mlp = MLP(n_embd, bias)

    def forward(self, x: torch.Tensor, slots: slice | None, mask: torch.Tensor | None, causal: bool,
                row: int | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), slots, mask, causal, row)
        return x + self.mlp(self.ln_2(x))


class BarkGPT(nn.Module):
    """Suno's causal GPT (semantic and coarse), with Suno's parameter names, plus a static KV cache."""

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__()
        C, bias = args["n_embd"], args["bias"]
        self.args = args
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(args["input_vocab_size"], C),
            wpe=nn.Embedding(args["block_size"], C),
            h=nn.ModuleList([Block(C, args["n_head"], bias, False) for _ in range(args["n_layer"])]),
            ln_f=nn.LayerNorm(C, bias=bias),
        ))
        self.lm_head = nn.Linear(C, args["output_vocab_size"], bias=False)

    def setup_cache(self, batch: int, size: int = 1024) -> None:
        p = self.transformer.wpe.weight
        hd = self.args["n_embd"] // self.args["n_head"]
        for block in self.transformer.h:
            old = block.attn.cache
            if old is None or old.k.shape[0] != batch or old.k.shape[2] < size:
                block.attn.cache = KVCache(batch, self.args["n_head"], size, hd, p.dtype, p.device)

    def forward(self, tok_emb: torch.Tensor, pos: torch.Tensor, slots: slice, mask: torch.Tensor | None,
                row: int | None = None) -> torch.Tensor:
        """Token embeddings (B, T, C) at positions ``pos`` (B, T) into cache ``slots`` -> last logits (B, V).

        Decode: ``mask`` (B, 1, 1, S) says which cache slots each row may see (None: all up to the slot written).
        Prefill: one row at a time (``row``, B = 1), causal over its own slots, so a batch row's numbers never
        depend on the other rows (int8 activations are quantized per call).
        """
        x = tok_emb + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x, slots, mask, True, row)
        return self.lm_head(self.transformer.ln_f(x[:, -1:]))[:, 0]

    def prefill(self, rows: Sequence[torch.Tensor], total: int) -> torch.Tensor:
        """Prefill each row's embeddings (1, L_i, C), right-aligned at slot ``total`` -> last logits (B, V)."""
        out = []
        for i, emb in enumerate(rows):
            L = emb.shape[1]
            out.append(self(emb, torch.arange(L)[None], slice(total - L, total), None, row=i))
        return torch.cat(out)

    def all_logits(self, tok_emb: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits at every position (B, T, V) of a causal pass with no cache (teacher forcing)."""
        x = tok_emb + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x, None, None, True)
        return self.lm_head(self.transformer.ln_f(x))


class BarkFineGPT(nn.Module):
    """Suno's non-causal FineGPT: 8 summed codebook embeddings, one head per predicted codebook."""

    def __init__(self, args: dict[str, Any]) -> None:
        super().__init__()
        C, bias = args["n_embd"], args["bias"]
        self.args = args
        self.n_given = args["n_codes_given"]
        self.transformer = nn.ModuleDict(dict(
            wtes=nn.ModuleList([nn.Embedding(args["input_vocab_size"], C) for _ in range(args["n_codes_total"])]),
            wpe=nn.Embedding(args["block_size"], C),
            h=nn.ModuleList([Block(C, args["n_head"], bias, True) for _ in range(args["n_layer"])]),
            ln_f=nn.LayerNorm(C),
        ))
        self.lm_heads = nn.ModuleList(
            [nn.Linear(C, args["output_vocab_size"], bias=False) for _ in range(self.n_given, args["n_codes_total"])]
        )

    def tie(self) -> None:
        for i in range(len(self.lm_heads)):
            self.transformer.wtes[i + 1].weight = self.lm_heads[i].weight

    def forward(self, pred_idx: int, codes: torch.Tensor, key_mask: torch.Tensor | None, start: int) -> torch.Tensor:
        """Codes (B, T, 8) -> logits (B, T - start, V) for codebook ``pred_idx``; ``key_mask`` (B, 1, 1, T)."""
        B, T, _ = codes.shape
        x = self.transformer.wpe.weight[:T][None]
        for i in range(pred_idx + 1):
            x = x + self.transformer.wtes[i](codes[:, :, i])
        for block in self.transformer.h:
            x = block(x, None, key_mask, False)
        return self.lm_heads[pred_idx - self.n_given](self.transformer.ln_f(x[:, start:]))


def build(kind: str, checkpoint: dict[str, Any], *, int8: bool = False) -> nn.Module:
    """A model from a Suno checkpoint dict (``model_args``, ``model``), built on meta and assigned (no copy)."""
    args = dict(checkpoint["model_args"])
    if "input_vocab_size" not in args:
        args["input_vocab_size"] = args["output_vocab_size"] = args.pop("vocab_size")
    state = {k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items() if not k.endswith(".attn.bias")}
    with torch.device("meta"):
        model = BarkFineGPT(args) if kind == "fine" else BarkGPT(args)
    model.load_state_dict(state, assign=True, strict=True)
    if kind == "fine":
        model.tie()
    model.eval().requires_grad_(False)
    if int8:
        model = quantize_int8(model)
    return model


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (per output channel, symmetric) and int8 activations quantized per call.

    Many rows at once (prefill, fine stage: one batch row per call): fbgemm's dynamic-quantized linear, which
    quantizes the activations of the call with one scale. One token per row (decode): each row quantized with its
    own scale and multiplied in int32 (``torch._int_mm``, exact integer sums), so a row's result does not depend on
    the other rows of a batch. Both read the same int8 weights: a quarter of fp32's bytes per decode step.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import per_channel_dynamic_qconfig

        linear.qconfig = per_channel_dynamic_qconfig
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.packed = DynamicLinear.from_float(linear)
        weight = self.packed.weight()  # per-channel symmetric qint8: zero points are 0
        self.register_buffer("w_int8", weight.int_repr().t(), persistent=False)  # (K, N), a transposed view
        self.register_buffer("w_scale", weight.q_per_channel_scales().float(), persistent=False)  # (N,)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and x.shape[1] > 1:  # (B, T, K): one fbgemm call per batch row
            return torch.stack([self.packed(row) for row in x])
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])  # (M, K), one token per row
        scale = x2.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127.0
        q = torch.round(x2 / scale).to(torch.int8)
        y = torch._int_mm(q, self.w_int8).float() * (scale * self.w_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*shape[:-1], self.out_features)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of ``model`` (blocks and output heads) with an ``Int8Linear``."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, Int8Linear(child))
    return model


# sampling --------------------------------------------------------------------------------------------------------
def sample_rows(logits: torch.Tensor, generators: Sequence[torch.Generator], temp: float,
                top_k: int | None = None, top_p: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of ``logits`` (B, V), row i drawn with ``generators[i]``; returns (tokens (B,), probs)."""
    logits = logits.float()
    if top_p is not None:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > top_p
        remove[:, 1:] = remove[:, :-1].clone()
        remove[:, 0] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), -math.inf)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = F.softmax(logits / temp, dim=-1)
    tokens = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
    return tokens, probs


# semantic --------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_semantic(model: BarkGPT, texts_ids: Sequence[np.ndarray], histories: Sequence[np.ndarray | None],
                      generators: Sequence[torch.Generator], *, temp: float = 0.7, top_k: int | None = None,
                      top_p: float | None = None, min_eos_p: float | None = 0.2, allow_early_stop: bool = True,
                      max_gen_duration_s: float | None = None, max_steps: int = 768,
                      teacher: Sequence[np.ndarray] | None = None, record: list | None = None) -> list[np.ndarray]:
    """Semantic tokens for each row: text ids (already offset, up to 256) and an optional semantic history.

    ``teacher`` (benchmarks): feed these tokens instead of sampling and append each step's log-probabilities
    (the sampled distribution, after temperature) per row to ``record``.
    """
    B = len(texts_ids)
    text = np.full((B, 256), TEXT_PAD_TOKEN, dtype=np.int64)
    hist = np.full((B, 256), SEMANTIC_PAD_TOKEN, dtype=np.int64)
    for i, (ids, h) in enumerate(zip(texts_ids, histories)):
        text[i, : len(ids)] = ids
        if h is not None and len(h):
            h = np.asarray(h, dtype=np.int64)[-256:]
            hist[i, : len(h)] = h
    wte = model.transformer.wte
    emb = torch.cat([wte(torch.from_numpy(text)) + wte(torch.from_numpy(hist)),
                     wte(torch.full((B, 1), SEMANTIC_INFER_TOKEN))], dim=1)  # (B, 257, C)
    T0 = emb.shape[1]
    model.setup_cache(B, T0 + max_steps)
    logits = model.prefill([emb[i : i + 1] for i in range(B)], T0)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    max_tokens = max_steps if max_gen_duration_s is None else min(max_steps, _duration_steps(max_gen_duration_s))
    for n in range(max_steps):
        relevant = logits[:, :SEMANTIC_VOCAB_SIZE]
        if allow_early_stop:
            relevant = torch.cat([relevant, logits[:, SEMANTIC_PAD_TOKEN : SEMANTIC_PAD_TOKEN + 1]], dim=1)
        live = [i for i in range(B) if not done[i]]
        if teacher is not None:
            record.append(F.log_softmax(relevant[live].float() / temp, dim=-1))
            sampled = torch.tensor([int(teacher[i][n]) for i in live])
            probs = F.softmax(relevant[live].float() / temp, dim=-1)
        else:
            sampled, probs = sample_rows(relevant[live], [generators[i] for i in live], temp, top_k, top_p)
        tokens = torch.zeros(B, dtype=torch.long)  # rows that are done feed token 0; ignored
        tokens[live] = sampled
        for j, i in enumerate(live):
            t = int(tokens[i])
            if allow_early_stop and (t == SEMANTIC_VOCAB_SIZE or (min_eos_p is not None and probs[j, -1] >= min_eos_p)):
                done[i] = True
                continue
            out[i].append(t)
            if len(out[i]) >= max_tokens:
                done[i] = True
        if all(done):
            break
        tokens = tokens.clamp_max(SEMANTIC_VOCAB_SIZE - 1)  # finished rows feed any valid token; ignored
        pos = torch.full((B, 1), T0 + n)
        logits = model(wte(tokens[:, None]), pos, slice(T0 + n, T0 + n + 1), None)
    return [np.array(o, dtype=np.int64) for o in out]


def _duration_steps(max_gen_duration_s: float) -> int:
    """How many tokens the reference keeps before its duration check stops it (it adds 1/49.9 s per token)."""
    n, total = 0, 0.0
    while True:
        n += 1
        total += 1 / SEMANTIC_RATE_HZ
        if total > max_gen_duration_s:
            return n


# coarse ----------------------------------------------------------------------------------------------------------
def coarse_histories(voice: dict | None, max_coarse_history: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's trimming of a voice's semantic and coarse history (flattened, offset), including its [:-2]."""
    if voice is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    max_semantic_history = int(np.floor(max_coarse_history / SEMANTIC_TO_COARSE))
    sem = np.asarray(voice["semantic_prompt"], dtype=np.int64)
    coarse = np.asarray(voice["coarse_prompt"], dtype=np.int64).copy()
    coarse[1] += CODEBOOK_SIZE
    coarse = coarse.ravel("F") + SEMANTIC_VOCAB_SIZE
    n_sem = min(max_semantic_history, len(sem) - len(sem) % 2, int(np.floor(len(coarse) / SEMANTIC_TO_COARSE)))
    n_coarse = int(round(n_sem * SEMANTIC_TO_COARSE))
    sem = sem[-n_sem:] if n_sem > 0 else sem[:0]
    coarse = coarse[-n_coarse:] if n_coarse > 0 else coarse[:0]
    return sem, coarse[:-2]


def coarse_steps(n_semantic: int) -> int:
    return int(round(np.floor(n_semantic * SEMANTIC_TO_COARSE / N_COARSE) * N_COARSE))


@torch.inference_mode()
def generate_coarse(model: BarkGPT, semantics: Sequence[np.ndarray], voices: Sequence[dict | None],
                    generators: Sequence[torch.Generator], *, temp: float = 0.7, top_k: int | None = None,
                    top_p: float | None = None, max_coarse_history: int = 630,
                    sliding_window_len: int = 60, teacher: Sequence[np.ndarray] | None = None,
                    record: list | None = None) -> list[np.ndarray]:
    """Coarse codes (2, T) for each row, with the reference's sliding windows, all rows one batch per window.

    ``teacher`` (benchmarks): codes (2, T) to feed instead of sampling; each step's log-probabilities go to ``record``.

    A window whose input (semantic context, infer token, coarse history) only extends what the cache already holds
    for every row of the batch keeps the cache instead of prefilling again: the same tokens at the same positions,
    so the result is the reference's (up to float noise). That is the case until the coarse history reaches
    ``max_coarse_history`` or the semantic context starts to slide (short clips without a long voice).
    """
    max_semantic_history = int(np.floor(max_coarse_history / SEMANTIC_TO_COARSE))
    rows = []
    for sem, voice in zip(semantics, voices):
        sem_hist, coarse_hist = coarse_histories(voice, max_coarse_history)
        rows.append({"semantic": np.concatenate([sem_hist, np.asarray(sem, np.int64)]), "coarse": list(coarse_hist),
                     "n_hist": len(coarse_hist), "base": len(sem_hist), "n_steps": coarse_steps(len(sem))})

    def window_input(r: dict, w: int) -> list[int]:
        semantic_idx = r["base"] + int(round(w * sliding_window_len / SEMANTIC_TO_COARSE))
        x = r["semantic"][max(0, semantic_idx - max_semantic_history):][:256]
        x = np.pad(x, (0, 256 - len(x)), constant_values=COARSE_SEMANTIC_PAD_TOKEN)
        return [*x.tolist(), COARSE_INFER_TOKEN, *r["coarse"][-max_coarse_history:]]

    wte = model.transformer.wte
    B = len(rows)
    n_windows = max(int(np.ceil(r["n_steps"] / sliding_window_len)) for r in rows)
    model.setup_cache(B, 1024)  # a window holds at most 256 + 1 + 630 + 60 tokens
    cached: list[list[int] | None] = [None] * B  # each row's tokens in the cache, oldest first
    pad = [0] * B  # each row's tokens end at slot ``total``; the slots before pad[i] are zeros, masked
    total = 0
    logits = torch.zeros(B, model.lm_head.out_features)
    fed = False  # whether the cache holds the last sampled token of every row (logits are fresh)
    for w in range(n_windows):
        live = [i for i, r in enumerate(rows) if w * sliding_window_len < r["n_steps"]]
        inputs = {i: window_input(rows[i], w) for i in live}
        redo = [i for i in live if not (fed and inputs[i] == cached[i])]
        # realign every window so the cache holds no more than the longest live row (positions live in the values)
        keep = [i for i in live if i not in redo]
        new_total = max([len(cached[i]) for i in keep] + [len(inputs[i]) for i in redo])
        if keep and new_total != total:
            _shift_rows(model, keep, pad, total, new_total - total)
        for i in keep:
            pad[i] = new_total - len(cached[i])
        for i in range(B):
            if i not in live:
                pad[i] = 0  # finished rows: decoded along (finite garbage), never read
        total = new_total
        for i in redo:
            L = len(inputs[i])
            logits[i] = model(wte(torch.tensor([inputs[i]])), torch.arange(L)[None], slice(total - L, total),
                              None, row=i)[0]
            pad[i], cached[i] = total - L, list(inputs[i])
        for s in range(sliding_window_len):
            n_step = w * sliding_window_len + s
            now = [i for i in live if n_step < rows[i]["n_steps"]]
            if not now:
                break
            start = SEMANTIC_VOCAB_SIZE + (0 if n_step % N_COARSE == 0 else CODEBOOK_SIZE)
            tokens = torch.full((B,), start, dtype=torch.long)  # rows that are done feed a harmless token
            if teacher is not None:
                record.append(F.log_softmax(logits[now, start : start + CODEBOOK_SIZE].float() / temp, dim=-1))
                sampled = torch.tensor([int(teacher[i][n_step % N_COARSE, n_step // N_COARSE]) for i in now])
            else:
                sampled, _ = sample_rows(logits[now, start : start + CODEBOOK_SIZE], [generators[i] for i in now],
                                         temp, top_k, top_p)
            tokens[now] = sampled + start
            for i in now:
                rows[i]["coarse"].append(int(tokens[i]))
                cached[i].append(int(tokens[i]))
            fed = False
            if s == sliding_window_len - 1:
                # the window's last token is only worth feeding if some row keeps its cache for the next window
                nxt = w + 1
                if nxt >= n_windows or not any(nxt * sliding_window_len < rows[i]["n_steps"]
                                               and window_input(rows[i], nxt) == cached[i] for i in now):
                    break
            slot = torch.arange(total + 1)
            mask = (slot[None, :] >= torch.tensor(pad)[:, None])[:, None, None, :] if any(pad) else None
            pos = torch.tensor([[min(total - p, 1023)] for p in pad])  # finished rows: any valid position
            logits = model(wte(tokens[:, None]), pos, slice(total, total + 1),
                           mask)
            total += 1
            fed = True
    outs = []
    for r in rows:
        gen = np.array(r["coarse"][r["n_hist"]:], dtype=np.int64)[: r["n_steps"]]
        arr = gen.reshape(-1, N_COARSE).T - SEMANTIC_VOCAB_SIZE
        arr[1] -= CODEBOOK_SIZE
        outs.append(arr)
    return outs


def _shift_rows(model: BarkGPT, rows: Sequence[int], pad: Sequence[int], total: int, by: int) -> None:
    """Move the cached keys/values of ``rows`` from slots [pad, total) to [pad + by, total + by), zeros before."""
    for block in model.transformer.h:
        cache = block.attn.cache
        for i in rows:
            for t in (cache.k, cache.v):
                t[i, :, pad[i] + by : total + by] = t[i, :, pad[i] : total].clone()
                t[i, :, : pad[i] + by] = 0


# fine ------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_fine(model: BarkFineGPT, coarses: Sequence[np.ndarray], voices: Sequence[dict | None],
                  generators: Sequence[torch.Generator], *, temp: float | None = 0.5, pad_to_window: bool = True,
                  max_history: int = 512, teacher: Sequence[np.ndarray] | None = None,
                  record: list | None = None) -> list[np.ndarray]:
    """Fine codes (8, T) for each row, the reference's 1024-frame windows at stride 512 (or unpadded, fast).

    ``teacher`` (benchmarks): codes (8, T) to feed instead of sampling; log-probabilities of the frames each pass
    fills go to ``record`` as (frame index in the clip, codebook, log-probs).
    """
    rows = []
    for coarse, voice in zip(coarses, voices):
        coarse = np.asarray(coarse, np.int64)
        n_coarse, T = coarse.shape
        arr = np.vstack([coarse, np.full((N_FINE - n_coarse, T), CODEBOOK_SIZE, np.int64)])
        n_history = 0
        if voice is not None and max_history > 0:
            hist = np.asarray(voice["fine_prompt"], np.int64)[:, -max_history:]
            arr = np.hstack([hist, arr])
            n_history = hist.shape[1]
        n_pad = 0
        if arr.shape[1] < 1024 and pad_to_window:
            n_pad = 1024 - arr.shape[1]
            arr = np.hstack([arr, np.full((N_FINE, n_pad), CODEBOOK_SIZE, np.int64)])
        n_loops = max(0, int(np.ceil((T - (1024 - n_history)) / 512))) + 1
        rows.append({"arr": torch.from_numpy(arr.T.copy()), "n_history": n_history, "n_pad": n_pad,
                     "n_loops": n_loops, "n_coarse": n_coarse, "T": T})
    # Rows run one at a time: the fine model is compute-bound over hundreds of frames, so batching gains nothing,
    # and alone each row's numbers are exactly what a single run computes.
    for row_index, (r, generator) in enumerate(zip(rows, generators)):
        arr, n_coarse = r["arr"], r["n_coarse"]
        L = arr.shape[0]
        W = min(1024, L)
        for n in range(r["n_loops"]):
            start = min(n * 512, L - W)
            fill = min(r["n_history"] + n * 512, L - 512) if L >= 1024 else r["n_history"]
            rel = fill - start
            buf = arr[start : start + W][None].clone()  # (1, W, 8)
            for nn_ in range(n_coarse, N_FINE):
                logits = model(nn_, buf, None, rel)[0, :, :CODEBOOK_SIZE]  # (W - rel, 1024)
                if teacher is not None:
                    frames = torch.arange(start + rel, start + W) - r["n_history"]
                    keep = (frames >= 0) & (frames < r["T"])
                    record.append((frames[keep], nn_, F.log_softmax(logits[keep].float() / (temp or 1.0), dim=-1)))
                    truth = torch.from_numpy(np.asarray(teacher[row_index], np.int64)[nn_])
                    preds = logits.argmax(-1)  # padding frames: the model's own most likely code
                    preds[keep] = truth[frames[keep]]
                elif temp is None:
                    preds = logits.argmax(-1)
                else:
                    probs = F.softmax(logits.float() / temp, dim=-1)
                    preds = torch.multinomial(probs, 1, generator=generator)[:, 0]
                buf[0, rel:, nn_] = preds
            arr[start + rel : start + W, n_coarse:] = buf[0, rel:, n_coarse:]
    outs = []
    for r in rows:
        arr = r["arr"].T.numpy()[:, r["n_history"]:]
        if r["n_pad"]:
            arr = arr[:, : -r["n_pad"]]
        outs.append(arr[:, : r["T"]].copy())
    return outs
