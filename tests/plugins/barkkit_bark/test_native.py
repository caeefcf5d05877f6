"""Fast mode's compiled kernels (``barkkit_bark.native``): one-query attention over a bf16 or int8 KV cache, fp32
attention of many queries, GELU, and a decode step's whole block in one call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from barkkit_bark.fast import prepare_fast
from barkkit_bark.kernels import CpuFeatures, Int8Linear, cpu_features, native_attention_for
from barkkit_bark.model import MLP, Block, KVCache, SelfAttention, use_native_kernels
from barkkit_bark.native import HEAD_SIZES, attention, decode_attention, decode_attention_int8, gelu, native_ops
from barkkit_bark.speculative import draft_model

from .conftest import tiny_models

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="needs a C++ compiler")


def upcast_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, first: list[int], stop: int) -> torch.Tensor:
    """What fast mode computes without the kernel: each row over its slots, upcast to fp32."""
    return torch.cat([F.scaled_dot_product_attention(q[i : i + 1], k[i : i + 1, :, f:stop].float(),
                                                     v[i : i + 1, :, f:stop].float()) for i, f in enumerate(first)])


def random_step(batch: int, heads: int, head_size: int, slots: int, *, spread: float = 1.0, seed: int = 0):
    """q as the model slices it from its q, k, v projection (B, nh, 1, hs), and bf16 caches (B, nh, slots, hs)."""
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, 1, 3, heads, head_size, generator=generator) * spread
    q = qkv.permute(2, 0, 3, 1, 4)[0]  # a strided view, as SelfAttention._qkv gives it
    k, v = torch.randn(2, batch, heads, slots, head_size, generator=generator).bfloat16()
    return q, k, v


def test_the_kernel_builds_here():
    assert native_ops() is not None


@pytest.mark.parametrize("head_size", HEAD_SIZES)
@pytest.mark.parametrize(("first", "stop"), [([0], 1), ([0], 37), ([0, 5, 36], 37), ([0], 890)])
def test_decode_attention_matches_fp32_attention_over_the_upcast_cache(head_size, first, stop):
    q, k, v = random_step(len(first), 3, head_size, 1024)
    got = decode_attention(q, k, v, first, stop)
    assert got.shape == (len(first), 3, 1, head_size) and got.dtype == torch.float32
    torch.testing.assert_close(got, upcast_attention(q, k, v, first, stop), rtol=1e-5, atol=1e-5)


def test_peaked_and_flat_scores_stay_finite_and_close():
    """Scores far apart (weights that underflow to 0) and all equal (uniform weights)."""
    q, k, v = random_step(2, 4, 64, 300, spread=40.0)
    torch.testing.assert_close(decode_attention(q, k, v, [0, 0], 300), upcast_attention(q, k, v, [0, 0], 300),
                               rtol=1e-4, atol=1e-4)
    flat = torch.zeros_like(q)
    got = decode_attention(flat, k, v, [0, 0], 300)
    torch.testing.assert_close(got, v[:, :, :300].float().mean(2, keepdim=True), rtol=1e-5, atol=1e-5)


def test_a_row_computes_the_same_alone_in_a_batch_and_on_any_thread_count():
    q, k, v = random_step(3, 12, 64, 512, seed=1)
    batch = decode_attention(q, k, v, [0, 7, 100], 500)
    alone = decode_attention(q[1:2], k[1:2], v[1:2], [7], 500)
    assert torch.equal(batch[1:2], alone)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(decode_attention(q, k, v, [0, 7, 100], 500), batch)
    finally:
        torch.set_num_threads(threads)


def int8_cache(batch: int, heads: int, head_size: int, slots: int, filled: int, seed: int = 0) -> KVCache:
    """An int8 cache whose first ``filled`` slots hold random keys and values, written as prefills write them."""
    cache = KVCache(batch, heads, slots, head_size, dtype=torch.int8, device=torch.device("cpu"))
    k, v = torch.randn(2, batch, heads, filled, head_size, generator=torch.Generator().manual_seed(seed)) * 3
    cache.write(slice(None), slice(0, filled), k, v)
    return cache


def test_an_int8_cache_keeps_each_vector_within_half_a_step():
    cache = int8_cache(2, 3, 64, 40, 40)
    k, v = torch.randn(2, 2, 3, 40, 64, generator=torch.Generator().manual_seed(0)) * 3
    keys, values = cache.read(40, torch.float32)
    for got, x, scale in ((keys, k, cache.k_scale), (values, v, cache.v_scale)):
        torch.testing.assert_close(scale, x.abs().amax(-1) / 127)
        assert ((got - x).abs() <= scale[..., None] / 2 + 1e-6).all()


@pytest.mark.parametrize("head_size", HEAD_SIZES)
@pytest.mark.parametrize(("first", "slot"), [([0], 0), ([0], 36), ([0, 5, 36], 36), ([0], 889)])
def test_int8_decode_attention_writes_its_slot_and_matches_fp32_attention(head_size, first, slot):
    """The kernel quantizes the step's key and value into ``slot`` exactly as KVCache.write does, then attends
    over the scaled-back cache as PyTorch's fp32 attention would."""
    q, k_new, v_new = model_qkv(len(first), 3, head_size, 1, seed=2)
    cache, expected = int8_cache(len(first), 3, head_size, 1024, slot), int8_cache(len(first), 3, head_size, 1024, slot)
    got = decode_attention_int8(q, k_new, v_new, cache, first, slot)
    expected.write(slice(None), slice(slot, slot + 1), k_new, v_new)
    assert all(torch.equal(a, b) for a, b in zip(cache.tensors(), expected.tensors()))
    keys, values = expected.read(slot + 1, torch.float32)
    reference = torch.cat([F.scaled_dot_product_attention(q[i : i + 1], keys[i : i + 1, :, f:], values[i : i + 1, :, f:])
                           for i, f in enumerate(first)])
    torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


