"""The coarse stage: semantic tokens -> the first two EnCodec codebooks (Suno's ``generate_coarse``, KV-cached).

Coarse tokens are generated as one interleaved stream, 2 x 75 / 49.9 tokens per semantic token: even steps sample
codebook 1 (logits 10,000..11,023), odd steps codebook 2 (11,024..12,047). The stream is produced in windows of
``sliding_window_len`` steps; each window starts from a fresh prompt (and so a fresh KV cache): up to 256 semantic
tokens around the current point (padded with COARSE_SEMANTIC_PAD), COARSE_INFER and the last
``max_coarse_history`` coarse tokens. A voice's semantic and coarse tokens are trimmed to a common length and
aligned as the reference does, including its last-two-tokens cut ("[:-2]"), and precede the new tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from barkkit.constants import (
    COARSE_INFER_TOKEN,
    COARSE_RATE_HZ,
    COARSE_SEMANTIC_PAD_TOKEN,
    CODEBOOK_SIZE,
    N_COARSE_CODEBOOKS,
    SEMANTIC_RATE_HZ,
    SEMANTIC_VOCAB_SIZE,
)
from barkkit.errors import PipelineError
from barkkit.stage import Progress
from barkkit.tokens import CoarseTokens, SemanticTokens
from barkkit.voice import Voice
from barkkit_bark.common import (
    BarkStage,
    check_sampling_options,
    defaults_of,
    help_of,
    make_options,
    option_field,
)
from barkkit_bark.engine import CausalRunner, check_batch, check_generator, sample_rows
from barkkit_bark.model import GPT
from barkkit_bark.sampling import check_temperature, sample
from barkkit_bark.speculative import generate_verified

__all__ = ["CoarseStage", "CoarseOptions", "generate_coarse", "generate_coarse_batch", "coarse_histories",
           "SEMANTIC_TO_COARSE_RATIO"]

SEMANTIC_TO_COARSE_RATIO = COARSE_RATE_HZ / SEMANTIC_RATE_HZ * N_COARSE_CODEBOOKS  # coarse stream tokens per semantic token
SEMANTIC_WINDOW = 256  # semantic tokens in each window's prompt
MAX_COARSE_HISTORY = 630  # the reference's most coarse history tokens (and its default)


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
    options: CoarseOptions,
    *,
    draft: GPT | None = None,
    n_draft: int = 8,
    progress: Progress | None = None,
) -> np.ndarray:
    """Semantic tokens (T,) -> coarse codes (2, C), C = floor(T x 75 / 49.9).

    ``draft``: an int8 twin of ``model`` that proposes ``n_draft`` tokens at a time for ``model`` to check
    (``barkkit_bark.speculative``); the tokens are the same, fewer passes read the fp32 weights.
    """
    device = model.lm_head.weight.device
    temp, top_k, top_p = options.waveform_temp, options.top_k, options.top_p
    max_coarse_history, sliding_window_len = options.max_coarse_history, options.sliding_window_len
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


@dataclass(frozen=True)
class CoarseOptions:
    """The coarse stage's options: the reference's ``generate_coarse`` arguments, with its defaults.

    Values are checked when the options are made, with the errors the reference would crash on or misuse.
    """

    waveform_temp: float = option_field(0.7, "Coarse stage temperature.")
    top_k: int | None = option_field(None, "Sample only among the k most likely tokens.")
    top_p: float | None = option_field(None, "Nucleus sampling: the smallest set with this much probability.")
    max_coarse_history: int = option_field(MAX_COARSE_HISTORY, "Coarse tokens of history each window sees (60 to 630).")
    sliding_window_len: int = option_field(60, "Coarse steps per window.")

    def __post_init__(self) -> None:
        check_temperature("waveform_temp", self.waveform_temp)
        check_sampling_options(self.top_k, self.top_p)
        history, window = self.max_coarse_history, self.sliding_window_len
        for name, number in (("max_coarse_history", history), ("sliding_window_len", window)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise PipelineError(f"{name} must be a whole number of at least 1, got {number!r}")
        if not 60 <= history <= MAX_COARSE_HISTORY:
            raise PipelineError(f"max_coarse_history must be between 60 and 630, got {history}")
        if history + window > 768:
            raise PipelineError(
                f"max_coarse_history + sliding_window_len must be at most 768 (the 1024-position window less 256 "
                f"semantic tokens), got {history} + {window}"
            )


def check_semantic_input(values: Sequence[SemanticTokens]) -> None:
    if any(len(value) == 0 for value in values):
        raise PipelineError("no semantic tokens to turn into audio (the semantic stage stopped at once); try another seed")


class CoarseStage(BarkStage):
    """Semantic tokens -> coarse codes (2, T) with Bark's coarse model (``bark.coarse``)."""

    name: ClassVar[str] = "bark.coarse"
    consumes: ClassVar[type] = SemanticTokens
    produces: ClassVar[type] = CoarseTokens
    kind = "coarse"
    Options = CoarseOptions
    options: ClassVar[dict[str, Any]] = defaults_of(CoarseOptions)
    option_help: ClassVar[dict[str, str]] = help_of(CoarseOptions)

    def run(
        self,
        value: SemanticTokens,
        *,
        voice: Voice | None = None,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> CoarseTokens:
        """Coarse codes for ``value``, continuing the voice's coarse tokens when one is given."""
        value = SemanticTokens(value)
        check_semantic_input([value])
        opts = make_options(CoarseOptions, options)
        generator = check_generator(generator, self.device)
        if not self.exact:  # fast mode: the row engine, as a batch of one (barkkit_bark.engine)
            return self.run_batch([value], voices=[voice], generators=[generator], progress=progress, **options)[0]
        codes = generate_coarse(
            self.model,
            value.array,
            voice,
            generator,
            opts,
            draft=self.draft if self.n_draft else None,
            n_draft=self.n_draft,
            progress=progress,
        )
        return CoarseTokens(codes)

    def run_fast_batch(self, values: Sequence[Any], *, voices: Sequence[Voice | None],
                       generators: Sequence[torch.Generator], progress: Progress | None = None,
                       **options: Any) -> list[Any]:
        """``CoarseStage.run_batch``: every input's windows advance together, one batched decode step at a time."""
        check_batch(self, values, voices, generators)
        values = [SemanticTokens(v) for v in values]
        check_semantic_input(values)
        opts = make_options(CoarseOptions, options)
        codes = generate_coarse_batch(self.model, [v.array for v in values], voices, generators, opts,
                                      progress=progress, decode=self.decode_steps)
        return [CoarseTokens(c) for c in codes]


def coarse_steps(n_semantic: int) -> int:
    return int(round(np.floor(n_semantic * SEMANTIC_TO_COARSE_RATIO / N_COARSE_CODEBOOKS) * N_COARSE_CODEBOOKS))



def codebook_rows(n_step: int) -> slice:
    """The head rows step ``n_step`` samples from: coarse codes alternate between the two codebooks' token ranges."""
    start = SEMANTIC_VOCAB_SIZE + (0 if n_step % N_COARSE_CODEBOOKS == 0 else CODEBOOK_SIZE)
    return slice(start, start + CODEBOOK_SIZE)


class CoarseRows:
    """A coarse batch between steps: each row's tokens, and where they sit in the row engine's cache.

    Each row's cached tokens end at slot ``total``; the slots before ``pad[i]`` are never attended to.
    """

    def __init__(self, model: nn.Module, semantics: Sequence[np.ndarray], voices: Sequence[Voice | None],
                 options: CoarseOptions, decode: str) -> None:
        self.options = options
        self.rows = []
        for sem, voice in zip(semantics, voices, strict=True):
            sem_hist, coarse_hist = coarse_histories(voice, options.max_coarse_history)
            self.rows.append({"semantic": np.concatenate([sem_hist, np.asarray(sem, np.int64)]),
                              "coarse": list(coarse_hist), "n_hist": len(coarse_hist), "base": len(sem_hist),
                              "n_steps": coarse_steps(len(sem))})
        B = len(self.rows)
        self.wte = model.transformer.wte
        self.device = self.wte.weight.device
        self.run = CausalRunner(model, B, 1024, decode=decode)  # a window holds at most 256 + 1 + 630 + 60 tokens
        self.cached: list[list[int] | None] = [None] * B  # each row's tokens in the cache, oldest first
        self.pad, self.total = [0] * B, 0
        self.logits = torch.zeros(B, CODEBOOK_SIZE, device=self.device)  # of the codebook sampled next
        self.fed = False  # whether the cache holds the last sampled token of every row (logits are fresh)
        self.n_windows = max(int(np.ceil(r["n_steps"] / options.sliding_window_len)) for r in self.rows)

    def window_input(self, i: int, w: int) -> list[int]:
        """Row i's prompt for window w: its semantic context (padded), COARSE_INFER and its coarse history."""
        r, opts = self.rows[i], self.options
        max_semantic_history = int(np.floor(opts.max_coarse_history / SEMANTIC_TO_COARSE_RATIO))
        semantic_idx = r["base"] + int(round(w * opts.sliding_window_len / SEMANTIC_TO_COARSE_RATIO))
        x = r["semantic"][max(0, semantic_idx - max_semantic_history):][:SEMANTIC_WINDOW]
        x = np.pad(x, (0, SEMANTIC_WINDOW - len(x)), constant_values=COARSE_SEMANTIC_PAD_TOKEN)
        return [*x.tolist(), COARSE_INFER_TOKEN, *r["coarse"][-opts.max_coarse_history:]]

    def live(self, n_step: int, among: Sequence[int] | None = None) -> list[int]:
        """The rows (of ``among``) that still generate at step ``n_step``."""
        rows = range(len(self.rows)) if among is None else among
        return [i for i in rows if n_step < self.rows[i]["n_steps"]]

    def start_window(self, w: int, live: list[int]) -> None:
        """Prefill the live rows whose window input does not only extend what the cache holds; realign the rest so
        that the cache holds no more than the longest live row (positions live in the values)."""
        inputs = {i: self.window_input(i, w) for i in live}
        redo = [i for i in live if not (self.fed and inputs[i] == self.cached[i])]
        keep = [i for i in live if i not in redo]
        new_total = max([len(self.cached[i]) for i in keep] + [len(inputs[i]) for i in redo])
        if keep and new_total != self.total:
            self.run.shift_rows(keep, self.pad, self.total, new_total - self.total)
        for i in keep:
            self.pad[i] = new_total - len(self.cached[i])
        for i in range(len(self.rows)):
            if i not in live:
                self.pad[i] = 0  # finished rows: decoded along (finite garbage), never read
        self.total = total = new_total
        for i in redo:
            L = len(inputs[i])
            emb = self.wte(torch.tensor([inputs[i]], device=self.device))
            self.logits[i] = self.run.prefill_row(i, emb, total, codebook_rows(w * self.options.sliding_window_len))[0]
            self.pad[i], self.cached[i] = total - L, list(inputs[i])

    def advance(self, n_step: int, now: list[int], sampled: torch.Tensor, last_of_window: bool) -> None:
        """Append the rows' sampled codes (codebook ids, (len(now),)) and, unless no row could use it, feed them:
        one decode step of every row, leaving the logits of step ``n_step + 1``."""
        B, start = len(self.rows), codebook_rows(n_step).start
        tokens = torch.full((B,), start, dtype=torch.long, device=self.device)  # rows that are done: ignored
        tokens[now] = sampled + start
        values = tokens.tolist()
        for i in now:
            self.rows[i]["coarse"].append(values[i])
            self.cached[i].append(values[i])
        self.fed = False
        nxt = n_step // self.options.sliding_window_len + 1
        if last_of_window and (nxt >= self.n_windows or not any(  # the last token pays only if a row keeps its cache
                self.live(nxt * self.options.sliding_window_len, [i]) and self.window_input(i, nxt) == self.cached[i]
                for i in now)):
            return
        # rows that are done attend to their newest slot only (their numbers are never read)
        first_slots = [self.pad[i] if i in now else self.total for i in range(B)]
        pos = torch.tensor([[min(self.total - p, 1023)] for p in self.pad], device=self.device)  # done rows: any
        self.logits = self.run.step(self.wte(tokens[:, None]), pos, self.total, first_slots, codebook_rows(n_step + 1))
        self.total += 1
        self.fed = True

    def codes(self) -> list[np.ndarray]:
        """Each row's new coarse codes (2, T)."""
        outs = []
        for r in self.rows:
            gen = np.array(r["coarse"][r["n_hist"]:], dtype=np.int64)[: r["n_steps"]]
            arr = gen.reshape(-1, N_COARSE_CODEBOOKS).T - SEMANTIC_VOCAB_SIZE
            arr[1] -= CODEBOOK_SIZE
            outs.append(arr)
        return outs


@torch.inference_mode()
def generate_coarse_batch(model: nn.Module, semantics: Sequence[np.ndarray], voices: Sequence[Voice | None],
                          generators: Sequence[torch.Generator], options: CoarseOptions, *,
                          choose: Callable[[int, list[int], torch.Tensor], torch.Tensor] | None = None,
                          progress: Progress | None = None, decode: str = "eager") -> list[np.ndarray]:
    """Coarse codes (2, T) for each row, with the reference's sliding windows, all rows one batch per window.

    ``choose(step, rows, logits)`` picks the codes (len(rows),) of ``rows`` from the sampled codebook's logits
    (len(rows), 1024); by default each row samples with its own generator (benchmarks feed known codes instead).
    ``decode``: "eager", "compile" or "cuda_graphs" (``barkkit_bark.engine.fixed_shape_decode``).

    A window whose input (semantic context, infer token, coarse history) only extends what the cache already holds
    for every row of the batch keeps the cache instead of prefilling again: the same tokens at the same positions,
    so the result is the reference's (up to float noise). That is the case until the coarse history reaches
    ``max_coarse_history`` or the semantic context starts to slide (short clips without a long voice).
    """
    state = CoarseRows(model, semantics, voices, options, decode)
    window = options.sliding_window_len
    for w in range(state.n_windows):
        live = state.live(w * window)
        state.start_window(w, live)
        for s in range(window):
            n_step = w * window + s
            now = state.live(n_step, live)
            if not now:
                break
            logits = state.logits[now]
            if choose is not None:
                sampled = choose(n_step, now, logits)
            else:
                sampled, _ = sample_rows(logits, [generators[i] for i in now], options.waveform_temp, options.top_k,
                                         options.top_p)
            state.advance(n_step, now, sampled, last_of_window=s == window - 1)
        if progress is not None:
            progress(w + 1, state.n_windows)
    return state.codes()
