"""The shared model module against Suno's classes (bit-identical logits) and transformers' Bark (atol 1e-4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from barkkit_bark.checkpoints import load_model
from barkkit_bark.model import GPT, FineGPT

from .conftest import tiny_models


@pytest.fixture(scope="module")
def hf_bark(transformers_folder: Path):
    """transformers' BarkModel, loaded by transformers from the folder transformers wrote."""
    from transformers import BarkModel

    return BarkModel.from_pretrained(transformers_folder).eval()


@pytest.mark.parametrize("kind", ["text", "coarse"])
def test_causal_logits_match_transformers(kind: str, hf_bark, transformers_folder: Path, suno_folder: Path) -> None:
    sub = hf_bark.semantic if kind == "text" else hf_bark.coarse_acoustics
    ours_hf = load_model(transformers_folder, kind)
    ours_suno = load_model(suno_folder, kind)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 10_000, (1, 300), generator=generator)
    with torch.inference_mode():
        out = sub(input_ids=ids, use_cache=True)
        caches = ours_hf.new_caches(1, 320)
        logits = ours_hf.prefill(ours_hf.embed(ids), caches)
        torch.testing.assert_close(logits, out.logits[:, -1], atol=1e-4, rtol=0)
        torch.testing.assert_close(ours_suno.prefill(ours_suno.embed(ids)), logits, atol=0, rtol=0)
        cache = out.cache
        for step in range(5):  # one-token decode against transformers' own KV cache
            token = torch.randint(0, 10_000, (1, 1), generator=generator)
            out = sub(input_ids=token, cache=cache, use_cache=True)
            cache = out.cache
            torch.testing.assert_close(ours_hf.decode(token, 300 + step, caches), out.logits[:, -1], atol=1e-4, rtol=0)


def test_merged_context_matches_transformers(hf_bark, transformers_folder: Path) -> None:
    """The semantic prompt: text and history embeddings summed (transformers builds the same inputs_embeds)."""
    ours = load_model(transformers_folder, "text")
    ids = torch.cat([torch.randint(10_048, 129_595, (1, 256)), torch.randint(0, 10_001, (1, 256)), torch.tensor([[129_599]])], 1)
    embed = hf_bark.semantic.input_embeds_layer
    inputs_embeds = torch.cat([embed(ids[:, :256]) + embed(ids[:, 256:512]), embed(ids[:, 512:])], dim=1)
    with torch.inference_mode():
        expected = hf_bark.semantic(inputs_embeds=inputs_embeds).logits[:, -1]
        torch.testing.assert_close(ours.prefill(ours.embed_merged(ids)), expected, atol=1e-4, rtol=0)