def test_int8_decode_attention_keeps_rows_independent_on_any_thread_count():
    q, k_new, v_new = model_qkv(3, 12, 64, 1, seed=3)
    batch = decode_attention_int8(q, k_new, v_new, int8_cache(3, 12, 64, 512, 499), [0, 7, 100], 499)
    alone = int8_cache(3, 12, 64, 512, 499)
    one = KVCache(1, 12, 512, 64, dtype=torch.int8, device=torch.device("cpu"))
    for mine, theirs in zip(one.tensors(), alone.tensors()):
        mine.copy_(theirs[1:2])
    assert torch.equal(decode_attention_int8(q[1:2], k_new[1:2], v_new[1:2], one, [7], 499), batch[1:2])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        again = decode_attention_int8(q, k_new, v_new, int8_cache(3, 12, 64, 512, 499), [0, 7, 100], 499)
        assert torch.equal(again, batch)
    finally:
        torch.set_num_threads(threads)


def model_qkv(batch: int, heads: int, head_size: int, positions: int, *, spread: float = 1.0, seed: int = 0):
    """q, k, v (B, nh, T, hs) as strided views of one projection, as SelfAttention._qkv gives them."""
    qkv = torch.randn(batch, positions, 3, heads, head_size, generator=torch.Generator().manual_seed(seed)) * spread
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


@pytest.mark.parametrize("head_size", HEAD_SIZES)
@pytest.mark.parametrize(("positions", "first_query", "causal"), [
    (1, 0, True), (5, 0, True), (37, 0, True), (300, 0, True),  # tiles of 6 queries, blocks of 128 keys: edges
    (1, 0, False), (130, 0, False), (300, 0, False), (300, 211, False),  # a fine pass's last layer: queries from 211
])
def test_attention_of_many_queries_matches_pytorchs(head_size, positions, first_query, causal):
    q, k, v = model_qkv(2, 3, head_size, positions)
    q = q[:, :, first_query:]
    got = attention(q, k, v, causal)
    assert got.shape == q.shape and got.dtype == torch.float32
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=2e-6)


