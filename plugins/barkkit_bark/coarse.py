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
from barkkit_bark.certified import certain_draws
from barkkit_bark.common import (
    BarkStage,
    check_sampling_options,
    defaults_of,
    help_of,
    make_options,
    option_field,
    top_k_field,
    top_p_field,
)
from barkkit_bark.engine import CausalRunner, ExactRunner, check_batch, check_generator, sample_rows
from barkkit_bark.sampling import check_temperature
from barkkit_bark.speculative import DraftedRunner

__all__ = ["CoarseStage", "CoarseOptions", "generate_coarse", "coarse_histories",
           "SEMANTIC_TO_COARSE_RATIO"]

SEMANTIC_TO_COARSE_RATIO = COARSE_RATE_HZ / SEMANTIC_RATE_HZ * N_COARSE_CODEBOOKS  # coarse stream tokens per semantic token
SEMANTIC_WINDOW = 256  # semantic tokens in each window's prompt
CACHE_SLOTS = 1024  # a window holds at most 256 + 1 + 630 + 60 tokens (and exact mode's drafts)
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


@dataclass(frozen=True)
class CoarseOptions:
    """The coarse stage's options: the reference's ``generate_coarse`` arguments, with its defaults.

    Values are checked when the options are made, with the errors the reference would crash on or misuse.
    """

    waveform_temp: float = option_field(0.7, "Coarse stage temperature.")
    top_k: int | None = top_k_field()
    top_p: float | None = top_p_field()
    max_coarse_history: int = option_field(MAX_COARSE_HISTORY, f"Coarse tokens of history each window sees (60 to {MAX_COARSE_HISTORY}).")
    sliding_window_len: int = option_field(60, "Coarse steps per window.")

    def __post_init__(self) -> None:
        check_temperature("waveform_temp", self.waveform_temp)
        check_sampling_options(self.top_k, self.top_p)
        history, window = self.max_coarse_history, self.sliding_window_len
        for name, number in (("max_coarse_history", history), ("sliding_window_len", window)):
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise PipelineError(f"{name} must be a whole number of at least 1, got {number!r}")
        if not 60 <= history <= MAX_COARSE_HISTORY:
            raise PipelineError(f"max_coarse_history must be between 60 and {MAX_COARSE_HISTORY}, got {history}")
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
        return CoarseTokens(self._generate([value], [voice], [generator], opts, progress)[0])

    def run_fast_batch(self, values: Sequence[Any], *, voices: Sequence[Voice | None],
                       generators: Sequence[torch.Generator], progress: Progress | None = None,
                       **options: Any) -> list[Any]:
        """``CoarseStage.run_batch`` in fast mode: every input's windows advance together, one decode step at a time."""
        check_batch(self, values, voices, generators)
        values = [SemanticTokens(v) for v in values]
        check_semantic_input(values)
        codes = self._generate(values, voices, generators, make_options(CoarseOptions, options), progress)
        return [CoarseTokens(c) for c in codes]

    def _generate(self, values: Sequence[SemanticTokens], voices: Sequence[Voice | None],
                  generators: Sequence[torch.Generator], opts: CoarseOptions, progress: Progress | None) -> list[np.ndarray]:
        return generate_coarse(self.model, [v.array for v in values], voices, generators, opts, exact=self.exact,
                               draft=self.draft if self.n_draft else None, n_draft=self.n_draft,
                               twin=self.twin, decode="eager" if self.exact else self.decode_steps, progress=progress)


def coarse_steps(n_semantic: int) -> int:
    return int(round(np.floor(n_semantic * SEMANTIC_TO_COARSE_RATIO / N_COARSE_CODEBOOKS) * N_COARSE_CODEBOOKS))



def codebook_rows(n_step: int) -> slice:
    """The head rows step ``n_step`` samples from: coarse codes alternate between the two codebooks' token ranges."""
    start = SEMANTIC_VOCAB_SIZE + (0 if n_step % N_COARSE_CODEBOOKS == 0 else CODEBOOK_SIZE)
    return slice(start, start + CODEBOOK_SIZE)


class TooClose(Exception):
    """A draw from the oneDNN twin's logits that rounding could have changed: the window runs again (exact mode)."""


