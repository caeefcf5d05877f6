"""Exact mode's fine passes on oneDNN: a draw is kept only where it is the reference's, else the pass runs again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from barkkit.tokens import CoarseTokens
from barkkit.voice import Voice
from barkkit_bark import certified, fine
from barkkit_bark.certified import certain_draws, multinomial_is_exponential_race
from barkkit_bark.fine import FineStage
from barkkit_bark.kernels import onednn_linear_works, onednn_twin

needs_onednn = pytest.mark.skipif(not onednn_linear_works(), reason="this torch has no oneDNN fp32 linear")


def test_this_torch_draws_multinomial_as_an_exponential_race() -> None:
    assert multinomial_is_exponential_race()


@pytest.mark.parametrize("temp", [0.5, None])
def test_a_certain_draw_is_the_multinomial_draw_and_advances_the_generator_alike(temp: float | None) -> None:
    logits = torch.randn(300, 1024, generator=torch.Generator().manual_seed(1)) * 2
    g_certain, g_plain = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    got = certain_draws(logits, temp, g_certain)
    assert got is not None
    if temp is None:
        expected = logits.argmax(-1)
    else:
        expected = torch.multinomial(F.softmax(logits / temp, dim=-1), 1, generator=g_plain)[:, 0]
    assert torch.equal(got, expected) and torch.equal(g_certain.get_state(), g_plain.get_state())


@pytest.mark.parametrize("temp", [0.5, None])
def test_a_row_too_close_to_call_gives_none_and_leaves_the_generator(temp: float | None) -> None:
    logits = torch.randn(8, 1024, generator=torch.Generator().manual_seed(2))
    logits[3, :2] = logits.max() + 1  # a tie for the argmax; a near-tie for a draw only by chance, hence the margin
    generator = torch.Generator().manual_seed(3)
    before = generator.get_state()
    drift = certified.DRIFT
    try:
        certified.DRIFT = 1e-5 if temp is None else 10.0  # (a draw: any row counts as close under a huge margin)
        assert certain_draws(logits, temp, generator) is None
    finally:
        certified.DRIFT = drift
    assert torch.equal(generator.get_state(), before)


def with_and_without_twin(stage, twin, value, voice: Voice, seed: int, module, drift: float,
                          monkeypatch: pytest.MonkeyPatch):
    """``stage.run(value)`` without, then with its oneDNN ``twin``, from one seed, under bound ``drift``
    -> (codes, generator state) of each run, and what each call of ``module``'s ``certain_draws`` returned."""
    monkeypatch.setattr(certified, "DRIFT", drift)
    kept: list = []
    monkeypatch.setattr(module, "certain_draws", lambda *args: kept.append(certain_draws(*args)) or kept[-1])
    results = []
    for stage.twin in (None, twin):
        generator = torch.Generator().manual_seed(seed)
        results.append((stage.run(value, voice=voice, generator=generator).array, generator.get_state()))
    return results[0], results[1], kept


@needs_onednn
@pytest.mark.parametrize("drift", [certified.DRIFT, 10.0])  # 10: every pass is too close to call and runs again
def test_exact_fine_codes_with_the_onednn_twin_are_the_plain_ones(suno_folder, voice_file, drift: float,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    stage = FineStage.load(suno_folder)
    twin = onednn_twin(stage.model)
    voice = Voice.load(voice_file)
    coarse = CoarseTokens(np.random.default_rng(0).integers(0, 1024, (2, 700)))  # two windows past the voice
    (plain, g_plain), (twinned, g_twinned), kept = with_and_without_twin(stage, twin, coarse, voice, 4, fine, drift,
                                                                          monkeypatch)
    assert np.array_equal(plain, twinned) and torch.equal(g_plain, g_twinned)
    assert len(kept) == 2 * 6 and (all(k is None for k in kept) if drift > 1 else any(k is not None for k in kept))


@needs_onednn
@pytest.mark.parametrize("n_draft", [8, 0])
@pytest.mark.parametrize("drift", [certified.DRIFT, 10.0])  # 10: every window is too close to call and runs again
def test_exact_coarse_codes_with_the_onednn_twin_are_the_plain_ones(suno_folder, voice_file, n_draft: int, drift: float,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from barkkit.tokens import SemanticTokens
    from barkkit_bark import coarse as coarse_module
    from barkkit_bark.coarse import CoarseStage

    stage = CoarseStage.load(suno_folder)
    stage.n_draft = n_draft
    twin = onednn_twin(stage.model)
    voice = Voice.load(voice_file)
    semantic = SemanticTokens(np.random.default_rng(1).integers(0, 10_000, 90))  # 135 frames: 5 windows
    (plain, g_plain), (twinned, g_twinned), kept = with_and_without_twin(stage, twin, semantic, voice, 6,
                                                                          coarse_module, drift, monkeypatch)
    assert plain.shape == (2, 135) and np.array_equal(plain, twinned) and torch.equal(g_plain, g_twinned)
    if drift > 1:
        assert kept and all(k is None for k in kept)  # each window's first draw gave up on it
    else:
        assert sum(k is not None for k in kept) >= 200  # most draws came from the twin