def test_attention_with_peaked_scores_and_any_thread_count():
    """Scores far apart (weights that underflow to 0); a (row, head) is one thread's, so 1 or 2 threads and a row
    alone or in a batch give the same bits."""
    q, k, v = model_qkv(2, 4, 64, 200, spread=12.0, seed=1)
    both = attention(q, k, v, True)
    torch.testing.assert_close(both, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-4, atol=1e-4)
    assert torch.equal(attention(q[1:], k[1:], v[1:], True), both[1:])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(attention(q, k, v, True), both)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(("what", "call"), [
    ("causal, fewer queries than keys", lambda q, k, v: attention(q[:, :, 3:], k, v, True)),
    ("bf16", lambda q, k, v: attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), False)),
    ("a head size not compiled", lambda q, k, v: attention(q[..., :12], k[..., :12], v[..., :12], False)),
    ("keys and values disagree", lambda q, k, v: attention(q, k, v[:, :, :5], False)),
    ("a strided last dim", lambda q, k, v: attention(q.mT, k.mT, v.mT, False)),
])
def test_attention_refuses_what_it_cannot_read(what, call):
    q, k, v = model_qkv(1, 2, 16, 16)
    with pytest.raises(RuntimeError):
        call(q, k, v)


def test_fast_mode_attends_natively_where_aten_runs_avx2():
    """The choice follows the CPU (``kernels.native_attention_for``; the forced-AVX2 run of test_kernels repeats
    this test there), and a prefill and a fine pass compute what PyTorch's kernel computes."""
    text, _, fine = tiny_models()
    chosen = native_attention_for(cpu_features())
    for model in (prepare_fast(text), prepare_fast(fine)):
        assert all(m.native_attention == chosen for m in model.modules() if isinstance(m, SelfAttention))
        assert model.kernels["attention"].startswith("fp32, barkkit_bark.native") == chosen
    ids = torch.randint(0, 1024, (1, 70, 8), generator=torch.Generator().manual_seed(5))
    outputs = {}
    with torch.inference_mode():
        for native in (True, False):
            for model in (text, fine):
                use_native_kernels(model, True, many_queries=native)
            caches = text.new_caches(1, 64)
            outputs[native] = (text.prefill(text.embed(ids[:, :50, 0]), caches), fine(3, ids, first_row=20))
    for with_native, without in zip(outputs[True], outputs[False]):
        torch.testing.assert_close(with_native, without, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 1, 3072), (1, 300, 3072), (13,), (5, 7)])
