"""Exact mode's drafted decoding gives the tokens, and leaves the generator, exactly as one-token decoding does."""

from __future__ import annotations

import pytest
import torch

from barkkit_bark.kernels import Int8Linear, OneDnnLinear, onednn_linear_works, onednn_twin
from barkkit_bark.model import GPT, GPTConfig
from barkkit_bark.speculative import DraftedRunner, draft_model
from tests.plugins.barkkit_bark.conftest import COARSE_CONFIG, TINY, randomize

PROMPT = 40


class CountingGPT(GPT):
    """Counts the passes that check drafted tokens."""

    checks = 0

    def extend(self, tok_emb, pos, caches, slot, **kwargs):
        self.checks += kwargs.get("all_logits", False)
        return super().extend(tok_emb, pos, caches, slot, **kwargs)


def make_choose(generator: torch.Generator, stop_every: int | None = None):
    def choose(step: int, logits: torch.Tensor) -> int | None:
        probs = torch.softmax(logits[:, :1024] / 0.7, dim=-1)
        token = int(torch.multinomial(probs, 1, generator=generator))
        return None if stop_every and token % stop_every == 0 else token

    return choose


def plain(model: GPT, prompt: torch.Tensor, n: int, choose) -> list[int]:
    caches = model.new_caches(1, PROMPT + n + 1)
    logits = model.prefill(model.embed(prompt), caches)
    out: list[int] = []
    for step in range(n):
        if step:
            logits = model.decode(torch.tensor([[out[-1]]]), PROMPT + step - 1, caches)
        token = choose(step, logits)
        if token is None:
            break
        out.append(token)
    return out


def verified(model: GPT, draft: GPT, prompt: torch.Tensor, n: int, choose, generator, n_draft: int,
             verifier: GPT | None = None) -> list[int]:
    """The plain loop, its decode steps served by a ``DraftedRunner`` (proposals: the same rule, up to n tokens)."""
    runner = DraftedRunner(model, draft, PROMPT + n + 1, lambda slot, logits: choose(slot - PROMPT, logits)
                           if slot - PROMPT < n else None, generator, n_draft=n_draft, verifier=verifier)
    logits = runner.prefill([model.embed(prompt)], PROMPT)
    out: list[int] = []
    for step in range(n):
        if step:
            logits = runner.step(torch.tensor([out[-1]]), torch.tensor([[PROMPT + step - 1]]), PROMPT + step - 1)
        token = choose(step, logits)
        if token is None:
            break
        out.append(token)
    return out


@pytest.fixture(scope="module")
def target() -> CountingGPT:
    model = CountingGPT(GPTConfig(**TINY, **COARSE_CONFIG)).eval()
    randomize(model, 1)
    return model


@pytest.mark.parametrize("n_draft", [1, 3, 8])
@pytest.mark.parametrize("stop_every", [None, 37])
@torch.inference_mode()
def test_a_poor_draft_still_gives_the_plain_tokens(target: CountingGPT, n_draft: int, stop_every: int | None) -> None:
    """A draft with other weights is often wrong: every correction must land on the plain loop's token and draw."""
    other = GPT(target.config).eval()
    randomize(other, 7)
    prompt = torch.randint(0, 12_096, (1, PROMPT), generator=torch.Generator().manual_seed(3))
    g_plain, g_verified = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    expected = plain(target, prompt, 120, make_choose(g_plain, stop_every))
    target.checks = 0
    got = verified(target, other, prompt, 120, make_choose(g_verified, stop_every), g_verified, n_draft)
    assert got == expected
    assert torch.equal(g_verified.get_state(), g_plain.get_state())  # the next stage draws as after the plain loop
    assert target.checks > len(got) / (n_draft + 1)  # the draft was rejected along the way


@torch.inference_mode()
def test_the_int8_twin_is_accepted_nearly_always(target: CountingGPT) -> None:
    draft = draft_model(target)
    prompt = torch.randint(0, 12_096, (1, PROMPT), generator=torch.Generator().manual_seed(4))
    expected = plain(target, prompt, 200, make_choose(torch.Generator().manual_seed(5)))
    target.checks = 0
    generator = torch.Generator().manual_seed(5)
    assert verified(target, draft, prompt, 200, make_choose(generator), generator, 8) == expected
    assert target.checks <= 200 / 9 * 1.5  # ~9 tokens per fp32 pass when the drafts hold


@pytest.mark.skipif(not onednn_linear_works(), reason="this torch has no oneDNN fp32 linear")
@torch.inference_mode()
def test_drafts_checked_through_onednn_give_the_plain_tokens(target: CountingGPT) -> None:
    """The check on oneDNN's fp32 kernels (``certified.causal_twin``) rounds differently in the last bits only."""
    verifier = onednn_twin(target)
    assert isinstance(verifier.lm_head, OneDnnLinear) and verifier.lm_head.weight is target.lm_head.weight
    prompt = torch.randint(0, 12_096, (1, PROMPT), generator=torch.Generator().manual_seed(6))
    expected = plain(target, prompt, 200, make_choose(torch.Generator().manual_seed(8)))
    generator = torch.Generator().manual_seed(8)
    verifier.checks = target.checks = 0
    assert verified(target, draft_model(target), prompt, 200, make_choose(generator), generator, 8, verifier) == expected
    assert verifier.checks > 0 and target.checks == 0  # every check ran on oneDNN


def test_the_twin_shares_all_but_its_int8_linears(target: CountingGPT) -> None:
    draft = draft_model(target)
    assert draft.transformer.wte.weight is target.transformer.wte.weight
    assert draft.transformer.h[0].ln_1.weight is target.transformer.h[0].ln_1.weight
    assert isinstance(draft.transformer.h[0].attn.c_attn, Int8Linear) and isinstance(draft.lm_head, Int8Linear)
    assert type(target.transformer.h[0].attn.c_attn) is torch.nn.Linear  # the fp32 model is untouched


def test_exact_stages_give_the_same_tokens_with_and_without_drafting(suno_folder, voice_file) -> None:
    """The stages' two exact decode loops (drafted, and plain with ``n_draft = 0``) agree, generator included."""
    from barkkit.voice import Voice
    from barkkit_bark.coarse import CoarseStage
    from barkkit_bark.semantic import SemanticStage

    voice = Voice.load(voice_file)
    semantic, coarse = SemanticStage.load(suno_folder), CoarseStage.load(suno_folder)
    assert semantic.draft is not None and coarse.draft is not None
    results = []
    for n_draft in (8, 0):
        semantic.n_draft = coarse.n_draft = n_draft
        generator = torch.Generator().manual_seed(2)
        tokens = semantic.run("Hello there, how are you today?", voice=voice, generator=generator)
        codes = coarse.run(tokens, voice=voice, generator=generator)
        results.append((tokens.array, codes.array, generator.get_state()))
    (s1, c1, g1), (s2, c2, g2) = results
    assert len(s1) > 10 and (s1 == s2).all() and (c1 == c2).all() and torch.equal(g1, g2)
