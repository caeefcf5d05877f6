"""The row engine (barkkit_bark.engine and the stages' batch loops, fast mode's engine): in fp32 it gives the reference's tokens, and a
batch gives every row exactly what that row gets alone, in fp32 and in fast mode's int8 + bf16."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from barkkit.errors import PipelineError
from barkkit.pipeline import load_pipeline
from barkkit.voice import Voice
from barkkit_bark.checkpoints import load_model
from barkkit_bark.coarse import CoarseOptions, CoarseStage, generate_coarse
from barkkit_bark.engine import CausalRunner
from barkkit_bark.fast import prepare_fast
from barkkit_bark.fine import FineOptions, FineStage, generate_fine
from barkkit_bark.kernels import Int8Linear
from barkkit_bark.semantic import SemanticOptions, SemanticStage, generate_semantic

TEXT = "Hello, my name is Suno. And, uh, I like pizza."

CASES = {  # options as the parity tests use them; top-p is left out: the engine ranks in torch, Suno in numpy
    "defaults": dict(max_gen_duration_s=2.0),
    "voice": dict(voice=True, max_gen_duration_s=3.0),
    "voice_top_k": dict(voice=True, top_k=40, min_eos_p=None, max_gen_duration_s=3.0),
    "temperatures_and_windows": dict(
        voice=True, text_temp=1.0, waveform_temp=0.5, fine_temp=None, min_eos_p=0.05, top_k=200,
        max_coarse_history=60, sliding_window_len=25, max_gen_duration_s=3.0,
    ),
}


def _stages(folder: Path) -> tuple[SemanticStage, CoarseStage, FineStage]:
    return SemanticStage.load(folder), CoarseStage.load(folder), FineStage.load(folder)


def _options_of(stage, options: dict) -> dict:
    """The options this stage takes (a stage declares them in ``Stage.options``)."""
    return {k: v for k, v in options.items() if k in stage.options}


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_engine_gives_the_reference_tokens(case: str, suno_folder: Path, reference, voice_file: Path) -> None:
    options = dict(CASES[case])
    use_voice = options.pop("voice", False)
    ref_semantic, ref_coarse, ref_fine = reference.run(TEXT, voice=str(voice_file) if use_voice else None, seed=3,
                                                       **options)
    voice = Voice.from_npz(voice_file) if use_voice else None
    generator = torch.Generator().manual_seed(3)  # one generator through the three stages, as the reference's global one
    semantic, coarse, fine = _stages(suno_folder)  # exact-mode stages: fp32 models, run here through the engine
    sem = semantic.run_fast_batch([TEXT], voices=[voice], generators=[generator],
                                   **_options_of(semantic, options))[0]
    np.testing.assert_array_equal(sem.array, ref_semantic)
    codes = coarse.run_fast_batch([sem], voices=[voice], generators=[generator],
                                   **_options_of(coarse, options))[0]
    np.testing.assert_array_equal(codes.array, ref_coarse)
    fine_codes = fine.run_fast_batch([codes], voices=[voice], generators=[generator],
                                      **_options_of(fine, options))[0]
    np.testing.assert_array_equal(fine_codes.array, ref_fine)


@pytest.mark.parametrize("fast", [False, True])
def test_batch_rows_equal_single_runs(fast: bool, suno_folder: Path, voice_file: Path) -> None:
    models = {kind: load_model(suno_folder, kind) for kind in ("text", "coarse", "fine")}
    if fast:
        models = {kind: prepare_fast(model) for kind, model in models.items()}
    tokenizer = SemanticStage.load(suno_folder).tokenizer
    voice = Voice.from_npz(voice_file)
    voices = [voice, None, voice]
    histories = [None if v is None else v.semantic.array for v in voices]
    texts = [TEXT, "Short.", "A somewhat longer sentence than the others here."]
    ids = [np.asarray(tokenizer.pieces(t)[0].ids, np.int64) for t in texts]

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(10 + i) for i in range(3)]

    options = SemanticOptions(allow_early_stop=False, max_gen_duration_s=0.6)
    sem = generate_semantic(models["text"], ids, histories, gens(), options)
    for i in range(3):
        alone = generate_semantic(models["text"], [ids[i]], [histories[i]], [gens()[i]], options)[0]
        np.testing.assert_array_equal(sem[i], alone)
    sems = [sem[0], sem[1][:20], sem[2][:27]]  # own lengths: 90, 60 and 81 coarse steps
    coarse = generate_coarse(models["coarse"], sems, voices, gens(), CoarseOptions())
    for i in range(3):
        alone = generate_coarse(models["coarse"], [sems[i]], [voices[i]], [gens()[i]], CoarseOptions())[0]
        np.testing.assert_array_equal(coarse[i], alone)
    assert [c.shape[1] for c in coarse] == [45, 30, 40]
    fine = generate_fine(models["fine"], coarse, voices, gens(), FineOptions(), trim_last_layer=True)
    for i in range(3):
        alone = generate_fine(models["fine"], [coarse[i]], [voices[i]], [gens()[i]], FineOptions(), trim_last_layer=True)[0]
        np.testing.assert_array_equal(fine[i], alone)
        np.testing.assert_array_equal(fine[i][:2], coarse[i])


def test_fast_pipeline_batch_equals_single_generations(suno_folder: Path, voice_file: Path) -> None:
    pipeline = load_pipeline(suno_folder, mode="fast", decoder=False)
    texts = ["Hello there.", "A second, longer text to speak, with its own voice."]
    voices = [str(voice_file), None]
    options = {"max_gen_duration_s": 0.4, "allow_early_stop": False}
    together = pipeline.generate_batch(texts, voices=voices, seeds=7, **options)
    for i, generation in enumerate(together):
        alone = pipeline.generate(texts[i], voice=voices[i], seed=7 + i, **options)
        assert generation.semantic == alone.semantic
        assert generation.coarse == alone.coarse
        assert generation.fine == alone.fine
    assert isinstance(pipeline.stages[0].model.lm_head, Int8Linear)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_pipeline_on_cuda_is_bf16_and_keeps_lengths(suno_folder: Path) -> None:
    pipeline = load_pipeline(suno_folder, device="cuda", mode="fast", decoder=False)
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


def _on_cuda(*values: str):
    return pytest.param(*values, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.mark.parametrize(("device", "how"), [("cpu", "compile"), _on_cuda("cuda", "compile"),
                                             _on_cuda("cuda", "cuda_graphs")])
def test_fixed_shape_decode_steps_give_the_eager_tokens(device: str, how: str, suno_folder: Path,
                                                        voice_file: Path) -> None:
    """The fixed-shape decode step (whole cache under a mask, slot as a tensor) through torch.compile or as CUDA
    graphs gives exactly the eager engine's fp32 tokens, rows with and without a voice (left padding) alike."""
    model = load_model(suno_folder, "coarse", device=device)
    voice = Voice.from_npz(voice_file)
    sems = [np.arange(40) * 7 % 10_000, np.arange(25) * 13 % 10_000]  # 120 and 75 coarse steps, two windows

    def run(decode: str) -> list[np.ndarray]:
        generators = [torch.Generator(device).manual_seed(5 + i) for i in range(2)]
        return generate_coarse(model, sems, [voice, None], generators, CoarseOptions(), decode=decode)

    eager = run("eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fixed = run(how)
    # a failed compilation or capture falls back to eager steps with a warning: not here
    assert not [w for w in caught if "fast decode steps failed" in str(w.message)]
    for a, b in zip(eager, fixed):
        np.testing.assert_array_equal(a, b)
    assert [c.shape[1] for c in fixed] == [60, 37]


def test_fast_decode_steps_are_cuda_graphs_on_cuda_and_eager_elsewhere(suno_folder: Path) -> None:
    stage = CoarseStage.load(suno_folder, mode="fast")
    assert stage.decode_steps == "eager"  # a CPU: compiling measured no faster than the eager int8 step
    stage.fast_decode = "compile"
    assert stage.decode_steps == "compile"
    stage.fast_decode = "cuda_graphs"
    with pytest.raises(PipelineError, match="'cuda_graphs' needs a CUDA device"):
        stage.run(np.arange(20), generator=torch.Generator())
    stage.fast_decode = "jit"
    with pytest.raises(PipelineError, match="unknown fast_decode 'jit'"):
        _ = stage.decode_steps


def test_decode_logits_of_each_row_are_bit_equal_to_a_one_row_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of equal length (no padding) too: a many-row attention call rounds differently from a one-row one on a
    CPU, and int8 activations can turn that last bit into another token, so every row attends on its own."""
    import barkkit_bark.model as model_module
    from barkkit_bark.model import GPT, GPTConfig

    attention_rows = []
    sdpa = model_module.F.scaled_dot_product_attention

    def recorded(q: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        attention_rows.append(q.shape[0])
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", recorded)

    torch.manual_seed(0)
    model = prepare_fast(GPT(GPTConfig(block_size=64, input_vocab_size=500, output_vocab_size=500, n_layer=2)).eval())
    B, L = 6, 40
    ids = torch.randint(0, 500, (B, L + 8), generator=torch.Generator().manual_seed(1))

    def decode_logits(rows: torch.Tensor) -> torch.Tensor:  # (n, L + 8) ids -> logits of the 8 decode steps (n, 8, V)
        run = CausalRunner(model, rows.shape[0], L + 8)
        run.prefill([model.embed(row[None, :L]) for row in rows], L)
        out = []
        for t in range(L, L + 8):
            out.append(run.step(rows[:, t], torch.full((rows.shape[0], 1), t), t))
        return torch.stack(out, 1)

    with torch.inference_mode():
        together = decode_logits(ids)
        assert set(attention_rows) == {1}  # the decode steps' attention: one call per row
        for i in range(B):
            assert torch.equal(together[i], decode_logits(ids[i : i + 1])[0]), f"row {i}"