def test_gelu_matches_pytorchs(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4)) * 4
    torch.testing.assert_close(gelu(x), F.gelu(x), rtol=1e-6, atol=2e-6)
    if x.dim() > 1:  # a transposed view: any layout
        torch.testing.assert_close(gelu(x.mT), F.gelu(x.mT), rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize(("what", "call"), [
    ("fp32 cache", lambda q, k, v: decode_attention(q, k.float(), v.float(), [0], 8)),
    ("first after stop", lambda q, k, v: decode_attention(q, k, v, [9], 8)),
    ("stop past the cache", lambda q, k, v: decode_attention(q, k, v, [0], 2000)),
    ("one first slot per row", lambda q, k, v: decode_attention(q, k, v, [0, 0], 8)),
    ("a head size not compiled", lambda q, k, v: decode_attention(q[..., :12], k[..., :12].contiguous(),
                                                                  v[..., :12].contiguous(), [0], 8)),
    ("a bf16 query", lambda q, k, v: decode_attention(q.bfloat16(), k, v, [0], 8)),
])
def test_the_kernel_refuses_what_it_cannot_read(what, call):
    q, k, v = random_step(1, 2, 16, 1024)
    with pytest.raises(RuntimeError):
        call(q, k, v)


def test_fast_decode_steps_run_through_the_kernels_and_match_pytorchs():
    _, coarse, _ = tiny_models()
    model = prepare_fast(coarse)
    assert model.cache_dtype == torch.int8 and model.kernels["kv_cache"].startswith("int8")
    assert all(m.native_decode_attention for m in model.modules() if isinstance(m, SelfAttention))
    assert all(m.native_gelu for m in model.modules() if isinstance(m, MLP))
    assert model.kernels["decode_attention"].startswith("barkkit_bark.native")
    ids = torch.randint(0, 10_000, (1, 40), generator=torch.Generator().manual_seed(3))
    outputs = {}
    with torch.inference_mode():
        for native in (True, False):
            use_native_kernels(model, native)
            caches = model.new_caches(1, 64)
            model.prefill(model.embed(ids[:, :30]), caches)
            outputs[native] = torch.stack([model.decode(ids[:, t : t + 1], t, caches) for t in range(30, 40)])
    torch.testing.assert_close(outputs[True], outputs[False], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("env", "expected"), [
    ({"BARKKIT_NATIVE": "0"}, "upcast per step (BARKKIT_NATIVE=0)"),
    ({"CXX": "false", "TORCH_EXTENSIONS_DIR": "{tmp}"}, "upcast per step (native kernel not built"),
])
def test_without_the_kernel_fast_mode_upcasts_and_says_why(env, expected, tmp_path):
    """Switched off, or no compiler that builds it (``false`` as the compiler, an empty extension cache)."""
    code = (
        "import json, torch\n"
        "from barkkit_bark.fast import prepare_fast\n"
        "from barkkit_bark.model import SelfAttention\n"
        "from tests.plugins.barkkit_bark.conftest import tiny_models\n"
        "model = prepare_fast(tiny_models()[1])\n"
        "caches = model.new_caches(1, 8)\n"
        "model.prefill(model.embed(torch.zeros(1, 4, dtype=torch.long)), caches)\n"
        "logits = model.decode(torch.zeros(1, 1, dtype=torch.long), 4, caches)\n"
        "print(json.dumps([model.kernels['decode_attention'], bool(torch.isfinite(logits).all()),\n"
        "                  any(m.native_decode_attention for m in model.modules() if isinstance(m, SelfAttention))]))\n"
    )
    child_env = {**os.environ, **{k: v.format(tmp=tmp_path) for k, v in env.items()}}
    out = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
    assert out.returncode == 0, out.stderr[-2000:]
    described, finite, native = json.loads(out.stdout.strip().splitlines()[-1])
    assert described.startswith(expected) and finite and not native


def features(aten: str, bf16: bool) -> CpuFeatures:
    return CpuFeatures(cpu="test", arch="x86_64", aten=aten, fbgemm="avx2", bf16_matmul=bf16, caps=())


def test_many_query_attention_is_chosen_by_the_cpu_or_timed():
    assert native_attention_for(features("AVX512", bf16=True)) is False  # bf16 blocks do it
    assert native_attention_for(features("AVX2", bf16=False)) is True  # measured: faster with AVX2
    assert native_attention_for(features("AVX512", bf16=False)) is None  # 16-lane PyTorch: timed at load
    assert native_attention_for(features("DEFAULT", bf16=False)) is None  # ARM & co.: timed at load


@pytest.mark.skipif(not torch.cpu._is_avx512_supported(), reason="needs AVX-512 to cap at")
def test_avx512_without_bf16_units_times_both_attentions_once(tmp_path):
    """Capped at AVX-512 without BF16 (an Intel Xeon of Skylake to Ice Lake), fast mode times its native attention
    against PyTorch's, keeps the faster, says so, and keeps the answer for the next load."""
    code = (
        "import json\n"
        "from barkkit_bark.fast import prepare_fast\n"
        "from barkkit_bark.model import SelfAttention\n"
        "from tests.plugins.barkkit_bark.conftest import tiny_models\n"
        "model = prepare_fast(tiny_models()[2])\n"
        "print(json.dumps([model.kernels['attention'],\n"
        "                  all(m.native_attention for m in model.modules() if isinstance(m, SelfAttention))]))\n"
    )
    cache = tmp_path / "kernels.json"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
           "FBGEMM_ENABLE_INSTRUCTIONS": "AVX512", "BARKKIT_KERNEL_CACHE": str(cache)}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=root)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr[-2000:]
    answers = [json.loads(run.stdout.strip().splitlines()[-1]) for run in runs]
    timed = [times for times in json.loads(cache.read_text()).values() if set(times) == {"native", "pytorch"}]
    assert len(timed) == 1 and answers[0] == answers[1]  # timed once, the second load read the answer
    native_won = timed[0]["native"] < timed[0]["pytorch"]
    described, native = answers[0]
    assert native == native_won and described.startswith("fp32, barkkit_bark.native") == native_won


