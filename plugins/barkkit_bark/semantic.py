"""The semantic stage: text -> semantic tokens (Suno's ``generate_text_semantic`` with ``use_kv_caching=True``).

One generation reads a 513-id prompt: 256 text ids (padded with TEXT_PAD), the last 256 semantic tokens of the
voice (padded with SEMANTIC_PAD) and SEMANTIC_INFER. "merge_context" sums the embeddings of the first two blocks,
so the model sees 257 positions. Then up to 768 steps sample from the first 10,000 logits plus the end-of-sequence
logit (id 10,000) until EOS is drawn, p(EOS) >= ``min_eos_p``, or ``max_gen_duration_s`` is passed.

Text longer than 256 tokens is not cut (Suno's code drops the rest with a warning): it is split on sentence
boundaries and each sentence is generated in turn, on the same random generator, and the tokens are joined. Each
piece is conditioned on the voice when one is given (as in Suno's long-form notebook); without a voice, each piece
after the first continues from the semantic tokens of the piece before it, so the speaker stays the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from barkkit.constants import (
    SEMANTIC_INFER_TOKEN,
    SEMANTIC_PAD_TOKEN,
    SEMANTIC_RATE_HZ,
    SEMANTIC_VOCAB_SIZE,
    TEXT_PAD_TOKEN,
)
from barkkit.errors import PipelineError
from barkkit.stage import Progress
from barkkit.tokens import SemanticTokens
from barkkit.voice import Voice
from barkkit.weights import DEFAULT_MODEL, resolve_file
from barkkit_bark.checkpoints import load_model
from barkkit_bark.common import (
    BarkStage,
    check_mode,
    check_sampling_options,
    defaults_of,
    help_of,
    make_options,
    option_field,
    top_k_field,
    top_p_field,
)
from barkkit_bark.engine import CausalRunner, ExactRunner, check_batch, check_generator, sample_rows
from barkkit_bark.model import GPT
from barkkit_bark.sampling import check_temperature
from barkkit_bark.speculative import DraftedRunner
from barkkit_bark.text import MAX_TEXT_TOKENS, TextTokenizer

__all__ = ["SemanticStage", "SemanticOptions", "generate_semantic", "semantic_step_limit", "MAX_SEMANTIC_STEPS"]

MAX_SEMANTIC_STEPS = 768
HISTORY_LEN = 256  # voice tokens in the prompt
PROMPT_POSITIONS = MAX_TEXT_TOKENS + 1  # text and history summed, then SEMANTIC_INFER
EOS = SEMANTIC_PAD_TOKEN  # the end-of-sequence logit


def semantic_step_limit(max_gen_duration_s: float | None) -> int:
    """Steps the reference runs at most: it adds 1 / 49.9 s per kept token and stops once the sum exceeds the cap.

    The float sum is replayed exactly, so the cut falls on the same step as the reference's.
    """
    if max_gen_duration_s is None:
        return MAX_SEMANTIC_STEPS
    total = 0.0
    for n in range(MAX_SEMANTIC_STEPS):
        total += 1 / SEMANTIC_RATE_HZ
        if total > max_gen_duration_s:
            return n + 1
    return MAX_SEMANTIC_STEPS


def semantic_prompt(text_ids: list[int], history: np.ndarray | None) -> np.ndarray:
    """The 513 ids of one generation: text (padded), the last 256 history tokens (padded), SEMANTIC_INFER."""
    text = np.pad(np.asarray(text_ids, dtype=np.int64), (0, MAX_TEXT_TOKENS - len(text_ids)), constant_values=TEXT_PAD_TOKEN)
    if history is None:
        history = np.full(HISTORY_LEN, SEMANTIC_PAD_TOKEN, dtype=np.int64)
    else:
        history = np.asarray(history, dtype=np.int64)[-HISTORY_LEN:]
        history = np.pad(history, (0, HISTORY_LEN - len(history)), constant_values=SEMANTIC_PAD_TOKEN)
    return np.hstack([text, history, [SEMANTIC_INFER_TOKEN]]).astype(np.int64)


RowSampler = Callable[[int, list[int], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``choose(step, rows, logits)``: the tokens (len(rows),) of these rows at this step from their logits
(len(rows), 10,001 with the end logit, else 10,000), and the probabilities they were drawn from."""


