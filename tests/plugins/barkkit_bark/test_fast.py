"""Fast mode's building blocks: bf16 attention in blocks, the bf16 KV cache and what ``prepare_fast`` switches on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from barkkit_bark.fast import prepare_fast
from barkkit_bark.kernels import (
    DECODE_KERNELS,
    Int8Linear,
    blocked_attention_bf16,
    cpu_features,
    decode_kernel_for,
    int_mm_works,
    quantize_int8,
)
from barkkit_bark.model import SelfAttention, use_bf16_attention
from barkkit_bark.native import native_ops

from .conftest import tiny_models


@pytest.mark.parametrize(("T", "S", "causal", "block"), [
    (70, 70, False, 32),  # the fine stage: every query sees every key; three blocks, the last one short
    (70, 70, True, 32),  # a prefill: causal square
    (20, 70, False, 8),  # the fine stage's last layer: only the frames read out are queries
    (20, 70, True, 8),  # new positions after a cached prefix
    (1, 9, True, 256),  # one query
])
def test_blocked_attention_matches_fp32_attention(T, S, causal, block):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, S, 16, generator=generator)[:, :, S - T:]
    k, v = torch.randn(2, 2, 3, S, 16, generator=generator)
    mask = torch.ones(T, S, dtype=torch.bool).tril(S - T) if causal else None
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = blocked_attention_bf16(q, k, v, causal=causal, block=block)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=3e-2)  # bf16 inputs, scores and probabilities
    if causal and T > 1:  # a query must not see later keys: changing the last value moves only the last query
        v2 = v.clone()
        v2[:, :, -1] += 10
        moved = (blocked_attention_bf16(q, k, v2, causal=True, block=block) - got).abs().amax((0, 1, 3))
        assert moved[:-1].max() == 0 and moved[-1] > 0


def test_prepare_fast_switches_on_int8_and_bf16_attention_where_the_cpu_has_it():
    text, _, fine = tiny_models()
    assert not any(m.bf16_attention for m in text.modules() if isinstance(m, SelfAttention))  # exact: fp32
    assert text.new_caches(1, 8)[0].k.dtype == torch.float32
    for model in (prepare_fast(text), prepare_fast(fine)):
        flags = {m.bf16_attention for m in model.modules() if isinstance(m, SelfAttention)}
        assert flags == {cpu_features().bf16_matmul}
        assert isinstance(model.transformer.h[0].attn.c_attn, Int8Linear)
    # the causal model's KV cache: int8 where the native kernel reads it, else bf16
    assert text.new_caches(1, 8)[0].k.dtype == (torch.int8 if native_ops() is not None else torch.bfloat16)


@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, torch.int8])
def test_decoding_from_a_compact_kv_cache_stays_close_to_fp32(cache_dtype):
    """PyTorch's attention over the cache read back (the path without the native kernels)."""
    _, coarse, _ = tiny_models()
    ids = torch.randint(0, 10_000, (1, 30), generator=torch.Generator().manual_seed(2))
    logits = {}
    with torch.inference_mode():
        for dtype in (None, cache_dtype):
            coarse.cache_dtype = dtype
            caches = coarse.new_caches(1, 40)
            coarse.prefill(coarse.embed(ids), caches)
            logits[dtype] = torch.cat([coarse.decode(torch.tensor([[10_000 + i]]), 30 + i, caches) for i in range(6)])
    assert caches[0].k.dtype == cache_dtype
    exact, fast = logits[None], logits[cache_dtype]
    assert not torch.equal(fast, exact)  # the steps read the compact cache
    assert (fast - exact).abs().max() < 0.01 * exact.abs().max()
    assert torch.equal(fast.argmax(-1), exact.argmax(-1))


