"""Exact mode on faster fp32 kernels: a draw is kept only where the kernels' rounding cannot have changed it.

oneDNN's fp32 linear (``kernels.OneDnnLinear``) is about 2x PyTorch's default (MKL) on AMD CPUs, but it sums in
another order, so its logits differ from the reference's in the last bits: on a bark-small fine pass at most
2.3-2.9e-6 on logits of magnitude ~3 (at most 1e-6 of the largest), the last layer trimmed or not.
``torch.multinomial(probs, 1)`` draws one exponential per entry and takes the argmax of probs / draws
(``multinomial_is_exponential_race`` checks this torch does), so with the same draws a row's token is the
reference's whenever its lead over the runner-up, in log space, exceeds what such a difference can move: ``4 x bound
/ temp`` (argmax: ``2 x bound``), ``bound = DRIFT x`` the largest |logit|. ``certain_draws`` keeps a pass's draws
when every row clears that margin; otherwise the pass is computed again with the reference's arithmetic and the
generator is left as it was.

Used by the fine stage (``generate_fine``'s ``twin``: a pass too close to call runs again on the reference's
arithmetic) and the coarse stage (``CoarseRows.try_window``: a window, prefill and steps, runs again one reference
step at a time), whose compute-bound parts cost the reference 0.88 s of MKL products where oneDNN takes 0.40 (a
model's 48 linears over 887 rows, an AMD EPYC, two threads). With random weights (flat distributions) no coarse
window in 16 and one to three fine passes in six had a row too close to call; trained models' peaked distributions
should leave fewer.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from barkkit_bark.kernels import decode_step_timer, measure, onednn_twin

__all__ = ["DRIFT", "certain_draws", "multinomial_is_exponential_race", "causal_twin", "fine_twin"]

DRIFT = 2e-5  # bound on |logit difference| per unit of the largest |logit|: 20x the largest measured
TWIN_PAYS = 0.7  # keep the twin where its pass costs less than this share of the default one (room for re-runs)


@functools.cache
def multinomial_is_exponential_race() -> bool:
    """Whether ``torch.multinomial(probs, 1, generator=g)`` is argmax(probs / exponential draws) with ``g``'s
    draws, as PyTorch's CPU kernel computes it (checked once, on random rows)."""
    generator = torch.Generator().manual_seed(0)
    probs = F.softmax(torch.randn(64, 1024, generator=generator) * 3, dim=-1)
    state = generator.get_state()
    drawn = torch.multinomial(probs, 1, generator=generator)[:, 0]
    after = generator.get_state()
    generator.set_state(state)
    raced = (probs / torch.empty_like(probs).exponential_(1, generator=generator)).argmax(-1)
    return torch.equal(drawn, raced) and torch.equal(after, generator.get_state())


def certain_draws(logits: torch.Tensor, temp: float | None, generator: torch.Generator) -> torch.Tensor | None:
    """Logits (R, V) from the twin -> the tokens (R,) the reference's logits give too, the generator advanced as
    one ``torch.multinomial`` call over the rows advances it (argmax where ``temp`` is None); or None, with the
    generator untouched, where some row is too close to call."""
    bound = DRIFT * max(1.0, float(logits.abs().max()))
    if temp is None:
        top = logits.topk(2, dim=-1).values  # (R, 2)
        return logits.argmax(-1) if bool((top[:, 0] - top[:, 1] > 2 * bound).all()) else None
    if not multinomial_is_exponential_race():
        return None
    state = generator.get_state()
    probs = F.softmax(logits.float() / temp, dim=-1)
    race = probs / torch.empty_like(probs).exponential_(1, generator=generator)  # (R, V), the draw's own
    top = race.topk(2, dim=-1).values
    if bool((top[:, 0].log() - top[:, 1].log() > 4 * bound / temp).all()):
        return race.argmax(-1)
    generator.set_state(state)
    return None


def fine_twin(model: torch.nn.Module) -> torch.nn.Module | None:
    """A oneDNN twin of a fine model (every weight shared) where its pass over half a window (the kernels' ratio
    over a whole one, at less than half the timing's cost) is timed faster than ``TWIN_PAYS`` of the default's
    (once per machine and shape, ``measure``); else None."""
    twin = onednn_twin(model)
    if twin is None:
        return None
    config = model.config
    frames = config.block_size // 2
    idx = torch.zeros(1, frames, config.n_codes_total, dtype=torch.long, device=model.transformer.wpe.weight.device)

    @torch.inference_mode()
    def default() -> torch.Tensor:
        return model(config.n_codes_total - 1, idx, first_row=frames // 2)

    @torch.inference_mode()
    def onednn() -> torch.Tensor:  # as generate_fine runs it
        return twin(config.n_codes_total - 1, idx, first_row=frames // 2, trim_last_layer=True)

    shape = f"{config.n_layer}x{config.n_embd}"
    times = measure(f"exact fine pass over {frames} frames {shape}", {"default": default, "onednn": onednn}, repeats=2)
    return twin if times["onednn"] < TWIN_PAYS * times["default"] else None


def causal_twin(model: torch.nn.Module, n_draft: int = 8) -> torch.nn.Module | None:
    """A oneDNN twin of a causal model (every weight shared) where a decode pass of ``n_draft + 1`` tokens (exact
    mode's check of drafted tokens; 1: a plain step) is timed faster that way than through PyTorch's default fp32
    GEMM (once per machine and shape); else None. It checks drafts (``DraftedRunner``'s ``verifier``: that check
    already rounds differently from one-token steps) and runs whole coarse windows, kept where certain."""
    twin = onednn_twin(model)
    if twin is None:
        return None
    config = model.config
    shape = f"{config.n_layer}x{config.n_embd}x{config.output_vocab_size}"
    times = measure(f"exact check of {n_draft + 1} tokens {shape}",
                    {"default": decode_step_timer(model, tokens=n_draft + 1),
                     "onednn": decode_step_timer(twin, tokens=n_draft + 1)})
    return twin if times["onednn"] < times["default"] else None