@torch.inference_mode()
def generate_semantic(model: GPT, texts_ids: Sequence[Sequence[int]], histories: Sequence[np.ndarray | None],
                      generators: Sequence[torch.Generator], options: SemanticOptions, *, exact: bool = False,
                      draft: GPT | None = None, n_draft: int = 8, twin: GPT | None = None, decode: str = "eager",
                      max_steps: int = MAX_SEMANTIC_STEPS, choose: RowSampler | None = None,
                      sync_every: int | None = None, progress: Progress | None = None) -> list[np.ndarray]:
    """One generation per row: up to 256 text ids (offset, unpadded) and a semantic history -> tokens (T_i,) int64.

    The one loop of both modes. ``exact``: one row, run with the reference's arithmetic (``ExactRunner``), or drafted
    by the int8 twin ``draft`` and checked by the fp32 model, or by ``twin``, itself on other fp32 kernels
    (``DraftedRunner``: the same tokens, fewer passes over the fp32 weights); otherwise fast mode's row engine
    (``CausalRunner``; ``decode``: "eager", "compile" or "cuda_graphs"). Each row samples with its own generator, or
    as ``choose`` says (benchmarks feed known tokens). ``sync_every``: how often the host reads the stop flags
    (default: every step on a CPU, where it costs nothing; every 8 on an accelerator); steps run past a stop are
    undone (their tokens dropped, the row's generator restored to right after the stopping draw), so the tokens and
    every later draw are the reference's.
    """
    if any(len(ids) > MAX_TEXT_TOKENS for ids in texts_ids):
        raise PipelineError(f"a text of more than {MAX_TEXT_TOKENS} tokens does not fit the semantic window")
    B, device = len(texts_ids), model.transformer.wpe.weight.device
    sync_every = sync_every or (1 if device.type == "cpu" else 8)
    limit = min(max_steps, semantic_step_limit(options.max_gen_duration_s))
    n_sampled = SEMANTIC_VOCAB_SIZE + 1 if options.allow_early_stop else SEMANTIC_VOCAB_SIZE  # EOS logit: id 10,000
    prompts = np.stack([semantic_prompt(ids, history) for ids, history in zip(texts_ids, histories, strict=True)])
    emb = model.embed_merged(torch.from_numpy(prompts).to(device))  # (B, 257, C)

    def pick(n: int, rows: list[int], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if choose is not None:
            return choose(n, rows, logits)
        return sample_rows(logits, [generators[i] for i in rows], options.text_temp, options.top_k, options.top_p,
                           exact_top_p=exact)

    def stops(sampled: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:  # (rows,) bool, on the device
        stop = sampled == EOS
        return stop | (probs[:, -1] >= options.min_eos_p) if options.min_eos_p is not None else stop

    def propose(slot: int, logits: torch.Tensor) -> int | None:  # the draft's proposal for step slot - T0
        if slot - PROMPT_POSITIONS >= limit:
            return None
        sampled, probs = pick(slot - PROMPT_POSITIONS, [0], logits[:, :n_sampled])
        return None if options.allow_early_stop and bool(stops(sampled, probs)[0]) else int(sampled[0])

    if not exact:
        runner: Any = CausalRunner(model, B, PROMPT_POSITIONS + (limit if decode == "eager" else max_steps), decode=decode)
    elif draft is None:
        runner = ExactRunner(model, PROMPT_POSITIONS + limit)
    else:
        runner = DraftedRunner(model, draft, PROMPT_POSITIONS + limit, propose, generators[0], n_draft=n_draft,
                               verifier=twin)
    tokens = torch.zeros(B, limit, dtype=torch.long, device=device)
    ends = RowEnds(generators, limit, sync_every, device)
    logits = runner.prefill([emb[i : i + 1] for i in range(B)], PROMPT_POSITIONS)  # (B, V)
    for n in range(limit):
        live = ends.live()
        sampled, probs = pick(n, live, logits[live, :n_sampled])
        tokens[live, n] = sampled
        if options.allow_early_stop:
            ends.record(n, live, stops(sampled, probs))
        if ends.all_done() or n == limit - 1:
            break
        if progress is not None and n % 64 == 63:
            progress(n + 1, limit)
        feed = tokens[:, n].clamp_max(SEMANTIC_VOCAB_SIZE - 1)  # rows past their end feed any valid token: ignored
        logits = runner.step(feed, torch.full((B, 1), PROMPT_POSITIONS + n, device=device), PROMPT_POSITIONS + n)
    if progress is not None:
        progress(limit, limit)
    return [tokens[i, : ends.n_kept[i]].cpu().numpy() for i in range(B)]


class RowEnds:
    """Where each row's generation ends: its stop flags stay on the device and the host reads them every
    ``sync_every`` steps (and at the last); steps a row ran past its stop are undone (the row's generator goes back
    to its state right after the stopping draw). Rows that never stop keep ``limit`` tokens."""

    def __init__(self, generators: Sequence[torch.Generator], limit: int, sync_every: int, device: torch.device) -> None:
        self.generators, self.limit, self.sync_every = generators, limit, sync_every
        self.flags = torch.zeros(len(generators), limit, dtype=torch.bool, device=device)
        self.n_kept, self.done, self.checked = [limit] * len(generators), [False] * len(generators), 0
        self.states: list[list[torch.Tensor]] = [[] for _ in generators]  # after each unchecked step's draw

    def live(self) -> list[int]:
        return [i for i, done in enumerate(self.done) if not done]

    def all_done(self) -> bool:
        return all(self.done)

    def record(self, n: int, rows: list[int], stop: torch.Tensor) -> None:
        """Step ``n``'s stop flags (len(rows),) of ``rows``; the host reads them when a check is due."""
        self.flags[rows, n] = stop
        if self.sync_every > 1:
            for i in rows:
                self.states[i].append(self.generators[i].get_state())
        if n + 1 - self.checked < self.sync_every and n < self.limit - 1:
            return
        flags = self.flags[:, self.checked : n + 1].tolist()  # the host's one read of the flags
        for i in rows:
            if True in flags[i]:
                k = flags[i].index(True)
                self.n_kept[i], self.done[i] = self.checked + k, True
                if self.sync_every > 1:
                    self.generators[i].set_state(self.states[i][k])  # as if the loop had stopped right there
        self.checked, self.states = n + 1, [[] for _ in self.generators]


@dataclass(frozen=True)
class SemanticOptions:
    """The semantic stage's options: the reference's ``generate_text_semantic`` arguments, with its defaults.

    Values are checked when the options are made, with the errors the reference would crash on or misuse.
    """

    text_temp: float = option_field(0.7, "Semantic stage temperature.")
    top_k: int | None = top_k_field()
    top_p: float | None = top_p_field()
    min_eos_p: float | None = option_field(0.2, "Stop the semantic stage once p(end) reaches this.")
    max_gen_duration_s: float | None = option_field(
        None, "Cap in seconds on each semantic generation. A text within Bark's 256-token window is one generation; a "
              "longer text is read sentence by sentence, each sentence capped, so the whole may run longer.")
    allow_early_stop: bool = option_field(True, "Let the semantic stage stop at its end token.")

    def __post_init__(self) -> None:
        check_temperature("text_temp", self.text_temp)
        check_sampling_options(self.top_k, self.top_p)
        p = self.min_eos_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1):
            raise PipelineError(f"min_eos_p must be a probability from 0 to 1 (or None for off), got {p!r}")
        cap = self.max_gen_duration_s
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0):
            raise PipelineError(f"max_gen_duration_s must be a number of seconds above 0 (or None), got {cap!r}")
        object.__setattr__(self, "allow_early_stop", bool(self.allow_early_stop))