def decode_steps(model, ids: torch.Tensor, firsts: list[int] | None) -> tuple[torch.Tensor, list[KVCache]]:
    """Prefill each row of ids (B, 40) left-padded by firsts[b] slots (None: none, and no first slots passed), then
    decode 10 steps together -> the logits (10, B, V) and the caches."""
    B = ids.shape[0]
    caches = model.new_caches(B, 64)
    with torch.inference_mode():
        for b, first in enumerate(firsts or [0] * B):
            model.prefill(model.embed(ids[b : b + 1, : 30 - first]), caches, row=b, end=30)
        steps = []
        for t in range(30, 40):
            pos = torch.tensor([[t - first] for first in firsts or [0] * B])
            steps.append(model.extend(model.embed(ids[:, t : t + 1]), pos, caches, t, first_slots=firsts))
    return torch.stack(steps), caches


def fused_and_module_by_module(model, ids: torch.Tensor, firsts: list[int] | None) -> None:
    """Decode with every block in one native call and module by module: the same logits and caches, bit for bit."""
    runs = {}
    for fused in (True, False):
        use_native_kernels(model, True)
        blocks = [m for m in model.modules() if isinstance(m, Block)]
        assert all(block.native_decode is not None for block in blocks)
        if not fused:
            for block in blocks:
                block.native_decode = None
        runs[fused] = decode_steps(model, ids, firsts)
    assert torch.equal(runs[True][0], runs[False][0])
    for fused_cache, module_cache in zip(runs[True][1], runs[False][1]):
        assert all(torch.equal(a, b) for a, b in zip(fused_cache.tensors(), module_cache.tensors()))


@pytest.mark.parametrize("kernel", ["fbgemm_u8", "fbgemm_u7"])
def test_a_decode_block_in_one_call_computes_bit_for_bit_what_the_modules_do(kernel):
    """Fast mode's int8 cache: batch rows with their own left padding, both activation levels."""
    _, coarse, _ = tiny_models()
    model = prepare_fast(coarse)
    assert model.kernels["decode_step"].startswith("barkkit_bark.native (each block in one call")
    for layer in model.modules():
        if isinstance(layer, Int8Linear):
            layer.decode_kernel = kernel
    ids = torch.randint(0, 10_000, (3, 40), generator=torch.Generator().manual_seed(6))
    fused_and_module_by_module(model, ids, [0, 4, 11])


@pytest.mark.parametrize("firsts", [None, [0, 7]])
def test_exact_modes_drafting_twin_decodes_in_blocks_over_its_fp32_cache(firsts):
    _, coarse, _ = tiny_models()
    twin = draft_model(coarse)
    assert twin.cache_dtype is None and all(block.native_decode is not None for block in twin.transformer.h)
    ids = torch.randint(0, 10_000, (2, 40), generator=torch.Generator().manual_seed(7))
    fused_and_module_by_module(twin, ids, firsts)


def test_a_block_whose_linears_do_not_decode_through_fbgemm_runs_module_by_module():
    _, coarse, _ = tiny_models()
    model = prepare_fast(coarse)
    model.transformer.h[1].mlp.c_fc.decode_kernel = "int_mm"
    use_native_kernels(model, True)
    assert model.transformer.h[1].native_decode is None and model.transformer.h[0].native_decode is not None
    use_native_kernels(model, False)
    assert all(block.native_decode is None for block in model.transformer.h)
