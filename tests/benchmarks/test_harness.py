"""Smoke tests of the benchmark harness (tiny models, no timing asserts), and of the batched engine it measures.

The batched engine (barkkit_bark.batch) must reproduce the reference's tokens in fp32 (semantic and coarse sampled
with the same seed, fine by argmax), and a batch must give each row exactly what it gets alone, in fp32 and int8.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import harness as H  # noqa: E402
from barkkit_bark import batch as FB  # noqa: E402
from barkkit_bark.checkpoints import load_model  # noqa: E402
from barkkit_bark.fast import Int8Linear, prepare_fast  # noqa: E402

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 64}
TEXT = "Hello there, how are you today?"


@pytest.fixture(scope="module")
def tiny(prompts_dir, vocab_file, tmp_path_factory):
    models = H.build_reference_models("small", init_scale=3.0, **TINY)
    folder = tmp_path_factory.mktemp("tiny_bark")
    H.write_checkpoints(models, folder)
    return models, folder


def _engine(folder, int8=False):
    engine = {k: load_model(folder, k) for k in ("text", "coarse", "fine")}
    return {k: prepare_fast(m) for k, m in engine.items()} if int8 else engine


def _ids(text=TEXT):
    return np.array(H.tokenizer().encode(text, add_special_tokens=False)) + 10_048


def _voice(name):
    return H.to_voice(H.load_voice(name))


@pytest.mark.parametrize("voice_name", ["v2/en_speaker_6", None])
def test_engine_matches_reference_tokens(tiny, voice_name):
    models, folder = tiny
    engine = _engine(folder)
    ref = H.reference_runner(models)
    voice = H.load_voice(voice_name)
    n = 50  # 75 coarse frames = 150 steps: three windows, so the window logic and cache reuse run
    semantic = ref.semantic(TEXT, voice, 1, n)
    ours = FB.generate_semantic_batch(engine["text"], [_ids()], [None if voice is None else voice["semantic_prompt"]],
                                [torch.Generator().manual_seed(1)], allow_early_stop=False,
                                max_gen_duration_s=(n - 0.5) / H.SEMANTIC_RATE_HZ)[0]
    assert len(semantic) == n
    np.testing.assert_array_equal(ours, semantic)
    coarse = ref.coarse(semantic, voice, 2)
    ours = FB.generate_coarse_batch(engine["coarse"], [semantic], [H.to_voice(voice)],
                                    [torch.Generator().manual_seed(2)])[0]
    assert coarse.shape == (2, 75)
    np.testing.assert_array_equal(ours, coarse)
    import bark.generation as bg

    fine = bg.generate_fine(coarse, history_prompt=voice, temp=None, silent=True)
    ours = FB.generate_fine_batch(engine["fine"], [coarse], [H.to_voice(voice)], [torch.Generator()], temp=None)[0]
    np.testing.assert_array_equal(ours, fine)


@pytest.mark.parametrize("int8", [False, True])
def test_batch_rows_equal_single_runs(tiny, int8):
    _, folder = tiny
    engine = _engine(folder, int8=int8)
    voices = [_voice("v2/en_speaker_6"), None, _voice("v2/de_speaker_1")]
    histories = [None if v is None else v.semantic.array for v in voices]
    ids = [_ids(), _ids("Short."), _ids("A somewhat longer sentence than the others here.")]

    def gens():
        return [torch.Generator().manual_seed(10 + i) for i in range(3)]

    sem = FB.generate_semantic_batch(engine["text"], ids, histories, gens(), allow_early_stop=False, max_gen_duration_s=0.6)
    for i in range(3):
        alone = FB.generate_semantic_batch(engine["text"], [ids[i]], [histories[i]], [gens()[i]], allow_early_stop=False,
                                     max_gen_duration_s=0.6)[0]
        np.testing.assert_array_equal(sem[i], alone)
    sems = [sem[0], sem[1][:20], sem[2][:27]]  # own lengths: 90, 60 and 81 coarse steps
    coarse = FB.generate_coarse_batch(engine["coarse"], sems, voices, gens())
    for i in range(3):
        alone = FB.generate_coarse_batch(engine["coarse"], [sems[i]], [voices[i]], [gens()[i]])[0]
        np.testing.assert_array_equal(coarse[i], alone)
    assert [c.shape[1] for c in coarse] == [45, 30, 40]
    fine = FB.generate_fine_batch(engine["fine"], coarse, voices, gens(), pad_to_window=False)
    for i in range(3):
        alone = FB.generate_fine_batch(engine["fine"], [coarse[i]], [voices[i]], [gens()[i]], pad_to_window=False)[0]
        np.testing.assert_array_equal(fine[i], alone)
        np.testing.assert_array_equal(fine[i][:2], coarse[i])


def test_int8_linear_is_close_and_row_independent():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96, bias=False)
    q = Int8Linear(linear)
    x = torch.randn(4, 1, 64)
    full = q(x)
    rel = (full - linear(x)).abs().max() / linear(x).abs().max()
    assert rel < 0.05
    torch.testing.assert_close(full[1:2], q(x[1:2]), rtol=0, atol=0)  # per-token scales: rows independent
    prefill = q(torch.randn(2, 7, 64))
    assert prefill.shape == (2, 7, 96)


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


def test_fast_pipeline_batch_equals_single_generations(tiny):
    from barkkit.pipeline import load_pipeline

    _, folder = tiny
    pipeline = load_pipeline(folder, mode="fast", decoder=False)
    texts = ["Hello there.", "A second, longer text to speak, with its own voice."]
    voices = [_voice("v2/en_speaker_6"), None]
    options = {"max_gen_duration_s": 0.4, "allow_early_stop": False}
    together = pipeline.generate_batch(texts, voices=voices, seeds=7, **options)
    for i, generation in enumerate(together):
        alone = pipeline.generate(texts[i], voice=voices[i], seed=7 + i, **options)
        np.testing.assert_array_equal(generation.semantic.array, alone.semantic.array)
        np.testing.assert_array_equal(generation.coarse.array, alone.coarse.array)
        np.testing.assert_array_equal(generation.fine.array, alone.fine.array)
    assert isinstance(pipeline.stages[0].model.lm_head, Int8Linear)


def test_barkkit_runner_exact_matches_reference(tiny):
    models, folder = tiny
    ref, exact = H.reference_runner(models), H.barkkit_runner(folder, "exact")
    voice = H.load_voice("v2/en_speaker_6")
    semantic = ref.semantic(TEXT, voice, 3, 10)
    np.testing.assert_array_equal(exact.semantic(TEXT, voice, 3, 10), semantic)
    np.testing.assert_array_equal(exact.coarse(semantic, voice, 4), ref.coarse(semantic, voice, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_pipeline_on_cuda_is_bf16_and_batch_equals_single(tiny):
    from barkkit.pipeline import load_pipeline

    _, folder = tiny
    pipeline = load_pipeline(folder, device="cuda", mode="fast", decoder=False)
    assert pipeline.stages[1].model.transformer.wpe.weight.dtype == torch.bfloat16
    texts = ["Hello there.", "Another text."]
    options = {"max_gen_duration_s": 0.3, "allow_early_stop": False}
    together = pipeline.generate_batch(texts, seeds=3, **options)
    # bf16 GEMMs on a GPU pick kernels by shape, so batch and single runs agree up to rounding, not bit for bit:
    # check that every row ran to its length and kept its coarse codebooks
    for i, generation in enumerate(together):
        alone = pipeline.generate(texts[i], seed=3 + i, **options)
        assert generation.fine.array.shape == alone.fine.array.shape
        np.testing.assert_array_equal(generation.fine.array[:2], generation.coarse.array)
