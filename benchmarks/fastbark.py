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

    def update(self, slots: slice, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    def forward(self, x: torch.Tensor, slots: slice | None, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if self.cache is not None and slots is not None:
            k, v = self.cache.update(slots, k, v)  # (B, nh, S, hs), S = slots.stop
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

    def forward(self, x: torch.Tensor, slots: slice | None, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), slots, mask, causal)
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

    def forward(self, tok_emb: torch.Tensor, pos: torch.Tensor, slots: slice, mask: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings (B, T, C) at positions ``pos`` (B, T) into cache ``slots`` -> last logits (B, V).

        ``mask`` (B, 1, T, S) says which cache slots each query may see; None means plain causal from slot 0.
        """
        x = tok_emb + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x, slots, mask, True)
        return self.lm_head(self.transformer.ln_f(x[:, -1]))

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


def quantize_int8(model: nn.Module) -> nn.Module:
    """Every nn.Linear as an int8 dynamic-quantized linear (per-tensor weights, activations quantized per call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


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


def _left_pad_mask(lengths: Sequence[int], total: int, device: Any) -> torch.Tensor:
    """(B, 1, total, total) causal mask over left-padded rows: row i's real tokens sit in the last lengths[i] slots."""
    slot = torch.arange(total, device=device)
    start = torch.tensor([total - n for n in lengths], device=device)[:, None, None, None]
    query, key = slot[None, None, :, None], slot[None, None, None, :]
    # padding queries see themselves, so no row is fully masked (a NaN there would reach the real rows' values)
    return (query >= key) & ((key >= start) | (key == query))


# semantic --------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_semantic(model: BarkGPT, texts_ids: Sequence[np.ndarray], histories: Sequence[np.ndarray | None],
                      generators: Sequence[torch.Generator], *, temp: float = 0.7, top_k: int | None = None,
                      top_p: float | None = None, min_eos_p: float | None = 0.2, allow_early_stop: bool = True,
                      max_gen_duration_s: float | None = None, max_steps: int = 768) -> list[np.ndarray]:
    """Semantic tokens for each row: text ids (already offset, up to 256) and an optional semantic history."""
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
    logits = model(emb, torch.arange(T0)[None].expand(B, T0), slice(0, T0), None)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    max_tokens = max_steps if max_gen_duration_s is None else min(max_steps, _duration_steps(max_gen_duration_s))
    for n in range(max_steps):
        relevant = logits[:, :SEMANTIC_VOCAB_SIZE]
        if allow_early_stop:
            relevant = torch.cat([relevant, logits[:, SEMANTIC_PAD_TOKEN : SEMANTIC_PAD_TOKEN + 1]], dim=1)
        tokens, probs = sample_rows(relevant, generators, temp, top_k, top_p)
        for i in range(B):
            if done[i]:
                continue
            t = int(tokens[i])
            if allow_early_stop and (t == SEMANTIC_VOCAB_SIZE or (min_eos_p is not None and probs[i, -1] >= min_eos_p)):
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
                    sliding_window_len: int = 60) -> list[np.ndarray]:
    """Coarse codes (2, T) for each row, with the reference's sliding windows, all rows one batch per window.

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
    n_windows = max(int(np.ceil(r["n_steps"] / sliding_window_len)) for r in rows)
    batch: list[int] = []  # rows in the cache, in order
    cached: list[list[int]] = []  # each batch row's tokens in the cache (its own positions)
    pad_left: list[int] = []
    total = 0  # cache slots used
    cache_size = 0
    logits = None
    for w in range(n_windows):
        live = [i for i, r in enumerate(rows) if w * sliding_window_len < r["n_steps"]]
        inputs = {i: window_input(rows[i], w) for i in live}
        steps_left = max(rows[i]["n_steps"] - w * sliding_window_len for i in live)
        reuse = logits is not None and total + min(sliding_window_len, steps_left) <= cache_size and all(
            i not in inputs or inputs[i] == cached[j] for j, i in enumerate(batch))
        if not reuse:
            batch = live
            lengths = [len(inputs[i]) for i in batch]
            total = max(lengths)
            pad_left = [total - n for n in lengths]
            ids = torch.tensor([[COARSE_SEMANTIC_PAD_TOKEN] * p + inputs[i] for p, i in zip(pad_left, batch)])
            pos = torch.tensor([[0] * p + list(range(n)) for p, n in zip(pad_left, lengths)])
            cache_size = min(1024, total + steps_left)
            model.setup_cache(len(batch), cache_size)
            mask = None if len(set(lengths)) == 1 else _left_pad_mask(lengths, total, ids.device)
            logits = model(wte(ids), pos, slice(0, total), mask)
            cached = [list(inputs[i]) for i in batch]
        gens = [generators[i] for i in batch]
        for s in range(sliding_window_len):
            n_step = w * sliding_window_len + s
            if n_step >= max(rows[i]["n_steps"] for i in batch):
                break
            start = SEMANTIC_VOCAB_SIZE + (0 if n_step % N_COARSE == 0 else CODEBOOK_SIZE)
            tokens, _ = sample_rows(logits[:, start : start + CODEBOOK_SIZE], gens, temp, top_k, top_p)
            tokens = tokens + start
            for j, i in enumerate(batch):
                if n_step < rows[i]["n_steps"]:
                    rows[i]["coarse"].append(int(tokens[j]))
                cached[j].append(int(tokens[j]))
            if s == sliding_window_len - 1 or total + 1 > cache_size:
                # the window's last token is only worth feeding if the next window can keep this cache
                nxt = w + 1
                if nxt >= n_windows or total + 1 > cache_size or any(
                        nxt * sliding_window_len < rows[i]["n_steps"] and window_input(rows[i], nxt) != cached[j]
                        for j, i in enumerate(batch)):
                    logits = None
                    break
            pos = torch.tensor([[total - p] for p in pad_left])
            mask = None
            if any(pad_left):
                slot = torch.arange(total + 1)
                mask = (slot[None, :] >= torch.tensor(pad_left)[:, None])[:, None, None, :]
            logits = model(wte(tokens[:, None]), pos, slice(total, total + 1), mask)
            total += 1
    outs = []
    for r in rows:
        gen = np.array(r["coarse"][r["n_hist"]:], dtype=np.int64)[: r["n_steps"]]
        arr = gen.reshape(-1, N_COARSE).T - SEMANTIC_VOCAB_SIZE
        arr[1] -= CODEBOOK_SIZE
        outs.append(arr)
    return outs


# fine ------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_fine(model: BarkFineGPT, coarses: Sequence[np.ndarray], voices: Sequence[dict | None],
                  generators: Sequence[torch.Generator], *, temp: float | None = 0.5, pad_to_window: bool = True,
                  max_history: int = 512) -> list[np.ndarray]:
    """Fine codes (8, T) for each row, the reference's 1024-frame windows at stride 512 (or unpadded, fast)."""
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
    n_coarse = rows[0]["n_coarse"]
    for n in range(max(r["n_loops"] for r in rows)):
        active = [i for i, r in enumerate(rows) if n < r["n_loops"]]
        windows = []
        for i in active:
            r = rows[i]
            L = r["arr"].shape[0]
            W = min(1024, L)
            start = min(n * 512, L - W)
            fill = min(r["n_history"] + n * 512, L - 512) if L >= 1024 else r["n_history"]
            windows.append((start, W, fill - start))
        Wmax = max(W for _, W, _ in windows)
        buf = torch.full((len(active), Wmax, N_FINE), CODEBOOK_SIZE, dtype=torch.long)
        for j, (i, (start, W, _)) in enumerate(zip(active, windows)):
            buf[j, :W] = rows[i]["arr"][start : start + W]
        key_mask = None
        if any(W != Wmax for _, W, _ in windows):
            key_mask = (torch.arange(Wmax)[None, :] < torch.tensor([W for _, W, _ in windows])[:, None])[:, None, None]
        first = min(rel for _, _, rel in windows)
        for nn_ in range(n_coarse, N_FINE):
            logits = model(nn_, buf, key_mask, first)[..., :CODEBOOK_SIZE]  # (B, Wmax - first, 1024)
            for j, (i, (start, W, rel)) in enumerate(zip(active, windows)):
                lg = logits[j, rel - first : W - first]
                if temp is None:
                    preds = lg.argmax(-1)
                else:
                    probs = F.softmax(lg.float() / temp, dim=-1)
                    preds = torch.multinomial(probs, 1, generator=generators[i])[:, 0]
                buf[j, rel:W, nn_] = preds
        for j, (i, (start, W, rel)) in enumerate(zip(active, windows)):
            rows[i]["arr"][start + rel : start + W, n_coarse:] = buf[j, rel:W, n_coarse:]
    outs = []
    for r in rows:
        arr = r["arr"].T.numpy()[:, r["n_history"]:]
        if r["n_pad"]:
            arr = arr[:, : -r["n_pad"]]
        outs.append(arr[:, : r["T"]].copy())
    return outs