class CoarseRows:
    """A coarse batch between steps: each row's tokens, and where they sit in the row engine's cache.

    Each row's cached tokens end at slot ``total``; the slots before ``pad[i]`` are never attended to.
    """

    def __init__(self, model: nn.Module, semantics: Sequence[np.ndarray], voices: Sequence[Voice | None],
                 options: CoarseOptions) -> None:
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
        self.run: Any = None  # the runner (barkkit_bark.engine), CACHE_SLOTS slots a row: set by generate_coarse
        self.keep_cache = True  # fast mode: a window that only extends the cache keeps it (exact mode: never)
        self.cached: list[list[int] | None] = [None] * B  # each row's tokens in the cache, oldest first
        self.pad, self.total = [0] * B, 0
        self.logits = torch.zeros(B, CODEBOOK_SIZE, device=self.device)  # of the codebook sampled next
        self.fed = False  # whether the cache holds the last sampled token of every row (logits are fresh)
        self.window, self.total_at_start = 0, 0
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
        self.window, self.total_at_start = w, total  # exact mode's drafts: the slot of the window's first step
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
        if last_of_window and (not self.keep_cache or nxt >= self.n_windows or not any(  # only if a row keeps its cache
                self.live(nxt * self.options.sliding_window_len, [i]) and self.window_input(i, nxt) == self.cached[i]
                for i in now)):
            return
        # rows that are done attend to their newest slot only (their numbers are never read)
        first_slots = [self.pad[i] if i in now else self.total for i in range(B)]
        pos = torch.tensor([[min(self.total - p, 1023)] for p in self.pad], device=self.device)  # done rows: any
        self.logits = self.run.step(tokens, pos, self.total, first_slots, codebook_rows(n_step + 1))
        self.total += 1
        self.fed = True

    def run_window(self, w: int, pick: Callable[[int, list[int], torch.Tensor], torch.Tensor]) -> None:
        """Window ``w``: prefill what needs it, then one step per code; ``pick(n_step, rows, logits)`` draws."""
        window = self.options.sliding_window_len
        live = self.live(w * window)
        self.start_window(w, live)
        for s in range(window):
            n_step = w * window + s
            now = self.live(n_step, live)
            if not now:
                break
            self.advance(n_step, now, pick(n_step, now, self.logits[now]), last_of_window=s == window - 1)

    def try_window(self, w: int, runner: Any, pick: Callable[[int, list[int], torch.Tensor], torch.Tensor],
                   generator: torch.Generator) -> bool:
        """Exact mode: window ``w`` of the one row on ``runner`` (the oneDNN twin's), kept if every draw is certain
        (``pick`` raises ``TooClose`` otherwise): then True. Else the row and ``generator`` are put back as they
        were, for the window to run again on the reference's arithmetic, and False."""
        reference, n_codes, rewind = self.run, len(self.rows[0]["coarse"]), generator.get_state()
        self.run = runner
        try:
            self.run_window(w, pick)
            return True
        except TooClose:
            del self.rows[0]["coarse"][n_codes:]
            generator.set_state(rewind)
            self.fed = False  # the next prefill starts afresh
            return False
        finally:
            self.run = reference

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
def generate_coarse(model: nn.Module, semantics: Sequence[np.ndarray], voices: Sequence[Voice | None],
                    generators: Sequence[torch.Generator], options: CoarseOptions, *, exact: bool = False,
                    draft: nn.Module | None = None, n_draft: int = 8, twin: nn.Module | None = None,
                    decode: str = "eager", choose: Callable[[int, list[int], torch.Tensor], torch.Tensor] | None = None,
                    progress: Progress | None = None) -> list[np.ndarray]:
    """Coarse codes (2, T) for each row's semantic tokens (T_sem,), T = floor(T_sem x 75 / 49.9), with the
    reference's sliding windows, all rows one batch per window.

    The one loop of both modes. ``exact``: one row, every window prefilled afresh, with the reference's arithmetic
    (``ExactRunner``), or drafted by the int8 twin ``draft`` and checked by the fp32 model (``DraftedRunner``: the
    same tokens). With ``twin``, the model on oneDNN's fp32 kernels, each window runs on the twin first (drafted or
    not) and is kept where every draw is certain (``certified``); a window too close to call runs again one
    reference step at a time. Otherwise fast mode's row engine (``CausalRunner``; ``decode``: "eager", "compile" or
    "cuda_graphs"), where a window whose input (semantic context, infer token, coarse history) only extends what
    the cache holds keeps the cache instead of prefilling again: the same tokens at the same positions, up to float
    rounding. That is the case until the coarse history reaches ``max_coarse_history`` or the semantic context
    starts to slide (short clips without a long voice). Each row samples with its own generator, or as
    ``choose(step, rows, logits)`` says (the codes (len(rows),) of ``rows`` from the sampled codebook's logits
    (len(rows), 1024); benchmarks feed known codes).
    """
    state = CoarseRows(model, semantics, voices, options)
    window = options.sliding_window_len

    def pick(n_step: int, rows: list[int], logits: torch.Tensor) -> torch.Tensor:
        if choose is not None:
            return choose(n_step, rows, logits)
        return sample_rows(logits, [generators[i] for i in rows], options.waveform_temp, options.top_k,
                           options.top_p, exact_top_p=exact)[0]

    def propose(slot: int, logits: torch.Tensor) -> int | None:  # the draft's proposal for cache slot ``slot``
        j = slot - state.total_at_start  # steps into the window
        n_step = state.window * window + j
        if j >= window or n_step >= state.rows[0]["n_steps"]:
            return None
        rows = codebook_rows(n_step)
        return int(pick(n_step, [0], logits[:, rows])[0]) + rows.start

    certain = None  # exact mode with a oneDNN twin: each window runs on it first, kept where every draw is certain
    if not exact:
        state.run = CausalRunner(model, len(semantics), CACHE_SLOTS, decode=decode)
    elif twin is not None and choose is None and options.top_k is None and options.top_p is None:
        state.keep_cache = False
        certain = (ExactRunner(twin, CACHE_SLOTS) if draft is None else
                   DraftedRunner(twin, draft, CACHE_SLOTS, propose, generators[0], n_draft=n_draft))
    else:
        state.keep_cache = False
        state.run = (ExactRunner(model, CACHE_SLOTS) if draft is None else
                     DraftedRunner(model, draft, CACHE_SLOTS, propose, generators[0], n_draft=n_draft, verifier=twin))

    def certain_pick(n_step: int, rows: list[int], logits: torch.Tensor) -> torch.Tensor:
        drawn = certain_draws(logits, options.waveform_temp, generators[0])
        if drawn is None:
            raise TooClose
        return drawn

    for w in range(state.n_windows):
        if certain is None or not state.try_window(w, certain, certain_pick, generators[0]):
            # with a twin, the reference's every step only for a window too close to call: made at the first
            state.run = state.run or ExactRunner(model, CACHE_SLOTS)
            state.run_window(w, pick)
        if progress is not None:
            progress(w + 1, state.n_windows)
    return state.codes()
