"""Sampling and stopping: top-p both ways, deferred stop checks, step limits, option checks, progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from barkkit.errors import PipelineError
from barkkit.pipeline import load_pipeline
from barkkit_bark.sampling import top_p_remove_mask, top_p_remove_mask_reference
from barkkit_bark.semantic import SemanticOptions, generate_semantic, semantic_step_limit


def _reference_top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    """The lines of bark.generation, verbatim in effect."""
    from scipy.special import softmax

    sorted_indices = np.argsort(logits)[::-1]
    cumulative_probs = np.cumsum(softmax(logits[sorted_indices]))
    remove = cumulative_probs > top_p
    remove[1:] = remove[:-1].copy()
    remove[0] = False
    out = logits.copy()
    out[sorted_indices[remove]] = -np.inf
    return np.isinf(out)


def test_top_p_masks_agree_with_the_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10_001, generator=generator) * 3
    for top_p in (0.1, 0.5, 0.9, 0.99):
        exact = top_p_remove_mask_reference(logits, top_p)
        fast = top_p_remove_mask(logits, top_p)
        for row in range(logits.shape[0]):
            assert np.array_equal(exact[row].numpy(), _reference_top_p(logits[row].numpy(), top_p))
        # torch's running sum rounds differently: a cut that moves by one token is the only allowed difference.
        kept_exact, kept_fast = (~exact).sum(-1), (~fast).sum(-1)
        assert (kept_exact - kept_fast).abs().max() <= 1
        assert (kept_exact == kept_fast).float().mean() > 0.9
    # The most likely token always survives, even with a tiny top_p.
    assert not top_p_remove_mask_reference(logits, 1e-9).gather(-1, logits.argmax(-1, keepdim=True)).any()


def test_step_limit_replays_the_reference_float_sum() -> None:
    assert semantic_step_limit(None) == 768
    for seconds in (0.0, 0.02, 0.5, 1.0, 2.0, 7.3, 100.0):
        total = 0.0
        for n in range(768):  # noqa: B007 (n is read after the loop)
            total += 1 / 49.9
            if total > seconds:
                break
        assert semantic_step_limit(seconds) == n + 1


@pytest.mark.parametrize("sync_every", [3, 8])
def test_deferred_stop_checks_undo_extra_steps(sync_every: int, models, voice_file: Path) -> None:
    """Reading the stop flag every few steps (for accelerators) gives the same tokens and generator state."""
    text = models[0]
    history = np.load(voice_file)["semantic_prompt"]
    lengths = []
    for seed in range(4):
        eager, lazy = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        options = SemanticOptions(max_gen_duration_s=3.0)
        a = generate_semantic(text, [[10_100, 10_200]], [history], [eager], options, exact=True)[0]
        b = generate_semantic(text, [[10_100, 10_200]], [history], [lazy], options, exact=True, sync_every=sync_every)[0]
        np.testing.assert_array_equal(a, b)
        assert torch.equal(eager.get_state(), lazy.get_state())
        lengths.append(len(a))
    assert min(lengths) < semantic_step_limit(3.0)  # some runs did stop early, mid-chunk or not


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(text_temp=0), "text_temp must be a number above 0"),
        (dict(waveform_temp=-1.0), "waveform_temp must be a number above 0"),
        (dict(fine_temp=0), "fine_temp must be a number above 0 or None"),
        (dict(top_k=0), "top_k must be a whole number of at least 1"),
        (dict(top_p=0.0), "top_p must be a probability above 0 and at most 1"),
        (dict(top_p=2), "top_p must be a probability above 0 and at most 1"),
        (dict(max_coarse_history=700), "max_coarse_history must be between 60 and 630"),
        (dict(max_coarse_history=630, sliding_window_len=200), "must be at most 768"),
        (dict(min_eos_p="high"), "min_eos_p must be a probability"),
        (dict(min_eos_p=1.5), "min_eos_p must be a probability from 0 to 1"),
        (dict(max_gen_duration_s=-1), "max_gen_duration_s must be a number of seconds above 0"),
    ],
)
def test_bad_options_are_clear_errors(options: dict, message: str, suno_folder: Path) -> None:
    pipeline = load_pipeline(suno_folder, decoder=False)
    with pytest.raises(PipelineError, match=message):
        pipeline.generate("Hi.", seed=0, **{"max_gen_duration_s": 0.2, **options})


def test_pipeline_declares_every_reference_option(suno_folder: Path) -> None:
    pipeline = load_pipeline(suno_folder, decoder=False)
    assert pipeline.options() == {
        "text_temp": 0.7, "top_k": None, "top_p": None, "min_eos_p": 0.2, "max_gen_duration_s": None,
        "allow_early_stop": True, "waveform_temp": 0.7, "max_coarse_history": 630, "sliding_window_len": 60,
        "fine_temp": 0.5,
    }
    assert [stage.mode for stage in pipeline.stages] == ["exact"] * 3
    assert [stage.mode for stage in load_pipeline(suno_folder, mode="fast", decoder=False).stages] == ["fast"] * 3


def test_progress_reaches_the_total(suno_folder: Path) -> None:
    calls: dict[str, list[tuple[int, int]]] = {}
    load_pipeline(suno_folder, decoder=False).generate(
        "Hi there.", seed=1, max_gen_duration_s=3.0, progress=lambda step, done, total: calls.setdefault(step, []).append((done, total))
    )
    assert set(calls) == {"bark.semantic", "bark.coarse", "bark.fine"}
    for step, updates in calls.items():
        done = [d for d, _ in updates]
        assert done == sorted(done) and updates[-1][0] == updates[-1][1] > 0, step