def test_fine_logits_match_transformers(hf_bark, transformers_folder: Path) -> None:
    ours = load_model(transformers_folder, "fine")
    codes = torch.randint(0, 1025, (1, 1024, 8))
    with torch.inference_mode():
        for codebook in range(1, 8):
            expected = hf_bark.fine_acoustics(codebook, codes).logits
            torch.testing.assert_close(ours(codebook, codes), expected, atol=1e-4, rtol=0)
            torch.testing.assert_close(ours(codebook, codes, first_row=700), expected[:, 700:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("bias", [False, True])
def test_logits_bit_identical_to_suno_classes(bias: bool) -> None:
    """Same ops in the same order as bark.model / bark.model_fine: equal to the last bit (exact mode's premise)."""
    from bark.model import GPT as SunoGPT
    from bark.model import GPTConfig as SunoConfig
    from bark.model_fine import FineGPT as SunoFine
    from bark.model_fine import FineGPTConfig

    text, coarse, fine = tiny_models(seed=5, bias=bias)
    suno = SunoGPT(SunoConfig(**{k: getattr(coarse.config, k) for k in ("block_size", "input_vocab_size", "output_vocab_size", "n_layer", "n_head", "n_embd", "bias")})).eval()
    suno.load_state_dict(coarse.state_dict(), strict=False)
    ids = torch.randint(0, 12_096, (1, 400))
    with torch.inference_mode():
        reference, kv = suno(ids, use_cache=True)
        caches = coarse.new_caches(1, 410)
        assert torch.equal(coarse.prefill(coarse.embed(ids), caches), reference[:, 0])
        for step in range(5):
            token = torch.randint(0, 12_096, (1, 1))
            reference, kv = suno(token, use_cache=True, past_kv=kv)
            assert torch.equal(coarse.decode(token, 400 + step, caches), reference[:, 0])

    suno_text = SunoGPT(SunoConfig(**{k: getattr(text.config, k) for k in ("block_size", "input_vocab_size", "output_vocab_size", "n_layer", "n_head", "n_embd", "bias")})).eval()
    suno_text.load_state_dict(text.state_dict(), strict=False)
    prompt = torch.randint(0, 129_600, (1, 513))
    with torch.inference_mode():
        reference, _ = suno_text(prompt, merge_context=True, use_cache=True)
        assert torch.equal(text.prefill(text.embed_merged(prompt)), reference[:, 0])

    config = fine.config
    suno_fine = SunoFine(FineGPTConfig(**{k: getattr(config, k) for k in ("block_size", "input_vocab_size", "output_vocab_size", "n_layer", "n_head", "n_embd", "bias", "n_codes_total", "n_codes_given")})).eval()
    suno_fine.load_state_dict(fine.state_dict())
    codes = torch.randint(0, 1025, (1, 1024, 8))
    with torch.inference_mode():
        for codebook in range(2, 8):
            reference = suno_fine(codebook, codes)
            assert torch.equal(fine(codebook, codes), reference)
            assert torch.equal(fine(codebook, codes, first_row=512), reference[:, 512:])


def test_cached_decode_equals_full_recompute(models) -> None:
    coarse: GPT = models[1]
    ids = torch.randint(0, 12_096, (2, 60))
    with torch.inference_mode():
        caches = coarse.new_caches(2, 60)
        coarse.prefill(coarse.embed(ids[:, :40]), caches)
        for position in range(40, 60):
            stepped = coarse.decode(ids[:, position : position + 1], position, caches)
            full = coarse.prefill(coarse.embed(ids[:, : position + 1]))
            torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)


def test_several_tokens_after_a_cached_prefix(models) -> None:
    coarse: GPT = models[1]
    ids = torch.randint(0, 12_096, (1, 50))
    with torch.inference_mode():
        caches = coarse.new_caches(1, 50)
        coarse.prefill(coarse.embed(ids[:, :30]), caches)
        chunked = coarse.decode(ids[:, 30:], 30, caches)
        torch.testing.assert_close(chunked, coarse.prefill(coarse.embed(ids)), atol=1e-5, rtol=1e-5)


def test_fine_trimmed_last_layer_is_close(models) -> None:
    """Fast mode runs the fine model's last layer for the sampled rows only: the same logits up to rounding."""
    fine: FineGPT = models[2]
    codes = torch.randint(0, 1024, (1, 300, 8))
    with torch.inference_mode():
        full = fine(4, codes, first_row=100)
        trimmed = fine(4, codes, first_row=100, trim_last_layer=True)
    assert trimmed.shape == full.shape == (1, 200, 1056)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_fine_heads_share_embedding_weights(models) -> None:
    fine: FineGPT = models[2]
    for i, head in enumerate(fine.lm_heads):
        assert head.weight is fine.transformer.wtes[i + 1].weight


def test_positions_past_block_size_are_refused(models) -> None:
    coarse: GPT = models[1]
    caches = coarse.new_caches(1, 1100)
    with pytest.raises(ValueError, match="block size"):
        coarse.prefill(coarse.embed(torch.zeros((1, 1025), dtype=torch.long)), caches)
