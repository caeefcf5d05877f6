"""Token parity with Suno's reference: same weights, options and seed give the same tokens, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from barkkit.pipeline import load_pipeline

TEXT = "Hello, my name is Suno. And, uh, I like pizza."

CASES = {
    "defaults": dict(max_gen_duration_s=2.0),
    "voice": dict(voice=True, max_gen_duration_s=3.0),
    "voice_no_min_eos_p": dict(voice=True, min_eos_p=None, max_gen_duration_s=3.0),
    "top_k_and_top_p": dict(voice=True, top_k=40, top_p=0.9, max_gen_duration_s=3.0),
    "top_p_only": dict(top_p=0.6, max_gen_duration_s=1.5),
    "no_early_stop": dict(voice=True, allow_early_stop=False, max_gen_duration_s=0.8),
    "temperatures_and_windows": dict(
        voice=True, text_temp=1.0, waveform_temp=0.5, fine_temp=None, min_eos_p=0.05, top_k=200,
        max_coarse_history=60, sliding_window_len=25, max_gen_duration_s=3.0,
    ),
}


@pytest.mark.parametrize("seed", [2, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_tokens_match_reference(case: str, seed: int, suno_folder: Path, reference, voice_file: Path) -> None:
    options = dict(CASES[case])
    voice = str(voice_file) if options.pop("voice", False) else None
    ref_semantic, ref_coarse, ref_fine = reference.run(TEXT, voice=voice, seed=seed, **options)

    pipeline = load_pipeline(suno_folder, decoder=False)
    generation = pipeline.run(TEXT, voice=voice, seed=seed, until="fine", **options)

    np.testing.assert_array_equal(generation.semantic.array, ref_semantic)
    np.testing.assert_array_equal(generation.coarse.array, ref_coarse)
    np.testing.assert_array_equal(generation.fine.array, ref_fine)
    assert generation.fine.shape[1] == generation.coarse.shape[1] > 0