def test_fine_pass_with_bf16_attention_stays_close():
    _, _, fine = tiny_models()
    codes = torch.randint(0, 1024, (1, 60, 8), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        exact = fine(3, codes, first_row=20, trim_last_layer=True)
        use_bf16_attention(fine)
        fast = fine(3, codes, first_row=20, trim_last_layer=True)
        use_bf16_attention(fine, False)
        again = fine(3, codes, first_row=20, trim_last_layer=True)
    assert fast.shape == exact.shape == (1, 40, 1056)
    assert not torch.equal(fast, exact)  # the bf16 path did run
    torch.testing.assert_close(again, exact, rtol=0, atol=0)  # and switching it off restores fp32
    assert (fast - exact).abs().max() < 0.02 * exact.abs().max()
    assert (fast.argmax(-1) == exact.argmax(-1)).float().mean() > 0.95


def test_int8_head_rows_are_the_full_heads_columns():
    torch.manual_seed(0)
    head = Int8Linear(torch.nn.Linear(32, 96, bias=True))
    x = torch.randn(3, 1, 32)  # decode: one token per row
    torch.testing.assert_close(head(x, slice(40, 72)), head(x)[..., 40:72], rtol=0, atol=0)
    prefill = torch.randn(1, 5, 32)
    torch.testing.assert_close(head(prefill, slice(0, 8)), head(prefill)[..., :8], rtol=0, atol=0)


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


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kernel", DECODE_KERNELS)
def test_every_decode_kernel_is_close_and_keeps_rows_independent(kernel, bias):
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48, bias=bias)
    if bias:
        with torch.no_grad():
            linear.bias.normal_()
    if kernel == "int_mm" and not int_mm_works():
        pytest.skip("torch._int_mm saturates here (x86 without VNNI): never chosen")
    if kernel.startswith("fbgemm") and cpu_features().fbgemm is None:
        pytest.skip("no fbgemm here")
    if kernel == "fbgemm_u8" and not cpu_features().vnni:
        pytest.skip("8-bit activations saturate fbgemm's 16-bit pair sums without VNNI: never chosen here")
    layer, exact_sums = Int8Linear(linear, decode_kernel=kernel), Int8Linear(linear, decode_kernel="int_mm")
    assert layer.decode_kernel == kernel
    x = torch.randn(5, 1, 64) * torch.tensor([0.01, 1.0, 30.0, 1.0, 5.0])[:, None, None]  # rows of very different size
    expected = linear(x)
    got = layer(x)
    tolerance = {"fbgemm_u7": 0.06, "fp32": 1e-6}.get(layer.decode_kernel, 0.03)  # 7-bit activations: half the steps
    assert ((got - expected).abs().amax(-1) <= tolerance * expected.abs().amax(-1)).all()  # each row to its own scale
    rows = slice(8, 40)  # a head read one codebook at a time: the same numbers as those rows of the whole output
    torch.testing.assert_close(layer(x, rows), got[..., rows], rtol=0, atol=1e-6 * expected.abs().max().item())
    if layer.decode_kernel == "fbgemm_u8" and int_mm_works():  # the same 8-bit activations: the same integer sums
        torch.testing.assert_close(got, exact_sums(x), rtol=0, atol=1e-5 * expected.abs().max().item())
    # a row alone gets exactly what it gets in the batch (fp32: a one-row product may round its last bit otherwise)
    exact = 0 if layer.decode_kernel != "fp32" else 1e-6 * expected.abs().max().item()
    for i in range(5):
        torch.testing.assert_close(layer(x[i : i + 1]), got[i : i + 1], rtol=0, atol=exact)


def test_the_machines_decode_kernel_follows_its_features():
    features = cpu_features()
    if features.fbgemm is None:
        assert decode_kernel_for(features) is None  # measured at load time instead
    else:
        assert decode_kernel_for(features) == ("fbgemm_u8" if features.vnni else "fbgemm_u7")


def test_quantize_int8_replaces_every_linear_with_that_layers_own_int8_weights():
    text, _, _ = tiny_models()
    linears = {name: module for name, module in text.named_modules() if type(module) is torch.nn.Linear}
    quantize_int8(text)  # on a thread per core
    layers = dict(text.named_modules())
    assert linears and not any(type(module) is torch.nn.Linear for module in text.modules())
    for name, linear in linears.items():
        alone = Int8Linear(linear)
        assert torch.equal(layers[name].w_int8, alone.w_int8) and torch.equal(layers[name].w_scale, alone.w_scale)
