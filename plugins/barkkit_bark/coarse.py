"""The coarse stage: semantic tokens -> the first two EnCodec codebooks (Suno's ``generate_coarse``, KV-cached).

Coarse tokens are generated as one interleaved stream, 2 x 75 / 49.9 tokens per semantic token: even steps sample
codebook 1 (logits 10,000..11,023), odd steps codebook 2 (11,024..12,047). The stream is produced in windows of
``sliding_window_len`` steps; each window starts from a fresh prompt (and so a fresh KV cache): up to 256 semantic
tokens around the current point (padded with COARSE_SEMANTIC_PAD), COARSE_INFER and the last
``max_coarse_history`` coarse tokens. A voice's semantic and coarse tokens are trimmed to a common length and
aligned as the reference does, including its last-two-tokens cut ("[:-2]"), and precede the new tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from barkkit.constants import (
    CODEBOOK_SIZE,
    COARSE_INFER_TOKEN,
    COARSE_RATE_HZ,
    COARSE_SEMANTIC_PAD_TOKEN,
    N_COARSE_CODEBOOKS,
    SEMANTIC_RATE_HZ,
    SEMANTIC_VOCAB_SIZE,
)
from barkkit.errors import PipelineError
from barkkit.stage import Progress
from barkkit.tokens import CoarseTokens, SemanticTokens
from barkkit.voice import Voice

from barkkit_bark.common import BarkStage, check_sampling_options
from barkkit_bark.engine import CausalRunner, check_batch, check_generator, sample_rows
from barkkit_bark.model import GPT
from barkkit_bark.sampling import check_temperature, sample
from barkkit_bark.speculative import generate_verified

__all__ = ["CoarseStage", "generate_coarse", "coarse_histories", "SEMANTIC_TO_COARSE_RATIO"]

SEMANTIC_TO_COARSE_RATIO = COARSE_RATE_HZ / SEMANTIC_RATE_HZ * N_COARSE_CODEBOOKS  # coarse stream tokens per semantic token
SEMANTIC_WINDOW = 256  # semantic tokens in each window's prompt


def flatten_codebooks(codes: np.ndarray) -> np.ndarray:
    """(2, C) codes -> the interleaved stream (2C,) with codebook n offset by n * 1024 and all by 10,000."""
    codes = np.asarray(codes, dtype=np.int64).copy()
    for n in range(1, codes.shape[0]):
        codes[n, :] += CODEBOOK_SIZE * n
    return codes.ravel("F") + SEMANTIC_VOCAB_SIZE


def coarse_histories(voice: Voice | None, max_coarse_history: int) -> tuple[np.ndarray, np.ndarray]:
    """The voice's semantic history and interleaved coarse history, trimmed and aligned as the reference does."""
    if voice is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    max_semantic_history = int(np.floor(max_coarse_history / SEMANTIC_TO_COARSE_RATIO))
    semantic = voice.semantic.array.astype(np.int64)
    coarse = flatten_codebooks(voice.coarse.array)
    n_semantic = int(
        min(max_semantic_history, len(semantic) - len(semantic) % 2, int(np.floor(len(coarse) / SEMANTIC_TO_COARSE_RATIO)))
    )
    n_coarse = int(round(n_semantic * SEMANTIC_TO_COARSE_RATIO))
    semantic = semantic[-n_semantic:]  # note: a count of 0 keeps everything, as numpy slicing does in the reference
    coarse = coarse[-n_coarse:]
    return semantic, coarse[:-2]  # the reference's "bit of a hack for time alignment"