class SemanticStage(BarkStage):
    """Text -> semantic tokens with Bark's text model (``bark.semantic``)."""

    name: ClassVar[str] = "bark.semantic"
    consumes: ClassVar[type] = str
    produces: ClassVar[type] = SemanticTokens
    kind = "text"
    Options = SemanticOptions
    options: ClassVar[dict[str, Any]] = defaults_of(SemanticOptions)
    option_help: ClassVar[dict[str, str]] = help_of(SemanticOptions)
    option_flags: ClassVar[dict[str, tuple[str, ...]]] = {"allow_early_stop": ("--early-stop/--no-early-stop",)}

    def __init__(self, model: GPT, tokenizer: TextTokenizer, *, mode: str = "exact", source: str | None = None) -> None:
        super().__init__(model, mode=mode, source=source)
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", mode: str = "exact") -> "SemanticStage":
        """The text model and the tokenizer's ``vocab.txt`` of ``model`` (a folder, a model name or a hub id)."""
        check_mode(mode)
        vocab = resolve_file(DEFAULT_MODEL if model is None else model, "vocab.txt")
        gpt = load_model(model, cls.kind, device=device)
        return cls(gpt, TextTokenizer(vocab), mode=mode, source=None if model is None else str(model))

    def run(
        self,
        value: str,
        *,
        voice: Voice | None = None,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        **options: Any,
    ) -> SemanticTokens:
        """Speak ``value``: semantic tokens (T,). Long text is generated sentence by sentence (see the module doc)."""
        opts = make_options(SemanticOptions, options)
        return self._speak([value], [voice], [check_generator(generator, self.device)], opts, progress)[0]

    def run_fast_batch(self, texts: Sequence[str], *, voices: Sequence[Voice | None],
                       generators: Sequence[torch.Generator], progress: Progress | None = None,
                       **options: Any) -> list[Any]:
        """``SemanticStage.run_batch`` in fast mode: piece k of every text in one batch."""
        check_batch(self, texts, voices, generators)
        return self._speak(texts, voices, generators, make_options(SemanticOptions, options), progress)

    def _speak(self, texts: Sequence[str], voices: Sequence[Voice | None], generators: Sequence[torch.Generator],
               opts: SemanticOptions, progress: Progress | None) -> list[SemanticTokens]:
        """Each text sentence piece by sentence piece (piece k of every text together) -> semantic tokens."""
        for text in texts:
            if not isinstance(text, str):
                raise PipelineError(f"the semantic stage reads text, got {type(text).__name__}")
        pieces = [self.tokenizer.pieces(text) for text in texts]
        histories = [voice.semantic.array if voice is not None else None for voice in voices]
        outputs: list[list[np.ndarray]] = [[] for _ in texts]
        n_pieces = max(len(p) for p in pieces)
        for k in range(n_pieces):
            rows = [i for i, p in enumerate(pieces) if k < len(p)]
            piece_progress = (lambda done, total, k=k: progress(k * total + done, n_pieces * total)) if progress else None
            tokens = generate_semantic(
                self.model, [pieces[i][k].ids for i in rows], [histories[i] for i in rows], [generators[i] for i in rows],
                opts, exact=self.exact, draft=self.draft if self.n_draft else None, n_draft=self.n_draft,
                twin=self.twin, decode="eager" if self.exact else self.decode_steps, progress=piece_progress)
            for i, t in zip(rows, tokens):
                outputs[i].append(t)
                if voices[i] is None and len(t):
                    histories[i] = t  # no voice: the next sentence continues this one's speaker
        return [SemanticTokens(np.concatenate(o) if o else np.zeros(0, np.int64)) for o in outputs]
