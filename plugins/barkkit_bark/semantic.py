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
import torch.nn as nn

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
)
from barkkit_bark.engine import CausalRunner, check_batch, check_generator, sample_rows
from barkkit_bark.model import GPT
from barkkit_bark.sampling import check_temperature, sample
from barkkit_bark.speculative import generate_verified
from barkkit_bark.text import MAX_TEXT_TOKENS, TextTokenizer

__all__ = ["SemanticStage", "SemanticOptions", "generate_semantic", "generate_semantic_batch", "semantic_step_limit",
           "MAX_SEMANTIC_STEPS"]

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


@torch.inference_mode()
def generate_semantic(
    model: GPT,
    text_ids: list[int],
    history: np.ndarray | None,
    generator: torch.Generator,
    options: SemanticOptions,
    *,
    draft: GPT | None = None,
    n_draft: int = 8,
    sync_every: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """One generation: at most 256 text ids (offset, unpadded) -> semantic tokens (T,) int64.

    ``sync_every`` is how often the host reads the stop flag (default: every step on a CPU, where reading costs
    nothing; every 8 steps on an accelerator). Steps run past a stop are undone: their tokens are dropped and the
    generator is restored to its state right after the stopping draw, so the tokens and every later draw (coarse,
    fine) are the reference's. ``draft``: an int8 twin of ``model`` that proposes ``n_draft`` tokens at a time for
    ``model`` to check (``barkkit_bark.speculative``): the same tokens, fewer passes over the fp32 weights.
    """
    if len(text_ids) > MAX_TEXT_TOKENS:
        raise PipelineError(f"{len(text_ids)} text tokens do not fit the {MAX_TEXT_TOKENS}-token window")
    device = model.lm_head.weight.device
    sync_every = sync_every or (1 if device.type == "cpu" else 8)
    temp, top_k, top_p, min_eos_p = options.text_temp, options.top_k, options.top_p, options.min_eos_p
    max_steps = semantic_step_limit(options.max_gen_duration_s)
    n_sampled = SEMANTIC_VOCAB_SIZE + 1 if options.allow_early_stop else SEMANTIC_VOCAB_SIZE  # EOS logit: id 10,000
    check_eos = options.allow_early_stop
    prompt = torch.from_numpy(semantic_prompt(text_ids, history)).to(device)[None]  # (1, 513)

    caches = model.new_caches(1, PROMPT_POSITIONS + max_steps)
    logits = model.prefill(model.embed_merged(prompt), caches)  # (1, V)
    if draft is not None:

        def choose(n: int, logits: torch.Tensor) -> int | None:
            token, probs = sample(logits[:, :n_sampled], generator, temp=temp, top_k=top_k, top_p=top_p)
            stop = check_eos and (token[0, 0] == EOS or (min_eos_p is not None and probs[0, -1] >= min_eos_p))
            return None if stop else int(token[0, 0])

        kept = generate_verified(
            model, draft, caches, logits, PROMPT_POSITIONS, max_steps, choose, generator, n_draft=n_draft, progress=progress
        )
        return np.array(kept, dtype=np.int64)
    def step(n: int, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        token, probs = sample(logits[:, :n_sampled], generator, temp=temp, top_k=top_k, top_p=top_p)
        if not check_eos:
            return token[0, 0], None
        stop = token[0, 0] == EOS
        return token[0, 0], stop | (probs[0, -1] >= min_eos_p) if min_eos_p is not None else stop

    return decode_plainly(model, caches, logits, max_steps, step, generator, sync_every, progress)


def decode_plainly(model: GPT, caches: list, logits: torch.Tensor, max_steps: int,
                   step: Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
                   generator: torch.Generator, sync_every: int, progress: Progress | None) -> np.ndarray:
    """One fp32 token a step after the prompt's ``logits``: ``step(n, logits)`` samples (token, stop flag or None),
    both on the device. The host reads the stop flags every ``sync_every`` steps; steps run past a stop are undone
    (their tokens dropped, the generator restored to right after the stopping draw). -> the kept tokens (T,)."""
    device = logits.device
    tokens = torch.empty(max_steps, dtype=torch.long, device=device)
    stops = torch.zeros(max_steps, dtype=torch.bool, device=device)
    states: list[torch.Tensor] = []  # generator state after each unchecked step (only when sync_every > 1)
    n_kept, checked = max_steps, 0
    for n in range(max_steps):
        if n > 0:
            logits = model.decode(tokens[n - 1].view(1, 1), PROMPT_POSITIONS + n - 1, caches)  # (1, V)
        tokens[n], stop = step(n, logits)
        if stop is not None:
            if sync_every == 1:
                if stop.item():
                    n_kept = n
                    break
            else:
                stops[n] = stop
                states.append(generator.get_state())
                if (n + 1 - checked) == sync_every or n == max_steps - 1:
                    hits = torch.nonzero(stops[checked : n + 1]).flatten().tolist()
                    if hits:
                        generator.set_state(states[hits[0]])  # as if the loop had stopped right there
                        n_kept = checked + hits[0]
                        break
                    checked, states = n + 1, []
        if progress is not None and n % 64 == 63:
            progress(n + 1, max_steps)
    if progress is not None:
        progress(max_steps, max_steps)
    return tokens[:n_kept].cpu().numpy()


RowSampler = Callable[[int, list[int], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``choose(step, rows, logits)``: the tokens (len(rows),) of these rows at this step, and their probabilities."""


@dataclass(frozen=True)
class SemanticOptions:
    """The semantic stage's options: the reference's ``generate_text_semantic`` arguments, with its defaults.

    Values are checked when the options are made, with the errors the reference would crash on or misuse.
    """

    text_temp: float = option_field(0.7, "Semantic stage temperature.")
    top_k: int | None = option_field(None, "Sample only among the k most likely tokens.")
    top_p: float | None = option_field(None, "Nucleus sampling: the smallest set with this much probability.")
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
        if not isinstance(value, str):
            raise PipelineError(f"the semantic stage reads text, got {type(value).__name__}")
        opts = make_options(SemanticOptions, options)
        generator = check_generator(generator, self.device)
        if not self.exact:  # fast mode: the row engine, as a batch of one (barkkit_bark.engine)
            return self.run_batch([value], voices=[voice], generators=[generator], progress=progress, **options)[0]
        pieces = self.tokenizer.pieces(value)
        history = voice.semantic.array if voice is not None else None
        steps = semantic_step_limit(opts.max_gen_duration_s)
        outputs = []
        for i, piece in enumerate(pieces):
            piece_progress = (lambda done, total, i=i: progress(i * steps + done, len(pieces) * steps)) if progress else None
            tokens = generate_semantic(
                self.model,
                piece.ids,
                history,
                generator,
                opts,
                draft=self.draft if self.n_draft else None,
                n_draft=self.n_draft,
                progress=piece_progress,
            )
            outputs.append(tokens)
            if voice is None and len(tokens):
                history = tokens  # no voice: the next sentence continues this one's speaker
        return SemanticTokens(np.concatenate(outputs) if outputs else np.zeros(0, dtype=np.int64))

    def run_fast_batch(self, texts: Sequence[str], *, voices: Sequence[Voice | None],
                       generators: Sequence[torch.Generator], progress: Progress | None = None,
                       **options: Any) -> list[Any]:
        """``SemanticStage.run_batch``: long texts go sentence piece by piece, piece k of every text in one batch."""
        check_batch(self, texts, voices, generators)
        for text in texts:
            if not isinstance(text, str):
                raise PipelineError(f"the semantic stage reads text, got {type(text).__name__}")
        opts = make_options(SemanticOptions, options)
        pieces = [self.tokenizer.pieces(text) for text in texts]
        histories = [voice.semantic.array if voice is not None else None for voice in voices]
        outputs: list[list[np.ndarray]] = [[] for _ in texts]
        n_pieces = max(len(p) for p in pieces)
        for k in range(n_pieces):
            rows = [i for i, p in enumerate(pieces) if k < len(p)]
            piece_progress = (lambda done, total, k=k: progress(k * total + done, n_pieces * total)) if progress else None
            tokens = generate_semantic_batch(
                self.model, [np.asarray(pieces[i][k].ids, np.int64) for i in rows], [histories[i] for i in rows],
                [generators[i] for i in rows], opts, progress=piece_progress,
                decode=self.decode_steps)
            for i, t in zip(rows, tokens):
                outputs[i].append(t)
                if voices[i] is None and len(t):
                    histories[i] = t  # no voice: the next sentence continues this one's speaker
        return [SemanticTokens(np.concatenate(o) if o else np.zeros(0, np.int64)) for o in outputs]


@torch.inference_mode()
def generate_semantic_batch(model: nn.Module, texts_ids: Sequence[np.ndarray], histories: Sequence[np.ndarray | None],
                            generators: Sequence[torch.Generator], options: SemanticOptions, *,
                            max_steps: int = MAX_SEMANTIC_STEPS,
                      choose: RowSampler | None = None,
                      progress: Progress | None = None, decode: str = "eager") -> list[np.ndarray]:
    """Semantic tokens for each row: text ids (already offset, up to 256) and an optional semantic history.

    ``choose(step, rows, logits)`` picks the tokens of ``rows`` from their logits (len(rows), V) and returns them with
    the probabilities they were drawn from; by default each row samples with its own generator (``sample_rows``;
    benchmarks feed known tokens instead). ``decode``: "eager", "compile" or
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
    temp, top_k, top_p, min_eos_p = options.text_temp, options.top_k, options.top_p, options.min_eos_p
    allow_early_stop, max_gen_duration_s = options.allow_early_stop, options.max_gen_duration_s
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
        if choose is not None:
            sampled, probs = choose(n, live, relevant[live])
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
        logits = run.step(wte(tokens[:, None]), pos, T0 + n)
    return [np.array(o, dtype=np.int64) for o in out]