@torch.inference_mode()
def generate_coarse(
    model: GPT,
    semantic: np.ndarray,
    voice: Voice | None,
    generator: torch.Generator,
    *,
    temp: float = 0.7,
    top_k: int | None = None,
    top_p: float | None = None,
    max_coarse_history: int = 630,
    sliding_window_len: int = 60,
    draft: GPT | None = None,
    n_draft: int = 8,
    progress: Progress | None = None,
) -> np.ndarray:
    """Semantic tokens (T,) -> coarse codes (2, C), C = floor(T x 75 / 49.9).

    ``draft``: an int8 twin of ``model`` that proposes ``n_draft`` tokens at a time for ``model`` to check
    (``barkkit_bark.speculative``); the tokens are the same, fewer passes read the fp32 weights.
    """
    device = model.lm_head.weight.device
    max_semantic_history = int(np.floor(max_coarse_history / SEMANTIC_TO_COARSE_RATIO))
    semantic_history, coarse_history = coarse_histories(voice, max_coarse_history)
    n_steps = int(round(np.floor(len(semantic) * SEMANTIC_TO_COARSE_RATIO / N_COARSE_CODEBOOKS) * N_COARSE_CODEBOOKS))
    x_semantic = torch.from_numpy(np.hstack([semantic_history, semantic]).astype(np.int64)).to(device)[None]  # (1, S)
    n_coarse = len(coarse_history)
    x_coarse = torch.empty((1, n_coarse + n_steps), dtype=torch.long, device=device)  # history, then new tokens
    x_coarse[0, :n_coarse] = torch.from_numpy(coarse_history.astype(np.int64)).to(device)
    infer = torch.full((1, 1), COARSE_INFER_TOKEN, dtype=torch.long, device=device)

    # One set of caches for every window: each window's prefill rewrites positions from 0.
    caches = model.new_caches(1, SEMANTIC_WINDOW + 1 + max_coarse_history + sliding_window_len)
    n_windows = int(np.ceil(n_steps / sliding_window_len))
    n_step = 0
    for window in range(n_windows):
        semantic_idx = len(semantic_history) + int(round(n_step / SEMANTIC_TO_COARSE_RATIO))
        x_in = x_semantic[:, max(0, semantic_idx - max_semantic_history) :][:, :SEMANTIC_WINDOW]
        x_in = F.pad(x_in, (0, SEMANTIC_WINDOW - x_in.shape[-1]), "constant", COARSE_SEMANTIC_PAD_TOKEN)
        x_in = torch.cat([x_in, infer, x_coarse[:, :n_coarse][:, -max_coarse_history:]], dim=1)  # (1, L)
        prompt_len = x_in.shape[1]
        n_new = min(sliding_window_len, n_steps - n_step)

        def choose(j: int, logits: torch.Tensor, first: int = n_step) -> torch.Tensor:
            # Even steps: codebook 1 (ids 10,000..11,023); odd steps: codebook 2 (11,024..12,047).
            start = SEMANTIC_VOCAB_SIZE + ((first + j) % N_COARSE_CODEBOOKS) * CODEBOOK_SIZE
            token, _ = sample(logits[:, start : start + CODEBOOK_SIZE], generator, temp=temp, top_k=top_k, top_p=top_p)
            return token[0, 0] + start

        logits = model.prefill(model.embed(x_in), caches)  # (1, V)
        if draft is not None:
            new = generate_verified(
                model, draft, caches, logits, prompt_len, n_new, lambda j, lg: int(choose(j, lg)), generator, n_draft=n_draft
            )
            x_coarse[0, n_coarse : n_coarse + n_new] = torch.tensor(new, device=device)
        else:
            for j in range(n_new):  # tokens stay on the device: no host round trip per step
                if j > 0:
                    logits = model.decode(x_coarse[:, n_coarse + j - 1 : n_coarse + j], prompt_len + j - 1, caches)
                x_coarse[0, n_coarse + j] = choose(j, logits)
        n_coarse += n_new
        n_step += n_new
        if progress is not None:
            progress(window + 1, n_windows)
    stream = x_coarse[0, len(coarse_history) :].cpu().numpy()  # (n_steps,) interleaved
    codes = stream.reshape(-1, N_COARSE_CODEBOOKS).T - SEMANTIC_VOCAB_SIZE  # (2, C)
    for n in range(1, N_COARSE_CODEBOOKS):
        codes[n, :] -= n * CODEBOOK_SIZE
    return codes


