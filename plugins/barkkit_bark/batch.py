"""The batched engine: several inputs through one Bark stage together, each with its own length, voice and seed.

Fast mode runs every call through here (a single run is a batch of one). Exact mode batches by running the
reference-exact engine once per input, so that its tokens stay the reference's.

How rows stay independent (a row gets the tokens it gets alone, up to float rounding):
- prefill runs one row at a time, causal over that row's own cache slots (right-aligned at a common end slot);
- decode runs all rows together, one token each; each row attends only to its own slots (left padding skipped);
- each row samples with its own ``torch.Generator`` and draws only while it is still generating, so its generator
  reaches the next stage in the state a single run leaves it in;
- int8 activations are quantized per call (prefill: one row) or per token (decode), never across rows.
The fine stage runs its rows one after the other: over hundreds of frames it is compute-bound, so a batch gains
nothing there.

Shapes: B rows, T new positions, S cache slots, C width, nh heads, hs head size, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from barkkit.constants import (
    CODEBOOK_SIZE,
    COARSE_INFER_TOKEN,
    COARSE_SEMANTIC_PAD_TOKEN,
    N_COARSE_CODEBOOKS as N_COARSE,
    N_FINE_CODEBOOKS as N_FINE,
    SEMANTIC_INFER_TOKEN,
    SEMANTIC_PAD_TOKEN,
    SEMANTIC_VOCAB_SIZE,
    TEXT_PAD_TOKEN,
)
from barkkit.stage import Progress
from barkkit.voice import Voice

from barkkit_bark.coarse import SEMANTIC_TO_COARSE_RATIO as SEMANTIC_TO_COARSE, coarse_histories
from barkkit_bark.fast import fixed_shape_decode
from barkkit_bark.kernels import Int8Linear
from barkkit_bark.model import KVCache
from barkkit_bark.sampling import filter_logits
from barkkit_bark.semantic import semantic_step_limit

__all__ = ["CausalRunner", "sample_rows", "generate_semantic_batch", "generate_coarse_batch", "generate_fine_batch"]


class CausalRunner:
    """A causal Bark GPT with a static KV cache of ``batch`` rows x ``size`` slots, written in place.

    Prefill runs one row at a time (causal over that row's own slots, right-aligned at a common end slot); decode
    runs all rows together, one token each, each row attending to its own slots only (left padding skipped). A
    row's numbers therefore never depend on the other rows (int8 activations are quantized per call or per token).
    """

    def __init__(self, model: nn.Module, batch: int, size: int, *, decode: str = "eager") -> None:
        self.model = model
        self.caches = model.new_caches(batch, size)
        # decode steps in fixed shapes, compiled or as CUDA graphs (barkkit_bark.fast.fixed_shape_decode)
        self.static_step = fixed_shape_decode(decode, static_decode_step, self.caches)

    def __call__(self, tok_emb: torch.Tensor, pos: torch.Tensor, slots: slice, first_slots: Sequence[int] | None,
                 row: int | None = None, head_rows: slice | None = None) -> torch.Tensor:
        """Token embeddings (B, T, C) at positions ``pos`` (B, T) into cache ``slots`` -> last logits (B, V).

        ``first_slots``: each decoding row's first slot (its left padding before; None: every row from slot 0).
        ``head_rows``: compute only these logits (B, len) (the coarse stage samples from one codebook a step).
        """
        if self.static_step is not None and row is None and tok_emb.shape[1] == 1:  # a fixed-shape decode step
            device = tok_emb.device
            first = torch.tensor(first_slots or [0] * tok_emb.shape[0], device=device)
            slot = torch.tensor([slots.start], device=device)
            return self.static_step(self.model, self.caches, tok_emb, pos, slot, first, head_rows)
        if row is None and first_slots is None and tok_emb.shape[0] > 1:
            # one attention call per row even without padding: PyTorch's CPU kernel rounds a many-row call
            # differently from a one-row one, and int8 activations can turn that last bit into a different token
            first_slots = [0] * tok_emb.shape[0]
        m = self.model.transformer
        x = tok_emb + m.wpe(pos)
        last = len(m.h) - 1
        for i, (block, cache) in enumerate(zip(m.h, self.caches)):
            # the last layer of a prefill runs its final position only (1/n_layer less work; rounding-level change)
            x = block(x, cache=cache, slots=slots, row=row, first_slots=first_slots,
                      first_query=x.shape[1] - 1 if i == last else 0)
        return head_logits(self.model, m.ln_f(x[:, -1:]), head_rows)

    def prefill(self, rows: Sequence[torch.Tensor], end: int) -> torch.Tensor:
        """Each row's embeddings (1, L_i, C) at positions 0..L_i - 1, in slots ending at ``end`` -> logits (B, V)."""
        out = []
        for i, emb in enumerate(rows):
            L = emb.shape[1]
            out.append(self(emb, torch.arange(L, device=emb.device)[None], slice(end - L, end), None, row=i))
        return torch.cat(out)

    def shift_rows(self, rows: Sequence[int], pad: Sequence[int], total: int, by: int) -> None:
        """Move ``rows``' keys/values from slots [pad, total) to [pad + by, total + by) (exact copies)."""
        for cache in self.caches:
            for i in rows:
                for t in (cache.k, cache.v):
                    t[i, :, pad[i] + by : total + by] = t[i, :, pad[i] : total].clone()


def head_logits(model: nn.Module, x: torch.Tensor, head_rows: slice | None) -> torch.Tensor:
    """The last positions (B, 1, C) -> logits (B, V), or only the logits ``head_rows``."""
    head = model.lm_head
    if head_rows is None:
        return head(x)[:, 0]
    if isinstance(head, Int8Linear):
        return head(x, head_rows)[:, 0]
    return F.linear(x, head.weight[head_rows], None if head.bias is None else head.bias[head_rows])[:, 0]


def static_decode_step(model: nn.Module, caches: Sequence[KVCache], tok_emb: torch.Tensor, pos: torch.Tensor,
                       slot: torch.Tensor, first: torch.Tensor, head_rows: slice | None) -> torch.Tensor:
    """One decode step in fixed shapes, what ``torch.compile`` and CUDA graphs need: token embeddings (B, 1, C) at
    positions ``pos`` (B, 1) go into cache slot ``slot`` (1,); row i attends to slots first[i]..slot of the whole
    cache under a mask -> logits (B, V). From step to step only tensor values change, never shapes or addresses."""
    m = model.transformer
    x = tok_emb + m.wpe(pos)
    keys = torch.arange(caches[0].k.shape[2], device=x.device)  # (S,)
    mask = ((keys >= first[:, None]) & (keys <= slot))[:, None, None]  # (B, 1, 1, S)
    for block, cache in zip(m.h, caches):
        x = block(x, cache=cache, slots=slot, attn_mask=mask)
    return head_logits(model, m.ln_f(x), head_rows)


def sample_rows(logits: torch.Tensor, generators: Sequence[torch.Generator], temp: float,
                top_k: int | None = None, top_p: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of ``logits`` (B, V), row i drawn with ``generators[i]``; returns (tokens (B,), probs).

    The reference's filters, with the nucleus cut in torch (no host round trip per step).
    """
    logits = filter_logits(logits.float(), top_k=top_k, top_p=top_p, exact_top_p=False)
    probs = F.softmax(logits / temp, dim=-1)
    tokens = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)])
    return tokens, probs


# semantic --------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_semantic_batch(model: nn.Module, texts_ids: Sequence[np.ndarray], histories: Sequence[np.ndarray | None],
                      generators: Sequence[torch.Generator], *, temp: float = 0.7, top_k: int | None = None,
                      top_p: float | None = None, min_eos_p: float | None = 0.2, allow_early_stop: bool = True,
                      max_gen_duration_s: float | None = None, max_steps: int = 768,
                      teacher: Sequence[np.ndarray] | None = None, record: list | None = None,
                      progress: Progress | None = None, decode: str = "eager") -> list[np.ndarray]:
    """Semantic tokens for each row: text ids (already offset, up to 256) and an optional semantic history.

    ``teacher`` (benchmarks): feed these tokens instead of sampling and append each step's log-probabilities
    (the sampled distribution, after temperature) per row to ``record``. ``decode``: "eager", "compile" or
    "cuda_graphs" (``barkkit_bark.fast.fixed_shape_decode``).
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
    device = wte.weight.device
    emb = torch.cat([wte(torch.from_numpy(text).to(device)) + wte(torch.from_numpy(hist).to(device)),
                     wte(torch.full((B, 1), SEMANTIC_INFER_TOKEN, device=device))], dim=1)  # (B, 257, C)
    T0 = emb.shape[1]
    max_tokens = max_steps if max_gen_duration_s is None else min(max_steps, semantic_step_limit(max_gen_duration_s))
    # a fixed-shape step is compiled or captured for one cache size: the largest, whatever the options
    size = T0 + (min(max_steps, max_tokens) if decode == "eager" else max_steps)
    run = CausalRunner(model, B, size, decode=decode)
    logits = run.prefill([emb[i : i + 1] for i in range(B)], T0)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for n in range(max_steps):
        relevant = logits[:, :SEMANTIC_VOCAB_SIZE]
        if allow_early_stop:
            relevant = torch.cat([relevant, logits[:, SEMANTIC_PAD_TOKEN : SEMANTIC_PAD_TOKEN + 1]], dim=1)
        live = [i for i in range(B) if not done[i]]
        if teacher is not None:
            record.append(F.log_softmax(relevant[live].float() / temp, dim=-1))
            sampled = torch.tensor([int(teacher[i][n]) for i in live], device=device)
            probs = F.softmax(relevant[live].float() / temp, dim=-1)
        else:
            sampled, probs = sample_rows(relevant[live], [generators[i] for i in live], temp, top_k, top_p)
        tokens = torch.zeros(B, dtype=torch.long, device=device)  # rows that are done feed token 0; ignored
        tokens[live] = sampled
        values = tokens.tolist()
        for j, i in enumerate(live):
            t = values[i]
            if allow_early_stop and (t == SEMANTIC_VOCAB_SIZE or (min_eos_p is not None and probs[j, -1] >= min_eos_p)):
                done[i] = True
                continue
            out[i].append(t)
            if len(out[i]) >= max_tokens:
                done[i] = True
        if progress is not None and n % 64 == 63:
            progress(n + 1, max_tokens)
        if all(done):
            break
        tokens = tokens.clamp_max(SEMANTIC_VOCAB_SIZE - 1)  # finished rows feed any valid token; ignored
        pos = torch.full((B, 1), T0 + n, device=device)
        logits = run(wte(tokens[:, None]), pos, slice(T0 + n, T0 + n + 1), None)
    return [np.array(o, dtype=np.int64) for o in out]


def coarse_steps(n_semantic: int) -> int:
    return int(round(np.floor(n_semantic * SEMANTIC_TO_COARSE / N_COARSE) * N_COARSE))


@torch.inference_mode()
def generate_coarse_batch(model: nn.Module, semantics: Sequence[np.ndarray], voices: Sequence[Voice | None],
                    generators: Sequence[torch.Generator], *, temp: float = 0.7, top_k: int | None = None,
                    top_p: float | None = None, max_coarse_history: int = 630,
                    sliding_window_len: int = 60, teacher: Sequence[np.ndarray] | None = None,
                    record: list | None = None, progress: Progress | None = None,
                    decode: str = "eager") -> list[np.ndarray]:
    """Coarse codes (2, T) for each row, with the reference's sliding windows, all rows one batch per window.

    ``teacher`` (benchmarks): codes (2, T) to feed instead of sampling; each step's log-probabilities go to ``record``.
    ``decode``: "eager", "compile" or "cuda_graphs" (``barkkit_bark.fast.fixed_shape_decode``).

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
    run = CausalRunner(model, B, 1024, decode=decode)  # a window holds at most 256 + 1 + 630 + 60 tokens
    cached: list[list[int] | None] = [None] * B  # each row's tokens in the cache, oldest first
    pad = [0] * B  # each row's tokens end at slot ``total``; the slots before pad[i] are never attended to
    total = 0
    device = wte.weight.device
    logits = torch.zeros(B, CODEBOOK_SIZE, device=device)  # the codebook sampled next: head rows from ``start``

    def codebook_rows(n_step: int) -> slice:  # coarse codes alternate between the two codebooks' token ranges
        start = SEMANTIC_VOCAB_SIZE + (0 if n_step % N_COARSE == 0 else CODEBOOK_SIZE)
        return slice(start, start + CODEBOOK_SIZE)

    fed = False  # whether the cache holds the last sampled token of every row (logits are fresh)
    for w in range(n_windows):
        live = [i for i, r in enumerate(rows) if w * sliding_window_len < r["n_steps"]]
        inputs = {i: window_input(rows[i], w) for i in live}
        redo = [i for i in live if not (fed and inputs[i] == cached[i])]
        # realign every window so the cache holds no more than the longest live row (positions live in the values)
        keep = [i for i in live if i not in redo]
        new_total = max([len(cached[i]) for i in keep] + [len(inputs[i]) for i in redo])
        if keep and new_total != total:
            run.shift_rows(keep, pad, total, new_total - total)
        for i in keep:
            pad[i] = new_total - len(cached[i])
        for i in range(B):
            if i not in live:
                pad[i] = 0  # finished rows: decoded along (finite garbage), never read
        total = new_total
        for i in redo:
            L = len(inputs[i])
            logits[i] = run(wte(torch.tensor([inputs[i]], device=device)), torch.arange(L, device=device)[None],
                            slice(total - L, total), None, row=i, head_rows=codebook_rows(w * sliding_window_len))[0]
            pad[i], cached[i] = total - L, list(inputs[i])
        for s in range(sliding_window_len):
            n_step = w * sliding_window_len + s
            now = [i for i in live if n_step < rows[i]["n_steps"]]
            if not now:
                break
            start = codebook_rows(n_step).start
            tokens = torch.full((B,), start, dtype=torch.long, device=device)  # rows that are done: ignored
            if teacher is not None:
                record.append(F.log_softmax(logits[now].float() / temp, dim=-1))
                sampled = torch.tensor([int(teacher[i][n_step % N_COARSE, n_step // N_COARSE]) for i in now],
                                       device=device)
            else:
                sampled, _ = sample_rows(logits[now], [generators[i] for i in now], temp, top_k, top_p)
            tokens[now] = sampled + start
            values = tokens.tolist()
            for i in now:
                rows[i]["coarse"].append(values[i])
                cached[i].append(values[i])
            fed = False
            if s == sliding_window_len - 1:
                # the window's last token is only worth feeding if some row keeps its cache for the next window
                nxt = w + 1
                if nxt >= n_windows or not any(nxt * sliding_window_len < rows[i]["n_steps"]
                                               and window_input(rows[i], nxt) == cached[i] for i in now):
                    break
            # rows that are done attend to their newest slot only (their numbers are never read)
            first_slots = [pad[i] if i in now else total for i in range(B)]
            pos = torch.tensor([[min(total - p, 1023)] for p in pad], device=device)  # finished rows: any valid position
            logits = run(wte(tokens[:, None]), pos, slice(total, total + 1), first_slots,
                         head_rows=codebook_rows(n_step + 1))
            total += 1
            fed = True
        if progress is not None:
            progress(w + 1, n_windows)
    outs = []
    for r in rows:
        gen = np.array(r["coarse"][r["n_hist"]:], dtype=np.int64)[: r["n_steps"]]
        arr = gen.reshape(-1, N_COARSE).T - SEMANTIC_VOCAB_SIZE
        arr[1] -= CODEBOOK_SIZE
        outs.append(arr)
    return outs


# fine ------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_fine_batch(model: nn.Module, coarses: Sequence[np.ndarray], voices: Sequence[Voice | None],
                  generators: Sequence[torch.Generator], *, temp: float | None = 0.5, pad_to_window: bool = True,
                  max_history: int = 512, teacher: Sequence[np.ndarray] | None = None,
                  record: list | None = None, progress: Progress | None = None) -> list[np.ndarray]:
    """Fine codes (8, T) for each row, the reference's 1024-frame windows at stride 512 (or unpadded, fast).

    ``teacher`` (benchmarks): codes (8, T) to feed instead of sampling; log-probabilities of the frames each pass
    fills go to ``record`` as (frame index in the clip, codebook, log-probs).
    """
    device = model.transformer.wpe.weight.device
    rows = []
    for coarse, voice in zip(coarses, voices):
        coarse = np.asarray(coarse, np.int64)
        n_coarse, T = coarse.shape
        arr = np.vstack([coarse, np.full((N_FINE - n_coarse, T), CODEBOOK_SIZE, np.int64)])
        n_history = 0
        if voice is not None and max_history > 0:
            hist = voice.fine.array.astype(np.int64)[:, -max_history:]
            arr = np.hstack([hist, arr])
            n_history = hist.shape[1]
        n_pad = 0
        if arr.shape[1] < 1024 and pad_to_window:
            n_pad = 1024 - arr.shape[1]
            arr = np.hstack([arr, np.full((N_FINE, n_pad), CODEBOOK_SIZE, np.int64)])
        n_loops = max(0, int(np.ceil((T - (1024 - n_history)) / 512))) + 1
        rows.append({"arr": torch.from_numpy(arr.T.copy()).to(device), "n_history": n_history, "n_pad": n_pad,
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
                logits = model(nn_, buf, first_row=rel, trim_last_layer=True)[0, :, :CODEBOOK_SIZE]  # (W - rel, 1024)
                if teacher is not None:
                    frames = torch.arange(start + rel, start + W, device=device) - r["n_history"]
                    keep = (frames >= 0) & (frames < r["T"])
                    record.append((frames[keep], nn_, F.log_softmax(logits[keep].float() / (temp or 1.0), dim=-1)))
                    truth = torch.from_numpy(np.asarray(teacher[row_index], np.int64)[nn_]).to(device)
                    preds = logits.argmax(-1)  # padding frames: the model's own most likely code
                    preds[keep] = truth[frames[keep]]
                elif temp is None:
                    preds = logits.argmax(-1)
                else:
                    probs = F.softmax(logits.float() / temp, dim=-1)
                    preds = torch.multinomial(probs, 1, generator=generator)[:, 0]
                buf[0, rel:, nn_] = preds
            arr[start + rel : start + W, n_coarse:] = buf[0, rel:, n_coarse:]
        if progress is not None:
            progress(row_index + 1, len(rows))
    outs = []
    for r in rows:
        arr = r["arr"].T.cpu().numpy()[:, r["n_history"]:]
        if r["n_pad"]:
            arr = arr[:, : -r["n_pad"]]
        outs.append(arr[:, : r["T"]].copy())
    return outs


# the stages' run_batch -------------------------------------------------------------------------------------------
def _check_batch(stage: Any, values: Sequence[Any], voices: Sequence[Voice | None],
                 generators: Sequence[torch.Generator]) -> None:
    from barkkit.errors import PipelineError

    from barkkit_bark.common import check_generator

    if not (len(values) == len(voices) == len(generators)):
        raise PipelineError(f"got {len(values)} inputs, {len(voices)} voices and {len(generators)} generators; give one each")
    for generator in generators:
        check_generator(generator, stage.device)


def run_semantic_batch(stage: Any, texts: Sequence[str], *, voices: Sequence[Voice | None],
                       generators: Sequence[torch.Generator], progress: Progress | None = None,
                       text_temp: float = 0.7, top_k: int | None = None, top_p: float | None = None,
                       min_eos_p: float | None = 0.2, max_gen_duration_s: float | None = None,
                       allow_early_stop: bool = True) -> list[Any]:
    """``SemanticStage.run_batch``: long texts go sentence piece by piece, piece k of every text in one batch."""
    from barkkit.errors import PipelineError
    from barkkit.tokens import SemanticTokens

    from barkkit_bark.semantic import check_semantic_options

    _check_batch(stage, texts, voices, generators)
    for text in texts:
        if not isinstance(text, str):
            raise PipelineError(f"the semantic stage reads text, got {type(text).__name__}")
    check_semantic_options(text_temp, top_k, top_p, min_eos_p, max_gen_duration_s)
    pieces = [stage.tokenizer.pieces(text) for text in texts]
    histories = [voice.semantic.array if voice is not None else None for voice in voices]
    outputs: list[list[np.ndarray]] = [[] for _ in texts]
    n_pieces = max(len(p) for p in pieces)
    for k in range(n_pieces):
        rows = [i for i, p in enumerate(pieces) if k < len(p)]
        piece_progress = (lambda done, total, k=k: progress(k * total + done, n_pieces * total)) if progress else None
        tokens = generate_semantic_batch(
            stage.model, [np.asarray(pieces[i][k].ids, np.int64) for i in rows], [histories[i] for i in rows],
            [generators[i] for i in rows], temp=text_temp, top_k=top_k, top_p=top_p, min_eos_p=min_eos_p,
            allow_early_stop=bool(allow_early_stop), max_gen_duration_s=max_gen_duration_s, progress=piece_progress,
            decode=stage.decode_steps)
        for i, t in zip(rows, tokens):
            outputs[i].append(t)
            if voices[i] is None and len(t):
                histories[i] = t  # no voice: the next sentence continues this one's speaker
    return [SemanticTokens(np.concatenate(o) if o else np.zeros(0, np.int64)) for o in outputs]


def run_coarse_batch(stage: Any, values: Sequence[Any], *, voices: Sequence[Voice | None],
                     generators: Sequence[torch.Generator], progress: Progress | None = None,
                     waveform_temp: float = 0.7, top_k: int | None = None, top_p: float | None = None,
                     max_coarse_history: int = 630, sliding_window_len: int = 60) -> list[Any]:
    """``CoarseStage.run_batch``: every input's windows advance together, one batched decode step at a time."""
    from barkkit.tokens import CoarseTokens, SemanticTokens

    from barkkit_bark.coarse import check_coarse_options

    _check_batch(stage, values, voices, generators)
    values = [SemanticTokens(v) for v in values]
    check_coarse_options(values, waveform_temp, top_k, top_p, max_coarse_history, sliding_window_len)
    codes = generate_coarse_batch(stage.model, [v.array for v in values], voices, generators, temp=waveform_temp,
                                  top_k=top_k, top_p=top_p, max_coarse_history=max_coarse_history,
                                  sliding_window_len=sliding_window_len, progress=progress,
                                  decode=stage.decode_steps)
    return [CoarseTokens(c) for c in codes]


def run_fine_batch(stage: Any, values: Sequence[Any], *, voices: Sequence[Voice | None],
                   generators: Sequence[torch.Generator], progress: Progress | None = None,
                   fine_temp: float | None = 0.5) -> list[Any]:
    """``FineStage.run_batch`` in fast mode: the reference's 1024-frame windows, int8 weights, one row at a time."""
    from barkkit.errors import PipelineError
    from barkkit.tokens import CoarseTokens, FineTokens

    from barkkit_bark.sampling import check_temperature

    _check_batch(stage, values, voices, generators)
    values = [CoarseTokens(v) for v in values]
    if any(len(v) == 0 for v in values):
        raise PipelineError("no coarse codes to refine; the coarse stage produced an empty sequence")
    check_temperature("fine_temp", fine_temp, allow_none=True)
    codes = generate_fine_batch(stage.model, [v.array for v in values], voices, generators, temp=fine_temp,
                                pad_to_window=True, progress=progress)
    return [FineTokens(c) for c in codes]
