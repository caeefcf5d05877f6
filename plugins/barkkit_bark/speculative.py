"""Exact mode's drafted decode steps: an int8 twin drafts tokens, the fp32 model checks them, the reference's tokens
result (``DraftedRunner``, a runner the stages' loops drive like any other).

A one-token decode step of the fp32 model is bound by reading its weights (bark-small: ~380 MB a step). The twin
(``draft_model``: the same weights in int8, sharing embeddings, layer norms and the KV cache) proposes up to
``n_draft`` tokens cheaply, and the fp32 model then computes the logits of all of them in one pass, reading its
weights once. The token at each step is still what the reference samples:

- ``torch.multinomial`` draws the same amount of randomness whatever the probabilities (one exponential per
  vocabulary entry), so the generator is rewound to where the drafting began and every step is sampled again from
  the fp32 logits, in order, by the stage's own loop (the same loop and sampling rule as plain decoding);
- a step whose token differs from the draft ends the round: the drafts after it are dropped, and the next step
  starts a new round from the token the loop sampled;
- when every draft is confirmed, the fp32 pass has also produced the logits of the next step, sampled for free.

The fp32 pass writes the exact keys and values of every token it reads over the twin's approximate ones, so the
twin always drafts from the exact context and a kept token's cache entry is the fp32 model's. Verified logits come
from a several-row matrix product and may differ from a one-row product in the last float bit, which could change
a sampled token only where two candidates tie to about 1e-7; the parity tests compare whole generations with
``bark==0.1.5``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from barkkit_bark.engine import ExactRunner, logit_rows
from barkkit_bark.kernels import (
    cpu_features,
    decode_kernel_for,
    decode_step_timer,
    int_mm_works,
    measure,
    quantize_int8,
)
from barkkit_bark.model import GPT, use_native_kernels
from barkkit_bark.native import native_ops

__all__ = ["draft_model", "drafting_pays", "DraftedRunner", "Propose"]

# Drafting pays when a twin's step costs less than this share of an fp32 step: a round of 8 drafts and one
# 9-token fp32 pass then costs less than the 8 fp32 steps it replaces, even with a rejection now and then.
DRAFT_COST_LIMIT = 0.6

Propose = Callable[[int, torch.Tensor], "int | None"]
"""``propose(slot, logits (1, V))`` samples the token for cache slot ``slot`` from a draft's logits, with the
stage's own rule and generator, or returns None where generation would stop there (or the stage wants no token)."""


def draft_model(model: GPT) -> GPT:
    """An int8 twin of ``model`` for drafting: its own int8 linear layers, every other tensor shared (no copy).

    It decodes with this machine's fastest int8 kernel for one token (fbgemm where it exists: 4-5x faster than
    fp32, with or without VNNI; ``torch._int_mm`` elsewhere, which ``drafting_pays`` may find too slow), each block
    in one native call where the kernels are built (``native.decode_block``, over the fp32 cache it shares)."""
    shared = {id(p): p for p in model.parameters()}
    twin = copy.deepcopy(model, memo=shared)  # new modules around the same parameters
    kernel = decode_kernel_for(cpu_features()) or "int_mm"
    twin = quantize_int8(twin, decode_kernel=kernel, packed=False)  # the originals keep fp32
    return use_native_kernels(twin, native_ops() is not None)


def drafting_pays(model: GPT, draft: GPT) -> bool:
    """Whether the twin's decode step is fast enough here to win (timed once per machine and model shape)."""
    if draft.lm_head.decode_kernel == "int_mm" and not int_mm_works():
        return False  # no int8 kernel for one-token rows here at all
    shape = f"{model.config.n_layer}x{model.config.n_embd}x{model.config.output_vocab_size}"
    times = measure(f"exact draft step {shape}", {"fp32": decode_step_timer(model), "draft": decode_step_timer(draft)})
    return times["draft"] < DRAFT_COST_LIMIT * times["fp32"]


class DraftedRunner(ExactRunner):
    """Exact mode's decode steps, served from verified passes: the reference's logits, fewer fp32 weight reads.

    A step that feeds a token the last round drafted returns that round's verified logits at once. Any other step
    starts a round: the twin drafts up to ``n_draft`` tokens after the fed one (``propose``, with the generator
    rewound afterwards), and the fp32 model computes the logits after the fed token and after each draft in one
    pass, writing their exact keys and values over the twin's. The loop then samples each step from fp32 logits
    with its own generator, so tokens and draws are the plain loop's. ``verifier``: the model that runs those
    passes, ``model`` on other fp32 kernels (``certified.causal_twin``); None: ``model``.
    """

    def __init__(self, model: GPT, draft: GPT, size: int, propose: Propose, generator: torch.Generator, *,
                 n_draft: int = 8, verifier: GPT | None = None) -> None:
        super().__init__(model, size)
        self.draft, self.propose, self.generator, self.n_draft = draft, propose, generator, n_draft
        self.verifier = verifier or model
        self.pending: list[tuple[int, torch.Tensor]] = []  # (drafted token, fp32 logits after it), in order
        self.passes = 0  # fp32 passes that checked drafts

    def prefill_row(self, row: int, emb: torch.Tensor, end: int, head_rows: slice | None = None) -> torch.Tensor:
        self.pending = []  # a new prompt: no drafted token of the last one may be served
        return super().prefill_row(row, emb, end, head_rows)

    def step(self, tokens: torch.Tensor, pos: torch.Tensor, slot: int, first_slots: Sequence[int] | None = None,
             head_rows: slice | None = None) -> torch.Tensor:
        """The row's token (1,) at position = slot ``slot`` -> logits (1, V) of the next, fp32-verified."""
        token = int(tokens[0])
        if self.pending and self.pending[0][0] == token:
            return logit_rows(self.pending.pop(0)[1], head_rows)
        rewind = self.generator.get_state()
        drafts: list[int] = []
        fed = token
        for j in range(self.n_draft):
            logits = self.draft.extend(self.draft.embed(torch.tensor([[fed]], device=tokens.device)),
                                       pos + j, self.caches, slot + j)  # (1, V)
            proposal = self.propose(slot + j + 1, logits)
            if proposal is None:
                break  # the draft would stop here (or the stage wants no more): the fp32 pass decides
            drafts.append(proposal)
            fed = proposal
        self.generator.set_state(rewind)
        ids = torch.tensor([[token, *drafts]], device=tokens.device)  # (1, m + 1) at slots [slot, slot + m]
        verified = self.verifier.extend(self.verifier.embed(ids), pos + torch.arange(len(drafts) + 1, device=pos.device),
                                        self.caches, slot, all_logits=True)  # (1, m + 1, V)
        self.passes += 1
        self.pending = [(d, verified[:, j + 1]) for j, d in enumerate(drafts)]
        return logit_rows(verified[:, 0], head_rows)
