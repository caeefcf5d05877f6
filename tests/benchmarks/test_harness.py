"""Smoke tests of the benchmark harness: tiny models, no timing asserts. (The batched engine it measures is tested
in tests/plugins/barkkit_bark/test_batch.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import harness as H  # noqa: E402

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 64}
TEXT = "Hello there, how are you today?"


@pytest.fixture(scope="module")
def tiny(prompts_dir, vocab_file, tmp_path_factory):
    models = H.build_reference_models("small", init_scale=3.0, **TINY)
    folder = tmp_path_factory.mktemp("tiny_bark")
    H.write_checkpoints(models, folder)
    return models, folder


def test_harness_runs_reference_and_transformers_to_fixed_lengths(tiny):
    models, _ = tiny
    voice = H.load_voice("v2/en_speaker_6")
    for runner in (H.reference_runner(models), H.transformers_runner(models, **TINY)):
        semantic = runner.semantic(TEXT, voice, 0, 12)
        assert len(semantic) == 12
        coarse = runner.coarse(semantic, voice, 1)
        assert coarse.shape == (2, H.expected_lengths(12)[1])
        fine = runner.fine(coarse, voice, 2)
        assert fine.shape == (8, coarse.shape[1])


def test_stage_timing_reports_memory():
    # 64 MB: above glibc's largest mmap threshold (32 MB), so the pages are always new, never reused heap memory
    out, timing = H.time_stage(lambda: np.ones(8_000_000), len)
    assert len(out) == 8_000_000 and timing.tokens == 8_000_000
    assert timing.seconds >= 0 and timing.peak_mb > 0
    if H.reset_peak_rss():
        assert timing.delta_mb > 40  # 64 MB of ones were resident at the peak


def test_agreement_compare_is_zero_for_identical_distributions():
    sys.path.insert(0, str(BENCH))
    import agreement

    logp = torch.log_softmax(torch.randn(5, 11) * 3, dim=-1)
    same = agreement.compare([logp], [logp.clone()])
    assert same["kl"] == pytest.approx(0.0, abs=1e-6) and same["top1"] == 1.0
    other = agreement.compare([logp], [torch.log_softmax(torch.randn(5, 11), dim=-1)])
    assert other["kl"] > 0.01


def test_barkkit_runner_exact_matches_reference(tiny):
    models, folder = tiny
    ref, exact = H.reference_runner(models), H.barkkit_runner(folder, "exact")
    voice = H.load_voice("v2/en_speaker_6")
    semantic = ref.semantic(TEXT, voice, 3, 10)
    np.testing.assert_array_equal(exact.semantic(TEXT, voice, 3, 10), semantic)
    np.testing.assert_array_equal(exact.coarse(semantic, voice, 4), ref.coarse(semantic, voice, 4))


def test_engine_clock_splits_a_fast_run_into_prefills_decode_steps_and_fine_passes(tiny):
    from barkkit_bark.engine import CausalRunner
    from barkkit_bark.model import FineGPT

    _, folder = tiny
    fast = H.barkkit_runner(folder, "fast")
    voice = H.load_voice("v2/en_speaker_6")
    semantic = fast.semantic(TEXT, voice, 0, 10)
    originals = (CausalRunner.prefill_row, CausalRunner.step, FineGPT.forward)
    with H.engine_clock() as seconds:
        fine = fast.fine(fast.coarse(semantic, voice, 1), voice, 2)
        assert (CausalRunner.prefill_row, CausalRunner.step, FineGPT.forward) != originals
    assert (CausalRunner.prefill_row, CausalRunner.step, FineGPT.forward) == originals  # restored
    assert fine.shape == (8, H.expected_lengths(10)[1])
    assert set(seconds) == set(H.ENGINE_PARTS) and all(s > 0 for s in seconds.values())
    with H.engine_clock() as idle:
        pass
    assert sum(idle.values()) == 0


@pytest.mark.parametrize("shortcuts", [False, True])
def test_batch_comparison_reports_rows_equal_to_single_runs_and_the_bound(tiny, capsys, shortcuts):
    import run as R

    _, folder = tiny
    R.batch_throughput(H.barkkit_runner(folder, "fast"), 2, H.load_voice("v2/en_speaker_6"), 10, 0.2,
                       shortcuts=shortcuts)
    out = capsys.readouterr().out
    assert "fine tokens equal to the single runs: 1.000" in out
    assert ("with the shortcuts" in out) == shortcuts
    assert "where the time goes" in out and "x at most" in out


def test_agreement_counts_the_passes_that_check_exact_modes_drafts(tiny):
    import agreement

    _, folder = tiny
    counted = agreement.draft_passes(str(folder), H.to_voice(H.load_voice("v2/en_speaker_6")), 20)
    assert [stage for stage, _, _ in counted] == ["semantic", "coarse"]
    for _, tokens, passes in counted:
        assert tokens > 0 and 0 < passes <= tokens and tokens / passes <= 9  # one pass checks at most 8 drafts