def check_coarse_options(
    values: list[SemanticTokens], waveform_temp: float, top_k: int | None, top_p: float | None,
    max_coarse_history: int, sliding_window_len: int,
) -> None:
    """Clear errors for coarse-stage inputs and options the reference would crash on or misuse."""
    if any(len(value) == 0 for value in values):
        raise PipelineError("no semantic tokens to turn into audio (the semantic stage stopped at once); try another seed")
    check_temperature("waveform_temp", waveform_temp)
    check_sampling_options(top_k, top_p)
    for name, number in (("max_coarse_history", max_coarse_history), ("sliding_window_len", sliding_window_len)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise PipelineError(f"{name} must be a whole number of at least 1, got {number!r}")
    if not 60 <= max_coarse_history <= 630:
        raise PipelineError(f"max_coarse_history must be between 60 and 630, got {max_coarse_history}")
    if max_coarse_history + sliding_window_len > 768:
        raise PipelineError(
            f"max_coarse_history + sliding_window_len must be at most 768 (the 1024-position window less 256 "
            f"semantic tokens), got {max_coarse_history} + {sliding_window_len}"
        )


class CoarseStage(BarkStage):
    """Semantic tokens -> coarse codes (2, T) with Bark's coarse model (``bark.coarse``)."""

    name: ClassVar[str] = "bark.coarse"
    consumes: ClassVar[type] = SemanticTokens
    produces: ClassVar[type] = CoarseTokens
    kind = "coarse"
    options: ClassVar[dict[str, Any]] = {
        "waveform_temp": 0.7,
        "top_k": None,
        "top_p": None,
        "max_coarse_history": 630,
        "sliding_window_len": 60,
    }

    def run(
        self,
        value: SemanticTokens,
        *,
        voice: Voice | None = None,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        waveform_temp: float = 0.7,
        top_k: int | None = None,
        top_p: float | None = None,
        max_coarse_history: int = 630,
        sliding_window_len: int = 60,
    ) -> CoarseTokens:
        """Coarse codes for ``value``, continuing the voice's coarse tokens when one is given."""
        value = SemanticTokens(value)
        check_coarse_options([value], waveform_temp, top_k, top_p, max_coarse_history, sliding_window_len)
        generator = check_generator(generator, self.device)
        if not self.exact:  # fast mode: the batched engine, as a batch of one (barkkit_bark.engine)
            return self.run_batch([value], voices=[voice], generators=[generator], progress=progress,
                                  waveform_temp=waveform_temp, top_k=top_k, top_p=top_p,
                                  max_coarse_history=max_coarse_history, sliding_window_len=sliding_window_len)[0]
        codes = generate_coarse(
            self.model,
            value.array,
            voice,
            generator,
            temp=waveform_temp,
            top_k=top_k,
            top_p=top_p,
            max_coarse_history=max_coarse_history,
            sliding_window_len=sliding_window_len,
            draft=self.draft if self.n_draft else None,
            n_draft=self.n_draft,
            progress=progress,
        )
        return CoarseTokens(codes)

    def run_fast_batch(self, values: Sequence[Any], *, voices: Sequence[Voice | None],
                         generators: Sequence[torch.Generator], progress: Progress | None = None,
                         waveform_temp: float = 0.7, top_k: int | None = None, top_p: float | None = None,
                         max_coarse_history: int = 630, sliding_window_len: int = 60) -> list[Any]:
        """``CoarseStage.run_batch``: every input's windows advance together, one batched decode step at a time."""
        check_batch(self, values, voices, generators)
        values = [SemanticTokens(v) for v in values]
        check_coarse_options(values, waveform_temp, top_k, top_p, max_coarse_history, sliding_window_len)
        codes = generate_coarse_batch(self.model, [v.array for v in values], voices, generators, temp=waveform_temp,
                                      top_k=top_k, top_p=top_p, max_coarse_history=max_coarse_history,
                                      sliding_window_len=sliding_window_len, progress=progress,
                                      decode=self.decode_steps)
        return [CoarseTokens(c) for c in codes]


def coarse_steps(n_semantic: int) -> int:
    return int(round(np.floor(n_semantic * SEMANTIC_TO_COARSE_RATIO / N_COARSE_CODEBOOKS) * N_COARSE_CODEBOOKS))



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
    max_semantic_history = int(np.floor(max_coarse_history / SEMANTIC_TO_COARSE_RATIO))
    rows = []
    for sem, voice in zip(semantics, voices):
        sem_hist, coarse_hist = coarse_histories(voice, max_coarse_history)
        rows.append({"semantic": np.concatenate([sem_hist, np.asarray(sem, np.int64)]), "coarse": list(coarse_hist),
                     "n_hist": len(coarse_hist), "base": len(sem_hist), "n_steps": coarse_steps(len(sem))})

    def window_input(r: dict, w: int) -> list[int]:
        semantic_idx = r["base"] + int(round(w * sliding_window_len / SEMANTIC_TO_COARSE_RATIO))
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
        start = SEMANTIC_VOCAB_SIZE + (0 if n_step % N_COARSE_CODEBOOKS == 0 else CODEBOOK_SIZE)
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
                sampled = torch.tensor([int(teacher[i][n_step % N_COARSE_CODEBOOKS, n_step // N_COARSE_CODEBOOKS]) for i in now],
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
        arr = gen.reshape(-1, N_COARSE_CODEBOOKS).T - SEMANTIC_VOCAB_SIZE
        arr[1] -= CODEBOOK_SIZE
        outs.append(arr)
    return outs
