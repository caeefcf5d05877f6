"""Exact mode's decode loop: an int8 twin drafts tokens, the fp32 model checks them, the reference's tokens result.

A one-token decode step of the fp32 model is bound by reading its weights (bark-small: ~380 MB a step, ~27 ms on
this class of machine). The twin (``draft_model``: the same weights in int8, sharing embeddings, layer norms and
the KV cache) proposes up to ``n_draft`` tokens cheaply, and the fp32 model then computes the logits of all of
them in one pass, reading its weights once. The token at each step is still what the reference samples:

- ``torch.multinomial`` draws the same amount of randomness whatever the probabilities (one exponential per
  vocabulary entry), so the generator is rewound to where the drafting began and every step is sampled again from
  the fp32 logits, in order, with ``choose`` (the stage's own sampling rule, the one the plain loop uses);
- a step whose token differs from the draft ends the round: its fp32 token is kept, the drafts after it are
  dropped, and the generator is left right after that step's draw, as the reference leaves it;
- when every draft is confirmed, the fp32 pass has also produced the logits of the next step, sampled for free.

The fp32 pass writes the exact keys and values of every token it reads over the twin's approximate ones, so the
twin always drafts from the exact context and a kept token's cache entry is the fp32 model's. Verified logits come
from a several-row matrix product and may differ from a one-row product in the last float bit, which could change
a sampled token only where two candidates tie to about 1e-7; the parity tests compare whole generations with
``bark==0.1.5``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from barkkit.stage import Progress
from barkkit_bark.kernels import (
    cpu_features,
    decode_kernel_for,
    decode_step_timer,
    int_mm_works,
    measure,
    quantize_int8,
)
from barkkit_bark.model import GPT, KVCache

__all__ = ["draft_model", "drafting_pays", "generate_verified", "Choose"]

# Drafting pays when a twin's step costs less than this share of an fp32 step: a round of 8 drafts and one
# 9-token fp32 pass then costs less than the 8 fp32 steps it replaces, even with a rejection now and then.
DRAFT_COST_LIMIT = 0.6

Choose = Callable[[int, torch.Tensor], "int | None"]
"""``choose(step, logits (1, V))`` samples step ``step``'s token with the stage's generator (exactly one draw) and
returns the id to feed next, or None where generation stops there (the token is not kept)."""


def draft_model(model: GPT) -> GPT:
    """An int8 twin of ``model`` for drafting: its own int8 linear layers, every other tensor shared (no copy).

    It decodes with this machine's fastest int8 kernel for one token (fbgemm where it exists: 4-5x faster than
    fp32, with or without VNNI; ``torch._int_mm`` elsewhere, which ``drafting_pays`` may find too slow)."""
    shared = {id(p): p for p in model.parameters()}
    twin = copy.deepcopy(model, memo=shared)  # new modules around the same parameters
    kernel = decode_kernel_for(cpu_features()) or "int_mm"
    return quantize_int8(twin, decode_kernel=kernel, packed=False)  # the originals keep fp32


def drafting_pays(model: GPT, draft: GPT) -> bool:
    """Whether the twin's decode step is fast enough here to win (timed once per machine and model shape)."""
    if draft.lm_head.decode_kernel == "int_mm" and not int_mm_works():
        return False  # no int8 kernel for one-token rows here at all
    shape = f"{model.config.n_layer}x{model.config.n_embd}x{model.config.output_vocab_size}"
    times = measure(f"exact draft step {shape}", {"fp32": decode_step_timer(model), "draft": decode_step_timer(draft)})
    return times["draft"] < DRAFT_COST_LIMIT * times["fp32"]


@torch.inference_mode()
def generate_verified(
    model: GPT,
    draft: GPT,
    caches: list[KVCache],
    logits: torch.Tensor,
    start: int,
    max_new: int,
    choose: Choose,
    generator: torch.Generator,
    *,
    n_draft: int = 8,
    progress: Progress | None = None,
) -> list[int]:
    """Up to ``max_new`` tokens after a prefill, each the one ``model`` alone would sample.

    ``logits`` (1, V) are the model's for the first new token, which goes to position ``start``; ``caches`` hold
    positions [0, start). Returns the kept tokens (generation stops early where ``choose`` returns None).
    """
    device = logits.device
    out: list[int] = []
    token = choose(0, logits)
    if token is None:
        return out
    out.append(token)
    pos = start  # where ``token``, the newest kept token, goes; the caches hold everything before it
    while len(out) < max_new:
        rewind = generator.get_state()
        drafts: list[int] = []
        fed = token
        for j in range(min(n_draft, max_new - len(out) - 1)):  # the pass's last row gives one more
            step_logits = draft.decode(torch.tensor([[fed]], device=device), pos + j, caches)  # (1, V)
            proposal = choose(len(out) + j, step_logits)
            if proposal is None:
                break  # the draft would stop here: the fp32 pass decides
            drafts.append(proposal)
            fed = proposal
        generator.set_state(rewind)
        inputs = torch.tensor([[token, *drafts]], device=device)  # (1, m + 1) at positions [pos, pos + m]
        verified = model.decode(inputs, pos, caches, all_logits=True)  # (1, m + 1, V)
        for j in range(len(drafts) + 1):
            token = choose(len(out), verified[:, j])
            if token is None:
                return out
            out.append(token)
            if len(out) == max_new or j == len(drafts) or token != drafts[j]:
                break  # a correction, or the step after the last draft: the round ends with it
        pos += j + 1
        if progress is not None:
            progress(len(out), max_new)
    return out
